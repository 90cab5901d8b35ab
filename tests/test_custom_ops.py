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

# ----------------------------------------------------------------------------
# Plugins resolved once per process; CUDA build digests that follow the GPU; self-checks after loading.


def test_op_calls_neither_read_nor_hash_the_sources(monkeypatch):
    # Forward and backward of the compiled ops, many times: the plugin was resolved on first use, so no call
    # plans a build (which reads and SHA-256es every source file).
    from torch_utils.ops import bias_act, upfirdn2d, winograd
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 8, 8], requires_grad=True)
    b = torch.zeros([2], requires_grad=True)

    def calls():
        y = upfirdn2d.downsample2d(upfirdn2d.upsample2d(x, f, impl='cpu'), f, impl='cpu')
        y = bias_act.bias_act(y, b, act='lrelu', impl='cpu')
        torch.autograd.grad(y.sum(), [x, b])
        winograd._cpu_plugin()

    calls()  # first use: may build or load
    reads = []
    real_plan, real_open = custom_ops._plan, open
    monkeypatch.setattr(custom_ops, '_plan', lambda *a, **k: reads.append('plan') or real_plan(*a, **k))
    monkeypatch.setattr('builtins.open', lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    for _ in range(50):
        calls()
    assert reads == []


def test_plugin_object_resolves_once(monkeypatch):
    calls = []
    module = object()
    monkeypatch.setattr(custom_ops, 'get_plugin', lambda name, **kwargs: calls.append((name, kwargs)) or module)
    plugin = custom_ops.Plugin('hs_once', ['a.cpp'], headers=['a.h'], source_dir='/src', extra_cflags=['-DX'])
    assert all(plugin() is module for _ in range(100))
    assert calls == [('hs_once', dict(sources=['a.cpp'], headers=['a.h'], source_dir='/src', extra_cflags=['-DX']))]


def _cuda_digest(tmp_path):
    src = _write(tmp_path / 'src', 'k.cu', '__global__ void k() {}\n')
    files = [os.path.join(src, 'k.cu')]
    return custom_ops._build_digest('hs_arch', files, True, custom_ops._build_kwargs_with_defaults(True, {}))


def test_cuda_digest_follows_the_arch_list_and_the_visible_gpus(tmp_path, monkeypatch):
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST', raising=False)
    # No GPU visible: the default list, with PTX for GPUs newer than the build.
    monkeypatch.setattr(custom_ops, '_visible_capabilities', lambda: [])
    assert custom_ops._cuda_arch_list(True) == custom_ops.DEFAULT_CUDA_ARCH_LIST
    assert custom_ops.DEFAULT_CUDA_ARCH_LIST.endswith('+PTX')
    no_gpu = _cuda_digest(tmp_path)

    # The visible GPUs' capabilities decide the build, and its digest: an sm_90 build is not loaded on sm_80.
    monkeypatch.setattr(custom_ops, '_visible_capabilities', lambda: [(9, 0)])
    assert custom_ops._cuda_arch_list(True) == '9.0+PTX'
    h100 = _cuda_digest(tmp_path)
    monkeypatch.setattr(custom_ops, '_visible_capabilities', lambda: [(8, 0), (8, 0)])
    assert custom_ops._cuda_arch_list(True) == '8.0+PTX'
    a100 = _cuda_digest(tmp_path)
    monkeypatch.setattr(custom_ops, '_visible_capabilities', lambda: [(9, 0), (8, 0)])
    assert custom_ops._cuda_arch_list(True) == '8.0;9.0+PTX'
    mixed = _cuda_digest(tmp_path)
    assert len({no_gpu, h100, a100, mixed}) == 4
    monkeypatch.setattr(custom_ops, '_visible_capabilities', lambda: [(9, 0)])
    assert _cuda_digest(tmp_path) == h100  # same inputs, same digest

    # A set TORCH_CUDA_ARCH_LIST wins over the GPUs; two lists, two digests.
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.6')
    assert custom_ops._cuda_arch_list(True) == '8.6'
    first = _cuda_digest(tmp_path)
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.6;9.0+PTX')
    assert len({first, _cuda_digest(tmp_path), h100}) == 3
    assert custom_ops._cuda_arch_list(False) is None  # CPU builds have no arch list


def test_toolkit_headers_come_before_the_wheels(monkeypatch, tmp_path):
    # The wheels' CUDA headers are searched after the toolkit's (-idirafter), never with -I before them.
    wheel_dir = str(tmp_path / 'nvidia' / 'cu13' / 'include')
    monkeypatch.setattr(custom_ops, '_wheel_cuda_include_dirs', lambda: [wheel_dir])
    kwargs = custom_ops._build_kwargs_with_defaults(True, {})
    assert wheel_dir not in kwargs.get('extra_include_paths', [])
    assert f'-idirafter{wheel_dir}' in kwargs['extra_cflags']
    assert f'-Xcompiler=-idirafter{wheel_dir}' in kwargs['extra_cuda_cflags']
    # The real list: only CUDA folders (cu<N>), never the toolkit's own include folder.
    monkeypatch.undo()
    home = custom_ops._cuda_home()
    for d in custom_ops._wheel_cuda_include_dirs():
        assert os.path.basename(os.path.dirname(d))[2:].isdigit()
        assert home is None or os.path.realpath(d) != os.path.realpath(os.path.join(home, 'include'))


def test_self_check_failure_warns_once_and_falls_back(monkeypatch):
    monkeypatch.delenv(custom_ops.IMPL_ENV, raising=False)
    x = torch.zeros([1])
    checks = []

    def failing_check(module, device):
        checks.append(device)
        raise RuntimeError('CUDA error: no kernel image is available for execution on the device\nmore text')

    op = _unique('unlaunchable_op')
    loaders = {'cpu': lambda: object()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert [custom_ops.resolve_impl(None, x, op, loaders, self_check=failing_check) for _ in range(3)] == ['ref'] * 3
    assert len(checks) == 1 and len(caught) == 1
    message = str(caught[0].message)
    assert '\n' not in message and op in message and 'no kernel image' in message and 'reference' in message
    with pytest.raises(custom_ops.PluginSelfCheckError, match='no kernel image'):
        custom_ops.resolve_impl('cpu', x, op, loaders, self_check=failing_check)  # by name: an error

    # A check that passes keeps the plugin, and runs once.
    op = _unique('good_op')
    assert [custom_ops.resolve_impl(None, x, op, loaders, self_check=lambda m, d: checks.append(d)) for _ in range(3)] \
        == ['cpu'] * 3
    assert len(checks) == 2


def test_check_close():
    custom_ops.check_close('op', torch.ones([2]), torch.ones([2]) + 1e-7, 1e-6)
    with pytest.raises(custom_ops.PluginSelfCheckError, match='differs from ref by 0.5'):
        custom_ops.check_close('op', torch.ones([2]), torch.tensor([1.0, 1.5]), 1e-3)
    with pytest.raises(custom_ops.PluginSelfCheckError, match='differs'):
        custom_ops.check_close('op', torch.tensor([float('nan')]), torch.ones([1]), 1e-3)
    with pytest.raises(custom_ops.PluginSelfCheckError, match='shape'):
        custom_ops.check_close('op', torch.ones([3]), torch.ones([2]), 1e-3)


def test_default_arch_list_is_the_docker_images_and_nvcc_builds_it():
    import re
    import shutil
    import subprocess
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docker', 'Dockerfile')) as f:
        docker = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', f.read()).group(1)
    assert custom_ops.DEFAULT_CUDA_ARCH_LIST == docker
    home = custom_ops._cuda_home()
    nvcc = os.path.join(home, 'bin', 'nvcc') if home else shutil.which('nvcc')
    if nvcc is None:
        pytest.skip('no nvcc on this machine')
    supported = set(subprocess.run([nvcc, '--list-gpu-arch'], capture_output=True, text=True, check=True).stdout.split())
    for arch in custom_ops.DEFAULT_CUDA_ARCH_LIST.split(';'):
        assert f'compute_{arch.replace("+PTX", "").replace(".", "")}' in supported, arch
