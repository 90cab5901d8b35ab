"""Just-in-time build and loading of the C++/CUDA op plugins, and the choice between 'ref', 'cpu' and 'cuda'.

Every compiled op X ships `X_cpu.cpp` (C++/OpenMP kernel + binding) and `X_cuda.cpp` + `X.cu` + `X.h`
(CUDA binding, kernel, shared declarations). `X.py` loads them through `get_plugin()` and picks an
implementation per call through `resolve_impl()`, which falls back to the plain-PyTorch 'ref' path with
one warning when a plugin cannot be built or its self-check (one tiny launch compared with 'ref') fails, so
a missing compiler or a GPU the binary was not built for never stops training.

Each op names its plugins with `Plugin(...)`: the sources are read and hashed on the first call only, after
which the loaded module comes from memory, so an op call costs a dictionary lookup, not a file read.
"""

import contextlib
import filecmp
import glob
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
import warnings

import filelock
import torch

import dnnlib

# ----------------------------------------------------------------------------

verbosity = 'brief'         # How much to print while building: 'none', 'brief' (one line per plugin) or 'full'.
rank = None                 # Process rank; only rank 0 prints. None = read env RANK (default 0).
build_lock_timeout = None   # Seconds to wait for another process's build. None = env HISTOSYNTH_BUILD_LOCK_TIMEOUT or 600.

IMPLS = ('ref', 'cpu', 'cuda')
IMPL_ENV = 'HISTOSYNTH_OPS_IMPL'
LOCK_TIMEOUT_ENV = 'HISTOSYNTH_BUILD_LOCK_TIMEOUT'
DEFAULT_LOCK_TIMEOUT = 600.0
# Used only when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible (a Docker build, CI): machine code for the
# data-centre and workstation generations that CUDA 13 supports, plus PTX of the newest, which the driver
# compiles for any later GPU.
DEFAULT_CUDA_ARCH_LIST = '7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'  # = docker/Dockerfile's

_plugins = dict()           # build digest => loaded module
_resolved = dict()          # (op_name, impl) => loaded module, or the exception its loading raised
_forced_impl = None         # Set by force_impl().
_lock = threading.Lock()    # Serialises builds between threads of this process.

# ----------------------------------------------------------------------------


class BuildLockTimeout(dnnlib.util.UserError):
    """Another process held a plugin's build lock for longer than the timeout."""


class PluginBuildError(RuntimeError):
    """Compiling or importing a plugin failed (compiler error, missing toolkit, ...)."""


class PluginSelfCheckError(RuntimeError):
    """A loaded plugin's first launch failed (e.g. no kernel image for this GPU) or disagreed with 'ref'."""

# ----------------------------------------------------------------------------


def _is_rank0():
    r = rank if rank is not None else os.environ.get('RANK', '0')
    try:
        return int(r) == 0
    except ValueError:
        return True


def _talk(level):
    levels = ('none', 'brief', 'full')
    if verbosity not in levels:
        raise dnnlib.util.UserError(f'custom_ops.verbosity must be one of {levels}, got {verbosity!r}')
    return _is_rank0() and levels.index(verbosity) >= levels.index(level)


def _lock_timeout():
    if build_lock_timeout is not None:
        return float(build_lock_timeout)
    value = os.environ.get(LOCK_TIMEOUT_ENV)
    if value is None:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise dnnlib.util.UserError(f'{LOCK_TIMEOUT_ENV} must be a number of seconds, got {value!r}')


DEFAULT_CUDA_HOME = '/usr/local/cuda'


