"""networks/encoder.py and tools/train_encoder.py: loss falls, exact resume, hybrid beats lpips, the z-space path."""

import json
import os

import numpy as np
import pytest
import torch

from datasets import write_dataset_zip
from projection_nets import image_from_w, save_snapshot, tiny_stylegan2, tiny_z_family
from tools import cli_utils, lpips as lpips_lib, projection, train_encoder


def _stats(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def sg2_setup(tmp_path_factory):
    """A tiny StyleGAN2 snapshot and a dataset of its own images (so a good encoder exists)."""
    root = tmp_path_factory.mktemp('enc')
    G, D = tiny_stylegan2(16)
    pkl = save_snapshot(root / 'net.pkl', G, D)
    with torch.no_grad():
        images = np.concatenate([cli_utils.images_to_uint8(image_from_w(G, seed)[1]) for seed in range(100, 164)])
    data = write_dataset_zip(root / 'fakes.zip', images)
    return pkl, data, root


@pytest.fixture(scope='module')
def trained(sg2_setup):
    """Straight run of 0.32 kimg (ticks of 0.08 kimg), with the default DataLoader workers."""
    pkl, data, root = sg2_setup
    torch.set_num_threads(1)
    run_dir = str(root / 'straight')
    last = train_encoder.train_encoder(pkl, data, run_dir, kimg=0.32, batch_size=16, tick_kimg=0.08, snap_ticks=2,
                                       device='cpu', progress=False, encoder_kwargs=dict(channel_base=128, channel_max=16),
                                       lr=1e-3)
    return run_dir, last


def test_encoder_loss_falls(trained):
    run_dir, last = trained
    rows = _stats(run_dir)
    assert [r['tick'] for r in rows] == [1, 2, 3, 4]
    losses = [r['Loss/loss'] for r in rows]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses
    # The izi_f objective by default: pixel and D-feature terms, no LPIPS.
    assert {'Loss/image', 'Loss/features'} <= set(rows[0]) and 'Loss/lpips' not in rows[0]
    for r in rows:
        assert r['Loss/loss'] == pytest.approx(r['Loss/image'] + r['Loss/features'], rel=1e-6)
    # The held-out patches (3 of 64) are scored every tick, and their loss falls too.
    assert rows[-1]['Heldout/loss'] < rows[0]['Heldout/loss'], [r['Heldout/loss'] for r in rows]
    assert {'Heldout/image', 'Heldout/features', 'Heldout/psnr', 'Heldout/psnr_margin', 'Heldout/diversity_ratio'} <= set(rows[0])
    assert os.path.basename(last) == 'encoder-snapshot-000000.320.pkl'
    assert os.path.isfile(train_encoder.state_path_for(last))


def test_resume_is_exact(sg2_setup, trained):
    pkl, data, root = sg2_setup
    _, straight_last = trained
    kwargs = dict(batch_size=16, tick_kimg=0.08, snap_ticks=2, device='cpu', progress=False, workers=0, lr=1e-3,
                  encoder_kwargs=dict(channel_base=128, channel_max=16))
    first = train_encoder.train_encoder(pkl, data, str(root / 'first'), kimg=0.16, **kwargs)
    resumed = train_encoder.train_encoder(pkl, data, str(root / 'resumed'), kimg=0.32, resume=first, **kwargs)
    a = train_encoder.load_encoder(straight_last).state_dict()
    b = train_encoder.load_encoder(resumed).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


class NearbyEncoder(torch.nn.Module):
    """Stand-in for a well-trained encoder: returns the true w of each target plus a known error."""
    latent_space, w_plus = 'w', False

    def __init__(self, ws, error):
        super().__init__()
        self.ws, self.error = ws, error

    def forward(self, img):
        return self.ws[:, :1] + self.error


def test_hybrid_reaches_a_distance_in_fewer_steps(one_thread):
    G, _ = tiny_stylegan2(16)
    ws, images = zip(*[image_from_w(G, seed) for seed in (7, 8)])
    ws, target = torch.cat(ws), torch.cat(images)
    lpips = lpips_lib.load_lpips()
    w_avg, w_std = stats = projection.w_statistics(G)
    error = torch.randn(ws[:, :1].shape, generator=torch.Generator().manual_seed(0)) * (0.3 * w_std / G.w_dim ** 0.5)
    E = NearbyEncoder(ws, error)
    steps = 30
    plain = projection.run_method(G, target, 'lpips', num_steps=steps, lpips=lpips, w_stats=stats, progress=False)
    hybrid = projection.run_method(G, target, 'hybrid', E=E, num_steps=steps, lpips=lpips, w_stats=stats, progress=False)
    goal = plain.distance * 1.5   # what lpips from w_avg reaches by its last step, with some slack

    def steps_to(history):
        reached = history <= goal[None]
        return [int(reached[:, k].float().argmax()) if reached[:, k].any() else steps for k in range(history.shape[1])]

    assert all(h < p for h, p in zip(steps_to(hybrid.history), steps_to(plain.history))), \
        (steps_to(hybrid.history), steps_to(plain.history))
    encoded = projection.run_method(G, target, 'encoder', E=E, lpips=lpips, progress=False)
    torch.testing.assert_close(encoded.latent, (ws[:, :1] + error).expand(-1, G.num_ws, -1))
    torch.testing.assert_close(hybrid.history[0], encoded.distance, rtol=1e-4, atol=1e-6)  # encoder start, no jitter


def test_z_space_encoder_mirrors_the_critic(tmp_path, he_crops):
    """A z-space family (features() on the critic): a new copy of the critic, tanh into z, RMSProp 5e-5."""
    G, D = tiny_z_family(16)
    pkl = save_snapshot(tmp_path / 'z.pkl', G, D)
    data = write_dataset_zip(tmp_path / 'he.zip', he_crops(16, 32, seed=4))
    last = train_encoder.train_encoder(pkl, data, str(tmp_path / 'run'), kimg=0.064, batch_size=16, tick_kimg=0.032,
                                       device='cpu', progress=False, workers=0)
    E = train_encoder.load_encoder(last, G)
    assert type(E).__name__ == 'MirroredCriticEncoder' and E.latent_space == 'z'
    assert [n for n, _ in E.trunk.named_parameters()] == [n for n, _ in D.named_parameters()]
    assert not torch.equal(E.trunk.convs[0].weight, D.convs[0].weight)  # trained from scratch, not D's weights
    assert train_encoder.default_optimizer(E) == dict(class_name='torch.optim.RMSprop', lr=5e-5)
    z = E(torch.rand([4, 3, 16, 16]) * 2 - 1)
    assert z.shape == (4, G.z_dim) and float(z.abs().max()) < 1
    rows = _stats(str(tmp_path / 'run'))
    assert len(rows) == 2 and 'Loss/lpips' not in rows[0] and rows[0]['Loss/features'] > 0
    # The features are the critic's own features(): the hook path is not used.
    img = torch.rand([2, 3, 16, 16])
    torch.testing.assert_close(train_encoder.discriminator_features(D, img), D.features(img, None))


def test_wgan_gp_fanogan_path(tmp_path, he_crops, one_thread):
    """networks.wgan (the f-AnoGAN baseline): encoder mirrors the residual critic, loss falls, scores are finite."""
    from networks import wgan
    from tools import anomaly
    torch.manual_seed(0)
    G = wgan.Generator(z_dim=8, c_dim=0, img_resolution=64, img_channels=3, dim=2).eval().requires_grad_(False)
    D = wgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3, dim=2).eval().requires_grad_(False)
    pkl = save_snapshot(tmp_path / 'wgan.pkl', G, D)
    crops = he_crops(64, 24, seed=6)
    last = train_encoder.train_encoder(pkl, write_dataset_zip(tmp_path / 'he.zip', crops[:16]), str(tmp_path / 'run'),
                                       kimg=0.096, batch_size=8, tick_kimg=0.032, lr=1e-3, device='cpu', progress=False,
                                       workers=0)
    G = cli_utils.load_network(pkl, device='cpu')
    E = train_encoder.load_encoder(last, G)
    assert type(E.trunk).__name__ == 'Discriminator' and E.out.in_features == 4 * 4 * 8 * 2
    losses = [r['Loss/loss'] for r in _stats(str(tmp_path / 'run'))]
    assert losses[-1] < losses[0], losses
    D = cli_utils.load_network(pkl, key='D', device='cpu')
    result = anomaly.score_patches(G, crops[16:], method='encoder', E=E, D=D, progress=False)
    assert np.all(np.isfinite(result.score)) and np.all(result.features > 0)


