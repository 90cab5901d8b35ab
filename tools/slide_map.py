"""Slide-level anomaly maps: score every tissue patch of a whole-slide image with a GAN trained on normal tissue.

    python -m tools.slide_map --network=net.pkl --encoder=enc.pkl --slide=slides/ --annotations=lesions/ --outdir=maps

Per slide `<name>` the output folder gets
- `<name>.csv`: one row per scored patch (x, y at level 0, size = level-0 extent, tissue fraction, label from the
  annotations or -1, and the score terms of tools.anomaly.score_patches). Rows are appended batch by batch to
  `<name>.csv.partial`, which becomes `<name>.csv` when the slide is done; `--resume` continues a partial file.
- `<name>_map.npy` / `<name>_map.tif`: float32 score raster on the thumbnail grid (NaN where nothing was scored);
- `<name>_overlay.png`: the heat map over the thumbnail with a colour bar and the lesion outlines.
- `<name>.geojson` (QuPath tiles with scores, and the lesion outlines), `<name>_regions.xml` (flagged regions as ASAP
  polygons, when a threshold is given) and `<name>_heatmap.tif` (the map as a pyramidal TIFF over the slide):
  tools/slide_exports.py and tools/heatmap_tiff.py; with --viewer, `<name>_viewer/` (tools/slide_viewer.py).
With annotations, `evaluation.md` and `evaluation.json`: patch-level AUROC/AUPR against the polygon labels and
slide-level scores (max and top-k mean; AUROC over slides when the set has both kinds).

Building blocks come from the dataset tool (tools/histology: slide list and shards, tissue mask, patch grid,
worker-process reading, annotation parsing) and from tools/anomaly (scores); this file strings them together.
"""

import csv
import io
import json
import os
import time

import click
import numpy as np
import PIL.Image
import tqdm

import dnnlib
from dnnlib import EasyDict
from dnnlib.util import UserError
from tools import anomaly, cli_utils, projection
from tools.histology import annotations as ann
from tools.histology import patches as pt
from tools.histology import slide_dataset as sd
from tools.histology import stain
from tools.histology import wsi

CSV_FIELDS = ('index', 'x', 'y', 'size', 'tissue_fraction', 'label') + anomaly.SCORE_FIELDS
CHUNK_BATCHES = 16     # patches handed to the reader at once = CHUNK_BATCHES * batch: bounds memory on huge slides
DEFAULT_TOP_K = 10
DEFAULT_TISSUE_MIN = 0.5
IN_MEMORY_MAX_PIXELS = pt.IN_MEMORY_MAX_PIXELS  # smaller levels are decoded once and cut in memory

#----------------------------------------------------------------------------
# Models and options.

def load_models(network, method='encoder', encoder=None, device=None, score=None, reference_data=None,
                stain_normalize='none'):
    """EasyDict(G, D, E, lpips, w_stats, device, score, reference, stain) for anomaly.score_patches, loaded once for
    all slides (reference: the GAN's training patches for D's minibatch-stddev groups; stain: the normaliser)."""
    score = anomaly.default_score(method) if score is None else score
    G, D, E = anomaly.load_models(network, method, encoder, device, score)
    device = next(G.parameters()).device
    reference, normalizer, _ = anomaly.load_reference(network, D, reference_data, stain_normalize, G.img_resolution)
    w_stats = projection.w_statistics(G) if method != 'encoder' and projection.has_w_space(G) else None
    needs_vgg = anomaly.needs_lpips(method, score)
    lpips = projection.lpips_lib.load_lpips(device) if needs_vgg else None
    return EasyDict(G=G, D=D, E=E, lpips=lpips, w_stats=w_stats, device=device, score=score, reference=reference,
                    stain=normalizer, stain_normalize=stain_normalize)


def map_options(resolution, patch_size=None, level=None, mpp=None, stride=None, tissue_min=DEFAULT_TISSUE_MIN):
    """The dataset tool's options for a full grid of tissue patches (no labels, no sampling limit)."""
    return sd.default_options(patch_size=patch_size or resolution, level=level, mpp=mpp, stride=stride,
                              tissue_min=tissue_min, sampling='grid', label='none')

