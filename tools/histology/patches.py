"""Patch candidates on a slide, their tissue fraction from a thumbnail mask, and fast parallel extraction.

Coordinates: a patch is `read_size` x `read_size` pixels at pyramid `level`, its top-left corner (x, y) given
at level 0 like OpenSlide's read_region; it spans `extent = read_size * downsample` level-0 pixels and is
resized to `size` x `size` output pixels when reading at an mpp between pyramid levels.
"""

import concurrent.futures
import multiprocessing
import os
import struct
import zlib

import numpy as np
import PIL.Image

from dnnlib import EasyDict
from dnnlib.util import UserError

from .wsi import open_slide

MIN_PATCH_SIZE = 8
MAX_STRIP_WIDTH = 8192        # level pixels read at once when cutting a row of neighbouring patches
PNG_COMPRESS_LEVEL = 0        # zlib level; 0 (stored) as the official dataset_tool writes, ~30x faster than 1
IN_MEMORY_MAX_PIXELS = 1 << 26  # a level this small is decoded once and patches are cut from memory

# Fig 2 of the paper: green = tissue (>= 90 %), yellow = partial, red = background (<= 10 %).
CLASS_BACKGROUND, CLASS_PARTIAL, CLASS_TISSUE = 0, 1, 2
CLASS_NAMES = ('background', 'partial', 'tissue')
TISSUE_CLASS_MIN = 0.9
BACKGROUND_CLASS_MAX = 0.1

# ----------------------------------------------------------------------------
# Geometry.


def patch_geometry(slide, size: int, level: int | None = None, mpp: float | None = None) -> EasyDict:
    """Where and how much to read for `size`-pixel patches at `level` or at `mpp` (exactly one of the two)."""
    if size < MIN_PATCH_SIZE:
        raise UserError(f'--patch-size must be at least {MIN_PATCH_SIZE}, got {size}')
    if level is not None and mpp is not None:
        raise UserError('give either --level or --mpp, not both')
    if mpp is not None:
        level, read_size = slide.read_size_for_mpp(size, mpp)
    else:
        level = 0 if level is None else int(level)
        slide.check_level(level)
        read_size = size
    ds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    if read_size > lw or read_size > lh:
        raise UserError(f'{slide.path}: a {size} px patch ({read_size} px at level {level}) is larger than the '
                        f'slide at that level ({lw}x{lh})')
    out_mpp = mpp if mpp is not None else slide.level_mpp(level)
    return EasyDict(level=level, read_size=read_size, size=size, downsample=ds, extent=read_size * ds,
                    level_dims=(lw, lh), mpp=out_mpp)


