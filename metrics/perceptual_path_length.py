"""Perceptual Path Length (PPL; Karras et al. 2019, "A Style-Based Generator Architecture for GANs").

For random latent paths, PPL measures how much the image changes per step: the LPIPS distance between the
images at path positions t and t + eps, divided by eps^2, averaged over many paths after discarding values
below the 1st and above the 99th percentile. Paths run linearly in W (space 'w') or along great circles
in Z and are then mapped to W (space 'z'); t is uniform in [0, 1] ('full') or 0 ('end'). Both images of a
pair use the same constant noise. The generator must expose W (G.mapping and G.synthesis).
"""

import copy
import inspect

import numpy as np
import torch

import dnnlib
from metrics import metric_utils
from metrics.precision_recall import DETECTOR


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Point at fraction t along the great circle from direction a to direction b (unit length)."""
    a, b = _unit(a), _unit(b)
    cos_ab = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    toward_b = _unit(b - cos_ab * a)  # unit vector orthogonal to a, in the plane of a and b
    angle = torch.acos(cos_ab) * t
    return _unit(torch.cos(angle) * a + torch.sin(angle) * toward_b)


def _segment_ends(G, c, t, epsilon, space, generator):
    """W latents of both ends of each path segment: [2N, num_ws, w_dim], first all starts, then all ends."""
    n = c.shape[0]
    z = torch.randn([2 * n, G.z_dim], generator=generator, device=c.device)
    z_from, z_to = z[:n], z[n:]
    labels = torch.cat([c, c])
    if space == 'z':
        here = t.unsqueeze(1)
        on_circle = torch.cat([slerp(z_from, z_to, here), slerp(z_from, z_to, here + epsilon)])
        return G.mapping(z=on_circle, c=labels)
    w_from, w_to = G.mapping(z=z, c=labels).chunk(2)
    here = t.view(n, 1, 1)
    return torch.cat([torch.lerp(w_from, w_to, here), torch.lerp(w_from, w_to, here + epsilon)])


def _for_lpips(img, crop, resolution):
    """Generated images -> LPIPS input: optional central crop, box-downsampled to at most 256 px, 0..255 RGB."""
    if crop:  # the face-centred crop of the StyleGAN protocol
        eighth = img.shape[2] // 8
        img = img[:, :, 3 * eighth:7 * eighth, 2 * eighth:6 * eighth]
    factor = resolution // 256
    if factor > 1:  # LPIPS was calibrated on 256 px images
        img = torch.nn.functional.avg_pool2d(img, kernel_size=factor)
    img = (img + 1) * 127.5
    return img.expand(-1, 3, -1, -1) if img.shape[1] == 1 else img


def _accepts(fn, name):
    """Whether fn takes keyword `name`, explicitly or through **kwargs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def path_distances(G, vgg16, c, generator, epsilon, space, sampling, crop, G_kwargs=None):
    """LPIPS(img(t), img(t + eps)) / eps^2 for len(c) random paths."""
    t = torch.rand([c.shape[0]], generator=generator, device=c.device)
    if sampling == 'end':
        t = torch.zeros_like(t)
    ws = _segment_ends(G, c, t, epsilon, space, generator)
    synth_kwargs = dict(G_kwargs or {}, noise_mode='const')
    if _accepts(G.synthesis.forward, 'force_fp32'):
        synth_kwargs['force_fp32'] = True
    img = _for_lpips(G.synthesis(ws=ws, **synth_kwargs), crop, G.img_resolution)
    start, end = vgg16(img, resize_images=False, return_lpips=True).chunk(2)
    return (start - end).square().sum(dim=1) / epsilon ** 2


def trimmed_mean(dist: np.ndarray) -> float:
    """Mean of the values between the 1st ('lower') and 99th ('higher') percentiles, inclusive."""
    low = np.percentile(dist, 1, method='lower')
    high = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= low) & (dist <= high)].mean())


def compute_ppl(opts: metric_utils.MetricOptions, num_samples, epsilon, space, sampling, crop, batch_size=2) -> float:
    if space not in ('z', 'w') or sampling not in ('full', 'end'):
        raise ValueError(f'unknown PPL variant space={space!r} sampling={sampling!r}')
    if opts.G is None:
        raise dnnlib.util.UserError('PPL needs a generator network; pass --network')
    metric_utils.require_w_space(opts.G, 'PPL')
    vgg16 = metric_utils.get_feature_detector(DETECTOR, opts)
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    dataset = metric_utils.open_dataset(opts.dataset_kwargs) if getattr(G, 'c_dim', 0) > 0 else None
    label_rng = np.random.RandomState([opts.seed, opts.rank])
    generator = torch.Generator(device=opts.device).manual_seed(opts.seed * 1000 + opts.rank)

    rounds = -(-num_samples // (batch_size * opts.num_gpus))
    chunks = []
    with metric_utils._progress(opts, num_samples, 'ppl', unit='pair') as bar:
        for _ in range(rounds):
            c = metric_utils.random_labels(opts, batch_size, label_rng, dataset)
            with torch.no_grad():
                dist = path_distances(G, vgg16, c, generator, epsilon, space, sampling, crop, opts.G_kwargs)
            dist = metric_utils.all_gather_rows(dist, opts.num_gpus)
            chunks.append(dist.cpu())
            bar.update(min(len(dist), num_samples - bar.n))
    if opts.rank != 0:
        return float('nan')
    return trimmed_mean(torch.cat(chunks)[:num_samples].numpy())
