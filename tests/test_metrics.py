"""The metric formulas against closed forms, brute force and hand-built inputs with known answers."""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch

from metrics import inception_score, metric_main, sliced_wasserstein
from metrics.frechet_inception_distance import frechet_distance
from metrics.kernel_inception_distance import kernel_distance
from metrics.metric_utils import FeatureStats
from metrics.precision_recall import precision_recall

# ----------------------------------------------------------------------------
# FID


def _random_rotation(d, seed):
    q, r = np.linalg.qr(np.random.RandomState(seed).randn(d, d))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize('rotate', [False, True])
def test_fid_of_gaussians_matches_closed_form(rotate):
    # Commuting covariances (same eigenvectors): tr((S1 S2)^1/2) = sum sqrt(a_i b_i), no sqrtm needed.
    d = 16
    rnd = np.random.RandomState(1)
    mu1, mu2 = rnd.randn(d), rnd.randn(d)
    a, b = rnd.uniform(0.1, 4, d), rnd.uniform(0.1, 4, d)
    r = _random_rotation(d, 2) if rotate else np.eye(d)
    sigma1, sigma2 = r @ np.diag(a) @ r.T, r @ np.diag(b) @ r.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_fid_from_sampled_features_converges_to_closed_form():
    d, n = 4, 200000
    rnd = np.random.RandomState(3)
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 1.0, 0.5, 1.0])
    mu2 = np.array([1.0, 0.0, -1.0, 0.5])
    stats1, stats2 = FeatureStats(capture_mean_cov=True), FeatureStats(capture_mean_cov=True)
    for _ in range(4):  # In chunks, as the metric accumulates them.
        stats1.append(rnd.randn(n // 4, d) * np.sqrt(a))
        stats2.append(rnd.randn(n // 4, d) * np.sqrt(b) + mu2)
    expected = np.sum(mu2 ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    fid = frechet_distance(*stats1.get_mean_cov(), *stats2.get_mean_cov())
    assert fid == pytest.approx(expected, abs=0.05)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.RandomState(0).randn(500, 32).astype(np.float32)
    stats = FeatureStats(capture_mean_cov=True)
    stats.append(x)
    mu, sigma = stats.get_mean_cov()
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_feature_stats_mean_cov_and_max_items_match_numpy():
    x = np.random.RandomState(0).randn(103, 5).astype(np.float32) * 3 + 1
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=90)
    for chunk in np.array_split(x, 7):
        stats.append(chunk)
        if stats.is_full():
            break
    assert stats.num_items == 90 and stats.is_full()
    np.testing.assert_array_equal(stats.get_all(), x[:90])
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:90].astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(x[:90].astype(np.float64), rowvar=False, bias=True), rtol=1e-8, atol=1e-10)


def test_feature_stats_save_load_roundtrip(tmp_path):
    stats = FeatureStats(capture_mean_cov=True, capture_all=True)
    stats.append(np.arange(12, dtype=np.float32).reshape(4, 3))
    stats.save(str(tmp_path / 's.pkl'))
    loaded = FeatureStats.load(str(tmp_path / 's.pkl'))
    np.testing.assert_array_equal(loaded.get_all(), stats.get_all())
    np.testing.assert_array_equal(loaded.get_mean_cov()[1], stats.get_mean_cov()[1])

# ----------------------------------------------------------------------------
# KID


def _brute_force_mmd2(x, y):
    d = x.shape[1]
    k = lambda u, v: (np.dot(u, v) / d + 1) ** 3
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_matches_brute_force_unbiased_mmd():
    rnd = np.random.RandomState(0)
    real = rnd.randn(30, 8)
    gen = rnd.randn(30, 8) * 1.5 + 0.3
    # One subset as large as the sets: a permutation of all items, and MMD^2 does not depend on order.
    kid = kernel_distance(real, gen, num_subsets=1, max_subset_size=1000)
    assert kid == pytest.approx(_brute_force_mmd2(gen, real), rel=1e-9)


def test_kid_is_near_zero_for_same_distribution_and_positive_otherwise():
    rnd = np.random.RandomState(1)
    a, b = rnd.randn(400, 16), rnd.randn(400, 16)
    c = rnd.randn(400, 16) + 0.5
    same = kernel_distance(a, b, num_subsets=20, max_subset_size=200)
    diff = kernel_distance(a, c, num_subsets=20, max_subset_size=200)
    assert abs(same) < 0.02 < diff

# ----------------------------------------------------------------------------
# Precision / recall


def test_precision_recall_on_hand_built_manifolds():
    # Real: 10 points on a line, spacing 1; 3rd-NN radii are 3 at both ends and 2 inside.
    real = torch.tensor([[float(i), 0.0] for i in range(10)])
    # Generated: 4 points hugging the start of the line, and a unit square far away.
    gen = torch.tensor([[0, .5], [1, .5], [2, .5], [3, .5], [20, 0], [20, 1], [21, 0], [21, 1]], dtype=torch.float32)
    precision, recall = precision_recall(real, gen, nhood_size=3, row_batch_size=3, col_batch_size=4)
    # Precision: the 4 near points lie within 0.5 of a real point; the square is >= 11 away.
    assert precision == pytest.approx(4 / 8)
    # Recall: generated radii are 3, 2, 2, 3 on the line and sqrt(2) in the square. Real points 0..5 are
    # covered ((5,0) is 2.06 from (3,.5) whose radius is 3); (6,0) is 3.04 from it, so 6..9 are not.
    assert recall == pytest.approx(6 / 10)


def test_precision_recall_matches_brute_force_loops():
    rnd = np.random.RandomState(0)
    real = rnd.randn(40, 3)
    gen = rnd.randn(30, 3) * 1.3 + 0.4
    k = 3

    def covered(probes, manifold):
        radii = [sorted(np.linalg.norm(manifold - p, axis=1))[k] for p in manifold]
        return np.mean([any(np.linalg.norm(q - m) <= r for m, r in zip(manifold, radii)) for q in probes])

    precision, recall = precision_recall(torch.tensor(real), torch.tensor(gen), nhood_size=k, row_batch_size=7, col_batch_size=9)
    assert precision == pytest.approx(covered(gen, real))
    assert recall == pytest.approx(covered(real, gen))

# ----------------------------------------------------------------------------
# Inception score with a fabricated classifier


def test_inception_score_uniform_predictions_is_one():
    mean, std = inception_score.inception_score(np.full([100, 1008], 1 / 1008), num_splits=10)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_confident_distinct_classes_is_the_class_count():
    probs = np.eye(10)[np.arange(100) % 10]  # Every split holds each of the 10 classes once, one-hot.
    mean, std = inception_score.inception_score(probs, num_splits=10)
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_of_one_repeated_class_is_one():
    probs = np.tile(np.eye(5)[2], [50, 1])
    assert inception_score.inception_score(probs, num_splits=5)[0] == pytest.approx(1.0)

# ----------------------------------------------------------------------------
# SWD


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.randint(0, 256, [2, 3, 64, 64]).to(torch.uint8)
    pyramid = sliced_wasserstein.laplacian_pyramid(x, 3)
    assert [p.shape[2] for p in pyramid] == [64, 32, 16]
    kernel = sliced_wasserstein._gaussian_kernel(3, 'cpu')
    recon = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        recon = level + sliced_wasserstein._pyr_up(recon, kernel)
    torch.testing.assert_close(recon, x.float(), atol=1e-3, rtol=0)


def test_pyramid_levels_stop_at_16():
    assert sliced_wasserstein.pyramid_levels(128) == [128, 64, 32, 16]
    assert sliced_wasserstein.pyramid_levels(16) == [16]


def test_descriptors_are_the_sampled_patches():
    level = torch.randn(2, 3, 20, 20)
    desc = sliced_wasserstein.get_descriptors(level, 7, 5, torch.Generator().manual_seed(0))
    assert desc.shape == (10, 3, 7, 7)
    # Replay the same random draws: rows first, then columns.
    gen = torch.Generator().manual_seed(0)
    ys = torch.randint(0, 14, [2, 5], generator=gen)
    xs = torch.randint(0, 14, [2, 5], generator=gen)
    for n, k in itertools.product(range(2), range(5)):
        y, x = int(ys[n, k]), int(xs[n, k])
        torch.testing.assert_close(desc[n * 5 + k], level[n, :, y:y + 7, x:x + 7], rtol=0, atol=0)


def test_sliced_wasserstein_in_1d_is_the_wasserstein_distance():
    rnd = np.random.RandomState(0)
    a = rnd.randn(500, 1).astype(np.float32)
    b = (rnd.randn(500, 1) * 2 + 1).astype(np.float32)
    # In 1-D every unit direction is +-1, so each slice is the exact W1 distance.
    swd = sliced_wasserstein.sliced_wasserstein(a, b, dir_repeats=2, dirs_per_repeat=3)
    assert swd == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0], b[:, 0]), rel=1e-5)


