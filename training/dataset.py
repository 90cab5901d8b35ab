"""Training images: a folder or zip of square PNGs (the StyleGAN2-ADA dataset layout) read as uint8 CHW arrays.

`ImageFolderDataset` speaks the interface the training loop and the metrics expect of the official
`training.dataset` (constructor keywords, `dataset[i] -> (image, label)`, shape and label properties,
a fixed-seed `max_size` subset, x-flip doubling). HistoSynth adds:

- every image header is checked when the dataset is built, so a wrong file fails at once, in one line;
- each process opens the zip itself: DataLoader workers never share the parent's file offset;
- `metadata.json` inside the dataset traces each patch back to its slide (`get_metadata`);
- `verify_zip` reads every member once against its CRC-32 before a long run starts;
- `ResumableSampler` makes the data order a function of (seed, position), so a resumed run continues
  exactly where the interrupted one stopped.
"""

import abc
import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import PIL.Image
import torch
from tqdm import tqdm

import dnnlib
from dnnlib.util import UserError

try:
    import pyspng  # Decodes PNG several times faster than PIL; optional.
except ImportError:
    pyspng = None

#----------------------------------------------------------------------------
# Where image bytes come from: a folder or a zip. One small class each, same three methods.

class _FolderFiles:
    """Files under a folder, named by their '/'-separated path relative to it."""

    def __init__(self, root):
        self.root = root

    def names(self):
        found = set()
        for folder, _subdirs, files in os.walk(self.root):
            rel = os.path.relpath(folder, self.root)
            for fname in files:
                found.add(fname if rel == '.' else f'{rel}/{fname}'.replace(os.sep, '/'))
        return found

    def open(self, name):
        return open(os.path.join(self.root, *name.split('/')), 'rb')

    def close(self):
        pass


class _ZipFiles:
    """Members of a zip, opened lazily by whichever process reads them.

    A process forked from one that had the zip open inherits its file descriptor, and with it one shared
    file offset: reads from several processes then interleave and fail their CRC check at random. So the
    handle remembers the process that opened it, is reopened by any other, and is never pickled (spawn).
    """

    def __init__(self, path):
        self.path = path
        self._archive = None
        self._owner = None

    def _get(self):
        if self._archive is not None and self._owner != os.getpid():
            self.close() # only this process's copy of the inherited descriptor
        if self._archive is None:
            self._archive = zipfile.ZipFile(self.path)
            self._owner = os.getpid()
        return self._archive

    def names(self):
        return {name for name in self._get().namelist() if not name.endswith('/')}

    def open(self, name):
        return self._get().open(name)

    def close(self):
        archive, self._archive, self._owner = self._archive, None, None
        if archive is not None:
            archive.close()

    def __getstate__(self):
        return {'path': self.path, '_archive': None, '_owner': None}

#----------------------------------------------------------------------------