#----------------------------------------------------------------------------
# Planning: which patches, and their labels from the annotations.

def slide_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def annotation_for(annotations, path, many):
    """The annotation file of one slide: `annotations` is a file (one slide only) or a folder matched by name."""
    if annotations is None:
        return None
    if os.path.isdir(annotations):
        return ann.find_annotation(annotations, slide_name(path))
    if many:
        raise UserError('--annotations must be a folder when several slides are given')
    if not os.path.isfile(annotations):
        raise UserError(f'--annotations: {annotations} does not exist')
    return annotations


def patch_labels(regions, plan):
    """Per kept patch: 1 tumour, 0 normal, -1 undecided (partly tumour, or in an exclusion region). Also sets
    plan.left_out: how many patches were undecided for each reason (an exclusion region wins)."""
    xy = plan.xy[plan.kept]
    plan.left_out = dict(partial_lesion=0, exclusion=0)
    if regions is None:
        return np.full(len(xy), -1, dtype=np.int64)
    tumour, exclusion = [pt.box_fractions(ann.rasterize(regions, kind, plan.mask.shape, plan.cell), plan.cell, xy,
                                          plan.geom.extent) for kind in (ann.TUMOR, ann.EXCLUSION)]
    labels = ann.label_patches(tumour, exclusion)
    plan.left_out = dict(partial_lesion=int(np.sum((labels == ann.LABEL_SKIP) & (exclusion <= 0))),
                         exclusion=int(np.sum((labels == ann.LABEL_SKIP) & (exclusion > 0))))
    return labels


def check_inputs(paths, annotations):
    """Open every slide and parse every annotation file before any model is loaded or file written: bad input
    stops the run with one line at once. Returns the regions per slide (None: no annotation file)."""
    regions = []
    for path in paths:
        with wsi.open_slide(path) as slide:
            dimensions = slide.dimensions
        found = annotation_for(annotations, path, len(paths) > 1)
        if found is not None:
            regions.append(ann.load_annotations(found, dimensions))
        else:  # in an annotation folder, a slide without a file is a normal slide (CAMELYON16 normal_*.tif)
            regions.append(None if annotations is None else [])
    return regions


def plan_map(path, opts, regions=None):
    """Tissue patches of one slide on the grid, with their labels from the annotation regions."""
    with wsi.open_slide(path) as slide:
        plan = sd.plan_slide(slide, opts, level_image=sd.read_level_if_cheap(slide, opts))
    plan.regions = regions
    plan.labels = patch_labels(regions, plan)
    plan.has_tumour = bool(regions) and any(r.kind == ann.TUMOR for r in regions)
    return plan

#----------------------------------------------------------------------------
# Scoring, streamed to the CSV.

def read_partial(path, plan):
    """Rows already written by an interrupted run; checked against this run's plan."""
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    # a run killed while writing can leave a cut-off last line: keep complete rows only
    rows = [r for r in rows if all(r.get(k) not in (None, '') for k in CSV_FIELDS)]
    for row in rows:
        i = int(row['index'])
        if i >= len(plan.kept) or (int(row['x']), int(row['y'])) != tuple(plan.xy[plan.kept[i]].tolist()):
            raise UserError(f'{path}: made with other options (patch {i} is not where this run puts it); '
                            f'delete it or run without --resume')
    return rows


def decode_patches(reader, path, xy, geom, resolution, level_image):
    """Yield uint8 [R, R, 3] patches in order; the reader's PNG output decoded, resized to the network's size."""
    for _index, png in reader.read(path, xy, geom, level_image=level_image):
        with PIL.Image.open(io.BytesIO(png)) as img:
            img = img.convert('RGB')
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), PIL.Image.LANCZOS)
            yield np.asarray(img)


