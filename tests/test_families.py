"""Baseline GAN families: architecture as published, output shapes, level-of-detail fades against hand-made answers."""

import numpy as np
import pytest
import torch

import dnnlib
from networks import dcgan, layers, pgan, progressive, stylegan, wgan

#----------------------------------------------------------------------------
# DCGAN (AnoGAN)

def test_dcgan_layers_as_published():
    G = dcgan.Generator(z_dim=100, c_dim=0, img_resolution=64, img_channels=3)
    D = dcgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3)
    convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    assert all(m.kernel_size == (4, 4) for m in convs)
    assert [m.stride[0] for m in convs] == [1, 2, 2, 2, 2]
    kinds = [type(m).__name__ for m in G.net]
    assert kinds == ['ConvTranspose2d', 'BatchNorm2d', 'ReLU'] * 4 + ['ConvTranspose2d', 'Tanh']

    kinds = [type(m).__name__ for m in D.body]
    assert kinds == ['Conv2d', 'LeakyReLU'] + ['Conv2d', 'BatchNorm2d', 'LeakyReLU'] * 3
    convs = [m for m in D.body if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.stride[0], m.kernel_size[0]) for m in convs] == [
        (3, 64, 2, 4), (64, 128, 2, 4), (128, 256, 2, 4), (256, 512, 2, 4)]
    assert all(m.negative_slope == 0.2 for m in D.body if isinstance(m, torch.nn.LeakyReLU))
    # N(0, 0.02) initialisation: the 512x256x4x4 layer has 2M samples, so its std is 0.02 to within 0.1 %.
    assert convs[-1].weight.std().item() == pytest.approx(0.02, rel=0.01)
    assert convs[-1].weight.mean().item() == pytest.approx(0.0, abs=1e-3)


def test_dcgan_shapes_range_and_features():
    torch.manual_seed(0)
    G = dcgan.Generator(z_dim=100, c_dim=0, img_resolution=64, img_channels=3, width=8)
    D = dcgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3, width=8)
    img = G(torch.randn(4, 100), None)
    assert img.shape == (4, 3, 64, 64) and img.abs().max() <= 1
    assert D(img, None).shape == (4, 1)
    assert D.features(img, None).shape == (4, 8 * 8 * 16)
    # truncation_psi = 0 maps every z to the same image (z = 0).
    G.eval()
    same = G(torch.randn(2, 100), None, truncation_psi=0)
    torch.testing.assert_close(same[0], same[1])


@pytest.mark.parametrize('module', [dcgan, wgan])
def test_fixed_64_families_refuse_other_resolutions(module):
    with pytest.raises(dnnlib.util.UserError, match='64x64'):
        module.Generator(z_dim=8, c_dim=0, img_resolution=256, img_channels=3)
    with pytest.raises(dnnlib.util.UserError, match='unconditional'):
        module.Discriminator(c_dim=2, img_resolution=64, img_channels=3)

#----------------------------------------------------------------------------
# WGAN-GP residual networks (f-AnoGAN)

def test_wgan_layers_as_published():
    G = wgan.Generator(z_dim=128, c_dim=0, img_resolution=64, img_channels=3, dim=64)
    D = wgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3, dim=64)
    assert G.fc.out_features == 4 * 4 * 8 * 64
    assert [b.conv1.out_channels for b in G.blocks] == [512, 256, 128, 64]
    assert all(b.resample == 'up' and isinstance(b.norm0, torch.nn.BatchNorm2d) for b in G.blocks)
    assert (G.torgb.in_channels, G.torgb.out_channels, G.torgb.kernel_size) == (64, 3, (3, 3))
    assert (D.fromrgb.out_channels, D.fromrgb.kernel_size) == (64, (3, 3))
    assert [b.conv1.out_channels for b in D.blocks] == [128, 256, 512, 512]
    assert all(b.resample == 'down' and isinstance(b.norm0, wgan.LayerNorm2d) for b in D.blocks)
    assert D.out.in_features == 8192



def test_wgan_shapes_and_features():
    torch.manual_seed(0)
    G = wgan.Generator(z_dim=128, c_dim=0, img_resolution=64, img_channels=3, dim=8)
    D = wgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3, dim=8)
    img = G(torch.randn(2, 128), None)
    assert img.shape == (2, 3, 64, 64) and img.abs().max() <= 1
    assert D.features(img, None).shape == (2, 4 * 4 * 8 * 8)
    assert D(img, None).shape == (2, 1)


def test_wgan_layer_norm_is_one_group_norm():
    # Layer norm over (C, H, W) with a per-channel affine is exactly GroupNorm with a single group.
    torch.manual_seed(0)
    norm = wgan.LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    ref = torch.nn.GroupNorm(1, 6, eps=1e-5)
    ref.load_state_dict(norm.state_dict())
    x = torch.randn(3, 6, 5, 5) * 3 + 1
    torch.testing.assert_close(norm(x), ref(x), rtol=1e-5, atol=1e-5)


