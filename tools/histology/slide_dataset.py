"""Whole-slide images -> tissue-filtered, optionally labelled patch dataset (the WSI mode of dataset_tool.py).

Per slide: thumbnail -> tissue mask -> candidate patches -> tissue fraction and Fig 2 class -> labels from
annotations -> optional random subset -> pixels read in worker processes -> PNGs in a dataset zip.
Randomness is seeded per slide (seed, slide name), so a shard of the slide list gives exactly the patches
that slide gets in a run over all slides.
"""

import glob
import os
import shutil
import sys
import time
import zlib

import numpy as np
import tqdm

from dnnlib import EasyDict
from dnnlib.util import UserError

from . import annotations as ann
from . import patches as pt
from . import tissue
from .preview import save_preview
from .wsi import IMAGE_EXTENSIONS, PLAUSIBLE_MPP, SLIDE_EXTENSIONS, is_slide_file, open_slide

LABEL_MODES = ('none', 'normal', 'tumor', 'from-annotations')
SAMPLING_MODES = ('grid', 'random')
PREVIEW_SIDE = 1024       # px on the long side of the preview's picture of the slide
INK_PATCH_MAX = 0.01      # a kept patch may touch marker ink on at most this share of its area
# Zip bytes per patch beyond its pixels: PNG chunks, local + central zip headers, the metadata.json entry.
PATCH_OVERHEAD_BYTES = 600
# PNG size relative to the raw pixels at zlib level >= 1 (H&E with the Up filter: about 0.6-0.75).
COMPRESSED_SHARE = 0.8


def default_options(**kwargs) -> EasyDict:
    opts = EasyDict(patch_size=256, level=None, mpp=None, tissue_min=0.9, tissue_method='deep-histopath',
                    downscale=tissue.DEFAULT_DOWNSCALE, published_thresholds=False, ink_filter=None,
                    min_tissue_area=tissue.DEFAULT_MIN_OBJECT_UM2, sampling='grid', stride=None, no_overlap=False,
                    patches_per_slide=None, label='none', tumor_min=0.5, seed=0, shard=None,
                    compress_level=pt.PNG_COMPRESS_LEVEL)
    for key, value in kwargs.items():
        if key not in opts:
            raise TypeError(f'unknown option {key!r}')
        opts[key] = value
    return opts


# ----------------------------------------------------------------------------
# Which slides.


def _is_glob(source: str) -> bool:
    return any(ch in source for ch in '*?[')


def is_wsi_source(source: str) -> bool:
    """True when `source` names slides: a slide or single image file, a folder holding slides, a glob matching
    slides or images, or a .txt list. A folder of plain images is an image dataset (the official mode)."""
    accepted = SLIDE_EXTENSIONS + IMAGE_EXTENSIONS + ('.txt',)
    if _is_glob(source):
        return any(p.lower().endswith(accepted) for p in glob.glob(source, recursive=True))
    if os.path.isdir(source):
        return any(is_slide_file(f) for _root, _dirs, files in os.walk(source) for f in files)
    return source.lower().endswith(accepted)


