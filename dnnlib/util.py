"""Miscellaneous utilities shared by the libraries and the command-line tools."""

import contextlib
import errno
import hashlib
import importlib
import io
import os
import re
import shutil
import sys
import tempfile
import types
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

CACHE_DIR_ENV = "HISTOSYNTH_CACHE_DIR"

# ----------------------------------------------------------------------------


class EasyDict(dict):
    """A dict whose items can also be read and written as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


class UserError(Exception):
    """Bad input or a broken environment, told in one line: the CLIs print `str(err)` and exit non-zero.

    Raised in a DataLoader worker, torch re-raises it in the main process as `UserError("Caught UserError
    in DataLoader worker process N.\nOriginal Traceback ...")`. The constructor recognises that form and
    keeps only the original message, so the user reads the same line whichever process failed; the
    worker's full report stays in `worker_traceback` for debugging.
    """

    def __init__(self, *args):
        self.worker_traceback = None
        if len(args) == 1 and isinstance(args[0], str):
            original = _message_inside_worker_report(args[0], type(self))
            if original is not None:
                self.worker_traceback, args = args[0], (original,)
        super().__init__(*args)


_WORKER_REPORT = re.compile(r"Caught (\w+) [^\n]*\.\nOriginal Traceback")


def _message_inside_worker_report(text: str, cls: type) -> str | None:
    """The exception message at the end of torch's 'Caught X in ... worker' report, or None for other text."""
    head = _WORKER_REPORT.match(text)
    if head is None or head.group(1) != cls.__name__:
        return None
    # traceback names the type module-qualified, except for classes defined in __main__.
    for type_name in (f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__):
        cut = text.rfind(f"\n{type_name}: ")
        if cut >= 0:
            return text[cut + len(type_name) + 3:].rstrip("\n")
    return None


# ----------------------------------------------------------------------------


