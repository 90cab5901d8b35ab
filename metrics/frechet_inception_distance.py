"""Frechet Inception Distance (FID) from "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
Nash Equilibrium" (Heusel et al. 2017), computed as the official StyleGAN2-ADA does: Inception-v3 2015-12-05
pool features, float64 mean and population covariance, scipy's matrix square root."""

import numpy as np
import scipy.linalg

from metrics import metric_utils

DETECTOR = 'inception-2015-12-05'


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))."""
    m = np.square(mu1 - mu2).sum()
    s = scipy.linalg.sqrtm(np.dot(sigma1, sigma2))  # The product is not symmetric: the root may come out complex.
    return float(np.real(m + np.trace(sigma1 + sigma2 - s * 2)))


def compute_fid(opts: metric_utils.MetricOptions, max_real, num_gen) -> float:
    detector_kwargs = dict(return_features=True)
    mu_real, sigma_real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_name=DETECTOR, detector_kwargs=detector_kwargs,
        capture_mean_cov=True, max_items=max_real).get_mean_cov()
    mu_gen, sigma_gen = metric_utils.compute_feature_stats_for_candidate(
        opts=opts, detector_name=DETECTOR, detector_kwargs=detector_kwargs,
        capture_mean_cov=True, max_items=num_gen).get_mean_cov()
    if opts.rank != 0:
        return float('nan')
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)
