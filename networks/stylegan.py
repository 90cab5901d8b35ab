"""StyleGAN v1 (Karras et al. 2019, "A Style-Based Generator Architecture for Generative Adversarial Networks").

Generator: an 8-layer mapping network (leaky ReLU, learning rate x0.01, pixel-norm on z) turns z into w;
the synthesis network starts from a learned constant 4x4 input and, in every layer, adds per-pixel noise
(scaled by a learned per-channel strength), a bias and leaky ReLU, then AdaIN: instance normalisation
followed by a per-channel scale and offset computed from w by a learned affine map. Each level has two
such layers (up-sampling levels: nearest 2x up, 3x3 conv, [1, 2, 1] blur) and a 1x1 toRGB. Training grows
progressively exactly as PGAN (networks/progressive.py: `set_lod`, lod buffer, cross-fade of the levels).
Mixing regularisation (0.9) happens in the loss (training.gan_losses.NonSaturatingLoss).

Truncation: the paper generates with psi = 0.7 on the first 8 ws only (the coarse layers). The generator
keeps that cutoff as its default (`truncation_cutoff=None` means the constructor's 8); psi stays 1 unless
asked for, so `generate.py --trunc=0.7` gives the paper's setting.

Discriminator: PGAN's with a [1, 2, 1] blur before every down-sampling (the paper's only change to it).
The networks are unconditional.
"""

import numpy as np
import torch

from networks import layers, pgan, progressive
from torch_utils import misc, persistence
from torch_utils.ops import bias_act, upfirdn2d

