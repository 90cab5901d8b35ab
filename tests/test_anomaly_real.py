"""Anomaly detection on real H&E, end to end, in both directions (slow: trains small StyleGAN2s and their encoders).

A narrow config-e StyleGAN2 learns one tissue for a few hundred images, its izi_f encoder is trained on the same
patches, and `tools.anomaly evaluate` scores held-out patches of that tissue (0) against patches of the other (1):
- slide -> tile: the GAN learns CMU-1-Small-Region (skin: epidermis and dermis, 0.499 um/px); the anomalies are
  tumour-tile patches (resampled to the slide's resolution, tests/anomaly_data.py). `tools.slide_map` also maps a
  CMU pyramid with the tumour tissue pasted in.
- tile -> slide: the GAN learns the tumour tile; the anomalies are CMU patches (the default suite runs seed 0 of
  this in tests/test_anomaly_detection.py).
Three training seeds each. The reported metrics must equal scikit-learn's on the tools' own CSVs.

tile -> slide is detected for every seed (critic AUROC 0.86-0.95 over five seeds, f-AnoGAN 0.59-0.94). slide -> tile
is NOT at this scale, whatever the score: measured over seeds 0/1/2, perceptual 0.85 / 0.57 / 0.71 and slide map
0.72 / 0.36 / 0.41 at 0.32 kimg; critic 0.14 / 0.54 / 0.64 at 0.32 kimg, 0.33 / 0.71 / 0.25 at 4 kimg, 0.36 (seed 0)
at 10 kimg; f-AnoGAN 0.57 / 0.61 / 0.54 with 32 px patches at half the resolution; with 64 px patches at 4 kimg
LPIPS 0.74 / 0.61 / 0.66 / 0.27 and critic 0.15 / 0.77 / 0.72 / 0.72 (seeds 0-3); with 32 px patches at 2 um/px
critic 0.13 / 0.26 / 0.96 / 0.67; a DCGAN (the AnoGAN baseline) at 64 px, 1 and 10 kimg, 0.38-0.59 for every
score; complexity-corrected terms (Serra et al. 2020: minus a fit on log PNG bytes of normal patches) within 0.062 of
the raw ones. The slide's epidermis looks much like the tumour at 16-32 um per patch, and the tumour patches have
less contrast (not less texture), which a briefly trained GAN reconstructs and accepts more readily. Those tests are
strict xfails: when a change makes every seed detect, they fail as XPASS and the marker must go.
"""

import json

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner
from sklearn import metrics

from anomaly_data import BLOCK, TILE_BLOCK, block_crops, resample_tile, tumour_crops
from anomaly_runs import evaluate, read_scores, shuffled_auroc_bound, train_gan_and_encoder
from datasets import write_dataset_zip
from slide_map_inputs import write_lesion_slide
from dnnlib import assets
from tools import slide_map

pytestmark = pytest.mark.slow

RES = 32
SEEDS = (0, 1, 2)
SCORES = dict(slide='perceptual', tile='critic')


@pytest.fixture(scope='module')
def tumour_tile():
    with PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)) as img:
        return np.asarray(img.convert('RGB'))


@pytest.fixture(scope='module')
def tissues(he_image, tumour_tile):
    """Per direction: the image whose checkerboard gives training and held-out crops, its block size, and the
    crops of the other tissue."""
    tile = resample_tile(tumour_tile)
    return dict(slide=(he_image, BLOCK, tumour_crops(tumour_tile, RES, 120, seed=3)),
                tile=(tile, TILE_BLOCK, block_crops(he_image, RES, 120, held_out=True, seed=2)))


