"""StyleGAN2 networks: official layout (names, shapes, storage), behaviour of mapping/synthesis/D, modulated conv."""

import numpy as np
import pytest
import torch

from networks import layers, stylegan2
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------

def tiny_G(res=16, c_dim=0, z_dim=16, w_dim=16, channel_base=256, channel_max=16, seed=0, **synthesis_kwargs):
    torch.manual_seed(seed)
    return stylegan2.Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=res, img_channels=3,
        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max, **synthesis_kwargs))

def tiny_D(res=16, c_dim=0, channel_base=256, channel_max=16, seed=0, **kwargs):
    torch.manual_seed(seed)
    return stylegan2.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=channel_base,
        channel_max=channel_max, **kwargs)

def randomize_noise_strength(G, value=0.5):
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(value)

def shapes(module):
    return {name: list(t.shape) for name, t in list(module.named_parameters()) + list(module.named_buffers())}

#----------------------------------------------------------------------------
# Layout: the official state-dict names and shapes, written out by hand.

def test_generator_state_dict_matches_official_layout():
    G = stylegan2.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=8, img_channels=3,
        synthesis_kwargs=dict(channel_base=64, channel_max=16))  # channels: 4 -> 16, 8 -> 8
    expected = {f'mapping.fc{i}.{p}': s for i in range(8) for p, s in (('weight', [16, 16]), ('bias', [16]))}
    expected['mapping.w_avg'] = [16]
    def layer(prefix, out_ch, in_ch, res):
        return {f'{prefix}.weight': [out_ch, in_ch, 3, 3], f'{prefix}.bias': [out_ch], f'{prefix}.noise_strength': [],
                f'{prefix}.noise_const': [res, res], f'{prefix}.resample_filter': [4, 4],
                f'{prefix}.affine.weight': [in_ch, 16], f'{prefix}.affine.bias': [in_ch]}
    def torgb(prefix, in_ch):
        return {f'{prefix}.weight': [3, in_ch, 1, 1], f'{prefix}.bias': [3], f'{prefix}.affine.weight': [in_ch, 16],
                f'{prefix}.affine.bias': [in_ch]}
    expected.update({'synthesis.b4.const': [16, 4, 4], 'synthesis.b4.resample_filter': [4, 4],
                     'synthesis.b8.resample_filter': [4, 4]})
    expected.update(layer('synthesis.b4.conv1', 16, 16, 4))
    expected.update(torgb('synthesis.b4.torgb', 16))
    expected.update(layer('synthesis.b8.conv0', 8, 16, 8))
    expected.update(layer('synthesis.b8.conv1', 8, 8, 8))
    expected.update(torgb('synthesis.b8.torgb', 8))
    assert shapes(G) == expected
    assert G.num_ws == G.synthesis.num_ws == G.mapping.num_ws == 4
    assert G.synthesis.block_resolutions == [4, 8]
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (16, 0, 16, 8, 3)
    # Official init: const/weights ~ N(0, 1), noise strength 0, affine bias 1, mapping weights stored as randn / 0.01.
    assert G.synthesis.b8.conv0.noise_strength.item() == 0
    assert torch.all(G.synthesis.b8.conv0.affine.bias == 1)
    assert 60 < G.mapping.fc0.weight.detach().std().item() < 140
    assert G.mapping.fc0.weight_gain == pytest.approx(0.01 / 4) and G.mapping.fc0.bias_gain == 0.01

def test_discriminator_state_dict_matches_official_layout():
    D = stylegan2.Discriminator(c_dim=2, img_resolution=8, img_channels=3, channel_base=64, channel_max=16)
    f = [4, 4]
    expected = {'b8.resample_filter': f,
                'b8.fromrgb.weight': [8, 3, 1, 1], 'b8.fromrgb.bias': [8], 'b8.fromrgb.resample_filter': f,
                'b8.conv0.weight': [8, 8, 3, 3], 'b8.conv0.bias': [8], 'b8.conv0.resample_filter': f,
                'b8.conv1.weight': [16, 8, 3, 3], 'b8.conv1.bias': [16], 'b8.conv1.resample_filter': f,
                'b8.skip.weight': [16, 8, 1, 1], 'b8.skip.resample_filter': f,
                'mapping.embed.weight': [16, 2], 'mapping.embed.bias': [16],
                'b4.conv.weight': [16, 17, 3, 3], 'b4.conv.bias': [16], 'b4.conv.resample_filter': f,
                'b4.fc.weight': [16, 16 * 4 * 4], 'b4.fc.bias': [16], 'b4.out.weight': [16, 16], 'b4.out.bias': [16]}
    expected.update({f'mapping.fc{i}.{p}': s for i in range(8) for p, s in (('weight', [16, 16]), ('bias', [16]))})
    assert shapes(D) == expected
    assert isinstance(D.b4.mbstd, layers.MinibatchStdLayer) and D.b4.mbstd.group_size == 4

