"""tools/projection.py and projector.py on tiny networks: recovery of a known w, z-space families, outputs, errors."""

import csv
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
import legacy
import projector
from projection_nets import image_from_w, save_snapshot, tiny_stylegan2, tiny_z_family
from tools import cli_utils, lpips as lpips_lib, projection


@pytest.fixture(scope='module')
def lpips_net():
    return lpips_lib.load_lpips()


@pytest.fixture(scope='module')
def sg2_pkl(tmp_path_factory):
    G, D = tiny_stylegan2(16)
    return save_snapshot(tmp_path_factory.mktemp('net') / 'tiny.pkl', G, D)


def test_projection_recovers_a_known_w(lpips_net, one_thread):
    G, _ = tiny_stylegan2(16)  # noise inputs off: the target's noise maps are not what the projector starts from
    w, target = image_from_w(G, seed=2)
    result = projection.project(G, target, num_steps=60, lpips=lpips_net, progress=False)
    start, end = float(result.history[0, 0]), float(result.distance[0])
    assert end < start / 100, (start, end)
    w_avg, _ = projection.w_statistics(G)
    target_u8 = cli_utils.images_to_uint8(target)[0]
    psnr = projection.psnr(target_u8, cli_utils.images_to_uint8(result.images)[0])
    psnr_start = projection.psnr(target_u8, cli_utils.images_to_uint8(projection.synthesize(G, w_avg))[0])
    assert psnr > 25 and psnr > psnr_start + 10, (psnr_start, psnr)
    assert result.latent.shape == (1, G.num_ws, G.w_dim)
    # The recovered w is much closer to the true one than the start (w_avg) was.
    assert float((result.latent[0, 0] - w[0, 0]).norm()) < 0.3 * float((w_avg[0, 0] - w[0, 0]).norm())
    # The per-target noise maps were temporary: G has its shared buffers back.
    assert all(layer.noise_const.ndim == 2 for layer in projection.noise_layers(G))


def test_w_statistics_match_numpy():
    G, _ = tiny_stylegan2(16)
    w_avg, w_std = projection.w_statistics(G, num_samples=500, batch_size=128)
    z = torch.from_numpy(np.random.RandomState(123).randn(500, G.z_dim)).float()
    w = G.mapping(z, torch.zeros([500, 0]))[:, 0].numpy().astype(np.float64)
    np.testing.assert_allclose(w_avg[0, 0].numpy(), w.mean(0), rtol=1e-4, atol=1e-5)
    assert math.isclose(w_std, math.sqrt(((w - w.mean(0)) ** 2).sum(1).mean()), rel_tol=1e-4)


def test_schedule_and_noise_regulariser_by_hand():
    assert projection.learning_rate(0.0) == 0
    assert math.isclose(projection.learning_rate(0.025), 0.05)             # half-way up the 5 % ramp
    assert math.isclose(projection.learning_rate(0.5), 0.1)                # plateau
    assert math.isclose(projection.learning_rate(0.875), 0.05, abs_tol=1e-12)  # cos ramp half-way down
    assert math.isclose(projection.latent_noise_scale(0.375), 0.05 * 0.25)
    assert projection.latent_noise_scale(0.8) == 0
    # A checkerboard correlates with its 1-pixel shifts as -1 at every level of the pyramid above 8x8 ...
    board = torch.tensor((np.indices([16, 16]).sum(0) % 2) * 2 - 1.0).float()[None, None]
    # ... level 16: both shifts give mean -1 -> 2; level 8 (avg-pooled board is 0) -> 0.
    torch.testing.assert_close(projection.noise_regularisation([board]), torch.tensor([2.0]))
    stripes = torch.tensor(np.tile([1.0, -1.0], (8, 4))).float()[None, None]  # 8x8: vertical stripes
    torch.testing.assert_close(projection.noise_regularisation([stripes]), torch.tensor([2.0]))  # (-1)^2 + 1^2


def test_z_space_generator_optimises_z(lpips_net, one_thread):
    G, _ = tiny_z_family(16)
    z_true = torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim)).float() * 0.5
    target = G(z_true, torch.zeros([1, 0]))
    result = projection.project(G, target, num_steps=60, lpips=lpips_net, progress=False)
    assert result.latent.shape == (1, G.z_dim)
    assert float(result.distance[0]) < float(result.history[0, 0]) / 5
    assert not projection.has_w_space(G) and projection.noise_layers(G) == []


