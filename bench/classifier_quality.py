#!/usr/bin/env python
"""The classifier baseline on rt-polarity with the demo model, on the CPU.

Trains train_classifier.py on 04-train.txt (its defaults; --epoch, and flags after `--`),
then reports the test accuracy of the final model on 04-test.txt, the training speed
(sentences/s, forward + backward + update) and precision@1 / MAP@R of its pooled features
extracted with extruct_bert_classified.py. Figures are appended to
results/classifier-quality.jsonl.

    python bench/classifier_quality.py --epoch 3
"""

import argparse
import json
import subprocess
import sys
import time

from bertlib.testing import model_flags
from dml_quality import (DATA, MODEL, RESULTS, ROOT, read_log, score_run,
                         split_extra)


def main():
    argv, extra = split_extra(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--epoch', type=int, default=3)
    parser.add_argument('--name', default='classifier')
    args = parser.parse_args(argv)
    if not (DATA / '04-train.txt').exists():
        print('skipped: %s is absent' % DATA)
        return
    out = RESULTS / 'classifier' / args.name
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / 'train_classifier.py'),
                    '--train', str(DATA / '04-train.txt'), '--eval', str(DATA / '04-test.txt'),
                    '--out', str(out), '--epoch', str(args.epoch)] + model_flags(MODEL) + extra,
                   check=True)
    log = read_log(out)
    scores = score_run(out, DATA / '04-test.txt', DATA / '04-train.txt', extra,
                       script='extruct_bert_classified.py')
    record = {'name': args.name, 'epochs': args.epoch, 'flags': extra,
              'minutes': round((time.time() - start) / 60.0, 1),
              'test_accuracy': round(log[-1]['D/acc1'], 4),
              'test_uar': round(log[-1]['D/acc2'], 4),
              'sentences_per_sec': round(sum(r['T/sentences_per_sec'] for r in log)
                                         / len(log), 1),
              'features_precision_at_1': round(scores['precision_at_1'], 4),
              'features_map_at_r': round(scores['map_at_r'], 4),
              'per_epoch_test_accuracy': [round(r['D/acc1'], 4) for r in log]}
    print(json.dumps(record, indent=2))
    with open(RESULTS / 'classifier-quality.jsonl', 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')


if __name__ == '__main__':
    main()
