"""Kernel Inception Distance (KID) from "Demystifying MMD GANs" (Binkowski et al. 2018): the unbiased MMD^2
with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 on Inception pool features, averaged over random
subsets, as the official StyleGAN2-ADA computes it."""

import numpy as np

import dnnlib
from metrics import metric_utils
from metrics.frechet_inception_distance import DETECTOR


def kernel_distance(real_features: np.ndarray, gen_features: np.ndarray, num_subsets=100, max_subset_size=1000,
                    seed=0) -> float:
    """Mean over num_subsets of the unbiased MMD^2 between equal-size random subsets of the two sets."""
    n = real_features.shape[1]
    m = min(real_features.shape[0], gen_features.shape[0], max_subset_size)
    if m < 2:
        raise dnnlib.util.UserError("KID needs at least two items per set")
    rnd = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen_features[rnd.choice(gen_features.shape[0], m, replace=False)].astype(np.float64)
        y = real_features[rnd.choice(real_features.shape[0], m, replace=False)].astype(np.float64)
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        # Within-set terms without the diagonal (unbiased) minus twice the cross term.
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)


def compute_kid(opts: metric_utils.MetricOptions, max_real, num_gen, num_subsets, max_subset_size) -> float:
    detector_kwargs = dict(return_features=True)
    real_features = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_name=DETECTOR, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=max_real).get_all()
    gen_features = metric_utils.compute_feature_stats_for_candidate(
        opts=opts, detector_name=DETECTOR, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan')
    return kernel_distance(real_features, gen_features, num_subsets=num_subsets, max_subset_size=max_subset_size, seed=opts.seed)