def test_config_e_channel_counts():
    # Config E = config F at half width: channel_base 16384 gives 512,512,512,512,256,128,64,32,16 at 4..1024.
    synthesis = stylegan2.SynthesisNetwork(w_dim=512, img_resolution=1024, img_channels=3, channel_base=16384, channel_max=512)
    channels = [getattr(synthesis, f'b{res}').conv1.weight.shape[0] for res in synthesis.block_resolutions]
    assert channels == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert synthesis.num_ws == 18

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_architecture_modules(architecture):
    G = tiny_G(res=16, architecture=architecture)
    D = tiny_D(res=16, architecture=architecture)
    names = set(shapes(G)) | {'D.' + n for n in shapes(D)}
    assert ('synthesis.b8.torgb.weight' in names) == (architecture == 'skip')  # only the last block always has torgb
    assert 'synthesis.b16.torgb.weight' in names
    assert ('synthesis.b8.skip.weight' in names) == (architecture == 'resnet')
    assert ('D.b8.fromrgb.weight' in names) == (architecture == 'skip')
    assert ('D.b8.skip.weight' in names) == (architecture == 'resnet')
    assert ('D.b4.fromrgb.weight' in names) == (architecture == 'skip')
    img = G(torch.randn([2, 16]), None)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    assert D(img, None).shape == (2, 1)

#----------------------------------------------------------------------------
# Shapes at every resolution.

def test_shapes_every_resolution():
    for res in [4, 8, 16, 32, 64, 128, 256, 512]:
        G = tiny_G(res=res, z_dim=8, w_dim=8, channel_base=1024, channel_max=8).eval()
        D = tiny_D(res=res, channel_base=1024, channel_max=8)
        log2 = int(np.log2(res))
        assert G.num_ws == 2 * log2 - 2
        assert G.synthesis.block_resolutions == [2 ** i for i in range(2, log2 + 1)]
        assert D.block_resolutions == [2 ** i for i in range(log2, 2, -1)]
        with torch.no_grad():
            img = G(torch.randn([2, 8]), None, noise_mode='none')
            logits = D(img, None)
        assert img.shape == (2, 3, res, res) and img.dtype == torch.float32
        assert logits.shape == (2, 1) and torch.isfinite(logits).all()

#----------------------------------------------------------------------------
# Mapping network.

def test_fully_connected_layer_matches_formula():
    torch.manual_seed(1)
    fc = layers.FullyConnectedLayer(6, 5, activation='lrelu', lr_multiplier=0.1, bias_init=0.3)
    x = torch.randn([4, 6], dtype=torch.float64).float()
    w = fc.weight.detach().double() * 0.1 / np.sqrt(6)
    b = fc.bias.detach().double() * 0.1
    expected = torch.nn.functional.leaky_relu(x.double() @ w.t() + b, 0.2) * np.sqrt(2)
    torch.testing.assert_close(fc(x).double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(fc.bias * 0.1, torch.full([5], 0.03))

def test_conv2d_layer_matches_formula():
    # y = clamp(lrelu(conv(x, w / sqrt(fan_in)) + b) * sqrt(2) * gain, +-conv_clamp * gain)
    torch.manual_seed(2)
    conv = layers.Conv2dLayer(4, 6, kernel_size=3, activation='lrelu', conv_clamp=0.5)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn([2, 4, 7, 7])
    w = conv.weight.detach().double() / np.sqrt(4 * 9)
    pre = torch.nn.functional.conv2d(x.double(), w, conv.bias.detach().double(), padding=1)
    for gain in [1, np.sqrt(0.5)]:
        expected = (torch.nn.functional.leaky_relu(pre, 0.2) * np.sqrt(2) * gain).clamp(-0.5 * gain, 0.5 * gain)
        torch.testing.assert_close(conv(x, gain=gain).double(), expected, rtol=1e-5, atol=1e-6)
    frozen = layers.Conv2dLayer(4, 6, kernel_size=1, trainable=False, bias=False)
    assert [n for n, _ in frozen.named_parameters()] == [] and {n for n, _ in frozen.named_buffers()} == {'weight', 'resample_filter'}

def test_truncation_psi_zero_gives_w_avg_image():
    G = tiny_G(res=8).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn([16]))
        img_a = G(torch.randn([1, 16]), None, truncation_psi=0)
        img_b = G(torch.randn([1, 16]) * 3, None, truncation_psi=0)
        img_avg = G.synthesis(G.mapping.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1))
    torch.testing.assert_close(img_a, img_avg)
    torch.testing.assert_close(img_b, img_avg)

