"""StyleGAN2 generator and discriminator (Karras et al., CVPR 2020), interchangeable with the official StyleGAN2-ADA.

Names, shapes and storage of every parameter and buffer, the constructor arguments and the call signatures
are those of the official networks: a state dict copies 1:1 either way, and equal z, c and
noise_mode='const' give equal images (to float tolerance).

The same function is computed in one of two ways:
  * the fast path (default): demodulation coefficients as a matrix product instead of through a
    [batch, out, in, k, k] tensor of per-sample weights; on CPUs, channels-last activations (what the
    oneDNN convolutions prefer) and the shared-weight modulated convolution also for inference (a
    grouped convolution over the batch is slow there), toRGB as a batched matrix product, and the wide
    3x3 convolutions by Winograd F(4x4, 3x3) (torch_utils/ops/winograd.py: from 64 channels under
    autograd, from 256 without); compiled ops where available.
  * `official_computation()`: the official sequence of operations with the reference ops, kept as the
    baseline of benchmarks/ and the reference of tests/test_fast_path.py.
`computation(**switches)` turns single switches of the fast path off, to measure each one.

Pickles embed this file's source and must run where only torch_utils and dnnlib are importable, so the
forward passes use nothing else; the layer kit (networks.layers, which pickles carry on its own) is
imported only in constructors.
"""

import contextlib

import numpy as np
import torch

from torch_utils import custom_ops, misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d, winograd

#----------------------------------------------------------------------------
# Switches of the fast path. Every one of them changes speed only, never the function computed.

FAST_PATH = {
    'matmul_demod': True,       # demodulation from styles^2 @ (sum over k of weight^2)^T
    'channels_last': True,      # NHWC activations on CPUs
    'shared_weight_cpu': True,  # on CPUs, the grouped (per-sample weight) convolution only for batch 1
    'pointwise_matmul': True,   # on CPUs, 1x1 modulated convolutions (toRGB) as a batched matrix product
    'winograd': True,           # on CPUs, wide 3x3 'same' convolutions by Winograd F(4x4, 3x3) (ops/winograd.py)
}

class computation:
    """Context manager: the enclosed code runs with FAST_PATH switches changed (module state, not thread-safe).

    official=True turns every switch off and forces the reference ('ref') ops: the official computation.
    """

    def __init__(self, official=False, **switches):
        unknown = set(switches) - set(FAST_PATH)
        if unknown:
            raise ValueError(f'unknown fast-path switches: {sorted(unknown)}')
        self.switches = dict.fromkeys(FAST_PATH, False) if official else switches
        self.ops = custom_ops.force_impl('ref') if official else contextlib.nullcontext()
        self.saved = None

    def __enter__(self):
        self.saved = dict(FAST_PATH), winograd.enabled
        FAST_PATH.update(self.switches)
        winograd.enabled = FAST_PATH['winograd']  # the op-level switch, read by conv2d_resample (and Conv2dLayer)
        self.ops.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.ops.__exit__(*exc_info)
        FAST_PATH.update(self.saved[0])
        winograd.enabled = self.saved[1]

def official_computation():
    """The official StyleGAN2-ADA computation (benchmark baseline, reference of the equivalence tests)."""
    return computation(official=True)

#----------------------------------------------------------------------------

