"""Datasets in the StyleGAN2-ADA layout: a zip (or folder) of PNGs, dataset.json labels, metadata.json sidecar.

Written under a temporary name beside the destination and renamed into place only when complete, so an
interrupted or failed run never leaves a half-written dataset. Shard zips merge into one dataset with the
images renumbered in shard order.
"""

import contextlib
import json
import os
import zipfile

import dnnlib.util
from dnnlib.util import UserError

METADATA_FNAME = 'metadata.json'
LABELS_FNAME = 'dataset.json'


def image_fname(index: int) -> str:
    """Official naming: 1000 images per folder."""
    return f'{index // 1000:05d}/img{index:08d}.png'


def check_dest(dest: str, overwrite: bool) -> None:
    if not dest:
        raise UserError('--dest must not be empty')
    if os.path.exists(dest) and not overwrite:
        raise UserError(f'{dest} already exists; pass --overwrite to replace it')
    if os.path.isdir(dest) and _is_zip_name(dest):
        raise UserError(f'{dest} is a folder, cannot replace it with a zip')


def _is_zip_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() == '.zip'


class DatasetWriter:
    """Context manager: add images, then exit cleanly to publish dest atomically (an exception discards it).

    Built on `dnnlib.util.atomic_write`: the temporary zip or folder is removed on any error, including
    one raised while the zip's central directory is written at close, and a full disk or file-size limit
    becomes one UserError naming `dest`.
    """

    def __init__(self, dest: str, overwrite: bool = False):
        check_dest(dest, overwrite)
        self.dest = os.path.abspath(dest)
        self.labels = []
        self.patches = {}
        self.count = 0
        self._zip = None
        self._tmp = None
        self._publish = None

    def __enter__(self):
        as_zip = _is_zip_name(self.dest)
        with contextlib.ExitStack() as stack:
            self._tmp = stack.enter_context(dnnlib.util.atomic_write(self.dest, folder=not as_zip))
            if as_zip:
                self._zip = zipfile.ZipFile(self._tmp, 'w', compression=zipfile.ZIP_STORED)  # PNGs are compressed
                stack.callback(self._close_zip)  # runs before atomic_write decides to publish or discard
            self._publish = stack.pop_all()
        return self

    def _close_zip(self):
        self._zip.close()  # writes the central directory: can fail like any write

    def add(self, png: bytes, label: int | None = None, meta: dict | None = None) -> str:
        fname = image_fname(self.count)
        self._write(fname, png)
        self.labels.append([fname, label])
        if meta is not None:
            self.patches[fname] = meta
        self.count += 1
        return fname

    def _write(self, fname: str, data: bytes) -> None:
        if self._zip is not None:
            # Fixed timestamps keep equal datasets byte-identical.
            info = zipfile.ZipInfo(fname, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            self._zip.writestr(info, data)
        else:
            path = os.path.join(self._tmp, fname)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(data)

    def finish(self, slides: dict | None = None, options: dict | None = None, labelled: bool | None = None) -> None:
        """Write dataset.json (labels null when unlabelled) and, for slide datasets, metadata.json."""
        if labelled is None:
            labelled = any(label is not None for _fname, label in self.labels)
        labels = self.labels if labelled else None
        self._write(LABELS_FNAME, json.dumps({'labels': labels}, indent=1).encode())
        if slides is not None or self.patches:
            meta = {'patches': self.patches, 'slides': slides or {}, 'options': options or {}}
            self._write(METADATA_FNAME, json.dumps(meta, indent=1, sort_keys=True).encode())

    def __exit__(self, *exc_info):
        publish, self._publish = self._publish, None
        return publish.__exit__(*exc_info)


def read_dataset_zip(path: str) -> tuple[zipfile.ZipFile, list, dict | None]:
    """(open zip, [[fname, label], ...] or None, metadata or None) with a clear error for anything else."""
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(f'{path}: not a dataset zip ({err})') from None
    names = set(z.namelist())
    if LABELS_FNAME not in names:
        z.close()
        raise UserError(f'{path}: not a dataset zip (no {LABELS_FNAME})')
    try:
        labels = json.loads(z.read(LABELS_FNAME))['labels']
        meta = json.loads(z.read(METADATA_FNAME)) if METADATA_FNAME in names else None
    except (ValueError, KeyError, TypeError) as err:
        z.close()
        raise UserError(f'{path}: broken {LABELS_FNAME} or {METADATA_FNAME} ({err})') from None
    if labels is None:
        labels = [[n, None] for n in sorted(names) if n.lower().endswith('.png')]
    return z, labels, meta


def merge_datasets(dest: str, sources: list[str], overwrite: bool = False, progress=None) -> dict:
    """Concatenate dataset zips in the given order into `dest`; returns a summary dict.

    Labels must be all present or all absent; metadata of slide datasets is carried over per image, and
    their extraction options must agree apart from the shard.
    """
    if not sources:
        raise UserError('merge: give at least one source dataset zip')
    check_dest(dest, overwrite)
    if any(os.path.abspath(s) == os.path.abspath(dest) for s in sources):
        raise UserError(f'merge: {dest} is also a source')
    opened = []
    try:
        for src in sources:
            opened.append((src, *read_dataset_zip(src)))
        labelled = {labels is not None and any(label is not None for _n, label in labels) for _s, _z, labels, _m in opened}
        if len(labelled) > 1:
            raise UserError('merge: some sources have labels and some do not')
        options = None
        slides = {}
        for src, _z, _labels, meta in opened:
            if meta is None:
                continue
            opts = {k: v for k, v in meta.get('options', {}).items() if k != 'shard'}
            if options is not None and opts != options:
                raise UserError(f'merge: {src} was made with different options than {opened[0][0]}')
            options = opts
            for name, info in meta.get('slides', {}).items():
                if name in slides:
                    raise UserError(f'merge: slide {name} appears in more than one source')
                slides[name] = info
        total = sum(len(labels) for _s, _z, labels, _m in opened)
        with DatasetWriter(dest, overwrite=overwrite) as writer:
            for src, z, labels, meta in opened:
                patches = (meta or {}).get('patches', {})
                for fname, label in labels:
                    try:
                        png = z.read(fname)
                    except KeyError:
                        raise UserError(f'{src}: {LABELS_FNAME} names {fname}, which is not in the zip') from None
                    writer.add(png, label, patches.get(fname))
                    if progress is not None:
                        progress(1)
            writer.finish(slides=slides if options is not None else None,
                          options=options, labelled=labelled.pop())
        return dict(sources=len(sources), images=total, slides=len(slides))
    finally:
        for _s, z, _l, _m in opened:
            z.close()
