"""Feature statistics over datasets and generators, the real-image stats cache, PPL, calc_metric/report_metric."""

import json
import os

import numpy as np
import pytest
import torch

import dnnlib
from metrics import detectors, metric_main, metric_utils
from datasets import write_dataset_zip


def dataset_kwargs(path, **kwargs):
    return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False,
                           max_size=None, xflip=False, **kwargs)


@pytest.fixture(scope='module')
def he_zip(he_crops, tmp_path_factory):
    crops = he_crops(32, 24, seed=3)
    return write_dataset_zip(tmp_path_factory.mktemp('he') / 'he32.zip', crops), crops


class MeanColourDetector(torch.nn.Module):
    """A cheap stand-in detector with a known answer: per-channel mean and std of each image; counts calls."""

    source = 'test'
    sha256 = '0' * 64
    origin = 'test'

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, images, **_kwargs):
        self.calls += 1
        x = images.to(torch.float64)
        return torch.cat([x.mean(dim=[2, 3]), x.std(dim=[2, 3])], dim=1).to(torch.float32)


@pytest.fixture
def fake_detector(monkeypatch, tmp_path):
    monkeypatch.setenv('HISTOSYNTH_CACHE_DIR', str(tmp_path / 'cache'))
    det = MeanColourDetector()
    monkeypatch.setattr(detectors, 'load_detector', lambda name, device='cpu', detector_dir=None: det)
    return det


def tiny_generator(c_dim=0, seed=0):
    from networks.stylegan2 import Generator
    torch.manual_seed(seed)
    return Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()

# ----------------------------------------------------------------------------


def test_dataset_stats_are_the_features_of_the_images(he_zip, fake_detector):
    path, crops = he_zip
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(path), device='cpu')
    stats = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, batch_size=5,
                                                           capture_all=True, capture_mean_cov=True)
    x = crops.astype(np.float64).transpose(0, 3, 1, 2)
    expected = np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3), ddof=1)], axis=1)
    np.testing.assert_allclose(stats.get_all(), expected, rtol=1e-5)  # The zip keeps the order it was written in.
    np.testing.assert_allclose(stats.get_mean_cov()[0], expected.mean(0), rtol=1e-5)


def test_real_stats_cache_is_hit_then_invalidated_by_an_option_change(he_zip, fake_detector, tmp_path):
    path, _crops = he_zip
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(path), device='cpu')
    first = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_mean_cov=True, max_items=20)
    calls = fake_detector.calls
    assert calls > 0
    cached = os.listdir(tmp_path / 'cache' / 'gan-metrics')
    assert len(cached) == 1 and cached[0].startswith('he32-inception-2015-12-05-')

    second = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_mean_cov=True, max_items=20)
    assert fake_detector.calls == calls  # Served from disk.
    np.testing.assert_array_equal(first.get_mean_cov()[1], second.get_mean_cov()[1])

    # Another item count, x-flips, detector options or a rewritten dataset: each is a new computation.
    metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_mean_cov=True, max_items=10)
    assert fake_detector.calls > calls
    calls = fake_detector.calls
    opts_flip = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(path, ), device='cpu')
    opts_flip.dataset_kwargs.xflip = True
    metric_utils.compute_feature_stats_for_dataset(opts_flip, 'inception-2015-12-05', {}, capture_mean_cov=True, max_items=20)
    assert fake_detector.calls > calls
    calls = fake_detector.calls
    metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', dict(return_features=True), capture_mean_cov=True, max_items=20)
    assert fake_detector.calls > calls
    assert len(os.listdir(tmp_path / 'cache' / 'gan-metrics')) == 4

    opts_nocache = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(path), device='cpu', cache=False)
    calls = fake_detector.calls
    metric_utils.compute_feature_stats_for_dataset(opts_nocache, 'inception-2015-12-05', {}, capture_mean_cov=True, max_items=20)
    assert fake_detector.calls > calls


def test_rewritten_dataset_misses_the_cache(he_crops, fake_detector, tmp_path):
    path = write_dataset_zip(tmp_path / 'd.zip', he_crops(32, 6, seed=7))
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(path), device='cpu')
    a = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_all=True).get_all()
    write_dataset_zip(path, he_crops(32, 6, seed=8))
    os.utime(path, ns=(1, 1))  # A different mtime even on coarse file systems.
    b = metric_utils.compute_feature_stats_for_dataset(opts, 'inception-2015-12-05', {}, capture_all=True).get_all()
    assert not np.array_equal(a, b)


def test_generator_stats_are_reproducible_with_a_seed(fake_detector):
    G = tiny_generator()
    stats = []
    for seed in (0, 0, 1):
        opts = metric_utils.MetricOptions(G=G, device='cpu', seed=seed)
        s = metric_utils.compute_feature_stats_for_generator(opts, 'inception-2015-12-05', {}, batch_size=4, max_items=10, capture_all=True)
        stats.append(s.get_all())
    assert stats[0].shape == (10, 6)
    np.testing.assert_array_equal(stats[0], stats[1])
    assert not np.array_equal(stats[0], stats[2])