def test_stylegan2_features_are_b4_fc_and_batch_independent(one_thread):
    _, D = tiny_stylegan2(16)
    img = torch.rand([4, 3, 16, 16]) * 2 - 1
    both = train_encoder.discriminator_features(D, img)
    alone = torch.cat([train_encoder.discriminator_features(D, img[k:k + 1]) for k in range(4)])
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-5)
    assert both.shape == (4, D.b4.fc.weight.shape[0])
    assert D.b4.mbstd.group_size == 4  # restored


def test_heldout_split_is_fixed_and_disjoint():
    train, heldout = train_encoder.split_heldout(200, 0.05)
    assert len(heldout) == 10 and len(train) == 190 and not set(train) & set(heldout)
    assert sorted(set(train) | set(heldout)) == list(range(200))
    again, heldout_again = train_encoder.split_heldout(200, 0.05)
    assert np.array_equal(heldout, heldout_again) and np.array_equal(train, again)
    assert len(train_encoder.split_heldout(10, 0.01)[1]) == 1          # at least one patch
    assert len(train_encoder.split_heldout(10 ** 6, 0.5)[1]) == train_encoder.MAX_HELDOUT
    assert len(train_encoder.split_heldout(7, 0)[1]) == 0
    with pytest.raises(train_encoder.dnnlib.util.UserError, match='nothing to train on'):
        train_encoder.split_heldout(1, 0.5)