class Dataset(torch.utils.data.Dataset, abc.ABC):
    """The part every dataset shares: which raw images make up the items, mirroring, and labels.

    Item i shows raw image `_raw_idx[i]`, mirrored left-right when `_xflip[i]` is set. Subclasses read
    the data: `_load_raw_image(raw_idx)` returns uint8 CHW, `_load_raw_labels()` returns int64 [N] class
    indices, float32 [N, D] vectors or None.
    """

    def __init__(self, name, raw_shape, max_size=None, use_labels=False, xflip=False, random_seed=0):
        self._name = name
        self._shape = tuple(int(n) for n in raw_shape) # (images, channels, height, width)
        self._labels_wanted = use_labels
        self._labels_cache = None
        self._label_shape_cache = None

        # max_size keeps a fixed-seed random choice of images, in their original order.
        kept = np.arange(self._shape[0], dtype=np.int64)
        if max_size is not None and max_size < kept.size:
            kept = np.sort(np.random.RandomState(random_seed).permutation(kept.size)[:max_size])
        # xflip appends every kept image once more, mirrored.
        copies = 2 if xflip else 1
        self._raw_idx = np.concatenate([kept] * copies)
        self._xflip = np.repeat(np.arange(copies, dtype=np.uint8), kept.size)

    def _get_raw_labels(self):
        """Labels of all raw images, loaded on first use: int64 [N] or float32 [N, D] (D = 0 without labels)."""
        if self._labels_cache is None:
            labels = self._load_raw_labels() if self._labels_wanted else None
            if labels is None:
                labels = np.zeros((self._shape[0], 0), np.float32)
            if not (isinstance(labels, np.ndarray) and len(labels) == self._shape[0]):
                raise UserError(f'{self._name}: expected {self._shape[0]} labels')
            if labels.dtype == np.int64:
                if labels.ndim != 1 or (labels < 0).any():
                    raise UserError(f'{self._name}: class labels must be one non-negative integer per image')
            elif labels.dtype != np.float32:
                raise UserError(f'{self._name}: labels must be int64 classes or float32 vectors, got {labels.dtype}')
            self._labels_cache = labels
        return self._labels_cache

    @abc.abstractmethod
    def _load_raw_image(self, raw_idx):
        """uint8 [C, H, W] of raw image `raw_idx`."""

    @abc.abstractmethod
    def _load_raw_labels(self):
        """int64 [N] classes, float32 [N, C] vectors, or None for an unlabelled dataset."""

    def close(self):
        """Release open files; a subclass that holds any overrides this."""

    def __getstate__(self):
        # Workers load the labels again when they need them instead of receiving a copy.
        state = self.__dict__.copy()
        state['_labels_cache'] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception: # interpreter shutdown: modules may be gone already
            pass

    def __len__(self):
        return len(self._raw_idx)

    def __getitem__(self, idx):
        image = self._load_raw_image(self._raw_idx[idx])
        if self._xflip[idx]:
            image = image[..., ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx):
        """float32 label of item idx: a one-hot vector for class labels, else the stored vector."""
        raw = self._get_raw_labels()[self._raw_idx[idx]]
        if raw.dtype != np.int64:
            return np.array(raw, np.float32)
        return np.eye(self.label_dim, dtype=np.float32)[raw]

    def get_details(self, idx):
        raw_idx = int(self._raw_idx[idx])
        return dnnlib.EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]),
                               raw_label=np.array(self._get_raw_labels()[raw_idx]))

    @property
    def name(self):
        return self._name

    @property
    def raw_shape(self):
        return [*self._shape]

    @property
    def image_shape(self):
        return [*self._shape[1:]]

    @property
    def num_channels(self):
        return self._shape[1]

    @property
    def resolution(self):
        height, width = self._shape[2:]
        if height != width:
            raise UserError(f'{self._name}: images are {width}x{height}, not square')
        return width

    @property
    def label_shape(self):
        if self._label_shape_cache is None:
            labels = self._get_raw_labels()
            # Class indices become one-hot vectors as long as the largest class + 1.
            self._label_shape_cache = [int(labels.max()) + 1] if labels.dtype == np.int64 else list(labels.shape[1:])
        return list(self._label_shape_cache)

    @property
    def label_dim(self):
        (dim,) = self.label_shape
        return dim

    @property
    def has_labels(self):
        return self.label_dim > 0

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

#----------------------------------------------------------------------------
# Size and channel count of an image from its first bytes, so every file can be checked cheaply.

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# IHDR colour type -> channels after decoding (a palette decodes to RGB).
PNG_COLOUR_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
# PIL mode -> channels, for the other formats PIL reads.
PIL_MODE_CHANNELS = {'1': 1, 'L': 1, 'I': 1, 'I;16': 1, 'F': 1, 'LA': 2, 'PA': 2, 'P': 3, 'RGB': 3,
                     'YCbCr': 3, 'RGBA': 4, 'CMYK': 4}

def image_geometry(f):
    """(width, height, channels) of the image in binary file `f`, reading no pixels."""
    head = f.read(26)
    if head[:8] == PNG_MAGIC and head[12:16] == b'IHDR' and len(head) == 26:
        width, height = struct.unpack('>2I', head[16:24])
        if head[25] not in PNG_COLOUR_CHANNELS:
            raise ValueError(f'bad PNG colour type {head[25]}')
        return width, height, PNG_COLOUR_CHANNELS[head[25]]
    f.seek(0)
    with PIL.Image.open(f) as img:
        mode = 'PA' if img.mode == 'P' and 'transparency' in img.info else img.mode
        return img.width, img.height, PIL_MODE_CHANNELS.get(mode, 3)


