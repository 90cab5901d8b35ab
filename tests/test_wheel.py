"""`pip install .` as a new user does it: setup.cfg lists what exists, the wheel carries the op sources, and
generate.py works from an installed copy, far from the source tree."""

import configparser
import glob
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from networks import stylegan2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_SHIPPED = {'tests', 'benchmarks', 'docs', 'docker'}  # folders that are not part of the installed package


def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, 'setup.cfg'))
    return cfg


def listed_modules(cfg):
    return {m.strip() for m in cfg['options']['py_modules'].replace('\n', ',').split(',') if m.strip()}


def test_setup_cfg_lists_every_script_and_package():
    cfg = setup_cfg()
    scripts = {os.path.splitext(f)[0] for f in os.listdir(REPO) if f.endswith('.py') and f != 'setup.py'}
    assert listed_modules(cfg) == scripts  # every listed module exists, every top-level script is listed
    patterns = {p.strip() for p in cfg['options.packages.find']['include'].split('\n') if p.strip()}
    top_packages = {d for d in os.listdir(REPO) if os.path.isfile(os.path.join(REPO, d, '__init__.py'))}
    assert {p.rstrip('*') for p in patterns} == top_packages - NOT_SHIPPED
    for package in top_packages - NOT_SHIPPED:  # find: skips folders without __init__.py, and their code with them
        for folder, dirs, files in os.walk(os.path.join(REPO, package)):
            dirs[:] = [d for d in dirs if d != '__pycache__']
            if any(f.endswith('.py') for f in files):
                assert os.path.isfile(os.path.join(folder, '__init__.py')), f'{folder} is not a package'


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """A wheel built from a copy of the source tree (the checkout stays clean), installed with --target."""
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns('.git', '__pycache__', '*.egg-info', 'build', 'dist',
                                                           'demo-out', '.pytest_cache', '.ruff_cache', 'tests'))
    wheels = tmp / 'wheels'
    build = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                            f'--wheel-dir={wheels}', str(src)], cwd=tmp, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel, = glob.glob(str(wheels / 'histosynth-*.whl'))
    target = tmp / 'site'
    install = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q',
                              f'--target={target}', wheel], cwd=tmp, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return wheel, target


def test_wheel_holds_every_module_and_the_op_sources(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in listed_modules(setup_cfg()):
        assert f'{module}.py' in names
    for path in glob.glob(os.path.join(REPO, '**', '*.py'), recursive=True):
        rel = os.path.relpath(path, REPO).replace(os.sep, '/')
        if rel.split('/')[0] not in NOT_SHIPPED and '/' in rel:
            assert rel in names, f'{rel} missing from the wheel'
    for ext in ('cpp', 'cu', 'h'):
        sources = glob.glob(os.path.join(REPO, 'torch_utils', 'ops', f'*.{ext}'))
        assert sources
        for path in sources:
            assert f'torch_utils/ops/{os.path.basename(path)}' in names


def test_installed_generate_runs_outside_the_source_tree(installed, tmp_path):
    _, target = installed
    torch.manual_seed(1)
    G = stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                            mapping_kwargs=dict(num_layers=1),
                            synthesis_kwargs=dict(channel_base=128, channel_max=8)).eval().requires_grad_(False)
    pkl = tmp_path / 'tiny.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)

    work = tmp_path / 'elsewhere'
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONNOUSERSITE='1')
    # The modules come from the installed copy, and its op sources compile (or load from the build cache) there.
    where = subprocess.run([sys.executable, '-c', 'import generate, networks, torch_utils.ops.upfirdn2d as u, '
                            'torch_utils.ops.bias_act as b; u._cpu_plugin(); b._cpu_plugin(); '
                            'print(generate.__file__); print(networks.__file__); print(u.__file__)'],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert where.returncode == 0, where.stdout[-3000:] + where.stderr[-3000:]
    files = [line for line in where.stdout.splitlines() if line.endswith('.py')]
    assert len(files) == 3 and all(f.startswith(str(target)) for f in files), where.stdout

    run = subprocess.run([sys.executable, '-m', 'generate', f'--network={pkl}', '--seeds=3', '--outdir=out'],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    image = np.asarray(PIL.Image.open(work / 'out' / 'seed0003.png'))
    z = torch.from_numpy(np.random.RandomState(3).randn(1, G.z_dim))  # generate.py's seed -> z rule
    with torch.no_grad():
        expected = (G(z, torch.zeros([1, 0]), noise_mode='const')[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255)
    assert image.shape == (16, 16, 3)
    assert np.abs(image.astype(int) - expected.to(torch.uint8).numpy().astype(int)).max() <= 1
