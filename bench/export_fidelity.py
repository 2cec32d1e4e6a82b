#!/usr/bin/env python
"""How exactly a folder of `python -m bertlib.export` reproduces our scripts in
sentence-transformers and transformers, and what the export costs.

For a DML model (--model/--label of train_dml.py; without them, a model with a random
linear head and a centre is written from the BERT, since the export's exactness needs no
training): exports it, runs extruct_bert_metrics.py on the texts and
`SentenceTransformer(folder).encode` on the same texts (bench/torch_export_check.py in
--torch_python, build/torch-venv), and prints the token ids that differ, the smallest
cosine of the two features of a text and the largest absolute difference of their unit
rows. For a classifier (--classifier_model/--classifier_label): test_classifier.py
--predict against transformers' pipeline('text-classification'): labels that differ and
the largest probability difference. Also the export's wall time, its peak memory (the
export runs in a child process: its maximum resident set) and the folder's size.

    python bench/export_fidelity.py --torch_python build/torch-venv/bin/python \\
        --bert BERT/all-MiniLM-L6-v2 --lines 1000
    python bench/export_fidelity.py --torch_python build/torch-venv/bin/python \\
        --bert BERT/multilingual-e5-small --lines 1000 --text_prefix 'query: '
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from bertlib import checkpoints, data
from bertlib.testing import DATASETS, ROOT

CHECK = ROOT / 'bench' / 'torch_export_check.py'
DATA_FILES = (DATASETS / 'rt-polarity' / '04-test.txt', DATASETS / 'mlit' / 'split-test.txt')


def bert_flags(folder):
    folder = str(folder)
    vocab = os.path.join(folder, 'vocab.txt')
    if not os.path.isfile(vocab):
        vocab = os.path.join(folder, 'tokenizer.json')
    return ['--vocab_file', vocab, '--bert_config_file', os.path.join(folder, 'bert_config.json'),
            '--init_checkpoint', os.path.join(folder, 'arrays_bert_model.ckpt.npz')]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))


def converted_features(folder, ours_in, work, extra=()):
    """extruct_bert_embed.py's features (TSV bytes) of an exported folder converted back
    with `python -m bertlib.convert`, which reads its modules and prompt."""
    dest = os.path.join(work, 'converted')
    run_script(['-m', 'bertlib.convert', folder, dest])
    features = os.path.join(work, 'converted.txt')
    run_script([ROOT / 'extruct_bert_embed.py'] + bert_flags(dest) + list(extra) + [
        '--input', ours_in, '--output', features])
    with open(features, 'rb') as f:
        return f.read()


def run_export(args):
    """Runs `python -m bertlib.export args` in a child; returns (wall seconds, its peak
    resident MB), measured inside the child so that no other child's counts."""
    code = ('import resource, runpy, sys\n'
            'sys.argv = ["bertlib.export"] + sys.argv[1:]\n'
            'try:\n'
            '    runpy.run_module("bertlib.export", run_name="__main__")\n'
            'finally:\n'
            '    sys.stderr.write("peak_kb=%d\\n" % '
            'resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n')
    start = time.time()
    done = subprocess.run([sys.executable, '-c', code] + [str(a) for a in args], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    seconds = time.time() - start
    err = done.stderr.decode()
    if done.returncode:
        raise SystemExit('export failed:\n%s' % err[-3000:])
    peak = int(err.rsplit('peak_kb=', 1)[1].split()[0]) / 1024.0
    return seconds, peak


def run_script(args):
    """Runs a script of ours (or `-m module`) in a child process; returns (wall seconds,
    peak resident MB of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.time()
    done = subprocess.run([sys.executable] + [str(a) for a in args], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    seconds = time.time() - start
    if done.returncode:
        raise SystemExit('%s failed:\n%s' % (' '.join(map(str, args[:2])),
                                             done.stderr.decode()[-3000:]))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024.0


def write_texts(texts, work):
    """The texts as --input for our scripts (a label column, so that a tab in a text
    stays text) and as the plain file torch_export_check.py reads."""
    ours, plain = os.path.join(work, 'input.txt'), os.path.join(work, 'texts.txt')
    with open(ours, 'w', encoding='utf-8', newline='\n') as f:
        f.writelines('x\t%s\n' % text for text in texts)
    with open(plain, 'w', encoding='utf-8', newline='\n') as f:
        f.writelines('%s\n' % text for text in texts)
    return ours, plain


def read_features(path):
    with open(path, encoding='utf-8') as f:
        return np.array([[float(v) for v in line.rstrip('\n').split('\t')[1:]] for line in f],
                        dtype=np.float64)


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, files in os.walk(folder) for name in files)


def our_ids(flags, texts, prefix, max_seq_length=128):
    from bertlib import bert_loading
    args = argparse.Namespace(vocab_file=flags[1], bert_config_file=flags[3],
                              init_checkpoint=flags[5], do_lower_case='auto',
                              text_prefix=prefix, join_ellipsis=False)
    config = bert_loading.read_bert_config(args.bert_config_file)
    tokenizer = bert_loading.load_tokenizer(args, config)
    return [tokenizer.encode(text, max_seq_length)[0] for text in texts]


def torch_check(torch_python, folder, plain, work, kind='st'):
    out = os.path.join(work, 'torch-%s.npz' % kind)
    done = subprocess.run([torch_python, str(CHECK), '--folder', folder, '--texts', plain,
                           '--out', out, '--kind', kind],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode:
        raise RuntimeError('torch_export_check.py failed:\n%s' % done.stderr.decode()[-3000:])
    with np.load(out, allow_pickle=False) as archive:
        result = {name: archive[name] for name in archive.files}
    result['id_lists'] = [list(map(int, row)) for row in
                          np.split(result['ids'], np.cumsum(result['lengths'])[:-1])]
    return result


def compare(ours, theirs):
    cosines = (unit(ours) * unit(theirs)).sum(axis=1)
    return {'min_cosine': float(cosines.min()),
            'max_abs': float(np.abs(unit(ours) - unit(theirs)).max())}


def dml_round_trip(flags, model, labels, texts, work, torch_python):
    """Figures of one DML model: export, extruct_bert_metrics.py, encode."""
    work = str(work)
    folder = os.path.join(work, 'exported')
    ours_in, plain = write_texts(texts, work)
    seconds, peak = run_export(flags + [
        '--model', model, '--label', labels, '--output', folder])
    features = os.path.join(work, 'ours.txt')
    run_script([ROOT / 'extruct_bert_metrics.py'] + flags + [
        '--model', model, '--label', labels, '--input', ours_in, '--output', features])
    prefix = checkpoints.read_meta(str(model)).get('text_prefix', '')
    return sentence_figures(flags, prefix, texts, folder, features, ours_in, plain,
                            (seconds, peak), work, torch_python)


def pretrained_round_trip(flags, pooling, prefix, texts, work, torch_python):
    """Figures of the pre-trained BERT: export, extruct_bert_embed.py, encode."""
    work = str(work)
    folder = os.path.join(work, 'exported')
    ours_in, plain = write_texts(texts, work)
    seconds, peak = run_export(flags + [
        '--pooling', pooling, '--text_prefix', prefix, '--output', folder])
    features = os.path.join(work, 'ours.txt')
    run_script([ROOT / 'extruct_bert_embed.py'] + flags + [
        '--pooling', pooling, '--text_prefix', prefix, '--input', ours_in,
        '--output', features])
    return sentence_figures(flags, prefix, texts, folder, features, ours_in, plain,
                            (seconds, peak), work, torch_python)


def sentence_figures(flags, prefix, texts, folder, features, ours_in, plain, export_cost,
                     work, torch_python):
    """Our features (the file `features`) against sentence-transformers' encode of the
    exported `folder`, the token ids, and the converted-back folder's features."""
    theirs = torch_check(torch_python, folder, plain, work)
    figures = compare(read_features(features), theirs['st'])
    figures.update(lines=len(texts), export_seconds=export_cost[0],
                   export_peak_mb=export_cost[1], folder_mb=folder_size(folder) / 2 ** 20,
                   id_mismatches=sum(a != b for a, b in zip(our_ids(flags, texts, prefix),
                                                           theirs['id_lists'])))
    with open(features, 'rb') as f:
        figures['converted_identical'] = converted_features(folder, ours_in, work) == f.read()
    return figures


def classifier_round_trip(flags, model, labels, texts, work, torch_python):
    """Figures of one classifier: export, test_classifier.py --predict, the pipeline."""
    work = str(work)
    folder = os.path.join(work, 'exported-classifier')
    ours_in, plain = write_texts(texts, work)
    seconds, peak = run_export(flags + [
        '--model', model, '--label', labels, '--output', folder])
    predictions = os.path.join(work, 'predictions.txt')
    run_script([ROOT / 'test_classifier.py'] + flags + [
        '--model', model, '--label', labels, '--input', ours_in, '--predict',
        '--output', predictions])
    with open(predictions, encoding='utf-8') as f:
        rows = [line.rstrip('\n').split('\t') for line in f]
    theirs = torch_check(torch_python, folder, plain, work, kind='classifier')
    names = [str(label) for label in theirs['labels']]
    return {'lines': len(texts), 'export_seconds': seconds,
            'label_mismatches': sum(row[0] != name for row, name in zip(rows, names)),
            'max_prob_diff': float(max(abs(float(row[1]) - score) for row, score
                                       in zip(rows, theirs['scores'])))}


def read_lines(limit):
    """The first `limit` texts of each data file there is."""
    texts = {}
    for path in DATA_FILES:
        if not os.path.isfile(str(path)):
            print('# %s is absent: skipped' % path)
            continue
        chosen = []
        for example in data.iter_examples(str(path)):
            if len(chosen) == limit:
                break
            chosen.append(example.text)
        texts[path.parent.name] = chosen
    return texts


def synthetic_dml_model(bert, work, pooling, head, prefix, dim=64, seed=0):
    """A DML model file (and labels.bin) of `bert`'s weights with a random linear head
    and a centre, as train_dml.py would save them."""
    rng = np.random.RandomState(seed)
    with checkpoints.NpzReader(os.path.join(str(bert), 'arrays_bert_model.ckpt.npz')) as z:
        arrays = {name: z.read(name, numeric=True) for name in z.files
                  if name.startswith('bert/')}
    hidden = arrays['bert/pooler/b'].shape[0]
    width = dim if head == 'linear' else hidden
    if head == 'linear':
        arrays['output/W'] = rng.normal(0, 0.05, (dim, hidden)).astype(np.float32)
        arrays['output/b'] = np.zeros(dim, np.float32)
    centre = rng.normal(size=width)
    meta = {'kind': 'dml', 'pooling': pooling, 'head': head, 'classes': 2, 'loss': 'supcon',
            'text_prefix': prefix, 'centre': [float(v) for v in 0.3 * centre
                                              / np.linalg.norm(centre)]}
    arrays[checkpoints.META_KEY] = np.array(json.dumps(meta))
    model = os.path.join(str(work), 'synthetic.model')
    with open(model, 'wb') as f:
        np.savez(f, **arrays)
    labels = os.path.join(str(work), 'labels.bin')
    checkpoints.save_labels(labels, {'a': 0, 'b': 1})
    return model, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--torch_python', required=True,
                        help='a Python with torch, transformers, sentence-transformers')
    parser.add_argument('--bert', default=str(ROOT / 'BERT' / 'all-MiniLM-L6-v2'),
                        help='the converted BERT folder (default: the demo model)')
    parser.add_argument('--model', help='a train_dml.py model (default: a synthetic one)')
    parser.add_argument('--label', help='its labels.bin')
    parser.add_argument('--pooling', default='mean', choices=('mean', 'cls', 'pooled'),
                        help='of the synthetic model (default: mean)')
    parser.add_argument('--head', default='linear', choices=('linear', 'none'))
    parser.add_argument('--text_prefix', default='', help='of the synthetic model')
    parser.add_argument('--classifier_model', help='a train_classifier.py model')
    parser.add_argument('--classifier_label', help='its labels.bin')
    parser.add_argument('--lines', type=int, default=1000, help='lines per data file')
    args = parser.parse_args()
    flags = bert_flags(args.bert)
    texts = read_lines(args.lines)
    with tempfile.TemporaryDirectory(dir=str(ROOT / 'results') if (ROOT / 'results').is_dir()
                                     else None) as work:
        model, labels = args.model, args.label
        if model is None:
            model, labels = synthetic_dml_model(args.bert, work, args.pooling, args.head,
                                                args.text_prefix)
            print('# synthetic DML model: pooling %s, head %s, centre, text prefix %r'
                  % (args.pooling, args.head, args.text_prefix))
        for name, lines in texts.items():
            part = os.path.join(work, name)
            os.mkdir(part)
            figures = dml_round_trip(flags, model, labels, lines, part, args.torch_python)
            print('DML export, %s, %s: %s' % (os.path.basename(args.bert.rstrip('/')), name,
                                              json.dumps(figures, sort_keys=True)))
            if args.classifier_model:
                figures = classifier_round_trip(flags, args.classifier_model,
                                                args.classifier_label, lines, part,
                                                args.torch_python)
                print('classifier export, %s: %s' % (name, json.dumps(figures, sort_keys=True)))


if __name__ == '__main__':
    main()