def _png(path, array):
    PIL.Image.fromarray(array).save(path)
    return str(path)


def test_projector_cli_writes_official_outputs(sg2_pkl, tmp_path, he_crops, one_thread):
    target = _png(tmp_path / 'patch.png', he_crops(40, 1, seed=1)[0][:, :36])  # 36x40: cropped and resized
    outdir = tmp_path / 'out'
    res = CliRunner().invoke(projector.main, ['--network', sg2_pkl, '--target', target, '--outdir', str(outdir),
                                              '--num-steps', '3', '--save-video', '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    assert 'centre-cropped from 36x40 to 36x36 and resized to 16x16' in res.output
    assert sorted(os.listdir(outdir)) == ['proj-noise.png', 'proj.mp4', 'proj.png', 'projected_w.npz', 'residual.png',
                                          'target.png']
    G = cli_utils.load_network(sg2_pkl, device='cpu')
    ws = generate.load_projected_w(str(outdir / 'projected_w.npz'))
    generate.check_projected_w(G, ws)
    assert ws.shape == (1, G.num_ws, G.w_dim)
    # proj.png is G's image of the saved w.
    again = next(generate.synthesize_projected(G, ws))
    assert np.abs(again.astype(int) - np.asarray(PIL.Image.open(outdir / 'proj.png')).astype(int)).max() <= 1
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(outdir / 'proj.mp4'))
    meta = reader.__next__()
    assert tuple(meta['size']) == (32, 16)
    assert sum(1 for _ in reader) == 3


def test_projector_batch_mode_and_safetensors(sg2_pkl, tmp_path, he_crops, one_thread):
    folder = tmp_path / 'patches'
    folder.mkdir()
    for idx, crop in enumerate(he_crops(16, 3, seed=2)):
        _png(folder / f'p{idx}.png', crop)
    st = str(tmp_path / 'tiny.safetensors')
    legacy.save_network_safetensors(legacy.load_network(sg2_pkl), st)
    rows = projector.project_files(st, str(folder), str(tmp_path / 'out'), num_steps=2, batch_size=2, device='cpu', verbose=False)
    assert [r['name'] for r in rows] == ['p0.png', 'p1.png', 'p2.png']
    with open(tmp_path / 'out' / 'summary.csv') as f:
        summary = list(csv.DictReader(f))
    assert [r['name'] for r in summary] == ['p0.png', 'p1.png', 'p2.png']
    for r in summary:
        assert float(r['lpips']) > 0 and os.path.isfile(os.path.join(r['outdir'], 'projected_w.npz'))


@pytest.fixture(scope='module')
def noisy_net(tmp_path_factory):
    """(G, D, pkl) of a tiny StyleGAN2 whose noise inputs matter (strength 0.5), as in a trained network."""
    G, D = tiny_stylegan2(16, seed=3, noise_strength=0.5)
    return G, D, save_snapshot(tmp_path_factory.mktemp('noisy') / 'noisy.pkl', G, D)


def test_scored_projection_is_the_saved_w_with_constant_noise(noisy_net, tmp_path, he_crops, lpips_net, one_thread):
    """The reconstruction that is measured and scored is G(w) with G's constant noise buffers, which generate.py
    --projected-w renders again from projected_w.npz; the optimised per-target noise maps are only a picture."""
    from tools import anomaly
    G, D, pkl = noisy_net
    crop = he_crops(16, 1, seed=5)
    target = _png(tmp_path / 'patch.png', crop[0])
    res = CliRunner().invoke(projector.main, ['--network', pkl, '--target', target, '--outdir', str(tmp_path / 'out'),
                                              '--num-steps', '12', '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', pkl, '--outdir', str(tmp_path / 'gen'),
                                                            '--projected-w', str(tmp_path / 'out' / 'projected_w.npz')])
    assert res.exit_code == 0, res.output
    proj = np.asarray(PIL.Image.open(tmp_path / 'out' / 'proj.png')).astype(int)
    regenerated = np.asarray(PIL.Image.open(tmp_path / 'gen' / 'proj00.png')).astype(int)
    assert np.abs(regenerated - proj).max() == 0
    noisy = np.asarray(PIL.Image.open(tmp_path / 'out' / 'proj-noise.png')).astype(int)
    assert np.abs(noisy - proj).mean() > 2  # the optimised maps do change the picture: they are not what is saved
    # The same projection inside the anomaly score: the scored reconstruction is the saved w's constant-noise image.
    scored = anomaly.score_patches(G, crop, method='lpips', score='lpips', num_steps=12, lpips=lpips_net,
                                   progress=False)
    np.testing.assert_array_equal(scored.recon[0].astype(int), proj)
    ws = torch.from_numpy(generate.load_projected_w(str(tmp_path / 'out' / 'projected_w.npz')))
    with torch.no_grad():
        again = G.synthesis(ws, noise_mode='const')
    x = projection.to_float(crop, 'cpu')
    assert scored.residual[0] == pytest.approx(float((x - again.clamp(-1, 1)).square().mean()), rel=1e-5)
    distance = (lpips_net.embed(again) - lpips_net.embed(x)).square().sum()  # LPIPS of G's raw output
    assert scored.lpips[0] == pytest.approx(float(distance), rel=1e-4)


def test_hybrid_starts_at_the_encoder_image(noisy_net, lpips_net, he_crops, one_thread):
    """Step 0 of the hybrid is G(E(x)) with G's constant noise, and one step (learning rate 0 at the ramp's start)
    leaves it there: the hybrid's score equals the encoder's."""
    from tools import anomaly, train_encoder
    G, D, _ = noisy_net
    torch.manual_seed(2)
    E = train_encoder.build_encoder(G, D, channel_base=128, channel_max=16).eval()
    patches = he_crops(16, 3, seed=6)
    x = projection.to_float(patches, 'cpu')
    encoded = projection.run_method(G, x, method='encoder', E=E, lpips=lpips_net, progress=False)
    hybrid = projection.run_method(G, x, method='hybrid', E=E, num_steps=1, lpips=lpips_net, progress=False)
    torch.testing.assert_close(hybrid.history[0], encoded.distance, rtol=1e-5, atol=1e-6)  # step 0: same image
    torch.testing.assert_close(hybrid.images, encoded.images, rtol=0, atol=1e-5)
    torch.testing.assert_close(hybrid.latent, encoded.latent, rtol=0, atol=1e-6)
    # Random start maps (the published projector's) would not start at G(E(x)) in a network with noise inputs.
    fresh = projection.project(G, x, num_steps=1, init=encoded.latent, lpips=lpips_net, w_noise_scale=0,
                               progress=False)
    assert float((fresh.history[0] - encoded.distance).abs().max()) > 1e-3
    reference = he_crops(16, 3, seed=7)
    kwargs = dict(E=E, D=D, lpips=lpips_net, progress=False, reference=reference)
    by_encoder = anomaly.score_patches(G, patches, method='encoder', **kwargs)
    by_hybrid = anomaly.score_patches(G, patches, method='hybrid', num_steps=1, **kwargs)
    for key in ('score', 'residual', 'features', 'critic'):
        np.testing.assert_allclose(by_hybrid[key], by_encoder[key], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('kind', ['missing', 'not_an_image', 'truncated_png', 'empty_folder', 'encoder_mismatch'])
def test_bad_targets_give_one_line_and_no_output(kind, sg2_pkl, tmp_path, he_crops):
    target = tmp_path / 'target.png'
    args = []
    if kind == 'not_an_image':
        target.write_text('hello')
    elif kind == 'truncated_png':
        _png(target, he_crops(16, 1)[0])
        target.write_bytes(target.read_bytes()[:60])
    elif kind == 'empty_folder':
        target = tmp_path / 'folder'
        target.mkdir()
        (target / 'notes.txt').write_text('no images here')
    elif kind == 'encoder_mismatch':
        _png(target, he_crops(16, 1)[0])
        from tools import train_encoder
        G32, D32 = tiny_stylegan2(32)
        enc = tmp_path / 'enc.pkl'
        import pickle
        with open(enc, 'wb') as f:
            pickle.dump(dict(E=train_encoder.build_encoder(G32, D32)), f)
        args = ['--method', 'encoder', '--encoder', str(enc)]
    outdir = tmp_path / 'out'
    res = CliRunner().invoke(projector.main, ['--network', sg2_pkl, '--target', str(target), '--outdir', str(outdir),
                                              '--num-steps', '2', '--device', 'cpu'] + args)
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.startswith('Error')]
    assert len(lines) == 1 and 'Traceback' not in res.output, res.output
    expected = dict(missing='does not exist', not_an_image='not a readable image', truncated_png='not a readable image',
                    empty_folder='no images found', encoder_mismatch='encoder/network mismatch')[kind]
    assert expected in lines[0]
    assert not outdir.exists()
