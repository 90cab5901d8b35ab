"""Test helper: small config-e StyleGAN2s and encoders trained on real H&E patches, and their evaluation.

Shared by tests/test_anomaly_detection.py (default suite) and tests/test_anomaly_real.py (slow).
"""

import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
from click.testing import CliRunner
from sklearn import metrics

from tools import anomaly, train_encoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Narrow enough to train 0.32 kimg of 32 px patches in about 15 s on one core.
NARROW_CONFIG_E = ['--cfg=config-e', '--cbase=512', '--cmax=64', '--map=2', '--batch=16', '--gamma=0.1', '--ema=0.1',
                   '--augpipe=histo', '--mirror=1', '--metrics=none', '--tick=0.16', '--snap=100']


def train_gan_and_encoder(folder, data, seed, kimg=0.32, encoder_kimg=0.16, workers=None):
    """(network pkl, encoder pkl): train.py run as users run it, then the encoder on the same patches.
    workers None leaves both at their defaults."""
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--outdir={folder / "runs"}', f'--data={data}',
           f'--seed={seed}', f'--kimg={kimg}', *NARROW_CONFIG_E] + ([] if workers is None else [f'--workers={workers}'])
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:]
    network = sorted(glob.glob(str(folder / 'runs' / '*' / 'network-snapshot-*.pkl')))[-1]
    encoder = train_encoder.train_encoder(network, data, str(folder / 'encoder'), kimg=encoder_kimg, batch_size=16,
                                          lr=1e-3, lpips_weight=0, device='cpu', progress=False, seed=seed,
                                          **({} if workers is None else dict(workers=workers)))
    return network, encoder


def read_scores(path):
    """(labels, scores) of a scores CSV written by tools.anomaly or tools.slide_map."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r['label']) for r in rows]), np.array([float(r['score']) for r in rows])


def evaluate(outdir, network, encoder, labelled, score, *options):
    """(reported metrics, labels, scores) of `tools.anomaly evaluate` on the labelled patches."""
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', network, '--encoder', encoder, '--data', labelled,
                                           '--outdir', str(outdir), '--score', score, '--device', 'cpu', *options])
    assert res.exit_code == 0, res.output
    found = json.loads(res.output[res.output.rindex('{"AUROC"'):].splitlines()[0])  # the JSON line after progress
    return (found, *read_scores(outdir / 'scores.csv'))


def shuffled_auroc_bound(labels, scores, quantile=0.999, trials=2000, seed=0):
    """The AUROC that label shuffling (a scorer that knows nothing) exceeds only with probability 1 - quantile."""
    rnd = np.random.RandomState(seed)
    return float(np.quantile([metrics.roc_auc_score(rnd.permutation(labels), scores) for _ in range(trials)], quantile))