def test_sliced_wasserstein_of_identical_descriptors_is_zero():
    a = np.random.RandomState(0).randn(300, 147).astype(np.float32)
    # Same set in another order: zero up to float32 rounding of the projections (summation order varies
    # with the BLAS build). A shift of only 1e-3 already gives ~8e-4, so 1e-6 still catches a wrong result.
    assert abs(sliced_wasserstein.sliced_wasserstein(a, a[::-1].copy())) < 1e-6
    # Shifting every descriptor by d * (1, ..., 1) moves each projection on a unit direction u by d * sum(u),
    # so each slice costs |d * sum(u)|; for random unit u in 147-d, E|sum(u)| ~ sqrt(2 / pi).
    shifted = sliced_wasserstein.sliced_wasserstein(a, a + 0.1)
    assert shifted == pytest.approx(0.1 * np.sqrt(2 / np.pi), rel=0.15)


def test_swd_of_same_patches_is_at_the_sampling_floor_and_grows_with_blur(he_crops):
    crops = he_crops(64, 32, seed=5)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()

    def blurred(sigma):
        out = scipy.ndimage.gaussian_filter(crops.astype(np.float32), sigma=(0, sigma, sigma, 0), mode='reflect')
        return torch.from_numpy(np.rint(out).clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()

    # Same images, independently drawn descriptors: only the sampling noise of 32 x 128 descriptors remains.
    same = np.mean(sliced_wasserstein.swd_of_images(x, x))
    dists = [np.mean(sliced_wasserstein.swd_of_images(x, blurred(s))) for s in (1.0, 2.0, 4.0)]
    assert same < dists[0] < dists[1] < dists[2]
    assert dists[2] > 3 * same


# ----------------------------------------------------------------------------
# Names


def test_official_metric_names_are_valid_and_counts_parse():
    for name in ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'is50k', 'fid50k', 'kid50k', 'pr50k3',
                 'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend', 'swd']:
        assert metric_main.is_valid_metric(name), name
        assert name in metric_main.list_valid_metrics()
    assert metric_main._parse('fid50k_full')[1:] == (50000, True)
    assert metric_main._parse('fid5k')[1:] == (5000, False)
    assert metric_main._parse('pr1k3_full')[1:] == (1000, True)
    assert metric_main._parse('kid64')[1:] == (64, False)
    assert metric_main._parse('swd')[1] == 16384  # 2^21 descriptors at 128 per image (Karras et al. 2018).
    assert metric_main._parse('ppl2_wend')[1] == 50000 and metric_main._parse('ppl_zfull2k')[1] == 2000
    for bad in ['fid', 'fid50k_fullx', 'FID50k', 'kid0', 'pr50k', 'ppl', 'swd_full', 'is50k_full', '', None]:
        assert not metric_main.is_valid_metric(bad), bad
