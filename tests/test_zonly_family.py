"""generate.py, style_mixing.py and calc_metrics.py on a generator family without W space (z -> image only)."""

import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import generate
import style_mixing
from datasets import write_dataset_zip
from zonly_family import Generator


@pytest.fixture(scope='module')
def zonly(tmp_path_factory):
    folder = tmp_path_factory.mktemp('zonly')
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, img_resolution=16, img_channels=3).eval().requires_grad_(False)
    pkl = folder / 'zonly.pkl'
    pkl.write_bytes(pickle.dumps(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None)))
    return G, str(pkl), folder


def one_line_error(res, words):
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: ') and words in lines[0], res.stderr


def test_generate_draws_each_seed_as_the_reference_tools_do(zonly, tmp_path):
    G, pkl, _ = zonly
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', pkl, '--seeds', '3,4', '--trunc', '0.5',
                                                            '--outdir', str(tmp_path)])
    assert res.exit_code == 0, res.output
    # Independent of generate.py: z = RandomState(seed).randn(1, z_dim), image = G(z) * 127.5 + 128 rounded down.
    z = torch.from_numpy(np.random.RandomState(4).randn(1, 8)).float()
    with torch.no_grad():
        img = torch.tanh(G.fc(z * 0.5)).reshape(3, 16, 16).permute(1, 2, 0)
    expected = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / 'seed0004.png')), expected)


def test_projected_w_and_style_mixing_need_w_space(zonly, tmp_path):
    _G, pkl, folder = zonly
    np.savez(folder / 'w.npz', w=np.zeros([1, 4, 8], np.float32))
    out = tmp_path / 'out'
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', pkl, '--projected-w', str(folder / 'w.npz'),
                                                            '--outdir', str(out)])
    one_line_error(res, '--projected-w needs a network with a W latent space')
    res = CliRunner().invoke(style_mixing.generate_style_mix, ['--network', pkl, '--rows', '1', '--cols', '2',
                                                               '--outdir', str(out)])
    one_line_error(res, 'style mixing needs a network with a W latent space')
    assert not out.exists()


def test_calc_metrics_on_a_zonly_family(zonly, he_crops, tmp_path, monkeypatch):
    _G, pkl, folder = zonly
    monkeypatch.setenv('HISTOSYNTH_CACHE_DIR', str(tmp_path / 'cache'))
    data = str(write_dataset_zip(folder / 'he16.zip', he_crops(16, 8, seed=2)))
    res = CliRunner().invoke(calc_metrics.main, ['--network', pkl, '--data', data, '--metrics', 'swd8,ppl2_wend8',
                                                 '--verbose', 'false'])
    one_line_error(res, 'ppl2_wend8 needs a generator with a W latent space')
    res = CliRunner().invoke(calc_metrics.main, ['--network', pkl, '--data', data, '--metrics', 'swd8', '--verbose', 'false'])
    assert res.exit_code == 0, res.output
    assert '"metric": "swd8"' in res.output
