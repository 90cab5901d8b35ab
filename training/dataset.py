"""Training datasets: a folder or zip of square images with optional labels and per-patch metadata.

Same interface as the official StyleGAN2-ADA `training.dataset` (uint8 CHW images, float32 labels,
x-flip doubling, a fixed-seed subset), plus one check of every image header at construction so
that a bad dataset fails with one line naming the file, and the histology metadata sidecar.
"""

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

try:
    import pyspng
except ImportError:
    pyspng = None

#----------------------------------------------------------------------------

class Dataset(torch.utils.data.Dataset):
    """Base class: index bookkeeping (subset, x-flip), labels and details.

    Subclasses provide `_load_raw_image(raw_idx)` -> uint8 CHW and `_load_raw_labels()` -> array or None.
    """

    def __init__(self,
        name,                   # Name of the dataset.
        raw_shape,              # Shape of the raw image data (NCHW).
        max_size    = None,     # Artificially limit the size of the dataset. None = no limit. Applied before xflip.
        use_labels  = False,    # Enable conditioning labels? False = label dimension is zero.
        xflip       = False,    # Artificially double the size of the dataset via x-flips. Applied after max_size.
        random_seed = 0,        # Random seed to use when applying max_size.
    ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None

        # A subset is a fixed-seed random choice, kept in file order.
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if (max_size is not None) and (self._raw_idx.size > max_size):
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])

        # X-flip doubles the index list; the second half is mirrored.
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _get_raw_labels(self):
        if self._raw_labels is None:
            self._raw_labels = self._load_raw_labels() if self._use_labels else None
            if self._raw_labels is None:
                self._raw_labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            assert isinstance(self._raw_labels, np.ndarray)
            assert self._raw_labels.shape[0] == self._raw_shape[0]
            assert self._raw_labels.dtype in [np.float32, np.int64]
            if self._raw_labels.dtype == np.int64:
                assert self._raw_labels.ndim == 1
                assert np.all(self._raw_labels >= 0)
        return self._raw_labels

    def close(self): # to be overridden by subclass
        pass

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        image = self._load_raw_image(self._raw_idx[idx])
        assert isinstance(image, np.ndarray)
        assert list(image.shape) == self.image_shape
        assert image.dtype == np.uint8
        if self._xflip[idx]:
            assert image.ndim == 3 # CHW
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            label = onehot
        return label.copy()

    def get_details(self, idx):
        d = dnnlib.EasyDict()
        d.raw_idx = int(self._raw_idx[idx])
        d.xflip = (int(self._xflip[idx]) != 0)
        d.raw_label = self._get_raw_labels()[d.raw_idx].copy()
        return d

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        assert len(self.image_shape) == 3 # CHW
        return self.image_shape[0]

    @property
    def resolution(self):
        assert len(self.image_shape) == 3 # CHW
        assert self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                self._label_shape = [int(np.max(raw_labels)) + 1]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

    @property
    def raw_shape(self):
        return list(self._raw_shape)

#----------------------------------------------------------------------------
# Image headers: size and channel count without decoding pixels, so every file can be checked.

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4} # colour type -> channels (palette expands to RGB)
_PIL_CHANNELS = {'1': 1, 'L': 1, 'I': 1, 'I;16': 1, 'F': 1, 'P': 3, 'RGB': 3, 'YCbCr': 3, 'CMYK': 4, 'LA': 2, 'PA': 2, 'RGBA': 4}

def _read_header(fname, f):
    """(width, height, channels) of an image file object; raises UserError naming `fname`."""
    head = f.read(33)
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 26 and head[12:16] == b'IHDR':
        width, height = struct.unpack('>II', head[16:24])
        color_type = head[25]
        if color_type not in _PNG_CHANNELS:
            raise dnnlib.util.UserError(f'Unreadable image file: {fname} (bad PNG colour type {color_type})')
        return width, height, _PNG_CHANNELS[color_type]
    try:
        f.seek(0)
        with PIL.Image.open(f) as img:
            mode = img.mode
            width, height = img.size
            if mode == 'P' and 'transparency' in img.info:
                mode = 'PA'
    except Exception as err:
        raise dnnlib.util.UserError(f'Unreadable image file: {fname} ({type(err).__name__})') from None
    return width, height, _PIL_CHANNELS.get(mode, 3)

#----------------------------------------------------------------------------

