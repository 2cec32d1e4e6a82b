#!/usr/bin/env python
"""train_dml.py's supcon recipe as a plain PyTorch loop on the same converted weights, and
its retrieval scores: the reference that bertlib's own training must beat.

What `train_dml.py --loss supcon --pooling mean --sampling random` (or `pk`) trains
(linear head to --dim after dropout 0.1, AdamW with eps 1e-6 and decoupled weight decay on
weight matrices, gradients clipped to norm 1, the learning rate decayed linearly to 0
after --warmup), run by transformers' float32 BertModel in a second interpreter (--torch_python,
bench/torch_supcon_train.py). This script, in bertlib's environment, gives it what
train_dml.py would use, from bertlib's own functions: the token ids (the model folder's
tokenizer, --text_prefix, --max_seq_length), every epoch's batches and every
step's learning-rate multiplier (`training.seed_everything`, the supcon sampler,
`optimization.schedule`), the head's initial weights (drawn as train_dml.py draws them
with --seed) and the training sample whose mean is the centre; only the dropout masks
differ. Then it scores the eval lines' embeddings with leave-one-out cosine retrieval
(`metrics.retrieval_metrics` on the eval file's own labels): centred on the mean of the
training sample's unit-length embeddings and re-normalised, what extruct_bert_metrics.py
writes of a train_dml.py model (the main row), and raw.

    nice -n 10 python bench/torch_supcon_loop.py --model_dir BERT/multilingual-e5-small \\
        --train results/disjoint-e5/train-8.txt --eval results/disjoint-e5/eval-8.txt \\
        --text_prefix 'query: ' --epoch 2 --batchsize 64 --learnrate 1e-4 \\
        --temperature 0.3 --out results/torch-supcon-e5

Prints a Markdown row (precision@1, MAP@R, training sentences/s, the PyTorch process's
peak resident MiB) and writes <out>/scores.json and <out>/features.npz (`centred`, `raw`:
the eval lines' embeddings; `labels`), beside what the two interpreters exchange
(torch_data.npz, torch_out.npz). The Hugging Face copy of the weights is written to <out>
for the run and removed after it.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

from bertlib.errors import UsageError

TRAINER = ROOT / 'bench' / 'torch_supcon_train.py'
TORCH_PYTHON = ROOT / 'build' / 'torch-venv' / 'bin' / 'python'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--train', required=True, help='training file, label<TAB>text')
    parser.add_argument('--eval', required=True, help='file scored, label<TAB>text')
    parser.add_argument('--model_dir', required=True,
                        help='converted model: arrays_bert_model.ckpt.npz, bert_config.json '
                             'and tokenizer.json or vocab.txt')
    parser.add_argument('--out', required=True, help='folder of the run\'s files')
    parser.add_argument('--text_prefix', default='')
    parser.add_argument('--max_seq_length', type=int, default=128)
    parser.add_argument('--epoch', type=int, default=2)
    parser.add_argument('--batchsize', type=int, default=64)
    parser.add_argument('--learnrate', type=float, default=1e-4)
    parser.add_argument('--temperature', type=float, default=0.3)
    parser.add_argument('--weightdecay', type=float, default=0.01)
    parser.add_argument('--warmup', type=float, default=0.0)
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--sampling', choices=('random', 'pk'), default='random',
                        help="train_dml.py's --sampling (default here: random)")
    parser.add_argument('--samples_per_class', type=int, default=8,
                        help='K of --sampling pk (default: 8)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--dropout', type=float, default=None,
                        help='every dropout probability (default: the model\'s and the '
                             'head\'s 0.1; the tests compare with bertlib at 0)')
    parser.add_argument('--freeze_word_embeddings', action='store_true',
                        help="train_dml.py's flag: the word embedding table is not trained")
    parser.add_argument('--torch_python',
                        default=os.environ.get('BERTLIB_TORCH_PYTHON') or str(TORCH_PYTHON),
                        help='a Python with torch and transformers (default: '
                             '$BERTLIB_TORCH_PYTHON, else build/torch-venv/bin/python)')
    return parser.parse_args(argv)


def load_tokenizer(args):
    """The model folder's tokenizer as the scripts load it (`bert_loading.load_tokenizer`)."""
    from bertlib import bert_loading
    folder = pathlib.Path(args.model_dir)
    vocab = folder / 'tokenizer.json'
    if not vocab.exists():
        vocab = folder / 'vocab.txt'
    flags = argparse.Namespace(
        vocab_file=str(vocab), do_lower_case='auto', text_prefix=args.text_prefix,
        bert_config_file=str(folder / 'bert_config.json'),
        init_checkpoint=str(folder / 'arrays_bert_model.ckpt.npz'))
    for path, what in ((flags.bert_config_file, 'BERT config'), (flags.vocab_file,
                       'vocabulary'), (flags.init_checkpoint, 'checkpoint')):
        bert_loading.check_file(path, what)
    config = bert_loading.read_bert_config(flags.bert_config_file)
    if not 2 <= args.max_seq_length <= config.max_position_embeddings:
        raise UsageError('--max_seq_length must be between 2 and %d, got %d'
                         % (config.max_position_embeddings, args.max_seq_length))
    return config, bert_loading.load_tokenizer(flags, config)


