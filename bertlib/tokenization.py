"""Tokenization classes for BERT: a small re-implementation of Google's `tokenization.py`.

The pipeline is the one of google-research/bert:

    text --BasicTokenizer--> words --WordpieceTokenizer--> word pieces --vocab--> ids

`BasicTokenizer` cleans the text, puts spaces around CJK characters, optionally lower-cases
and strips accents, and splits off punctuation. `WordpieceTokenizer` cuts each word into
the longest vocabulary pieces it can find, left to right. `FullTokenizer` chains the two and
maps tokens to ids.

The ids are identical to those of Hugging Face's slow (pure Python) `BertTokenizer` with the
same `do_lower_case` and `tokenize_chinese_chars` and `strip_accents=None`, which follows the
same algorithm. (Hugging Face also NFC-normalizes the text and never splits the literal
special tokens such as "[SEP]" found inside the text; Google does neither, and this module
follows Google.)

Two things are added for speed on inputs of a million lines, neither of which changes the
output: words made only of ASCII characters take a shorter path through the cleaning and
punctuation steps, and the word pieces of each word are remembered in a bounded cache.
"""

import collections
import functools
import io
import os
import re
import unicodedata

from bertlib import fileio
from bertlib.errors import UsageError

# The strings taken by the scripts' --do_lower_case option.
DO_LOWER_CASE_CHOICES = ("auto", "true", "false")

# Vocabulary entries such as [CLS], [UNK] or [unused0]; they are ignored when deciding
# whether a vocabulary is cased.
_BRACKETED_SPECIAL = re.compile(r"\[[^\[\]]+\]")

# ASCII characters that Google counts as punctuation: every printable non-letter,
# non-digit, non-space character (33-47, 58-64, 91-96 and 123-126).
_ASCII_PUNCTUATION = "".join(
    chr(cp) for cp in range(128)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126)

# Splits an all-ASCII word into runs of non-punctuation and single punctuation characters.
_ASCII_PUNCTUATION_SPLIT = re.compile(
    "[%s]|[^%s]+" % (re.escape(_ASCII_PUNCTUATION), re.escape(_ASCII_PUNCTUATION)))

# str.translate table that does `_clean_text` on ASCII text: the ASCII control characters
# (category Cc) are dropped, and tab, newline and carriage return become spaces.
_ASCII_CLEAN_TABLE = {cp: None for cp in list(range(32)) + [127]}
_ASCII_CLEAN_TABLE.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})


def convert_to_unicode(text):
    """Returns `text` as a str, decoding bytes as UTF-8 (invalid bytes are replaced)."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "replace")
    raise TypeError("Unsupported text type: %s" % type(text))


def _first_bad_utf8_line(data):
    """Returns the 1-based number of the first line of `data` that is not valid UTF-8."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return None


def load_vocab(vocab_file):
    """Loads a vocabulary file (one token a line) into an OrderedDict token -> id.

    The id of a token is its line number, counted from 0. Each line is stripped of
    surrounding whitespace, as Google does. A file that cannot be read, that is not
    valid UTF-8, that holds no token or a token twice (the message names both lines)
    raises UsageError.
    """
    vocab_file = os.fspath(vocab_file)
    data = fileio.read_bounded(vocab_file, "vocabulary", "vocabulary file")
    try:
        # Universal newlines, as reading the file in text mode splits it.
        lines = io.StringIO(data.decode("utf-8"), newline=None).readlines()
    except UnicodeDecodeError as error:
        line = _first_bad_utf8_line(data)
        raise UsageError("%s: line %s: the vocabulary file is not valid UTF-8 (%s)"
                         % (vocab_file, line, error.reason)) from None
    vocab = collections.OrderedDict()
    for index, line in enumerate(lines):
        token = line.strip()
        if token in vocab:
            # Google's loader keeps the later id: every id after the first copy would then
            # be one off from the model's rows, or past them at the end.
            raise UsageError("%s: line %d repeats the token %r of line %d: a vocabulary "
                             "holds each token once" % (vocab_file, index + 1, token[:40],
                                                        vocab[token] + 1))
        vocab[token] = index
    if not vocab:
        raise UsageError("%s: the vocabulary file is empty" % vocab_file)
    return vocab


