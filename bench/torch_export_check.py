#!/usr/bin/env python
"""What sentence-transformers and transformers compute from a folder `python -m
bertlib.export` wrote, for bench/export_fidelity.py and tests/test_export.py.

Runs in an interpreter with torch, transformers and sentence-transformers (build/torch-venv,
not bertlib's environment: it imports nothing of bertlib). Reads texts (a UTF-8 file, one
a line, as they are: no label column) and writes an .npz:

    st          SentenceTransformer(folder).encode(texts): (N, D) float32
    probs       (classifier) softmax of AutoModelForSequenceClassification's logits, (N, K)
    labels      (classifier) pipeline('text-classification')'s label of each text
    scores      (classifier) its score
    ids         the tokenizer's ids of each text, one after another, and `lengths`
"""

import argparse

import numpy as np
import torch


def read_texts(path):
    with open(path, encoding='utf-8', newline='\n') as f:
        return [line[:-1] if line.endswith('\n') else line for line in f]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--folder', required=True)
    parser.add_argument('--texts', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--kind', choices=('st', 'classifier'), default='st')
    parser.add_argument('--batchsize', type=int, default=32)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = read_texts(args.texts)
    result = {}
    if args.kind == 'st':
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(args.folder, device='cpu')
        result['st'] = model.encode(texts, batch_size=args.batchsize,
                                    convert_to_numpy=True).astype(np.float32)
        tokenizer = model.tokenizer
        # The prompt is part of the text the tokenizer sees.
        prompt = model.prompts.get(model.default_prompt_name, '') \
            if model.default_prompt_name else ''
        id_texts = [prompt + text for text in texts]
        limit = model.max_seq_length
    else:
        import transformers
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.folder)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            args.folder).eval()
        probs = []
        with torch.no_grad():
            for start in range(0, len(texts), args.batchsize):
                batch = tokenizer(texts[start:start + args.batchsize], padding=True,
                                  truncation=True, return_tensors='pt')
                probs.append(torch.softmax(model(**batch).logits, dim=-1).numpy())
        result['probs'] = np.concatenate(probs).astype(np.float32)
        classify = transformers.pipeline('text-classification', model=model,
                                         tokenizer=tokenizer, device='cpu')
        found = classify(texts, batch_size=args.batchsize, truncation=True)
        result['labels'] = np.array([item['label'] for item in found])
        result['scores'] = np.array([item['score'] for item in found], dtype=np.float64)
        id_texts = texts
        limit = tokenizer.model_max_length
    ids = [tokenizer(text, truncation=True, max_length=limit)['input_ids']
           for text in id_texts]
    result['ids'] = np.array([i for row in ids for i in row], dtype=np.int64)
    result['lengths'] = np.array([len(row) for row in ids], dtype=np.int64)
    np.savez(args.out, **result)


if __name__ == '__main__':
    main()
