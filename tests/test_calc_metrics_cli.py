"""calc_metrics.py end to end: a tiny snapshot on a tiny real-H&E zip, dataset-vs-dataset mode, user errors."""

import copy
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
from datasets import write_dataset_zip
from test_metrics_pipeline import dataset_kwargs, tiny_generator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run_dir(he_crops, tmp_path_factory):
    """A run directory like training writes one: training_options.json, a snapshot pickle, the dataset zip."""
    from networks.stylegan2 import Discriminator
    root = tmp_path_factory.mktemp('run')
    data = write_dataset_zip(root / 'he32.zip', he_crops(32, 16, seed=11))
    G = tiny_generator()
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=16).eval()
    snapshot = dict(G=G, D=D, G_ema=copy.deepcopy(G), augment_pipe=None, training_set_kwargs=dataset_kwargs(data, resolution=32))
    run = root / '00000-he32-test'
    run.mkdir()
    (run / 'training_options.json').write_text(json.dumps(dict(training_set_kwargs=snapshot['training_set_kwargs'])))
    with open(run / 'network-snapshot-000000.pkl', 'wb') as f:
        pickle.dump(snapshot, f)
    return run, data


@pytest.fixture(scope='module')
def detector_files():
    from dnnlib import assets
    return {name: assets.fetch(name) for name in ('inception-2015-12-05', 'lpips-vgg16')}


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path, detector_files):
    # Feature statistics go to a throw-away cache; the detectors are named by path so they are not fetched again.
    from dnnlib import assets
    for name, path in detector_files.items():
        monkeypatch.setenv(assets.get_asset(name).env_var, path)
    monkeypatch.setenv('HISTOSYNTH_CACHE_DIR', str(tmp_path / 'cache'))


def _invoke(args):
    result = CliRunner().invoke(calc_metrics.main, args, catch_exceptions=False)
    return result


def test_snapshot_metrics_append_jsonl_lines_to_the_run_dir(run_dir):
    run, _data = run_dir
    pkl = str(run / 'network-snapshot-000000.pkl')
    result = _invoke(['--network', pkl, '--metrics', 'swd16,ppl2_wend4', '--verbose', 'false'])
    assert result.exit_code == 0, result.output
    swd = [json.loads(line) for line in (run / 'metric-swd16.jsonl').read_text().splitlines()]
    ppl = [json.loads(line) for line in (run / 'metric-ppl2_wend4.jsonl').read_text().splitlines()]
    assert len(swd) == 1 and len(ppl) == 1
    assert swd[0]['snapshot_pkl'] == 'network-snapshot-000000.pkl' and swd[0]['num_gpus'] == 1
    assert set(swd[0]['results']) == {'swd16_32', 'swd16_16', 'swd16_avg'}
    assert all(np.isfinite(v) and v > 0 for v in swd[0]['results'].values())
    assert np.isfinite(ppl[0]['results']['ppl2_wend4']) and 'lpips-vgg16' in ppl[0]['detector_source']
    # The same lines go to stdout.
    assert result.output.count('"metric": "swd16"') == 1


def test_dataset_vs_dataset_mode_without_weights(run_dir, he_crops, tmp_path):
    _run, data = run_dir
    noise = write_dataset_zip(tmp_path / 'noise.zip', np.random.RandomState(0).randint(0, 256, [16, 32, 32, 3], dtype=np.uint8))
    result = _invoke(['--data', data, '--data2', noise, '--metrics', 'swd16', '--verbose', 'false'])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith('{')]
    assert len(rows) == 1 and rows[0]['metric'] == 'swd16' and rows[0]['snapshot_pkl'] is None
    assert rows[0]['results']['swd16_avg'] > 0


@pytest.mark.slow
def test_dataset_vs_dataset_mode_with_inception(run_dir, he_crops, tmp_path):
    _run, data = run_dir
    other = write_dataset_zip(tmp_path / 'other.zip', he_crops(32, 16, seed=12))
    result = _invoke(['--data', data, '--data2', other, '--metrics', 'kid8,fid8', '--verbose', 'false'])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith('{')]
    assert [r['metric'] for r in rows] == ['kid8', 'fid8']
    assert np.isfinite(rows[0]['results']['kid8']) and rows[1]['results']['fid8'] > 0
    assert rows[1]['snapshot_pkl'] is None
    assert rows[1]['detector_source'].startswith('inception-2015-12-05: ')
    assert not (tmp_path / 'metric-fid8.jsonl').exists()