def test_fid_between_a_dataset_and_itself_is_zero(he_zip, fake_detector):
    path, _ = he_zip
    result = metric_main.calc_metric('fid24_full', dataset_kwargs=dataset_kwargs(path), dataset2_kwargs=dataset_kwargs(path), device='cpu')
    assert abs(result.results.fid24_full) < 1e-6
    assert set(result) >= {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'detector_source'}
    assert result.detector_source == 'inception-2015-12-05: test format, sha256 00000000, from test'


def test_calc_metric_needs_a_generator_or_second_dataset(he_zip):
    with pytest.raises(dnnlib.util.UserError, match='needs a generator'):
        metric_main.calc_metric('fid1k', dataset_kwargs=dataset_kwargs(he_zip[0]), device='cpu')
    with pytest.raises(dnnlib.util.UserError, match="Unknown metric 'fid'"):
        metric_main.calc_metric('fid', dataset_kwargs=dataset_kwargs(he_zip[0]), device='cpu')


def test_swd_metric_between_datasets(he_zip, he_crops, tmp_path):
    path, _ = he_zip
    other = write_dataset_zip(tmp_path / 'noise.zip', np.random.RandomState(0).randint(0, 256, [24, 32, 32, 3], dtype=np.uint8))
    same = metric_main.calc_metric('swd24', dataset_kwargs=dataset_kwargs(path), dataset2_kwargs=dataset_kwargs(path), device='cpu')
    diff = metric_main.calc_metric('swd24', dataset_kwargs=dataset_kwargs(path), dataset2_kwargs=dataset_kwargs(other), device='cpu')
    assert set(same.results) == {'swd24_32', 'swd24_16', 'swd24_avg'}
    assert same.results.swd24_avg == pytest.approx(np.mean([same.results.swd24_32, same.results.swd24_16]))
    assert same.results.swd24_avg < 0.5 * diff.results.swd24_avg
    assert same.detector_source.startswith('none')


def test_ppl_on_a_tiny_generator_is_finite_and_reproducible(he_zip):
    G = tiny_generator()
    kwargs = dict(G=G, dataset_kwargs=dataset_kwargs(he_zip[0]), device='cpu')
    a = metric_main.calc_metric('ppl2_wend8', seed=0, **kwargs)
    b = metric_main.calc_metric('ppl2_wend8', seed=0, **kwargs)
    c = metric_main.calc_metric('ppl_zfull8', seed=1, **kwargs)
    assert np.isfinite(a.results.ppl2_wend8) and a.results.ppl2_wend8 > 0
    assert a.results.ppl2_wend8 == b.results.ppl2_wend8
    assert np.isfinite(c.results.ppl_zfull8) and c.results.ppl_zfull8 > 0
    assert 'lpips-vgg16' in a.detector_source


def test_ppl_trimmed_mean_drops_the_extremes():
    from metrics.perceptual_path_length import trimmed_mean
    # 1000 distinct values: the 1st percentile ('lower') is the 10th smallest, the 99th ('higher') the 991st.
    values = np.arange(1000, dtype=np.float64) ** 2
    dist = np.random.RandomState(0).permutation(values)
    assert trimmed_mean(dist) == pytest.approx(values[9:991].mean(), rel=1e-12)


def test_slerp_stays_on_the_sphere_and_hits_the_endpoints():
    from metrics.perceptual_path_length import slerp
    a, b = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(slerp(a, b, torch.zeros(5, 1, dtype=torch.float64)), a / a.norm(dim=1, keepdim=True))
    torch.testing.assert_close(slerp(a, b, torch.ones(5, 1, dtype=torch.float64)), b / b.norm(dim=1, keepdim=True))
    mid = slerp(a, b, torch.full([5, 1], 0.5, dtype=torch.float64))
    torch.testing.assert_close(mid.norm(dim=1), torch.ones(5, dtype=torch.float64))


def test_report_metric_appends_json_lines(tmp_path, capsys):
    result = dnnlib.EasyDict(results=dict(fid50k_full=1.5), metric='fid50k_full', total_time=2.0, total_time_str='2s',
                             num_gpus=1, detector_source='x')
    pkl = tmp_path / 'network-snapshot-000100.pkl'
    for _ in range(2):
        metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(pkl))
    lines = (tmp_path / 'metric-fid50k_full.jsonl').read_text().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[1])
    assert row['results'] == {'fid50k_full': 1.5} and row['snapshot_pkl'] == 'network-snapshot-000100.pkl'
    assert set(row) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'detector_source', 'snapshot_pkl', 'timestamp'}
    assert capsys.readouterr().out.count('"fid50k_full"') == 4
    assert [f for f in os.listdir(tmp_path) if f.endswith('.tmp')] == []