def find_slides(source: str) -> list[str]:
    """Sorted absolute slide paths named by `source`."""
    accepted = SLIDE_EXTENSIONS + IMAGE_EXTENSIONS
    if _is_glob(source):
        paths = [p for p in glob.glob(source, recursive=True) if os.path.isfile(p) and p.lower().endswith(accepted)]
    elif os.path.isdir(source):
        paths = [os.path.join(root, f) for root, _dirs, files in os.walk(source) for f in files if is_slide_file(f)]
    elif source.lower().endswith('.txt'):
        if not os.path.isfile(source):
            raise UserError(f'{source}: no such slide list')
        base = os.path.dirname(os.path.abspath(source))
        with open(source, encoding='utf-8') as f:
            lines = [ln.strip() for ln in f]
        paths = [os.path.join(base, ln) for ln in lines if ln and not ln.startswith('#')]
        for p in paths:
            if not os.path.isfile(p):
                raise UserError(f'{source}: listed slide {p} does not exist')
    elif os.path.isfile(source):
        paths = [source]
    else:
        raise UserError(f'{source}: no such file or folder')
    paths = sorted(os.path.abspath(p) for p in paths)
    if not paths:
        raise UserError(f'{source}: no slides found (extensions {" ".join(SLIDE_EXTENSIONS)})')
    names = {}
    for p in paths:
        name = os.path.splitext(os.path.basename(p))[0]
        if name in names:
            raise UserError(f'two slides share the name {name}: {names[name]} and {p}')
        names[name] = p
    return paths


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        i, n = (int(v) for v in shard.split('/'))
    except ValueError:
        raise UserError(f'--shard must look like i/n (e.g. 0/4), got {shard!r}') from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f'--shard {shard}: need 0 <= i < n')
    return i, n


def shard_slides(paths: list[str], shard: str | None) -> list[str]:
    """Contiguous share i of n of the sorted list, so merging shards 0..n-1 in order restores the full order."""
    parsed = parse_shard(shard)
    if parsed is None:
        return paths
    i, n = parsed
    bounds = [len(paths) * k // n for k in range(n + 1)]
    return paths[bounds[i]:bounds[i + 1]]


# ----------------------------------------------------------------------------
# One slide.


def slide_rng(seed: int, slide_name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(slide_name.encode('utf-8'))])


def ink_filter_on(opts: EasyDict) -> bool:
    """--ink-filter unless given: on, except with --published-thresholds (which reproduces the published masks)."""
    return (not opts.published_thresholds) if opts.ink_filter is None else bool(opts.ink_filter)


def thumbnail_downscale(slide, opts: EasyDict) -> float:
    return tissue.thumbnail_downscale(slide.dimensions, opts.downscale, published=opts.published_thresholds)


def mask_scale(slide, opts: EasyDict, thumb_shape: tuple[int, int], geom: EasyDict) -> EasyDict:
    """The tissue detector's sizes for this slide's thumbnail: published pixels, or from its mpp and patch size."""
    if opts.published_thresholds:
        return tissue.published_scale()
    w, h = slide.dimensions
    cell = (w / thumb_shape[1], h / thumb_shape[0])
    thumb_mpp = slide.mpp * (cell[0] + cell[1]) / 2 if slide.mpp is not None and slide.mpp_plausible else None
    patch_px = (geom.extent / cell[0]) * (geom.extent / cell[1])
    return tissue.adaptive_scale(thumb_shape, thumb_mpp, patch_px, opts.min_tissue_area)


def check_options(opts: EasyDict) -> None:
    if opts.tissue_method not in tissue.TISSUE_METHODS:
        raise UserError(f'unknown --tissue-method {opts.tissue_method!r}')
    if not 0 <= opts.tissue_min <= 1:
        raise UserError(f'--tissue-min must be in [0, 1], got {opts.tissue_min}')
    if not opts.min_tissue_area > 0:
        raise UserError(f'--min-tissue-area must be positive, got {opts.min_tissue_area}')
    if not opts.downscale >= 1:
        raise UserError(f'--downscale must be at least 1, got {opts.downscale}')