def test_truncation_formula_and_cutoff():
    G = tiny_G(res=8).eval()
    z = torch.randn([3, 16])
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn([16]))
        ws = G.mapping(z, None)
        ws_t = G.mapping(z, None, truncation_psi=0.7)
        ws_c = G.mapping(z, None, truncation_psi=0.7, truncation_cutoff=2)
    w_avg = G.mapping.w_avg
    torch.testing.assert_close(ws_t, w_avg + 0.7 * (ws - w_avg))
    torch.testing.assert_close(ws_c[:, :2], w_avg + 0.7 * (ws[:, :2] - w_avg))
    torch.testing.assert_close(ws_c[:, 2:], ws[:, 2:])
    assert torch.equal(ws[:, 0], ws[:, -1])  # broadcast: every w is the same before mixing

def test_w_avg_tracking():
    G = tiny_G(res=8)
    z = torch.randn([5, 16])
    G.eval()
    with torch.no_grad():
        G(z, None)
    assert torch.all(G.mapping.w_avg == 0)  # eval mode never updates
    G.train()
    with torch.no_grad():
        G.mapping(z, None, skip_w_avg_update=True)
        assert torch.all(G.mapping.w_avg == 0)
        G.mapping.w_avg.copy_(torch.randn([16]))
        before = G.mapping.w_avg.clone()
        w = G.mapping(z, None)[:, 0]
        # w_avg <- beta * w_avg + (1 - beta) * mean(w) with beta = 0.995
        torch.testing.assert_close(G.mapping.w_avg, 0.995 * before + 0.005 * w.mean(dim=0))
        G.eval()
        after_eval = G.mapping.w_avg.clone()
        G.mapping(z, None, update_emas=True)  # the newer official spelling asks for the update explicitly
        assert not torch.equal(G.mapping.w_avg, after_eval)

#----------------------------------------------------------------------------
# Conditioning.

def test_conditional_generator_and_discriminator():
    G = tiny_G(res=16, c_dim=3).eval()
    D = tiny_D(res=16, c_dim=3).eval()
    assert G.mapping.embed.weight.shape == (16, 3)
    z = torch.randn([1, 16]).repeat(3, 1)
    c = torch.eye(3)
    with torch.no_grad():
        img = G(z, c)
        logits = D(img, c)
    assert img.shape == (3, 3, 16, 16) and logits.shape == (3, 1)
    assert (img[0] - img[1]).abs().max() > 1e-3  # same z, other class -> other image

    # Projection discriminator: logit = <out(features), cmap> / sqrt(cmap_dim), with cmap = D.mapping(c).
    captured = {}
    handle = D.b4.out.register_forward_hook(lambda mod, inp, out: captured.setdefault('out', out))
    with torch.no_grad():
        logits = D(img, c)
        cmap = D.mapping(None, c)
    handle.remove()
    assert cmap.shape == (3, 16)
    expected = (captured['out'] * cmap).sum(dim=1, keepdim=True) / np.sqrt(16)
    torch.testing.assert_close(logits, expected)

#----------------------------------------------------------------------------
# Noise and determinism.

def test_noise_modes():
    G = tiny_G(res=16).eval()
    randomize_noise_strength(G, 0.5)
    z = torch.randn([2, 16])
    with torch.no_grad():
        const_a = G(z, None, noise_mode='const')
        const_b = G(z, None, noise_mode='const')
        rand_a = G(z, None, noise_mode='random')
        rand_b = G(z, None, noise_mode='random')
        none = G(z, None, noise_mode='none')
        randomize_noise_strength(G, 0.0)
        const_zero = G(z, None, noise_mode='const')
    assert torch.equal(const_a, const_b)
    assert (rand_a - rand_b).abs().max() > 1e-3
    assert (none - const_a).abs().max() > 1e-3
    torch.testing.assert_close(const_zero, none)  # zero strength = no noise