def iterate_batches(reader, path, plan, todo, batch, resolution, level_image):
    """(indices, uint8 patches) batches; the reader gets bounded chunks so a gigapixel slide never queues up."""
    chunk = CHUNK_BATCHES * batch
    for start in range(0, len(todo), chunk):
        ids = todo[start:start + chunk]
        stream = decode_patches(reader, path, plan.xy[plan.kept[ids]], plan.geom, resolution, level_image)
        for b in range(0, len(ids), batch):
            idx = ids[b:b + batch]
            yield idx, np.stack([next(stream) for _ in idx])


def format_row(i, plan, result, k):
    x, y = plan.xy[plan.kept[i]].tolist()
    values = [int(i), x, y, int(round(plan.geom.extent)), f'{plan.fraction[plan.kept[i]]:.6f}', int(plan.labels[i])]
    return values + [repr(float(result[key][k])) for key in anomaly.SCORE_FIELDS]


def score_batch(models, images, batch, kappa=1.0, num_steps=None, method='encoder'):
    """tools.anomaly's scores (and reconstructions) of uint8 patches: the one call both the CSV and the viewer's
    patch images go through, so the two always agree. The patches are stain-normalised first (models.stain); the
    result's `query` holds what was scored."""
    query = stain.apply(models.get('stain'), images)
    result = anomaly.score_patches(models.G, query, method=method, E=models.E, D=models.D, kappa=kappa,
                                   num_steps=num_steps, batch_size=batch, lpips=models.lpips, w_stats=models.w_stats,
                                   progress=False, score=models.score, reference=models.get('reference'))
    result.query = query
    return result


def score_slide(path, plan, models, partial, batch=64, workers=1, kappa=1.0, num_steps=None, method='encoder',
                progress=True, timings=None):
    """Score the kept patches not yet in `partial` and append them to it, flushing after every batch."""
    kept_rows = read_partial(partial, plan) if os.path.exists(partial) else []
    if kept_rows:  # rewrite without any cut-off line before appending
        with dnnlib.util.atomic_write(partial) as tmp:
            with open(tmp, 'w', newline='') as f:
                writer = csv.DictWriter(f, CSV_FIELDS)
                writer.writeheader()
                writer.writerows(kept_rows)
    done = {int(r['index']) for r in kept_rows}
    todo = np.array([i for i in range(len(plan.kept)) if i not in done], dtype=np.int64)
    timings = timings if timings is not None else EasyDict(read=0.0, score=0.0, write=0.0)
    level_image = None
    if len(todo) and _level_fits(plan.geom):
        with wsi.open_slide(path) as slide:
            level_image = slide.read_level(plan.geom.level)
    new_file = not done
    bar = tqdm.tqdm(total=len(plan.kept), initial=len(done), desc=slide_name(path), unit='patch',
                    disable=not progress or not len(plan.kept), dynamic_ncols=True)
    with open(partial, 'a' if done else 'w', newline='') as f, pt.PatchReader(workers) as reader:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(CSV_FIELDS)
        batches = iterate_batches(reader, path, plan, todo, batch, models.G.img_resolution, level_image)
        while True:
            t0 = time.perf_counter()
            item = next(batches, None)
            t1 = time.perf_counter()
            if item is None:
                break
            idx, images = item
            result = score_batch(models, images, batch, kappa=kappa, num_steps=num_steps, method=method)
            t2 = time.perf_counter()
            writer.writerows(format_row(i, plan, result, k) for k, i in enumerate(idx.tolist()))
            f.flush()
            t3 = time.perf_counter()
            timings.read += t1 - t0
            timings.score += t2 - t1
            timings.write += t3 - t2
            bar.update(len(idx))
    bar.close()
    return timings

#----------------------------------------------------------------------------
# The map: a raster on the thumbnail grid and its picture.

def read_scores(csv_path):
    """Structured columns of a slide's CSV: EasyDict of numpy arrays, in patch order."""
    with open(csv_path, newline='') as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r['index']))
    out = EasyDict()
    for key in CSV_FIELDS:
        kind = np.float64 if key in anomaly.SCORE_FIELDS or key == 'tissue_fraction' else np.int64
        out[key] = np.array([r[key] for r in rows], dtype=kind)
    return out


