"""AugmentPipe: identity at p=0, each op does what it says (checked against torch/numpy on real H&E), ADA controller."""

import numpy as np
import pytest
import torch

from training import augment, presets
from training.training_loop import AdaController


@pytest.fixture(scope='module')
def he_batch(he_crops):
    """Four real 32x32 H&E crops as float NCHW in [-1, 1]."""
    crops = he_crops(32, 4, seed=3)
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope='module')
def smooth_image():
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing='ij')
    return torch.stack([torch.sin(xx / 5 + yy / 7), torch.cos(xx / 4 - yy / 9), torch.sin(xx * yy / 90)])[None].repeat(2, 1, 1, 1)


@pytest.mark.parametrize('pipe_name', ['bgcfnc', 'histo'])
def test_p_zero_is_identity(he_batch, pipe_name):
    torch.manual_seed(0)
    pipe = augment.AugmentPipe(**presets.augpipe_specs[pipe_name])
    pipe.p.zero_()
    out = pipe(he_batch)
    # 'bgcfnc' resamples even at p=0 (orthogonal wavelet round trip), 'histo' copies pixels.
    np.testing.assert_allclose(out.numpy(), he_batch.numpy(), atol=1e-4 if pipe_name == 'bgcfnc' else 0)


def test_xflip_yflip_mirror_exactly(he_batch):
    out = augment.AugmentPipe(xflip=1)(he_batch, debug_percentile=0.75)
    assert torch.equal(out, he_batch.flip(3))
    out = augment.AugmentPipe(yflip=1)(he_batch, debug_percentile=0.75)
    assert torch.equal(out, he_batch.flip(2))
    out = augment.AugmentPipe(xflip=1)(he_batch, debug_percentile=0.25) # first half of the range: no flip
    assert torch.equal(out, he_batch)


def test_rotate90_gives_each_quarter_turn(he_batch):
    pipe = augment.AugmentPipe(rotate90=1)
    found = []
    for q in [0.1, 0.35, 0.6, 0.85]:
        out = pipe(he_batch, debug_percentile=q)
        found.append([k for k in range(4) if torch.equal(out, torch.rot90(he_batch, k, dims=[2, 3]))])
    assert sorted(k for ks in found for k in ks) == [0, 1, 2, 3]


def test_integer_translation_shifts_with_reflection(he_batch):
    out = augment.AugmentPipe(xint=1, xint_max=0.125)(he_batch, debug_percentile=1.0) # +4 px in x and y
    padded = torch.nn.functional.pad(he_batch, [4, 4, 4, 4], mode='reflect')
    assert torch.equal(out, padded[:, :, :32, :32])


def test_resampled_flip_close_to_mirror(smooth_image):
    # The general path (used once any non-integer op is on) must land on the mirror image as well.
    pipe = augment.AugmentPipe(xflip=1, scale=1e-6, scale_std=0)
    out = pipe(smooth_image, debug_percentile=0.75)
    err = (out - smooth_image.flip(3)).abs().max().item()
    assert err < 0.06 < (out - smooth_image).abs().max().item()


def test_geometric_ops_preserve_constant_image():
    img = torch.full([2, 3, 32, 32], 0.3)
    pipe = augment.AugmentPipe(**presets.augpipe_specs['bg'])
    for q in [0.1, 0.5, 0.9]:
        out = pipe(img, debug_percentile=q)
        np.testing.assert_allclose(out.numpy(), 0.3, atol=1e-4)


def test_brightness_shifts_mean_and_contrast_scales_spread(he_batch):
    q = 0.9
    b = torch.erfinv(torch.tensor(2 * q - 1)).item() * 0.2
    out = augment.AugmentPipe(brightness=1)(he_batch, debug_percentile=q)
    np.testing.assert_allclose(out.numpy(), he_batch.numpy() + b, atol=1e-5)
    c = 2 ** (torch.erfinv(torch.tensor(2 * q - 1)).item() * 0.5)
    out = augment.AugmentPipe(contrast=1)(he_batch, debug_percentile=q)
    np.testing.assert_allclose(out.numpy(), he_batch.numpy() * c, atol=1e-5)


def test_hue_keeps_luma_and_rotates_chroma(he_batch):
    out = augment.AugmentPipe(hue=1, hue_max=0.5)(he_batch, debug_percentile=0.9)
    np.testing.assert_allclose(out.mean(dim=1).numpy(), he_batch.mean(dim=1).numpy(), atol=1e-5) # luma = channel mean
    chroma_in = he_batch - he_batch.mean(dim=1, keepdim=True)
    chroma_out = out - out.mean(dim=1, keepdim=True)
    np.testing.assert_allclose(chroma_out.norm(dim=1).numpy(), chroma_in.norm(dim=1).numpy(), atol=1e-5) # a rotation
    cos = (chroma_in * chroma_out).sum(dim=1) / (chroma_in.norm(dim=1) * chroma_out.norm(dim=1) + 1e-12)
    expected = np.cos((2 * 0.9 - 1) * np.pi * 0.5)
    mask = chroma_in.norm(dim=1) > 0.05
    np.testing.assert_allclose(cos[mask].numpy(), expected, atol=1e-4)


