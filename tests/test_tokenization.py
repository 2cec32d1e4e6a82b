"""Tests for bertlib.tokenization.

The unit tests use a tiny vocabulary written to tmp_path. The reference tests check that the
ids are identical to those of Hugging Face's slow (pure Python, Google-compatible)
BertTokenizer on every line of the real data sets in ../shared/datasets; they skip when
transformers, the data sets or the demo vocabulary are missing.
"""

import collections
import unicodedata

import pytest

from bertlib import tokenization
from bertlib.errors import UsageError
from conftest import DATASETS, ROOT

# The uncased demo vocabulary, created by `make model`.
DEMO_VOCAB = ROOT / "BERT" / "all-MiniLM-L6-v2" / "vocab.txt"

# The vocabulary of Google's tokenization_test.py.
GOOGLE_VOCAB = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn",
                "##ing", ","]


def write_vocab(path, tokens):
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return path


@pytest.fixture
def google_vocab(tmp_path):
    return write_vocab(tmp_path / "vocab.txt", GOOGLE_VOCAB)


# ----------------------------------------------------------------------------- vocabulary

def test_load_vocab_ids_are_line_numbers(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\r\n[UNK]  \nhello\n\xc3\xa9t\xc3\xa9\n")
    vocab = tokenization.load_vocab(path)
    assert isinstance(vocab, collections.OrderedDict)
    assert list(vocab.items()) == [("[PAD]", 0), ("[UNK]", 1), ("hello", 2), ("été", 3)]


def test_load_vocab_missing_file(tmp_path):
    path = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(UsageError, match="nope"):
        tokenization.load_vocab(path)


def test_load_vocab_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad_vocab.txt"
    path.write_bytes(b"[UNK]\nok\nbad\xff\xfe\nafter\n")
    with pytest.raises(UsageError) as info:
        tokenization.load_vocab(path)
    assert "bad_vocab.txt" in str(info.value)
    assert "line 3" in str(info.value)


def test_load_vocab_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(UsageError, match="empty.txt"):
        tokenization.load_vocab(path)


def test_full_tokenizer_needs_unk(tmp_path):
    path = write_vocab(tmp_path / "no_unk.txt", ["[CLS]", "[SEP]", "hello"])
    with pytest.raises(UsageError, match=r"no_unk\.txt.*\[UNK\]"):
        tokenization.FullTokenizer(path)


def test_vocab_is_cased_and_auto_lower_case(tmp_path, google_vocab):
    assert not tokenization.vocab_is_cased(["[UNK]", "[CLS]", "[unused0]", "hello", "##ed"])
    assert tokenization.vocab_is_cased(["[UNK]", "hello", "Hello"])
    assert tokenization.vocab_is_cased(["[UNK]", "ＡＢＳ"])
    assert not tokenization.vocab_is_cased(["[UNK]", "ガス", "漏れ"])
    assert not tokenization.vocab_is_cased(["[UNK]", "ℝ", "##ℝ"])  # no lower-case form

    cased = write_vocab(tmp_path / "cased.txt", GOOGLE_VOCAB + ["Want"])
    assert tokenization.resolve_do_lower_case("auto", google_vocab) is True
    assert tokenization.resolve_do_lower_case("auto", cased) is False
    assert tokenization.resolve_do_lower_case("auto", ["[UNK]", "Ab"]) is False
    assert tokenization.resolve_do_lower_case("true", cased) is True
    assert tokenization.resolve_do_lower_case("false", google_vocab) is False
    with pytest.raises(UsageError, match="do_lower_case"):
        tokenization.resolve_do_lower_case("yes", google_vocab)


# ----------------------------------------------------------------------------- BasicTokenizer

def test_basic_tokenizer_lower():
    tokenizer = tokenization.BasicTokenizer(do_lower_case=True)
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU?  ") == [
        "hello", "!", "how", "are", "you", "?"]
    assert tokenizer.tokenize("H\u00E9llo") == ["hello"]


def test_basic_tokenizer_no_lower_keeps_accents():
    tokenizer = tokenization.BasicTokenizer(do_lower_case=False)
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU?  ") == [
        "HeLLo", "!", "how", "Are", "yoU", "?"]
    assert tokenizer.tokenize("H\u00E9llo") == ["H\u00E9llo"]


