"""WGAN-GP residual networks at 64x64 (Gulrajani et al. 2017), as used by f-AnoGAN (Schlegl et al. 2019), in RGB.

Generator: z (128) -> dense to 4x4 x 8*dim -> four up-sampling residual blocks ending at 8, 4, 2, 1 x dim
channels (4x4 up to 64x64) -> BatchNorm, ReLU, 3x3 conv to RGB, tanh.
Critic: 3x3 conv to dim -> four down-sampling residual blocks ending at 2, 4, 8, 8 x dim channels (64x64
down to 4x4) -> the 4 * 4 * 8 * dim = 8192 features (`features`, used by the f-AnoGAN encoder and anomaly
score) -> dense to one critic value. dim = 64.

Residual blocks are pre-activation (norm, ReLU, conv, norm, ReLU, conv) with a 1x1-conv shortcut; the
generator's resample by nearest-neighbour up-sampling before the first conv, the critic's by 2x2 mean
pooling after the last one. The generator normalises with BatchNorm, the critic with layer norm over
(C, H, W) per sample, since batch statistics would break the per-sample gradient penalty.

The networks are unconditional and 64x64 only. `truncation_psi` scales z towards 0; `noise_mode` is ignored.
"""

import torch

from torch_utils import persistence

#----------------------------------------------------------------------------

@persistence.persistent_class
class LayerNorm2d(torch.nn.Module):
    """Normalise each sample over all of (C, H, W), then a learned per-channel scale and offset."""

    def __init__(self, channels):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones([channels]))
        self.bias = torch.nn.Parameter(torch.zeros([channels]))

    def forward(self, x):
        x = torch.nn.functional.layer_norm(x, x.shape[1:])
        return x * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


@persistence.persistent_class
class ResidualBlock(torch.nn.Module):
    """Pre-activation residual block that doubles (resample='up') or halves (resample='down') the size."""

    def __init__(self, in_channels, out_channels, resample):
        super().__init__()
        assert resample in ('up', 'down')
        self.resample = resample
        norm = torch.nn.BatchNorm2d if resample == 'up' else LayerNorm2d
        mid_channels = out_channels if resample == 'up' else in_channels
        self.norm0 = norm(in_channels)
        self.conv0 = torch.nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.norm1 = norm(mid_channels)
        self.conv1 = torch.nn.Conv2d(mid_channels, out_channels, 3, padding=1)
        self.shortcut = torch.nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        if self.resample == 'up':
            shortcut = self.shortcut(torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest'))
            y = torch.relu(self.norm0(x))
            y = self.conv0(torch.nn.functional.interpolate(y, scale_factor=2, mode='nearest'))
            y = self.conv1(torch.relu(self.norm1(y)))
        else:
            shortcut = torch.nn.functional.avg_pool2d(self.shortcut(x), 2)
            y = self.conv0(torch.relu(self.norm0(x)))
            y = torch.nn.functional.avg_pool2d(self.conv1(torch.relu(self.norm1(y))), 2)
        return shortcut + y

#----------------------------------------------------------------------------

def _check(img_resolution, c_dim):
    from networks.dcgan import check_64
    check_64('WGAN-GP', img_resolution, c_dim)


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self,
        z_dim,                  # Latent size (128 in f-AnoGAN).
        c_dim,                  # Label size; must be 0.
        img_resolution,         # Must be 64.
        img_channels,           # Output colour channels.
        dim = 64,               # Base width DIM; the blocks use 8, 4, 2, 1 x DIM.
    ):
        super().__init__()
        _check(img_resolution, c_dim)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.dim = dim
        self.fc = torch.nn.Linear(z_dim, 4 * 4 * 8 * dim)
        widths = [8 * dim, 8 * dim, 4 * dim, 2 * dim, dim]
        self.blocks = torch.nn.Sequential(*[ResidualBlock(cin, cout, 'up') for cin, cout in zip(widths[:-1], widths[1:])])
        self.norm = torch.nn.BatchNorm2d(dim)
        self.torgb = torch.nn.Conv2d(dim, img_channels, 3, padding=1)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode='const', force_fp32=False, **_kwargs):
        x = self.fc(z.to(torch.float32) * truncation_psi).reshape(-1, 8 * self.dim, 4, 4)
        x = torch.relu(self.norm(self.blocks(x)))
        return torch.tanh(self.torgb(x))


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self,
        c_dim,                  # Label size; must be 0.
        img_resolution,         # Must be 64.
        img_channels,           # Input colour channels.
        dim = 64,               # Base width DIM; the blocks use 2, 4, 8, 8 x DIM.
    ):
        super().__init__()
        _check(img_resolution, c_dim)
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.fromrgb = torch.nn.Conv2d(img_channels, dim, 3, padding=1)
        widths = [dim, 2 * dim, 4 * dim, 8 * dim, 8 * dim]
        self.blocks = torch.nn.Sequential(*[ResidualBlock(cin, cout, 'down') for cin, cout in zip(widths[:-1], widths[1:])])
        self.out = torch.nn.Linear(4 * 4 * 8 * dim, 1)

    def features(self, img, c=None):
        """The critic's last hidden layer, flattened: [N, 4 * 4 * 8 * dim] (8192 for dim = 64)."""
        return self.blocks(self.fromrgb(img.to(torch.float32))).flatten(1)

    def logits_from_features(self, features):
        """The critic value [N, 1] from `features` (the anomaly score needs both, from one pass)."""
        return self.out(features)

    def forward(self, img, c=None, **_kwargs):
        return self.logits_from_features(self.features(img, c))

#----------------------------------------------------------------------------
