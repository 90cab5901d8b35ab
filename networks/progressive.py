"""Level-of-detail helpers shared by the progressively grown families (PGAN, StyleGAN v1) and their losses.

A progressive network of full resolution R trains at a current resolution R / 2**lod (Karras et al. 2018).
lod is a float: at an integer k the network works at R / 2**k; between k and k + 1 it cross-fades the new,
finer level (weight 1 - frac) with the previous, coarser one (weight frac) while the new layers fade in.
Up-sampling is nearest-neighbour and down-sampling a 2x2 box average, as in the paper.

The generator, the discriminator and `fade_reals` all resample and blend with the functions below, so a
real batch passed through `fade_reals` looks exactly like what the generator shows at the same lod.
"""

import math

import torch

#----------------------------------------------------------------------------

def max_lod(resolution):
    """Largest meaningful lod for a network of the given full resolution (its 4x4 level)."""
    return int(math.log2(resolution)) - 2


def split_lod(lod, resolution):
    """lod -> (level, alpha): the finer level's integer lod and the coarser level's blend weight in [0, 1)."""
    lod = min(max(float(lod), 0.0), float(max_lod(resolution)))
    level = int(math.floor(lod))
    return level, lod - level


def downscale(x, factor):
    """Box-average `factor` x `factor` pixel blocks (factor a power of two, 1 = unchanged)."""
    return torch.nn.functional.avg_pool2d(x, factor) if factor > 1 else x


def upscale(x, factor):
    """Repeat every pixel `factor` times along both axes (nearest-neighbour)."""
    if factor == 1:
        return x
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def crossfade(fine, coarse, alpha):
    """(1 - alpha) * fine + alpha * coarse; alpha is the fading-out level's weight."""
    if alpha == 0:
        return fine
    return torch.lerp(fine, coarse, alpha)


def fade_reals(img, lod):
    """Show real images [N, C, R, R] at the networks' current lod, returned at full resolution R.

    Averages the reals down to the current level, blends in the next coarser level during a fade
    (both up-sampled by nearest neighbour), then repeats pixels back to R.
    """
    resolution = img.shape[-1]
    level, alpha = split_lod(lod, resolution)
    fine = downscale(img, 2 ** level)
    if alpha > 0:
        fine = crossfade(fine, upscale(downscale(fine, 2), 2), alpha)
    return upscale(fine, 2 ** level)


def grow_image(net, x, run_block):
    """A growing generator's image at its current lod: `run_block(block, index, x)` for each block up to the
    finest active resolution, that block's toRGB cross-faded with the coarser level's while alpha > 0, then
    enlarged to full resolution. `net` has `lod`, `img_resolution`, `resolutions` and blocks named b<res>."""
    level, alpha = split_lod(net.lod, net.img_resolution)
    fine_res = net.img_resolution >> level
    coarse_img = None
    for index, res in enumerate(r for r in net.resolutions if r <= fine_res):
        block = getattr(net, f'b{res}')
        x = run_block(block, index, x)
        if res == fine_res // 2 and alpha > 0:
            coarse_img = block.torgb(x)
    img = getattr(net, f'b{fine_res}').torgb(x)
    if coarse_img is not None:
        img = crossfade(img, upscale(coarse_img, 2), alpha)
    return upscale(img, 2 ** level)


def pixel_norm(x, eps=1e-8):
    """Scale each sample's feature vector (dim 1) to unit mean square (Karras et al. 2018, Sec. 4.2)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def check_resolution(name, resolution, lowest=8):
    """Progressive networks need a power-of-two resolution of at least `lowest`."""
    import dnnlib
    if resolution < lowest or resolution & (resolution - 1):
        raise dnnlib.util.UserError(f'{name} needs a power-of-two resolution >= {lowest}; got {resolution}')

#----------------------------------------------------------------------------
