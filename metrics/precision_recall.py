"""Improved precision and recall from "Improved Precision and Recall Metric for Assessing Generative
Models" (Kynkaanniemi et al. 2019): a sample counts as covered when it falls inside the k-NN ball of some
sample of the other set, in VGG16 feature space."""

import torch

import dnnlib
from metrics import metric_utils

DETECTOR = 'lpips-vgg16'


def _kth_radii(manifold: torch.Tensor, nhood_size: int, row_batch_size: int) -> torch.Tensor:
    # k + 1: each point is its own nearest neighbour at distance 0.
    radii = [torch.cdist(rows, manifold).kthvalue(nhood_size + 1, dim=1).values for rows in manifold.split(row_batch_size)]
    return torch.cat(radii)


def _covered(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, row_batch_size: int, col_batch_size: int) -> torch.Tensor:
    inside = []
    for rows in probes.split(row_batch_size):
        hit = torch.zeros([rows.shape[0]], dtype=torch.bool, device=rows.device)
        for cols, cols_radii in zip(manifold.split(col_batch_size), radii.split(col_batch_size)):
            hit |= (torch.cdist(rows, cols) <= cols_radii.unsqueeze(0)).any(dim=1)
        inside.append(hit)
    return torch.cat(inside)


def precision_recall(real_features: torch.Tensor, gen_features: torch.Tensor, nhood_size=3, row_batch_size=10000,
                     col_batch_size=10000) -> tuple[float, float]:
    """precision: share of generated samples inside the real manifold; recall: share of real samples
    inside the generated manifold. Each manifold is the union of balls reaching each point's k-th NN."""
    real_features = real_features.to(torch.float32)
    gen_features = gen_features.to(torch.float32)
    results = []
    for manifold, probes in [(real_features, gen_features), (gen_features, real_features)]:
        if manifold.shape[0] <= nhood_size:
            raise dnnlib.util.UserError(f"precision/recall needs more than {nhood_size} items per set")
        radii = _kth_radii(manifold, nhood_size, row_batch_size)
        results.append(float(_covered(probes, manifold, radii, row_batch_size, col_batch_size).to(torch.float32).mean()))
    return results[0], results[1]


def compute_pr(opts: metric_utils.MetricOptions, max_real, num_gen, nhood_size, row_batch_size, col_batch_size):
    detector_kwargs = dict(return_features=True)
    real_features = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_name=DETECTOR, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=max_real).get_all_torch()
    gen_features = metric_utils.compute_feature_stats_for_candidate(
        opts=opts, detector_name=DETECTOR, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=num_gen).get_all_torch()
    if opts.rank != 0:
        return float('nan'), float('nan')
    return precision_recall(real_features.to(opts.device), gen_features.to(opts.device), nhood_size=nhood_size,
                            row_batch_size=row_batch_size, col_batch_size=col_batch_size)
