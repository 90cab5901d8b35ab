"""Kernel Inception Distance (KID; Binkowski et al. 2018, "Demystifying MMD GANs").

KID is the unbiased estimate of the squared maximum mean discrepancy between real and generated Inception
pool features under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
of equal size (the StyleGAN2-ADA protocol: 100 subsets of at most 1000 items).
"""

import numpy as np

import dnnlib
from metrics import metric_utils
from metrics.frechet_inception_distance import DETECTOR


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dims = x.shape[1]
    return (x @ y.T / dims + 1.0) ** 3


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equally large sets: within-set kernel means without the diagonal, minus twice
    the cross-set mean."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    off_diagonal = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(off_diagonal / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_distance(real_features: np.ndarray, gen_features: np.ndarray, num_subsets=100, max_subset_size=1000,
                    seed=0) -> float:
    """KID: the mean of unbiased_mmd2 over `num_subsets` pairs of random subsets (drawn without replacement
    from each set, as large as the smaller set allows, at most `max_subset_size`)."""
    subset = min(len(real_features), len(gen_features), max_subset_size)
    if subset < 2:
        raise dnnlib.util.UserError('KID needs at least two items per set')
    rng = np.random.RandomState(seed)
    estimates = []
    for _ in range(num_subsets):
        fake = gen_features[rng.choice(len(gen_features), subset, replace=False)]
        real = real_features[rng.choice(len(real_features), subset, replace=False)]
        estimates.append(unbiased_mmd2(fake.astype(np.float64), real.astype(np.float64)))
    return float(np.mean(estimates))


def compute_kid(opts: metric_utils.MetricOptions, max_real, num_gen, num_subsets, max_subset_size) -> float:
    want = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, DETECTOR, want, capture_all=True, max_items=max_real)
    fake = metric_utils.compute_feature_stats_for_candidate(opts, DETECTOR, want, capture_all=True, max_items=num_gen)
    if opts.rank != 0:
        return float('nan')
    return kernel_distance(real.get_all(), fake.get_all(), num_subsets=num_subsets, max_subset_size=max_subset_size,
                           seed=opts.seed)
