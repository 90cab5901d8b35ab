"""Anomaly detection on real H&E, end to end (slow: trains small StyleGAN2s and their encoders here).

A narrow config-e StyleGAN2 learns CMU-1-Small-Region (normal tissue, 0.499 um/px) for a few hundred images, the
izi_f encoder is trained on the same normal patches, and then
- tools.anomaly evaluate scores held-out normal patches and tumour-tile patches (resampled to the slide's
  resolution, tests/anomaly_data.py);
- tools.slide_map maps a CMU pyramid with the tumour tissue pasted in.
This runs for three training seeds. The reported metrics must equal scikit-learn's on the tools' own CSVs (a
real check). Detection itself is issue 12's and 16's acceptance criterion and is NOT reached at this scale:
measured (perceptual score, 0.32 kimg) the evaluate AUROC was 0.85 / 0.57 / 0.71 for seeds 0 / 1 / 2 and the slide
map's patch AUROC 0.72 / 0.36 / 0.41 (2 minutes on one idle core); with the generator trained for 1 kimg, seed 0
gave 0.89 / 0.64, for 3 kimg 0.50. The tumour tile is
smoother and paler than this slide, and a briefly trained generator reconstructs smooth tissue better, so the
scores partly measure image complexity. Those tests are strict xfails: when a change makes every seed detect,
they fail as XPASS and the marker must go.
"""

import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner
from sklearn import metrics

from anomaly_data import block_crops, tumour_crops
from datasets import write_dataset_zip
from slide_map_inputs import write_lesion_slide
from tools import anomaly, assets, slide_map, train_encoder

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = 32
GAN_KIMG = 0.32
ENCODER_KIMG = 0.16
TRAIN_ARGS = ['--cfg=config-e', '--cbase=512', '--cmax=64', '--map=2', '--batch=16', '--gamma=0.1', '--ema=0.1',
              '--augpipe=histo', '--mirror=1', '--metrics=none', '--workers=1', f'--kimg={GAN_KIMG}',
              '--tick=0.16', '--snap=100']
SEEDS = (0, 1, 2)
SCORE = 'perceptual'  # LPIPS + D-feature distance: the pixel residual of so short a training measures colour, not tissue


@pytest.fixture(scope='module')
def tumour_tile():
    with PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)) as img:
        return np.asarray(img.convert('RGB'))


@pytest.fixture(scope='module')
def normal_data(tmp_path_factory, he_image):
    """2000 normal 32x32 training crops from 3 of 4 checkerboard blocks."""
    return write_dataset_zip(tmp_path_factory.mktemp('normal') / 'normal.zip',
                             block_crops(he_image, RES, 2000, held_out=False, seed=1))


def train(folder, data, seed):
    """(network pkl, encoder pkl) trained with this seed on the normal crops."""
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--outdir={folder / "runs"}', f'--data={data}',
           f'--seed={seed}', *TRAIN_ARGS]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:]
    network = sorted(glob.glob(str(folder / 'runs' / '*' / 'network-snapshot-*.pkl')))[-1]
    encoder = train_encoder.train_encoder(network, data, str(folder / 'encoder'), kimg=ENCODER_KIMG, batch_size=16,
                                          lr=1e-3, lpips_weight=0, device='cpu', progress=False, workers=1,
                                          seed=seed)
    return network, encoder


def read_scores(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r['label']) for r in rows]), np.array([float(r['score']) for r in rows])


def evaluate(folder, network, encoder, labelled):
    """(reported metrics, labels, scores) of tools.anomaly evaluate on the labelled patches."""
    outdir = folder / 'eval'
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', network, '--encoder', encoder, '--data', labelled,
                                           '--outdir', str(outdir), '--score', SCORE, '--device', 'cpu', '--batch', '40'])
    assert res.exit_code == 0, res.output
    found = json.loads(res.output[res.output.rindex('{"AUROC"'):].splitlines()[0])
    return (found, *read_scores(outdir / 'scores.csv'))