def check_vocab_size(vocab, vocab_file, rows, model):
    """UsageError unless `vocab` (from `vocab_file`) has one entry per word-embedding row
    of the model: `rows` of them, in `model` (named in the message). Every tokenizer's
    loader calls it: an id past the rows fails mid-run, a short vocabulary gives ids of
    another model's words."""
    if len(vocab) != rows:
        raise UsageError("%s has %d entries but %s has %d word embeddings: the vocabulary "
                         "does not belong to this model" % (vocab_file, len(vocab), model,
                                                            rows))


def vocab_is_cased(vocab):
    """True when some entry of `vocab` holds an upper-case letter.

    Bracketed special entries such as [CLS], [UNK] or [unused0] are ignored. An uncased
    vocabulary (built from lower-cased text) has none; a cased one has many. Only letters
    that lower-casing changes count: the uncased English vocabulary holds "ℝ", an
    upper-case letter without a lower-case form.
    """
    for token in vocab:
        if _BRACKETED_SPECIAL.fullmatch(token):
            continue
        if token.lower() != token:
            return True
    return False


def resolve_do_lower_case(flag, vocab_file_or_vocab):
    """Turns the --do_lower_case option ('auto', 'true' or 'false') into a bool.

    'auto' lower-cases exactly when the vocabulary is uncased. `vocab_file_or_vocab` is a
    vocabulary file or an already loaded vocabulary (any iterable of tokens); it is only
    read for 'auto'. A bool is returned unchanged.
    """
    if isinstance(flag, bool):
        return flag
    value = str(flag).strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    if value != "auto":
        raise UsageError("--do_lower_case must be one of %s, not %r"
                         % (", ".join(DO_LOWER_CASE_CHOICES), flag))
    vocab = vocab_file_or_vocab
    if isinstance(vocab, (str, bytes, os.PathLike)):
        vocab = load_vocab(vocab)
    return not vocab_is_cased(vocab)


def vocab_has_cjk_words(vocab, min_entries=100):
    """True when `vocab` holds many entries of two or more CJK ideographs.

    Google splits every CJK ideograph into its own token before WordPiece, so its
    vocabularies (English, Chinese, multilingual) hold no such entries; a vocabulary
    learnt on segmented Japanese words (the Kyoto Japanese BERT's, or one built with
    tools/build_vocab.py) has thousands, and must be used with tokenize_chinese_chars=False.
    """
    found = 0
    for token in vocab:
        word = token[2:] if token.startswith("##") else token
        if len(word) >= 2 and sum(_is_chinese_char(ord(c)) for c in word) >= 2:
            found += 1
            if found >= min_entries:
                return True
    return False


def convert_by_vocab(vocab, items):
    """Converts a sequence of tokens or ids using the vocab."""
    return [vocab[item] for item in items]


def whitespace_tokenize(text):
    """Runs basic whitespace cleaning and splitting on a piece of text."""
    return text.split()


def prepare_text(text, join_ellipsis=False, text_prefix=""):
    """What every tokenizer's `encode` does to a text before segmenting it:
    join_ellipsis turns '. . .' into '…', as the original BERT-DML did (rt-polarity writes
    its ellipses spaced out); text_prefix (--text_prefix, e.g. multilingual-e5's
    'query: ') is put before it."""
    if join_ellipsis:
        text = text.replace(". . .", "\u2026")
    return text_prefix + text