def score_raster(shape, cell, xy, extent, scores):
    """float32 [H, W] on the thumbnail grid: mean score of the patches whose box holds a pixel's centre, else NaN."""
    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.int64)
    h, w = shape
    for (x, y), s in zip(np.asarray(xy).tolist(), np.asarray(scores).tolist()):
        # pixel j's centre (j + 0.5) * cell lies in [x, x + extent)
        j0, j1 = max(0, int(np.ceil(x / cell[0] - 0.5))), min(w, int(np.ceil((x + extent) / cell[0] - 0.5)))
        i0, i1 = max(0, int(np.ceil(y / cell[1] - 0.5))), min(h, int(np.ceil((y + extent) / cell[1] - 0.5)))
        total[i0:i1, j0:j1] += s
        count[i0:i1, j0:j1] += 1
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def save_raster(stem, raster):
    import tifffile
    with dnnlib.util.atomic_write(stem + '.npy') as tmp:
        with open(tmp, 'wb') as f:
            np.save(f, raster)
    with dnnlib.util.atomic_write(stem + '.tif') as tmp:
        tifffile.imwrite(tmp, raster, compression='zlib', metadata=None)


def save_overlay(path, thumb, raster, tumour=None, title=''):
    """Heat map (alpha-blended, empty where nothing was scored) over the thumbnail, colour bar, lesion outlines."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    h, w = raster.shape
    scale = 8.0 / max(h, w)
    fig, ax = plt.subplots(figsize=(max(3.0, w * scale) + 1.4, max(3.0, h * scale) + 0.6), dpi=110)
    ax.imshow(thumb, extent=(0, w, h, 0), interpolation='lanczos')
    finite = raster[np.isfinite(raster)]
    vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    heat = ax.imshow(np.ma.masked_invalid(raster), extent=(0, w, h, 0), cmap='inferno', alpha=0.6,
                     vmin=vmin, vmax=max(vmax, vmin + 1e-12), interpolation='nearest')
    if tumour is not None and tumour.any():
        ax.contour(np.arange(w) + 0.5, np.arange(h) + 0.5, tumour.astype(float), levels=[0.5], colors='cyan',
                   linewidths=1.5)
    fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.03, label='anomaly score')
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    with dnnlib.util.atomic_write(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)


def choose_threshold(threshold=None, threshold_from=None, quantile=0.99):
    """(threshold or None, where it came from): --threshold, or the quantile of the patch scores in slide-map CSVs
    of normal slides (a CSV or a folder of them)."""
    from tools import slide_exports
    if threshold is not None and threshold_from is not None:
        raise UserError('give --threshold or --threshold-from, not both')
    if threshold is not None:
        return float(threshold), '--threshold'
    if threshold_from is None:
        return None, ''
    if os.path.isdir(threshold_from):
        found = sorted(os.path.join(threshold_from, f) for f in os.listdir(threshold_from) if f.endswith('.csv'))
    elif os.path.isfile(threshold_from):
        found = [threshold_from]
    else:
        raise UserError(f'--threshold-from: {threshold_from} does not exist')
    if not found:
        raise UserError(f'--threshold-from: no slide-map CSVs in {threshold_from}')
    arrays = []
    for csv_path in found:
        try:
            arrays.append(read_scores(csv_path).score)
        except (KeyError, ValueError, OSError, csv.Error):
            raise UserError(f'--threshold-from: {csv_path} is not a slide-map CSV') from None
    value = slide_exports.threshold_from_normal(arrays, quantile)
    count = sum(len(a) for a in arrays)
    return value, f'{quantile:g} quantile of {count} patches on {len(found)} normal slide(s)'


def patch_images(path, plan, models, indices, batch=64, workers=1, kappa=1.0, num_steps=None, method='encoder'):
    """Yield (index, query, reconstruction) for the kept patches `indices`, read and scored again as the CSV's were."""
    ids = np.array(sorted(indices), dtype=np.int64)
    if not len(ids):
        return
    level_image = None
    if _level_fits(plan.geom):
        with wsi.open_slide(path) as slide:
            level_image = slide.read_level(plan.geom.level)
    with pt.PatchReader(workers) as reader:
        for idx, images in iterate_batches(reader, path, plan, ids, batch, models.G.img_resolution, level_image):
            result = score_batch(models, images, batch, kappa=kappa, num_steps=num_steps, method=method)
            for k, i in enumerate(idx.tolist()):
                yield i, result.query[k], result.recon[k]


