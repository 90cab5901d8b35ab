"""Shared machinery of the metrics: options, detectors, feature statistics with an on-disk cache for the
real images, and image streams from a dataset or a generator, split across GPUs by rank."""

import copy
import hashlib
import os
import pickle

import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from metrics import detectors

# ----------------------------------------------------------------------------


class MetricOptions:
    """Everything a metric needs to know about what to measure and where.

    dataset2_kwargs: when given, the 'generated' side of every metric is this second dataset instead of
    G (dataset-vs-dataset mode: compare two patch sets, e.g. two scanners or stainings)."""

    def __init__(self, G=None, G_kwargs={}, dataset_kwargs={}, dataset2_kwargs=None, num_gpus=1, rank=0,
                 device=None, progress=None, cache=True, detector_dir=None, seed=0):
        assert 0 <= rank < num_gpus
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs)
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs)
        self.dataset2_kwargs = dnnlib.EasyDict(dataset2_kwargs) if dataset2_kwargs is not None else None
        self.num_gpus = num_gpus
        self.rank = rank
        self.device = torch.device(device) if device is not None else torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
        self.progress = bool(progress) and rank == 0
        self.cache = cache
        self.detector_dir = detector_dir
        self.seed = seed
        self.detector_sources = dict()  # detector name -> describe() line, filled as detectors get used.

# ----------------------------------------------------------------------------


def get_feature_detector(name: str, opts: MetricOptions) -> torch.nn.Module:
    """Load a detector once per process; rank 0 goes first so that only it fetches the asset."""
    distributed = opts.num_gpus > 1 and torch.distributed.is_initialized()
    if distributed and opts.rank != 0:
        torch.distributed.barrier()
    detector = detectors.load_detector(name, device=opts.device, detector_dir=opts.detector_dir)
    if distributed and opts.rank == 0:
        torch.distributed.barrier()
    opts.detector_sources[name] = detectors.describe(detector, name)
    return detector


def open_dataset(dataset_kwargs: dict):
    """Construct a dataset from its kwargs, turning any failure to read it into one clear line."""
    if not dataset_kwargs or 'class_name' not in dataset_kwargs:
        raise dnnlib.util.UserError("No dataset given (dataset_kwargs without class_name); pass --data")
    try:
        dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs)
    except dnnlib.util.UserError:
        raise
    except Exception as err:
        raise dnnlib.util.UserError(f"Cannot read dataset {dataset_kwargs.get('path', '')}: {err}") from err
    if len(dataset) == 0:
        raise dnnlib.util.UserError(f"Dataset {dataset_kwargs.get('path', '')} holds no images")
    return dataset

# ----------------------------------------------------------------------------


class FeatureStats:
    """Accumulates feature vectors: all of them (capture_all) and/or their mean and covariance in float64
    (capture_mean_cov), up to max_items."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None
        self.raw_mean = None
        self.raw_cov = None

    def set_num_features(self, num_features: int) -> None:
        if self.num_features is not None:
            assert num_features == self.num_features
            return
        self.num_features = num_features
        self.all_features = []
        self.raw_mean = np.zeros([num_features], dtype=np.float64)
        self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        self.set_num_features(x.shape[1])
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x: torch.Tensor, num_gpus: int = 1, rank: int = 0) -> None:
        """Append a batch from every rank, interleaved in rank order, so all ranks hold the same stats."""
        assert x.ndim == 2 and 0 <= rank < num_gpus
        if num_gpus > 1:
            gathered = [torch.empty_like(x) for _ in range(num_gpus)]
            torch.distributed.all_gather(gathered, x)
            x = torch.stack(gathered, dim=1).flatten(0, 1)
        self.append(x.detach().cpu().numpy())

    def get_all(self) -> np.ndarray:
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self) -> torch.Tensor:
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (population, 1/N) covariance, as the official FID."""
        assert self.capture_mean_cov and self.num_items > 0
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, pkl_file: str) -> None:
        with dnnlib.util.atomic_write(pkl_file) as tmp:
            with open(tmp, 'wb') as f:
                pickle.dump(self.__dict__, f)

    @staticmethod
    def load(pkl_file: str) -> 'FeatureStats':
        with open(pkl_file, 'rb') as f:
            state = dnnlib.EasyDict(pickle.load(f))
        obj = FeatureStats(capture_all=state.capture_all, max_items=state.max_items)
        obj.__dict__.update(state)
        return obj