def test_wgan_residual_block_by_hand():
    # Down block = avgpool(conv1x1(x)) + avgpool(conv1(relu(ln(conv0(relu(ln(x))))))), recomputed from torch.nn.functional.
    torch.manual_seed(0)
    block = wgan.ResidualBlock(4, 6, 'down')
    x = torch.randn(2, 4, 8, 8)
    F = torch.nn.functional
    y = F.conv2d(F.relu(F.group_norm(x, 1, block.norm0.weight, block.norm0.bias)), block.conv0.weight, block.conv0.bias, padding=1)
    y = F.conv2d(F.relu(F.group_norm(y, 1, block.norm1.weight, block.norm1.bias)), block.conv1.weight, block.conv1.bias, padding=1)
    ref = F.avg_pool2d(y, 2) + F.avg_pool2d(F.conv2d(x, block.shortcut.weight, block.shortcut.bias), 2)
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)

#----------------------------------------------------------------------------
# Level-of-detail helpers

def _block_mean(img, k):
    """numpy reference: mean over k x k blocks, repeated back to full size."""
    n, c, h, w = img.shape
    m = img.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))
    return np.repeat(np.repeat(m, k, axis=2), k, axis=3)


def test_fade_reals_on_hand_built_image():
    img = np.arange(2 * 3 * 16 * 16, dtype=np.float64).reshape(2, 3, 16, 16) % 7 - 3.0
    x = torch.from_numpy(img)
    np.testing.assert_allclose(progressive.fade_reals(x, 0).numpy(), img)
    np.testing.assert_allclose(progressive.fade_reals(x, 2).numpy(), _block_mean(img, 4))
    np.testing.assert_allclose(progressive.fade_reals(x, 0.25).numpy(), 0.75 * img + 0.25 * _block_mean(img, 2))
    np.testing.assert_allclose(progressive.fade_reals(x, 1.5).numpy(), 0.5 * _block_mean(img, 2) + 0.5 * _block_mean(img, 4))
    # lod beyond the 4x4 level (lod 2 for 16x16) is clamped there.
    np.testing.assert_allclose(progressive.fade_reals(x, 7).numpy(), _block_mean(img, 4))

#----------------------------------------------------------------------------
# PGAN

def _tiny_pgan(res=32):
    torch.manual_seed(0)
    kwargs = dict(c_dim=0, img_resolution=res, img_channels=3, channel_base=256, channel_max=16)
    return pgan.Generator(z_dim=16, **kwargs).requires_grad_(False), pgan.Discriminator(**kwargs).requires_grad_(False)