def plan_slide(slide, opts: EasyDict, regions: list | None = None, level_image: np.ndarray | None = None) -> EasyDict:
    """Everything about a slide's patches except their pixels.

    `level_image`: the patch level already decoded whole; the thumbnail is made from it when that level is
    the one the thumbnail would be read from anyway (so the mask does not depend on this shortcut).
    """
    check_options(opts)
    geom = pt.patch_geometry(slide, opts.patch_size, level=opts.level, mpp=opts.mpp)
    downscale = thumbnail_downscale(slide, opts)
    if level_image is not None and slide.best_level_for_downsample(downscale) == geom.level:
        thumb = slide.thumbnail(downscale, level_image=level_image, level=geom.level)
    else:
        thumb = slide.thumbnail(downscale)
    found = tissue.detect_tissue(thumb, opts.tissue_method, mask_scale(slide, opts, thumb.shape[:2], geom),
                                 ink_filter=ink_filter_on(opts))
    mask, ink = found.tissue, found.ink
    w, h = slide.dimensions
    cell = (w / mask.shape[1], h / mask.shape[0])
    rng = slide_rng(opts.seed, slide.name)
    if opts.sampling == 'grid':
        xy = pt.grid_candidates(geom, opts.stride)
    elif opts.sampling == 'random':
        count = len(pt.grid_candidates(geom))
        xy = pt.random_candidates(geom, count, rng, no_overlap=opts.no_overlap)
    else:
        raise UserError(f'unknown sampling {opts.sampling!r}; choose one of {", ".join(SAMPLING_MODES)}')
    fraction = pt.box_fractions(mask, cell, xy, geom.extent)
    classes = pt.classify(fraction)
    keep = fraction >= opts.tissue_min
    if ink.any():
        keep &= pt.box_fractions(ink, cell, xy, geom.extent) <= INK_PATCH_MAX
    if not mask.any():
        keep[:] = False  # no tissue at all: even --tissue-min 0 keeps nothing

    labels = np.full(len(xy), None, dtype=object)
    tumor_fraction = None
    if opts.label in ('normal', 'tumor'):
        labels[:] = ann.LABEL_NORMAL if opts.label == 'normal' else ann.LABEL_TUMOR
    if regions is not None:
        tumor_fraction = pt.box_fractions(ann.rasterize(regions, ann.TUMOR, mask.shape, cell), cell, xy, geom.extent)
        excl_fraction = pt.box_fractions(ann.rasterize(regions, ann.EXCLUSION, mask.shape, cell), cell, xy,
                                         geom.extent)
        from_ann = ann.label_patches(tumor_fraction, excl_fraction, opts.tumor_min)
        if opts.label == 'from-annotations':
            labels[:] = from_ann
            keep &= from_ann != ann.LABEL_SKIP
        elif opts.label in ('normal', 'tumor'):
            # A "normal" dataset from an annotated slide takes only annotation-normal patches, and vice versa.
            keep &= from_ann == labels.astype(np.int64)
        else:
            keep &= from_ann != ann.LABEL_SKIP
    elif opts.label == 'from-annotations':
        labels[:] = ann.LABEL_NORMAL  # no annotation file: the whole slide is normal (CAMELYON16 normal_*.tif)

    kept = np.flatnonzero(keep)
    if opts.patches_per_slide is not None and len(kept) > opts.patches_per_slide:
        kept = np.sort(rng.choice(kept, size=opts.patches_per_slide, replace=False))
    return EasyDict(geom=geom, thumb=thumb, mask=mask, ink=ink, cell=cell, xy=xy, fraction=fraction,
                    classes=classes, labels=labels, tumor_fraction=tumor_fraction, kept=kept)


def read_level_if_cheap(slide, opts: EasyDict) -> np.ndarray | None:
    """The whole patch level, when the thumbnail has to decode that level anyway and it fits in memory."""
    geom = pt.patch_geometry(slide, opts.patch_size, level=opts.level, mpp=opts.mpp)
    lw, lh = geom.level_dims
    downscale = thumbnail_downscale(slide, opts)
    if lw * lh > pt.IN_MEMORY_MAX_PIXELS or slide.best_level_for_downsample(downscale) != geom.level:
        return None
    if slide.has_associated_thumbnail(downscale):
        return None
    return slide.read_level(geom.level)


