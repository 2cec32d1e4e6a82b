#!/usr/bin/env python
"""Time and peak memory of one train_dml.py step, phase by phase, on a given BERT.

Builds what train_dml.py builds for `--loss supcon --pooling mean` (multilingual-e5's
pooling; the linear head to 512, AdamW, clipping) on the model folder's npz, draws its
P x K batches from --train (tokenised with the folder's tokenizer) and runs --steps
training steps (after one warm-up step, not counted), each cut into the loop's three
phases:

    forward   task.loss(batch): tokens -> embeddings -> supcon loss
    backward  cleargrads() and loss.backward()
    update    optimizer.update(): gradient clipping and AdamW

For each phase it prints the mean wall and CPU seconds (the machine may be shared: CPU
seconds are the steadier figure) and the peak resident memory above the process's memory
before the step (MiB; Linux: VmHWM, reset through /proc/self/clear_refs).
Then the word embedding's own share: the seconds spent building its dense gradient
(Chainer's EmbedIDGrad, once per length piece) and in its AdamW update rule, and its
arrays (weights, gradient, two moments). --freeze_word_embeddings measures the same
step with that table frozen (train_dml.py's flag of that name). --torch_python (or
$BERTLIB_TORCH_PYTHON) runs the same batches through a plain PyTorch loop on the same
weights (bench/torch_training_step.py) and prints the two side by side.

    python bench/training_step.py --model_dir BERT/multilingual-e5-small \
        --train ../shared/datasets/mlit/split-train.txt --text_prefix 'query: '
"""

import argparse
import json
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def memory_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError('no %s in /proc/self/status' % field)


HIGHEST = [0]  # the highest VmHWM seen (KiB): reset_peak clears VmHWM


def reset_peak():
    """Resets VmHWM to the current resident size (Linux >= 4.0)."""
    HIGHEST[0] = max(HIGHEST[0], memory_kib('VmHWM'))
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


class Phase(object):
    """Wall and CPU seconds and peak MiB above `base` of the runs of one phase."""

    def __init__(self):
        self.seconds, self.cpu, self.peaks = [], [], []

    def run(self, function, base):
        reset_peak()
        start, cpu = time.perf_counter(), time.process_time()
        result = function()
        self.seconds.append(time.perf_counter() - start)
        self.cpu.append(time.process_time() - cpu)
        self.peaks.append((memory_kib('VmHWM') - base) / 1024.0)
        return result

    def summary(self):
        return {'wall': float(np.mean(self.seconds)), 'cpu': float(np.mean(self.cpu)),
                'peak': float(max(self.peaks))}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model_dir', required=True,
                        help='arrays_bert_model.ckpt.npz, bert_config.json and the tokenizer')
    parser.add_argument('--vocab_file', default=None,
                        help='default: the folder\'s tokenizer.json, else its vocab.txt')
    parser.add_argument('--train', required=True)
    parser.add_argument('--batchsize', type=int, default=64)
    parser.add_argument('--max_seq_length', type=int, default=128)
    parser.add_argument('--text_prefix', default='')
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--freeze_word_embeddings', action='store_true')
    parser.add_argument('--torch_python', default=os.environ.get('BERTLIB_TORCH_PYTHON'),
                        help='a Python with torch and transformers: the same batches '
                             'through bench/torch_training_step.py too (default: '
                             '$BERTLIB_TORCH_PYTHON)')
    args = parser.parse_args()

    from bertlib import bert_loading, process
    process.keep_freed_memory()  # as the scripts run (process.run)
    import chainer
    from chainer.functions.connection import embed_id
    from bertlib import data, dml, losses, optimization, training

    vocab_file = args.vocab_file or next(
        os.path.join(args.model_dir, name) for name in ('tokenizer.json', 'vocab.txt')
        if os.path.exists(os.path.join(args.model_dir, name)))
    flags = argparse.Namespace(
        vocab_file=vocab_file, do_lower_case='auto', text_prefix=args.text_prefix,
        bert_config_file=os.path.join(args.model_dir, 'bert_config.json'),
        init_checkpoint=os.path.join(args.model_dir, 'arrays_bert_model.ckpt.npz'),
        max_seq_length=args.max_seq_length)
    config, tokenizer, bert = bert_loading.load_bert(flags)
    train, label_to_id = data.load_split(args.train, tokenizer, args.max_seq_length)
    lengths = np.array([len(ids) for ids in train.ids])
    print('# model %s: %d layers, hidden %d, %d word embedding rows; %s: %d lines, '
          '%.1f tokens a line (max %d)' % (args.model_dir, config.num_hidden_layers,
                                          config.hidden_size, config.vocab_size, args.train,
                                          len(train), lengths.mean(), lengths.max()))

    training.seed_everything(0, 0)
    loss = losses.build('supcon', len(label_to_id), 512, args.batchsize, 1000, 8, 'pk',
                        **{flag: losses.flag_default(flag, 'supcon')
                           for flag in losses.FLAGS})
    if args.freeze_word_embeddings:
        bert.freeze_word_embeddings()
    model = dml.DMLModel(bert, dim=512, pooling='mean', loss_link=loss.link)
    optimizer = optimization.make_optimizer(model, 5e-5, 0.01)
    task = dml.DMLTask(model, loss, train, train.subset(np.arange(2)), args.batchsize, np,
                       seed=0)
    word = bert.word_embeddings.W

    # The word embedding's own costs, measured where Chainer spends them.
    spent = {'gradient': 0.0, 'update': 0.0}
    grad_forward = embed_id.EmbedIDGrad.forward

    def timed_grad_forward(node, inputs):
        start = time.perf_counter()
        result = grad_forward(node, inputs)
        if node.w_shape == word.shape:
            spent['gradient'] += time.perf_counter() - start
        return result
    embed_id.EmbedIDGrad.forward = timed_grad_forward
    rule = word.update_rule
    rule_update = rule.update

    def timed_update(param):
        start = time.perf_counter()
        rule_update(param)
        spent['update'] += time.perf_counter() - start
    rule.update = timed_update

    loaded = memory_kib('VmRSS')  # model, data and tokenizer in memory
    phases = {name: Phase() for name in ('forward', 'backward', 'update')}
    batches = list(task.batches(np.random.RandomState(1)))
    step_seconds, word_seconds = [], []
    with chainer.using_config('train', True):
        for step in range(args.steps + 1):
            batch = batches[step % len(batches)]
            spent.update(gradient=0.0, update=0.0)
            base = memory_kib('VmRSS')
            start = time.perf_counter()
            loss_value, _ = phases['forward'].run(lambda: task.loss(batch), base)

            def backward():
                model.cleargrads()
                loss_value.backward()
            phases['backward'].run(backward, base)
            optimizer.eta = 1.0
            phases['update'].run(optimizer.update, base)
            if step == 0:  # warm-up: first-touch page faults, numba compilation
                for phase in phases.values():
                    phase.seconds, phase.cpu, phase.peaks = [], [], []
                continue
            step_seconds.append(time.perf_counter() - start)
            word_seconds.append(spent['gradient'] + spent['update'])
            print('# step %d: %d sentences, %.2f s (word embedding: gradient %.2f s, '
                  'update %.2f s)' % (step, len(batch), step_seconds[-1],
                                      spent['gradient'], spent['update']), flush=True)

    total = float(np.mean(step_seconds))
    table = word.array.nbytes / 2.0 ** 20
    kept = ['weights'] + (['gradient'] if word.grad is not None else []) + (
        ['Adam m and v'] if rule.state else [])
    print('# word embedding: %.2f s a step (%.0f%% of the step) for its dense gradient and '
          'AdamW update; %d x %d float32, %.0f MiB an array, kept: %s'
          % (np.mean(word_seconds), 100 * np.mean(word_seconds) / total, word.shape[0],
             word.shape[1], table, ', '.join(kept)))
    summary = {name: phase.summary() for name, phase in phases.items()}
    summary.update(step=total, process_peak=max(HIGHEST[0], memory_kib('VmHWM')) / 1024.0,
                   loaded=loaded / 1024.0)
    results = {'chainer': summary}
    if args.torch_python:
        results['torch'] = torch_run(args, config, batches[:args.steps + 1], train)
    report(results, args.batchsize)


