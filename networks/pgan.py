"""Progressive GAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and Variation").

Both networks hold every level from 4x4 up to the full resolution R; `set_lod` picks the level that is
trained now (see networks/progressive.py). Per the paper: equalized learning rate in every layer (the
layer kit's dense and conv layers), pixel-wise feature normalisation after every generator conv, a
minibatch-stddev map before the discriminator's last 4x4 conv, leaky ReLU 0.2, nearest-neighbour
up-sampling, average-pool down-sampling, 1x1 toRGB / fromRGB per level. The paper's level width is
min(8192 / 2**stage, 512) with stage = log2(resolution) - 1 (512 channels up to 32x32, then 256, 128,
64 ...); written as min(channel_base / resolution, channel_max) with channel_base = 16384 it has the
same meaning as StyleGAN2's channel_base, so train.py's --cbase / --cmax narrow every family alike.

The networks are unconditional. The generator's `truncation_psi` scales the normalised latent towards
0 (its only truncation knob); `noise_mode` is accepted and ignored (there is no noise input).
"""

import numpy as np
import torch

import dnnlib
from networks import layers, progressive
from torch_utils import persistence
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------

def level_channels(resolution, channel_base, channel_max):
    """Feature maps of the level at `resolution`: min(channel_base / resolution, channel_max), at least 1."""
    return max(min(channel_base // resolution, channel_max), 1)


def require_unconditional(family, c_dim):
    if c_dim:
        raise dnnlib.util.UserError(f'{family} is an unconditional model; train it without --cond')

#----------------------------------------------------------------------------

@persistence.persistent_class
class GeneratorBlock(torch.nn.Module):
    """One level: (4x4: dense from z | otherwise: 2x nearest up + 3x3 conv) and a second 3x3 conv, with toRGB."""

    def __init__(self, in_channels, out_channels, resolution, img_channels, z_dim=None):
        super().__init__()
        self.resolution = resolution
        self.out_channels = out_channels
        if resolution == 4:
            # The paper's first layer is a 4x4 "transposed conv" of a 1x1 latent, i.e. a dense layer.
            self.dense = layers.FullyConnectedLayer(z_dim, out_channels * 16, activation='lrelu')
        else:
            self.conv0 = layers.Conv2dLayer(in_channels, out_channels, kernel_size=3, activation='lrelu')
        self.conv1 = layers.Conv2dLayer(out_channels, out_channels, kernel_size=3, activation='lrelu')
        self.torgb = layers.Conv2dLayer(out_channels, img_channels, kernel_size=1)

    def forward(self, x):
        if self.resolution == 4:
            x = progressive.pixel_norm(self.dense(x).reshape(-1, self.out_channels, 4, 4))
        else:
            x = progressive.pixel_norm(self.conv0(progressive.upscale(x, 2)))
        return progressive.pixel_norm(self.conv1(x))

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(torch.nn.Module):
    """z -> image [N, img_channels, R, R] in about [-1, 1], always at full resolution R."""

    def __init__(self,
        z_dim,                  # Latent size (512 in the paper).
        c_dim,                  # Label size; must be 0 (unconditional).
        img_resolution,         # Full output resolution R (power of two).
        img_channels,           # Output colour channels.
        channel_base = 16384,   # Level width = min(channel_base / resolution, channel_max) (paper: 8192 / 2**stage).
        channel_max  = 512,     # Widest level.
    ):
        super().__init__()
        require_unconditional('PGAN', c_dim)
        progressive.check_resolution('PGAN', img_resolution)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        in_channels = None
        for res in self.resolutions:
            out_channels = level_channels(res, channel_base, channel_max)
            setattr(self, f'b{res}', GeneratorBlock(in_channels, out_channels, res, img_channels, z_dim=z_dim))
            in_channels = out_channels
        self.register_buffer('lod', torch.zeros([]))

    def set_lod(self, lod):
        self.lod.fill_(float(lod))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode='const', force_fp32=False, **_kwargs):
        x = progressive.pixel_norm(z.to(torch.float32)) * truncation_psi
        return progressive.grow_image(self, x, lambda block, _index, x: block(x))

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One level above 4x4: fromRGB, 3x3 conv, 3x3 conv to the next width, 2x2 average pool."""

    def __init__(self, in_channels, out_channels, img_channels, blur_filter=None):
        super().__init__()
        self.fromrgb = layers.Conv2dLayer(img_channels, in_channels, kernel_size=1, activation='lrelu')
        self.conv0 = layers.Conv2dLayer(in_channels, in_channels, kernel_size=3, activation='lrelu')
        self.conv1 = layers.Conv2dLayer(in_channels, out_channels, kernel_size=3, activation='lrelu')
        # StyleGAN v1 low-pass filters before every down-sampling; PGAN does not.
        self.register_buffer('blur_filter', upfirdn2d.setup_filter(blur_filter) if blur_filter is not None else None)

    def forward(self, x):
        x = self.conv0(x)
        if self.blur_filter is not None:
            x = upfirdn2d.filter2d(x, self.blur_filter)
        return progressive.downscale(self.conv1(x), 2)


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 level: fromRGB, minibatch stddev, 3x3 conv, dense, dense to one critic value."""

    def __init__(self, channels, img_channels, mbstd_group_size=4):
        super().__init__()
        self.fromrgb = layers.Conv2dLayer(img_channels, channels, kernel_size=1, activation='lrelu')
        self.mbstd = layers.MinibatchStdLayer(group_size=mbstd_group_size)
        self.conv = layers.Conv2dLayer(channels + 1, channels, kernel_size=3, activation='lrelu')
        self.fc = layers.FullyConnectedLayer(channels * 16, channels, activation='lrelu')
        self.out = layers.FullyConnectedLayer(channels, 1)

    def forward(self, x):
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))