def test_same_seed_same_image():
    from generate import seed_to_z
    G = tiny_G(res=16).eval()
    z1 = torch.from_numpy(seed_to_z(42, G.z_dim))
    z2 = torch.from_numpy(seed_to_z(42, G.z_dim))
    assert np.array_equal(seed_to_z(42, 16), np.random.RandomState(42).randn(1, 16))
    with torch.no_grad():
        assert torch.equal(G(z1, None), G(z2, None))
        assert not torch.equal(G(z1, None), G(torch.from_numpy(seed_to_z(43, G.z_dim)), None))

def test_fused_and_unfused_generator_agree():
    G = tiny_G(res=16, c_dim=2).eval()
    randomize_noise_strength(G, 0.3)
    z, c = torch.randn([3, 16]), torch.eye(2)[[0, 1, 1]]
    with torch.no_grad():
        fused = G(z, c, noise_mode='const', fused_modconv=True)
        unfused = G(z, c, noise_mode='const', fused_modconv=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)

#----------------------------------------------------------------------------
# Training: gradients and state dicts.

@pytest.mark.parametrize('g_arch,d_arch', [('skip', 'resnet'), ('resnet', 'skip'), ('orig', 'orig')])
def test_gradients_reach_every_parameter(g_arch, d_arch):
    G = tiny_G(res=16, c_dim=2, architecture=g_arch).train()
    D = tiny_D(res=16, c_dim=2, architecture=d_arch).train()
    randomize_noise_strength(G, 0.1)
    z, c = torch.randn([4, 16]), torch.eye(2)[[0, 1, 0, 1]]
    loss = torch.nn.functional.softplus(-D(G(z, c, noise_mode='random'), c)).mean()
    loss.backward()
    for name, module in (('G', G), ('D', D)):
        for pname, param in module.named_parameters():
            assert param.grad is not None, f'{name}.{pname} got no gradient'
            assert param.grad.abs().sum() > 0, f'{name}.{pname} got a zero gradient'

def test_frozen_discriminator_layers():
    D = tiny_D(res=16, block_kwargs=dict(freeze_layers=2))
    params = {name for name, _ in D.named_parameters()}
    buffers = {name for name, _ in D.named_buffers()}
    assert 'b16.fromrgb.weight' in buffers and 'b16.conv0.weight' in buffers  # layers 0 and 1 frozen
    assert 'b16.conv1.weight' in params and 'b8.conv0.weight' in params

def test_state_dict_round_trip():
    G1, G2 = tiny_G(res=16, c_dim=2, seed=1).eval(), tiny_G(res=16, c_dim=2, seed=2).eval()
    D1, D2 = tiny_D(res=16, c_dim=2, seed=1).eval(), tiny_D(res=16, c_dim=2, seed=2).eval()
    z, c = torch.randn([2, 16]), torch.eye(2)
    with torch.no_grad():
        assert not torch.equal(G1(z, c), G2(z, c))
        G2.load_state_dict(G1.state_dict())
        D2.load_state_dict(D1.state_dict())
        img = G1(z, c)
        assert torch.equal(img, G2(z, c))
        assert torch.equal(D1(img, c), D2(img, c))

def test_minibatch_std_layer_matches_numpy():
    x = torch.randn([8, 6, 3, 3])
    y = layers.MinibatchStdLayer(group_size=4, num_channels=2)(x).numpy()
    assert y.shape == (8, 8, 3, 3)
    xn = x.numpy().astype(np.float64)
    for i in range(8):
        group = [j for j in range(8) if j % 2 == i % 2]  # sample i is in group i mod (N / G)
        for f in range(2):
            sub = xn[group][:, f * 3:(f + 1) * 3]
            expected = np.sqrt(sub.var(axis=0) + 1e-8).mean()
            np.testing.assert_allclose(y[i, 6 + f], expected, rtol=1e-5)
    np.testing.assert_array_equal(y[:, :6], x.numpy())

#----------------------------------------------------------------------------
# Modulated convolution against a direct per-sample implementation.