def test_japanese_voiced_kana_survive_without_lower_case():
    cased = tokenization.BasicTokenizer(do_lower_case=False, tokenize_chinese_chars=False)
    assert cased.tokenize("ガス 漏れ") == ["ガス", "漏れ"]
    # Lower-casing strips accents, and NFD turns ガ into カ plus a combining mark.
    lower = tokenization.BasicTokenizer(do_lower_case=True, tokenize_chinese_chars=False)
    assert lower.tokenize("ガス") == ["カス"]


def test_clean_text():
    tokenizer = tokenization.BasicTokenizer(do_lower_case=False)
    # NUL, U+FFFD, control and format characters are dropped; \t \n \r and Zs are spaces.
    assert tokenizer.tokenize("a\x00b\ufffdc\x07d\u200be\tf\ng\rh\u3000i\xa0j") == [
        "abcde", "f", "g", "h", "i", "j"]
    assert tokenizer.tokenize("\x01hello\x7f\x0bworld\x1f") == ["helloworld"]
    assert tokenizer.tokenize("") == []
    assert tokenizer.tokenize(" \t\n ") == []


def test_punctuation_split():
    tokenizer = tokenization.BasicTokenizer(do_lower_case=False, tokenize_chinese_chars=False)
    # ASCII symbols such as $ ^ ` count as punctuation although Unicode calls them S*.
    assert tokenizer.tokenize("a$b^c`d~e") == ["a", "$", "b", "^", "c", "`", "d", "~", "e"]
    assert tokenizer.tokenize("don't...") == ["don", "'", "t", ".", ".", "."]
    # Outside ASCII only the P* categories are punctuation: ＄ (Sc) is not.
    assert tokenizer.tokenize("「東京」、１００＄") == ["「", "東京", "」", "、", "１００＄"]
    assert tokenizer.tokenize("caf\u00e9\u2014bar") == ["caf\u00e9", "\u2014", "bar"]


def test_chinese_chars_on_and_off():
    on = tokenization.BasicTokenizer(do_lower_case=True, tokenize_chinese_chars=True)
    off = tokenization.BasicTokenizer(do_lower_case=True, tokenize_chinese_chars=False)
    assert on.tokenize("ah\u535A\u63A8zz") == ["ah", "\u535A", "\u63A8", "zz"]
    assert off.tokenize("ah\u535A\u63A8zz") == ["ah\u535A\u63A8zz"]
    # Kana are not CJK ideographs.
    assert on.tokenize("ガス漏れ") == ["カス", "漏", "れ"]


def _google_basic_tokenize(text, do_lower_case):
    """Character-by-character basic tokenization, without the ASCII shortcuts."""
    chars = []
    for char in text:
        if ord(char) in (0, 0xFFFD) or tokenization._is_control(char):
            continue
        chars.append(" " if tokenization._is_whitespace(char) else char)
    tokens = []
    for token in "".join(chars).split():
        if do_lower_case:
            token = unicodedata.normalize("NFD", token.lower())
            token = "".join(c for c in token if unicodedata.category(c) != "Mn")
        tokens.extend(tokenization.BasicTokenizer()._run_split_on_punc(token))
    return " ".join(tokens).split()


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_ascii_shortcut_matches_character_by_character(do_lower_case):
    tokenizer = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    ascii_chars = [chr(cp) for cp in range(128)]
    texts = ["Ab%sCd" % char for char in ascii_chars]
    texts += ["x%s%sY" % (a, b) for a in ascii_chars for b in ascii_chars[::7]]
    texts += ["It's 9:30 -- (really?) [Garbus] e-mail@x.org \x00\x1b\x7f end."]
    for text in texts:
        assert tokenizer.tokenize(text) == _google_basic_tokenize(text, do_lower_case), text
        # The same text with a non-ASCII word takes the general path.
        assert tokenizer.tokenize(text + " \u00e9") == _google_basic_tokenize(
            text + " \u00e9", do_lower_case), text


# ----------------------------------------------------------------------------- WordPiece

