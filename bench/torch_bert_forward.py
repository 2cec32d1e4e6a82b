#!/usr/bin/env python
"""Token states of a float32 transformers BertModel, for bench/multilingual_fidelity.py.

Runs in an interpreter with torch, transformers and NumPy (not bertlib's environment, so
it imports nothing of bertlib). Reads the weights under Hugging Face's names (an npz that
multilingual_fidelity.py writes from a converted checkpoint), the bert_config.json, and
token ids (`ids`: every text's ids one after another, `lengths`: how many each); writes
the final hidden state of every token, (sum of lengths, hidden) float32, as an .npy.
"""

import argparse
import json

import numpy as np
import torch
import transformers


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--weights', required=True)
    parser.add_argument('--config', required=True)
    parser.add_argument('--ids', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--batchsize', type=int, default=16)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with open(args.config, encoding='utf-8') as f:
        config = transformers.BertConfig(**json.load(f))
    # Eager attention is the textbook softmax; the pooler is not compared (mean pooling).
    config._attn_implementation = 'eager'
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    with np.load(args.weights, allow_pickle=False) as npz:
        state = {name: torch.from_numpy(npz[name]) for name in npz.files
                 if not name.startswith('pooler.')}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [n for n in missing if not n.endswith('position_ids')
               and not n.endswith('token_type_ids')]
    if missing or unexpected:
        raise SystemExit('weights do not match: missing %s, unexpected %s'
                         % (missing, unexpected))

    with np.load(args.ids, allow_pickle=False) as npz:
        flat, lengths = npz['ids'], npz['lengths']
    starts = np.concatenate([[0], np.cumsum(lengths)])
    texts = [flat[a:b] for a, b in zip(starts[:-1], starts[1:])]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    states = [None] * len(texts)
    with torch.no_grad():
        for start in range(0, len(order), args.batchsize):
            batch = order[start:start + args.batchsize]
            width = max(len(texts[i]) for i in batch)
            ids = torch.ones((len(batch), width), dtype=torch.long)  # <pad> is 1
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(texts[i])] = torch.from_numpy(texts[i])
                mask[row, :len(texts[i])] = 1
            hidden = model(input_ids=ids, attention_mask=mask,
                           token_type_ids=torch.zeros_like(ids)).last_hidden_state
            for row, i in enumerate(batch):
                states[i] = hidden[row, :len(texts[i])].numpy()
    np.save(args.out, np.concatenate(states).astype(np.float32))


if __name__ == '__main__':
    main()