def check_geometry(fname, width, height, channels):
    """One UserError for the first rule an image breaks (colour, square, power-of-two side)."""
    if channels in (2, 4):
        raise UserError(f'Image has an alpha channel (RGBA/LA not supported, save as RGB): {fname}')
    if channels not in (1, 3):
        raise UserError(f'Image must be grayscale or RGB, got {channels} channels: {fname}')
    if width != height:
        raise UserError(f'Image must be square, got {width}x{height}: {fname}')
    if width < 4 or width & (width - 1):
        raise UserError(f'Image side must be a power of two (>= 4), got {width}: {fname}')


def decode_image(fname, data):
    """uint8 HWC array of an encoded image."""
    if pyspng is not None and fname.lower().endswith('.png'):
        pixels = pyspng.load(data)
    else:
        with PIL.Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img.convert('RGB') if img.mode == 'P' else img)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels

#----------------------------------------------------------------------------

class ImageFolderDataset(Dataset):
    """Every image of a folder (searched recursively) or a zip, in sorted path order.

    Images must all be square, the same power-of-two size, grayscale or RGB. Labels come from
    `dataset.json` ({"labels": [[fname, label], ...]}); per-patch provenance from `metadata.json`
    ({"patches": {fname: {slide, level, x, y, size, tissue_fraction, label}}}).
    """

    def __init__(self, path, resolution=None, **super_kwargs):
        self._path = path
        self._files = self._open_source(path)
        try:
            self._all_fnames = self._files.names()
        except (OSError, zipfile.BadZipFile) as err:
            raise UserError(f'Not a valid zip file: {path} ({err})') from None
        PIL.Image.init()
        self._image_fnames = sorted(n for n in self._all_fnames if os.path.splitext(n)[1].lower() in PIL.Image.EXTENSION)
        if not self._image_fnames:
            raise UserError(f'No image files found in {path}')
        width, height, channels = self._check_all_images()
        if resolution is not None and resolution != width:
            raise UserError(f'Images are {width}x{height}, but resolution={resolution} was asked for')
        self._metadata = None
        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        super().__init__(name=name, raw_shape=[len(self._image_fnames), channels, height, width], **super_kwargs)

    @staticmethod
    def _open_source(path):
        if os.path.isdir(path):
            return _FolderFiles(path)
        if not os.path.exists(path):
            raise UserError(f'Dataset not found: {path}')
        if os.path.splitext(path)[1].lower() != '.zip':
            raise UserError(f'Dataset must be a directory or a .zip file: {path}')
        return _ZipFiles(path)

    def _read(self, fname, reader, complaint='Unreadable image file'):
        """reader(open file) for one file of the dataset; any failure becomes one line naming the file."""
        try:
            with self._files.open(fname) as f:
                return reader(f)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f'{complaint}: {fname} ({type(err).__name__}: {err})') from None

    def _check_all_images(self):
        """Geometry shared by every image, or one UserError naming the first that breaks a rule."""
        first = None
        for fname in self._image_fnames:
            geometry = self._read(fname, image_geometry)
            check_geometry(fname, *geometry)
            if first is None:
                first, first_geometry = fname, geometry
            elif (geometry[0], geometry[2]) != (first_geometry[0], first_geometry[2]):
                describe = lambda g: 'x'.join(map(str, g))
                raise UserError(f'Mixed image sizes or channel counts: {first} is {describe(first_geometry)}, '
                                f'{fname} is {describe(geometry)}')
        return first_geometry

    def close(self):
        files = getattr(self, '_files', None) # absent when __init__ failed early
        if files is not None:
            files.close()

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        pixels = self._read(fname, lambda f: decode_image(fname, f.read()))
        channels, height, width = self.image_shape
        if pixels.dtype != np.uint8 or pixels.shape != (height, width, channels):
            raise UserError(f'Image {fname} decodes to {pixels.dtype} {list(pixels.shape)}, '
                            f'expected uint8 {[height, width, channels]}')
        return pixels.transpose(2, 0, 1)

    def _load_json(self, fname):
        """Parsed JSON file of the dataset, or None when it has none of that name."""
        if fname not in self._all_fnames:
            return None
        return self._read(fname, json.load, complaint=f'Not valid JSON in {self._path}')

    def _load_raw_labels(self):
        data = self._load_json('dataset.json')
        pairs = data.get('labels') if isinstance(data, dict) else None
        if pairs is None:
            return None
        by_name = {name: label for name, label in pairs}
        labels = [by_name.get(fname) for fname in self._image_fnames]
        unlabelled = [fname for fname, label in zip(self._image_fnames, labels) if label is None]
        if unlabelled:
            raise UserError(f'dataset.json has no label for {len(unlabelled)} image(s), e.g. {unlabelled[0]}')
        if all(type(label) is int for label in labels):
            if min(labels) < 0:
                raise UserError('dataset.json: integer class labels must be non-negative')
            return np.array(labels, np.int64)
        try:
            vectors = np.array(labels, np.float32)
        except (TypeError, ValueError):
            raise UserError('dataset.json: labels must all be integers or all be vectors of one length') from None
        return vectors.reshape(len(labels), -1)

    def get_metadata(self, idx):
        """Provenance of item idx from metadata.json (slide, level, x, y, size, tissue_fraction, label), or None."""
        if self._metadata is None:
            sidecar = self._load_json('metadata.json')
            patches = sidecar.get('patches') if isinstance(sidecar, dict) else None
            self._metadata = patches if isinstance(patches, dict) else {}
        entry = self._metadata.get(self._image_fnames[self._raw_idx[idx]])
        return None if entry is None else dict(entry)

    def get_details(self, idx):
        details = super().get_details(idx)
        details.fname = self._image_fnames[details.raw_idx]
        details.metadata = self.get_metadata(idx)
        return details