class ImageFolderDataset(Dataset):
    """All images of a folder (recursively) or a zip, sorted by path; labels from dataset.json.

    Every image must be square, the same size, a power of two on a side, grayscale or RGB.
    Optional `metadata.json` beside the images: {"patches": {"<fname>": {slide, level, x, y, size,
    tissue_fraction, label}}}, returned by `get_metadata(idx)`.
    """

    def __init__(self,
        path,                   # Path to directory or zip.
        resolution  = None,     # Ensure specific resolution, None = highest available.
        **super_kwargs,         # Additional arguments for the Dataset base class.
    ):
        self._path = path
        self._zipfile = None
        self._zipfile_pid = None

        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = {os.path.relpath(os.path.join(root, fname), start=self._path).replace(os.sep, '/')
                                for root, _dirs, files in os.walk(self._path) for fname in files}
        elif self._file_ext(self._path) == '.zip':
            if not os.path.isfile(self._path):
                raise dnnlib.util.UserError(f'Dataset not found: {self._path}')
            self._type = 'zip'
            try:
                self._all_fnames = set(self._get_zipfile().namelist())
            except zipfile.BadZipFile:
                raise dnnlib.util.UserError(f'Not a valid zip file: {self._path}') from None
        elif not os.path.exists(self._path):
            raise dnnlib.util.UserError(f'Dataset not found: {self._path}')
        else:
            raise dnnlib.util.UserError(f'Dataset must be a directory or a .zip file: {self._path}')

        PIL.Image.init()
        self._image_fnames = sorted(fname for fname in self._all_fnames
                                    if self._file_ext(fname) in PIL.Image.EXTENSION and not fname.endswith('/'))
        if len(self._image_fnames) == 0:
            raise dnnlib.util.UserError(f'No image files found in {self._path}')

        width, height, channels = self._check_headers()
        if resolution is not None and width != resolution:
            raise dnnlib.util.UserError(f'Images are {width}x{height}, but resolution={resolution} was asked for')

        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        raw_shape = [len(self._image_fnames), channels, height, width]
        self._metadata = None
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)

    def _check_headers(self):
        """Read every header; one UserError for the first rule broken, naming the files involved."""
        first = None
        for fname in self._image_fnames:
            with self._open_file(fname) as f:
                width, height, channels = _read_header(fname, f)
            if channels in (2, 4):
                raise dnnlib.util.UserError(f'Image has an alpha channel (RGBA/LA not supported, save as RGB): {fname}')
            if channels not in (1, 3):
                raise dnnlib.util.UserError(f'Image must be grayscale or RGB, got {channels} channels: {fname}')
            if width != height:
                raise dnnlib.util.UserError(f'Image must be square, got {width}x{height}: {fname}')
            if width < 4 or (width & (width - 1)) != 0:
                raise dnnlib.util.UserError(f'Image side must be a power of two (>= 4), got {width}: {fname}')
            if first is None:
                first = (fname, width, height, channels)
            elif (width, channels) != (first[1], first[3]):
                raise dnnlib.util.UserError(f'Mixed image sizes or channel counts: {first[0]} is {first[1]}x{first[2]}x{first[3]}, '
                                            f'{fname} is {width}x{height}x{channels}')
        return first[1], first[2], first[3]

    @staticmethod
    def _file_ext(fname):
        return os.path.splitext(fname)[1].lower()

    def _get_zipfile(self):
        # One handle per process: a forked DataLoader worker inherits the parent's open file, and
        # seeks and reads through a shared file offset interleave (bad CRCs at random).
        assert self._type == 'zip'
        if self._zipfile is not None and self._zipfile_pid != os.getpid():
            inherited, self._zipfile = self._zipfile, None
            inherited.close() # closes only this process's copy of the descriptor
        if self._zipfile is None:
            self._zipfile = zipfile.ZipFile(self._path)
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def close(self):
        try:
            if self._zipfile is not None:
                self._zipfile.close()
        finally:
            self._zipfile = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None)

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                data = f.read()
            if pyspng is not None and self._file_ext(fname) == '.png':
                image = pyspng.load(data)
            else:
                image = np.array(PIL.Image.open(io.BytesIO(data)))
        except Exception as err:
            raise dnnlib.util.UserError(f'Unreadable image file: {fname} ({type(err).__name__}: {err})') from None
        if image.ndim == 2:
            image = image[:, :, np.newaxis] # HW => HWC
        if image.dtype != np.uint8 or list(image.shape) != [self._raw_shape[2], self._raw_shape[3], self._raw_shape[1]]:
            raise dnnlib.util.UserError(f'Image {fname} decodes to {image.dtype} {list(image.shape)}, '
                                        f'expected uint8 {self._raw_shape[2:] + self._raw_shape[1:2]}')
        return image.transpose(2, 0, 1) # HWC => CHW

    def _load_json(self, fname):
        if fname not in self._all_fnames:
            return None
        try:
            with self._open_file(fname) as f:
                return json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise dnnlib.util.UserError(f'{fname} in {self._path} is not valid JSON ({err})') from None

    def _load_raw_labels(self):
        data = self._load_json('dataset.json')
        if data is None:
            return None
        labels = data.get('labels') if isinstance(data, dict) else None
        if labels is None:
            return None
        labels = dict(labels)
        missing = [fname for fname in self._image_fnames if fname not in labels or labels[fname] is None]
        if missing:
            raise dnnlib.util.UserError(f'dataset.json has no label for {len(missing)} image(s), e.g. {missing[0]}')
        labels = [labels[fname] for fname in self._image_fnames]
        if all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
            if min(labels) < 0:
                raise dnnlib.util.UserError('dataset.json: integer class labels must be non-negative')
            return np.array(labels, dtype=np.int64)
        try:
            labels = np.array(labels, dtype=np.float32)
        except (ValueError, TypeError):
            raise dnnlib.util.UserError('dataset.json: labels must all be integers or all be vectors of one length') from None
        if labels.ndim != 2:
            labels = labels.reshape(len(self._image_fnames), -1)
        return labels

    def get_metadata(self, idx):
        """Per-patch provenance from metadata.json (slide, level, x, y, size, tissue_fraction, label), or None."""
        if self._metadata is None:
            data = self._load_json('metadata.json')
            patches = data.get('patches') if isinstance(data, dict) else None
            self._metadata = dict(patches) if isinstance(patches, dict) else {}
        meta = self._metadata.get(self._image_fnames[self._raw_idx[idx]])
        return dict(meta) if meta is not None else None

    def get_details(self, idx):
        d = super().get_details(idx)
        d.fname = self._image_fnames[d.raw_idx]
        d.metadata = self.get_metadata(idx)
        return d

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
        raise dnnlib.util.UserError(f'Dataset not found: {path}') from None
    except (OSError, zipfile.BadZipFile) as err:
        raise dnnlib.util.UserError(f'Not a valid zip file: {path} ({err})') from None
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
                    raise dnnlib.util.UserError(f'Damaged dataset {path}: member {info.filename} is corrupt '
                                                f'({type(err).__name__}: {err})') from None
    return len(members)