def test_saturation_scales_chroma_and_lumaflip_reflects(he_batch):
    q = 0.8
    s = 2 ** (torch.erfinv(torch.tensor(2 * q - 1)).item() * 1.0)
    out = augment.AugmentPipe(saturation=1)(he_batch, debug_percentile=q)
    mean = he_batch.mean(dim=1, keepdim=True)
    np.testing.assert_allclose(out.numpy(), (mean + (he_batch - mean) * s).numpy(), atol=1e-5)
    out = augment.AugmentPipe(lumaflip=1)(he_batch, debug_percentile=0.75)
    np.testing.assert_allclose(out.numpy(), (he_batch - 2 * mean).numpy(), atol=1e-5) # v v^T x = mean on every channel


def test_imgfilter_bank_sums_to_delta_and_preserves_constants():
    bank = augment.imgfilter_bank(augment.wavelets['sym2'])
    delta = np.zeros(bank.shape[1])
    delta[bank.shape[1] // 2] = 1
    np.testing.assert_allclose(bank.sum(axis=0), delta, atol=1e-12)
    np.testing.assert_allclose(bank[1:].sum(axis=1), 0, atol=1e-12) # band-pass rows have no DC
    img = torch.full([2, 3, 32, 32], -0.4)
    out = augment.AugmentPipe(imgfilter=1)(img, debug_percentile=0.9)
    # A constant image lives in the lowest band only; the separable filter applies the normalised
    # low-band gain once along x and once along y.
    t = 2 ** (torch.erfinv(torch.tensor(0.8)).item())
    power = np.array([10, 1, 1, 1]) / 13
    gain = 1.0
    for i in range(4):
        g = np.ones(4)
        g[i] = t
        gain *= g[0] / np.sqrt((power * g ** 2).sum())
    np.testing.assert_allclose(out.numpy(), -0.4 * gain ** 2, rtol=1e-4)


def test_noise_and_cutout(he_batch):
    torch.manual_seed(1)
    out = augment.AugmentPipe(noise=1, noise_std=0.1)(he_batch, debug_percentile=0.5)
    sigma = torch.erfinv(torch.tensor(0.5)).item() * 0.1
    assert abs((out - he_batch).std().item() - sigma) < 0.1 * sigma
    out = augment.AugmentPipe(cutout=1, cutout_size=0.5)(he_batch, debug_percentile=0.5)
    assert torch.all(out[:, :, 8:24, 8:24] == 0)
    assert torch.equal(out[:, :, :8], he_batch[:, :, :8])


def test_gradients_flow_through_every_op(he_batch):
    torch.manual_seed(0)
    pipe = augment.AugmentPipe(**presets.augpipe_specs['bgcfnc'])
    x = he_batch.clone().requires_grad_(True)
    pipe(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_probability_follows_p():
    torch.manual_seed(0)
    img = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(4000, 1, 1, 1)
    pipe = augment.AugmentPipe(xflip=1)
    pipe.p.fill_(0.4)
    flipped = (pipe(img) != img).flatten(1).any(dim=1).float().mean().item()
    assert abs(flipped - 0.2) < 0.03 # applied with probability p, then a fair coin picks flip/no flip


def test_ada_controller_raises_p_on_overfitting_and_stays_in_unit_range():
    pipe = augment.AugmentPipe(xflip=1)
    pipe.p.zero_()
    ada = AdaController(target=0.6, interval=4, kimg=0.1, batch_size=16) # 0.64 per update
    stats = torch.zeros([2], dtype=torch.float64)
    history = []
    for _ in range(5): # D overfits: sign(D(real)) is always +1
        stats += torch.tensor([64.0, 64.0], dtype=torch.float64)
        ada.update(pipe, stats)
        history.append(float(pipe.p))
        assert stats.sum() == 0 # consumed
    assert history[0] == pytest.approx(0.64) and history[-1] == 1.0
    for _ in range(5): # D underfits: E[sign] = -0.5
        stats += torch.tensor([-32.0, 64.0], dtype=torch.float64)
        ada.update(pipe, stats)
        history.append(float(pipe.p))
    assert history[-1] == 0.0
    assert all(0 <= p <= 1 for p in history)
    assert all(b <= a for a, b in zip(history[5:], history[6:]))