def test_wordpiece_greedy_longest_match():
    vocab = {token: i for i, token in enumerate(GOOGLE_VOCAB)}
    tokenizer = tokenization.WordpieceTokenizer(vocab=vocab)
    assert tokenizer.tokenize("") == []
    assert tokenizer.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tokenizer.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    # Cached words give the same answer again.
    assert tokenizer.tokenize("unwanted unwanted") == ["un", "##want", "##ed"] * 2


def test_wordpiece_long_word_is_unknown():
    vocab = {"[UNK]": 0, "a": 1, "##a": 2}
    tokenizer = tokenization.WordpieceTokenizer(vocab=vocab, max_input_chars_per_word=5)
    assert tokenizer.tokenize("aaaaa") == ["a", "##a", "##a", "##a", "##a"]
    assert tokenizer.tokenize("aaaaaa") == ["[UNK]"]


# ----------------------------------------------------------------------------- FullTokenizer

def test_full_tokenizer(google_vocab):
    tokenizer = tokenization.FullTokenizer(google_vocab)
    tokens = tokenizer.tokenize("UNwant\u00E9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert ids == [7, 4, 5, 10, 8, 9]
    assert tokenizer.convert_ids_to_tokens(ids) == tokens
    assert tokenizer.inv_vocab[0] == "[UNK]"


def test_encode_truncation_keeps_sep(google_vocab):
    tokenizer = tokenization.FullTokenizer(google_vocab)
    cls, sep = tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]
    pieces = [7, 4, 5, 8, 9]  # un ##want ##ed runn ##ing
    assert tokenizer.encode("unwanted running", 7) == ([cls] + pieces + [sep], False)
    assert tokenizer.encode("unwanted running", 128) == ([cls] + pieces + [sep], False)
    assert tokenizer.encode("unwanted running", 6) == ([cls] + pieces[:4] + [sep], True)
    assert tokenizer.encode("unwanted running", 2) == ([cls, sep], True)
    assert tokenizer.encode("", 2) == ([cls, sep], False)
    with pytest.raises(UsageError):
        tokenizer.encode("unwanted", 1)


def test_encode_needs_cls_and_sep(tmp_path):
    path = write_vocab(tmp_path / "no_cls.txt", ["[UNK]", "[SEP]", "want"])
    tokenizer = tokenization.FullTokenizer(path)
    assert tokenizer.tokenize("want") == ["want"]
    with pytest.raises(UsageError, match=r"no_cls\.txt.*\[CLS\]"):
        tokenizer.encode("want", 8)


# ----------------------------------------------------------------------------- reference

def reference_tokenizer_class():
    """Hugging Face's slow, pure-Python BertTokenizer (or skip)."""
    try:
        import transformers  # noqa: F401
    except Exception as error:  # ImportError, or a broken installation
        pytest.skip("transformers is not importable: %s" % error)
    try:  # transformers 5: BertTokenizer is the Rust one, the Python one is "legacy".
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
        return BertTokenizerLegacy
    except ImportError:
        pass
    from transformers.models.bert.tokenization_bert import BertTokenizer
    return BertTokenizer


def reference_tokenizer(vocab_file, do_lower_case, tokenize_chinese_chars):
    cls = reference_tokenizer_class()
    return cls(str(vocab_file), do_lower_case=do_lower_case,
               tokenize_chinese_chars=tokenize_chinese_chars, strip_accents=None)


def dataset_texts(relative):
    path = DATASETS / relative
    if not path.is_file():
        pytest.skip("data set %s is absent" % path)
    with open(path, encoding="utf-8") as reader:
        return [line.rstrip("\n").partition("\t")[2] for line in reader]


def assert_same_ids(ours, reference, texts, max_shown=5):
    mismatches = []
    for number, text in enumerate(texts, start=1):
        got = ours.convert_tokens_to_ids(ours.tokenize(text))
        want = reference.encode(text, add_special_tokens=False)
        if got != want:
            mismatches.append((number, text, ours.tokenize(text), reference.tokenize(text)))
    assert not mismatches, "%d of %d lines differ, first ones: %r" % (
        len(mismatches), len(texts), mismatches[:max_shown])


