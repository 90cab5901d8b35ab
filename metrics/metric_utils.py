"""What every metric needs: its options, feature detectors, feature statistics (with an on-disk cache for
the real images) and streams of images from a dataset or a generator, shared out between GPUs by rank.

A "generator" here is any network called as G(z, c, truncation_psi=..., noise_mode=...) with the attributes
z_dim, c_dim and img_resolution; metrics that need the intermediate latent space W (PPL) also need
G.mapping and G.synthesis.
"""

import copy
import hashlib
import os
import warnings

import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from metrics import detectors

# ----------------------------------------------------------------------------


class MetricOptions:
    """What to measure, against what, and where.

    G / G_kwargs:     the generator and extra keyword arguments for its calls.
    dataset_kwargs:   the real images (construct_class_by_name kwargs).
    dataset2_kwargs:  if given, a second dataset takes G's place in every metric (compare two patch sets,
                      e.g. two scanners or two stainings, without any network).
    num_gpus / rank:  the process layout; device defaults to this rank's GPU, else the CPU.
    progress:         show progress bars (rank 0 only). cache: reuse real-image statistics from disk.
    detector_dir:     folder with local detector files. seed: makes generated samples reproducible.
    """

    def __init__(self, G=None, G_kwargs=None, dataset_kwargs=None, dataset2_kwargs=None, num_gpus=1, rank=0,
                 device=None, progress=None, cache=True, detector_dir=None, seed=0):
        if not 0 <= rank < num_gpus:
            raise ValueError(f'rank {rank} does not exist with num_gpus={num_gpus}')
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.dataset2_kwargs = None if dataset2_kwargs is None else dnnlib.EasyDict(dataset2_kwargs)
        self.num_gpus = num_gpus
        self.rank = rank
        if device is None:
            device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
        self.device = torch.device(device)
        self.progress = rank == 0 and bool(progress)
        self.cache = cache
        self.detector_dir = detector_dir
        self.seed = seed
        self.detector_sources = {}  # detector name -> describe() line, for the metric's JSON record

# ----------------------------------------------------------------------------
# Small shared pieces


def _distributed(opts):
    return opts.num_gpus > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def _agree_with_rank0(opts, flag):
    """Every rank adopts rank 0's value of a boolean decision."""
    if not _distributed(opts):
        return flag
    carrier = torch.tensor([1.0 if flag else 0.0], device=opts.device)
    torch.distributed.broadcast(carrier, src=0)
    return bool(carrier.item())


def all_gather_rows(x, num_gpus):
    """The rows of x from all ranks, interleaved in rank order (row i of rank r ends up at i * num_gpus + r),
    which is the order the items were dealt out in."""
    if num_gpus == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(num_gpus)]
    torch.distributed.all_gather(parts, x)
    return torch.stack(parts, dim=1).reshape(-1, *x.shape[1:])


def _progress(opts, total, desc, unit='img'):
    return tqdm(total=total, desc=desc, unit=unit, disable=not opts.progress, leave=False)


def require_w_space(G, purpose):
    """UserError unless G exposes the intermediate latent space (G.mapping and G.synthesis)."""
    if not (hasattr(G, 'mapping') and hasattr(G, 'synthesis')):
        raise dnnlib.util.UserError(f'{purpose} needs a generator with a W latent space (G.mapping and G.synthesis); '
                                    f'{type(G).__name__} maps z to images directly')


def get_feature_detector(name: str, opts: MetricOptions) -> torch.nn.Module:
    """The detector `name` on opts.device. Rank 0 loads first, so only it fetches and caches the file."""
    wait_for_rank0 = _distributed(opts)
    if wait_for_rank0 and opts.rank != 0:
        torch.distributed.barrier()
    detector = detectors.load_detector(name, device=opts.device, detector_dir=opts.detector_dir)
    if wait_for_rank0 and opts.rank == 0:
        torch.distributed.barrier()
    opts.detector_sources[name] = detectors.describe(detector, name)
    return detector


def open_dataset(dataset_kwargs: dict):
    """The dataset described by `dataset_kwargs`; any failure to open it becomes one UserError line."""
    if not dataset_kwargs or 'class_name' not in dataset_kwargs:
        raise dnnlib.util.UserError('No dataset given (dataset_kwargs without class_name); pass --data')
    where = dataset_kwargs.get('path', '')
    try:
        dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs)
    except dnnlib.util.UserError:
        raise
    except Exception as err:
        raise dnnlib.util.UserError(f'Cannot read dataset {where}: {err}') from err
    if len(dataset) == 0:
        raise dnnlib.util.UserError(f'Dataset {where} holds no images')
    return dataset

