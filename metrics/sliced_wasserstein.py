"""Sliced Wasserstein distance (SWD) from "Progressive Growing of GANs" (Karras et al. 2018): compares the
distributions of 7x7 local patches at every level of a Laplacian pyramid (down to 16 px). No pretrained
weights. Per level: 128 random descriptors per image, each channel normalised over the whole set, then
4 x 128 random unit directions; the mean absolute difference of the sorted projections, reported x1e3."""

import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from metrics import metric_utils

# 5-tap binomial filter of the Gaussian pyramid (Burt & Adelson).
_BINOMIAL = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16


def _gaussian_kernel(channels: int, device) -> torch.Tensor:
    k = torch.tensor(np.outer(_BINOMIAL, _BINOMIAL), dtype=torch.float32, device=device)
    return k.expand(channels, 1, 5, 5).contiguous()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.pad(x, [2, 2, 2, 2], mode='reflect')
    return torch.nn.functional.conv2d(x, kernel, groups=x.shape[1])


def _pyr_down(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return _blur(x, kernel)[:, :, ::2, ::2]


def _pyr_up(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = torch.zeros([n, c, h * 2, w * 2], dtype=x.dtype, device=x.device)
    up[:, :, ::2, ::2] = x
    return _blur(up, kernel * 4)  # x4 restores the mean lost to the inserted zeros.


def pyramid_levels(resolution: int, min_resolution=16) -> list[int]:
    """Resolutions of the Laplacian pyramid levels, e.g. 128 -> [128, 64, 32, 16]."""
    levels = []
    while resolution >= min_resolution:
        levels.append(resolution)
        resolution //= 2
    return levels


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Band-pass levels from full resolution down, the last one the low-pass residual."""
    kernel = _gaussian_kernel(images.shape[1], images.device)
    pyramid = [images.to(torch.float32)]
    for _ in range(num_levels - 1):
        pyramid.append(_pyr_down(pyramid[-1], kernel))
    for i in range(num_levels - 1):
        pyramid[i] = pyramid[i] - _pyr_up(pyramid[i + 1], kernel)
    return pyramid


def get_descriptors(level: torch.Tensor, nhood_size: int, nhoods_per_image: int, generator: torch.Generator) -> torch.Tensor:
    """nhoods_per_image random nhood_size^2 patches per image -> [N * nhoods_per_image, C, size, size]."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - nhood_size + 1, [n, nhoods_per_image], generator=generator)
    xs = torch.randint(0, w - nhood_size + 1, [n, nhoods_per_image], generator=generator)
    offsets = torch.arange(nhood_size)
    rows = (ys[:, :, None] + offsets).to(level.device)  # [N, K, size]
    cols = (xs[:, :, None] + offsets).to(level.device)
    idx_n = torch.arange(n, device=level.device)[:, None, None, None, None]
    idx_c = torch.arange(c, device=level.device)[None, None, :, None, None]
    patches = level[idx_n, idx_c, rows[:, :, None, :, None], cols[:, :, None, None, :]]  # [N, K, C, size, size]
    return patches.reshape(n * nhoods_per_image, c, nhood_size, nhood_size)


def finalize_descriptors(desc: np.ndarray) -> np.ndarray:
    """Normalise each channel over the whole set (in place), flatten each descriptor."""
    desc = desc.astype(np.float32, copy=False)
    desc -= desc.mean(axis=(0, 2, 3), keepdims=True)
    desc /= desc.std(axis=(0, 2, 3), keepdims=True) + 1e-8
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, dir_repeats=4, dirs_per_repeat=128, seed=0) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the projections."""
    assert a.shape == b.shape, "SWD compares two descriptor sets of the same size"
    rnd = np.random.RandomState(seed)
    results = []
    for _ in range(dir_repeats):
        dirs = rnd.randn(a.shape[1], dirs_per_repeat).astype(np.float32)
        dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
        proj_a = np.sort(a @ dirs, axis=0)
        proj_b = np.sort(b @ dirs, axis=0)
        results.append(float(np.mean(np.abs(proj_a - proj_b))))
    return float(np.mean(results))


class DescriptorSet:
    """Collects raw descriptors per pyramid level for a stream of uint8 images."""

    def __init__(self, resolution: int, nhood_size=7, nhoods_per_image=128, seed=0):
        self.levels = pyramid_levels(resolution)
        if not self.levels:
            raise dnnlib.util.UserError(f"SWD needs images of at least 16 px, got {resolution}")
        self.nhood_size = nhood_size
        self.nhoods_per_image = nhoods_per_image
        self.generator = torch.Generator().manual_seed(seed)
        self.desc = [[] for _ in self.levels]
        self.num_images = 0

    def append(self, images: torch.Tensor) -> None:
        if images.shape[2] != self.levels[0] or images.shape[3] != self.levels[0]:
            raise dnnlib.util.UserError(f"SWD compares images of one size: expected {self.levels[0]}x{self.levels[0]}, got {images.shape[2]}x{images.shape[3]}")
        for i, level in enumerate(laplacian_pyramid(images, len(self.levels))):
            self.desc[i].append(get_descriptors(level, self.nhood_size, self.nhoods_per_image, self.generator).cpu().numpy())
        self.num_images += images.shape[0]

    def pop_level(self, i: int) -> np.ndarray:
        """Finalized descriptors of level i; frees the raw ones (16k images make gigabytes per level)."""
        desc = np.concatenate(self.desc[i])
        self.desc[i] = []
        return finalize_descriptors(desc)


def swd_between(set_a: DescriptorSet, set_b: DescriptorSet, seed=0) -> list[float]:
    """Per-level SWD x 1e3 between two descriptor sets, level by level to bound memory."""
    assert set_a.levels == set_b.levels
    return [sliced_wasserstein(set_a.pop_level(i), set_b.pop_level(i), seed=seed + i) * 1e3 for i in range(len(set_a.levels))]


def swd_of_images(images_a: torch.Tensor, images_b: torch.Tensor, nhoods_per_image=128, seed=0) -> list[float]:
    """Per-level SWD x 1e3 between two uint8 image tensors held in memory (tests, notebooks)."""
    sets = []
    for i, images in enumerate((images_a, images_b)):
        ds = DescriptorSet(images.shape[2], nhoods_per_image=nhoods_per_image, seed=seed * 2 + i)
        ds.append(images)
        sets.append(ds)
    return swd_between(sets[0], sets[1], seed=seed)


def _collect(images_iter, resolution: int, max_items: int, opts: metric_utils.MetricOptions, desc: str, seed: int) -> DescriptorSet:
    ds = DescriptorSet(resolution, seed=seed)
    with tqdm(total=max_items, desc=desc, unit='img', disable=not opts.progress, leave=False) as bar:
        for images in images_iter:
            if opts.num_gpus > 1:  # Descriptors are gathered as images: ranks are equal-sized by construction.
                gathered = [torch.empty_like(images) for _ in range(opts.num_gpus)]
                torch.distributed.all_gather(gathered, images)
                images = torch.stack(gathered, dim=1).flatten(0, 1)
            images = images[:max_items - ds.num_images]
            if images.shape[0] > 0:
                ds.append(images)
            bar.update(images.shape[0])
            if ds.num_images >= max_items:
                break
    return ds


def compute_swd(opts: metric_utils.MetricOptions, max_real: int, num_gen: int) -> dict:
    """Returns {resolution: SWD x 1e3} per level plus 'avg'. Real and judged sets use the same count."""
    dataset = metric_utils.open_dataset(opts.dataset_kwargs)
    num_items = min(len(dataset), max_real)
    if opts.dataset2_kwargs is not None:
        num_items = min(num_items, len(metric_utils.open_dataset(opts.dataset2_kwargs)))
    num_items = min(num_items, num_gen)
    resolution = dataset.resolution
    real = _collect(metric_utils.iterate_dataset_images(opts, dataset, max_items=num_items), resolution, num_items, opts, 'swd real', seed=opts.seed * 2)
    fake = _collect(metric_utils.candidate_images(opts, max_items=num_items), resolution, num_items, opts, 'swd generated', seed=opts.seed * 2 + 1)
    if opts.rank != 0:
        return dict()
    dists = swd_between(real, fake, seed=opts.seed)
    result = {res: d for res, d in zip(real.levels, dists)}
    result['avg'] = float(np.mean(dists))
    return result