def map_slide(folder, network, encoder, slide, xml):
    """(reported metrics, labels, scores) of tools.slide_map at 32 px, stride 32, 90 % tissue (as the training crops)."""
    outdir = folder / 'maps'
    res = CliRunner().invoke(slide_map.main, ['--network', network, '--encoder', encoder, '--slide', slide,
                                              '--annotations', xml, '--outdir', str(outdir), '--score', SCORES['slide'],
                                              '--patch-size', str(RES), '--level', '0', '--stride', '32',
                                              '--tissue-min', '0.9', '--batch', '64', '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    return (json.loads(res.output.strip().splitlines()[-1]), *read_scores(outdir / 'lesion.csv'))


def run_direction(direction, tmp_path_factory, he_image, tumour_tile, tissues):
    """Per seed: dict(evaluate=(metrics, labels, scores)[, slide_map=(metrics, labels, scores)]) of one direction."""
    folder = tmp_path_factory.mktemp(direction)
    image, block, other = tissues[direction]
    data = write_dataset_zip(folder / 'train.zip', block_crops(image, RES, 2000, held_out=False, seed=1, block=block))
    known = block_crops(image, RES, 120, held_out=True, seed=2, block=block)
    labelled = write_dataset_zip(folder / 'labelled.zip', np.concatenate([known, other]), labels=[0] * 120 + [1] * 120)
    if direction == 'slide':
        # A 1500 x 1400 px piece of the slide with 500 x 500 px of tumour pasted in (LESION_BOX moved into the piece).
        top, left = 300, 500
        slide, xml = write_lesion_slide(folder, he_image[top:top + 1400, left:left + 1500], tumour_tile,
                                        box=(600, 400, 1100, 900))
    out = {}
    for seed in SEEDS:
        run = tmp_path_factory.mktemp(f'{direction}{seed}')
        network, encoder = train_gan_and_encoder(run, data, seed, workers=1)
        out[seed] = dict(evaluate=evaluate(run / 'eval', network, encoder, labelled, SCORES[direction], '--batch', '40'))
        line = f'{direction}, seed {seed}: evaluate AUROC {out[seed]["evaluate"][0]["AUROC"]:.3f}'
        if direction == 'slide':
            found, labels, scores = map_slide(run, network, encoder, slide, xml)
            keep = labels >= 0
            out[seed]['slide_map'] = (found, labels[keep], scores[keep])
            line += f', slide map patch AUROC {found["patch_AUROC"]:.3f}'
        print(line)
    return direction, out


@pytest.fixture(scope='module')
def slide_runs(tmp_path_factory, he_image, tumour_tile, tissues):
    return run_direction('slide', tmp_path_factory, he_image, tumour_tile, tissues)


@pytest.fixture(scope='module')
def tile_runs(tmp_path_factory, he_image, tumour_tile, tissues):
    return run_direction('tile', tmp_path_factory, he_image, tumour_tile, tissues)


@pytest.fixture(params=['slide', 'tile'])
def runs(request):
    return request.getfixturevalue(f'{request.param}_runs')


def test_reported_metrics_equal_sklearn_on_the_tools_own_csv(runs):
    direction, out = runs
    for seed, run in out.items():
        found, labels, scores = run['evaluate']
        assert found['AUROC'] == pytest.approx(metrics.roc_auc_score(labels, scores), rel=1e-6), seed
        assert found['AUPR'] == pytest.approx(metrics.average_precision_score(labels, scores), rel=1e-6), seed
        if direction == 'slide':
            found, labels, scores = run['slide_map']
            assert (labels == 1).sum() >= 80 and (labels == 0).sum() >= 150
            assert found['patch_AUROC'] == pytest.approx(metrics.roc_auc_score(labels, scores), rel=1e-6), seed


def detected(labels, scores):
    auroc = metrics.roc_auc_score(labels, scores)
    return scores[labels == 1].mean() > scores[labels == 0].mean() and \
        auroc > max(0.65, shuffled_auroc_bound(labels, scores)), auroc


def test_gan_of_the_tumour_tile_flags_slide_tissue_for_every_seed(tile_runs):
    _, out = tile_runs
    for seed, run in out.items():
        _, labels, scores = run['evaluate']
        assert detected(labels, scores)[0], (seed, detected(labels, scores)[1])


GAP = 'issues 12/16: a GAN of this skin slide does not flag the tumour tile at CPU scale (see the module docstring)'


@pytest.mark.xfail(strict=True, reason=GAP)
@pytest.mark.parametrize('tool', ['evaluate', 'slide_map'])
def test_gan_of_the_slide_flags_tumour_for_every_seed(slide_runs, tool):
    _, out = slide_runs
    for seed, run in out.items():
        _, labels, scores = run[tool]
        assert detected(labels, scores)[0], (tool, seed, detected(labels, scores)[1])
