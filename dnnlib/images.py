"""Image grids and atomic PNG writing, shared by the training loop (snapshots' grids) and the command-line tools."""

import math

import numpy as np
import PIL.Image

from . import util

#----------------------------------------------------------------------------

def make_image_grid(images, grid_w=None):
    """uint8 [N, H, W, C] -> one uint8 [rows*H, grid_w*W, C] image, row-major, empty cells black."""
    images = np.asarray(images)
    assert images.ndim == 4 and images.dtype == np.uint8
    n, h, w, c = images.shape
    if grid_w is None:
        grid_w = max(int(math.ceil(math.sqrt(n))), 1)
    grid_h = max(int(math.ceil(n / grid_w)), 1)
    grid = np.zeros([grid_h * h, grid_w * w, c], dtype=np.uint8)
    for idx, image in enumerate(images):
        y, x = divmod(idx, grid_w)
        grid[y * h:(y + 1) * h, x * w:(x + 1) * w] = image
    return grid

def save_image(image, path):
    """Write a uint8 HWC (C = 1 or 3) or HW image as PNG, atomically (temp file in the same folder, then rename)."""
    image = np.asarray(image)
    assert image.dtype == np.uint8
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    assert image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    try:
        with util.atomic_write(path) as tmp:
            PIL.Image.fromarray(image).save(tmp, format='PNG')  # uint8 HW -> 'L', HW3 -> 'RGB'
    except OSError as err:  # e.g. a full disk: one line for the user, and atomic_write has removed the temp file
        raise util.UserError(f"cannot write '{path}': {err.strerror or err}") from None
    return path

#----------------------------------------------------------------------------
