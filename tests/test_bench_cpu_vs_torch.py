"""bench/cpu_vs_torch.py's own arithmetic, without PyTorch: the input it makes of MLIT
(first N lines, words joined) and the encoder FLOPs its ceiling divides by."""

import cpu_vs_torch  # bench/, on pytest.ini's pythonpath
from conftest import WORDS, write_random_bert


def test_prepare_input_keeps_the_first_lines_and_joins_the_words(tmp_path):
    source = tmp_path / 'split-test.txt'
    source.write_text('a\tエンジン が 止まる\nb\tブレーキ が 効か ない\nc\tthird line\n',
                      encoding='utf-8')
    row = dict(cpu_vs_torch.ROWS['extract-e5'], input=source, lines=2)
    path = cpu_vs_torch.prepare_input(row, tmp_path)
    assert path.read_text(encoding='utf-8') == 'a\tエンジンが止まる\nb\tブレーキが効かない\n'
    as_is = dict(row, lines=None, join=False)
    assert cpu_vs_torch.prepare_input(as_is, tmp_path) == source


def test_forward_flops_counts_the_dense_and_attention_products_per_real_token(tmp_path):
    bert = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=2,
                             intermediate_size=32)
    lines = tmp_path / 'lines.txt'
    lines.write_text('x\t%s %s\ny\t%s\n' % (WORDS[0], WORDS[1], WORDS[2]))
    sentences, tokens, flops = cpu_vs_torch.forward_flops(bert, 'vocab.txt', lines, '')
    assert (sentences, tokens) == (2, 4 + 3)  # [CLS] w w [SEP], [CLS] w [SEP]
    per_layer = [2 * n * (4 * 16 * 16 + 2 * 16 * 32) + 4 * n * n * 16 for n in (4, 3)]
    assert flops == 2 * sum(per_layer)