# ----------------------------------------------------------------------------


class FeatureStats:
    """Collects feature vectors, up to `max_items` of them: every vector (capture_all) and/or the float64
    sums needed for their mean and covariance (capture_mean_cov)."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self._chunks = []   # float32 [n, F] arrays, when capture_all
        self._sum = None    # float64 [F]
        self._gram = None   # float64 [F, F], sum of outer products

    def _start(self, num_features):
        self.num_features = num_features
        self._sum = np.zeros(num_features, dtype=np.float64)
        self._gram = np.zeros((num_features, num_features), dtype=np.float64)

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray) -> None:
        """Add a [n, F] batch; items beyond max_items are dropped."""
        batch = np.asarray(x, dtype=np.float32)
        if batch.ndim != 2:
            raise ValueError(f'features must be [items, features], got shape {batch.shape}')
        if self.num_features is None:
            self._start(batch.shape[1])
        elif batch.shape[1] != self.num_features:
            raise ValueError(f'expected {self.num_features} features per item, got {batch.shape[1]}')
        if self.max_items is not None:
            batch = batch[:max(self.max_items - self.num_items, 0)]
        if len(batch) == 0:
            return
        self.num_items += len(batch)
        if self.capture_all:
            self._chunks.append(batch)
        if self.capture_mean_cov:
            wide = batch.astype(np.float64)
            self._sum += wide.sum(axis=0)
            self._gram += wide.T @ wide

    def append_torch(self, x: torch.Tensor, num_gpus: int = 1, rank: int = 0) -> None:
        """Add the batches of all ranks (interleaved in rank order), so every rank ends with the same stats."""
        if x.ndim != 2 or not 0 <= rank < num_gpus:
            raise ValueError('append_torch needs [items, features] and a valid rank')
        self.append(all_gather_rows(x, num_gpus).detach().cpu().numpy())

    def get_all(self) -> np.ndarray:
        if not self.capture_all:
            raise AssertionError('these statistics were collected without capture_all')
        if not self._chunks:
            return np.zeros((0, self.num_features or 0), dtype=np.float32)
        return np.concatenate(self._chunks)

    def get_all_torch(self) -> torch.Tensor:
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and population (divide by N) covariance, the convention of the reference FID."""
        if not self.capture_mean_cov or self.num_items == 0:
            raise AssertionError('no mean/covariance collected')
        mean = self._sum / self.num_items
        return mean, self._gram / self.num_items - np.outer(mean, mean)

    def save(self, path: str) -> None:
        """Write as .npz arrays (no pickle), atomically."""
        width = self.num_features or 0
        arrays = dict(
            flags=np.array([self.capture_all, self.capture_mean_cov]),
            counts=np.array([self.num_items, -1 if self.max_items is None else self.max_items, width]),
            features=self.get_all() if self.capture_all else np.zeros((0, width), np.float32),
            sum=self._sum if self._sum is not None else np.zeros(0),
            gram=self._gram if self._gram is not None else np.zeros((0, 0)))
        with dnnlib.util.atomic_write(path) as tmp:
            with open(tmp, 'wb') as f:
                np.savez(f, **arrays)

    @staticmethod
    def load(path: str) -> 'FeatureStats':
        with np.load(path, allow_pickle=False) as npz:
            capture_all, capture_mean_cov = (bool(v) for v in npz['flags'])
            num_items, max_items, width = (int(v) for v in npz['counts'])
            stats = FeatureStats(capture_all, capture_mean_cov, None if max_items < 0 else max_items)
            if width:
                stats._start(width)
                stats._sum[:] = npz['sum']
                stats._gram[:] = npz['gram']
            if capture_all and num_items:
                stats._chunks = [npz['features'].astype(np.float32)]
        stats.num_items = num_items
        return stats

# ----------------------------------------------------------------------------
# Image streams: uint8 NCHW RGB batches on opts.device.