class Logger:
    """Tees everything written to stdout/stderr into a log file (a run's log.txt)."""

    def __init__(self, file_name: str | None = None, file_mode: str = "a", should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        sys.stdout = self
        sys.stderr = self

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def write(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if len(text) == 0:  # Some libraries write empty strings as a flush signal.
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def isatty(self) -> bool:
        return False  # Keeps progress bars from spamming the log file with carriage returns.

    def close(self) -> None:
        self.flush()
        # Restore the streams only if they still point at us (loggers may nest).
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


# ----------------------------------------------------------------------------


def make_cache_dir_path(*paths: str) -> str:
    """Path inside the HistoSynth cache dir ($HISTOSYNTH_CACHE_DIR, else ~/.cache/histosynth)."""
    root = os.environ.get(CACHE_DIR_ENV)
    if not root:
        root = os.path.join(os.path.expanduser("~"), ".cache", "histosynth")
    return os.path.join(root, *paths)


def format_time(seconds: int | float) -> str:
    """Human-readable duration, e.g. '42s', '3m 05s', '2h 07m', '1d 04h 00m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_readable(path: str) -> None:
    """Give a finished output the usual umask permissions (temporary files are created private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


# Errors that mean "no room at the destination": a full disk, a full quota, the file-size limit.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def atomic_write(path: str, folder: bool = False):
    """Give the caller a temporary path beside `path` and rename it to `path` once the block succeeds.

    Readers never see a half-written file. On any error, including one raised while the caller's
    writer flushes or closes, the temporary file is deleted before the error propagates. When the
    failure comes from lack of room at the destination it becomes one UserError naming `path`,
    whichever library wrote (torch.save says only 'unexpected pos'). `folder=True` yields a
    temporary folder instead, which replaces whatever is at `path` on success.
    """
    target = os.path.abspath(path)
    try:
        tmp = _temporary_beside(target, folder)
    except OSError as err:
        raise (_no_room_error(target, err.errno) if err.errno in _NO_ROOM else err) from err
    try:
        yield tmp
        make_readable(tmp)
        if folder and os.path.lexists(target):
            _remove_path(target)
        os.replace(tmp, target)
    except BaseException as err:
        code = None
        if isinstance(err, Exception) and not isinstance(err, UserError):
            code = _no_room_code(err, tmp)
        _remove_path(tmp)
        if code is not None:
            raise _no_room_error(target, code) from err
        raise


def _temporary_beside(target: str, folder: bool) -> str:
    """A new, private temporary file or folder in target's folder (same file system: renames are atomic)."""
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    if folder:
        return tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    handle, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    os.close(handle)
    return tmp


def _remove_path(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _no_room_code(err: BaseException, tmp: str) -> int | None:
    """errno of a no-room failure behind `err`, or None when the destination still takes more data."""
    seen = err
    while seen is not None:  # The OSError itself, or one that another library wrapped.
        if isinstance(seen, OSError) and seen.errno in _NO_ROOM:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    # Libraries that lose the errno (torch.save, safetensors): try to add 1 MiB where the data went.
    probe = os.path.join(tmp, ".room-probe") if os.path.isdir(tmp) else tmp
    try:
        with open(probe, "ab", buffering=0) as f:
            left = memoryview(bytes(1 << 20))
            while len(left) > 0:  # A write that reaches the size limit is cut short without an error.
                left = left[f.write(left):]
    except OSError as probe_err:
        return probe_err.errno if probe_err.errno in _NO_ROOM else None
    return None


def _no_room_error(target: str, code: int) -> UserError:
    return UserError(f"Cannot write {target}: {os.strerror(code)} (errno {code}); "
                     f"make room there (disk space, quota or file-size limit) or write elsewhere")


# ----------------------------------------------------------------------------
# Objects by name: lets one training loop build any network, loss or metric from a config dict.


def _split_obj_name(obj_name: str) -> tuple[types.ModuleType, str]:
    """Import the longest importable module prefix of a dotted name; return it and the rest."""
    parts = obj_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only swallow "this prefix is not a module"; a missing dependency inside it is a real error.
            if err.name is not None and module_name.startswith(err.name):
                continue
            raise
        return module, ".".join(parts[i:])
    raise UserError(f"Cannot find a module for '{obj_name}'")


def get_obj_by_name(name: str) -> Any:
    """Look up an object by its fully qualified name, e.g. 'networks.stylegan2.Generator'."""
    module, attr_path = _split_obj_name(name)
    obj: Any = module
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise UserError(f"'{name}' not found: '{obj.__name__ if hasattr(obj, '__name__') else obj}' has no '{attr}'")
        obj = getattr(obj, attr)
    return obj


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    """Call a function given by its fully qualified name."""
    assert func_name is not None
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise UserError(f"'{func_name}' is not callable")
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    """Construct an object of a class given by its fully qualified name."""
    return call_func_by_name(*args, func_name=class_name, **kwargs)


# ----------------------------------------------------------------------------
# URLs and the download cache.


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """True when obj looks like an http(s) URL (or a file:// URL when allowed)."""
    if not isinstance(obj, str) or "://" not in obj:
        return False
    if allow_file_urls and obj.startswith("file://"):
        return True
    try:
        res = urllib.parse.urlparse(obj)
    except ValueError:
        return False
    return res.scheme in ("http", "https") and bool(res.netloc) and "." in res.netloc


def _url_cache_name(url: str) -> str:
    url_md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
    base = re.sub(r"[^0-9A-Za-z._-]", "_", os.path.basename(urllib.parse.urlparse(url).path)) or "download"
    return f"{url_md5}_{base}"


def open_url(url: str, cache_dir: str | None = None, num_attempts: int = 3, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, timeout: float = 30):
    """Open a local path, a file:// URL or an http(s) URL; return a binary file object (or its filename).

    Downloads are cached under `cache_dir` (default: the HistoSynth cache's 'downloads' folder) and
    written atomically, so an interrupted download never poisons the cache.
    """
    assert num_attempts >= 1
    assert not (return_filename and not cache)

    if not re.match(r"^[a-z]+://", url):  # A plain local path.
        if not os.path.isfile(url):
            raise UserError(f"No such file: {url}")
        return url if return_filename else open(url, "rb")
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
        if re.match(r"^/[a-zA-Z]:", path):  # file:///C:/... on Windows.
            path = path[1:]
        if not os.path.isfile(path):
            raise UserError(f"No such file: {path} (from {url})")
        return path if return_filename else open(path, "rb")
    if not is_url(url):
        raise UserError(f"Unsupported URL: {url}")

    if cache_dir is None:
        cache_dir = make_cache_dir_path("downloads")
    cache_path = os.path.join(cache_dir, _url_cache_name(url))
    if cache and os.path.isfile(cache_path):
        return cache_path if return_filename else open(cache_path, "rb")

    data = _download(url, num_attempts=num_attempts, verbose=verbose, timeout=timeout)
    if cache:
        with atomic_write(cache_path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        if return_filename:
            return cache_path
    return io.BytesIO(data)


def _download(url: str, num_attempts: int, verbose: bool, timeout: float) -> bytes:
    from tqdm import tqdm  # Imported lazily: dnnlib stays importable without it.

    last_error: Exception | None = None
    for attempt in range(num_attempts):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "histosynth"})
            with urllib.request.urlopen(request, timeout=timeout) as res:
                total = int(res.headers.get("Content-Length") or 0) or None
                buf = io.BytesIO()
                with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url),
                          disable=not verbose, leave=False) as bar:
                    for chunk in iter(lambda: res.read(1 << 16), b""):
                        buf.write(chunk)
                        bar.update(len(chunk))
                data = buf.getvalue()
                if total is not None and len(data) != total:
                    raise OSError(f"incomplete download ({len(data)} of {total} bytes)")
                return data
        except urllib.error.HTTPError as err:
            last_error = err
            if err.code in (401, 403, 404):  # Retrying will not help.
                break
        except urllib.error.URLError as err:
            last_error = err
            if not isinstance(err.reason, TimeoutError):  # Offline (no DNS, refused): do not keep trying.
                break
        except (OSError, TimeoutError) as err:
            last_error = err
    raise UserError(
        f"Could not download {url} ({last_error}). If this machine is offline, download the file "
        f"elsewhere and pass its local path instead of the URL.")


def copy_files_and_create_dirs(files: list[tuple[str, str]]) -> None:
    """Copy (src, dst) pairs, creating destination folders as needed."""
    for src, dst in files:
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        shutil.copyfile(src, dst)
