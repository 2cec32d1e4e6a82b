#!/usr/bin/env python
"""Peak memory of loading a hostile pre-trained checkpoint (issue 13, item 8).

Builds a tiny random BERT whose `bert/pooler/W` is replaced by a deflated member that
declares and holds 512 MiB of zeros (the npz is a few hundred kB), then loads it in a child
process as extruct_bert_embed.py does, and prints the child's peak resident memory and
outcome beside those of loading the untouched checkpoint. Headers are checked before any
data is read, so the hostile file must be refused at about the untouched file's peak
(before the fix: the whole array was read first, 757 MB).

    python bench/hostile_npz.py
"""

import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

from bertlib.testing import write_random_bert

CHILD = r'''
import resource, sys
from bertlib import modeling
from bertlib.errors import UsageError
config = modeling.BertConfig.from_json_file(sys.argv[1])
bert = modeling.BertModel(config, random_init=False)
try:
    modeling.load_pretrained(bert, sys.argv[2])
    outcome = 'loaded'
except UsageError as e:
    outcome = 'refused: %s' % str(e)[-90:]
print('%d\t%s' % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, outcome))
'''


def hostile_copy(source, target, name='bert/pooler/W', mib=512):
    """`source` with `name` replaced by `mib` MiB of float32 zeros, written in 1 MiB
    chunks through a deflating zip stream (never held in memory)."""
    with np.load(source) as archive:
        arrays = {k: archive[k] for k in archive.files}
    with zipfile.ZipFile(target, 'w', compression=zipfile.ZIP_DEFLATED) as z:
        for key, array in arrays.items():
            with z.open(key + '.npy', 'w', force_zip64=True) as f:
                if key != name:
                    np.lib.format.write_array(f, array)
                    continue
                count = mib * (1 << 20) // 4
                np.lib.format.write_array_header_1_0(
                    f, {'descr': '<f4', 'fortran_order': False, 'shape': (count,)})
                chunk = bytes(1 << 20)
                for _ in range(mib):
                    f.write(chunk)


def peak(config, checkpoint):
    started = time.time()
    out = subprocess.run([sys.executable, '-c', CHILD, config, checkpoint],
                         capture_output=True, text=True, check=True).stdout
    kib, outcome = out.strip().split('\t', 1)
    return int(kib) / 1024.0, outcome, time.time() - started


def main():
    import pathlib
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_random_bert(pathlib.Path(tmp) / 'bert', ['good', 'bad'])
        config = str(folder / 'bert_config.json')
        plain = str(folder / 'arrays_bert_model.ckpt.npz')
        hostile = os.path.join(tmp, 'hostile.npz')
        hostile_copy(plain, hostile)
        print('hostile npz: %.1f kB on disk, declares 512 MiB' % (os.path.getsize(hostile) / 1e3))
        for what, path in (('untouched checkpoint', plain), ('hostile checkpoint', hostile)):
            mib, outcome, seconds = peak(config, path)
            print('%-20s peak RSS %7.1f MiB  %5.2f s  %s' % (what, mib, seconds, outcome))


if __name__ == '__main__':
    main()
