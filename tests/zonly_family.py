"""A tiny z -> image generator without a W latent space, standing in for the DCGAN / WGAN-GP families."""

import torch

from torch_utils import persistence


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, img_resolution, img_channels):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.fc = torch.nn.Linear(z_dim + c_dim, img_channels * img_resolution ** 2)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode='const', **_kwargs):
        x = z.to(torch.float32) * truncation_psi  # no noise inputs: noise_mode is ignored
        if self.c_dim:
            x = torch.cat([x, c.to(torch.float32)], dim=1)
        img = torch.tanh(self.fc(x))
        return img.reshape(-1, self.img_channels, self.img_resolution, self.img_resolution)
