"""The README and docs/*.md: their links resolve, their commands parse, and the README's
walk through a user's own data runs."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from bertlib.testing import ROOT

DOCUMENTS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
FENCE = re.compile(r'^```.*?^```[ \t]*$', re.M | re.S)
# `](target)` of a link or picture; the text before it may span lines.
LINK = re.compile(r'\]\(([^)\s]+)\)')


def prose(text):
    """`text` without its fenced code blocks, whose `#` lines are not headings."""
    return FENCE.sub('', text)


def code_blocks(text):
    """The fenced code blocks of `text`, without their fences."""
    return [block.split('\n', 1)[1].rsplit('\n', 1)[0] for block in FENCE.findall(text)]


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation other than `-` and `_`
    dropped, spaces to hyphens (`## \\`train_dml.py\\`: metric learning` ->
    `train_dmlpy-metric-learning`)."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors(path):
    """The anchors of a Markdown file's headings, `-1`, `-2`... for repeated ones."""
    seen = {}
    result = set()
    for line in prose(path.read_text(encoding='utf-8')).splitlines():
        match = re.match(r'#{1,6} (.*)', line)
        if match:
            name = slug(match.group(1))
            result.add(name if name not in seen else '%s-%d' % (name, seen[name]))
            seen[name] = seen.get(name, 0) + 1
    return result


def relative_links(path):
    """(target file, anchor or None) of every relative link in `path`."""
    for target in LINK.findall(prose(path.read_text(encoding='utf-8'))):
        if re.match(r'[a-z]+:', target):
            continue
        name, _, anchor = target.partition('#')
        yield (path.parent / name).resolve() if name else path, anchor or None


def test_slug_follows_github():
    assert slug('`train_dml.py`: metric learning') == 'train_dmlpy-metric-learning'
    assert slug('For users of the original BERT-DML') == 'for-users-of-the-original-bert-dml'
    assert slug('Python, NumPy and CuPy versions') == 'python-numpy-and-cupy-versions'


