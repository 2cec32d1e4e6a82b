#!/usr/bin/env python
"""A plain PyTorch training step of the same recipe, for bench/training_step.py.

Runs in an interpreter with torch, transformers and NumPy (not bertlib's environment, so
it imports nothing of bertlib). transformers' float32 BertModel loaded with the weights
under Hugging Face's names (an npz that training_step.py writes from the converted
checkpoint), the mean of the real tokens' states -> dropout 0.1 -> Linear(hidden, 512),
supervised contrastive loss (temperature 0.1), gradients clipped to norm 1,
torch.optim.AdamW (eps 1e-6, weight decay 0.01 on weight matrices only): train_dml.py
--loss supcon --pooling mean's step.
Each batch is padded to its longest sentence (one forward, no length pieces).

Reads the batches (`ids`: every sentence's ids one after another, `lengths`, `labels`,
`sizes`: sentences per batch) and prints one JSON line: per phase the mean wall and CPU
seconds and the peak resident MiB above the step's start (VmHWM, reset through
/proc/self/clear_refs), the process's peak (the highest VmHWM seen), and the step's wall
seconds.
"""

import argparse
import json
import time

import numpy as np
import torch
import transformers


def memory_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError('no %s in /proc/self/status' % field)


def supcon(x, labels, temperature):
    """Khosla et al.'s L_out on one view per sentence; (B, D), (B,) -> scalar."""
    z = torch.nn.functional.normalize(x, dim=1)
    logits = z @ z.t() / temperature
    eye = torch.eye(len(labels), dtype=torch.bool)
    logits = logits.masked_fill(eye, float('-inf'))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    count = positive.sum(dim=1)
    valid = count > 0
    if not valid.any():  # as bertlib's: 0, still connected to x (not the mean of nothing)
        return x[:0].sum()
    mean = (log_prob.masked_fill(~positive, 0.0).sum(dim=1) / count.clamp(min=1))
    return -(mean[valid]).mean()


def load_bert(weights, config):
    """transformers' BertModel (no pooler, eager attention) of `config` (a
    transformers.BertConfig) with the arrays of the npz `weights` (Hugging Face names)."""
    config._attn_implementation = 'eager'
    bert = transformers.BertModel(config, add_pooling_layer=False)
    with np.load(weights, allow_pickle=False) as npz:
        state = {name: torch.from_numpy(npz[name]) for name in npz.files
                 if not name.startswith('pooler.')}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    missing = [n for n in missing if not n.endswith(('position_ids', 'token_type_ids'))]
    if missing or unexpected:
        raise SystemExit('weights do not match: missing %s, unexpected %s'
                         % (missing, unexpected))
    return bert


def read_config(path):
    with open(path, encoding='utf-8') as f:
        return transformers.BertConfig(**json.load(f))


def decay_groups(named, weight_decay):
    """AdamW's two parameter groups of [(name, parameter)]: weight matrices decay (as
    bertlib's make_optimizer: not biases, not LayerNorm), the rest does not."""
    decay = [p for n, p in named if p.dim() > 1 and 'LayerNorm' not in n]
    rest = [p for n, p in named if not (p.dim() > 1 and 'LayerNorm' not in n)]
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': rest, 'weight_decay': 0.0}]


def split_ids(flat, lengths):
    """The 1-D id arrays of sentences stored one after another in `flat`, (sum lengths,)."""
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return [flat[a:b] for a, b in zip(starts[:-1], starts[1:])]


def pad(batch):
    """(ids, mask), (B, longest) int64, of a list of 1-D id arrays; <pad> (id 1) after
    each sentence, masked out."""
    width = max(len(s) for s in batch)
    ids = torch.ones((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, s in enumerate(batch):
        ids[row, :len(s)] = torch.from_numpy(s.astype(np.int64))
        mask[row, :len(s)] = 1
    return ids, mask


def mean_pool(bert, ids, mask):
    """(B, hidden) mean of the real tokens' last hidden states, <s> and </s> included."""
    states = bert(input_ids=ids, attention_mask=mask,
                  token_type_ids=torch.zeros_like(ids)).last_hidden_state
    weights = mask[:, :, None].to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--weights', required=True)
    parser.add_argument('--config', required=True)
    parser.add_argument('--batches', required=True)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--freeze_word_embeddings', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = read_config(args.config)
    bert = load_bert(args.weights, config)
    head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(config.hidden_size, 512))
    if args.freeze_word_embeddings:
        bert.embeddings.word_embeddings.weight.requires_grad_(False)
    bert.train()
    head.train()
    named = [(n, p) for n, p in list(bert.named_parameters()) + list(head.named_parameters())
             if p.requires_grad]
    optimizer = torch.optim.AdamW(decay_groups(named, 0.01), lr=5e-5, eps=1e-6)
    params = [p for _, p in named]

    with np.load(args.batches, allow_pickle=False) as npz:
        flat, lengths, labels, sizes = (npz[k] for k in ('ids', 'lengths', 'labels', 'sizes'))
    sentences = split_ids(flat, lengths)
    edges = np.concatenate([[0], np.cumsum(sizes)])

    # The highest VmHWM seen (clear_refs resets it; ru_maxrss would count the parent's).
    highest = memory_kib('VmHWM')
    phases = {name: {'wall': [], 'cpu': [], 'peak': []}
              for name in ('forward', 'backward', 'update')}
    steps = []
    for step, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        ids, mask = pad(sentences[a:b])
        target = torch.from_numpy(labels[a:b].astype(np.int64))
        base = memory_kib('VmRSS')
        step_start = time.perf_counter()
        results = {}

        def forward():
            results['loss'] = supcon(head(mean_pool(bert, ids, mask)), target, 0.1)

        def backward():
            optimizer.zero_grad(set_to_none=True)
            results['loss'].backward()

        def update():
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

        for name, function in (('forward', forward), ('backward', backward),
                               ('update', update)):
            highest = max(highest, memory_kib('VmHWM'))
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            phases[name]['wall'].append(time.perf_counter() - wall)
            phases[name]['cpu'].append(time.process_time() - cpu)
            phases[name]['peak'].append((memory_kib('VmHWM') - base) / 1024.0)
        if step == 0:  # warm-up, as training_step.py
            for phase in phases.values():
                for values in phase.values():
                    values.clear()
            continue
        steps.append(time.perf_counter() - step_start)
    summary = {name: {'wall': float(np.mean(p['wall'])), 'cpu': float(np.mean(p['cpu'])),
                      'peak': float(max(p['peak']))} for name, p in phases.items()}
    summary['step'] = float(np.mean(steps))
    summary['process_peak'] = max(highest, memory_kib('VmHWM')) / 1024.0
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