class FullTokenizer(object):
    """Runs end-to-end tokenization: BasicTokenizer, then WordpieceTokenizer."""

    def __init__(self, vocab_file, do_lower_case=True, tokenize_chinese_chars=True,
                 join_ellipsis=False, text_prefix="", vocab=None):
        """join_ellipsis, text_prefix: what `encode` does to a text first
        (`prepare_text`). vocab: `load_vocab(vocab_file)` when the caller has read it
        already (a pipe cannot be read twice)."""
        self.vocab_file = os.fspath(vocab_file)
        self.join_ellipsis = join_ellipsis
        self.text_prefix = text_prefix
        self.vocab = load_vocab(self.vocab_file) if vocab is None else vocab
        self.inv_vocab = {index: token for token, index in self.vocab.items()}
        if "[UNK]" not in self.vocab:
            raise UsageError("%s: the vocabulary has no [UNK] entry" % self.vocab_file)
        self.do_lower_case = do_lower_case
        self.basic_tokenizer = BasicTokenizer(
            do_lower_case=do_lower_case, tokenize_chinese_chars=tokenize_chinese_chars)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)

    def tokenize(self, text):
        """Returns the word pieces of `text`."""
        split_tokens = []
        for token in self.basic_tokenizer.tokenize(text):
            split_tokens.extend(self.wordpiece_tokenizer.tokenize(token))
        return split_tokens

    def convert_tokens_to_ids(self, tokens):
        """Maps tokens to ids; a token not in the vocabulary raises KeyError."""
        return convert_by_vocab(self.vocab, tokens)

    def convert_ids_to_tokens(self, ids):
        """Maps ids to tokens; an id not in the vocabulary raises KeyError."""
        return convert_by_vocab(self.inv_vocab, ids)

    def encode(self, text, max_seq_length):
        """Returns (ids, truncated) for the input `[CLS] tokens [SEP]` of a single sentence.

        When the sentence is too long, tokens are dropped from its end so that the whole
        input, [CLS] and [SEP] included, has at most `max_seq_length` ids; [SEP] stays last.
        `truncated` tells whether tokens were dropped.
        """
        if max_seq_length < 2:
            raise UsageError("max_seq_length must be at least 2 (room for [CLS] and [SEP]), "
                             "not %s" % max_seq_length)
        for special in ("[CLS]", "[SEP]"):
            if special not in self.vocab:
                raise UsageError("%s: the vocabulary has no %s entry"
                                 % (self.vocab_file, special))
        text = prepare_text(text, self.join_ellipsis, self.text_prefix)
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        room = max_seq_length - 2
        truncated = len(ids) > room
        if truncated:
            ids = ids[:room]
        return [self.vocab["[CLS]"]] + ids + [self.vocab["[SEP]"]], truncated


class BasicTokenizer(object):
    """Runs basic tokenization (invalid character removal, punctuation splitting, lower
    casing, accent stripping, CJK splitting)."""

    def __init__(self, do_lower_case=True, tokenize_chinese_chars=True):
        """Constructs a BasicTokenizer.

        Args:
          do_lower_case: Whether to lower case the input. Accents are stripped (NFD, then
            combining marks removed) only when lower-casing: a cased Japanese vocabulary
            needs False, or ガ would become カ.
          tokenize_chinese_chars: Whether to put spaces around CJK ideographs. Usually
            False for Japanese text that is already split into words.
        """
        self.do_lower_case = do_lower_case
        self.tokenize_chinese_chars = tokenize_chinese_chars

    def tokenize(self, text):
        """Tokenizes a piece of text."""
        text = convert_to_unicode(text)
        text = self._clean_text(text)
        if self.tokenize_chinese_chars and not text.isascii():
            text = self._tokenize_chinese_chars(text)

        split_tokens = []
        for token in whitespace_tokenize(text):
            if token.isascii():
                # Lower-casing ASCII gives ASCII, which has no accents to strip.
                if self.do_lower_case:
                    token = token.lower()
                split_tokens.extend(_ASCII_PUNCTUATION_SPLIT.findall(token))
            else:
                if self.do_lower_case:
                    token = token.lower()
                    token = self._run_strip_accents(token)
                split_tokens.extend(self._run_split_on_punc(token))

        # Accent stripping can leave an empty token or, rarely, a space: split once more.
        return whitespace_tokenize(" ".join(split_tokens))

    def _run_strip_accents(self, text):
        """Strips accents from a piece of text."""
        text = unicodedata.normalize("NFD", text)
        return "".join(char for char in text if unicodedata.category(char) != "Mn")

    def _run_split_on_punc(self, text):
        """Splits punctuation on a piece of text."""
        output = []
        start_new_word = True
        for char in text:
            if _is_punctuation(char):
                output.append([char])
                start_new_word = True
            else:
                if start_new_word:
                    output.append([])
                start_new_word = False
                output[-1].append(char)
        return ["".join(chars) for chars in output]

    def _tokenize_chinese_chars(self, text):
        """Adds whitespace around any CJK character."""
        output = []
        for char in text:
            if _is_chinese_char(ord(char)):
                output.append(" ")
                output.append(char)
                output.append(" ")
            else:
                output.append(char)
        return "".join(output)

    def _clean_text(self, text):
        """Performs invalid character removal and whitespace cleanup on text."""
        if text.isascii():
            return text.translate(_ASCII_CLEAN_TABLE)
        output = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD or _is_control(char):
                continue
            if _is_whitespace(char):
                output.append(" ")
            else:
                output.append(char)
        return "".join(output)


