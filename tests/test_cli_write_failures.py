"""A failing write (full disk, file-size limit) ends generate.py and calc_metrics.py with one line and leaves
no partial or temporary file behind; a metric cache that cannot be written only costs the cache."""

import json
import os
import pickle
import resource
import subprocess
import sys
import warnings

import numpy as np
import pytest

from metrics import metric_utils
from datasets import write_dataset_zip
from test_generate_cli import tiny_generator
from test_metrics_pipeline import dataset_kwargs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_limited(args, max_file_bytes, cwd):
    """Run a CLI with RLIMIT_FSIZE: writing past the limit fails with EFBIG (Python ignores SIGXFSZ)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONDONTWRITEBYTECODE='1', HISTOSYNTH_OPS_IMPL='ref')
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env, preexec_fn=limit, capture_output=True,
                          text=True, timeout=600)


def test_generate_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    pkl = tmp_path / 'net.pkl'
    G = tiny_generator()
    pkl.write_bytes(pickle.dumps(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None)))
    out = tmp_path / 'out'
    res = run_limited([os.path.join(REPO, 'generate.py'), '--network', str(pkl), '--seeds', '1-3', '--outdir', str(out)],
                      max_file_bytes=100, cwd=REPO)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].lower().startswith('error: cannot write') and 'seed0001.png' in lines[-1] and 'File too large' in lines[-1]
    assert 'Traceback' not in res.stderr
    assert os.listdir(out) == []  # neither a PNG nor a temp file


def test_calc_metrics_result_write_failure_keeps_the_old_file(tmp_path, he_crops):
    data = write_dataset_zip(tmp_path / 'he16.zip', he_crops(16, 8, seed=4))
    run = tmp_path / 'run'
    run.mkdir()
    G = tiny_generator()
    (run / 'network-snapshot-000000.pkl').write_bytes(pickle.dumps(
        dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=dataset_kwargs(str(data), resolution=16))))
    (run / 'training_options.json').write_text('{}')
    old_line = json.dumps(dict(metric='swd8', note='x' * 200)) + '\n'
    (run / 'metric-swd8.jsonl').write_text(old_line)
    res = run_limited([os.path.join(REPO, 'calc_metrics.py'), '--network', str(run / 'network-snapshot-000000.pkl'),
                       '--metrics', 'swd8', '--verbose', 'false'], max_file_bytes=len(old_line) + 50, cwd=REPO)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].lower().startswith("error: cannot write") and 'metric-swd8.jsonl' in lines[0], res.stderr
    assert (run / 'metric-swd8.jsonl').read_text() == old_line
    assert sorted(os.listdir(run)) == ['metric-swd8.jsonl', 'network-snapshot-000000.pkl', 'training_options.json']


class ChannelMeans:
    """Stand-in detector: per-channel means (3 features), so the expected statistics are easy to compute."""
    source, sha256, origin = 'test', '0' * 64, 'test'

    def __call__(self, images, **_kwargs):
        return images.double().mean(dim=[2, 3]).float()


def test_unwritable_metric_cache_warns_and_still_returns_the_stats(tmp_path, he_crops, monkeypatch):
    from metrics import detectors
    data = write_dataset_zip(tmp_path / 'he16.zip', he_crops(16, 6, seed=5))
    monkeypatch.setenv('HISTOSYNTH_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setattr(detectors, 'load_detector', lambda name, device='cpu', detector_dir=None: ChannelMeans())

    def disk_full(file, **arrays):
        file.write(b'PK partial')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(np, 'savez', disk_full)
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(str(data)), device='cpu')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        stats = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_all=True)
    assert any('No space left on device' in str(w.message) for w in caught)
    expected = he_crops(16, 6, seed=5).astype(np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(stats.get_all(), expected, rtol=1e-5)
    assert os.listdir(tmp_path / 'cache' / 'gan-metrics') == []  # the temp file is gone too


def test_damaged_metric_cache_is_recomputed(tmp_path, he_crops, monkeypatch):
    from metrics import detectors
    data = write_dataset_zip(tmp_path / 'he16.zip', he_crops(16, 6, seed=6))
    monkeypatch.setenv('HISTOSYNTH_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setattr(detectors, 'load_detector', lambda name, device='cpu', detector_dir=None: ChannelMeans())
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(str(data)), device='cpu')
    first = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_all=True).get_all()
    [name] = os.listdir(tmp_path / 'cache' / 'gan-metrics')
    (tmp_path / 'cache' / 'gan-metrics' / name).write_bytes(b'truncated')
    with pytest.warns(UserWarning, match='unreadable metric cache'):
        again = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_all=True).get_all()
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize('suffix', ['.safetensors', '.pkl'])
def test_network_conversion_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, suffix):
    G = tiny_generator()
    src = tmp_path / 'src' / 'net.pkl'
    src.parent.mkdir()
    src.write_bytes(pickle.dumps(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None)))
    dest = tmp_path / 'dest'
    dest.mkdir()
    res = run_limited([os.path.join(REPO, 'legacy.py'), '--source', str(src), '--dest', str(dest / f'net{suffix}')],
                      max_file_bytes=4096, cwd=REPO)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1].lower().startswith("error: cannot write") and 'Traceback' not in res.stderr
    assert os.listdir(dest) == []
