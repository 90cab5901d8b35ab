"""Small building blocks shared by the libraries and the command-line tools.

Attribute dicts for options, the one-line UserError the CLIs print, a log tee, writes that never leave a
half-written file, objects looked up by dotted name (so one training loop builds any network, loss or
metric from its options), and local paths or URLs opened through one download cache.
"""

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
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

CACHE_DIR_ENV = "HISTOSYNTH_CACHE_DIR"  # overrides ~/.cache/histosynth

# ----------------------------------------------------------------------------


class EasyDict(dict):
    """Options as a dict whose keys double as attributes: `opts.lr` reads and writes `opts['lr']`."""

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        raise AttributeError(f"no option {name!r}")

    __setattr__ = dict.__setitem__

    def __delattr__(self, name: str) -> None:
        if name not in self:
            raise AttributeError(f"no option {name!r}")
        dict.__delitem__(self, name)


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
    """While open, everything printed (stdout and stderr) also goes to a log file, e.g. a run's log.txt.

    Construction installs the logger as sys.stdout and sys.stderr; close() or the end of a `with` block
    hands the streams back, unless something else has replaced the logger in the meantime.
    """

    def __init__(self, file_name: str | None = None, file_mode: str = "a", should_flush: bool = True):
        self.file = None if file_name is None else open(file_name, file_mode)
        self.should_flush = should_flush
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self

    def _targets(self) -> list:
        return [stream for stream in (self.file, self.stdout) if stream is not None]

    def write(self, text: str | bytes) -> None:
        text = text.decode() if isinstance(text, bytes) else text
        if not text:  # Empty writes are flush hints from some libraries: nothing to log.
            return
        for stream in self._targets():
            stream.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        for stream in self._targets():
            stream.flush()

    def isatty(self) -> bool:
        return False  # Progress bars then print plain lines instead of filling the log with redraws.

    def close(self) -> None:
        self.flush()
        for name, replaced in (("stdout", self.stdout), ("stderr", self.stderr)):
            if getattr(sys, name) is self:
                setattr(sys, name, replaced)
        log, self.file = self.file, None
        if log is not None:
            log.close()

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ----------------------------------------------------------------------------
# Files and folders.


def make_cache_dir_path(*paths: str) -> str:
    """A path inside HistoSynth's cache: $HISTOSYNTH_CACHE_DIR when set, else ~/.cache/histosynth."""
    root = os.environ.get(CACHE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "histosynth")
    return os.path.join(root, *paths)


def format_time(seconds: int | float) -> str:
    """A duration as people read it: '42s', '3m 05s', '2h 07m', '1d 04h 00m'."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days}d {hrs:02d}h {mins:02d}m"
    if hours:
        return f"{hours}h {mins:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so that large weights need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def make_readable(path: str) -> None:
    """Give a finished output the permissions the umask asks for (temporary files start private, 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)  # umask can only be read by setting it
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~mask)


def copy_files_and_create_dirs(files: list[tuple[str, str]]) -> None:
    """Copy each (source, destination) pair, making the destination's folders first."""
    for source, destination in files:
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        shutil.copyfile(source, destination)


# ----------------------------------------------------------------------------
# Writing without leaving half-written files behind.

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
# Objects by dotted name: options name the generator, loss or metric class to build.