#----------------------------------------------------------------------------

def verify_zip(path, progress=True):
    """Read every member of a dataset zip once and check it against its stored CRC-32; decode no image.

    A damaged dataset then fails in its first minute with one UserError naming the first bad member,
    not days into training. An image folder has no checksums: returns 0. Otherwise returns the number
    of members checked. `progress` shows a tqdm bar over the bytes read.
    """
    if os.path.isdir(path):
        return 0
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f'Dataset not found: {path}') from None
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(f'Not a valid zip file: {path} ({err})') from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in members)
        with tqdm(total=total, unit='B', unit_scale=True, desc=f'Checking {os.path.basename(path)}',
                  disable=not progress, leave=False) as bar:
            for info in members:
                try:
                    with archive.open(info) as member: # zipfile compares the CRC-32 at the member's end
                        for chunk in iter(lambda: member.read(1 << 20), b''):
                            bar.update(len(chunk))
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as err:
                    raise UserError(f'Damaged dataset {path}: member {info.filename} is corrupt '
                                    f'({type(err).__name__}: {err})') from None
    return len(members)

#----------------------------------------------------------------------------
# Data order as a pure function of (seed, position), so a resumed run can start exactly where
# the interrupted one stopped instead of replaying a sampler from the beginning.

class ResumableSampler(torch.utils.data.Sampler):
    """Endless index stream: epoch e is `RandomState([seed, e])`'s permutation of the dataset.

    Global stream position g belongs to rank g % num_replicas; this rank yields its items from
    global position `start` on. With the same `start`, any number of replicas together see the
    same items as one replica, and a restarted run sees the same items as an uninterrupted one.
    """

    def __init__(self, dataset_size, rank=0, num_replicas=1, seed=0, start=0, shuffle=True):
        assert dataset_size > 0 and num_replicas > 0 and 0 <= rank < num_replicas and start >= 0
        super().__init__()
        self.dataset_size = int(dataset_size)
        self.rank = rank
        self.num_replicas = num_replicas
        self.seed = seed
        self.start = int(start)
        self.shuffle = shuffle

    def order(self, epoch):
        if not self.shuffle:
            return np.arange(self.dataset_size)
        return np.random.RandomState([self.seed % (1 << 32), epoch]).permutation(self.dataset_size)

    def __iter__(self):
        pos = self.start + (self.rank - self.start) % self.num_replicas # first global position of this rank
        epoch = pos // self.dataset_size
        order = self.order(epoch)
        while True:
            if pos // self.dataset_size != epoch:
                epoch = pos // self.dataset_size
                order = self.order(epoch)
            yield int(order[pos % self.dataset_size])
            pos += self.num_replicas

#----------------------------------------------------------------------------