def torch_run(args, config, batches, train):
    """The same batches through bench/torch_training_step.py (a subprocess of
    --torch_python): its summary."""
    import subprocess
    import tempfile
    from multilingual_fidelity import hf_arrays
    with tempfile.TemporaryDirectory() as work:
        weights = os.path.join(work, 'hf_weights.npz')
        np.savez(weights, **hf_arrays(args.model_dir))
        rows = np.concatenate(batches)
        path = os.path.join(work, 'batches.npz')
        np.savez(path, ids=np.concatenate([np.asarray(train.ids[i], np.int64) for i in rows]),
                 lengths=np.array([len(train.ids[i]) for i in rows], np.int64),
                 labels=train.labels[rows].astype(np.int64),
                 sizes=np.array([len(b) for b in batches], np.int64))
        command = [args.torch_python, os.path.join(ROOT, 'bench', 'torch_training_step.py'),
                   '--weights', weights, '--config',
                   os.path.join(args.model_dir, 'bert_config.json'), '--batches', path]
        if args.freeze_word_embeddings:
            command.append('--freeze_word_embeddings')
        result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(results, batchsize):
    """The phases side by side: wall s, CPU s, peak MiB above the step's start."""
    names = sorted(results)
    print('%-9s' % 'phase' + ''.join('  %-28s' % (name + ': wall s, CPU s, peak MiB')
                                     for name in names))
    for phase in ('forward', 'backward', 'update'):
        print('%-9s' % phase + ''.join(
            '  %7.2f %7.2f %8.0f     ' % (results[n][phase]['wall'], results[n][phase]['cpu'],
                                          results[n][phase]['peak']) for n in names))
    print('%-9s' % 'step' + ''.join(
        '  %7.2f s, %5.1f sentences/s   ' % (results[n]['step'], batchsize / results[n]['step'])
        for n in names))
    print('%-9s' % 'peak' + ''.join('  %7.0f MiB (process)        ' % results[n]['process_peak']
                                    for n in names))
    print(json.dumps(results, sort_keys=True))


if __name__ == '__main__':
    main()