def grid_candidates(geom: EasyDict, stride: int | None = None) -> np.ndarray:
    """int64 [N, 2] level-0 (x, y) of patches on a regular grid, row-major; `stride` in output pixels."""
    stride = geom.size if stride is None else int(stride)
    if stride <= 0:
        raise UserError(f'--stride must be positive, got {stride}')
    step = max(1, int(round(stride * geom.read_size / geom.size)))  # in level pixels
    lw, lh = geom.level_dims
    xs = np.arange(0, lw - geom.read_size + 1, step, dtype=np.int64)
    ys = np.arange(0, lh - geom.read_size + 1, step, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return _level_to_level0(np.stack([gx.ravel(), gy.ravel()], axis=1), geom)


def random_candidates(geom: EasyDict, count: int, rng: np.random.Generator, no_overlap: bool = False,
                      max_tries: int = 50) -> np.ndarray:
    """int64 [N, 2] level-0 (x, y) of `count` uniformly random patches (fewer if non-overlap runs out of room)."""
    lw, lh = geom.level_dims
    r = geom.read_size
    if not no_overlap:
        pos = np.stack([rng.integers(0, lw - r + 1, count), rng.integers(0, lh - r + 1, count)], axis=1)
        return _level_to_level0(pos.astype(np.int64), geom)
    # Rejection sampling; a bucket grid of cell size r means only the 3x3 neighbouring buckets can collide.
    buckets = {}
    chosen = []
    for _ in range(count * max_tries):
        if len(chosen) == count:
            break
        x, y = int(rng.integers(0, lw - r + 1)), int(rng.integers(0, lh - r + 1))
        bx, by = x // r, y // r
        clash = any(abs(x - ox) < r and abs(y - oy) < r
                    for dx in (-1, 0, 1) for dy in (-1, 0, 1) for ox, oy in buckets.get((bx + dx, by + dy), ()))
        if not clash:
            buckets.setdefault((bx, by), []).append((x, y))
            chosen.append((x, y))
    return _level_to_level0(np.array(chosen, dtype=np.int64).reshape(-1, 2), geom)


def _level_to_level0(pos_level: np.ndarray, geom: EasyDict) -> np.ndarray:
    return np.round(pos_level * geom.downsample).astype(np.int64)


# ----------------------------------------------------------------------------
# Area-weighted coverage of patches by a thumbnail-grid mask.


FRACTION_EPS = 1e-9  # coverage fractions closer than this to 0 or 1 are rounding residue


def box_fractions(mask: np.ndarray, cell: tuple[float, float], xy: np.ndarray, extent: float) -> np.ndarray:
    """float64 [N]: fraction of each level-0 box (x, y, extent) covered by `mask`.

    Mask pixel (i, j) covers level-0 [j*cell_x, (j+1)*cell_x) x [i*cell_y, (i+1)*cell_y). The integral image
    of a piecewise-constant mask is bilinear inside every cell, so interpolating the summed-area table at the
    box corners gives the exact covered area, fractional border cells included.
    """
    mask = np.asarray(mask, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    sat[1:, 1:] = mask.cumsum(0).cumsum(1)
    x0, y0 = xy[:, 0] / cell[0], xy[:, 1] / cell[1]
    x1, y1 = (xy[:, 0] + extent) / cell[0], (xy[:, 1] + extent) / cell[1]
    area = _sat_at(sat, x1, y1) - _sat_at(sat, x0, y1) - _sat_at(sat, x1, y0) + _sat_at(sat, x0, y0)
    fraction = np.clip(area / ((x1 - x0) * (y1 - y0)), 0.0, 1.0)
    # The four-corner difference leaves rounding residue (~1e-15) below and right of any covered area: a box the
    # mask does not touch must read 0 exactly (an annotation's label tests `fraction <= 0`), a covered one 1.
    fraction[fraction < FRACTION_EPS] = 0.0
    fraction[fraction > 1 - FRACTION_EPS] = 1.0
    return fraction


def _sat_at(sat, u, v):
    # Bilinear lookup of the summed-area table at continuous (u = column, v = row), clamped to the mask.
    u = np.clip(u, 0, sat.shape[1] - 1)
    v = np.clip(v, 0, sat.shape[0] - 1)
    j = np.minimum(np.floor(u).astype(np.int64), sat.shape[1] - 2)
    i = np.minimum(np.floor(v).astype(np.int64), sat.shape[0] - 2)
    fu, fv = u - j, v - i
    return (sat[i, j] * (1 - fu) * (1 - fv) + sat[i, j + 1] * fu * (1 - fv)
            + sat[i + 1, j] * (1 - fu) * fv + sat[i + 1, j + 1] * fu * fv)


def classify(fractions: np.ndarray) -> np.ndarray:
    """Fig 2 classes: CLASS_TISSUE (>= 90 %), CLASS_BACKGROUND (<= 10 %), CLASS_PARTIAL in between."""
    fractions = np.asarray(fractions)
    out = np.full(fractions.shape, CLASS_PARTIAL, dtype=np.int64)
    out[fractions >= TISSUE_CLASS_MIN] = CLASS_TISSUE
    out[fractions <= BACKGROUND_CLASS_MAX] = CLASS_BACKGROUND
    return out


# ----------------------------------------------------------------------------
# Extraction: rows of neighbouring patches are read as one strip and cut, in worker processes.


def plan_strips(xy: np.ndarray, geom: EasyDict) -> list[tuple]:
    """Group patches (in the given order) into strip reads: [(x0, y0, width_at_level, [(index, offset), ...])].

    Consecutive patches on the same row whose union stays narrow enough share one read_region call.
    """
    strips = []
    ds, r = geom.downsample, geom.read_size
    current = None
    for index, (x, y) in enumerate(np.asarray(xy).tolist()):
        if current is not None:
            x0, y0, _w, members = current
            offset = int(round((x - x0) / ds))
            if y == y0 and 0 <= offset and offset + r <= MAX_STRIP_WIDTH and offset - members[-1][1] <= 2 * r:
                members.append((index, offset))
                current[2] = offset + r
                continue
        current = [x, y, r, [(index, 0)]]
        strips.append(current)
    return [tuple(s) for s in strips]


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))