def iterate_dataset_images(opts: MetricOptions, dataset, max_items=None, batch_size=64):
    """This rank's share of the first `max_items` images. Items are dealt round-robin; the last round wraps
    around so that every rank gets the same number of batches."""
    total = len(dataset) if max_items is None else min(len(dataset), max_items)
    rounds = -(-total // opts.num_gpus)
    mine = [i % total for i in range(opts.rank, rounds * opts.num_gpus, opts.num_gpus)]
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=mine, batch_size=batch_size)
    for images, _labels in loader:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        yield images.to(opts.device)


def random_labels(opts: MetricOptions, batch_size: int, rnd: np.random.RandomState, dataset=None) -> torch.Tensor:
    """Labels for a batch, drawn from the dataset's labels; [batch, 0] for an unconditional G."""
    if getattr(opts.G, 'c_dim', 0) == 0:
        return torch.zeros([batch_size, 0], device=opts.device)
    if dataset is None:
        raise dnnlib.util.UserError('A conditional generator needs a dataset to draw labels from; pass --data')
    picks = [dataset.get_label(rnd.randint(len(dataset))) for _ in range(batch_size)]
    return torch.as_tensor(np.stack(picks), dtype=torch.float32, device=opts.device)


def generated_images_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 RGB (the rounding of the StyleGAN2-ADA metrics)."""
    pixels = torch.clamp(img * 127.5 + 128, 0, 255).to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels


def iterate_generated_images(opts: MetricOptions, batch_gen=4, dataset=None):
    """Endless batches of G(z, c): psi 1 and random noise unless opts.G_kwargs says otherwise, labels from the
    dataset. Seeded from (opts.seed, rank), so a metric gives the same number twice."""
    if opts.G is None:
        raise dnnlib.util.UserError('This metric needs a generator network; pass --network')
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    call_kwargs = {'truncation_psi': 1, 'noise_mode': 'random', **opts.G_kwargs}
    label_rng = np.random.RandomState([opts.seed, opts.rank])
    z_rng = torch.Generator(device=opts.device).manual_seed(opts.seed * 1000 + opts.rank)
    cuda_rng = [opts.device] if opts.device.type == 'cuda' else []
    while True:
        z = torch.randn([batch_gen, G.z_dim], generator=z_rng, device=opts.device)
        c = random_labels(opts, batch_gen, label_rng, dataset)
        noise_seed = int(label_rng.randint(1 << 31))
        with torch.random.fork_rng(devices=cuda_rng), torch.no_grad():
            torch.manual_seed(noise_seed)  # the layers' noise inputs draw from the global generator
            img = G(z, c, **call_kwargs)
        yield generated_images_to_uint8(img)

# ----------------------------------------------------------------------------
# Feature statistics


def _dataset_fingerprint(dataset_kwargs: dict) -> dict:
    """The dataset options plus its file's size and mtime: rewriting the dataset misses the cache."""
    fingerprint = dict(dataset_kwargs)
    path = dataset_kwargs.get('path')
    if isinstance(path, str) and os.path.exists(path):
        info = os.stat(path)
        fingerprint.update(_abspath=os.path.abspath(path), _size=info.st_size, _mtime_ns=info.st_mtime_ns)
    return fingerprint


def stats_cache_file(dataset_name: str, dataset_kwargs: dict, detector_name: str, detector_id: str,
                     detector_kwargs: dict, stats_kwargs: dict) -> str:
    """Where real-image statistics are cached; the name hashes everything that changes the numbers."""
    recipe = dict(format='npz-1', dataset=_dataset_fingerprint(dataset_kwargs), detector=detector_id,
                  detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
    digest = hashlib.md5(repr(sorted(recipe.items())).encode('utf-8')).hexdigest()
    return dnnlib.util.make_cache_dir_path('gan-metrics', f'{dataset_name}-{detector_name}-{digest}.pkl')


def _read_cached_stats(opts, path):
    """Cached stats if rank 0 can read them (then on every rank), else None; a damaged file is recomputed."""
    stats = None
    if opts.rank == 0 and os.path.isfile(path):
        try:
            stats = FeatureStats.load(path)
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f'ignoring unreadable metric cache {path} ({err})')
    if not _agree_with_rank0(opts, stats is not None):
        return None
    return stats if stats is not None else FeatureStats.load(path)


def _write_cached_stats(stats, path):
    try:
        stats.save(path)
    except (OSError, dnnlib.util.UserError) as err:  # the numbers are computed already; a full disk only costs the cache
        warnings.warn(f'could not write metric cache {path}: {getattr(err, "strerror", None) or err}')


