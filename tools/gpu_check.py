#!/usr/bin/env python
"""The Python steps of tools/gpu_check.sh: a random model of the demo's shape, data, a
features comparison and the speed figures. Each prints one line `name: value ...` that
the shell script copies into its report.

    python tools/gpu_check.py make-model --config C --vocab V --out DIR
    python tools/gpu_check.py make-data --out DIR [--lines 512]
    python tools/gpu_check.py compare A.tsv B.tsv [--tolerance 1e-4]
    python tools/gpu_check.py speed-extract --model DIR --gpu 0 [--torch]
    python tools/gpu_check.py speed-train --model DIR --gpu 0 [--torch]
"""

import argparse
import os
import shutil
import time

import numpy as np

# (bertlib first: compat)
from bertlib import bert_loading, devices, length_batching, modeling, process

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'samples', 'sentences.txt')


def make_model(args):
    """Random weights in the demo model's shape: its npz (91 MB) is too big to carry."""
    os.makedirs(args.out, exist_ok=True)
    config = bert_loading.read_bert_config(args.config)
    np.random.seed(args.seed)
    bert = modeling.BertModel(config)
    modeling.save_pretrained(bert, os.path.join(args.out, 'arrays_bert_model.ckpt.npz'))
    shutil.copy(args.config, os.path.join(args.out, 'bert_config.json'))
    shutil.copy(args.vocab, os.path.join(args.out, 'vocab.txt'))
    print('make-model: %s, hidden %d, %d layers' % (args.out, config.hidden_size,
                                                     config.num_hidden_layers))


def make_data(args):
    """train.txt / eval.txt / input.txt of `--lines` labelled sentences, recombined from
    samples/sentences.txt (words of two sentences of one class)."""
    rows = [line.rstrip('\n').split('\t') for line in open(SAMPLES, encoding='utf-8')
            if line.strip()]
    by_label = {}
    for label, text in rows:
        by_label.setdefault(label, []).append(text.split())
    rng = np.random.RandomState(0)
    labels = sorted(by_label)

    def lines(n):
        out = []
        for i in range(n):
            label = labels[i % len(labels)]
            a, b = (by_label[label][j] for j in rng.randint(len(by_label[label]), size=2))
            words = a[:rng.randint(3, len(a) + 1)] + b[rng.randint(len(b)):]
            out.append('%s\t%s\n' % (label, ' '.join(words)))
        return out
    os.makedirs(args.out, exist_ok=True)
    for name, n in (('train.txt', args.lines), ('eval.txt', args.lines // 4),
                    ('input.txt', args.lines)):
        with open(os.path.join(args.out, name), 'w', encoding='utf-8') as f:
            f.writelines(lines(n))
    print('make-data: %s, %d training lines, %d classes' % (args.out, args.lines, len(labels)))


def compare(args):
    from bertlib.featurefile import read_features
    labels_a, a = read_features(args.a)
    labels_b, b = read_features(args.b)
    if labels_a != labels_b or a.shape != b.shape:
        print('compare: FAIL, different rows or shapes %s %s' % (a.shape, b.shape))
        return 1
    difference = float(np.abs(a - b).max())
    ok = difference <= args.tolerance
    print('compare: %s, max |difference| %.3g over %s (bound %g)'
          % ('ok' if ok else 'FAIL', difference, a.shape, args.tolerance))
    return 0 if ok else 1


def _token_batches(tokenizer, batchsize, count, max_len=128):
    rows = [line.rstrip('\n').split('\t')[1] for line in open(SAMPLES, encoding='utf-8')
            if line.strip()]
    ids = [tokenizer.encode(rows[i % len(rows)], max_len)[0] for i in range(count)]
    order = length_batching.length_batches(ids, batchsize)
    return [length_batching.pad_batch([ids[i] for i in batch]) for batch in order]


def _load(args):
    flags = argparse.Namespace(
        vocab_file=os.path.join(args.model, 'vocab.txt'),
        bert_config_file=os.path.join(args.model, 'bert_config.json'),
        init_checkpoint=os.path.join(args.model, 'arrays_bert_model.ckpt.npz'),
        do_lower_case='auto', max_seq_length=128)
    return bert_loading.load_bert(flags)


def _torch_bert(config, device):
    import torch
    import transformers
    hf = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size)
    return torch, transformers.BertModel(hf).to(device)