def export_slide(outdir, name, path, plan, scores, stride=None, threshold=None, threshold_source='', viewer=None,
                 score_name='score', progress=True):
    """The files for other viewers: QuPath GeoJSON, ASAP XML regions (with a threshold), the heat-map TIFF; and with
    `viewer` (EasyDict(models, max_level, patches, batch, workers, kappa, num_steps, method)) the browser viewer.
    Returns the viewer's build summary or None."""
    from tools import heatmap_tiff, slide_exports, slide_viewer
    with wsi.open_slide(path) as slide:
        dimensions, mpp = slide.dimensions, slide.mpp
    grid = slide_exports.PatchGrid(scores.x, scores.y, plan.geom.extent, slide_exports.grid_step(plan.geom, stride))
    fields = anomaly.SCORE_FIELDS + ('tissue_fraction',) + (('label',) if plan.regions is not None else ())
    slide_exports.write_geojson(os.path.join(outdir, name + '.geojson'), scores, threshold, plan.regions, fields)
    regions_xml = os.path.join(outdir, name + '_regions.xml')
    regions = []
    if threshold is not None:
        regions = slide_exports.write_regions_xml(regions_xml, grid, scores.score, threshold)
    elif os.path.exists(regions_xml):
        os.remove(regions_xml)  # from an earlier run with a threshold: it would not match this one
    vmin, vmax = heatmap_tiff.colour_range(scores.score)
    heatmap_tiff.write_heatmap_tiff(os.path.join(outdir, name + '_heatmap.tif'), grid, scores.score, dimensions,
                                    mpp=mpp, vmin=vmin, vmax=vmax, description=dict(score=score_name, slide=name))
    if viewer is None:
        return None
    chosen = slide_viewer.image_patches(scores, viewer.patches)
    items = patch_images(path, plan, viewer.models, chosen, batch=viewer.batch, workers=viewer.workers,
                         kappa=viewer.kappa, num_steps=viewer.num_steps, method=viewer.method)
    lesions = [ring for r in (plan.regions or []) if r.kind == ann.TUMOR for ring in r.rings]
    outlines = [ring for r in regions for ring in [r.outline] + r.holes]
    return slide_viewer.build_viewer(
        os.path.join(outdir, name + '_viewer'), path, name, scores, grid,
        heatmap_tiff.colourise(grid.cells(scores.score), vmin, vmax), (vmin, vmax), heatmap_tiff.DEFAULT_CMAP,
        dimensions, mpp, score_name, threshold=threshold, threshold_source=threshold_source,
        lesions=lesions, regions=outlines, patch_items=items, max_level=viewer.max_level, progress=progress)


def draw_map(outdir, name, plan, scores):
    raster = score_raster(plan.mask.shape, plan.cell, np.stack([scores.x, scores.y], axis=1), plan.geom.extent,
                          scores.score)
    stem = os.path.join(outdir, name + '_map')
    save_raster(stem, raster)
    tumour = ann.rasterize(plan.regions, ann.TUMOR, plan.mask.shape, plan.cell) if plan.regions else None
    save_overlay(os.path.join(outdir, name + '_overlay.png'), plan.thumb, raster, tumour,
                 title=f'{name}: {len(scores.score)} patches')
    return raster

#----------------------------------------------------------------------------
# Evaluation against the annotations.