def patch_metadata(slide, plan: EasyDict, index: int) -> dict:
    g = plan.geom
    label = plan.labels[index]
    meta = dict(slide=slide.name, level=int(g.level), x=int(plan.xy[index, 0]), y=int(plan.xy[index, 1]),
                size=int(g.size), read_size=int(g.read_size), mpp=None if g.mpp is None else float(g.mpp),
                tissue_fraction=round(float(plan.fraction[index]), 6), label=None if label is None else int(label))
    if plan.tumor_fraction is not None:
        meta['tumor_fraction'] = round(float(plan.tumor_fraction[index]), 6)
    return meta


# ----------------------------------------------------------------------------
# Sanity limits: implausible resolutions, output larger than the free disk space.


def resolution_warning(slide) -> str | None:
    if slide.mpp_plausible:
        return None
    return (f'{slide.name}: the file says {slide.mpp:g} um/px, outside the {PLAUSIBLE_MPP[0]:g}-{PLAUSIBLE_MPP[1]:g} '
            f'um/px that scanners produce; its resolution metadata is probably wrong (tissue sizes are judged '
            f'without it; prefer --level over --mpp for this slide)')


def estimate_bytes(count: int, size: int, compress_level: int) -> int:
    """About how many bytes `count` patches of `size` px add to the dataset zip."""
    raw = size * (3 * size + 1)  # stored PNG rows, each with its filter byte
    return int(count * (raw * (1.0 if compress_level == 0 else COMPRESSED_SHARE) + PATCH_OVERHEAD_BYTES))


