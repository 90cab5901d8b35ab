"""Encoders that map an image to a generator's latent: the izi_f encoder of f-AnoGAN (Schlegl et al. 2019).

- `ResidualEncoder`: for generators with a W space (StyleGAN2, StyleGAN). Residual conv blocks halve the
  resolution down to 4x4, a linear layer predicts an offset from the generator's mean w, one w for all
  layers or one per layer (W+). Output [N, 1 or num_ws, w_dim].
- `CriticEncoder`: for WGAN-GP (and other z-space generators). The same stack as the WGAN-GP critic
  (5x5 stride-2 convolutions, width doubling from `dim` to 8 * dim, leaky ReLU), then a linear layer into z
  with tanh, as f-AnoGAN does. Output [N, z_dim].

Both record what they were built for (`latent_space`, dimensions, resolution) so a mismatched generator is
refused before any work.
"""

import numpy as np
import torch

from torch_utils import persistence

#----------------------------------------------------------------------------

def _stage_count(img_resolution):
    """Halvings from img_resolution to 4x4."""
    count = int(np.log2(img_resolution)) - 2
    assert img_resolution == 4 * 2 ** count and count >= 1, 'encoders need a power-of-two resolution >= 8'
    return count

class _ResidualDown(torch.nn.Module):
    """Two 3x3 convolutions and a 2x average-pool, added to a pooled 1x1 shortcut; the sum is scaled to keep variance."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv0 = torch.nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = torch.nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.act = torch.nn.LeakyReLU(0.2)

    def forward(self, x):
        shortcut = self.skip(torch.nn.functional.avg_pool2d(x, 2))
        y = self.act(self.conv0(x))
        y = torch.nn.functional.avg_pool2d(self.act(self.conv1(y)), 2)
        return (y + shortcut) * np.sqrt(0.5)

@persistence.persistent_class
class ResidualEncoder(torch.nn.Module):
    latent_space = 'w'

    def __init__(self,
        img_resolution,             # Input resolution (the generator's).
        img_channels    = 3,        # Input colour channels.
        w_dim           = 512,      # Dimensionality of W.
        num_ws          = 1,        # Number of ws the generator takes.
        w_plus          = False,    # Predict one w per layer (W+) instead of one shared w?
        channel_base    = 16384,    # Channels at resolution r: min(channel_base // r, channel_max).
        channel_max     = 512,
        w_avg           = None,     # The generator's mean w; predictions are offsets from it.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.w_plus = w_plus
        self.z_dim = None
        width = lambda res: max(min(channel_base // res, channel_max), 1)
        self.fromrgb = torch.nn.Conv2d(img_channels, width(img_resolution), 1)
        blocks = []
        res = img_resolution
        for _ in range(_stage_count(img_resolution)):
            blocks.append(_ResidualDown(width(res), width(res // 2)))
            res //= 2
        self.blocks = torch.nn.Sequential(*blocks)
        self.act = torch.nn.LeakyReLU(0.2)
        self.out = torch.nn.Linear(width(4) * 16, (num_ws if w_plus else 1) * w_dim)
        torch.nn.init.zeros_(self.out.bias)
        self.out.weight.data.mul_(0.1)  # start near w_avg, where the generator makes typical images
        self.register_buffer('w_avg', torch.zeros([w_dim]) if w_avg is None else torch.as_tensor(w_avg, dtype=torch.float32).reshape(w_dim))

    def forward(self, img):
        x = self.act(self.fromrgb(img.to(torch.float32)))
        x = self.blocks(x)
        w = self.out(x.flatten(1)).reshape(img.shape[0], -1, self.w_dim)
        return w + self.w_avg

    def extra_repr(self):
        return f'img_resolution={self.img_resolution}, w_dim={self.w_dim}, num_ws={self.num_ws}, w_plus={self.w_plus}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class CriticEncoder(torch.nn.Module):
    latent_space = 'z'
    w_plus = False

    def __init__(self,
        img_resolution  = 64,       # Input resolution (the generator's).
        img_channels    = 3,
        z_dim           = 128,      # Dimensionality of z.
        dim             = 64,       # Width of the first convolution, as the critic's `dim`.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.z_dim = z_dim
        self.w_dim = None
        self.num_ws = None
        layers = []
        in_ch, out_ch = img_channels, dim
        for _ in range(_stage_count(img_resolution)):
            layers += [torch.nn.Conv2d(in_ch, out_ch, 5, stride=2, padding=2), torch.nn.LeakyReLU(0.2)]
            in_ch, out_ch = out_ch, min(out_ch * 2, 8 * dim)
        self.convs = torch.nn.Sequential(*layers)
        self.out = torch.nn.Linear(in_ch * 16, z_dim)

    def forward(self, img):
        x = self.convs(img.to(torch.float32))
        return torch.tanh(self.out(x.flatten(1)))

    def extra_repr(self):
        return f'img_resolution={self.img_resolution}, z_dim={self.z_dim}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class MirroredCriticEncoder(torch.nn.Module):
    """f-AnoGAN's izi_f encoder for any critic with `features(img, c)`: a freshly initialised copy of the critic's
    own architecture (e.g. the residual WGAN-GP critic), its features mapped linearly into z and squashed by tanh."""
    latent_space = 'z'
    w_plus = False

    def __init__(self,
        trunk,                      # A new critic of the generator's family (weights are trained from scratch).
        z_dim,                      # Dimensionality of z.
    ):
        super().__init__()
        self.trunk = trunk
        self.img_resolution = trunk.img_resolution
        self.img_channels = getattr(trunk, 'img_channels', 3)
        self.z_dim = z_dim
        self.w_dim = None
        self.num_ws = None
        with torch.no_grad():
            probe = torch.zeros([1, self.img_channels, self.img_resolution, self.img_resolution])
            num_features = trunk.features(probe, None).flatten(1).shape[1]
        self.out = torch.nn.Linear(num_features, z_dim)

    def forward(self, img):
        return torch.tanh(self.out(self.trunk.features(img.to(torch.float32), None).flatten(1)))

    def extra_repr(self):
        return f'img_resolution={self.img_resolution}, z_dim={self.z_dim}, trunk={type(self.trunk).__name__}'

#----------------------------------------------------------------------------
