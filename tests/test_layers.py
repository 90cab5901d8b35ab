"""The house's layers import downward only: dnnlib < torch_utils < networks < training, metrics < tools < root CLIs.

Every import statement is read from the source (top level and inside functions), so a lazy import that
runs up a layer is caught as well as one at the top of a file.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Which packages each lower package may import from this repository. legacy.py stays at the root where the
# official layout keeps it (users import it as `legacy`); it is a library, so the loops may load pickles with it.
ALLOWED = {
    'dnnlib': {'dnnlib'},
    'torch_utils': {'dnnlib', 'torch_utils'},
    'networks': {'dnnlib', 'torch_utils', 'networks'},
    'training': {'dnnlib', 'torch_utils', 'networks', 'training', 'metrics', 'legacy'},
    'metrics': {'dnnlib', 'torch_utils', 'networks', 'training', 'metrics', 'legacy'},
}
OWN_TOP_LEVEL = {'dnnlib', 'torch_utils', 'networks', 'training', 'metrics', 'tools', 'legacy', 'train', 'generate',
                 'style_mixing', 'projector', 'calc_metrics', 'dataset_tool', 'demo'}


def imported_modules(path):
    """Top-level names of every module a file imports (relative imports resolve to the file's own package)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    own_package = os.path.relpath(path, REPO).split(os.sep)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split('.')[0]
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, own_package if node.level else node.module.split('.')[0]


def upward_imports(package):
    found = []
    for root, _dirs, files in os.walk(os.path.join(REPO, package)):
        for name in sorted(files):
            if name.endswith('.py'):
                path = os.path.join(root, name)
                for lineno, module in imported_modules(path):
                    if module in OWN_TOP_LEVEL and module not in ALLOWED[package]:
                        found.append(f'{os.path.relpath(path, REPO)}:{lineno} imports {module}')
    return found


@pytest.mark.parametrize('package', sorted(ALLOWED))
def test_no_import_runs_up_a_layer(package):
    assert upward_imports(package) == []


def test_the_check_sees_a_lazy_upward_import(tmp_path, monkeypatch):
    # The scanner itself must catch an import hidden inside a function.
    bad = tmp_path / 'metrics'
    bad.mkdir()
    (bad / 'm.py').write_text('def f():\n    from tools import assets\n    return assets\n')
    monkeypatch.setattr(__import__(__name__), 'REPO', str(tmp_path))
    assert upward_imports('metrics') == ['metrics/m.py:2 imports tools']
