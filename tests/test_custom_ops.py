"""custom_ops: hashed and cached plugin builds, the build lock's timeout, one-warning fallback, impl selection."""

import os
import time
import uuid
import warnings

import filelock
import pytest
import torch

import dnnlib
from torch_utils import custom_ops

# A plugin that compiles in seconds: pybind11 only, no torch headers.
TINY_SOURCE = '''
#include <pybind11/pybind11.h>
static int add(int a, int b) { return a + b + OFFSET; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add", &add); }
'''


@pytest.fixture
def ext_dir(tmp_path, monkeypatch):
    path = tmp_path / 'torch_extensions'
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(path))
    return path


def _write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return str(folder)


def _unique(prefix):
    return f'{prefix}_{uuid.uuid4().hex[:8]}'

# ----------------------------------------------------------------------------


def test_build_lock_times_out_naming_the_lock_file(tmp_path, ext_dir, monkeypatch):
    src = _write(tmp_path / 'src', 'tiny.cpp', TINY_SOURCE)
    name = _unique('hs_locked')
    build_dir, lock_file = custom_ops.plugin_paths(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=0'])
    assert build_dir.startswith(str(ext_dir))
    os.makedirs(os.path.dirname(lock_file), exist_ok=True)
    monkeypatch.setenv(custom_ops.LOCK_TIMEOUT_ENV, '0.3')
    holder = filelock.FileLock(lock_file)
    holder.acquire()  # Another "build" in progress.
    try:
        start = time.time()
        with pytest.raises(custom_ops.BuildLockTimeout) as info:
            custom_ops.get_plugin(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=0'])
        assert time.time() - start < 10
        message = str(info.value)
        assert lock_file in message and 'delete' in message and '\n' not in message
        assert isinstance(info.value, dnnlib.util.UserError)

        # Through the ops' selection the same situation is a warning and the 'ref' path, not a hang.
        loader = lambda: custom_ops.get_plugin(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=0'])
        with pytest.warns(RuntimeWarning, match=lock_file.replace('.', r'\.')):
            assert custom_ops.resolve_impl(None, torch.zeros([1]), _unique('locked_op'), {'cpu': loader}) == 'ref'
    finally:
        holder.release()


def test_stale_torch_lock_is_removed_and_a_held_one_reported(tmp_path):
    build_dir = tmp_path / 'build'
    build_dir.mkdir()
    torch_lock = build_dir / 'lock'
    torch_lock.write_text('')  # Left behind by a killed build.
    custom_ops._clear_stale_torch_lock(str(build_dir), timeout=1)
    assert not torch_lock.exists()

    holder = filelock.FileLock(str(torch_lock))
    holder.acquire()
    try:
        with pytest.raises(custom_ops.BuildLockTimeout, match='delete that file'):
            custom_ops._clear_stale_torch_lock(str(build_dir), timeout=0.1)
    finally:
        holder.release()


def test_broken_build_falls_back_to_ref_with_exactly_one_warning(tmp_path, ext_dir):
    src = _write(tmp_path / 'src', 'broken.cpp', 'this is not C++ at all;\n')
    name = _unique('hs_broken')
    op = _unique('broken_op')
    loader = lambda: custom_ops.get_plugin(name, ['broken.cpp'], source_dir=src)
    x = torch.zeros([2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        impls = [custom_ops.resolve_impl(None, x, op, {'cpu': loader}) for _ in range(3)]
        assert custom_ops.load_or_none(op, 'cpu', loader) is None
    assert impls == ['ref'] * 3
    assert len(caught) == 1
    message = str(caught[0].message)
    assert op in message and 'reference' in message and '\n' not in message

    # Asked for by name, the failure is an error (a silent fallback would fake test and benchmark results).
    with pytest.raises(custom_ops.PluginBuildError, match=name):
        custom_ops.resolve_impl('cpu', x, op, {'cpu': loader})
    # The failed build released its lock.
    _, lock_file = custom_ops.plugin_paths(name, ['broken.cpp'], source_dir=src)
    filelock.FileLock(lock_file, timeout=0).acquire()


def test_plugin_builds_once_per_process_and_is_keyed_by_content(tmp_path, ext_dir, capsys, monkeypatch):
    monkeypatch.setattr(custom_ops, 'verbosity', 'brief')
    monkeypatch.setattr(custom_ops, 'rank', 0)
    src = _write(tmp_path / 'src', 'tiny.cpp', TINY_SOURCE)
    name = _unique('hs_tiny')
    module = custom_ops.get_plugin(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=1'])
    assert module.add(2, 3) == 6
    assert capsys.readouterr().out == f'Setting up PyTorch plugin "{name}"... Done.\n'
    assert custom_ops.get_plugin(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=1']) is module
    assert capsys.readouterr().out == ''  # Cached: neither rebuilt nor reloaded.

    build_dir, _ = custom_ops.plugin_paths(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=1'])
    assert os.path.isfile(os.path.join(build_dir, 'tiny.cpp'))
    # Other flags or other contents give another build dir; the same inputs the same one.
    assert custom_ops.plugin_paths(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=2'])[0] != build_dir
    _write(tmp_path / 'src2', 'tiny.cpp', TINY_SOURCE + '\n// changed\n')
    assert custom_ops.plugin_paths(name, ['tiny.cpp'], source_dir=str(tmp_path / 'src2'), extra_cflags=['-DOFFSET=1'])[0] != build_dir
    assert custom_ops.plugin_paths(name, ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=1'])[0] == build_dir


def test_only_rank0_talks(tmp_path, ext_dir, capsys, monkeypatch):
    monkeypatch.setattr(custom_ops, 'verbosity', 'brief')
    monkeypatch.setattr(custom_ops, 'rank', 1)
    src = _write(tmp_path / 'src', 'tiny.cpp', TINY_SOURCE)
    module = custom_ops.get_plugin(_unique('hs_quiet'), ['tiny.cpp'], source_dir=src, extra_cflags=['-DOFFSET=5'])
    assert module.add(1, 1) == 7
    assert capsys.readouterr().out == ''


def test_missing_source_is_a_user_error(tmp_path):
    with pytest.raises(dnnlib.util.UserError, match='not found'):
        custom_ops.get_plugin('hs_missing', ['nope.cpp'], source_dir=str(tmp_path))

# ----------------------------------------------------------------------------


def test_resolve_impl_force_impl_and_env(monkeypatch):
    calls = []
    plugin = object()
    loaders = {'cpu': lambda: calls.append(1) or plugin}
    op = _unique('counting_op')
    x = torch.zeros([1])
    monkeypatch.delenv(custom_ops.IMPL_ENV, raising=False)
    assert [custom_ops.resolve_impl(None, x, op, loaders) for _ in range(3)] == ['cpu'] * 3
    assert len(calls) == 1  # Loaded once per process.
    assert custom_ops.resolve_impl('ref', x, op, loaders) == 'ref'
    assert custom_ops.resolve_impl(None, torch.zeros([1], device='meta'), op, loaders) == 'ref'

    with custom_ops.force_impl('ref'):
        assert custom_ops.resolve_impl(None, x, op, loaders) == 'ref'
        with custom_ops.force_impl(None):
            assert custom_ops.resolve_impl(None, x, op, loaders) == 'cpu'
        assert custom_ops.resolve_impl('cpu', x, op, loaders) == 'cpu'  # An explicit impl wins.
    assert custom_ops.resolve_impl(None, x, op, loaders) == 'cpu'

    monkeypatch.setenv(custom_ops.IMPL_ENV, 'ref')
    assert custom_ops.resolve_impl(None, x, op, loaders) == 'ref'
    with custom_ops.force_impl('cpu'):
        assert custom_ops.resolve_impl(None, x, op, loaders) == 'cpu'  # The context beats the environment.
    monkeypatch.setenv(custom_ops.IMPL_ENV, 'fast')
    with pytest.raises(dnnlib.util.UserError, match=custom_ops.IMPL_ENV):
        custom_ops.resolve_impl(None, x, op, loaders)
    monkeypatch.delenv(custom_ops.IMPL_ENV)

    with pytest.raises(dnnlib.util.UserError, match='cannot run'):
        with custom_ops.force_impl('cuda'):
            custom_ops.resolve_impl(None, x, op, loaders)
    with pytest.raises(dnnlib.util.UserError):
        custom_ops.force_impl('gpu').__enter__()
