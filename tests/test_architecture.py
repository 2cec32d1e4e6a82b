"""The package's layering: bertlib's modules import one another one way, never in a cycle."""

import ast
import os
import subprocess

import pytest

import bertlib

PACKAGE = os.path.dirname(bertlib.__file__)


def import_graph():
    """{module: set of bertlib modules it imports}, function-level imports included."""
    modules = {name[:-3] for name in os.listdir(PACKAGE) if name.endswith('.py')}
    graph = {}
    for module in modules:
        with open(os.path.join(PACKAGE, module + '.py'), encoding='utf-8') as stream:
            tree = ast.parse(stream.read())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == 'bertlib':
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('bertlib.'):
                targets.add(node.module.split('.')[1])
            elif isinstance(node, ast.Import):
                targets |= {alias.name.split('.')[1] for alias in node.names
                            if alias.name.startswith('bertlib.')}
        graph[module] = (targets & modules) - {module}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules [a, b, ..., a], or None."""
    state = {}  # module -> 'open' while on the path, 'done' after

    def visit(module, path):
        state[module] = 'open'
        for target in sorted(graph[module]):
            if state.get(target) == 'open':
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = 'done'
        return None
    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a'}}) is None


def test_bertlib_has_no_import_cycle():
    graph = import_graph()
    assert {'process', 'flags', 'devices', 'bert_loading', 'distributed', 'features',
            'length_batching', 'progress'} <= set(graph)
    assert find_cycle(graph) is None


def test_the_engine_and_progress_sit_below_the_pipeline_and_the_command_line():
    graph = import_graph()
    assert graph['length_batching'] == set()
    assert graph['progress'] == set()
    # The pipeline takes the BERT flags and --gpu; it never loads a model or exits.
    assert not {'process', 'bert_loading'} & graph['features']
    assert 'features' not in graph['distributed']


def test_the_command_line_layer_is_one_module_per_concern():
    """process (exit codes, signals, streams), flags, devices and bert_loading: none of
    them reaches into another, so a script takes only the concerns it needs."""
    graph = import_graph()
    layer = {'process', 'flags', 'devices', 'bert_loading'}
    assert 'cli' not in graph
    for module in layer:
        assert not graph[module] & layer, module


def test_computing_and_drawing_are_separate_modules():
    """figures draws what projection, clustering and training compute, and needs none of
    them; they do not draw."""
    graph = import_graph()
    assert graph['figures'] <= {'errors', 'fileio'}
    assert 'figures' not in graph['clustering']
    assert 'figures' in graph['training']


def test_the_extractors_and_the_drawing_module_do_not_load_matplotlib():
    """matplotlib costs a second of start-up: only drawing calls import it."""
    import subprocess
    import sys
    code = ('import sys, bertlib.figures, bertlib.projection, bertlib.clustering, '
            'extruct_bert_embed, extruct_bert_metrics, extruct_bert_classified; '
            'print("matplotlib" in sys.modules)')
    root = os.path.dirname(PACKAGE)
    result = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == 'False'


# Spelled in two pieces so that this file does not match itself.
IMPORT_PATH = 'sys' + '.path'


def import_path_lines(text):
    """The numbers of the lines of `text` that name the interpreter's import path list."""
    return [number for number, line in enumerate(text.splitlines(), 1) if IMPORT_PATH in line]


def test_import_path_lines_sees_an_edit():
    assert import_path_lines('import sys\n%s.insert(0, ROOT)\n' % IMPORT_PATH) == [2]
    assert import_path_lines('import os\nos.path.join(a, b)\n') == []


def test_no_python_file_edits_the_import_path():
    """No tracked Python file edits the import path: the scripts, bench/, tools/ and
    tests import bertlib as installed (`make setup`: editable, pyproject.toml) or from
    PYTHONPATH; bench/'s modules import one another from their script's own folder;
    pytest.ini puts the root and bench/ on the tests' path."""
    root = os.path.dirname(PACKAGE)
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others',
                             '--exclude-standard', '*.py'], cwd=root,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip('not a git checkout: %s' % listed.stderr.strip())
    edits = []
    for name in filter(None, listed.stdout.split('\0')):
        path = os.path.join(root, name)
        if os.path.exists(path):
            with open(path, encoding='utf-8') as stream:
                edits += ['%s:%d' % (name, n) for n in import_path_lines(stream.read())]
    assert edits == []