def _import_longest_prefix(dotted: str) -> tuple[Any, list[str]]:
    """The module named by the longest importable prefix of `dotted`, and the attribute names after it."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:cut])
        try:
            return importlib.import_module(candidate), parts[cut:]
        except ModuleNotFoundError as err:
            # Try a shorter prefix only when this one is not a module; a missing dependency inside it is real.
            if err.name is None or not (candidate == err.name or candidate.startswith(err.name + ".")):
                raise
    raise UserError(f"Cannot find a module for '{dotted}'")


def get_obj_by_name(name: str) -> Any:
    """The object a fully qualified name refers to, e.g. 'networks.stylegan2.Generator'."""
    obj, attributes = _import_longest_prefix(name)
    for attribute in attributes:
        if not hasattr(obj, attribute):
            owner = getattr(obj, "__name__", repr(obj))
            raise UserError(f"'{name}' not found: '{owner}' has no '{attribute}'")
        obj = getattr(obj, attribute)
    return obj


def _callable_by_name(name: str | None) -> Any:
    if name is None:
        raise TypeError("a fully qualified name is required")
    target = get_obj_by_name(name)
    if not callable(target):
        raise UserError(f"'{name}' is not callable")
    return target


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    """func_name(*args, **kwargs) for a function given by its fully qualified name."""
    return _callable_by_name(func_name)(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    """class_name(*args, **kwargs) for a class given by its fully qualified name."""
    return _callable_by_name(class_name)(*args, **kwargs)


# ----------------------------------------------------------------------------
# Local paths and URLs, with a download cache.


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """Whether obj is an http(s) URL with a host name (or, when allowed, a file:// URL)."""
    if not isinstance(obj, str) or "://" not in obj:
        return False
    if obj.startswith("file://"):
        return allow_file_urls
    try:
        parts = urllib.parse.urlparse(obj)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and "." in parts.netloc


def _url_cache_name(url: str) -> str:
    """Cache file name of a URL: its MD5 (unique) and its sanitised base name (readable)."""
    base = os.path.basename(urllib.parse.urlparse(url).path)
    return f"{hashlib.md5(url.encode()).hexdigest()}_{re.sub(r'[^0-9A-Za-z._-]', '_', base) or 'download'}"


def _local_file(url: str) -> str | None:
    """The file a plain path or file:// URL names (UserError if missing); None for network URLs."""
    if not re.match(r"^[a-z]+://", url):
        path = url
    elif url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
        if re.match(r"^/[a-zA-Z]:", path):  # file:///C:/... names C:/... on Windows
            path = path[1:]
    else:
        return None
    if not os.path.isfile(path):
        raise UserError(f"No such file: {path}" + ("" if path == url else f" (from {url})"))
    return path


def open_url(url: str, cache_dir: str | None = None, num_attempts: int = 3, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, timeout: float = 30):
    """A binary file object (or, with return_filename, the file's path) for a local path, file:// or http(s) URL.

    Downloads land in `cache_dir` (default: the cache's 'downloads' folder), written atomically so that
    an interrupted download is never mistaken for a finished one; cache=False keeps them in memory.
    """
    if num_attempts < 1:
        raise ValueError("num_attempts must be at least 1")
    if return_filename and not cache:
        raise ValueError("return_filename needs cache=True: a download kept in memory has no file name")
    path = _local_file(url)
    if path is None:
        if not is_url(url):
            raise UserError(f"Unsupported URL: {url}")
        path = os.path.join(make_cache_dir_path("downloads") if cache_dir is None else cache_dir, _url_cache_name(url))
        if not (cache and os.path.isfile(path)):
            data = _download(url, num_attempts=num_attempts, verbose=verbose, timeout=timeout)
            if not cache:
                return io.BytesIO(data)
            with atomic_write(path) as tmp, open(tmp, "wb") as f:
                f.write(data)
    return path if return_filename else open(path, "rb")


def _fetch(url: str, verbose: bool, timeout: float) -> bytes:
    from tqdm import tqdm  # Imported here: dnnlib stays importable without tqdm.

    request = urllib.request.Request(url, headers={"User-Agent": "histosynth"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        expected = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=expected, unit="B", unit_scale=True, desc=os.path.basename(url),
                  disable=not verbose, leave=False) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    data = b"".join(chunks)
    if expected is not None and len(data) != expected:
        raise OSError(f"incomplete download ({len(data)} of {expected} bytes)")
    return data


def _download(url: str, num_attempts: int, verbose: bool, timeout: float) -> bytes:
    """The bytes at url, retrying failures that may pass (timeouts, broken transfers, server errors)."""
    failure: Exception | None = None
    for _ in range(num_attempts):
        try:
            return _fetch(url, verbose, timeout)
        except urllib.error.HTTPError as err:  # (before URLError, its base class)
            failure = err
            if err.code in (401, 403, 404):  # the answer will not change
                break
        except urllib.error.URLError as err:
            failure = err
            if not isinstance(err.reason, TimeoutError):  # offline: no DNS, connection refused
                break
        except (OSError, TimeoutError) as err:
            failure = err
    raise UserError(f"Could not download {url} ({failure}). If this machine is offline, download the file "
                    f"elsewhere and pass its local path instead of the URL.")
