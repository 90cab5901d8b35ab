"""The README cannot drift from the code: every `python X.py …` / `python -m …` line in its shell blocks names a
script or module that exists, and every option it uses appears in that command's --help."""

import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_PACKAGES = {'tools', 'training', 'metrics', 'networks', 'torch_utils', 'dnnlib'}
SHELL_FENCE = re.compile(r'^```(?:bash|sh|shell|console)\s*$')


def shell_lines(markdown):
    """Command lines of the fenced shell blocks, continuation lines joined, comments dropped."""
    lines, inside, pending = [], False, ''
    for raw in markdown.splitlines():
        if raw.startswith('```'):
            inside = bool(SHELL_FENCE.match(raw)) and not inside
            pending = ''
            continue
        if not inside:
            continue
        text = raw.strip()
        if text.startswith('#') and not pending:
            continue
        if text.endswith('\\'):
            pending += text[:-1] + ' '
            continue
        lines.append(pending + text)
        pending = ''
    return [line for line in lines if line]


def python_commands(line):
    """(target, words) for every `python …` command in a shell line; target is 'X.py' or a module name."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    commands, current = [], None
    for word in words + ['&&']:
        if word in ('&&', '||', '|', ';'):
            if current:
                commands.append(current)
            current = None
        elif current is not None:
            current.append(word)
        elif re.fullmatch(r'python3?', word):
            current = []
    found = []
    for args in commands:
        if args[:1] == ['-m'] and len(args) > 1:
            found.append((args[1], args[2:]))
        elif args and args[0].endswith('.py'):
            found.append((args[0], args[1:]))
    return found


def command_path(target):
    """Path of the repo script or module a README command runs; None for modules that are not HistoSynth's."""
    if target.endswith('.py'):
        path = os.path.join(REPO, target)
        assert os.path.isfile(path), f'README runs {target}, which does not exist'
        return path
    base = os.path.join(REPO, *target.split('.'))
    for path in (base + '.py', os.path.join(base, '__main__.py')):
        if os.path.isfile(path):
            return path
    assert target.split('.')[0] not in OWN_PACKAGES, f'README runs python -m {target}, which does not exist'
    return None


@functools.lru_cache(maxsize=None)
def help_text(target, sub):
    """--help of `python target [sub]`; the subprocess runs the command exactly as a user would."""
    argv = [sys.executable] + ([target] if target.endswith('.py') else ['-m', target]) + list(sub) + ['--help']
    res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    return res.returncode, res.stdout + res.stderr


def readme_commands():
    text = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    seen = {}
    for line in shell_lines(text):
        for target, args in python_commands(line):
            seen.setdefault(target, []).append(args)
    return seen


def test_readme_parser_on_a_hand_made_block():
    md = ('text\n```bash\n# comment\npython train.py --outdir=out \\\n    --data=a.zip --gpus 1\n'
          'pip install -r requirements.txt && python -m tools.anomaly evaluate --network=x.pkl\n```\n'
          '```python\npython fake.py --nope\n```\n')
    lines = shell_lines(md)
    assert lines == ['python train.py --outdir=out  --data=a.zip --gpus 1',
                     'pip install -r requirements.txt && python -m tools.anomaly evaluate --network=x.pkl']
    assert python_commands(lines[0]) == [('train.py', ['--outdir=out', '--data=a.zip', '--gpus', '1'])]
    assert python_commands(lines[1]) == [('tools.anomaly', ['evaluate', '--network=x.pkl'])]


def test_readme_has_commands():
    commands = readme_commands()
    for required in ['demo.py', 'train.py', 'generate.py', 'dataset_tool.py', 'calc_metrics.py']:
        assert required in commands, f'README shows no `python {required}` command'


@pytest.mark.parametrize('target', sorted(readme_commands()))
def test_readme_options_exist(target):
    if command_path(target) is None:
        return
    code, top_help = help_text(target, ())
    assert code == 0, top_help
    for args in readme_commands()[target]:
        sub = ()
        if args and re.fullmatch(r'[a-z][a-z0-9_-]*', args[0]):  # maybe a subcommand (train, score, fetch, …)
            code, text = help_text(target, (args[0],))
            if code == 0:
                sub = (args[0],)
        help_ = help_text(target, sub)[1]
        for word in args:
            if word.startswith('--'):
                option = word.split('=', 1)[0]
                assert re.search(rf'(?<![\w-]){re.escape(option)}(?![\w-])', help_), \
                    f'README uses {option} with `python {target} {" ".join(sub)}`, but its --help has no such option'
