"""Perceptual Path Length (PPL) from "A Style-Based Generator Architecture for Generative Adversarial
Networks" (Karras et al. 2019), as the official StyleGAN2-ADA computes it: the LPIPS distance between images
at latent interpolation points t and t + epsilon, divided by epsilon^2, averaged after dropping the lowest
and highest 1 %. Sampling 'full' draws t ~ U(0, 1), 'end' uses t in {0, 1}; space 'z' interpolates
spherically in Z, space 'w' linearly in W."""

import copy

import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from metrics import metric_utils
from metrics.precision_recall import DETECTOR


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the directions of a and b (unit-length result)."""
    a = _normalize(a)
    b = _normalize(b)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d.clamp(-1, 1))
    c = _normalize(b - d * a)
    return _normalize(a * torch.cos(p) + c * torch.sin(p))


class PPLSampler(torch.nn.Module):
    """Distances of one batch of latent pairs, already divided by epsilon^2."""

    def __init__(self, G, G_kwargs, epsilon, space, sampling, crop, vgg16):
        assert space in ('z', 'w') and sampling in ('full', 'end')
        super().__init__()
        self.G = copy.deepcopy(G)
        self.G_kwargs = G_kwargs
        self.epsilon = epsilon
        self.space = space
        self.sampling = sampling
        self.crop = crop
        self.vgg16 = vgg16

    def forward(self, c: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        device = c.device
        t = torch.rand([c.shape[0]], generator=generator, device=device) * (1 if self.sampling == 'full' else 0)
        z0, z1 = torch.randn([c.shape[0] * 2, self.G.z_dim], generator=generator, device=device).chunk(2)

        # Two points epsilon apart along the interpolation path, mapped to W.
        if self.space == 'w':
            w0, w1 = self.G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
            wt0 = w0.lerp(w1, t.unsqueeze(1).unsqueeze(2))
            wt1 = w0.lerp(w1, t.unsqueeze(1).unsqueeze(2) + self.epsilon)
        else:
            zt0 = slerp(z0, z1, t.unsqueeze(1))
            zt1 = slerp(z0, z1, t.unsqueeze(1) + self.epsilon)
            wt0, wt1 = self.G.mapping(z=torch.cat([zt0, zt1]), c=torch.cat([c, c])).chunk(2)

        # The same noise for both images of a pair: only the latent moves.
        img = self.G.synthesis(ws=torch.cat([wt0, wt1]), noise_mode='const', force_fp32=True, **self.G_kwargs)

        # The official face crop: keep the central region of the image.
        if self.crop:
            assert img.shape[2] == img.shape[3]
            c8 = img.shape[2] // 8
            img = img[:, :, c8 * 3: c8 * 7, c8 * 2: c8 * 6]

        # Larger than 256: box-downsample to 256, as LPIPS was calibrated there.
        factor = self.G.img_resolution // 256
        if factor > 1:
            img = img.reshape([-1, img.shape[1], img.shape[2] // factor, factor, img.shape[3] // factor, factor]).mean([3, 5])

        img = (img + 1) * (255 / 2)
        if img.shape[1] == 1:
            img = img.repeat([1, 3, 1, 1])
        lpips_t0, lpips_t1 = self.vgg16(img, resize_images=False, return_lpips=True).chunk(2)
        return (lpips_t0 - lpips_t1).square().sum(1) / self.epsilon ** 2


def trimmed_mean(dist: np.ndarray) -> float:
    """Mean of the distances between the 1st and 99th percentiles (drops outliers of the path)."""
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(np.extract(np.logical_and(dist >= lo, dist <= hi), dist).mean())


def compute_ppl(opts: metric_utils.MetricOptions, num_samples, epsilon, space, sampling, crop, batch_size=2) -> float:
    if opts.G is None:
        raise dnnlib.util.UserError("PPL needs a generator network; pass --network")
    vgg16 = metric_utils.get_feature_detector(DETECTOR, opts)
    sampler = PPLSampler(G=opts.G, G_kwargs=opts.G_kwargs, epsilon=epsilon, space=space, sampling=sampling,
                         crop=crop, vgg16=vgg16)
    sampler.eval().requires_grad_(False).to(opts.device)
    dataset = metric_utils.open_dataset(opts.dataset_kwargs) if getattr(opts.G, 'c_dim', 0) > 0 else None
    rnd = np.random.RandomState([opts.seed, opts.rank])
    generator = torch.Generator(device=opts.device).manual_seed(opts.seed * 1000 + opts.rank)

    dist = []
    with tqdm(total=num_samples, desc='ppl', unit='pair', disable=not opts.progress, leave=False) as bar:
        for _ in range(0, num_samples, batch_size * opts.num_gpus):
            c = metric_utils.random_labels(opts, batch_size, rnd, dataset)
            with torch.no_grad():
                x = sampler(c, generator)
            if opts.num_gpus > 1:
                gathered = [torch.empty_like(x) for _ in range(opts.num_gpus)]
                torch.distributed.all_gather(gathered, x)
                x = torch.stack(gathered, dim=1).flatten(0, 1)
            dist.append(x.cpu())
            bar.update(min(x.shape[0], num_samples - bar.n))
    dist = torch.cat(dist)[:num_samples].numpy()
    if opts.rank != 0:
        return float('nan')
    return trimmed_mean(dist)