def slide_scores(scores, top_k=DEFAULT_TOP_K):
    """(max, mean of the top_k highest) patch scores of a slide."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    return float(s[0]), float(s[:top_k].mean())


def evaluate(slides, top_k=DEFAULT_TOP_K):
    """slides: list of EasyDict(name, has_tumour, scores). Patch-level metrics over all labelled patches, slide-level
    max / top-k mean per slide and their AUROC when both normal and tumour slides are present."""
    from sklearn import metrics
    labels = np.concatenate([s.scores.label for s in slides])
    values = np.concatenate([s.scores.score for s in slides])
    decided = labels >= 0
    result = dict(num_slides=len(slides), num_patches=int(len(labels)), num_tumour_patches=int((labels == 1).sum()),
                  num_normal_patches=int((labels == 0).sum()), top_k=top_k,
                  left_out={k: sum(s.get('left_out', {}).get(k, 0) for s in slides)
                            for k in ('partial_lesion', 'exclusion')})
    if set(np.unique(labels[decided])) == {0, 1}:
        found = anomaly.detection_metrics(labels[decided], values[decided])
        result.update(patch_AUROC=found['AUROC'], patch_AUPR=found['AUPR'], patch_F1_oracle=found['F1_oracle'])
    per_slide = []
    for s in slides:
        peak, top = slide_scores(s.scores.score, top_k) if len(s.scores.score) else (float('nan'),) * 2
        per_slide.append(dict(slide=s.name, tumour=int(s.has_tumour), patches=int(len(s.scores.score)),
                              max=peak, top_k_mean=top))
    slide_labels = np.array([p['tumour'] for p in per_slide])
    if len(set(slide_labels.tolist())) == 2:
        for key in ('max', 'top_k_mean'):
            result[f'slide_AUROC_{key}'] = float(metrics.roc_auc_score(slide_labels, [p[key] for p in per_slide]))
    result['slides'] = per_slide
    return result


def markdown_table(result):
    def num(v):
        return '–' if v is None else f'{v:.4f}'
    lines = [f'| metric | value |', '|---|---|']
    for key in ('patch_AUROC', 'patch_AUPR', 'patch_F1_oracle', 'slide_AUROC_max', 'slide_AUROC_top_k_mean'):
        lines.append(f'| {key} | {num(result.get(key))} |')
    lines += ['', f'| slide | tumour | patches | max | top-{result["top_k"]} mean |', '|---|---|---|---|---|']
    for p in result['slides']:
        lines.append(f'| {p["slide"]} | {p["tumour"]} | {p["patches"]} | {num(p["max"])} | {num(p["top_k_mean"])} |')
    return '\n'.join(lines) + '\n'

#----------------------------------------------------------------------------
# All slides.

def map_slides(network, slide, outdir, encoder=None, method='encoder', patch_size=None, level=None, mpp=None,
               stride=None, tissue_min=DEFAULT_TISSUE_MIN, batch=64, workers=1, shard=None, annotations=None,
               resume=False, kappa=1.0, num_steps=None, top_k=DEFAULT_TOP_K, device=None, progress=True, score=None,
               threshold=None, threshold_from=None, threshold_quantile=0.99, viewer=False, viewer_max_level=None,
               viewer_patches=None, reference_data=None, stain_normalize='none'):
    """Map every slide of `slide` (file, folder or .txt list; this shard's share) into `outdir`.

    Returns EasyDict(slides=[...], timings, evaluation or None)."""
    paths = sd.shard_slides(sd.find_slides(slide), shard)
    if annotations is not None and os.path.isdir(annotations):
        ann.check_annotation_folder(annotations, [slide_name(p) for p in sd.find_slides(slide)])
    all_regions = check_inputs(paths, annotations)
    threshold, threshold_source = choose_threshold(threshold, threshold_from, threshold_quantile)
    if viewer and viewer_max_level is not None:
        from tools import slide_viewer
        for path in paths:
            with wsi.open_slide(path) as slide:
                slide_viewer.check_max_level(viewer_max_level, slide.dimensions, path)
    models = load_models(network, method, encoder, device, score, reference_data, stain_normalize)
    resolution = models.G.img_resolution
    opts = map_options(resolution, patch_size, level, mpp, stride, tissue_min)
    if batch < 1 or workers < 1:
        raise UserError('--batch and --workers must be at least 1')
    timings = EasyDict(read=0.0, score=0.0, write=0.0, patches=0)
    done = []
    viewer_opts = None
    if viewer:
        from tools import slide_viewer
        viewer_opts = EasyDict(models=models, max_level=viewer_max_level, batch=batch, workers=workers, kappa=kappa,
                               num_steps=num_steps, method=method, patches=slide_viewer.DEFAULT_PATCHES
                               if viewer_patches is None else viewer_patches)
    for path, regions in zip(paths, all_regions):
        name = slide_name(path)
        plan = plan_map(path, opts, regions)
        cli_utils.make_outdir(outdir)
        final = os.path.join(outdir, name + '.csv')
        partial = final + '.partial'
        if not resume:
            for stale in (final, partial):
                if os.path.exists(stale):
                    os.remove(stale)
        if not os.path.exists(final):
            if not len(plan.kept):
                print(f'{name}: no tissue patches; nothing to map')
            score_slide(path, plan, models, partial, batch=batch, workers=workers, kappa=kappa, num_steps=num_steps,
                        method=method, progress=progress, timings=timings)
            os.replace(partial, final)
        scores = read_scores(final)
        if len(scores.index) != len(plan.kept):
            raise UserError(f'{final}: holds {len(scores.index)} patches, this run plans {len(plan.kept)}; '
                            f'made with other options?')
        t0 = time.perf_counter()
        draw_map(outdir, name, plan, scores)
        built = export_slide(outdir, name, path, plan, scores, stride=opts.stride, threshold=threshold,
                             threshold_source=threshold_source, viewer=viewer_opts, score_name=models.score,
                             progress=progress)
        if built is not None:
            print(f'{name}: viewer in {built.seconds:.1f} s, {built.bytes / 2 ** 20:.1f} MB ({built.tiles} tiles, '
                  f'levels 0..{built.max_level} of {built.top_level}, images of {built.images} patches; tiles '
                  f'{built.tile_seconds:.1f} s, {built.tile_bytes / 2 ** 20:.1f} MB)')
        timings.write += time.perf_counter() - t0
        timings.patches += len(scores.index)
        done.append(EasyDict(name=name, path=path, has_tumour=plan.has_tumour, scores=scores,
                             annotated=plan.regions is not None, left_out=plan.left_out))
    evaluation = None
    if annotations is not None and done:
        evaluation = evaluate(done, top_k)
        evaluation.update(method=method, score=models.score, network=str(network), encoder=None if encoder is None else str(encoder),
                          stain_normalize=stain_normalize)
        with dnnlib.util.atomic_write(os.path.join(outdir, 'evaluation.json')) as tmp:
            with open(tmp, 'w') as f:
                json.dump(evaluation, f, indent=2)
        with dnnlib.util.atomic_write(os.path.join(outdir, 'evaluation.md')) as tmp:
            with open(tmp, 'w') as f:
                f.write(markdown_table(evaluation))
    return EasyDict(slides=done, timings=timings, evaluation=evaluation)


def _level_fits(geom):
    # Small levels are decoded once and cut in memory (the dataset tool's shortcut); big ones go through workers.
    lw, lh = geom.level_dims
    return lw * lh <= IN_MEMORY_MAX_PIXELS

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', required=True, help='GAN snapshot trained on normal tissue (.pkl or .safetensors)')
@click.option('--slide', 'slide', required=True, help='A slide file, a folder of slides or a .txt list of slide paths')
@click.option('--outdir', required=True, metavar='DIR', help='Where the CSVs, maps, overlays and evaluation go')
@click.option('--encoder', metavar='PKL', help='Encoder snapshot from tools.train_encoder (needed by encoder, hybrid)')
@click.option('--method', type=click.Choice(projection.METHODS), default='encoder', show_default=True,
              help='encoder: one forward pass per patch; lpips / hybrid: projector optimisation, much slower '
                   '(every method is scored with the f-AnoGAN score unless --score says otherwise)')
@click.option('--score', type=click.Choice(anomaly.SCORES), help=anomaly.SCORE_HELP)
@click.option('--patch-size', type=click.IntRange(min=pt.MIN_PATCH_SIZE),
              help='Patch side in pixels at --level/--mpp; resized to the network\'s resolution  [default: that '
                   'resolution]')
@click.option('--level', type=click.IntRange(min=0), help='Pyramid level to read  [default: 0]')
@click.option('--mpp', type=click.FloatRange(min=0, min_open=True), help='Read at this resolution (um/px) instead')
@click.option('--stride', type=click.IntRange(min=1), help='Grid step in patch pixels  [default: patch size]')
@click.option('--tissue-min', type=click.FloatRange(0, 1), default=DEFAULT_TISSUE_MIN, show_default=True,
              help='Score a patch when at least this fraction of it is tissue')
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Patches scored together')
@click.option('--workers', type=click.IntRange(min=1), default=2, show_default=True,
              help='Processes reading regions from the slide')
@click.option('--shard', metavar='i/n', help='Only share i of n of the sorted slide list (for job arrays)')
@click.option('--annotations', metavar='PATH',
              help='ASAP XML / GeoJSON lesion outlines: a file (one slide) or a folder matched by slide name; '
                   'slides without a file count as normal. Adds outlines and the evaluation')
@click.option('--resume', is_flag=True, help='Keep finished slides and continue partial CSVs instead of starting over')
@click.option('--kappa', type=click.FloatRange(min=0), default=1.0, show_default=True,
              help='Weight of the discriminator-feature term (fanogan, perceptual)')
@click.option('--num-steps', type=click.IntRange(min=1), help='Projection steps (lpips, hybrid)')
@click.option('--top-k', type=click.IntRange(min=1), default=DEFAULT_TOP_K, show_default=True,
              help='Slide score: mean of the k highest patch scores (reported beside the maximum)')
@click.option('--threshold', type=float, help='Flag patches scoring at least this: classes in the GeoJSON, regions in '
              '<slide>_regions.xml  [default: from --threshold-from, else nothing flagged]')
@click.option('--threshold-from', metavar='PATH', help='Slide-map CSVs of normal slides (a CSV or a folder): the '
              'threshold is the --threshold-quantile of their patch scores')
@click.option('--threshold-quantile', type=click.FloatRange(0, 1, min_open=True), default=0.99, show_default=True,
              help='Fraction of normal patches that stay below the threshold chosen with --threshold-from')
@click.option('--viewer', is_flag=True, help='Also write <slide>_viewer/index.html: deep-zoom slide under the heat map, '
              'outlines, and each patch\'s images and scores on a click (opens from file://, no server)')
@click.option('--viewer-max-level', type=click.IntRange(min=0), help='Finest deep-zoom level of the viewer\'s tiles '
              '(the slide is level ceil(log2(max side)))  [default: the level nearest 2 um/px]')
@click.option('--viewer-patches', type=click.IntRange(min=0), help='Keep query / reconstruction / residual images for '
              'this many highest-scoring patches  [default: 500]')
@click.option('--reference-data', metavar='PATH',
              help='The GAN\'s training patches (folder or zip): the minibatch-stddev reference group and the stain '
                   'target  [default: the path the network pickle records]')
@click.option('--stain-normalize', type=click.Choice(stain.METHODS), default='none', show_default=True, help=stain.HELP)
@click.option('--device', help='torch device  [default: cuda if available]')
def main(**kwargs):
    """Score every tissue patch of whole-slide images under a GAN trained on normal tissue and draw anomaly maps.

    Writes per slide a CSV of patch scores, a score raster on the thumbnail grid (.npy, .tif) and an overlay PNG;
    with --annotations also evaluation.json / evaluation.md and one JSON line on stdout.
    """
    try:
        found = map_slides(**kwargs)
    except UserError as err:
        raise click.ClickException(str(err))
    t = found.timings
    total = t.read + t.score + t.write
    if t.patches:
        print(f'{t.patches} patches in {len(found.slides)} slide(s); time: reading {t.read:.1f} s, scoring '
              f'{t.score:.1f} s, writing {t.write:.1f} s' + (f' ({t.patches / total:.1f} patches/s)' if total else ''))
    if found.evaluation is not None:
        print(markdown_table(found.evaluation), end='')
        print(json.dumps({k: v for k, v in found.evaluation.items() if k != 'slides'}))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
