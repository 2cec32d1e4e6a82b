"""train_dml.py's numbers on the tiny random BERT, fixed: a refactor of the losses, the
samplers or the training set-up must not change a single draw.

The golden values are those of main at 3020ef1 (before `losses.build` and
`bertlib/launch.py`), where the same runs gave bit-identical log.jsonl and model files.
The tolerances only absorb another machine's BLAS rounding (MAP@R's a swapped near-tie); a changed draw, default or
loss moves these figures by far more.
"""

import json

import numpy as np
import pytest

import train_dml
from conftest import train_args

# flags: (T/loss, D/loss, T/acc2 of epoch 2, sum |W - W_initial| of layer 0's key weights)
GOLDEN = {
    ('--loss', 'triplet', '--triplets', '16'):
        (0.19993910193443298, 0.20000000298023224, 0.419758895170334, 5.585563485510647e-06),
    ('--loss', 'batch_hard', '--samples_per_class', '4'):
        (0.20705825686454774, 0.20000898092985153, 0.42396945608322295, 0.0002959355479106307),
    ('--loss', 'multi_similarity', '--memory_size', '24', '--memory_warmup', '1'):
        (1.764953891436259, 1.1785931587219238, 0.42404780871840303, 0.00017976032904698513),
    ('--loss', 'arcface', '--samples_per_class', '4'):
        (9.738579654693604, 9.641581535339355, 0.4819853624922775, 0.000262851517618401),
    ('--loss', 'supcon', '--sampling', 'random'):
        (3.101941776275635, 1.5222618579864502, 0.4151758880535665, 0.00042348221177235246),
    ('--loss', 'supcon_ce', '--memory_size', '30', '--memory_warmup', '1', '--ema', '0.9'):
        (4.346908887227376, 2.506559371948242, 0.4744792818697515, 5.716366649721749e-05),
    ('--loss', 'triplet', '--ema', '0.5', '--triplets', '0'):
        (0.19996795952320098, 0.20000000298023224, 0.41827011797768077, 1.1276286386419088e-05),
    ('--loss', 'supcon', '--head', 'none', '--temperature', '0.3'):
        (2.7087155183156333, 2.70805025100708, 0.39808881489303516, 0.000806331529020099),
}

KEY = 'bert/encoder/layer_0/attention/key/W'


@pytest.mark.parametrize('flags', GOLDEN, ids=lambda flags: '-'.join(flags[1::2]))
def test_the_same_seed_gives_the_numbers_of_before(tmp_path, tiny, flags, capsys):
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '2', '--seed', '3', *flags))
    last = json.loads((out / 'log.jsonl').read_text().splitlines()[-1])
    with np.load(tiny / 'arrays_bert_model.ckpt.npz') as initial, \
            np.load(out / 'final.model') as final:
        moved = np.abs(final[KEY].astype(np.float64) - initial[KEY]).sum()
    t_loss, d_loss, t_map, expected_moved = GOLDEN[flags]
    np.testing.assert_allclose([last['T/loss'], last['D/loss']], [t_loss, d_loss], rtol=1e-5)
    # MAP@R ranks near-ties among barely trained features: one BLAS rounding can swap two
    # neighbours (0.419759 -> 0.419429 for the triplet run on a Haswell OpenBLAS), which
    # the losses above, at 1e-5, would not allow.
    np.testing.assert_allclose(last['T/acc2'], t_map, atol=1e-3)
    np.testing.assert_allclose(moved, expected_moved, rtol=1e-3)