def speed_extract(args):
    """Sentences/second of mean-pooled encoding in test mode, after a warm-up pass:
    bertlib on --gpu, or (--torch) a Hugging Face BertModel of the same shape in fp32,
    TF32 and fp16 autocast, on the same batches."""
    config, tokenizer, bert = _load(args)
    batches = _token_batches(tokenizer, args.batchsize, args.sentences)
    count = sum(len(ids) for ids, _ in batches)
    if args.torch:
        torch, model = _torch_bert(config, 'cuda:%d' % args.gpu)
        model.eval()
        for mode in ('fp32', 'tf32', 'fp16'):
            torch.backends.cuda.matmul.allow_tf32 = mode == 'tf32'
            torch.backends.cudnn.allow_tf32 = mode == 'tf32'

            def run():
                with torch.no_grad(), torch.autocast('cuda', torch.float16,
                                                     enabled=mode == 'fp16'):
                    for ids, mask in batches:
                        i = torch.from_numpy(ids).long().cuda(args.gpu)
                        m = torch.from_numpy(mask).cuda(args.gpu)
                        out = model(input_ids=i, attention_mask=m).last_hidden_state
                        vec = (out * m[..., None]).sum(1) / m.sum(1, keepdim=True)
                        vec.float().cpu()
                torch.cuda.synchronize()
            run()
            start = time.time()
            run()
            print('speed-extract torch %s: %.1f sentences/s (%d sentences, batch %d)'
                  % (mode, count / (time.time() - start), count, args.batchsize))
        return 0
    import chainer
    device = devices.select_device(args.gpu)
    bert.to_device(device)

    def run():
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for ids, mask in batches:
                vec = bert.encode(device.xp.asarray(ids), device.xp.asarray(mask),
                                  pooling='mean')
                chainer.backend.CpuDevice().send(vec.array)
    run()
    start = time.time()
    run()
    print('speed-extract bertlib %s: %.1f sentences/s (%d sentences, batch %d)'
          % ('gpu' if args.gpu >= 0 else 'cpu', count / (time.time() - start), count,
             args.batchsize))
    return 0


def speed_train(args):
    """Training steps/second (forward, backward, AdamW update of the whole BERT, mean
    pooling and a squared-norm loss) on batches of --batchsize sentences; bertlib, or
    (--torch) a PyTorch loop of the same shape. The loss is read only at the end."""
    config, tokenizer, bert = _load(args)
    batches = _token_batches(tokenizer, args.batchsize, args.batchsize * args.steps)
    if args.torch:
        torch, model = _torch_bert(config, 'cuda:%d' % args.gpu)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

        def run():
            for ids, mask in batches:
                i = torch.from_numpy(ids).long().cuda(args.gpu)
                m = torch.from_numpy(mask).cuda(args.gpu)
                out = model(input_ids=i, attention_mask=m).last_hidden_state
                vec = (out * m[..., None]).sum(1) / m.sum(1, keepdim=True)
                loss = (vec ** 2).sum(1).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            torch.cuda.synchronize()
            return float(loss)
        name = 'torch'
    else:
        import chainer
        import chainer.functions as F
        from bertlib import optimization
        device = devices.select_device(args.gpu)
        bert.to_device(device)
        optimizer = optimization.make_optimizer(bert, 1e-5, 0.01)
        optimizer.eta = 1.0

        def run():
            with chainer.using_config('train', True):
                for ids, mask in batches:
                    vec = bert.encode(device.xp.asarray(ids), device.xp.asarray(mask),
                                      pooling='mean')
                    loss = F.mean(F.sum(vec * vec, axis=1))
                    bert.cleargrads()
                    loss.backward()
                    optimizer.update()
            return float(loss.array)
        name = 'bertlib %s' % ('gpu' if args.gpu >= 0 else 'cpu')
    run()
    start = time.time()
    loss = run()
    seconds = time.time() - start
    print('speed-train %s: %.2f steps/s, %.1f sentences/s (batch %d, %d steps, last loss %.3g)'
          % (name, len(batches) / seconds, len(batches) * args.batchsize / seconds,
             args.batchsize, len(batches), loss))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('make-model', help='random weights in the shape of --config')
    p.add_argument('--config', required=True)
    p.add_argument('--vocab', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--seed', type=int, default=0)
    p = sub.add_parser('make-data', help='labelled sentences from samples/')
    p.add_argument('--out', required=True)
    p.add_argument('--lines', type=int, default=512)
    p = sub.add_parser('compare', help='max difference of two features TSV files')
    p.add_argument('a')
    p.add_argument('b')
    p.add_argument('--tolerance', type=float, default=1e-4)
    for name in ('speed-extract', 'speed-train'):
        p = sub.add_parser(name)
        p.add_argument('--model', required=True)
        p.add_argument('--gpu', type=int, default=0)
        p.add_argument('--torch', action='store_true', help='the PyTorch reference')
        p.add_argument('--batchsize', type=int, default=64 if name == 'speed-extract' else 32)
        p.add_argument('--sentences', type=int, default=2048)
        p.add_argument('--steps', type=int, default=20)
    args = parser.parse_args(argv)
    return {'make-model': make_model, 'make-data': make_data, 'compare': compare,
            'speed-extract': speed_extract, 'speed-train': speed_train}[args.command](args) or 0


if __name__ == '__main__':
    process.run(main)