class WordpieceTokenizer(object):
    """Runs WordPiece tokenization."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=100,
                 cache_size=2 ** 18):
        """Constructs a WordpieceTokenizer.

        Args:
          vocab: The vocabulary (a mapping or set of tokens).
          unk_token: The token given to a word that cannot be tokenized.
          max_input_chars_per_word: Longer words become `unk_token`.
          cache_size: How many distinct words have their pieces remembered.
        """
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # No piece can be longer than the longest vocabulary entry, so shorter
        # candidates are the only ones worth looking up.
        self.max_piece_chars = max((len(token) for token in vocab), default=0)
        # The pieces of a word never change: remember them for the most recent words.
        self._tokenize_word = functools.lru_cache(maxsize=cache_size)(self._tokenize_word_uncached)

    def tokenize(self, text):
        """Tokenizes a piece of text into its word pieces.

        This uses a greedy longest-match-first algorithm to perform tokenization
        using the given vocabulary.

        For example:
          input = "unaffable"
          output = ["un", "##aff", "##able"]

        Args:
          text: A single token or whitespace separated tokens. This should have
            already been passed through `BasicTokenizer`.

        Returns:
          A list of wordpiece tokens.
        """
        output_tokens = []
        for token in whitespace_tokenize(text):
            output_tokens.extend(self._tokenize_word(token))
        return output_tokens

    def _tokenize_word_uncached(self, word):
        """Returns the word pieces of one word as a tuple."""
        if len(word) > self.max_input_chars_per_word:
            return (self.unk_token,)
        sub_tokens = []
        start = 0
        while start < len(word):
            end = min(len(word), start + self.max_piece_chars)
            cur_substr = None
            while start < end:
                substr = word[start:end]
                if start > 0:
                    substr = "##" + substr
                if substr in self.vocab:
                    cur_substr = substr
                    break
                end -= 1
            if cur_substr is None:
                return (self.unk_token,)
            sub_tokens.append(cur_substr)
            start = end
        return tuple(sub_tokens)


def _is_whitespace(char):
    """Checks whether `char` is a whitespace character."""
    # \t, \n, and \r are technically control characters but we treat them
    # as whitespace since they are generally considered as such.
    if char == " " or char == "\t" or char == "\n" or char == "\r":
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char):
    """Checks whether `char` is a control character."""
    # These are technically control characters but we count them as whitespace
    # characters.
    if char == "\t" or char == "\n" or char == "\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    """Checks whether `char` is a punctuation character."""
    cp = ord(char)
    # We treat all non-letter/number ASCII as punctuation.
    # Characters such as "^", "$", and "`" are not in the Unicode
    # Punctuation class but we treat them as punctuation anyways, for
    # consistency.
    if (33 <= cp <= 47) or (58 <= cp <= 64) or (91 <= cp <= 96) or (123 <= cp <= 126):
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp):
    """Checks whether CP is the codepoint of a CJK character."""
    # This defines a "chinese character" as anything in the CJK Unicode block:
    #   https://en.wikipedia.org/wiki/CJK_Unified_Ideographs_(Unicode_block)
    #
    # Note that the CJK Unicode block is NOT all Japanese and Korean characters,
    # despite its name. The modern Korean Hangul alphabet is a different block,
    # as is Japanese Hiragana and Katakana. Those alphabets are used to write
    # space-separated words, so they are not treated specially and handled
    # like all of the other languages.
    return ((0x4E00 <= cp <= 0x9FFF) or
            (0x3400 <= cp <= 0x4DBF) or
            (0x20000 <= cp <= 0x2A6DF) or
            (0x2A700 <= cp <= 0x2B73F) or
            (0x2B740 <= cp <= 0x2B81F) or
            (0x2B820 <= cp <= 0x2CEAF) or
            (0xF900 <= cp <= 0xFAFF) or
            (0x2F800 <= cp <= 0x2FA1F))