#----------------------------------------------------------------------------

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z -> w broadcast to [N, num_ws, w_dim]; tracks the average w for truncation."""

    def __init__(self,
        z_dim,                      # Latent size.
        w_dim,                      # Intermediate latent size.
        num_ws,                     # Copies of w handed to the synthesis network.
        num_layers          = 8,    # Dense layers.
        lr_multiplier       = 0.01, # Learning-rate multiplier of the mapping layers.
        w_avg_beta          = 0.995,# Decay of the running average of w.
        truncation_cutoff   = 8,    # Layers truncated by default (the paper's coarse styles).
    ):
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.truncation_cutoff = truncation_cutoff
        for layer_idx in range(num_layers):
            setattr(self, f'fc{layer_idx}', layers.FullyConnectedLayer(z_dim if layer_idx == 0 else w_dim, w_dim,
                activation='lrelu', lr_multiplier=lr_multiplier))
        self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None):
        if update_emas is None:
            update_emas = self.training and not skip_w_avg_update
        w = progressive.pixel_norm(z.to(torch.float32))
        for layer_idx in range(self.num_layers):
            w = getattr(self, f'fc{layer_idx}')(w)
        if update_emas:
            self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
            truncated = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws

#----------------------------------------------------------------------------

@persistence.persistent_class
class StyleEpilogue(torch.nn.Module):
    """After a conv (or the constant): + noise * strength, + bias, leaky ReLU, instance norm, AdaIN style."""

    def __init__(self, channels, w_dim, resolution):
        super().__init__()
        self.noise_strength = torch.nn.Parameter(torch.zeros([channels]))
        self.bias = torch.nn.Parameter(torch.zeros([channels]))
        self.affine = layers.FullyConnectedLayer(w_dim, channels * 2)  # -> (scale - 1, offset) per channel
        self.register_buffer('noise_const', torch.randn([resolution, resolution]))

    def forward(self, x, w, noise_mode='random'):
        if noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, x.shape[2], x.shape[3]], device=x.device)
            x = x + noise * self.noise_strength.reshape(1, -1, 1, 1)
        elif noise_mode == 'const':
            x = x + self.noise_const * self.noise_strength.reshape(1, -1, 1, 1)
        x = bias_act.bias_act(x, self.bias, act='lrelu')
        x = x - x.mean(dim=[2, 3], keepdim=True)
        x = x * (x.square().mean(dim=[2, 3], keepdim=True) + 1e-8).rsqrt()
        scale, offset = self.affine(w).unsqueeze(2).unsqueeze(3).chunk(2, dim=1)
        return x * (scale + 1) + offset


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One level: two styled layers (the 4x4 level starts from a learned constant) and a 1x1 toRGB."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, blur_filter=[1, 2, 1]):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = torch.nn.Parameter(torch.ones([out_channels, 4, 4]))
        else:
            self.conv0 = layers.Conv2dLayer(in_channels, out_channels, kernel_size=3, bias=False)
            self.register_buffer('blur_filter', upfirdn2d.setup_filter(blur_filter))
        self.style0 = StyleEpilogue(out_channels, w_dim, resolution)
        self.conv1 = layers.Conv2dLayer(out_channels, out_channels, kernel_size=3, bias=False)
        self.style1 = StyleEpilogue(out_channels, w_dim, resolution)
        self.torgb = layers.Conv2dLayer(out_channels, img_channels, kernel_size=1)

    def forward(self, x, ws, noise_mode='random'):
        if self.resolution == 4:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = upfirdn2d.filter2d(self.conv0(progressive.upscale(x, 2)), self.blur_filter)
        x = self.style0(x, ws[:, 0], noise_mode=noise_mode)
        return self.style1(self.conv1(x), ws[:, 1], noise_mode=noise_mode)

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image at full resolution; levels above the current lod are not run."""

    def __init__(self,
        w_dim,                  # Intermediate latent size.
        img_resolution,         # Full output resolution R (power of two).
        img_channels,           # Output colour channels.
        channel_base = 16384,   # Level width = min(channel_base / resolution, channel_max), as in PGAN.
        channel_max  = 512,     # Widest level.
    ):
        super().__init__()
        progressive.check_resolution('StyleGAN', img_resolution)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        self.num_ws = 2 * len(self.resolutions)
        in_channels = None
        for res in self.resolutions:
            out_channels = pgan.level_channels(res, channel_base, channel_max)
            setattr(self, f'b{res}', SynthesisBlock(in_channels, out_channels, w_dim, res, img_channels))
            in_channels = out_channels
        self.register_buffer('lod', torch.zeros([]))

    def set_lod(self, lod):
        self.lod.fill_(float(lod))

    def forward(self, ws, noise_mode='random', force_fp32=False, **_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        return progressive.grow_image(self, None, lambda block, index, x: block(
            x, ws[:, 2 * index: 2 * index + 2], noise_mode=noise_mode))

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(torch.nn.Module):
    """G(z, c) = synthesis(mapping(z)); images NCHW in about [-1, 1] at full resolution."""

    def __init__(self,
        z_dim,                  # Latent size (512 in the paper).
        c_dim,                  # Label size; must be 0 (unconditional).
        w_dim,                  # Intermediate latent size (512 in the paper).
        img_resolution,         # Full output resolution R.
        img_channels,           # Output colour channels.
        mapping_kwargs   = {},  # Passed on to the mapping network (num_layers, lr_multiplier, ...).
        synthesis_kwargs = {},  # Passed on to the synthesis network (channel_base, channel_max).
    ):
        super().__init__()
        pgan.require_unconditional('StyleGAN', c_dim)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    @property
    def lod(self):
        """The synthesis network's lod buffer (the one the schedule sets)."""
        return self.synthesis.lod

    @property
    def w_avg(self):
        return self.mapping.w_avg

    def set_lod(self, lod):
        self.synthesis.set_lod(lod)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None,
            **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
            skip_w_avg_update=skip_w_avg_update, update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)

#----------------------------------------------------------------------------

def Discriminator(c_dim, img_resolution, img_channels, blur_filter=[1, 2, 1], **pgan_kwargs):
    """StyleGAN v1's discriminator: networks.pgan.Discriminator with a [1, 2, 1] blur before down-sampling.

    A factory rather than a subclass so the pickled network is the PGAN class it really is.
    """
    return pgan.Discriminator(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
        blur_filter=blur_filter, **pgan_kwargs)

#----------------------------------------------------------------------------