# ----------------------------------------------------------------------------
# Image streams: uint8 NCHW batches on opts.device, the same number of batches on every rank.


def iterate_dataset_images(opts: MetricOptions, dataset, max_items=None, batch_size=64):
    """Yield this rank's share of the first max_items dataset images, in batches."""
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    item_subset = [(i * opts.num_gpus + opts.rank) % num_items for i in range((num_items - 1) // opts.num_gpus + 1)]
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=item_subset, batch_size=batch_size)
    for images, _labels in loader:
        if images.shape[1] == 1:
            images = images.repeat([1, 3, 1, 1])
        yield images.to(opts.device)


def random_labels(opts: MetricOptions, batch_size: int, rnd: np.random.RandomState, dataset=None) -> torch.Tensor:
    """Conditioning labels drawn from the dataset's label distribution (zeros when G is unconditional)."""
    c_dim = getattr(opts.G, 'c_dim', 0)
    if c_dim == 0:
        return torch.zeros([batch_size, 0], device=opts.device)
    if dataset is None:
        raise dnnlib.util.UserError("A conditional generator needs a dataset to draw labels from; pass --data")
    c = [dataset.get_label(rnd.randint(len(dataset))) for _ in range(batch_size)]
    return torch.from_numpy(np.stack(c)).to(torch.float32).to(opts.device)


def generated_images_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float NCHW -> uint8 NCHW, rounding as the official metrics do."""
    img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if img.shape[1] == 1:
        img = img.repeat([1, 3, 1, 1])
    return img


def iterate_generated_images(opts: MetricOptions, batch_gen=4, dataset=None):
    """Yield endless batches of G(z, c) as uint8 with random noise, psi=1 (unless G_kwargs says
    otherwise) and labels drawn from the dataset. Seeded per rank, so a metric is reproducible."""
    if opts.G is None:
        raise dnnlib.util.UserError("This metric needs a generator network; pass --network")
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    G_kwargs = dict(truncation_psi=1, noise_mode='random')
    G_kwargs.update(opts.G_kwargs)
    rnd = np.random.RandomState([opts.seed, opts.rank])
    z_gen = torch.Generator(device=opts.device).manual_seed(opts.seed * 1000 + opts.rank)
    while True:
        z = torch.randn([batch_gen, G.z_dim], generator=z_gen, device=opts.device)
        c = random_labels(opts, batch_gen, rnd, dataset)
        with torch.random.fork_rng(devices=[opts.device] if opts.device.type == 'cuda' else []):
            torch.manual_seed(int(rnd.randint(1 << 31)))  # Seeds the per-layer noise inputs.
            with torch.no_grad():
                img = G(z, c, **G_kwargs)
        yield generated_images_to_uint8(img)

# ----------------------------------------------------------------------------


def _dataset_fingerprint(dataset_kwargs: dict) -> dict:
    """Dataset options plus the size and mtime of its file, so that a rewritten dataset misses the cache."""
    fingerprint = dict(dataset_kwargs)
    path = dataset_kwargs.get('path')
    if isinstance(path, str) and os.path.exists(path):
        st = os.stat(path)
        fingerprint.update(_abspath=os.path.abspath(path), _size=st.st_size, _mtime_ns=st.st_mtime_ns)
    return fingerprint


def stats_cache_file(dataset_name: str, dataset_kwargs: dict, detector_name: str, detector_id: str,
                     detector_kwargs: dict, stats_kwargs: dict) -> str:
    """Cache path for real-image statistics; the name hashes every option that changes the numbers."""
    args = dict(dataset=_dataset_fingerprint(dataset_kwargs), detector=detector_id,
                detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
    md5 = hashlib.md5(repr(sorted(args.items())).encode('utf-8')).hexdigest()
    return dnnlib.util.make_cache_dir_path('gan-metrics', f'{dataset_name}-{detector_name}-{md5}.pkl')


def _extract(detector, images, detector_kwargs):
    with torch.no_grad():
        return detector(images, **detector_kwargs)


def compute_feature_stats_for_dataset(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                      dataset_kwargs=None, batch_size=64, max_items=None, **stats_kwargs) -> FeatureStats:
    """Detector features of up to max_items dataset images (default: opts.dataset_kwargs); cached on disk."""
    dataset_kwargs = opts.dataset_kwargs if dataset_kwargs is None else dataset_kwargs
    dataset = open_dataset(dataset_kwargs)
    detector = get_feature_detector(detector_name, opts)

    cache_file = None
    if opts.cache:
        cache_file = stats_cache_file(getattr(dataset, 'name', 'dataset'), dataset_kwargs, detector_name,
                                      f'{detector.source}@{detector.sha256}', detector_kwargs,
                                      dict(stats_kwargs, max_items=max_items))
        flag = os.path.isfile(cache_file) if opts.rank == 0 else False
        if opts.num_gpus > 1:  # Every rank follows rank 0's decision.
            flag_t = torch.as_tensor(1.0 if flag else 0.0, dtype=torch.float32, device=opts.device)
            torch.distributed.broadcast(tensor=flag_t, src=0)
            flag = float(flag_t.cpu()) != 0
        if flag:
            return FeatureStats.load(cache_file)

    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    with tqdm(total=num_items, desc=f'{getattr(dataset, "name", "dataset")} {detector_name}', unit='img', disable=not opts.progress, leave=False) as bar:
        for images in iterate_dataset_images(opts, dataset, max_items=max_items, batch_size=batch_size):
            stats.append_torch(_extract(detector, images, detector_kwargs), num_gpus=opts.num_gpus, rank=opts.rank)
            bar.update(min(images.shape[0] * opts.num_gpus, num_items - bar.n))

    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats


def compute_feature_stats_for_generator(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                        batch_size=64, batch_gen=None, max_items=None, **stats_kwargs) -> FeatureStats:
    """Detector features of max_items generated images (never cached: G changes between calls)."""
    assert max_items is not None
    batch_gen = min(batch_size, 4) if batch_gen is None else batch_gen
    assert batch_size % batch_gen == 0
    dataset = open_dataset(opts.dataset_kwargs) if getattr(opts.G, 'c_dim', 0) > 0 else None
    detector = get_feature_detector(detector_name, opts)
    stats = FeatureStats(max_items=max_items, **stats_kwargs)
    images_iter = iterate_generated_images(opts, batch_gen=batch_gen, dataset=dataset)
    with tqdm(total=max_items, desc=f'generated {detector_name}', unit='img', disable=not opts.progress, leave=False) as bar:
        while not stats.is_full():
            images = torch.cat([next(images_iter) for _ in range(batch_size // batch_gen)])
            before = stats.num_items
            stats.append_torch(_extract(detector, images, detector_kwargs), num_gpus=opts.num_gpus, rank=opts.rank)
            bar.update(stats.num_items - before)
    return stats


def compute_feature_stats_for_candidate(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                        max_items=None, batch_size=64, **stats_kwargs) -> FeatureStats:
    """Stats of the side being judged: the generator, or the second dataset in dataset-vs-dataset mode."""
    if opts.dataset2_kwargs is not None:
        return compute_feature_stats_for_dataset(opts, detector_name, detector_kwargs, dataset_kwargs=opts.dataset2_kwargs,
                                                 batch_size=batch_size, max_items=max_items, **stats_kwargs)
    return compute_feature_stats_for_generator(opts, detector_name, detector_kwargs, batch_size=batch_size,
                                               max_items=max_items, **stats_kwargs)

# ----------------------------------------------------------------------------


def candidate_images(opts: MetricOptions, max_items: int, batch_size=64):
    """uint8 image batches (this rank's share) of the judged side, for metrics without a detector (SWD)."""
    if opts.dataset2_kwargs is not None:
        yield from iterate_dataset_images(opts, open_dataset(opts.dataset2_kwargs), max_items=max_items, batch_size=batch_size)
        return
    dataset = open_dataset(opts.dataset_kwargs) if getattr(opts.G, 'c_dim', 0) > 0 else None
    images_iter = iterate_generated_images(opts, batch_gen=min(batch_size, 4), dataset=dataset)
    per_rank = (max_items - 1) // opts.num_gpus + 1
    done = 0
    while done < per_rank:
        images = next(images_iter)
        done += images.shape[0]
        yield images

