"""Make training datasets: image folders / zips (the official StyleGAN2-ADA modes) and whole-slide images
(tissue-filtered, optionally labelled patches). Shard outputs merge into one dataset.

Examples:

\b
# Official mode: a folder of images -> 256x256 dataset zip.
python dataset_tool.py --source=~/downloads/tiles --dest=~/datasets/tiles-256.zip --resolution=256x256 \\
    --transform=center-crop

\b
# WSI mode: CAMELYON16 normal-tissue patches, 64 px at level 0, at most 1000 per slide.
python dataset_tool.py --source=~/camelyon16/training/normal --dest=~/datasets/c16-normal-64.zip \\
    --patch-size=64 --level=0 --patches-per-slide=1000 --label=normal --workers=8

\b
# A SLURM array of 4 tasks, then one merge.
python dataset_tool.py --source=slides.txt --dest=shard${SLURM_ARRAY_TASK_ID}.zip --shard=${SLURM_ARRAY_TASK_ID}/4
python dataset_tool.py merge --dest=all.zip shard0.zip shard1.zip shard2.zip shard3.zip
"""

import io
import json
import math
import os
import re
import zipfile

import click
import numpy as np
import PIL.Image
import tqdm

from dnnlib.util import UserError
from tools.histology import slide_dataset
from tools.histology.writer import DatasetWriter, check_dest, merge_datasets

# ----------------------------------------------------------------------------
# Official mode: images from a folder or zip, optional crop/resize, strict size and channel checks.


def is_image_ext(fname: str) -> bool:
    ext = os.path.splitext(fname)[1].lower()
    return ext in PIL.Image.EXTENSION


def _load_labels(read_json, source: str) -> dict | None:
    try:
        data = read_json()
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f'{source}: broken dataset.json ({err})') from None
    if data is None:
        return None
    labels = data.get('labels') if isinstance(data, dict) else None
    if labels is None:
        return None
    return {fname.replace('\\', '/'): label for fname, label in labels}


def open_image_folder(source_dir: str, max_images: int | None):
    PIL.Image.init()
    files = sorted(os.path.join(root, f) for root, _dirs, fs in os.walk(source_dir) for f in fs)
    images = [f for f in files if is_image_ext(f)]
    if not images:
        raise UserError(f'{source_dir}: no images found')
    arch_fnames = {f: os.path.relpath(f, source_dir).replace('\\', '/') for f in images}
    max_idx = len(images) if max_images is None else min(max_images, len(images))
    meta_path = os.path.join(source_dir, 'dataset.json')

    def read_json():
        if not os.path.isfile(meta_path):
            return None
        with open(meta_path, encoding='utf-8') as f:
            return json.load(f)
    labels = _load_labels(read_json, source_dir) or {}

    def iterate():
        for fname in images[:max_idx]:
            arch = arch_fnames[fname]
            yield dict(img=_read_image(fname, lambda: _read_file(fname)), label=labels.get(arch), fname=arch)
    return max_idx, iterate()


def open_image_zip(source: str, max_images: int | None):
    PIL.Image.init()
    try:
        z = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(f'{source}: cannot open zip ({err})') from None
    images = sorted(n for n in z.namelist() if is_image_ext(n))
    if not images:
        z.close()
        raise UserError(f'{source}: no images found in the zip')
    max_idx = len(images) if max_images is None else min(max_images, len(images))

    def read_json():
        return json.loads(z.read('dataset.json')) if 'dataset.json' in z.namelist() else None
    labels = _load_labels(read_json, source) or {}

    def iterate():
        with z:
            for fname in images[:max_idx]:
                yield dict(img=_read_image(fname, lambda: z.read(fname)), label=labels.get(fname), fname=fname)
    return max_idx, iterate()


def _read_file(path: str) -> bytes:
    with open(path, 'rb') as f:
        return f.read()