#----------------------------------------------------------------------------

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """image [N, C, R, R] -> critic value [N, 1]; reads the image at the current lod's resolution."""

    def __init__(self,
        c_dim,                  # Label size; must be 0 (unconditional).
        img_resolution,         # Full input resolution R (power of two).
        img_channels,           # Input colour channels.
        channel_base = 16384,   # Level width numerator, as in the generator.
        channel_max  = 512,     # Widest level.
        mbstd_group_size = 4,   # Minibatch-stddev group (the batch must be a multiple of it, or smaller).
        blur_filter  = None,    # Low-pass filter before each down-sampling (StyleGAN v1: [1, 2, 1]).
    ):
        super().__init__()
        require_unconditional('PGAN', c_dim)
        progressive.check_resolution('PGAN', img_resolution)
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.resolutions = [2 ** i for i in range(int(np.log2(img_resolution)), 2, -1)]
        for res in self.resolutions:
            setattr(self, f'b{res}', DiscriminatorBlock(level_channels(res, channel_base, channel_max),
                level_channels(res // 2, channel_base, channel_max), img_channels, blur_filter=blur_filter))
        self.b4 = DiscriminatorEpilogue(level_channels(4, channel_base, channel_max), img_channels,
            mbstd_group_size=mbstd_group_size)
        self.register_buffer('lod', torch.zeros([]))

    def set_lod(self, lod):
        self.lod.fill_(float(lod))

    def forward(self, img, c=None, **_kwargs):
        level, alpha = progressive.split_lod(self.lod, self.img_resolution)
        fine_res = self.img_resolution >> level
        img = progressive.downscale(img.to(torch.float32), 2 ** level)
        x = getattr(self, f'b{fine_res}').fromrgb(img)
        for res in [r for r in self.resolutions if r <= fine_res]:
            x = getattr(self, f'b{res}')(x)
            if res == fine_res and alpha > 0:
                # The coarser level's fromRGB reads the half-size image; its output fades out.
                coarse = getattr(self, f'b{res // 2}').fromrgb(progressive.downscale(img, 2))
                x = progressive.crossfade(x, coarse, alpha)
        return self.b4(x)

#----------------------------------------------------------------------------
