#!/usr/bin/env python
"""A plain PyTorch training of train_dml.py's supcon recipe, for bench/torch_supcon_loop.py.

Runs in an interpreter with torch, transformers and NumPy (not bertlib's environment, so
it imports nothing of bertlib). transformers' float32 BertModel with the weights under
Hugging Face's names (an npz torch_supcon_loop.py writes from the converted checkpoint),
then what train_dml.py --loss supcon --pooling mean --head linear trains:

    mean of the real tokens' states -> dropout 0.1 -> Linear(hidden, dim) -> supcon

with torch.optim.AdamW (betas 0.9, 0.999; weight decay on weight matrices only), the
gradients scaled to global norm 1 when above it, and the learning rate --learnrate times
each step's multiplier.

--data (torch_supcon_loop.py writes it; every array from bertlib's own functions, so the
draws are train_dml.py's): the token ids of the training and eval sentences
(`train_ids`, `train_lengths`, `train_labels`, `eval_ids`, `eval_lengths`), the steps'
batches (`batch_rows`: training rows one batch after another, `batch_sizes`), each
step's learning-rate multiplier (`etas`), the head's initial `head_W` (dim, hidden) and
`head_b` (dim,), and `sample_rows`, the training rows whose embeddings give the centre.

Writes --out (npz): `eval` (N_eval, dim) and `sample` (N_sample, dim) float32 embeddings
in test mode (no dropout), uncentred, and `losses` (steps,); prints one JSON line: the
training's wall and CPU seconds, sentences, steps, and the process's peak resident MiB
(VmHWM) after training and at the end.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

from torch_training_step import (decay_groups, load_bert, mean_pool, memory_kib, pad,
                                 read_config, split_ids, supcon)

BETA1, BETA2, EPS = 0.9, 0.999, 1e-6  # bertlib.optimization.make_optimizer's
CLIP = 1.0  # bertlib's GradientClipping threshold
HEAD_DROPOUT = 0.1  # bertlib.dml.DMLModel's


def chainer_eps(step):
    """torch's eps at update `step` (1, 2, ...) that makes its Adam step Chainer's.

    Chainer divides by sqrt(v) + eps with the bias correction folded into the rate
    (alpha sqrt(1 - beta2^t) / (1 - beta1^t)); torch divides by sqrt(v / (1 - beta2^t))
    + eps. Both are lr m / (sqrt(v) + eps) sqrt(1 - beta2^t) / (1 - beta1^t) when torch's
    eps is eps / sqrt(1 - beta2^t)."""
    return EPS / math.sqrt(1.0 - BETA2 ** step)


def clip_to_norm(parameters, threshold=CLIP):
    """Chainer's GradientClipping: all gradients scaled by threshold / norm when their
    global L2 norm is above the threshold (torch's clip_grad_norm_ adds 1e-6 to the
    norm). Returns the norm."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    if norm > threshold:
        for g in grads:
            g.mul_(threshold / norm)
    return norm


class Embedder(torch.nn.Module):
    """BertModel -> mean pooling -> dropout -> Linear: (B, T) ids and mask -> (B, dim)."""

    def __init__(self, bert, head_w, head_b, dropout):
        super().__init__()
        self.bert = bert
        self.dropout = torch.nn.Dropout(dropout)
        self.output = torch.nn.Linear(head_w.shape[1], head_w.shape[0])
        with torch.no_grad():
            self.output.weight.copy_(torch.from_numpy(head_w))
            self.output.bias.copy_(torch.from_numpy(head_b))

    def forward(self, ids, mask):
        return self.output(self.dropout(mean_pool(self.bert, ids, mask)))


def embed_all(model, sentences, batchsize):
    """(N, dim) float32 test-mode embeddings, batches of similar lengths."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out = np.zeros((len(sentences), model.output.out_features), np.float32)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batchsize):
            rows = order[start:start + batchsize]
            ids, mask = pad([sentences[i] for i in rows])
            out[rows] = model(ids, mask).numpy()
    return out


PROGRESS_EVERY = 10  # steps between progress lines


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights', required=True)
    parser.add_argument('--config', required=True)
    parser.add_argument('--data', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--learnrate', type=float, required=True)
    parser.add_argument('--weightdecay', type=float, required=True)
    parser.add_argument('--temperature', type=float, required=True)
    parser.add_argument('--seed', type=int, default=0, help='of the dropout masks')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--dropout', type=float, default=None,
                        help='every dropout probability, BERT\'s and the head\'s (default: '
                             'the config\'s and 0.1; the tests compare with bertlib at 0)')
    parser.add_argument('--freeze_word_embeddings', action='store_true',
                        help="train_dml.py's flag: the word embedding table is not trained")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    with np.load(args.data, allow_pickle=False) as npz:
        data = {name: npz[name] for name in npz.files}
    config = read_config(args.config)
    head_dropout = HEAD_DROPOUT
    if args.dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = args.dropout
        head_dropout = args.dropout
    model = Embedder(load_bert(args.weights, config), data['head_W'], data['head_b'],
                     head_dropout)
    if args.freeze_word_embeddings:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    # Chainer's AdamW multiplies the decay by eta and by weightdecay * learnrate, as
    # torch multiplies it by the group's lr: set per step below.
    optimizer = torch.optim.AdamW(decay_groups(named, args.weightdecay), lr=args.learnrate,
                                  betas=(BETA1, BETA2), eps=EPS)
    parameters = [p for _, p in named]

    train = split_ids(data['train_ids'], data['train_lengths'])
    labels = torch.from_numpy(data['train_labels'].astype(np.int64))
    edges = np.concatenate([[0], np.cumsum(data['batch_sizes'])])
    losses = []
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for step, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        rows = data['batch_rows'][a:b]
        for group in optimizer.param_groups:
            group['lr'] = args.learnrate * float(data['etas'][step])
            group['eps'] = chainer_eps(step + 1)
        ids, mask = pad([train[i] for i in rows])
        loss = supcon(model(ids, mask), labels[torch.from_numpy(rows)], args.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_to_norm(parameters)
        optimizer.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise SystemExit('the loss became %s at step %d' % (losses[-1], step + 1))
        if (step + 1) % PROGRESS_EVERY == 0 or step + 2 == len(edges):
            # stdout is the one JSON line; progress goes to stderr, as bertlib's does.
            elapsed = time.perf_counter() - start
            print('step %d/%d, loss %.4f, %.1f sentences/s'
                  % (step + 1, len(edges) - 1, losses[-1], b / elapsed),
                  file=sys.stderr, flush=True)
    train_seconds, train_cpu = time.perf_counter() - start, time.process_time() - cpu
    train_peak = memory_kib('VmHWM') / 1024.0

    batchsize = 2 * int(max(data['batch_sizes'].max(), 1))  # as DMLTask.embed_split
    sample = embed_all(model, [train[i] for i in data['sample_rows']], batchsize)
    evaluation = embed_all(model, split_ids(data['eval_ids'], data['eval_lengths']), batchsize)
    np.savez(args.out, eval=evaluation, sample=sample, losses=np.array(losses, np.float32))
    print(json.dumps({'train_seconds': train_seconds, 'train_cpu_seconds': train_cpu,
                      'sentences': int(edges[-1]), 'steps': len(losses),
                      'train_peak_mib': train_peak,
                      'peak_mib': memory_kib('VmHWM') / 1024.0}))


if __name__ == '__main__':
    main()
