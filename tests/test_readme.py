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

#----------------------------------------------------------------------------
# The Layout block names every root script, package folder and module of the tree, and nothing that is not there.

NOT_LISTED_ONE_BY_ONE = ('tests/',)  # named as a folder; its files are not listed


def layout_entries(markdown):
    """{'': the root scripts' line, 'dir/': its text} from the fenced block under '## Layout'; indented lines
    continue the entry above them."""
    section = markdown.split('\n## Layout\n', 1)[1]
    lines = section.split('```', 2)[1].splitlines()[1:]
    entries, key = {}, None
    for line in lines:
        if not line.strip():
            continue
        if line[0].isspace():
            entries[key] += ' ' + line.strip()
            continue
        first = line.split()[0]
        key = first if first.endswith('/') else ''
        entries[key] = entries.get(key, '') + ' ' + (line[len(first):] if key else line)
    return entries


def named(entry, filename):
    return re.search(rf'(?<![\w./-]){re.escape(filename)}(?![\w-])', entry) is not None


def layout_problems(markdown, files):
    """What the Layout block and the list of repository files disagree on, one line each."""
    entries = layout_entries(markdown)
    sources = [f for f in files if f.endswith('.py')]
    problems = []
    for path in sources:
        folder, name = os.path.split(path)
        if not folder:
            if not named(entries.get('', ''), name):
                problems.append(f'root script {name} is not in the Layout block')
            continue
        folder += '/'
        if folder not in entries:
            problems.append(f'folder {folder} (holding {name}) has no line in the Layout block')
        elif name != '__init__.py' and not folder.startswith(NOT_LISTED_ONE_BY_ONE) and not named(entries[folder], name):
            problems.append(f'{path} is not named on the {folder} line of the Layout block')
    for key, entry in entries.items():
        if key and not any(f.startswith(key) for f in files):
            problems.append(f'the Layout block names {key}, which is not in the tree')
        for name in re.findall(r'(?<![\w./-])([\w-]+\.py)(?![\w-])', entry):
            if key + name not in files:
                problems.append(f'the Layout block names {key}{name}, which is not in the tree')
    return problems


def tree_files():
    """The files of this checkout: git's tracked and not-ignored untracked files, else a walk of the folder."""
    try:
        res = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        listed = res.stdout.splitlines() if res.returncode == 0 else []
    except OSError:
        listed = []
    if not listed:
        for root, dirs, names in os.walk(REPO):
            dirs[:] = [d for d in dirs if not d.startswith('.') and d not in ('__pycache__', 'build', 'dist')
                       and not d.endswith('.egg-info')]
            listed += [os.path.relpath(os.path.join(root, n), REPO).replace(os.sep, '/') for n in names]
    return {f for f in listed if os.path.isfile(os.path.join(REPO, f))}


def test_layout_check_on_a_hand_made_tree():
    md = ('# x\n\n## Layout\n\n```\ntrain.py  demo.py   CLIs\npkg/   a.py (first),\n       b.py\n'
          'pkg/sub/  c.py\ntests/  pytest\n```\n')
    tree = {'train.py', 'demo.py', 'pkg/__init__.py', 'pkg/a.py', 'pkg/b.py', 'pkg/sub/c.py', 'tests/test_x.py'}
    assert layout_problems(md, tree) == []
    assert layout_problems(md, tree | {'pkg/new.py'}) == ['pkg/new.py is not named on the pkg/ line of the Layout block']
    assert layout_problems(md, tree | {'projector.py'}) == ['root script projector.py is not in the Layout block']
    assert layout_problems(md, tree | {'other/d.py'}) == ['folder other/ (holding d.py) has no line in the Layout block']
    assert layout_problems(md, tree - {'pkg/b.py'}) == ['the Layout block names pkg/b.py, which is not in the tree']
    assert layout_problems(md, tree - {'pkg/sub/c.py'}) == ['the Layout block names pkg/sub/, which is not in the tree',
                                                           'the Layout block names pkg/sub/c.py, which is not in the tree']


def test_readme_layout_matches_the_tree():
    text = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    problems = layout_problems(text, tree_files())
    assert not problems, '\n'.join(problems)
