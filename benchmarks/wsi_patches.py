"""Kept patches per second: 256 px patches with >= 90 % tissue from CMU-1-Small-Region, 1 and 2 workers.

The whole WSI-mode pipeline is timed end to end (thumbnail, tissue mask, candidates, reads, PNG encoding, zip writing).
Baseline, measured in the same run: the per-patch read path common in Python WSI tools (open the slide for
every patch, read_region, convert RGBA -> RGB, save a PNG at PIL's default compression) on the same patches.

    python benchmarks/wsi_patches.py [--repeats 5]
"""

import io
import os
import sys
import tempfile
import time

import click
import openslide

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib import EasyDict  # noqa: E402
from dnnlib import assets  # noqa: E402
from tools.histology import slide_dataset  # noqa: E402
from tools.histology.wsi import open_slide  # noqa: E402

GOAL = 100.0  # patches/s; a widely used library manages about 10 on this slide and machine


def time_pipeline(source, opts, workers, repeats, tmp):
    best, kept = float('inf'), 0
    for r in range(repeats):
        dest = os.path.join(tmp, f'w{workers}-{r}.zip')
        start = time.perf_counter()
        summary = slide_dataset.convert_slides(source, dest, opts, workers=workers, progress=False)
        best = min(best, time.perf_counter() - start)
        kept = summary.kept
        os.remove(dest)
    return kept, best


def time_baseline(path, xy, size, repeats):
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        for x, y in xy:
            slide = openslide.OpenSlide(path)
            img = slide.read_region((int(x), int(y)), 0, (size, size)).convert('RGB')
            buf = io.BytesIO()
            img.save(buf, format='PNG')
            slide.close()
        best = min(best, time.perf_counter() - start)
    return best


@click.command()
@click.option('--repeats', help='Timed runs per setting (best is reported)', type=int, default=5, show_default=True)
@click.option('--stride', help='Grid step in pixels (256 = non-overlapping; smaller gives more patches)',
              type=int, default=256, show_default=True)
def main(repeats, stride):
    """Print kept patches/s for 1 and 2 workers and the ratio to the per-patch baseline."""
    path = assets.fetch('cmu-small-region')
    opts = slide_dataset.default_options(patch_size=256, tissue_min=0.9, stride=stride)
    with tempfile.TemporaryDirectory() as tmp:
        with open_slide(path) as slide:
            plan = slide_dataset.plan_slide(slide, opts)
        xy = plan.xy[plan.kept]
        base_s = time_baseline(path, xy, 256, repeats)
        base_rate = len(xy) / base_s
        print(f'cmu-small-region, 256 px, tissue >= 90 %, stride {stride}: {len(xy)} kept of {len(plan.xy)} candidates')
        print(f'{"setting":<34} {"patches/s":>10} {"vs baseline":>12} {"vs goal":>8}')
        print(f'{"baseline (per-patch open, PNG z6)":<34} {base_rate:>10.1f} {1.0:>11.2f}x {base_rate / GOAL:>7.2f}x')
        # Stored PNGs (level 0) are the default, as in the official tool; level 6 compares like with like.
        for workers, level in ((1, 0), (2, 0), (1, 6)):
            kept, secs = time_pipeline(path, EasyDict(opts, compress_level=level), workers, repeats, tmp)
            assert kept == len(xy)
            rate = kept / secs
            name = f'dataset_tool, {workers} worker(s), PNG z{level}'
            print(f'{name:<34} {rate:>10.1f} {rate / base_rate:>11.2f}x {rate / GOAL:>7.2f}x')
        # The published tissue thresholds: a 1/32 mask (the scanner's stored thumbnail), no ink filter.
        published = EasyDict(opts, published_thresholds=True)
        with open_slide(path) as slide:
            count = len(slide_dataset.plan_slide(slide, published).kept)
        kept, secs = time_pipeline(path, published, 1, repeats, tmp)
        assert kept == count
        rate = kept / secs
        print(f'{"  same, --published-thresholds":<34} {rate:>10.1f} {rate / base_rate:>11.2f}x {rate / GOAL:>7.2f}x')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