def _features(detector, images, detector_kwargs):
    with torch.no_grad():
        return detector(images, **detector_kwargs)


def compute_feature_stats_for_dataset(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                      dataset_kwargs=None, batch_size=64, max_items=None, **stats_kwargs) -> FeatureStats:
    """Detector features of up to `max_items` dataset images (default dataset: opts.dataset_kwargs), served
    from and written to the cache when opts.cache."""
    source_kwargs = opts.dataset_kwargs if dataset_kwargs is None else dataset_kwargs
    dataset = open_dataset(source_kwargs)
    dataset_name = getattr(dataset, 'name', 'dataset')
    detector = get_feature_detector(detector_name, opts)

    cache_path = None
    if opts.cache:
        cache_path = stats_cache_file(dataset_name, source_kwargs, detector_name, f'{detector.source}@{detector.sha256}',
                                      detector_kwargs, dict(stats_kwargs, max_items=max_items))
        cached = _read_cached_stats(opts, cache_path)
        if cached is not None:
            return cached

    total = len(dataset) if max_items is None else min(len(dataset), max_items)
    stats = FeatureStats(max_items=total, **stats_kwargs)
    with _progress(opts, total, f'{dataset_name} {detector_name}') as bar:
        for images in iterate_dataset_images(opts, dataset, max_items=max_items, batch_size=batch_size):
            before = stats.num_items
            stats.append_torch(_features(detector, images, detector_kwargs), num_gpus=opts.num_gpus, rank=opts.rank)
            bar.update(stats.num_items - before)
    if cache_path is not None and opts.rank == 0:
        _write_cached_stats(stats, cache_path)
    return stats


def _label_source(opts):
    """The dataset to draw labels from, opened only when G is conditional."""
    return open_dataset(opts.dataset_kwargs) if getattr(opts.G, 'c_dim', 0) > 0 else None


def compute_feature_stats_for_generator(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                        batch_size=64, batch_gen=None, max_items=None, **stats_kwargs) -> FeatureStats:
    """Detector features of `max_items` generated images (never cached: G changes between calls)."""
    if max_items is None:
        raise ValueError('max_items is required for generated images')
    batch_gen = min(batch_size, 4) if batch_gen is None else batch_gen
    if batch_size % batch_gen:
        raise ValueError(f'batch_size {batch_size} is not a multiple of batch_gen {batch_gen}')
    dataset = _label_source(opts)
    detector = get_feature_detector(detector_name, opts)
    stats = FeatureStats(max_items=max_items, **stats_kwargs)
    batches = iterate_generated_images(opts, batch_gen=batch_gen, dataset=dataset)
    with _progress(opts, max_items, f'generated {detector_name}') as bar:
        while not stats.is_full():
            images = torch.cat([next(batches) for _ in range(batch_size // batch_gen)])
            before = stats.num_items
            stats.append_torch(_features(detector, images, detector_kwargs), num_gpus=opts.num_gpus, rank=opts.rank)
            bar.update(stats.num_items - before)
    return stats


def compute_feature_stats_for_candidate(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                        max_items=None, batch_size=64, **stats_kwargs) -> FeatureStats:
    """Statistics of the side under judgement: G, or the second dataset in dataset-vs-dataset mode."""
    if opts.dataset2_kwargs is None:
        return compute_feature_stats_for_generator(opts, detector_name, detector_kwargs, batch_size=batch_size,
                                                   max_items=max_items, **stats_kwargs)
    return compute_feature_stats_for_dataset(opts, detector_name, detector_kwargs, dataset_kwargs=opts.dataset2_kwargs,
                                             batch_size=batch_size, max_items=max_items, **stats_kwargs)


def candidate_images(opts: MetricOptions, max_items: int, batch_size=64):
    """This rank's uint8 batches of the judged side, for metrics that work on pixels (SWD)."""
    if opts.dataset2_kwargs is not None:
        yield from iterate_dataset_images(opts, open_dataset(opts.dataset2_kwargs), max_items=max_items,
                                          batch_size=batch_size)
        return
    batches = iterate_generated_images(opts, batch_gen=min(batch_size, 4), dataset=_label_source(opts))
    quota = -(-max_items // opts.num_gpus)
    delivered = 0
    while delivered < quota:
        images = next(batches)
        delivered += len(images)
        yield images