def encode_png(img: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """8-bit RGB or grayscale PNG. Level 0 stores rows unfiltered; higher levels use the Up filter, which
    compresses H&E about as well as adaptive filtering at a fraction of the cost."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    h, w, c = img.shape
    color_type = {1: 0, 3: 2}[c]
    rows = img.reshape(h, w * c)
    raw = np.empty((h, w * c + 1), dtype=np.uint8)
    if compress_level == 0:
        raw[:, 0] = 0  # filter None
        raw[:, 1:] = rows
    else:
        raw[:, 0] = 2  # filter Up: difference to the row above (the first row has a zero row above)
        raw[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
    header = struct.pack('>IIBBBBB', w, h, 8, color_type, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header)
            + _png_chunk(b'IDAT', zlib.compress(raw.tobytes(), compress_level)) + _png_chunk(b'IEND', b''))


def cut_patch(region: np.ndarray, offset: int, read_size: int, size: int, compress_level: int) -> bytes:
    patch = region[:, offset:offset + read_size] if region.shape[0] == read_size else region
    if read_size != size:
        patch = np.asarray(PIL.Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), PIL.Image.LANCZOS))
    return encode_png(patch, compress_level)


_worker_slides = {}  # per process: path -> open Slide, so each worker opens a slide once


def _worker_slide(path):
    slide = _worker_slides.get(path)
    if slide is None:
        for old in _worker_slides.values():
            old.close()
        _worker_slides.clear()
        slide = _worker_slides[path] = open_slide(path)
    return slide


def read_strip(task) -> list[tuple[int, bytes]]:
    """Worker body: read one strip, cut its patches, resize if needed, encode PNG."""
    path, level, read_size, size, compress_level, (x0, y0, width, members) = task
    region = _worker_slide(path).read_region(x0, y0, level, (width, read_size))
    return [(index, cut_patch(region, offset, read_size, size, compress_level)) for index, offset in members]


def _init_worker():
    # Workers leave Ctrl-C to the parent, which tears the pool down.
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PatchReader:
    """Reads patches from slides with `workers` processes (1 = in this process). Use as a context manager.

    Large slides: rows of patches are read as strips by worker processes, each opening a slide once.
    A level already decoded in memory (small slides): patches are cut from it and encoded by `workers`
    threads (zlib releases the GIL).
    """

    def __init__(self, workers: int = 1, compress_level: int = PNG_COMPRESS_LEVEL):
        if workers < 1:
            raise UserError(f'--workers must be at least 1, got {workers}')
        if not 0 <= compress_level <= 9:
            raise UserError(f'--compress-level must be in 0..9, got {compress_level}')
        self.workers = workers
        self.compress_level = compress_level
        self._pool = None
        self._threads = None

    def __enter__(self):
        return self

    def _get_pool(self):
        # Started on first use: a run whose slides all fit in memory never pays for forking.
        if self._pool is None:
            if self._threads is not None:  # never fork while encoder threads are alive
                self._threads.shutdown()
                self._threads = None
            ctx = multiprocessing.get_context('fork' if os.name == 'posix' else 'spawn')
            self._pool = ctx.Pool(self.workers, initializer=_init_worker)
        return self._pool

    def _get_threads(self):
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(self.workers)
        return self._threads

    def __exit__(self, exc_type, *_exc):
        if self._threads is not None:
            self._threads.shutdown(cancel_futures=True)
        if self._pool is not None:
            (self._pool.terminate if exc_type else self._pool.close)()
            self._pool.join()
        for slide in _worker_slides.values():
            slide.close()
        _worker_slides.clear()

    def read(self, path: str, xy: np.ndarray, geom: EasyDict, level_image: np.ndarray | None = None):
        """Yield (index, png_bytes) for every patch position in `xy`, in order.

        `level_image`: the whole of `geom.level` as uint8 [H, W, 3], when the caller has decoded it already.
        """
        if level_image is not None:
            yield from self._cut_from_memory(xy, geom, level_image)
            return
        tasks = [(path, geom.level, geom.read_size, geom.size, self.compress_level, strip)
                 for strip in plan_strips(xy, geom)]
        results = map(read_strip, tasks) if self.workers == 1 else self._get_pool().imap(read_strip, tasks)
        for batch in results:
            yield from batch

    def _cut_from_memory(self, xy, geom, level_image):
        r = geom.read_size
        pos = np.round(np.asarray(xy, dtype=np.float64) / geom.downsample).astype(np.int64)

        def job(i):
            x, y = pos[i]
            return cut_patch(level_image[y:y + r, x:x + r], 0, r, geom.size, self.compress_level)
        indices = range(len(pos))
        results = map(job, indices) if self.workers == 1 else self._get_threads().map(job, indices)
        yield from enumerate(results)