def test_pgan_widths_and_building_blocks():
    G = pgan.Generator(z_dim=512, c_dim=0, img_resolution=256, img_channels=3)
    widths = [getattr(G, f'b{r}').conv1.out_channels for r in G.resolutions]
    assert widths == [min(8192 // 2 ** (int(np.log2(r)) - 1), 512) for r in G.resolutions] == [512, 512, 512, 512, 256, 128, 64]  # the paper's formula
    # Equalized learning rate: unit-variance weights scaled by 1/sqrt(fan_in) at run time.
    conv = G.b64.conv0
    assert isinstance(conv, layers.Conv2dLayer) and conv.weight_gain == pytest.approx(1 / np.sqrt(512 * 9))
    assert conv.weight.std().item() == pytest.approx(1.0, rel=0.01)
    D = pgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3)
    assert isinstance(D.b4.mbstd, layers.MinibatchStdLayer) and D.b4.conv.in_channels == 513
    assert D.b64.conv1.out_channels == 512 and D.b64.fromrgb.out_channels == 256


def test_pgan_pixel_norm_after_every_generator_conv():
    G, _ = _tiny_pgan()
    x = progressive.pixel_norm(torch.randn(3, 16))
    for res in (4, 8, 16):
        x = getattr(G, f'b{res}')(x)
        torch.testing.assert_close(x.square().mean(dim=1), torch.ones(3, res, res), rtol=1e-4, atol=1e-4)


def test_pgan_fade_in_is_a_linear_blend_of_levels():
    G, D = _tiny_pgan()
    z = torch.randn(4, 16)
    out = {}
    for lod in (1.0, 2.0, 1.3, 0.0):
        G.set_lod(lod)
        out[lod] = G(z, None)
        assert out[lod].shape == (4, 3, 32, 32)
    assert float(G.lod) == 0.0 and 'lod' in dict(G.named_buffers())
    torch.testing.assert_close(out[1.3], torch.lerp(out[1.0], out[2.0], 0.3), rtol=1e-5, atol=1e-6)
    # At lod 2 the 32x32 image is built from 8x8 pixels.
    torch.testing.assert_close(out[2.0], torch.from_numpy(_block_mean(out[2.0].numpy(), 4)))
    assert not torch.allclose(out[0.0], torch.from_numpy(_block_mean(out[0.0].numpy(), 2)))


def test_pgan_discriminator_reads_only_the_current_level_and_fades_continuously():
    _, D = _tiny_pgan()
    x = torch.randn(4, 3, 32, 32)
    D.set_lod(2)
    torch.testing.assert_close(D(x, None), D(progressive.fade_reals(x, 2), None), rtol=1e-5, atol=1e-5)
    scores = {}
    for lod in (1.0, 1.0 + 1e-6, 2.0 - 1e-6, 2.0):
        D.set_lod(lod)
        scores[lod] = D(x, None)
    torch.testing.assert_close(scores[1.0 + 1e-6], scores[1.0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores[2.0 - 1e-6], scores[2.0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(scores[1.0], scores[2.0])


def test_pgan_truncation_scales_the_normalised_latent():
    G, _ = _tiny_pgan(8)
    z = torch.randn(2, 16)
    ref = G.b8.torgb(G.b8(G.b4(progressive.pixel_norm(z) * 0.5)))
    torch.testing.assert_close(G(z, None, truncation_psi=0.5), ref)

#----------------------------------------------------------------------------
# StyleGAN v1

def _tiny_stylegan(res=64):
    torch.manual_seed(0)
    G = stylegan.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=3,
        synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = stylegan.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=256, channel_max=16)
    return G.requires_grad_(False), D.requires_grad_(False)


def test_stylegan_mapping_as_published():
    G, _ = _tiny_stylegan()
    m = G.mapping
    fcs = [getattr(m, f'fc{i}') for i in range(8)]
    assert not hasattr(m, 'fc8') and all(fc.activation == 'lrelu' for fc in fcs)
    assert fcs[0].weight_gain == pytest.approx(0.01 / np.sqrt(16)) and fcs[0].bias_gain == 0.01
    z = torch.randn(3, 16)
    torch.testing.assert_close(m(z, None), m(5 * z, None), rtol=1e-5, atol=1e-5)  # pixel-norm on z
    assert G.num_ws == 10 and G.w_avg is m.w_avg


def test_stylegan_truncation_defaults_to_first_eight_layers():
    G, _ = _tiny_stylegan()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    z = torch.randn(2, 16)
    ws = G.mapping(z, None, skip_w_avg_update=True)
    trunc = G.mapping(z, None, truncation_psi=0.7, skip_w_avg_update=True)
    torch.testing.assert_close(trunc[:, :8], G.w_avg + 0.7 * (ws[:, :8] - G.w_avg))
    torch.testing.assert_close(trunc[:, 8:], ws[:, 8:])


def test_stylegan_adain_noise_and_const_input():
    G, _ = _tiny_stylegan()
    assert torch.equal(G.synthesis.b4.const, torch.ones(16, 4, 4))
    layer = G.synthesis.b8.style0
    x, w = torch.randn(2, 16, 8, 8), torch.randn(2, 16)
    # With zero noise strength: every channel ends with spatial mean = offset and std = scale + 1 (AdaIN).
    scale, offset = layer.affine(w).chunk(2, dim=1)
    y = layer(x, w, noise_mode='none')
    torch.testing.assert_close(y.mean(dim=[2, 3]), offset, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.std(dim=[2, 3], unbiased=False), (scale + 1).abs(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer(x, w, noise_mode='random'), y)  # strength starts at 0
    with torch.no_grad():
        layer.noise_strength.fill_(0.5)
    torch.testing.assert_close(layer(x, w, noise_mode='const'), layer(x, w, noise_mode='const'))
    assert not torch.allclose(layer(x, w, noise_mode='random'), layer(x, w, noise_mode='random'))
    # [1, 2, 1] blur on both sides: its normalised outer product.
    ref = torch.tensor([1., 2., 1.]).outer(torch.tensor([1., 2., 1.])) / 16
    torch.testing.assert_close(G.synthesis.b8.blur_filter, ref)


def test_stylegan_shapes_and_fade():
    G, D = _tiny_stylegan()
    z = torch.randn(4, 16)
    ws = G.mapping(z, None)
    out = {}
    for lod in (2.0, 3.0, 2.6):
        G.set_lod(lod)
        D.set_lod(lod)
        out[lod] = G.synthesis(ws, noise_mode='const')
        assert out[lod].shape == (4, 3, 64, 64) and D(out[lod], None).shape == (4, 1)
    assert float(G.lod) == pytest.approx(2.6) and float(D.lod) == pytest.approx(2.6)
    torch.testing.assert_close(out[2.6], torch.lerp(out[2.0], out[3.0], 0.6), rtol=1e-5, atol=1e-6)
    assert isinstance(D, pgan.Discriminator) and D.b64.blur_filter is not None


@pytest.mark.parametrize('module', [pgan, stylegan])
def test_progressive_families_refuse_bad_resolution(module):
    with pytest.raises(dnnlib.util.UserError, match='power-of-two'):
        module.Discriminator(c_dim=0, img_resolution=48, img_channels=3)

#----------------------------------------------------------------------------