def direct_modulated_conv(x, weight, styles, demodulate, up, f, padding):
    """Per sample: scale the weight's input channels by the style, demodulate, convolve (float64)."""
    from torch_utils.ops import conv2d_resample
    outs = []
    for i in range(x.shape[0]):
        w = weight.double() * styles[i].double().reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        if up == 1:
            outs.append(torch.nn.functional.conv2d(x[i:i + 1].double(), w, padding=padding))
        else:
            outs.append(conv2d_resample.conv2d_resample(x[i:i + 1], w.float(), f=f, up=up, padding=padding,
                flip_weight=False).double())  # the op is float32-only
    return torch.cat(outs)

@pytest.mark.parametrize('up,demodulate,kernel', [(1, True, 3), (1, False, 1), (2, True, 3)])
def test_modulated_conv2d_paths_agree_with_direct(up, demodulate, kernel):
    torch.manual_seed(3)
    x = torch.randn([3, 5, 6, 6])
    weight = torch.randn([4, 5, kernel, kernel])
    styles = torch.randn([3, 5]) + 1
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    padding = kernel // 2
    flip = (up == 1)
    kwargs = dict(x=x, weight=weight, styles=styles, up=up, padding=padding, resample_filter=f, demodulate=demodulate,
                  flip_weight=flip)
    fused = stylegan2.modulated_conv2d(fused_modconv=True, **kwargs)
    unfused = stylegan2.modulated_conv2d(fused_modconv=False, **kwargs)
    direct = direct_modulated_conv(x, weight, styles, demodulate, up, f, padding).float()
    assert fused.shape == (3, 4, 6 * up, 6 * up)
    torch.testing.assert_close(fused, direct, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unfused, direct, rtol=1e-4, atol=1e-4)

    # Noise is added after demodulation on both paths.
    noise = torch.randn([3, 1, 6 * up, 6 * up])
    fused_n = stylegan2.modulated_conv2d(fused_modconv=True, noise=noise, **kwargs)
    unfused_n = stylegan2.modulated_conv2d(fused_modconv=False, noise=noise, **kwargs)
    torch.testing.assert_close(fused_n, direct + noise, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unfused_n, direct + noise, rtol=1e-4, atol=1e-4)

def test_demodulation_normalizes_output_variance():
    # With demodulation and unit-variance iid input, every output map has unit variance whatever the styles.
    torch.manual_seed(4)
    x = torch.randn([2, 64, 32, 32])
    styles = torch.rand([2, 64]) * 10 + 0.1
    y = stylegan2.modulated_conv2d(x, torch.randn([8, 64, 3, 3]), styles, padding=1)
    std = y[:, :, 1:-1, 1:-1].std(dim=[2, 3])
    assert torch.all((std > 0.9) & (std < 1.1)), std

#----------------------------------------------------------------------------

def test_persistent_and_channels_last():
    from torch_utils import persistence
    G = tiny_G(res=16, num_fp16_res=2, conv_clamp=256, fp16_channels_last=True).eval()
    for module in G.modules():
        if type(module).__module__.startswith('networks.'):
            assert persistence.is_persistent(module), type(module).__name__
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    assert G.synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        img = G(torch.randn([2, 16]), None)  # on the CPU fp16 blocks quietly run in float32
    assert img.dtype == torch.float32 and torch.isfinite(img).all()

#----------------------------------------------------------------------------

@pytest.mark.gpu
def test_fp16_blocks_on_cuda_match_fp32():
    G = tiny_G(res=32, num_fp16_res=2, conv_clamp=256).eval().cuda()
    D = tiny_D(res=32, num_fp16_res=2, conv_clamp=256).eval().cuda()
    dtypes = {}
    G.synthesis.b32.conv1.register_forward_hook(lambda mod, inp, out: dtypes.setdefault('b32', out.dtype))
    z = torch.randn([4, 16], device='cuda')
    with torch.no_grad():
        img16 = G(z, None, noise_mode='const')
        img32 = G(z, None, noise_mode='const', force_fp32=True)
        logits16 = D(img32, None)
        logits32 = D(img32, None, force_fp32=True)
    assert dtypes['b32'] == torch.float16 and img16.dtype == torch.float32
    torch.testing.assert_close(img16, img32, rtol=0, atol=0.05)
    torch.testing.assert_close(logits16, logits32, rtol=0.05, atol=0.05)

#----------------------------------------------------------------------------