def map_slide(folder, network, encoder, slide, xml):
    """(reported metrics, labels, scores) of tools.slide_map at 32 px, stride 32, 90 % tissue (as the training crops)."""
    outdir = folder / 'maps'
    res = CliRunner().invoke(slide_map.main, ['--network', network, '--encoder', encoder, '--slide', slide,
                                              '--annotations', xml, '--outdir', str(outdir), '--score', SCORE,
                                              '--patch-size', str(RES), '--level', '0', '--stride', '32',
                                              '--tissue-min', '0.9', '--batch', '64', '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    return (json.loads(res.output.strip().splitlines()[-1]), *read_scores(outdir / 'lesion.csv'))


@pytest.fixture(scope='module')
def runs(tmp_path_factory, he_image, tumour_tile, normal_data):
    """Per seed: dict(evaluate=(metrics, labels, scores), slide_map=(metrics, labels, scores))."""
    folder = tmp_path_factory.mktemp('inputs')
    normal = block_crops(he_image, RES, 120, held_out=True, seed=2)
    tumour = tumour_crops(tumour_tile, RES, 120, seed=3)
    labelled = write_dataset_zip(folder / 'labelled.zip', np.concatenate([normal, tumour]),
                                 labels=[0] * 120 + [1] * 120)
    # A 1500 x 1400 px piece of the slide with 500 x 500 px of tumour pasted in (LESION_BOX moved into the piece).
    top, left = 300, 500
    slide, xml = write_lesion_slide(folder, he_image[top:top + 1400, left:left + 1500], tumour_tile,
                                    box=(600, 400, 1100, 900))
    out = {}
    for seed in SEEDS:
        run = tmp_path_factory.mktemp(f'seed{seed}')
        network, encoder = train(run, normal_data, seed)
        out[seed] = dict(evaluate=evaluate(run, network, encoder, labelled),
                         slide_map=map_slide(run, network, encoder, slide, xml))
        found, labels, scores = out[seed]['slide_map']
        keep = labels >= 0
        out[seed]['slide_map'] = (found, labels[keep], scores[keep])
        print(f'seed {seed}: evaluate AUROC {out[seed]["evaluate"][0]["AUROC"]:.3f}, '
              f'slide map patch AUROC {found["patch_AUROC"]:.3f}')
    return out


def shuffled_auroc_bound(labels, scores, quantile=0.999, trials=2000, seed=0):
    """The AUROC that label shuffling (a scorer that knows nothing) exceeds only with probability 1 - quantile."""
    rnd = np.random.RandomState(seed)
    found = [metrics.roc_auc_score(rnd.permutation(labels), scores) for _ in range(trials)]
    return float(np.quantile(found, quantile))


def test_reported_metrics_equal_sklearn_on_the_tools_own_csv(runs):
    for seed, run in runs.items():
        found, labels, scores = run['evaluate']
        assert found['AUROC'] == pytest.approx(metrics.roc_auc_score(labels, scores), rel=1e-6), seed
        assert found['AUPR'] == pytest.approx(metrics.average_precision_score(labels, scores), rel=1e-6), seed
        found, labels, scores = run['slide_map']
        assert (labels == 1).sum() >= 80 and (labels == 0).sum() >= 150
        assert found['patch_AUROC'] == pytest.approx(metrics.roc_auc_score(labels, scores), rel=1e-6), seed


GAP = 'issues 12/16: detection on real H&E is not reached by CPU-scale training (see the module docstring)'


@pytest.mark.xfail(strict=True, reason=GAP)
@pytest.mark.parametrize('tool', ['evaluate', 'slide_map'])
def test_every_seed_scores_tumour_above_normal(runs, tool):
    for seed, run in runs.items():
        found, labels, scores = run[tool]
        auroc = metrics.roc_auc_score(labels, scores)
        assert scores[labels == 1].mean() > scores[labels == 0].mean(), (tool, seed)
        assert auroc > max(0.65, shuffled_auroc_bound(labels, scores)), (tool, seed, auroc)