@pytest.mark.parametrize('path', DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve(path):
    """Every picture and page a document links to exists, and every `#anchor` names a
    heading of its target."""
    broken = []
    for target, anchor in relative_links(path):
        if not target.exists():
            broken.append('%s (no such file)' % target)
        elif anchor and anchor not in anchors(target):
            broken.append('%s#%s (no such heading)' % (target.name, anchor))
    assert not broken, '%s: %s' % (path.name, '; '.join(broken))


def test_the_checker_sees_links():
    """The README links pictures, docs/ pages' sections and its own: a checker that found
    none would pass on anything."""
    links = list(relative_links(ROOT / 'README.md'))
    assert any(t.suffix == '.png' for t, _ in links)
    assert any(t.name == 'scripts.md' and a == 'which-loss-to-use' for t, a in links)
    assert any(t.name == 'README.md' and a == 'your-own-data-step-by-step' for t, a in links)


def headings(path):
    """The texts of a Markdown file's headings, of any level, outside code blocks."""
    return [match.group(1) for match in
            re.finditer(r'^#{1,6} (.*)$', prose(path.read_text(encoding='utf-8')), re.M)]


def test_no_section_of_the_old_readme_was_lost():
    """Every heading of the README before it moved into docs/ (commit bee9d9d, 1,388
    lines; the list is tests/data/readme-bee9d9d-headings.txt) is still a heading of the
    README or of a docs/ page, so that no section was dropped in the move."""
    old = (ROOT / 'tests' / 'data' / 'readme-bee9d9d-headings.txt').read_text(
        encoding='utf-8').splitlines()
    assert len(old) == 24 and 'What the scripts trust' in old
    now = {heading for path in DOCUMENTS for heading in headings(path)}
    assert [heading for heading in old if heading not in now] == []


def test_the_readme_stays_short():
    """A newcomer reads the README in minutes; the rest is in docs/."""
    assert len((ROOT / 'README.md').read_text(encoding='utf-8').splitlines()) <= 300


def script_commands(text):
    """(script name, argv) of each command in `text`'s code blocks that runs one of the
    project's scripts with Python, with the blocks' `NAME=value` lines substituted.
    Commands with a placeholder (`<...>`, `...`) are left out."""
    variables = {}
    for block in code_blocks(text):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split('  #')[0].strip()
            assignment = re.match(r'([A-Z_]+)=(\S.*)$', line)
            if assignment and len(shlex.split(assignment.group(2))) == 1:
                value = shlex.split(assignment.group(2))[0]
                variables[assignment.group(1)] = re.sub(
                    r'\$(\w+)', lambda m: variables.get(m.group(1), m.group(0)), value)
                continue
            if ('python ' not in line or '...' in line
                    or '<' in line.replace('<TAB>', '')):
                continue
            line = re.sub(r'\$(\w+)', lambda m: variables.get(m.group(1), m.group(0)), line)
            words = shlex.split(line)
            for i, word in enumerate(words):
                module = (words[i - 1] == '-m' and re.fullmatch(r'bertlib\.\w+', word)
                          and (ROOT / (word.replace('.', '/') + '.py')).is_file())
                if module or re.fullmatch(r'\w+\.py', word) and (ROOT / word).is_file():
                    argv = []
                    for arg in words[i + 1:]:
                        if arg in ('|', '>', '2>&1'):
                            break
                        argv.append(arg)
                    yield word, argv
                    break


def argument_parser(name):
    """The parse_args of a script (train_dml.py) or a module run with -m (bertlib.export)."""
    if name.startswith('bertlib.'):
        return importlib.import_module(name).build_parser().parse_args
    return load_script(name).parse_args


def load_script(name):
    spec = importlib.util.spec_from_file_location(name[:-3], ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_commands_parse():
    """Every command line of the README and docs/ that runs a script (the walk through,
    the references, the MPI examples) names only flags and values the script accepts."""
    commands = [(path.relative_to(ROOT).as_posix(), name, argv) for path in DOCUMENTS
                for name, argv in script_commands(path.read_text(encoding='utf-8'))]
    names = {name for _, name, _ in commands}
    assert {'train_dml.py', 'extruct_bert_metrics.py', 'train_classifier.py',
            'extruct_bert_classified.py', 'extruct_bert_embed.py', 'plot_features.py',
            'cluster_features.py', 'evaluate_features.py', 'explore_features.py',
            'test_classifier.py', 'bertlib.convert', 'bertlib.export'} <= names
    parsers = {name: argument_parser(name) for name in names}
    for where, name, argv in commands:
        try:
            parsers[name](argv)
        except SystemExit:
            pytest.fail('%s: %s %s does not parse' % (where, name, ' '.join(argv)))


def test_readme_commands_name_the_model_by_its_folder():
    """The README's commands that run a BERT give --bert_dir, not the three file flags."""
    bert = {'train_dml.py', 'train_classifier.py', 'test_classifier.py',
            'extruct_bert_metrics.py', 'extruct_bert_classified.py', 'extruct_bert_embed.py'}
    commands = [argv for name, argv in
                script_commands((ROOT / 'README.md').read_text(encoding='utf-8'))
                if name in bert]
    assert len(commands) == 5
    for argv in commands:
        assert '--bert_dir' in argv and not {'--vocab_file', '--bert_config_file',
                                             '--init_checkpoint'} & set(argv), argv


def walk_through():
    """The shell commands of the README's 'Your own data, step by step'."""
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    section = text.split('## Your own data, step by step\n', 1)[1].split('\n## ', 1)[0]
    return '\n'.join(code_blocks(section))


@pytest.mark.slow
def test_walk_through_runs(demo_model, tmp_path):
    """The walk through, as printed (one epoch instead of three), on a small labelled
    file, writes every file it promises and compares the three feature sets."""
    script = walk_through().replace('--epoch 3', '--epoch 1')
    assert script.count('.venv/bin/python ') == 10
    script = script.replace('.venv/bin/python -m ', '"$PY" -m ')
    script = script.replace('.venv/bin/python ', '"$PY" "$ROOT"/')
    (tmp_path / 'my').mkdir()
    sample = (ROOT / 'samples' / 'sentences.txt').read_bytes()
    (tmp_path / 'my' / 'train.txt').write_bytes(sample)
    (tmp_path / 'my' / 'test.txt').write_bytes(sample)
    (tmp_path / 'BERT').symlink_to(ROOT / 'BERT')
    env = dict(os.environ, PY=sys.executable, ROOT=str(ROOT),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    done = subprocess.run(['bash', '-euc', script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    for path in ['models/metrics/my/final.model', 'models/classified/my/early_stopped-uar.model',
                 'features/my-dml-test.txt', 'features/my-clsed-test.txt',
                 'features/my-embed-test.txt', 'results/plot_my-dml-test.png',
                 'results/clustering_my-dml-test.png', 'results/clustering_my-dml-test.tsv',
                 'results/explore_my-dml-test.html', 'results/comparison_my-test.png',
                 'exported/my/modules.json', 'exported/my/model.safetensors']:
        assert (tmp_path / path).stat().st_size > 0, path
    rows = [line.split(' | ')[0] for line in done.stdout.splitlines() if line.startswith('| ')]
    assert rows[-3:] == ['| DML', '| Classified', '| Pre-trained']