def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Divide by the root mean square along `dim` (pixel norm of a latent)."""
    mean_square = x.square().mean(dim=dim, keepdim=True)
    return x / (mean_square + eps).sqrt()

def _check_maps(x, channels, side):
    misc.assert_shape(x, [None, channels, side, side])

def _block_dtype(use_fp16, force_fp32, device):
    """float16 only for fp16 blocks on CUDA: CPU half-precision kernels are slow or missing."""
    half = use_fp16 and not force_fp32 and device.type == 'cuda'
    return torch.float16 if half else torch.float32

def _block_layout(fp16_channels_last, dtype, device, resolution=0):
    """Memory format of a block's activations.

    Without autograd (the caller passes the resolution): NHWC from 8x8 on. oneDNN's convolutions gain about
    25 % with NHWC activations and its stride-2 transposed convolution about 3x (measured at 64x64 and
    128x128); this covers inference and G's forward pass in the D phases of training (config-e G at 64x64,
    batch 8: 1.12 -> 0.92 s). Under autograd (resolution 0) NCHW: forward+backward measured no gain.
    """
    if dtype == torch.float16 and fp16_channels_last:
        return torch.channels_last
    if device.type == 'cpu' and FAST_PATH['channels_last'] and resolution >= 8:
        return torch.channels_last
    return torch.contiguous_format

def _use_grouped_conv(training, dtype, batch_size, device):
    """Default of fused_modconv: one grouped convolution with per-sample weights, or the shared weight?

    Training always takes the shared weight (cheaper backward, no fp16 overflow in per-sample weights).
    On GPUs inference groups fp32 batches and single samples; on CPUs a grouped convolution is several
    times slower than a plain one, so the fast path groups only a single sample.
    """
    if training:
        return False
    with misc.suppress_tracer_warnings():  # a constant per trace
        single = int(batch_size) == 1
    if device.type == 'cpu' and FAST_PATH['shared_weight_cpu']:
        return single
    return single or dtype == torch.float32

#----------------------------------------------------------------------------
# Modulated convolution (StyleGAN2 eqs. 1-3): w'_oik = s_i w_oik, then w''_oik = w'_oik / sqrt(sum_ik w'^2 + eps).

def _demodulation(weight, styles):
    """[N, O] = 1 / sqrt(sum over i, kh, kw of (styles[n, i] * weight[o, i, kh, kw])^2 + 1e-8)."""
    if FAST_PATH['matmul_demod']:
        energy = styles.square() @ weight.square().sum(dim=[2, 3]).t()
    else:
        per_sample = weight.unsqueeze(0) * styles[:, None, :, None, None]
        energy = per_sample.square().sum(dim=[2, 3, 4])
    return (energy + 1e-8).rsqrt()

def _fp16_safe(weight, styles):
    """Scale weight and styles to at most 1 in magnitude (demodulation cancels the scale) so fp16 cannot overflow."""
    fan_in = weight[0].numel()
    weight = weight * (1 / np.sqrt(fan_in)) / weight.abs().amax(dim=[1, 2, 3], keepdim=True)
    styles = styles / styles.abs().amax(dim=1, keepdim=True)
    return weight, styles

def _shared_weight_modconv(x, weight, styles, noise, demodulate, conv):
    """Modulate the input channels, convolve with the shared weight, demodulate the output channels."""
    coefs = _demodulation(weight, styles) if demodulate else None
    x = conv(x * styles.to(x.dtype)[:, :, None, None], weight.to(x.dtype))
    if noise is not None:
        noise = noise.to(x.dtype)
    if coefs is None:
        return x if noise is None else x.add_(noise)
    coefs = coefs.to(x.dtype)[:, :, None, None]
    return x * coefs if noise is None else fma.fma(x, coefs, noise)

def _grouped_modconv(x, weight, styles, noise, demodulate, conv):
    """Build every sample's weight and run one grouped convolution over the batch folded into channels."""
    n, out_channels = x.shape[0], weight.shape[0]
    if not demodulate:
        per_sample = weight.unsqueeze(0) * styles[:, None, :, None, None]
    elif FAST_PATH['matmul_demod']:
        scale = styles.unsqueeze(1) * _demodulation(weight, styles).unsqueeze(2)  # [N, O, I]
        per_sample = weight.unsqueeze(0) * scale[:, :, :, None, None]
    else:
        per_sample = weight.unsqueeze(0) * styles[:, None, :, None, None]
        per_sample = per_sample * (per_sample.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    with misc.suppress_tracer_warnings():  # a constant per trace
        n = int(n)
    kernels = per_sample.reshape(n * out_channels, *weight.shape[1:]).to(x.dtype)
    y = conv(x.reshape(1, -1, *x.shape[2:]), kernels, groups=n)
    y = y.reshape(n, out_channels, *y.shape[2:])
    return y if noise is None else y.add_(noise.to(y.dtype))

def modulated_conv2d(
    x,                      # [N, I, H, W] activations
    weight,                 # [O, I, kh, kw] shared weight
    styles,                 # [N, I] per-sample scales of the input channels
    noise=None,             # added after (de)modulation, broadcastable to the output
    up=1,                   # integer upsampling factor
    down=1,                 # integer downsampling factor
    padding=0,              # padding relative to the upsampled image
    resample_filter=None,   # FIR filter from upfirdn2d.setup_filter() for up/down
    demodulate=True,        # normalise each output channel to unit expected variance
    flip_weight=True,       # True = correlation (torch's conv2d), False = convolution
    fused_modconv=True,     # True = grouped convolution with per-sample weights
):
    """StyleGAN2's weight (de)modulation, computed either with per-sample weights or the shared one."""
    in_channels = weight.shape[1]
    misc.assert_shape(x, [styles.shape[0], in_channels, None, None])
    misc.assert_shape(styles, [None, in_channels])
    if demodulate and x.dtype == torch.float16:
        weight, styles = _fp16_safe(weight, styles)

    def conv(inp, kernels, groups=1):
        return conv2d_resample.conv2d_resample(x=inp, w=kernels, f=resample_filter, up=up, down=down,
            padding=padding, groups=groups, flip_weight=flip_weight)

    pointwise = weight.shape[2:] == (1, 1) and up == 1 and down == 1 and padding == 0
    if pointwise and x.device.type == 'cpu' and FAST_PATH['pointwise_matmul']:
        return _pointwise_modconv(x, weight, styles, noise, demodulate)
    path = _grouped_modconv if fused_modconv else _shared_weight_modconv
    return path(x, weight, styles, noise, demodulate, conv)

def _pointwise_modconv(x, weight, styles, noise, demodulate):
    """A 1x1 modulated convolution (toRGB) as one batched matrix product with the per-sample [out, in] weights,
    which are small: no pass over the activations to modulate them, and either memory layout is read in place."""
    per_sample = weight[:, :, 0, 0].unsqueeze(0) * styles.unsqueeze(1)  # [N, O, I]
    if demodulate:
        per_sample = per_sample * _demodulation(weight, styles).unsqueeze(2)
    per_sample = per_sample.to(x.dtype)
    n, _, height, width = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = torch.bmm(x.permute(0, 2, 3, 1).reshape(n, height * width, -1), per_sample.transpose(1, 2))
        y = y.view(n, height, width, -1).permute(0, 3, 1, 2)
    else:
        y = torch.bmm(per_sample, x.reshape(n, x.shape[1], height * width)).view(n, -1, height, width)
    return y if noise is None else y.add_(noise.to(y.dtype))

#----------------------------------------------------------------------------

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and an embedded label c) -> w by an MLP; w_avg tracking; broadcast to num_ws; truncation."""

    def __init__(self,
        z_dim,                  # latent z size, 0 = none
        c_dim,                  # label c size, 0 = unconditional
        w_dim,                  # w size
        num_ws,                 # copies of w to output, None = a single [N, w_dim] w
        num_layers=8,           # dense layers
        embed_features=None,    # label embedding size (default w_dim)
        layer_features=None,    # hidden width (default w_dim)
        activation='lrelu',     # activation of the dense layers
        lr_multiplier=0.01,     # learning-rate multiplier of the dense layers
        w_avg_beta=0.995,       # decay of the running mean of w, None = no tracking
    ):
        from networks import layers
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        hidden = w_dim if layer_features is None else layer_features
        widths = [z_dim + embed_features] + [hidden] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = layers.FullyConnectedLayer(c_dim, embed_features)
        for idx, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            self.add_module(f'fc{idx}', layers.FullyConnectedLayer(fan_in, fan_out, activation=activation,
                lr_multiplier=lr_multiplier))
        self.tracks_w_avg = num_ws is not None and w_avg_beta is not None
        if self.tracks_w_avg:
            self.register_buffer('w_avg', torch.zeros(w_dim))

    def _mlp_input(self, z, c):
        """Pixel-normed z and pixel-normed label embedding, side by side."""
        parts = []
        for value, size, embed in ((z, self.z_dim, None), (c, self.c_dim, getattr(self, 'embed', None))):
            if size > 0:
                misc.assert_shape(value, [None, size])
                value = value.float()
                parts.append(normalize_2nd_moment(value if embed is None else embed(value)))
        return torch.cat(parts, dim=1)

    def _truncate(self, ws, psi, cutoff):
        """Truncation trick: w_avg + psi * (w - w_avg), for the first `cutoff` ws only if given."""
        if psi == 1:
            return ws
        assert self.w_avg_beta is not None, 'truncation needs the tracked w_avg'
        pulled = self.w_avg.lerp(ws, psi)
        if self.num_ws is None or cutoff is None:
            return pulled
        return torch.cat([pulled[:, :cutoff], ws[:, cutoff:]], dim=1)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None):
        # StyleGAN2-ADA updates w_avg in training mode unless skip_w_avg_update is set; its successors ask
        # for the update with update_emas. Either spelling works here.
        if update_emas is None:
            update_emas = self.training and not skip_w_avg_update
        w = self._mlp_input(z, c)
        for layer in [getattr(self, f'fc{idx}') for idx in range(self.num_layers)]:
            w = layer(w)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.lerp_(w.detach().mean(dim=0), 1 - self.w_avg_beta)
        ws = w if self.num_ws is None else w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return self._truncate(ws, truncation_psi, truncation_cutoff)

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'

#----------------------------------------------------------------------------

def _add_modulated_weights(module, in_channels, out_channels, w_dim, kernel_size, channels_last):
    """The parameters every modulated convolution has: affine (w -> styles, starting at 1), weight, bias."""
    from networks import layers
    module.affine = layers.FullyConnectedLayer(w_dim, in_channels, bias_init=1)
    module.weight = torch.nn.Parameter(layers.conv_kernel(out_channels, in_channels, kernel_size, channels_last))
    module.bias = torch.nn.Parameter(torch.zeros(out_channels))

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated convolution (optionally 2x upsampling), per-pixel noise, bias, activation and clamp."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation='lrelu', resample_filter=[1,3,3,1], conv_clamp=None, channels_last=False):
        from networks import layers
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.act_gain = layers.activation_gain(activation)
        layers.register_resample_filter(self, resample_filter)
        _add_modulated_weights(self, in_channels, out_channels, w_dim, kernel_size, channels_last)
        if use_noise:
            self.register_buffer('noise_const', torch.randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.tensor(0.0))

    def _noise(self, batch_size, device, noise_mode):
        if noise_mode == 'none' or not self.use_noise:
            return None
        if noise_mode == 'const':
            return self.noise_const * self.noise_strength
        fresh = torch.randn([batch_size, 1, self.resolution, self.resolution], device=device)
        return fresh * self.noise_strength

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        assert noise_mode in ('random', 'const', 'none')
        _check_maps(x, self.in_channels, self.resolution // self.up)
        x = modulated_conv2d(x=x, weight=self.weight, styles=self.affine(w),
            noise=self._noise(x.shape[0], x.device, noise_mode), up=self.up, padding=self.weight.shape[-1] // 2,
            resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, '
                f'resolution={self.resolution}, up={self.up}, activation={self.activation}')

#----------------------------------------------------------------------------

@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution to image channels; no demodulation, so the equalized-lr gain rides on the styles."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.weight_gain = (in_channels * kernel_size ** 2) ** -0.5
        _add_modulated_weights(self, in_channels, out_channels, w_dim, kernel_size, channels_last)

    def forward(self, x, w, fused_modconv=True):
        y = modulated_conv2d(x=x, weight=self.weight, styles=self.affine(w) * self.weight_gain, demodulate=False,
            fused_modconv=fused_modconv)
        return bias_act.bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of G: learned constant (4x4) or 2x-upsampling conv0, then conv1, and the RGB output.

    architecture 'skip' sums every block's upsampled RGB; 'resnet' adds a 1x1 upsampled shortcut around
    the convolutions (and only the last block has torgb); 'orig' has neither.
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
                 resample_filter=[1,3,3,1], conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 **layer_kwargs):
        from networks import layers
        assert architecture in ('orig', 'skip', 'resnet')
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        layers.register_resample_filter(self, resample_filter)

        starts_from_const = in_channels == 0
        self.num_conv = 1 if starts_from_const else 2
        self.num_torgb = 1 if (is_last or architecture == 'skip') else 0
        shared = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if starts_from_const:
            self.const = torch.nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter,
                **shared, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **shared, **layer_kwargs)
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                channels_last=self.channels_last)
        self.skip = None
        if not starts_from_const and architecture == 'resnet':
            self.skip = layers.Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                resample_filter=resample_filter, channels_last=self.channels_last)

    def _features(self, x, ws, n, dtype, layout, layer_kwargs):
        """conv0/conv1 (with the resnet shortcut) on this block's ws[0..num_conv)."""
        if self.num_conv == 1:
            x = self.const.to(dtype).unsqueeze(0).expand(n, -1, -1, -1).contiguous(memory_format=layout)
            return self.conv1(x, ws[0], **layer_kwargs)
        _check_maps(x, self.in_channels, self.resolution // 2)
        x = x.to(dtype=dtype, memory_format=layout)
        shortcut = None if self.skip is None else self.skip(x, gain=np.sqrt(0.5))
        x = self.conv0(x, ws[0], **layer_kwargs).contiguous(memory_format=layout)  # the FIR step returns NCHW
        if shortcut is None:
            return self.conv1(x, ws[1], **layer_kwargs)
        return shortcut.add_(self.conv1(x, ws[1], gain=np.sqrt(0.5), **layer_kwargs))

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        ws = ws.unbind(dim=1)
        n, device = ws[0].shape[0], ws[0].device
        dtype = _block_dtype(self.use_fp16, force_fp32, device)
        # The inference layout also when training mode runs without autograd here (G in the D phases).
        differentiated = torch.is_grad_enabled() and (any(w.requires_grad for w in ws) or (x is not None and
            x.requires_grad) or any(param.requires_grad for param in self.parameters()))
        layout = _block_layout(self.channels_last, dtype, device, self.resolution if not differentiated else 0)
        grouped = _use_grouped_conv(self.training, dtype, n, device) if fused_modconv is None else fused_modconv
        x = self._features(x, ws, n, dtype, layout, dict(fused_modconv=grouped, **layer_kwargs))

        if img is not None:
            _check_maps(img, self.img_channels, self.resolution // 2)
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.num_torgb:
            rgb = self.torgb(x, ws[self.num_conv], fused_modconv=grouped)
            rgb = rgb.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = rgb if img is None else img.add_(rgb)
        assert x.dtype == dtype and (img is None or img.dtype == torch.float32)
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'

#----------------------------------------------------------------------------

def _channels_per_resolution(resolutions, channel_base, channel_max):
    return {res: min(channel_base // res, channel_max) for res in resolutions}

def _fp16_threshold(img_resolution, num_fp16_res):
    """Lowest resolution that runs in fp16 when the top `num_fp16_res` resolutions do (never below 8)."""
    return max(img_resolution * 2 // (2 ** num_fp16_res), 8)

def _log2(resolution):
    return resolution.bit_length() - 1

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution], about [-1, 1]."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0, 'a power of two >= 4'
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = _log2(img_resolution)
        self.img_channels = img_channels
        self.block_resolutions = [4 << i for i in range(self.img_resolution_log2 - 1)]
        channels = _channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        fp16_from = _fp16_threshold(img_resolution, num_fp16_res)
        for res in self.block_resolutions:
            self.add_module(f'b{res}', SynthesisBlock(channels.get(res // 2, 0), channels[res], w_dim=w_dim,
                resolution=res, img_channels=img_channels, is_last=(res == img_resolution),
                use_fp16=(res >= fp16_from), **block_kwargs))
        # A block reads its convs' ws and, for torgb, the next one, which is also the next block's first w;
        # only the last block's torgb w is its own.
        blocks = self._blocks()
        self.num_ws = sum(block.num_conv for block in blocks) + blocks[-1].num_torgb

    def _blocks(self):
        return [getattr(self, f'b{res}') for res in self.block_resolutions]

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.float()
        x = img = None
        first = 0
        for block in self._blocks():
            x, img = block(x, img, ws.narrow(1, first, block.num_conv + block.num_torgb), **block_kwargs)
            first += block.num_conv
        return img

    def extra_repr(self):
        return (f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, '
                f'img_channels={self.img_channels}')

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(torch.nn.Module):
    """G(z, c) = synthesis(mapping(z, c)): NCHW images in about [-1, 1]."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            **synthesis_kwargs)
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.synthesis.num_ws,
            **mapping_kwargs)
        self.num_ws = self.mapping.num_ws

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None,
                **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
            skip_w_avg_update=skip_w_avg_update, update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of D: fromrgb (first block, or every block in 'skip'), conv0, 2x-downsampling conv1.

    'resnet' adds a 1x1 downsampling shortcut; 'skip' also downsamples the image for the next fromrgb.
    Layers are numbered across D from the input; the first `freeze_layers` are frozen (Freeze-D).
    """

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture='resnet', activation='lrelu', resample_filter=[1,3,3,1], conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        from networks import layers
        assert in_channels in (0, tmp_channels)
        assert architecture in ('orig', 'skip', 'resnet')
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.reads_image = in_channels == 0 or architecture == 'skip'
        layers.register_resample_filter(self, resample_filter)

        act = dict(activation=activation, conv_clamp=conv_clamp)
        wanted = [('fromrgb', (img_channels, tmp_channels, 1), act)] if self.reads_image else []
        wanted.append(('conv0', (tmp_channels, tmp_channels, 3), act))
        wanted.append(('conv1', (tmp_channels, out_channels, 3), dict(down=2, resample_filter=resample_filter, **act)))
        if architecture == 'resnet':
            wanted.append(('skip', (tmp_channels, out_channels, 1), dict(down=2, bias=False, resample_filter=resample_filter)))
        for idx, (name, sizes, kwargs) in enumerate(wanted):
            frozen = first_layer_idx + idx < freeze_layers
            self.add_module(name, layers.Conv2dLayer(*sizes, trainable=not frozen, channels_last=self.channels_last,
                **kwargs))
        self.num_layers = len(wanted)

    def forward(self, x, img, force_fp32=False):
        device = (img if x is None else x).device
        dtype = _block_dtype(self.use_fp16, force_fp32, device)
        layout = _block_layout(self.channels_last, dtype, device)
        if x is not None:
            _check_maps(x, self.in_channels, self.resolution)
            x = x.to(dtype=dtype, memory_format=layout)
        if self.reads_image:
            _check_maps(img, self.img_channels, self.resolution)
            img = img.to(dtype=dtype, memory_format=layout)
            features = self.fromrgb(img)
            x = features if x is None else x + features
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        main = self.conv0(x)
        if self.architecture != 'resnet':
            x = self.conv1(main)
        else:
            x = self.skip(x, gain=np.sqrt(0.5)).add_(self.conv1(main, gain=np.sqrt(0.5)))
        assert x.dtype == dtype
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 end of D: minibatch stddev, 3x3 conv, dense, output; conditional D projects onto cmap."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture='resnet', mbstd_group_size=4,
                 mbstd_num_channels=1, activation='lrelu', conv_clamp=None):
        from networks import layers
        assert architecture in ('orig', 'skip', 'resnet')
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        self.fromrgb = None
        if architecture == 'skip':
            self.fromrgb = layers.Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = None
        if mbstd_num_channels > 0:
            self.mbstd = layers.MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
        self.conv = layers.Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
            activation=activation, conv_clamp=conv_clamp)
        self.fc = layers.FullyConnectedLayer(in_channels * resolution * resolution, in_channels, activation=activation)
        self.out = layers.FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x, img, cmap, force_fp32=False):
        del force_fp32  # the epilogue is always float32
        as_fp32 = dict(dtype=torch.float32, memory_format=torch.contiguous_format)
        if x is not None:  # None only in a 4x4 D, whose image enters through fromrgb
            _check_maps(x, self.in_channels, self.resolution)
            x = x.to(**as_fp32)
        if self.fromrgb is not None:
            _check_maps(img, self.img_channels, self.resolution)
            features = self.fromrgb(img.to(**as_fp32))
            x = features if x is None else x + features
        x = x if self.mbstd is None else self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim:
            # Projection discriminator (Miyato & Koyama 2018), scaled to keep unit variance.
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) / np.sqrt(self.cmap_dim)
        assert x.dtype == torch.float32
        return x

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, cmap_dim={self.cmap_dim}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """D(img, c) -> logits [N, 1]; a label enters through its own mapping network and the projection."""

    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs={},
                 mapping_kwargs={}, epilogue_kwargs={}):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = _log2(img_resolution)
        self.img_channels = img_channels
        self.block_resolutions = [img_resolution >> i for i in range(self.img_resolution_log2 - 2)]
        channels = _channels_per_resolution(self.block_resolutions + [4], channel_base, channel_max)
        fp16_from = _fp16_threshold(img_resolution, num_fp16_res)
        cmap_dim = 0 if c_dim == 0 else (channels[4] if cmap_dim is None else cmap_dim)

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(0 if res == img_resolution else channels[res], channels[res],
                channels[res // 2], resolution=res, first_layer_idx=layer_idx, use_fp16=(res >= fp16_from),
                **block_kwargs, **common)
            self.add_module(f'b{res}', block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                **mapping_kwargs)
        # The official D starts at 8x8. A 4x4 D has no blocks, so its image enters the epilogue's fromrgb.
        if not self.block_resolutions:
            common['architecture'] = 'skip'
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img, c, **block_kwargs):
        x = None
        for block in [getattr(self, f'b{res}') for res in self.block_resolutions]:
            x, img = block(x, img, **block_kwargs)
        return self.b4(x, img, self.mapping(None, c) if self.c_dim else None)

    def extra_repr(self):
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'

#----------------------------------------------------------------------------
# HistoSynth — see README.md.