def _read_image(fname: str, read_bytes) -> np.ndarray:
    try:
        img = PIL.Image.open(io.BytesIO(read_bytes()))
        img.load()
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise UserError(f'{fname}: cannot read image ({err})') from None
    if img.mode not in ('L', 'RGB'):
        img = img.convert('RGB')
    return np.asarray(img)


def make_transform(transform: str | None, width: int | None, height: int | None, resize_filter: str):
    resample = {'box': PIL.Image.BOX, 'lanczos': PIL.Image.LANCZOS}[resize_filter]

    def scale(w, h, img):
        if img.shape[1] == w and img.shape[0] == h:
            return img
        return np.asarray(PIL.Image.fromarray(img).resize((w, h), resample))

    def center_crop(w, h, img):
        crop = min(img.shape[0], img.shape[1])
        top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
        return scale(w, h, img[top:top + crop, left:left + crop])

    def center_crop_wide(w, h, img):
        # As the official tool: keep the central round(w * H / W) input rows, resize them to w x h, letterbox the
        # result into a black w x w square.
        ch = int(np.round(w * img.shape[0] / img.shape[1]))
        if img.shape[1] < w or ch < h:
            return None  # too small to fill the wide frame; skipped like the official tool does
        img = scale(w, h, img[(img.shape[0] - ch) // 2:(img.shape[0] + ch) // 2])
        canvas = np.zeros((w, w) + img.shape[2:], dtype=np.uint8)
        canvas[(w - h) // 2:(w + h) // 2] = img
        return canvas

    if transform is None:
        if width is None and height is None:
            return lambda img: img
        return lambda img: scale(width, height, img)
    if width is None or height is None:
        raise UserError(f'--transform={transform} needs --resolution')
    if transform == 'center-crop':
        return lambda img: center_crop(width, height, img)
    if transform == 'center-crop-wide':
        return lambda img: center_crop_wide(width, height, img)
    raise UserError(f'unknown --transform {transform!r}')


def parse_resolution(value: str | None) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    m = re.fullmatch(r'\s*(\d+)\s*(?:x\s*(\d+))?\s*', value)
    if not m:
        raise UserError(f'--resolution must be WxH or N, got {value!r}')
    w = int(m.group(1))
    return w, int(m.group(2) or w)


def convert_images(source: str, dest: str, max_images: int | None, transform: str | None,
                   resolution: str | None, resize_filter: str, overwrite: bool) -> int:
    """Official conversion; every output image must be square, power-of-two and alike in size and channels."""
    check_dest(dest, overwrite)
    width, height = parse_resolution(resolution)
    if os.path.isdir(source):
        num_files, images = open_image_folder(source, max_images)
    elif os.path.isfile(source) and source.lower().endswith('.zip'):
        num_files, images = open_image_zip(source, max_images)
    else:
        raise UserError(f'{source}: not an image folder, an image zip, or slides')
    transform_image = make_transform(transform, width, height, resize_filter)
    dataset_attrs = None
    with DatasetWriter(dest, overwrite=overwrite) as writer:
        for image in tqdm.tqdm(images, total=num_files, desc='images', unit='img'):
            img = transform_image(image['img'])
            if img is None:
                continue
            channels = img.shape[2] if img.ndim == 3 else 1
            attrs = dict(width=img.shape[1], height=img.shape[0], channels=channels)
            if dataset_attrs is None:
                dataset_attrs = attrs
                if attrs['width'] != attrs['height']:
                    raise UserError(f'Image dimensions after scale and crop are required to be square. '
                                    f'Got {attrs["width"]}x{attrs["height"]}')
                if attrs['width'] != 2 ** int(math.floor(math.log2(attrs['width']))):
                    raise UserError('Image width/height after scale and crop are required to be power-of-two')
                if channels not in (1, 3):
                    raise UserError('Input images must be stored as RGB or grayscale')
            elif attrs != dataset_attrs:
                got = ', '.join(f'{k}: {dataset_attrs[k]}/{attrs[k]}' for k in attrs if attrs[k] != dataset_attrs[k])
                raise UserError(f'Image {image["fname"]} attributes must be equal across all images of the dataset. '
                                f'Got {got}')
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='png', compress_level=0, optimize=False)
            writer.add(buf.getvalue(), image['label'])
        if writer.count == 0:
            raise UserError(f'{source}: no images left after --transform; nothing written')
        writer.finish()
        return writer.count


# ----------------------------------------------------------------------------
# CLI: `convert` is the default command, so `python dataset_tool.py --source=... --dest=...` works as usual.


class DefaultCommandGroup(click.Group):
    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ('--help', '-h'):
            args = ['convert'] + list(args)
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        # Users type `dataset_tool.py --help` expecting the options they pass without a command name.
        super().format_help(ctx, formatter)
        convert_cmd = self.commands['convert']
        convert_ctx = click.Context(convert_cmd, info_name='convert', parent=ctx)
        records = [rec for param in convert_cmd.get_params(convert_ctx) if (rec := param.get_help_record(convert_ctx))]
        with formatter.section('Options of convert (the default command)'):
            formatter.write_dl(records)


@click.group(cls=DefaultCommandGroup)
def main():
    """Make StyleGAN2-ADA datasets from images or whole-slide images.

    `convert` is the default command: `python dataset_tool.py --source=... --dest=...`. See
    `python dataset_tool.py convert --help` for all its options.
    """


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except UserError as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.option('--source', help='Image folder/zip, or slides: a slide file, folder of slides, glob, or .txt list',
              required=True, metavar='PATH')
@click.option('--dest', help='Output dataset zip (or folder in image mode)', required=True, metavar='PATH')
@click.option('--overwrite', help='Replace an existing destination', is_flag=True)
@click.option('--max-images', help='[images] Output only up to this many images', type=click.IntRange(min=1))
@click.option('--transform', help='[images] Input crop/resize mode', type=click.Choice(['center-crop',
              'center-crop-wide']))
@click.option('--resolution', help='[images] Output resolution, WxH or N', metavar='WxH')
@click.option('--resize-filter', help='[images] Filter used when resizing', type=click.Choice(['box', 'lanczos']),
              default='lanczos', show_default=True)
@click.option('--annotations', help='[slides] Folder of ASAP .xml / GeoJSON files named like the slides',
              metavar='DIR')
@click.option('--patch-size', help='[slides] Patch size in output pixels', type=click.IntRange(8, 4096),
              default=256, show_default=True)
@click.option('--level', help='[slides] Pyramid level to read (default 0)', type=click.IntRange(min=0))
@click.option('--mpp', help='[slides] Read at this resolution in um/px (nearest finer level, then shrink; '
              'enlarging more than 2x is refused)', type=click.FloatRange(min=0, min_open=True))
@click.option('--tissue-min', help='[slides] Minimum tissue fraction of a kept patch', type=click.FloatRange(0, 1),
              default=0.9, show_default=True)
@click.option('--tissue-method', help='[slides] Tissue mask method', type=click.Choice(['deep-histopath', 'otsu']),
              default='deep-histopath', show_default=True)
@click.option('--downscale', help='[slides] Thumbnail downscale for the tissue mask; slides under 32000 px get a '
              'finer thumbnail, 1000 px on the long side', type=click.IntRange(min=1), default=32, show_default=True)
@click.option('--min-tissue-area', help='[slides] Smallest piece of tissue the mask keeps, in um^2 (mpp unknown: '
              '1/10000 of the thumbnail; never more than one patch)', type=click.FloatRange(min=0, min_open=True),
              default=32000, show_default=True)
@click.option('--ink-filter/--no-ink-filter', help='[slides] Remove marker ink (blue, green, navy, black, yellow: '
              'anything outside the H&E hues) from the mask and drop patches touching it  [default: on, off with '
              '--published-thresholds]', default=None)
@click.option('--published-thresholds', help='[slides] Reproduce the published deep-histopath mask exactly: '
              '1/--downscale thumbnail and 500-pixel objects whatever the slide, no ink filter', is_flag=True)
@click.option('--sampling', help='[slides] Candidate positions', type=click.Choice(['grid', 'random']),
              default='grid', show_default=True)
@click.option('--stride', help='[slides] Grid step in output pixels (default: patch size, no overlap)',
              type=click.IntRange(min=1))
@click.option('--no-overlap', help='[slides] Random sampling: reject candidates overlapping earlier ones',
              is_flag=True)
@click.option('--patches-per-slide', help='[slides] Keep N random patches per slide (default: all)',
              type=click.IntRange(min=1))
@click.option('--label', help='[slides] Labels in dataset.json (0 normal, 1 tumor)', default='none',
              type=click.Choice(['none', 'normal', 'tumor', 'from-annotations']), show_default=True)
@click.option('--tumor-min', help='[slides] Tumour fraction for a tumour label', type=click.FloatRange(0, 1,
              min_open=True), default=0.5, show_default=True)
@click.option('--seed', help='[slides] Random seed', type=int, default=0, show_default=True)
@click.option('--workers', help='[slides] Reader processes', type=click.IntRange(min=1), default=1,
              show_default=True)
@click.option('--compress-level', help='[slides] PNG zlib level, 0 = stored like the official tool',
              type=click.IntRange(0, 9), default=0, show_default=True)
@click.option('--shard', help='[slides] Process share i of n of the sorted slide list, e.g. 0/4', metavar='i/n')
@click.option('--preview', help='[slides] Write a Fig 2 panel per slide into this folder', metavar='DIR')
def convert(source, dest, overwrite, max_images, transform, resolution, resize_filter, annotations, patch_size,
            level, mpp, tissue_min, tissue_method, downscale, min_tissue_area, ink_filter, published_thresholds,
            sampling, stride, no_overlap, patches_per_slide, label, tumor_min, seed, workers, compress_level, shard,
            preview):
    """Convert images or whole-slide images into a dataset (the default command)."""
    if _run(slide_dataset.is_wsi_source, source):
        if transform is not None or resolution is not None or max_images is not None:
            raise click.ClickException('--transform, --resolution and --max-images apply to image folders only; '
                                       'use --patch-size and --level/--mpp for slides')
        opts = _run(slide_dataset.default_options, patch_size=patch_size, level=level, mpp=mpp,
                    tissue_min=tissue_min, tissue_method=tissue_method, downscale=downscale,
                    min_tissue_area=min_tissue_area, ink_filter=ink_filter, published_thresholds=published_thresholds,
                    sampling=sampling,
                    stride=stride, no_overlap=no_overlap, patches_per_slide=patches_per_slide, label=label,
                    tumor_min=tumor_min, seed=seed, shard=shard, compress_level=compress_level)
        summary = _run(slide_dataset.convert_slides, source, dest, opts, annotations_dir=annotations,
                       workers=workers, preview_dir=preview, overwrite=overwrite)
        click.echo(slide_dataset.format_summary(summary))
        click.echo(f'Wrote {dest}')
        return
    count = _run(convert_images, source, dest, max_images=max_images, transform=transform,
                 resolution=resolution, resize_filter=resize_filter, overwrite=overwrite)
    click.echo(f'Wrote {count} images to {dest}')


@main.command()
@click.option('--dest', help='Merged dataset zip', required=True, metavar='PATH')
@click.option('--overwrite', help='Replace an existing destination', is_flag=True)
@click.argument('sources', nargs=-1, required=True)
def merge(dest, overwrite, sources):
    """Concatenate dataset zips, such as --shard outputs in shard order, into one dataset."""
    _run(check_dest, dest, overwrite)
    with tqdm.tqdm(desc='merge', unit='img') as bar:
        summary = _run(merge_datasets, dest, list(sources), overwrite=overwrite, progress=bar.update)
    click.echo(f'Merged {summary["sources"]} datasets: {summary["images"]} images from {summary["slides"]} slides '
               f'into {dest}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