def plan(labels, epochs, batchsize, seed, warmup, sampling='random', samples_per_class=8):
    """(batches, etas, counts) of train_dml.py --loss supcon --sampling `sampling`:
    every step's (B,) int64 training rows, epoch after epoch, its learning-rate
    multiplier, and each epoch's number of steps, as `training.train` draws them (each
    epoch's generator from `seed_everything`; P x K epochs may differ by a batch)."""
    from bertlib import losses, optimization, training
    loss = losses.build('supcon', int(labels.max()) + 1, 1, batchsize, 0, samples_per_class,
                        sampling)
    steps_per_epoch = sum(1 for _ in loss.batches(labels, np.random.RandomState(0)))
    total = steps_per_epoch * epochs
    warmup_steps = int(round(warmup * total))
    batches, counts = [], []
    for epoch in range(1, epochs + 1):
        drawn = loss.batches(labels, training.seed_everything(seed, epoch))
        batches += [np.asarray(b, np.int64) for b in drawn]
        counts.append(len(batches) - sum(counts))
    etas = [optimization.schedule(step, total, warmup_steps) for step in range(len(batches))]
    return batches, np.array(etas, np.float64), counts


def initial_head(hidden, dim, seed):
    """(W (dim, hidden), b (dim,)) float32: the linear head train_dml.py starts from with
    this --seed (its first draw after `seed_everything(seed, 0)`; supcon has no
    parameters of its own)."""
    from bertlib import dml, training
    training.seed_everything(seed, 0)
    head = dml.linear_head(hidden, dim)
    return head.W.array.astype(np.float32), head.b.array.astype(np.float32)


def flat(id_lists):
    return (np.concatenate([np.asarray(i, np.int64) for i in id_lists]),
            np.array([len(i) for i in id_lists], np.int64))


def write_data(path, train, evaluation, batches, etas, head, sample_rows):
    """The npz bench/torch_supcon_train.py reads (see its docstring)."""
    train_ids, train_lengths = flat(train.ids)
    eval_ids, eval_lengths = flat(evaluation.ids)
    np.savez(path, train_ids=train_ids, train_lengths=train_lengths,
             train_labels=train.labels.astype(np.int64), eval_ids=eval_ids,
             eval_lengths=eval_lengths, batch_rows=np.concatenate(batches),
             batch_sizes=np.array([len(b) for b in batches], np.int64), etas=etas,
             head_W=head[0], head_b=head[1], sample_rows=np.asarray(sample_rows, np.int64))


def measure(argv=None):
    """Runs the bench with the command line `argv`; returns what scores.json holds."""
    args = parse_args(argv)
    if not os.path.exists(args.torch_python):
        raise UsageError('--torch_python %s not found (make torch-venv builds it)'
                         % args.torch_python)
    from bertlib import data, dml
    from disjoint_classes import score
    from multilingual_fidelity import hf_arrays
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config, tokenizer = load_tokenizer(args)
    train, label_to_id = data.load_split(args.train, tokenizer, args.max_seq_length)
    evaluation, _ = data.load_split(args.eval, tokenizer, args.max_seq_length, label_to_id)
    batchsize = min(args.batchsize, len(train))  # as launch.prepare: the whole set at most
    batches, etas, counts = plan(train.labels, args.epoch, batchsize, args.seed,
                                 args.warmup, args.sampling, args.samples_per_class)
    head = initial_head(config.hidden_size, args.dim, args.seed)
    sample_rows = dml.train_sample_rows(len(train), args.seed)
    write_data(out / 'torch_data.npz', train, evaluation, batches, etas, head, sample_rows)
    weights = out / 'hf_weights.npz'
    np.savez(weights, **hf_arrays(args.model_dir))
    command = [args.torch_python, str(TRAINER), '--weights', str(weights),
               '--config', os.path.join(args.model_dir, 'bert_config.json'),
               '--data', str(out / 'torch_data.npz'), '--out', str(out / 'torch_out.npz'),
               '--learnrate', repr(args.learnrate), '--weightdecay', repr(args.weightdecay),
               '--temperature', repr(args.temperature), '--seed', str(args.seed),
               '--threads', str(args.threads)]
    if args.dropout is not None:
        command += ['--dropout', repr(args.dropout)]
    if args.freeze_word_embeddings:
        command.append('--freeze_word_embeddings')
    print('$ ' + ' '.join(command), file=sys.stderr, flush=True)
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    finally:
        weights.unlink()
    if result.returncode:
        raise UsageError('%s failed with status %d (its error is above)'
                         % (TRAINER.name, result.returncode))
    run = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(out / 'torch_out.npz', allow_pickle=False) as npz:
        raw, sample, losses = npz['eval'], npz['sample'], npz['losses']
    centred = dml.centred(raw, dml.centre_of(sample))
    np.savez(out / 'features.npz', centred=centred, raw=raw, labels=evaluation.labels)
    report = {
        'flags': vars(args), 'batchsize': batchsize, 'train_lines': len(train),
        'eval_lines': len(evaluation), 'steps': len(batches),
        'epoch_losses': [float(np.mean(part))
                         for part in np.split(losses, np.cumsum(counts)[:-1])],
        'train_seconds': run['train_seconds'], 'train_cpu_seconds': run['train_cpu_seconds'],
        'sentences_per_sec': run['sentences'] / run['train_seconds'],
        'train_peak_mib': run['train_peak_mib'], 'peak_mib': run['peak_mib'],
        'scores': {'centred': score(centred, evaluation.labels),
                   'raw': score(raw, evaluation.labels)}}
    (out / 'scores.json').write_text(json.dumps(report, ensure_ascii=False, indent=2))
    print('| features (%d eval lines) | precision@1 | MAP@R | training sentences/s | peak MiB |'
          '\n|---|---|---|---|---|' % len(evaluation))
    for kind in ('centred', 'raw'):
        s = report['scores'][kind]
        print('| PyTorch supcon loop, %s | %.3f | %.3f | %.2f | %.0f |'
              % (kind, s['precision_at_1'], s['map_at_r'], report['sentences_per_sec'],
                 report['peak_mib']))
    return report


def main(argv=None):
    measure(argv)


if __name__ == '__main__':
    from bertlib import process
    process.run(main)
