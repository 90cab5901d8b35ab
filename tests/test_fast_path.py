"""The default (fast) computation of the StyleGAN2 networks against the official one (stylegan2.official_computation()).

Same networks and inputs through both paths: images, logits, the losses of all four training phases
(including R1 and path-length double backward) and every parameter gradient must agree to float tolerance.
"""

import numpy as np
import pytest
import torch

from networks import stylegan2
from torch_utils.ops import winograd

#----------------------------------------------------------------------------

@pytest.fixture
def winograd_everywhere(monkeypatch):
    """The tiny test networks are too narrow for the Winograd convolution; let them take it anyway."""
    monkeypatch.setattr(winograd, 'min_channels', 1)
    monkeypatch.setattr(winograd, 'min_size', 1)
    monkeypatch.setattr(winograd, 'min_tiles', 1)
    monkeypatch.setattr(winograd, 'inference_min_channels', 1)

def tiny_networks(res, c_dim, noise_strength, seed=0):
    torch.manual_seed(seed)
    G = stylegan2.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=16 * res, channel_max=16, conv_clamp=256))
    D = stylegan2.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=16 * res, channel_max=16,
        conv_clamp=256, mapping_kwargs=dict(num_layers=2))
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(noise_strength)
            if name.endswith('.bias') and 'affine' not in name:
                param.normal_(0, 0.1)  # non-zero biases, so bias and clamp handling are exercised
    return G, D

def inputs(batch, c_dim, res, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, 16], generator=gen)
    c = torch.eye(max(c_dim, 1))[torch.randint(max(c_dim, 1), [batch], generator=gen)][:, :c_dim]
    real = torch.rand([batch, 3, res, res], generator=gen) * 2 - 1
    return z, c, real

def training_losses(G, D, z, c, real, noise_mode, seed=2):
    """The four phases' losses: Gmain, path length (Greg), Dmain, R1 (Dreg), with their double backward."""
    torch.manual_seed(seed)
    ws = G.mapping(z, c)
    img = G.synthesis(ws, noise_mode=noise_mode)
    loss_gmain = torch.nn.functional.softplus(-D(img, c)).mean()

    torch.manual_seed(seed + 1)
    ws_pl = G.mapping(z[:2], c[:2]).detach().requires_grad_(True)
    img_pl = G.synthesis(ws_pl, noise_mode=noise_mode)
    direction = torch.randn_like(img_pl) / np.sqrt(img_pl.shape[2] * img_pl.shape[3])
    pl_grad, = torch.autograd.grad((img_pl * direction).sum(), ws_pl, create_graph=True)
    loss_greg = (pl_grad.square().sum(2).mean(1).sqrt() - 0.5).square().mean()

    loss_dmain = torch.nn.functional.softplus(D(img.detach(), c)).mean() + torch.nn.functional.softplus(-D(real, c)).mean()

    real_r1 = real.detach().requires_grad_(True)
    r1_grad, = torch.autograd.grad(D(real_r1, c).sum(), real_r1, create_graph=True)
    loss_dreg = r1_grad.square().sum([1, 2, 3]).mean() * 5
    return img, dict(Gmain=loss_gmain, Greg=loss_greg, Dmain=loss_dmain, Dreg=loss_dreg)

def gradients(loss, module):
    params = [p for p in module.parameters() if p.requires_grad]
    # A parameter outside one path's graph (e.g. torgb bias under the path-length loss) counts as zero.
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True, materialize_grads=True)
    return dict(zip([name for name, p in module.named_parameters() if p.requires_grad], grads))

def run_training(G, D, z, c, real, noise_mode):
    img, losses = training_losses(G, D, z, c, real, noise_mode)
    grads = {}
    for phase, loss in losses.items():
        grads[phase] = gradients(loss, G if phase.startswith('G') else D)
    return img, losses, grads

