"""LPIPS perceptual distance (Zhang et al. 2018, linear heads v0.1) on a VGG16 trunk from the asset registry.

The distance between images a and b is  sum_l  mean_hw  sum_c  h_lc (u_l(a) - u_l(b))^2,  where u_l are the
channel-unit-normalised VGG16 activations after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 and h_l the
non-negative linear heads. Scaling each unit feature by sqrt(h_lc / (H_l W_l)) turns this into a squared
Euclidean distance between two flat embeddings, so a projector embeds its target once and compares
embeddings every step.

Weights come from the `lpips-vgg16` asset: either the pickled dict of numpy arrays of the package source
(VGG16 trunk + heads) or NVIDIA's TorchScript `vgg16.pt` (the official URL), which embeds images the same way.
"""

import pickle
import zipfile

import numpy as np
import torch

import dnnlib

# Convolutions per VGG16 stage; a 2x2 max-pool precedes every stage after the first.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

# LPIPS v0.1 input normalisation for images in [-1, 1] (per RGB channel).
INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)

UNIT_EPS = 1e-10  # guards the channel normalisation of an all-zero activation

#----------------------------------------------------------------------------

class LPIPS(torch.nn.Module):
    """VGG16 trunk + LPIPS heads. `embed(img)` -> [N, F]; `forward(a, b)` -> distance [N]. Images float [-1, 1]."""

    def __init__(self):
        super().__init__()
        stages = []
        in_ch = 3
        for idx, widths in enumerate(VGG16_STAGES):
            ops = [torch.nn.MaxPool2d(2, 2)] if idx > 0 else []
            for out_ch in widths:
                ops += [torch.nn.Conv2d(in_ch, out_ch, 3, padding=1), torch.nn.ReLU()]
                in_ch = out_ch
            stages.append(torch.nn.Sequential(*ops))
        self.stages = torch.nn.ModuleList(stages)
        for idx, widths in enumerate(VGG16_STAGES):
            self.register_buffer(f'head{idx}', torch.zeros([widths[-1]]))
        self.register_buffer('shift', torch.tensor(INPUT_SHIFT).view(1, 3, 1, 1))
        self.register_buffer('scale', torch.tensor(INPUT_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def heads(self):
        return [getattr(self, f'head{idx}') for idx in range(len(VGG16_STAGES))]

    def embed(self, img):
        assert img.ndim == 4 and img.shape[1] == 3
        x = (img.to(torch.float32) - self.shift) / self.scale
        parts = []
        for stage, head in zip(self.stages, self.heads()):
            x = stage(x)
            unit = x / (x.square().sum(dim=1, keepdim=True).sqrt() + UNIT_EPS)
            weight = (head / (x.shape[2] * x.shape[3])).sqrt()   # mean over pixels folded into the weight
            parts.append((unit * weight.view(1, -1, 1, 1)).flatten(1))
        return torch.cat(parts, dim=1)

    def forward(self, a, b):
        return (self.embed(a) - self.embed(b)).square().sum(dim=1)

    def load_numpy_weights(self, weights):
        """Fill from the package checkpoint: {'VGG16_0': {'Conv_i': {kernel HWIO, bias}}, 'NetLinLayer_l': ...}."""
        convs = [m for m in self.stages.modules() if isinstance(m, torch.nn.Conv2d)]
        try:
            trunk = weights['VGG16_0']
            with torch.no_grad():
                for idx, conv in enumerate(convs):
                    kernel = np.asarray(trunk[f'Conv_{idx}']['kernel'], dtype=np.float32)
                    conv.weight.copy_(torch.from_numpy(kernel).permute(3, 2, 0, 1))  # HWIO -> OIHW
                    conv.bias.copy_(torch.from_numpy(np.asarray(trunk[f'Conv_{idx}']['bias'], dtype=np.float32)))
                for idx, head in enumerate(self.heads()):
                    values = np.asarray(weights[f'NetLinLayer_{idx}']['Conv_0']['kernel'], dtype=np.float32).reshape(-1)
                    if values.min() < 0:
                        raise dnnlib.util.UserError(f'LPIPS head {idx} has negative weights; not an LPIPS checkpoint')
                    head.copy_(torch.from_numpy(values))
        except (KeyError, TypeError, RuntimeError) as err:
            raise dnnlib.util.UserError(f'LPIPS weights have an unexpected layout ({type(err).__name__}: {err})') from None
        return self

class TorchScriptLPIPS(torch.nn.Module):
    """NVIDIA's TorchScript VGG16 (takes pixels in [0, 255], returns LPIPS embeddings) behind the same interface."""

    def __init__(self, script):
        super().__init__()
        self.script = script

    def embed(self, img):
        return self.script((img.to(torch.float32) + 1) * 127.5, resize_images=False, return_lpips=True).flatten(1)

    def forward(self, a, b):
        return (self.embed(a) - self.embed(b)).square().sum(dim=1)

#----------------------------------------------------------------------------

_loaded = dict()  # (path, device) -> network, so repeated projections do not reread 60 MB

def load_lpips(device='cpu', path=None):
    """The LPIPS network (eval mode, no gradients) on `device`; weights from the `lpips-vgg16` asset
    (or `path`, a file the registry verifies)."""
    from dnnlib import assets
    file = assets.fetch('lpips-vgg16', path=path, verbose=False)
    key = (file, str(torch.device(device)))
    if key not in _loaded:
        if zipfile.is_zipfile(file):
            net = TorchScriptLPIPS(torch.jit.load(file, map_location='cpu'))
        else:
            with open(file, 'rb') as f:
                net = LPIPS().load_numpy_weights(pickle.load(f))  # file verified by sha256 in the registry
        _loaded[key] = net.eval().requires_grad_(False).to(device)
    return _loaded[key]

def area_downsample(img, max_size=256):
    """Average-pool images larger than max_size down to it (as the projector compares them)."""
    if img.shape[2] > max_size:
        img = torch.nn.functional.adaptive_avg_pool2d(img, (max_size, max_size))
    return img

#----------------------------------------------------------------------------