def _cpp_extension():
    # torch guesses CUDA_HOME from the first nvcc on PATH when the variable is unset; a wrapper script in
    # /usr/local/bin then yields '/usr/local', which has no CUDA headers. Point it at the toolkit instead.
    if 'torch.utils.cpp_extension' not in sys.modules and not (os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')):
        if os.path.isfile(os.path.join(DEFAULT_CUDA_HOME, 'bin', 'nvcc')):
            os.environ['CUDA_HOME'] = DEFAULT_CUDA_HOME
    # Importing logs "No CUDA runtime is found" on every GPU-less machine; that is expected here.
    logger = logging.getLogger('torch.utils.cpp_extension')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def _cuda_home():
    """The CUDA toolkit to build with, or None."""
    home = _cpp_extension().CUDA_HOME
    for candidate in [home, os.environ.get('CUDA_HOME'), DEFAULT_CUDA_HOME]:
        if candidate and os.path.isfile(os.path.join(candidate, 'bin', 'nvcc')) and \
                os.path.isfile(os.path.join(candidate, 'include', 'cuda_runtime.h')):
            return candidate
    return None


def extensions_root():
    """Top folder of all plugin builds: TORCH_EXTENSIONS_DIR if set, else torch's default."""
    cpp_extension = _cpp_extension()
    return os.environ.get('TORCH_EXTENSIONS_DIR') or cpp_extension.get_default_build_root()


def _wheel_cuda_include_dirs():
    """CUDA header folders of torch's pip wheels (site-packages/nvidia/cu<N>/include), other than the toolkit's.

    A bare toolkit may lack some headers that torch's own headers include (cusparse.h, cublas_v2.h, ...).
    Where both have a header (cuda_runtime.h, crt/...), the toolkit's must win, as it matches the nvcc doing
    the build: these folders are searched after it (see _build_kwargs_with_defaults).
    """
    try:
        import nvidia
    except ImportError:
        return []
    home = _cuda_home()
    own = os.path.realpath(os.path.join(home, 'include')) if home else None
    dirs = []
    for root in getattr(nvidia, '__path__', []):
        dirs += [d for d in sorted(glob.glob(os.path.join(root, 'cu[0-9]*', 'include'))) if os.path.realpath(d) != own]
    return dirs


def _merge_flags(defaults, given):
    given = list(given or [])
    return given + [flag for flag in defaults if flag not in given]


def _build_kwargs_with_defaults(with_cuda, build_kwargs):
    kwargs = dict(build_kwargs)
    if with_cuda:
        # Headers that only the wheels have (cusparse.h, ...) are searched last: -I would put them before the
        # toolkit's own (which torch passes with -isystem), and a wheel of another CUDA release would win.
        after = [f'-idirafter{d}' for d in _wheel_cuda_include_dirs()]
        kwargs['extra_cuda_cflags'] = _merge_flags(['--use_fast_math'] + [f'-Xcompiler={a}' for a in after],
                                                   kwargs.get('extra_cuda_cflags'))
        kwargs['extra_cflags'] = _merge_flags(['-O3'] + after, kwargs.get('extra_cflags'))
    else:
        # No -march=native: the build cache may be shared between machines with different CPUs.
        kwargs['extra_cflags'] = _merge_flags(['-O3', '-fopenmp'], kwargs.get('extra_cflags'))
        kwargs['extra_ldflags'] = _merge_flags(['-fopenmp'], kwargs.get('extra_ldflags'))
    return kwargs


def _visible_capabilities():
    """Compute capabilities (major, minor) of the visible GPUs, or [] without any."""
    if not torch.cuda.is_available():
        return []
    return [tuple(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]


def _cuda_arch_list(with_cuda):
    """TORCH_CUDA_ARCH_LIST for a build: the user's, else the visible GPUs' (with PTX of the newest), else the default.

    Always a concrete list, so that it enters the build digest: a shared extensions folder built on an sm_90
    card is not loaded on an sm_80 one.
    """
    if not with_cuda:
        return None
    arch = os.environ.get('TORCH_CUDA_ARCH_LIST')
    if arch:
        return arch
    capabilities = sorted(set(_visible_capabilities()))
    if not capabilities:
        return DEFAULT_CUDA_ARCH_LIST
    return ';'.join(f'{major}.{minor}' for major, minor in capabilities) + '+PTX'


def _resolve_files(names, source_dir):
    paths = []
    for name in names or []:
        path = os.path.join(source_dir, name) if source_dir is not None else name
        if not os.path.isfile(path):
            raise dnnlib.util.UserError(f'Plugin source file not found: {path}')
        paths.append(os.path.abspath(path))
    if len({os.path.basename(p) for p in paths}) != len(paths):
        raise dnnlib.util.UserError(f'Plugin source files must have distinct names: {names}')
    return paths


def _build_digest(module_name, files, with_cuda, kwargs):
    # Everything that changes the binary: sources, headers, flags, toolchain and torch/python versions.
    h = hashlib.sha256()
    h.update(module_name.encode())
    for path in files:
        h.update(os.path.basename(path).encode())
        with open(path, 'rb') as f:
            h.update(hashlib.sha256(f.read()).digest())
    for key in sorted(kwargs):
        h.update(f'{key}={kwargs[key]!r}'.encode())
    h.update(f'torch={torch.__version__} cuda={torch.version.cuda} python={sys.version}'.encode())
    h.update(f'machine={platform.machine()} cxx={os.environ.get("CXX", "c++")}'.encode())
    if with_cuda:
        h.update(f'arch={_cuda_arch_list(True)} cuda_home={_cuda_home()} nvcc={_toolkit_identity()}'.encode())
    return h.hexdigest()[:24]


def _toolkit_identity():
    # A toolkit upgraded in place keeps its path: its version file (or nvcc's size and time) tells them apart.
    home = _cuda_home()
    if home is None:
        return None
    version_file = os.path.join(home, 'version.json')
    if os.path.isfile(version_file):
        with open(version_file, 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    st = os.stat(os.path.join(home, 'bin', 'nvcc'))
    return f'{st.st_size}-{st.st_mtime_ns}'


def _plan(module_name, sources, headers, source_dir, build_kwargs):
    files = _resolve_files(list(sources) + list(headers or []), source_dir)
    with_cuda = any(f.endswith(('.cu', '.cuh')) for f in files)
    kwargs = _build_kwargs_with_defaults(with_cuda, build_kwargs)
    digest = _build_digest(module_name, files, with_cuda, kwargs)
    build_dir = os.path.join(extensions_root(), 'histosynth', f'{module_name}-{digest}')
    return dnnlib.EasyDict(files=files, with_cuda=with_cuda, kwargs=kwargs, digest=digest,
                           build_dir=build_dir, lock_file=build_dir + '.lock')


def plugin_paths(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Return (build_dir, lock_file) that get_plugin() uses for these arguments."""
    plan = _plan(module_name, sources, headers, source_dir, build_kwargs)
    return plan.build_dir, plan.lock_file


def _clear_stale_torch_lock(build_dir, timeout):
    # torch keeps its own 'lock' file in the build dir; older torch versions wait forever while it exists,
    # even after the build that made it was killed. We hold our own lock here, so no HistoSynth build can be
    # using it; if no foreign process holds it either, it is stale and goes.
    torch_lock = os.path.join(build_dir, 'lock')
    if not os.path.exists(torch_lock):
        return
    probe = filelock.FileLock(torch_lock, timeout=min(timeout, 1.0))
    try:
        probe.acquire()
    except filelock.Timeout:
        raise BuildLockTimeout(f'torch build lock {torch_lock} is held by another process; '
                               f'if no build is running, delete that file and retry')
    probe.release()
    with contextlib.suppress(FileNotFoundError):
        os.remove(torch_lock)


def _copy_sources(files, build_dir):
    # Build from private copies so that editing the repo never changes a cached build under our feet.
    os.makedirs(build_dir, exist_ok=True)
    copies = []
    for path in files:
        dst = os.path.join(build_dir, os.path.basename(path))
        copies.append(dst)
        # Rewriting an identical copy would make it newer than its object file, and ninja would rebuild.
        if os.path.isfile(dst) and filecmp.cmp(path, dst, shallow=False):
            continue
        tmp = f'{dst}.tmp{os.getpid()}'
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)
    return copies


@contextlib.contextmanager
def _env(name, value):
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old


@contextlib.contextmanager
def _torch_cuda_home(with_cuda):
    # cpp_extension read CUDA_HOME when first imported; correct it for this build if that guess was unusable.
    cpp_extension = _cpp_extension()
    old = cpp_extension.CUDA_HOME
    if with_cuda:
        cpp_extension.CUDA_HOME = _cuda_home()
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = old


def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Compile (once, cached on disk) and import a C++/CUDA plugin; return the module.

    sources/headers are file names relative to source_dir (or paths). build_kwargs go to
    torch.utils.cpp_extension.load (extra_cflags, extra_cuda_cflags, extra_ldflags, ...); defaults are added:
    CPU builds get -O3 -fopenmp, CUDA builds --use_fast_math and the CUDA headers of torch's wheel.
    The build directory is keyed by a hash of the file contents, flags and versions. Raises
    BuildLockTimeout when another build holds the lock for too long, PluginBuildError when the build fails.
    """
    cpp_extension = _cpp_extension()
    plan = _plan(module_name, sources, headers, source_dir, build_kwargs)
    digest, build_dir = plan.digest, plan.build_dir
    if digest in _plugins:
        return _plugins[digest]
    if plan.with_cuda and _cuda_home() is None:
        raise PluginBuildError(f'cannot build {module_name}: CUDA toolkit not found (set CUDA_HOME)')

    with _lock:
        if digest in _plugins:  # Another thread finished it while we waited.
            return _plugins[digest]
        if _talk('full'):
            print(f'Setting up PyTorch plugin "{module_name}" in {build_dir}...', flush=True)
        elif _talk('brief'):
            print(f'Setting up PyTorch plugin "{module_name}"... ', end='', flush=True)
        started = time.time()
        try:
            module = _build_and_load(cpp_extension, plan, module_name)
        except BaseException:
            if _talk('brief') and not _talk('full'):
                print('Failed!', flush=True)
            raise
        if _talk('full'):
            print(f'Done setting up PyTorch plugin "{module_name}" ({dnnlib.util.format_time(time.time() - started)}).', flush=True)
        elif _talk('brief'):
            print('Done.', flush=True)
        _plugins[digest] = module
    return module


def _build_and_load(cpp_extension, plan, module_name):
    # Under our own file lock, with a timeout, instead of waiting on torch's lock without one.
    os.makedirs(os.path.dirname(plan.build_dir), exist_ok=True)
    timeout = _lock_timeout()
    lock = filelock.FileLock(plan.lock_file, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise BuildLockTimeout(f'timed out after {timeout:g} s waiting for the build lock {plan.lock_file}; '
                               f'if no build is running, delete that file and retry') from None
    try:
        _clear_stale_torch_lock(plan.build_dir, timeout)
        copies = _copy_sources(plan.files, plan.build_dir)
        sources = [c for c in copies if not c.endswith(('.h', '.cuh'))]
        try:
            with _env('TORCH_CUDA_ARCH_LIST', _cuda_arch_list(plan.with_cuda)), _torch_cuda_home(plan.with_cuda):
                return cpp_extension.load(name=module_name, sources=sources, build_directory=plan.build_dir,
                                          verbose=_talk('full'), **plan.kwargs)
        except Exception as err:
            raise PluginBuildError(f'building {module_name} failed: {_summarise_error(err)}') from err
    finally:
        lock.release()


def _summarise_error(err):
    # One line for warnings: the first compiler 'error' line if any, else the exception's first line.
    text = str(err)
    cause = err.__cause__ or err.__context__
    if cause is not None:
        text += '\n' + str(getattr(cause, 'output', '') or cause)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if 'error' in line.lower() and not line.startswith('Error building extension')]
    line = errors[0] if errors else (lines[0] if lines else type(err).__name__)
    return line if len(line) <= 300 else line[:297] + '...'



class Plugin:
    """One compiled plugin of an op, resolved once per process.

    Calling it builds or loads the module on the first call (get_plugin: the sources are read and hashed then)
    and returns it from memory afterwards, so that an op's forward and backward pay a lookup, not a file read
    and a SHA-256. A failed build is not remembered here: resolve_impl() remembers it per op.
    """

    def __init__(self, module_name, sources, headers=None, source_dir=None, **build_kwargs):
        self.module_name = module_name
        self.args = dict(sources=list(sources), headers=list(headers or []), source_dir=source_dir, **build_kwargs)
        self.module = None

    def __call__(self):
        module = self.module
        if module is None:
            module = self.build()
            self.module = module
        return module

    def build(self):
        """get_plugin() with this plugin's arguments: hashes the sources, loads (building if needed)."""
        return get_plugin(self.module_name, **self.args)

    def paths(self):
        """(build_dir, lock_file) of this plugin in the current extensions folder and environment."""
        return plugin_paths(self.module_name, **self.args)

    def __repr__(self):
        return f'Plugin({self.module_name!r})'

# ----------------------------------------------------------------------------


def _load_once(op_name, impl, loader):
    # Returns the module, or the exception that loading raised; either way loader() runs once per process.
    key = (op_name, impl)
    if key not in _resolved:
        try:
            _resolved[key] = loader()
        except Exception as err:
            _resolved[key] = err
    return _resolved[key]


def _one_line(err):
    text = str(err)
    return text.splitlines()[0] if text.strip() else type(err).__name__


def load_or_none(op_name, impl, loader):
    """Return loader()'s module, calling loader at most once per process per (op_name, impl).

    If loading fails (compiler error, missing toolkit, build-lock timeout), warn once, naming the op and the
    reason, and return None from then on so that the caller falls back to 'ref': never a hang, never a crash.
    """
    key = (op_name, impl)
    first = key not in _resolved
    result = _load_once(op_name, impl, loader)
    if not isinstance(result, Exception):
        return result
    if first:
        warnings.warn(f'{op_name}: cannot use the {impl!r} implementation ({_one_line(result)}); '
                      f'falling back to the slower reference implementation', RuntimeWarning, stacklevel=3)
    return None


def forced_impl():
    """The implementation that replaces impl=None: set by force_impl() or env HISTOSYNTH_OPS_IMPL, else None."""
    impl = _forced_impl if _forced_impl is not None else (os.environ.get(IMPL_ENV) or None)
    if impl is not None and impl not in IMPLS:
        raise dnnlib.util.UserError(f'{IMPL_ENV} must be one of {IMPLS}, got {impl!r}')
    return impl


@contextlib.contextmanager
def force_impl(impl):
    """Within the block, every op called with impl=None uses `impl` ('ref', 'cpu' or 'cuda'; None = automatic)."""
    global _forced_impl
    if impl is not None and impl not in IMPLS:
        raise dnnlib.util.UserError(f'impl must be one of {IMPLS} or None, got {impl!r}')
    old = _forced_impl
    _forced_impl = impl
    try:
        yield
    finally:
        _forced_impl = old


def resolve_impl(impl, x, op_name, plugin_fn, self_check=None):
    """Pick the implementation of op_name for tensor x: 'ref', 'cpu' or 'cuda'.

    impl=None means force_impl()/HISTOSYNTH_OPS_IMPL if set, else the best one for x.device, falling back
    to 'ref' (one warning per op) when the plugin cannot be built or fails its self-check. A named
    'cpu'/'cuda' (argument or forced) must match x.device and raises if its plugin cannot be built or fails
    the check. plugin_fn maps 'cpu'/'cuda' to the plugin: a dict of zero-argument loaders, or callable(impl).
    self_check(module, device), if given, runs once after loading: a tiny launch compared with 'ref' that
    raises when the launch fails (e.g. "no kernel image is available" on a GPU the build did not target) or
    its result differs.
    """
    automatic = impl is None and forced_impl() is None
    if impl is None:
        impl = forced_impl()
    if impl is None:
        impl = {'cpu': 'cpu', 'cuda': 'cuda'}.get(x.device.type, 'ref')
    if impl not in IMPLS:
        raise dnnlib.util.UserError(f'{op_name}: impl must be one of {IMPLS} or None, got {impl!r}')
    if impl == 'ref':
        return 'ref'
    if x.device.type != impl:
        raise dnnlib.util.UserError(f'{op_name}: impl={impl!r} cannot run on a {x.device.type} tensor')
    if (op_name, impl) not in _resolved:
        get = plugin_fn[impl] if isinstance(plugin_fn, dict) else (lambda: plugin_fn(impl))
        loader = get if self_check is None else (lambda: _checked(get(), self_check, x.device))
    else:
        loader = None  # already resolved: _load_once does not call it
    if automatic:
        return impl if load_or_none(op_name, impl, loader) is not None else 'ref'
    # Asked for by name (tests, benchmarks, force_impl): a silent fallback would fake the result.
    result = _load_once(op_name, impl, loader)
    if isinstance(result, Exception):
        raise result
    return impl


def _checked(module, self_check, device):
    """module, after self_check(module, device) passed; a failure becomes a one-line PluginSelfCheckError."""
    try:
        with torch.no_grad():
            self_check(module, device)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)  # a failed launch may only show here
    except PluginSelfCheckError:
        raise
    except Exception as err:
        raise PluginSelfCheckError(f'self-check launch failed: {_one_line(err)}') from err
    return module


def check_close(op_name, got, want, tolerance):
    """For self-checks: raise PluginSelfCheckError unless got matches want within tolerance (max abs difference)."""
    if got.shape != want.shape:
        raise PluginSelfCheckError(f'self-check: {op_name} returned shape {list(got.shape)}, expected {list(want.shape)}')
    error = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    if not error <= tolerance:  # also catches NaN
        raise PluginSelfCheckError(f'self-check: {op_name} differs from ref by {error:.3g} (tolerance {tolerance:g})')


# ----------------------------------------------------------------------------
