"""DCGAN (Radford et al. 2016) at 64x64, the generative model of AnoGAN (Schlegl et al. 2017).

Generator: z (100) seen as a 1x1 map, then 4x4 transposed convs to 8w, 4w, 2w, w channels (4x4 up to 32x32;
stride 1 for the first, stride 2 after) each followed by BatchNorm and ReLU, and a last stride-2 transposed
conv to RGB at 64x64 with tanh. Discriminator: 4x4 stride-2 convs 3 -> w -> 2w -> 4w -> 8w (64x64 down to
4x4) with leaky ReLU 0.2 and BatchNorm on all but the first, then a 4x4 valid conv to one logit. w = 64.
Every conv weight is drawn from N(0, 0.02) and BatchNorm scales from N(1, 0.02), as the paper prescribes.

The networks are unconditional and 64x64 only. `truncation_psi` scales z towards 0; there is no noise
input, so `noise_mode` is ignored. `Discriminator.features` returns the 8w * 4 * 4 = 8192 activations
before the logit (AnoGAN's feature-matching residual).
"""

import torch

import dnnlib
from torch_utils import persistence

#----------------------------------------------------------------------------

def check_64(family, img_resolution, c_dim):
    """DCGAN and the f-AnoGAN WGAN are fixed 64x64 unconditional architectures."""
    if img_resolution != 64:
        raise dnnlib.util.UserError(f'{family} is a 64x64 model; got resolution {img_resolution}')
    if c_dim:
        raise dnnlib.util.UserError(f'{family} is an unconditional model; train it without --cond')


def init_dcgan_weights(module):
    """N(0, 0.02) for conv weights, N(1, 0.02) for BatchNorm scales, zero biases."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(m.weight, 1.0, 0.02)
            torch.nn.init.zeros_(m.bias)

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self,
        z_dim,                  # Latent size (100 in AnoGAN).
        c_dim,                  # Label size; must be 0.
        img_resolution,         # Must be 64.
        img_channels,           # Output colour channels.
        width = 64,             # Channels of the last hidden layer; the others are 2x, 4x, 8x this.
    ):
        super().__init__()
        check_64('DCGAN', img_resolution, c_dim)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        widths = [z_dim, 8 * width, 4 * width, 2 * width, width]
        stack = []
        for idx, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            stride, pad = (1, 0) if idx == 0 else (2, 1)   # 1x1 -> 4x4, then doubling
            stack += [torch.nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                      torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]
        stack += [torch.nn.ConvTranspose2d(width, img_channels, 4, 2, 1, bias=False), torch.nn.Tanh()]
        self.net = torch.nn.Sequential(*stack)
        init_dcgan_weights(self)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode='const', force_fp32=False, **_kwargs):
        z = z.to(torch.float32) * truncation_psi
        return self.net(z.reshape(z.shape[0], self.z_dim, 1, 1))

#----------------------------------------------------------------------------

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self,
        c_dim,                  # Label size; must be 0.
        img_resolution,         # Must be 64.
        img_channels,           # Input colour channels.
        width = 64,             # Channels of the first conv; doubled by each following one.
    ):
        super().__init__()
        check_64('DCGAN', img_resolution, c_dim)
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        widths = [img_channels, width, 2 * width, 4 * width, 8 * width]
        stack = []
        for idx, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            stack.append(torch.nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
            if idx > 0:
                stack.append(torch.nn.BatchNorm2d(cout))
            stack.append(torch.nn.LeakyReLU(0.2))
        self.body = torch.nn.Sequential(*stack)
        self.logit = torch.nn.Conv2d(8 * width, 1, 4, 1, 0, bias=False)
        init_dcgan_weights(self)

    def features(self, img, c=None):
        """The last hidden layer's activations, flattened: [N, 8 * width * 4 * 4]."""
        return self.body(img.to(torch.float32)).flatten(1)

    def logits_from_features(self, features):
        """The logit [N, 1] from `features` (the anomaly score needs both, from one pass through the body)."""
        return self.logit(features.reshape(features.shape[0], -1, 4, 4)).flatten(1)

    def forward(self, img, c=None, **_kwargs):
        return self.logits_from_features(self.features(img, c))

#----------------------------------------------------------------------------
