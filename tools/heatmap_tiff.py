"""The anomaly map as a tiled, pyramidal TIFF registered to the slide: level 0 has the slide's level-0 size and
resolution tags, so it lies exactly over the slide in OpenSlide-based viewers and opens with tifffile at any level.

Pixels are RGBA: the score's colour on a fixed colour map (range in the ImageDescription), alpha 0 where no
patch was scored. Every level is drawn straight from the patch grid (nearest cell at the pixel's centre) and
streamed tile by tile, so a 100 000 x 200 000 px slide never sits in memory.
"""

import json
import math

import numpy as np

import dnnlib

TILE = 512
ZLIB_LEVEL = 1   # half the CPU time of the default 6 for twice the size (a CAMELYON16 slide: ~4 min, ~0.6 GB)
DEFAULT_CMAP = 'inferno'


def colour_range(values):
    """(vmin, vmax) of the colour map: 1st and 99th percentile of the finite scores (the overlay PNG's range)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(max(hi, lo + 1e-12))


def colourise(cells, vmin, vmax, cmap=DEFAULT_CMAP, alpha=255):
    """uint8 [rows, cols, 4] RGBA of a float cell grid; NaN cells fully transparent."""
    import matplotlib
    scaled = np.clip((np.nan_to_num(cells, nan=vmin) - vmin) / (vmax - vmin), 0, 1)
    rgba = (matplotlib.colormaps[cmap](scaled) * 255 + 0.5).astype(np.uint8)
    rgba[..., 3] = np.where(np.isfinite(cells), alpha, 0)
    return rgba


def level_sizes(width, height, tile=TILE):
    """(w, h) of each pyramid level: level 0 is the slide, each next one half (rounded up) until one tile."""
    sizes = [(int(width), int(height))]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
    return sizes


def _tiles(rgba, grid, size, downsample, tile):
    # downsample: (x, y) level-0 pixels per level pixel
    """RGBA tiles of one level in row-major order; a pixel takes the cell under its centre's level-0 point."""
    w, h = size
    rows, cols = rgba.shape[:2]
    rgba_clear = np.pad(rgba, ((0, 1), (0, 1), (0, 0)))  # index rows / cols: transparent, off the grid
    clear = np.zeros((tile, tile, 4), np.uint8)
    for ty in range(0, h, tile):
        cy = np.floor(((np.arange(ty, ty + tile) + 0.5) * downsample[1] - grid.origin[1]) / grid.step).astype(np.int64)
        row_ok = (cy >= 0) & (cy < rows)
        for tx in range(0, w, tile):
            cx = np.floor(((np.arange(tx, tx + tile) + 0.5) * downsample[0] - grid.origin[0]) / grid.step).astype(
                np.int64)
            col_ok = (cx >= 0) & (cx < cols)
            if not row_ok.any() or not col_ok.any() or not rgba[cy[row_ok].min():cy[row_ok].max() + 1,
                                                                 cx[col_ok].min():cx[col_ok].max() + 1, 3].any():
                yield clear  # off the grid, or only unscored cells (glass): most tiles of a slide
                continue
            # two 1-D gathers (rows, then columns) cost a fraction of one 2-D fancy index
            band = rgba_clear.take(np.where(row_ok, cy, rows), axis=0)
            yield band.take(np.where(col_ok, cx, cols), axis=1)


def write_heatmap_tiff(path, grid, scores, dimensions, mpp=None, vmin=None, vmax=None, cmap=DEFAULT_CMAP,
                       tile=TILE, description=None):
    """Write the pyramid; returns its description (dict): colour range, colour map, level sizes."""
    import tifffile
    cells = grid.cells(scores)
    if vmin is None or vmax is None:
        vmin, vmax = colour_range(scores)
    rgba = colourise(cells, vmin, vmax, cmap)
    sizes = level_sizes(*dimensions, tile=tile)
    info = dict(kind='histosynth anomaly heat map', cmap=cmap, vmin=vmin, vmax=vmax, mpp=mpp,
                levels=[list(s) for s in sizes], **(description or {}))
    with dnnlib.util.atomic_write(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=dimensions[0] * dimensions[1] * 4 > 2 ** 31) as tw:
            for i, (w, h) in enumerate(sizes):
                downsample = (dimensions[0] / w, dimensions[1] / h)
                kwargs = dict(shape=(h, w, 4), dtype=np.uint8, tile=(tile, tile), photometric='rgb',
                              extrasamples=('unassalpha',), compression='zlib',
                              compressionargs=dict(level=ZLIB_LEVEL),
                              metadata=None,
                              subfiletype=0 if i == 0 else 1)
                if i == 0:
                    kwargs['description'] = json.dumps(info)
                if mpp is not None:
                    kwargs.update(resolution=(1e4 / (mpp * downsample[0]), 1e4 / (mpp * downsample[1])), resolutionunit='CENTIMETER')
                tw.write(_tiles(rgba, grid, (w, h), downsample, tile), **kwargs)
    return info