def assert_close_scaled(actual, expected, what, rtol=2e-3):
    """|a - e| <= rtol * max|e| (+ a tiny floor): float32 summation-order noise passes, a wrong formula does not."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale + 1e-7, msg=lambda m: f'{what}: {m}')

#----------------------------------------------------------------------------

@pytest.mark.usefixtures('winograd_everywhere')
@pytest.mark.parametrize('c_dim,noise_mode', [(0, 'random'), (0, 'none'), (3, 'const'), (3, 'random')])
def test_training_phases_match_official_computation(c_dim, noise_mode):
    res = 8
    G, D = tiny_networks(res, c_dim, noise_strength=0.3)
    G.train()
    D.train()
    z, c, real = inputs(4, c_dim, res)
    fast = run_training(G, D, z, c, real, noise_mode)
    with stylegan2.official_computation():
        official = run_training(G, D, z, c, real, noise_mode)

    assert_close_scaled(fast[0], official[0], 'image')
    for phase in official[1]:
        assert_close_scaled(fast[1][phase], official[1][phase], f'{phase} loss')
        nonzero = [name for name, grad in official[2][phase].items() if grad.abs().max() > 0]
        assert len(nonzero) > len(official[2][phase]) // 2
        for name, grad in official[2][phase].items():
            assert_close_scaled(fast[2][phase][name], grad, f'{phase} gradient of {name}')
    if noise_mode != 'none':
        noise_grad = official[2]['Gmain']['synthesis.b8.conv0.noise_strength']
        assert noise_grad.abs() > 0  # the noise input really takes part

@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('c_dim', [0, 2])
def test_inference_matches_official_computation(batch, c_dim):
    # 128x128 so that the channels-last layout of the CPU fast path is exercised too; batch 1 takes the
    # grouped convolution, batch 2 the shared-weight one (the official path groups every fp32 batch).
    res = 128
    G, D = tiny_networks(res, c_dim, noise_strength=0.2)
    G.eval()
    D.eval()
    z, c, _ = inputs(batch, c_dim, res)
    with torch.no_grad():
        fast = G(z, c, truncation_psi=0.7, noise_mode='const')
        fast_logits = D(fast, c)
        with stylegan2.official_computation():
            official = G(z, c, truncation_psi=0.7, noise_mode='const')
            official_logits = D(official, c)
    assert fast.shape == (batch, 3, res, res) and fast.is_contiguous()
    assert official.std() > 0.05  # a real image, not a constant
    assert_close_scaled(fast, official, 'image')
    assert_close_scaled(fast_logits, official_logits, 'logits')

def test_grouped_and_shared_weight_choice():
    cpu = torch.device('cpu')
    assert stylegan2._use_grouped_conv(False, torch.float32, 1, cpu)
    assert not stylegan2._use_grouped_conv(False, torch.float32, 8, cpu)
    assert not stylegan2._use_grouped_conv(True, torch.float32, 1, cpu)  # training never groups
    with stylegan2.official_computation():
        assert stylegan2._use_grouped_conv(False, torch.float32, 8, cpu)  # the official rule for fp32 inference

def test_switches_are_restored_and_checked():
    before = dict(stylegan2.FAST_PATH)
    with pytest.raises(RuntimeError):
        with stylegan2.official_computation():
            assert not any(stylegan2.FAST_PATH.values())
            raise RuntimeError('inside')
    assert stylegan2.FAST_PATH == before
    with pytest.raises(ValueError, match='unknown fast-path switches'):
        stylegan2.computation(no_such_switch=False)

def test_matmul_demodulation_equals_per_sample_weights():
    torch.manual_seed(5)
    weight = torch.randn([6, 5, 3, 3], dtype=torch.float64)
    styles = torch.randn([4, 5], dtype=torch.float64)
    brute = torch.stack([(weight * s.reshape(1, -1, 1, 1)).square().sum(dim=[1, 2, 3]) for s in styles])
    expected = (brute + 1e-8).rsqrt()
    torch.testing.assert_close(stylegan2._demodulation(weight, styles), expected)
    with stylegan2.computation(matmul_demod=False):
        torch.testing.assert_close(stylegan2._demodulation(weight, styles), expected)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('demodulate', [False, True])
@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_pointwise_matmul_equals_modulated_convolution(demodulate, layout):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn([3, 5, 4, 6], dtype=torch.float64, generator=gen).contiguous(memory_format=layout)
    weight = torch.randn([2, 5, 1, 1], dtype=torch.float64, generator=gen)
    styles = torch.randn([3, 5], dtype=torch.float64, generator=gen)
    noise = torch.randn([3, 1, 4, 6], dtype=torch.float64, generator=gen)
    got = stylegan2.modulated_conv2d(x, weight, styles, noise=noise, demodulate=demodulate)
    per_sample = weight[None, :, :, 0, 0] * styles[:, None, :]
    if demodulate:
        per_sample = per_sample / per_sample.square().sum(dim=2, keepdim=True).add(1e-8).sqrt()
    want = torch.einsum('noi,nihw->nohw', per_sample, x) + noise
    torch.testing.assert_close(got, want)
    assert got.is_contiguous(memory_format=layout)
