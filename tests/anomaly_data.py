"""Test helper: real-H&E normal / tumour patch sets for the anomaly tests, at one magnification.

Normal tissue is CMU-1-Small-Region (0.499 um/px). The tumour tile (tiatoolbox's target_image.png) carries no
resolution, but its lymphocytes (~7 um) span ~20 px, twice as many as on the CMU slide: we take it as ~0.25
um/px (40x) and resample it by TILE_SCALE = 0.5 before cutting patches or pasting it, so that both sets show
nuclei of the same size in pixels. Without this a weak generator reconstructs the smoother, magnified tumour
patches *better* than normal ones (AUROC < 0.5).

Training and held-out patches of one image come from a checkerboard of blocks (BLOCK px on the slide): training
crops from three blocks in four, held-out crops from the fourth, so no held-out pixel was seen in training.
"""

import numpy as np
import PIL.Image

TILE_SCALE = 0.5   # tumour tile (~0.25 um/px) -> the CMU slide's 0.499 um/px
BLOCK = 256
TILE_BLOCK = 128  # on the tumour tile resampled to 500 px: 3 x 3 blocks, two of them held out


def resample_tile(tile, scale=TILE_SCALE):
    """The tumour tile resized by `scale` (area-averaging filter)."""
    h, w = tile.shape[:2]
    size = (int(round(w * scale)), int(round(h * scale)))
    return np.asarray(PIL.Image.fromarray(tile).resize(size, PIL.Image.BOX))


def is_tissue(crop, min_tissue=0.9):
    return (crop.mean(axis=2) < 210).mean() >= min_tissue


def held_out_block(bx, by):
    return (bx + by) % 4 == 0


def _collect_crops(image, size, count, min_tissue, tries, position):
    """Up to `count` tissue crops at the (x, y) that `position()` draws (None: draw again)."""
    crops = []
    for _ in range(tries):
        xy = position()
        if xy is None:
            continue
        x, y = xy
        crop = image[y:y + size, x:x + size]
        if is_tissue(crop, min_tissue):
            crops.append(crop)
            if len(crops) == count:
                return np.stack(crops)
    raise RuntimeError(f'found only {len(crops)} tissue crops of {size} px')


def block_crops(image, size, count, held_out, seed=0, min_tissue=0.9, block=BLOCK):
    """`count` tissue crops of size x size lying wholly inside one checkerboard block of the wanted kind."""
    rnd = np.random.RandomState(seed)
    h, w = image.shape[:2]

    def position():
        bx, by = rnd.randint(0, w // block), rnd.randint(0, h // block)
        if held_out_block(bx, by) != held_out:
            return None
        return bx * block + rnd.randint(0, block - size + 1), by * block + rnd.randint(0, block - size + 1)
    return _collect_crops(image, size, count, min_tissue, count * 500, position)


def tumour_crops(tile, size, count, seed=0, scale=TILE_SCALE, min_tissue=0.9):
    """`count` tissue crops of size x size from the tumour tile resampled to the slide's resolution."""
    return any_tissue_crops(resample_tile(tile, scale), size, count, seed, min_tissue)


def any_tissue_crops(image, size, count, seed=0, min_tissue=0.9):
    """`count` tissue crops of size x size from anywhere in `image`."""
    rnd = np.random.RandomState(seed)
    h, w = image.shape[:2]

    def position():
        y = rnd.randint(0, h - size + 1)
        return rnd.randint(0, w - size + 1), y
    return _collect_crops(image, size, count, min_tissue, count * 500, position)
