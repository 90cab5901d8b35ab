"""A slide under its anomaly map in any browser, no server: `tools.slide_map --viewer` writes `<slide>_viewer/`.

    <slide>_viewer/index.html           OpenSeadragon page (tools/slide_viewer.html, copied as is)
                   openseadragon.min.js  from the asset registry (npm package, pinned version and sha256)
                   data.js               the slide's geometry, patch table, outlines and colour map, as a script
                   heat.png              one RGBA pixel per grid cell (the heat map TIFF's colours)
                   slide_files/L/C_R.jpeg Deep Zoom tiles of the slide (openslide.deepzoom), levels 0..max level
                   patches/I_query.png, I_reconstruction.png, I_residual.png  for the highest-scoring patches

Everything is loaded through <script> and <img>, which browsers allow from file://; no fetch of JSON.
The tile pyramid stops at `max_level` (default: the deep-zoom level nearest 2 um/px), which bounds the size
on a 0.24 um/px CAMELYON16 slide to a few hundred MB.
"""

import json
import math
import os
import shutil
import time

import numpy as np
import PIL.Image
import tqdm

import dnnlib
from dnnlib import assets
from dnnlib.util import UserError

TILE_SIZE = 254
TILE_OVERLAP = 1
JPEG_QUALITY = 80
DEFAULT_MPP = 2.0           # default finest tile level: the deep-zoom level nearest this resolution
DEFAULT_PATCHES = 500       # patches whose query / reconstruction / residual images are kept
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'slide_viewer.html')

#----------------------------------------------------------------------------
# Levels.

def deepzoom_levels(dimensions):
    """Number of deep-zoom levels of a level-0 size: level L-1 is the slide, each lower one half, level 0 one pixel."""
    return int(math.ceil(math.log2(max(dimensions)))) + 1 if max(dimensions) > 1 else 1


def default_max_level(dimensions, mpp, target=DEFAULT_MPP):
    """The deep-zoom level whose resolution is nearest `target` um/px (never finer than the slide; the full
    resolution when the slide states no mpp)."""
    top = deepzoom_levels(dimensions) - 1
    if mpp is None:
        return top
    halvings = max(0, int(round(math.log2(target / mpp))))
    return max(0, top - halvings)


def check_max_level(max_level, dimensions, path=''):
    top = deepzoom_levels(dimensions) - 1
    if max_level is not None and not 0 <= max_level <= top:
        raise UserError(f'{path}: --viewer-max-level={max_level} is not a deep-zoom level of this slide (0..{top}, '
                        f'{top} = full resolution)')

#----------------------------------------------------------------------------
# Pieces.

def colour_stops(cmap, count=11):
    import matplotlib
    colours = matplotlib.colormaps[cmap](np.linspace(0, 1, count))
    return [f'rgb({int(r * 255 + 0.5)}, {int(g * 255 + 0.5)}, {int(b * 255 + 0.5)})' for r, g, b, _ in colours]


def write_tiles(folder, slide_path, max_level, progress=True):
    """Deep Zoom tiles of levels 0..max_level; returns (width, height) of max_level and the number of tiles."""
    import openslide
    import openslide.deepzoom
    osr = openslide.open_slide(slide_path)
    try:
        dz = openslide.deepzoom.DeepZoomGenerator(osr, tile_size=TILE_SIZE, overlap=TILE_OVERLAP, limit_bounds=False)
        jobs = [(level, col, row) for level in range(max_level + 1)
                for row in range(dz.level_tiles[level][1]) for col in range(dz.level_tiles[level][0])]
        made = set()
        for level, col, row in tqdm.tqdm(jobs, desc='viewer tiles', unit='tile', disable=not progress,
                                         dynamic_ncols=True):
            if level not in made:
                os.makedirs(os.path.join(folder, 'slide_files', str(level)))
                made.add(level)
            tile = dz.get_tile(level, (col, row))
            tile.save(os.path.join(folder, 'slide_files', str(level), f'{col}_{row}.jpeg'), quality=JPEG_QUALITY)
        return tuple(dz.level_dimensions[max_level]), len(jobs)
    finally:
        osr.close()


