"""Test helper: tiny networks for the projector, encoder and anomaly tests, saved as snapshot pickles.

`ZGenerator` / `ZCritic` are a minimal z-space family written to the GAN-family contract (no mapping network;
the critic has `features(img, c)`), standing in for DCGAN / WGAN-GP in tests.
"""

import numpy as np
import torch

import legacy
from networks import stylegan2
from torch_utils import persistence


def tiny_stylegan2(res=32, seed=0, noise_strength=0.0):
    """(G, D) of the StyleGAN2 family, a few thousand parameters; noise inputs scaled by `noise_strength`."""
    torch.manual_seed(seed)
    G = stylegan2.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=3,
                            mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=32))
    D = stylegan2.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=512, channel_max=32)
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(noise_strength)
    return G.eval().requires_grad_(False), D.eval().requires_grad_(False)


@persistence.persistent_class
class ZGenerator(torch.nn.Module):
    """z [N, z_dim] -> image: linear to 4x4, nearest-upsample + conv blocks, tanh. psi scales z towards 0."""

    def __init__(self, z_dim=8, c_dim=0, img_resolution=32, img_channels=3, dim=16):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, c_dim, img_resolution, img_channels
        self.fc = torch.nn.Linear(z_dim, dim * 16)
        blocks = []
        for _ in range(int(np.log2(img_resolution)) - 2):
            blocks += [torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(dim, dim, 3, padding=1), torch.nn.LeakyReLU(0.2)]
        self.blocks = torch.nn.Sequential(*blocks)
        self.torgb = torch.nn.Conv2d(dim, img_channels, 1)
        self.dim = dim

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='const', force_fp32=False, **kwargs):
        x = self.fc(z * truncation_psi).reshape(-1, self.dim, 4, 4)
        return torch.tanh(self.torgb(self.blocks(x)))


@persistence.persistent_class
class ZCritic(torch.nn.Module):
    """WGAN-GP-shaped critic: strided 5x5 convs, features() = the flat activations before the last linear."""

    def __init__(self, c_dim=0, img_resolution=32, img_channels=3, dim=8):
        super().__init__()
        self.c_dim, self.img_resolution, self.dim = c_dim, img_resolution, dim
        layers, ch = [], img_channels
        for k in range(int(np.log2(img_resolution)) - 2):
            layers += [torch.nn.Conv2d(ch, dim * 2 ** k, 5, stride=2, padding=2), torch.nn.LeakyReLU(0.2)]
            ch = dim * 2 ** k
        self.convs = torch.nn.Sequential(*layers)
        self.out = torch.nn.Linear(ch * 16, 1)

    def features(self, img, c):
        return self.convs(img).flatten(1)

    def forward(self, img, c):
        return self.out(self.features(img, c))


def tiny_z_family(res=32, seed=0):
    torch.manual_seed(seed)
    return ZGenerator(img_resolution=res).eval().requires_grad_(False), ZCritic(img_resolution=res).eval().requires_grad_(False)


def save_snapshot(path, G, D, training_data=True):
    """A snapshot pickle of (G, D). With training_data, it records as its training set (as train.py does) a zip of 8
    of G's own images written beside it, so the anomaly tools find reference patches for D's minibatch-stddev."""
    kwargs = None
    if training_data:
        from datasets import write_dataset_zip
        from tools import cli_utils
        z = torch.from_numpy(np.random.RandomState(99).randn(8, G.z_dim)).float()
        with torch.no_grad():
            images = cli_utils.images_to_uint8(G(z, torch.zeros([8, G.c_dim]), noise_mode='const'))
        kwargs = dict(class_name='training.dataset.ImageFolderDataset',
                      path=write_dataset_zip(str(path) + '-train.zip', images), use_labels=False, xflip=False)
    legacy.save_network_pkl(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=kwargs), str(path))
    return str(path)


def image_from_w(G, seed, psi=1.0):
    """(w [1, num_ws, w_dim], image float [1, 3, R, R]) of a seed, truncated towards w_avg by psi."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    w = G.mapping(z, torch.zeros([1, 0]), truncation_psi=psi)
    return w, G.synthesis(w, noise_mode='const')
