"""Inception Score (IS) from "Improved Techniques for Training GANs" (Salimans et al. 2016), as the official
StyleGAN2-ADA computes it: softmax of the Inception-v3 2015-12-05 logits without the output bias, mean and
std of exp(E_x KL(p(y|x) || p(y))) over splits. Needs the official inception-2015-12-05.pt (logits)."""

import numpy as np
import scipy.special

from metrics import metric_utils
from metrics.frechet_inception_distance import DETECTOR


def inception_score(probs: np.ndarray, num_splits=10) -> tuple[float, float]:
    """probs: [N, classes] class probabilities of N images. Returns (mean, std) over the splits."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits: (i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)  # 0 log 0 = 0.
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts: metric_utils.MetricOptions, num_gen, num_splits):
    if opts.dataset2_kwargs is not None:
        # No reference set is involved: score the second dataset alone.
        stats = metric_utils.compute_feature_stats_for_dataset(
            opts=opts, detector_name=DETECTOR, detector_kwargs=dict(return_probs=True, no_output_bias=True),
            dataset_kwargs=opts.dataset2_kwargs, capture_all=True, max_items=num_gen)
    else:
        stats = metric_utils.compute_feature_stats_for_generator(
            opts=opts, detector_name=DETECTOR, detector_kwargs=dict(return_probs=True, no_output_bias=True),
            capture_all=True, max_items=num_gen)
    if opts.rank != 0:
        return float('nan'), float('nan')
    return inception_score(stats.get_all(), num_splits=num_splits)
