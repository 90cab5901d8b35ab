"""tools/mapping_quality.py on hand-built cases with known answers: an exact reconstruction, the mean image for every
query, a reconstruction with known noise, and a collapsed one; PSNR and pairwise distances against numpy by hand."""

import numpy as np
import pytest

from tools import lpips as lpips_lib
from tools import mapping_quality


def _patches(n=12, size=8, seed=0):
    """Random patches with a per-patch brightness, so they differ from each other and from their mean."""
    rng = np.random.RandomState(seed)
    base = rng.randint(40, 200, size=(n, 1, 1, 3))
    return np.clip(base + rng.randint(-30, 31, size=(n, size, size, 3)), 0, 255).astype(np.uint8)


def test_psnr_and_pairwise_distance_by_hand():
    a = np.zeros([2, 2, 2, 3], np.uint8)
    b = a.copy()
    b[0] += 10                  # MSE 100 -> 10 log10(255^2 / 100)
    b[1, 0, 0, 0] = 12          # MSE 144 / 12 = 12
    np.testing.assert_allclose(mapping_quality.psnr(a, b), [10 * np.log10(255 ** 2 / 100), 10 * np.log10(255 ** 2 / 12)])
    assert mapping_quality.psnr(a, a)[0] == np.inf
    x = _patches(5)
    flat = x.reshape(5, -1).astype(np.float64)
    pairs = [np.sqrt(np.mean((flat[i] - flat[j]) ** 2)) for i in range(5) for j in range(i + 1, 5)]
    assert mapping_quality.mean_pairwise_distance(x) == pytest.approx(np.mean(pairs), rel=1e-9)


def test_exact_reconstruction_has_an_infinite_margin_and_full_diversity():
    x = _patches()
    found = mapping_quality.mapping_quality(x, x.copy())
    assert found['psnr_margin'] == np.inf and found['psnr_wins'] == 1
    assert found['diversity_ratio'] == pytest.approx(1) and found['collapsed'] is False
    assert found['warning'] is None and found['constant'] == 'mean of the queries'


def test_the_mean_image_for_every_query_has_margin_zero_and_collapses():
    x = _patches()
    mean = x.astype(np.float64).mean(axis=0)
    constant = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    recons = np.broadcast_to(constant, x.shape).copy()
    found = mapping_quality.mapping_quality(x, recons, constant=constant)
    assert found['psnr_margin'] == 0 and found['psnr_wins'] == 0
    assert found['diversity_recons'] == 0 and found['diversity_ratio'] == 0 and found['collapsed'] is True
    assert 'no closer than' in found['warning'] and 'collapse' in found['warning']
    # Against the unrounded mean of the queries (the default constant): within rounding of zero, never clearly positive.
    default = mapping_quality.mapping_quality(x, recons)
    assert abs(default['psnr_margin']) < 0.05 and default['collapsed'] is True and default['warning'] is not None


def test_noisy_reconstruction_margin_matches_the_noise():
    """Reconstruction = query + uniform noise of known size: PSNR known in closed form, margin = it minus the mean's."""
    x = _patches(n=16, size=16, seed=3).astype(np.int16)
    rng = np.random.RandomState(1)
    noise = rng.choice([-4, 4], size=x.shape)       # MSE exactly 16
    recons = np.clip(x + noise, 0, 255).astype(np.uint8)
    assert np.array_equal(recons.astype(np.int16) - x, noise)  # no clipping happened
    x = x.astype(np.uint8)
    found = mapping_quality.mapping_quality(x, recons)
    expected_recon = 10 * np.log10(255 ** 2 / 16)
    mean = x.astype(np.float64).mean(axis=0)
    expected_const = np.mean([10 * np.log10(255 ** 2 / np.mean((xi - mean) ** 2)) for xi in x.astype(np.float64)])
    assert found['psnr_recon'] == pytest.approx(expected_recon, abs=1e-9)
    assert found['psnr_margin'] == pytest.approx(expected_recon - expected_const, abs=1e-9) and found['psnr_margin'] > 10
    assert 0.9 < found['diversity_ratio'] < 1.1 and found['warning'] is None


