"""tools/anomaly.py: detection metrics by brute force, the f-AnoGAN score by hand, evaluation on real H&E."""

import csv
import glob
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from conftest import tissue_crops
from datasets import write_dataset_zip
from projection_nets import image_from_w, save_snapshot, tiny_stylegan2
from tools import anomaly, assets, cli_utils, projection, train_encoder


def _brute_force(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    # AUROC: probability that a random positive outscores a random negative (ties count half).
    auroc = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    # Average precision: precision at each positive's rank (all tied scores taken together), averaged.
    ap, f1max = 0.0, 0.0
    for t in np.unique(scores):
        flagged = scores >= t
        tp = np.sum(flagged & (labels == 1))
        precision, recall = tp / flagged.sum(), tp / len(pos)
        f1max = max(f1max, 0 if tp == 0 else 2 * precision * recall / (precision + recall))
    thresholds = np.sort(np.unique(scores))[::-1]
    prev_recall = 0.0
    for t in thresholds:
        flagged = scores >= t
        tp = np.sum(flagged & (labels == 1))
        recall = tp / len(pos)
        ap += (recall - prev_recall) * tp / flagged.sum()
        prev_recall = recall
    return auroc, ap, f1max


def test_detection_metrics_equal_brute_force():
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.65, 0.9, 0.2, 0.4, 0.05, 0.3])  # one tie across classes (0.4)
    found = anomaly.detection_metrics(labels, scores)
    auroc, ap, f1max = _brute_force(labels, scores)
    assert found['AUROC'] == pytest.approx(auroc, abs=1e-12)
    assert found['AUPR'] == pytest.approx(ap, abs=1e-12)
    assert found['F1max'] == pytest.approx(f1max, abs=1e-12)
    # Hand-checked: 20 of 24 pairs ordered right, one tie -> (19 + 0.5) / 24.
    assert found['AUROC'] == pytest.approx(19.5 / 24)
    perfect = anomaly.detection_metrics([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert perfect == dict(AUROC=1.0, AUPR=1.0, F1max=1.0)


def test_fanogan_score_by_hand(one_thread):
    G, D = tiny_stylegan2(16)
    patches = cli_utils.images_to_uint8(torch.cat([image_from_w(G, s)[1] for s in (1, 2, 3)]))
    torch.manual_seed(0)
    E = train_encoder.build_encoder(G, D, channel_base=128, channel_max=16).eval()
    result = anomaly.score_patches(G, patches, method='encoder', E=E, D=D, kappa=2.0, batch_size=2, progress=False)
    with torch.no_grad():
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 127.5 - 1
        recon = G.synthesis(E(x).expand(-1, G.num_ws, -1), noise_mode='const').clamp(-1, 1)
        residual = ((x - recon) ** 2).mean(dim=(1, 2, 3))
        fx = torch.cat([train_encoder.discriminator_features(D, x[k:k + 1]) for k in range(3)])
        fr = torch.cat([train_encoder.discriminator_features(D, recon[k:k + 1]) for k in range(3)])
        features = ((fx - fr) ** 2).mean(dim=1)
    np.testing.assert_allclose(result.residual, residual.numpy(), rtol=1e-4)
    np.testing.assert_allclose(result.features, features.numpy(), rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(result.score, (residual + 2.0 * features).numpy(), rtol=1e-3)
    assert result.recon.shape == patches.shape and result.recon.dtype == np.uint8
    with pytest.raises(Exception, match='uint8'):
        anomaly.score_patches(G, patches.astype(np.float32), method='encoder', E=E, D=D)


@pytest.fixture(scope='module')
def tumour_tile():
    with PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)) as img:
        return np.asarray(img.convert('RGB'))


def _train_tiny_gan(outdir, data, kimg):
    """A narrow config-e StyleGAN2 trained briefly with train.py; returns its last snapshot."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, os.path.join(repo, 'train.py'), f'--outdir={outdir}', f'--data={data}', '--cfg=config-e',
           '--cbase=256', '--cmax=64', '--map=2', '--batch=8', '--gamma=1', '--ema=0.1', f'--kimg={kimg}',
           f'--tick={kimg}', '--snap=1', '--workers=0', '--metrics=none', '--seed=1']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=repo)
    proc = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return sorted(glob.glob(os.path.join(outdir, '*', 'network-snapshot-*.pkl')))[-1]


@pytest.mark.slow
def test_real_he_tumour_scores_higher(tmp_path, he_image, tumour_tile):
    """A tiny GAN + encoder trained briefly on CMU-1-Small-Region; tumour-tile patches score higher, AUROC > 0.5."""
    torch.set_num_threads(1)
    normal = tissue_crops(he_image, 16, 96, seed=11)
    tumour = tissue_crops(tumour_tile, 16, 24, seed=12)
    train, held_out = normal[:72], normal[72:]
    train_zip = write_dataset_zip(tmp_path / 'normal.zip', train)
    pkl = _train_tiny_gan(str(tmp_path / 'gan'), train_zip, kimg=0.4)
    enc = train_encoder.train_encoder(pkl, train_zip, str(tmp_path / 'enc'), kimg=0.32, batch_size=16, lr=1e-3,
                                      device='cpu', progress=False, workers=0,
                                      encoder_kwargs=dict(channel_base=128, channel_max=16))
    data = write_dataset_zip(tmp_path / 'labelled.zip', np.concatenate([held_out, tumour]), labels=[0] * 24 + [1] * 24)
    outdir = tmp_path / 'eval'
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', pkl, '--encoder', enc, '--data', data,
                                           '--outdir', str(outdir), '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    found = json.loads(res.output[res.output.rindex('{"AUROC"'):].splitlines()[0])  # stdout's JSON line after progress
    assert found['num_normal'] == 24 and found['num_tumour'] == 24, found
    with open(outdir / 'scores.csv') as f:
        rows = list(csv.DictReader(f))
    scores = {cls: np.mean([float(r['score']) for r in rows if r['label'] == cls]) for cls in ('0', '1')}
    assert scores['1'] > scores['0'] and found['AUROC'] > 0.5, (scores, found)
    assert anomaly.detection_metrics([int(r['label']) for r in rows], [float(r['score']) for r in rows])['AUROC'] == \
        pytest.approx(found['AUROC'])
    for name in ('roc.png', 'fig4.png', 'metrics.json'):
        assert os.path.getsize(outdir / name) > 0


def test_evaluate_refuses_unlabelled_data(tmp_path, he_crops):
    G, D = tiny_stylegan2(16)
    pkl = save_snapshot(tmp_path / 'net.pkl', G, D)
    data = write_dataset_zip(tmp_path / 'plain.zip', he_crops(16, 4))
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', pkl, '--data', data, '--method', 'lpips',
                                           '--outdir', str(tmp_path / 'out'), '--num-steps', '1'])
    assert res.exit_code != 0 and 'labels' in res.output and not (tmp_path / 'out').exists(), res.output