def test_heldout_row_is_the_loss_and_mapping_check_of_those_patches(sg2_setup, trained, one_thread):
    """heldout_row against the loss terms and tools.mapping_quality recomputed here on the same patches."""
    from tools import mapping_quality
    pkl, _data, _ = sg2_setup
    _, last = trained
    G = cli_utils.load_network(pkl, device='cpu')
    D = cli_utils.load_network(pkl, key='D', device='cpu')
    E = train_encoder.load_encoder(last, G)
    torch.manual_seed(0)
    images = (torch.rand([5, 3, 16, 16]) * 255).to(torch.uint8)
    mean_image = np.full([16, 16, 3], 100.0)
    row = train_encoder.heldout_row(G, D, E, images, mean_image, kappa=2.0, lpips=None, lpips_weight=0, batch_size=2)
    real = images.float() / 127.5 - 1
    with torch.no_grad():
        recon = G.synthesis(E(real).expand(-1, G.num_ws, -1), noise_mode='const')
        f_real = train_encoder.discriminator_features(D, real)
        f_recon = train_encoder.discriminator_features(D, recon)
    image = float((recon - real).square().mean())
    features = float((f_recon - f_real).square().mean())
    assert row['Heldout/image'] == pytest.approx(image, rel=1e-5)
    assert row['Heldout/features'] == pytest.approx(features, rel=1e-4)
    assert row['Heldout/loss'] == pytest.approx(image + 2.0 * features, rel=1e-4)
    quality = mapping_quality.mapping_quality(images.permute(0, 2, 3, 1).numpy(), cli_utils.images_to_uint8(recon),
                                              mean_image)
    assert row['Heldout/psnr_margin'] == pytest.approx(quality['psnr_margin'], abs=1e-4)
    assert row['Heldout/diversity_ratio'] == pytest.approx(quality['diversity_ratio'], rel=1e-4)


def test_lpips_is_opt_in_and_resume_keeps_the_split(sg2_setup, trained):
    pkl, data, root = sg2_setup
    _, last = trained
    kwargs = dict(batch_size=16, tick_kimg=0.016, device='cpu', progress=False, workers=0,
                  encoder_kwargs=dict(channel_base=128, channel_max=16))
    run = train_encoder.train_encoder(pkl, data, str(root / 'lpips'), kimg=0.016, lpips_weight=0.5, **kwargs)
    row, = _stats(str(root / 'lpips'))
    assert row['Loss/loss'] == pytest.approx(row['Loss/image'] + row['Loss/features'] + 0.5 * row['Loss/lpips'], rel=1e-5)
    assert 'Heldout/lpips' in row and run.endswith('000000.016.pkl')
    with pytest.raises(train_encoder.dnnlib.util.UserError, match='--heldout=0.05'):
        train_encoder.train_encoder(pkl, data, str(root / 'other-split'), kimg=0.4, resume=last, heldout=0, **kwargs)


def test_mean_image_is_the_mean_of_those_patches(sg2_setup):
    from training import dataset as dataset_lib
    _, data, _ = sg2_setup
    ds = dataset_lib.ImageFolderDataset(path=data)
    indices = np.array([3, 10, 11, 40, 63])
    expected = np.mean([ds[int(i)][0].astype(np.float64) for i in indices], axis=0).transpose(1, 2, 0)
    found = train_encoder.mean_image(ds, indices)
    assert found.shape == (16, 16, 3) and not np.allclose(found, found.mean())
    np.testing.assert_allclose(found, expected, rtol=1e-12)
    np.testing.assert_array_equal(train_encoder.read_images(ds, indices).numpy(), np.stack([ds[int(i)][0] for i in indices]))