def test_collapse_alone_is_flagged():
    """Reconstructions that beat the mean (shrunk halfway towards it) but differ only a fifth as much as the queries."""
    x = _patches(n=16, size=8, seed=5).astype(np.float64)
    mean = x.mean(axis=0)
    recons = np.clip(np.rint(mean + 0.15 * (x - mean)), 0, 255).astype(np.uint8)
    found = mapping_quality.mapping_quality(x.astype(np.uint8), recons)
    assert found['psnr_margin'] > 0 and found['diversity_ratio'] < mapping_quality.COLLAPSE_RATIO
    assert found['collapsed'] is True and 'collapse' in found['warning'] and 'no closer' not in found['warning']


def test_too_few_patches_is_a_missing_margin(capsys):
    x = _patches(n=1)
    found = mapping_quality.mapping_quality(x, x)
    assert found['psnr_margin'] is None and 'no PSNR margin' in found['warning']
    mapping_quality.warn(found)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('Warning: ')


def test_lpips_margin(one_thread):
    """With LPIPS: an exact reconstruction has distance 0 and a positive margin; the mean image has margin 0."""
    x = _patches(n=6, size=32, seed=7)
    lpips = lpips_lib.load_lpips()
    exact = mapping_quality.mapping_quality(x, x.copy(), lpips=lpips)
    assert exact['lpips_recon'] == pytest.approx(0, abs=1e-6) and exact['lpips_margin'] > 0.01
    constant = np.clip(np.rint(x.astype(np.float64).mean(axis=0)), 0, 255).astype(np.uint8)
    flat = mapping_quality.mapping_quality(x, np.broadcast_to(constant, x.shape).copy(), constant=constant, lpips=lpips)
    assert flat['lpips_margin'] == pytest.approx(0, abs=1e-6) and 'LPIPS margin' in flat['warning']


def test_evaluate_reports_the_check_and_warns_on_a_collapsed_encoder(tmp_path, one_thread):
    """tools.anomaly evaluate with an untrained encoder (every patch lands near w_avg): the JSON's mapping_quality
    block equals the check recomputed from G(E(x)) of the normal patches, flags the collapse and warns in one line."""
    import json
    import pickle

    import torch
    from click.testing import CliRunner
    from datasets import write_dataset_zip
    from projection_nets import image_from_w, save_snapshot, tiny_stylegan2

    from tools import anomaly, cli_utils, train_encoder
    G, D = tiny_stylegan2(16)
    pkl = save_snapshot(tmp_path / 'net.pkl', G, D)
    torch.manual_seed(0)
    E = train_encoder.build_encoder(G, D, channel_base=128, channel_max=16).eval()
    E.out.weight.data.mul_(1e-3)  # an encoder that has learnt nothing: one latent for every patch
    with open(tmp_path / 'enc.pkl', 'wb') as f:
        pickle.dump(dict(E=E), f)
    with torch.no_grad():
        normal = np.concatenate([cli_utils.images_to_uint8(image_from_w(G, seed)[1]) for seed in range(20, 26)])
        reference = np.concatenate([cli_utils.images_to_uint8(image_from_w(G, seed)[1]) for seed in range(40, 48)])
    other = _patches(n=4, size=16, seed=9)
    data = write_dataset_zip(tmp_path / 'labelled.zip', np.concatenate([normal, other]), labels=[0] * 6 + [1] * 4)
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', pkl, '--encoder', str(tmp_path / 'enc.pkl'),
                                           '--data', data, '--outdir', str(tmp_path / 'eval'), '--device', 'cpu',
                                           '--reference-data', write_dataset_zip(tmp_path / 'reference.zip', reference)])
    assert res.exit_code == 0, res.output
    with open(tmp_path / 'eval' / 'metrics.json') as f:
        block = json.load(f)['mapping_quality']
    with torch.no_grad():
        x = torch.from_numpy(normal).permute(0, 3, 1, 2).float() / 127.5 - 1
        recons = cli_utils.images_to_uint8(G.synthesis(E(x).expand(-1, G.num_ws, -1), noise_mode='const').clamp(-1, 1))
    expected = mapping_quality.mapping_quality(normal, recons, lpips=lpips_lib.load_lpips())
    assert block['num_images'] == 6
    for key in ('psnr_recon', 'psnr_constant', 'psnr_margin', 'lpips_margin', 'diversity_ratio'):
        assert block[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), key
    assert block['collapsed'] is True and block['diversity_ratio'] < 0.05
    warnings = [line for line in res.output.splitlines() if line.startswith('Warning: the mapping')]
    assert len(warnings) == 1 and 'collapse' in warnings[0]