def save_patch_images(folder, items):
    """items: (index, query uint8 [R, R, 3], reconstruction uint8 [R, R, 3]); writes the three PNGs of each."""
    from tools import projection
    os.makedirs(os.path.join(folder, 'patches'), exist_ok=True)
    saved = []
    for index, query, recon in items:
        residual = projection.heat_map(projection.residual_map(query, recon))
        for kind, image in (('query', query), ('reconstruction', recon), ('residual', residual)):
            PIL.Image.fromarray(image).save(os.path.join(folder, 'patches', f'{int(index)}_{kind}.png'))
        saved.append(int(index))
    return saved


def image_patches(scores, count):
    """Indices (CSV 'index') of the `count` highest-scoring patches (NaN scores last)."""
    values = np.where(np.isfinite(scores.score), scores.score, -np.inf)
    order = np.argsort(-values, kind='stable')[:count]
    return [int(i) for i in scores.index[order]]


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)

#----------------------------------------------------------------------------

def build_viewer(path, slide_path, name, scores, grid, heat_rgba, heat_range, cmap, dimensions, mpp, score_name,
                 threshold=None, threshold_source='', lesions=(), regions=(), patch_items=(), max_level=None,
                 progress=True):
    """Write the viewer folder `path` (replaced whole, atomically). Returns EasyDict(seconds, bytes, tiles, ...).

    scores: read_scores' columns; grid: slide_exports.PatchGrid of them; heat_rgba: uint8 [rows, cols, 4] cell
    colours; lesions / regions: level-0 [K, 2] rings; patch_items: (index, query, reconstruction) to keep."""
    start = time.perf_counter()
    top = deepzoom_levels(dimensions) - 1
    max_level = default_max_level(dimensions, mpp) if max_level is None else int(max_level)
    check_max_level(max_level, dimensions, slide_path)
    script = assets.fetch('openseadragon', verbose=progress)
    with dnnlib.util.atomic_write(path, folder=True) as tmp:
        os.makedirs(tmp, exist_ok=True)
        (tile_w, tile_h), num_tiles = write_tiles(tmp, slide_path, max_level, progress)
        tile_seconds = time.perf_counter() - start
        shutil.copyfile(script, os.path.join(tmp, 'openseadragon.min.js'))
        shutil.copyfile(TEMPLATE, os.path.join(tmp, 'index.html'))
        if heat_rgba.size == 0:  # no patch scored: a transparent pixel
            heat_rgba = np.zeros((1, 1, 4), np.uint8)
        PIL.Image.fromarray(heat_rgba, 'RGBA').save(os.path.join(tmp, 'heat.png'))
        images = save_patch_images(tmp, patch_items)
        rows, cols = grid.shape
        fields = ['index', 'x', 'y', 'size', 'tissue_fraction', 'label'] + \
            [k for k in scores if k not in ('index', 'x', 'y', 'size', 'tissue_fraction', 'label')]
        table = [[_plain(scores[f][k]) for f in fields] for k in range(len(scores.index))]
        data = dict(name=name, width=int(dimensions[0]), height=int(dimensions[1]), mpp=mpp, score=score_name,
                    fields=fields, patches=table, images=images,
                    threshold=None if threshold is None else float(threshold), thresholdSource=threshold_source,
                    tiles=dict(width=int(tile_w), height=int(tile_h), tileSize=TILE_SIZE, overlap=TILE_OVERLAP,
                               maxLevel=max_level, format='jpeg', scale=2 ** (top - max_level)),
                    heat=dict(x=grid.origin[0], y=grid.origin[1], width=cols * grid.step, height=rows * grid.step,
                              vmin=heat_range[0], vmax=heat_range[1], stops=colour_stops(cmap)),
                    lesions=[np.round(r, 1).tolist() for r in lesions],
                    regions=[np.round(r, 1).tolist() for r in regions])
        with open(os.path.join(tmp, 'data.js'), 'w') as f:
            # a script, not JSON: NaN is a JavaScript value, and <script src> loads from file:// where fetch cannot
            f.write('window.SLIDE = ' + json.dumps(data, separators=(',', ':')) + ';\n')
    return dnnlib.EasyDict(seconds=time.perf_counter() - start, tile_seconds=tile_seconds, bytes=folder_size(path),
                           tile_bytes=folder_size(os.path.join(path, 'slide_files')), tiles=num_tiles,
                           max_level=max_level, top_level=top, images=len(images),
                           tile_mpp=None if mpp is None else mpp * 2 ** (top - max_level))


def _plain(value):
    value = value.item() if hasattr(value, 'item') else value
    return value