def free_bytes(path: str) -> int:
    """Free space on the file system that will hold `path` (its nearest existing folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return shutil.disk_usage(folder).free


def check_free_space(dest: str, needed: int, what: str) -> None:
    free = free_bytes(dest)
    if needed > free:
        raise UserError(f'{what} would need about {_human(needed)} but only {_human(free)} is free at '
                        f'{os.path.dirname(os.path.abspath(dest))}; nothing written (fewer patches: '
                        f'--patches-per-slide, a larger --stride, or a coarser --level/--mpp)')


def _human(n: float) -> str:
    for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
        if n < 1000 or unit == 'TB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1000
    return ''


def _warn(message: str) -> None:
    tqdm.tqdm.write(f'Warning: {message}', file=sys.stderr)


# ----------------------------------------------------------------------------
# All slides.


def convert_slides(source: str, dest: str, opts: EasyDict, annotations_dir: str | None = None, workers: int = 1,
                   preview_dir: str | None = None, overwrite: bool = False, progress: bool = True) -> EasyDict:
    """Write the dataset zip for `source` (or this shard's share of it); returns the run summary."""
    from .writer import DatasetWriter, check_dest

    check_dest(dest, overwrite)
    if opts.label not in LABEL_MODES:
        raise UserError(f'unknown --label {opts.label!r}; choose one of {", ".join(LABEL_MODES)}')
    if opts.patches_per_slide is not None and opts.patches_per_slide < 1:
        raise UserError(f'--patches-per-slide must be at least 1, got {opts.patches_per_slide}')
    if opts.label == 'from-annotations' and annotations_dir is None:
        raise UserError('--label=from-annotations needs --annotations')
    check_options(opts)
    all_slides = find_slides(source)
    if annotations_dir is not None:
        ann.check_annotation_folder(annotations_dir, [os.path.splitext(os.path.basename(p))[0] for p in all_slides])
    slides = shard_slides(all_slides, opts.shard)
    if not slides:
        raise UserError(f'--shard {opts.shard}: this share of the {len(all_slides)} slides is empty')

    stored_opts = {k: v for k, v in opts.items() if not (k == 'shard' and v is None)}
    summary = EasyDict(slides=len(slides), candidates=0, classes=dict.fromkeys(pt.CLASS_NAMES, 0),
                       kept=0, labels={}, seconds=0.0, skipped_slides=[], warnings=[])
    start = time.time()
    slide_info = {}
    with DatasetWriter(dest, overwrite=overwrite) as writer, pt.PatchReader(workers, opts.compress_level) as reader:
        for path in tqdm.tqdm(slides, desc='slides', unit='slide', disable=not progress or len(slides) == 1,
                              dynamic_ncols=True):
            with open_slide(path) as slide:
                regions = None
                if annotations_dir is not None:
                    ann_path = ann.find_annotation(annotations_dir, slide.name)
                    regions = ann.load_annotations(ann_path, slide.dimensions) if ann_path is not None else None
                level_image = read_level_if_cheap(slide, opts)
                plan = plan_slide(slide, opts, regions, level_image=level_image)
                warning = resolution_warning(slide)  # after planning: a refused --mpp gets one line, no warning
                if warning is not None:
                    summary.warnings.append(warning)
                    if progress:
                        _warn(warning)
                # Before a single pixel is read: would this slide's patches still fit on the disk?
                check_free_space(dest, estimate_bytes(len(plan.kept), plan.geom.size, opts.compress_level),
                                 f'{slide.name}: {len(plan.kept)} patches of {plan.geom.size} px')
                if preview_dir is not None:
                    # Sharper than the mask's thumbnail: about PREVIEW_SIDE px on the long side.
                    picture = slide.thumbnail(max(1.0, max(slide.dimensions) / PREVIEW_SIDE))
                    save_preview(os.path.join(preview_dir, slide.name + '.png'), picture, plan.mask,
                                 slide.dimensions, plan.xy, plan.geom.extent, plan.classes,
                                 title=_preview_title(slide, plan), ink=plan.ink)
                summary.candidates += len(plan.xy)
                for cls, name in enumerate(pt.CLASS_NAMES):
                    summary.classes[name] += int((plan.classes == cls).sum())
                if not plan.mask.any():
                    summary.skipped_slides.append(f'{slide.name}: no tissue found')
                slide_info[slide.name] = dict(slide.describe(), candidates=len(plan.xy), kept=len(plan.kept),
                                              annotations=regions is not None)
                bar = tqdm.tqdm(total=len(plan.kept), desc=slide.name, unit='patch', disable=not progress,
                                leave=False, dynamic_ncols=True)
                with bar:
                    for local, png in reader.read(path, plan.xy[plan.kept], plan.geom, level_image=level_image):
                        index = int(plan.kept[local])
                        meta = patch_metadata(slide, plan, index)
                        writer.add(png, meta['label'], meta)
                        key = 'unlabelled' if meta['label'] is None else ('tumor' if meta['label'] else 'normal')
                        summary.labels[key] = summary.labels.get(key, 0) + 1
                        bar.update(1)
        if writer.count == 0:
            raise UserError(f'{source}: no patches kept (no tissue, or none with at least {opts.tissue_min:.0%} '
                            f'tissue and a usable label); nothing written')
        writer.finish(slides=slide_info, options=stored_opts, labelled=opts.label != 'none')
        summary.kept = writer.count
    summary.seconds = time.time() - start
    return summary


def _preview_title(slide, plan) -> str:
    mpp = f'{plan.geom.mpp:.3f} µm/px' if plan.geom.mpp is not None else 'mpp unknown'
    return (f'{slide.name}  {slide.dimensions[0]}x{slide.dimensions[1]}  patch {plan.geom.size} px, level '
            f'{plan.geom.level}, {mpp}  kept {len(plan.kept)} of {len(plan.xy)}')


def format_summary(summary: EasyDict) -> str:
    rate = summary.kept / max(summary.seconds, 1e-9)
    classes = ', '.join(f'{k} {v}' for k, v in summary.classes.items())
    labels = ', '.join(f'{k} {v}' for k, v in sorted(summary.labels.items())) or 'none'
    lines = [f'Slides: {summary.slides}   candidates: {summary.candidates} ({classes})',
             f'Kept: {summary.kept} patches ({labels})   in {summary.seconds:.1f} s, {rate:.1f} patches/s']
    lines += [f'Skipped {s}' for s in summary.skipped_slides]
    return '\n'.join(lines)