@pytest.fixture(scope="module")
def english_tokenizers():
    if not DEMO_VOCAB.is_file():
        pytest.skip("demo vocabulary %s is absent (run `make model`)" % DEMO_VOCAB)
    reference = reference_tokenizer(DEMO_VOCAB, True, True)
    ours = tokenization.FullTokenizer(DEMO_VOCAB, do_lower_case=True)
    return ours, reference


@pytest.mark.parametrize("name", ["04-test.txt", "04-train.txt"])
def test_english_ids_match_reference(english_tokenizers, name):
    texts = dataset_texts("rt-polarity/" + name)
    ours, reference = english_tokenizers
    assert not tokenization.vocab_is_cased(ours.vocab)
    assert_same_ids(ours, reference, texts)


@pytest.mark.parametrize("max_seq_length", [16, 48])
def test_english_encode_matches_reference_truncation(english_tokenizers, max_seq_length):
    texts = dataset_texts("rt-polarity/04-test.txt")
    ours, reference = english_tokenizers
    truncated = 0
    for text in texts:
        ids, was_truncated = ours.encode(text, max_seq_length)
        assert ids == reference(text, truncation=True, max_length=max_seq_length)["input_ids"]
        truncated += was_truncated
    assert truncated > 0


JAPANESE_FILES = ["mlit/split-train.txt", "mlit/split-test.txt", "mlit/04-test.txt"]


@pytest.fixture(scope="module")
def japanese_vocab(tmp_path_factory):
    """A small cased WordPiece vocabulary built from mlit/split-train.txt.

    The 3,000 most frequent words, and every character of the training words as itself and
    as a continuation piece, except a few left out so that [UNK] occurs.
    """
    texts = dataset_texts("mlit/split-train.txt")
    basic = tokenization.BasicTokenizer(do_lower_case=False, tokenize_chinese_chars=False)
    words = collections.Counter()
    chars = collections.Counter()
    for text in texts:
        for word in basic.tokenize(text):
            words[word] += 1
            chars.update(word)
    ranked_chars = [char for char, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))]
    left_out = set(ranked_chars[50:300:50])
    assert "ガ" not in left_out
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [word for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:3000]]
    for char in ranked_chars:
        if char not in left_out:
            tokens += [char, "##" + char]
    tokens = list(dict.fromkeys(tokens))
    return write_vocab(tmp_path_factory.mktemp("ja") / "vocab.txt", tokens)


@pytest.fixture(scope="module")
def japanese_tokenizers(japanese_vocab):
    reference = reference_tokenizer(japanese_vocab, False, False)
    ours = tokenization.FullTokenizer(japanese_vocab, do_lower_case=False,
                                      tokenize_chinese_chars=False)
    return ours, reference


@pytest.mark.parametrize("name", JAPANESE_FILES)
def test_japanese_ids_match_reference(japanese_tokenizers, name):
    texts = dataset_texts(name)
    ours, reference = japanese_tokenizers
    assert tokenization.vocab_is_cased(ours.vocab)
    assert tokenization.resolve_do_lower_case("auto", ours.vocab) is False
    assert_same_ids(ours, reference, texts)
    all_tokens = [token for text in texts for token in ours.tokenize(text)]
    assert "[UNK]" in all_tokens
    assert any("ガ" in token for token in all_tokens)


def test_japanese_with_chinese_chars_matches_reference(japanese_vocab):
    texts = dataset_texts("mlit/split-test.txt")
    reference = reference_tokenizer(japanese_vocab, False, True)
    ours = tokenization.FullTokenizer(japanese_vocab, do_lower_case=False,
                                      tokenize_chinese_chars=True)
    assert_same_ids(ours, reference, texts)


def test_vocab_has_cjk_words_tells_japanese_word_vocabularies_apart():
    from bertlib.tokenization import vocab_has_cjk_words
    google_style = ['[UNK]', 'the', '東', '京', '##京', 'カ', 'ガ'] + ['w%d' % i for i in range(500)]
    assert not vocab_has_cjk_words(google_style)
    words = ['自動車', '東京', '##走行', '装置'] * 30
    assert vocab_has_cjk_words(google_style + words)