def _run_cli(args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, os.path.join(REPO, 'calc_metrics.py')] + args, capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_bad_metric_name_is_a_one_line_error(run_dir):
    run, _ = run_dir
    res = _run_cli(['--network', str(run / 'network-snapshot-000000.pkl'), '--metrics', 'fid50k_fulll'])
    assert res.returncode != 0
    assert 'Traceback' not in res.stderr
    assert "Unknown metric 'fid50k_fulll'" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def _write_crafted_safetensors(run):
    """The run's snapshot as .safetensors whose stored arguments claim a 65536 px generator (issue 10)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    import legacy
    with open(run / 'network-snapshot-000000.pkl', 'rb') as f:
        data = legacy.load_network_pkl(f)
    path = str(run / 'crafted.safetensors')
    legacy.save_network_safetensors(data, path)
    with safe_open(path, framework='pt') as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    modules = json.loads(meta['modules'])
    modules['G_ema']['init_kwargs']['img_resolution'] = 65536
    save_file(tensors, path, metadata=dict(meta, modules=json.dumps(modules)))


@pytest.mark.parametrize('make_args, message', [
    (lambda run, data: ['--network', str(run / 'missing.pkl'), '--metrics', 'swd16'], 'missing.pkl'),
    (lambda run, data: ['--metrics', 'swd16'], 'Give --network'),
    (lambda run, data: ['--data', str(run / 'nowhere.zip'), '--data2', data, '--metrics', 'swd16'], 'nowhere.zip'),
    (lambda run, data: ['--data', str(run / 'training_options.json'), '--data2', data, '--metrics', 'swd16'], 'training_options.json'),
    (lambda run, data: ['--network', str(run / 'network-snapshot-000000.pkl'), '--data', str(run / 'bad.zip'), '--metrics', 'swd16'], 'bad.zip'),
    (lambda run, data: ['--data', data, '--data2', data, '--metrics', 'swd16', '--detector-dir', str(run / 'no-such-dir')], 'no-such-dir'),
    (lambda run, data: ['--data', data, '--data2', data, '--metrics', 'swd16', '--gpus', '0'], '--gpus must be at least 1'),
    (lambda run, data: ['--network', str(run / 'network-snapshot-000000.pkl'), '--data2', data, '--metrics', 'swd16'],
     '--data2 needs --data'),
    (lambda run, data: ['--network', str(run / 'training_options.json'), '--metrics', 'swd16'], 'unsupported network file type'),
    (lambda run, data: ['--network', str(run / 'crafted.safetensors'), '--metrics', 'swd16'], 'img_resolution=65536'),
])
def test_user_mistakes_are_one_line_errors(run_dir, make_args, message):
    run, data = run_dir
    (run / 'bad.zip').write_bytes(b'not a zip at all')
    if not (run / 'crafted.safetensors').exists():
        _write_crafted_safetensors(run)
    result = CliRunner().invoke(calc_metrics.main, make_args(run, data))
    assert result.exit_code != 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('Error: ') and message in lines[0], result.output


def test_snapshot_training_set_is_the_default_data(run_dir, monkeypatch):
    run, data = run_dir
    seen = {}
    real_calc = calc_metrics.metric_main.calc_metric

    def spy(metric, **kwargs):
        seen.update(kwargs)
        return real_calc(metric, **kwargs)

    monkeypatch.setattr(calc_metrics.metric_main, 'calc_metric', spy)
    result = _invoke(['--network', str(run / 'network-snapshot-000000.pkl'), '--metrics', 'swd16', '--verbose', 'false', '--mirror', 'true'])
    assert result.exit_code == 0, result.output
    assert seen['dataset_kwargs']['path'] == data and seen['dataset_kwargs']['xflip'] is True
    assert isinstance(seen['G'], torch.nn.Module) and seen['dataset2_kwargs'] is None


def test_detector_dir_supplies_the_detector_file(run_dir, detector_files, tmp_path, monkeypatch):
    from dnnlib import assets
    run, _ = run_dir
    folder = tmp_path / 'detectors'
    folder.mkdir()
    os.symlink(detector_files['lpips-vgg16'], folder / os.path.basename(detector_files['lpips-vgg16']))
    monkeypatch.delenv(assets.get_asset('lpips-vgg16').env_var)  # Only the folder names the file now.
    result = _invoke(['--network', str(run / 'network-snapshot-000000.pkl'), '--metrics', 'ppl2_wend2', '--verbose', 'false',
                      '--detector-dir', str(folder)])
    assert result.exit_code == 0, result.output
    row = json.loads([line for line in result.output.splitlines() if line.startswith('{')][0])
    assert f'from path:{folder}' in row['detector_source']
