"""bench/mlit_validation.py's fold and bench/disjoint_classes.py's file writer: what the
MLIT recipe was chosen on (a fifth of split-train.txt held out per class, never a line of
split-test.txt) and how --join_words reads the text."""

import collections

import disjoint_classes  # bench/, on pytest.ini's pythonpath
import mlit_validation


def rows_of(counts):
    return [(label, '%s の 行 %d' % (label, i))
            for label, n in counts.items() for i in range(n)]


def test_the_fold_holds_out_a_fifth_of_every_class_and_nothing_twice():
    rows = rows_of({'エンジン': 50, '制動装置': 30, '非装置': 5, 'その他': 15})
    train, valid = mlit_validation.fold(rows)
    assert len(valid) == 20 and len(train) == 80
    assert sorted(train + valid) == sorted(rows)
    assert collections.Counter(label for label, _ in valid) == {
        'エンジン': 10, '制動装置': 6, '非装置': 1, 'その他': 3}
    # Seeded: the same lines every run, so the runs of a comparison share one fold.
    assert mlit_validation.fold(rows) == (train, valid)


def test_join_words_removes_the_spaces_from_the_text_only(tmp_path):
    rows = [('排ｶﾞｽ･騒音', 'ＮＯＸ センサー の 不良 。'), ('a b', 'x  y')]
    disjoint_classes.write(tmp_path / 'joined.txt', rows, join_words=True)
    disjoint_classes.write(tmp_path / 'spaced.txt', rows)
    assert (tmp_path / 'joined.txt').read_text(encoding='utf-8') == (
        '排ｶﾞｽ･騒音\tＮＯＸセンサーの不良。\na b\txy\n')
    assert (tmp_path / 'spaced.txt').read_text(encoding='utf-8') == (
        '排ｶﾞｽ･騒音\tＮＯＸ センサー の 不良 。\na b\tx  y\n')
