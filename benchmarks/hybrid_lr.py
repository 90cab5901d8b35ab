"""The hybrid projector's peak learning rate, chosen by reconstruction error on held-out NORMAL patches.

The hybrid starts at the encoder's latent (and the generator's constant noise), so the published projector's peak
rate of 0.1, tuned for a start at the mean w, may throw the good start away. For each rate this projects the same
held-out normal patches with `--method=hybrid` and reports the error of the scored reconstruction (the latent's
image with the constant noise): pixel MSE in [-1, 1] (the f-AnoGAN residual), PSNR, and the projector's LPIPS
distance; the row `encoder` is step 0 (G(E(x))). Tumour patches and AUROC play no part in the choice.

    python benchmarks/hybrid_lr.py --network=net.pkl --encoder=enc.pkl --data=heldout-normal.zip \
        --lrs=0.001,0.003,0.01,0.03,0.1 --num-steps=250 --count=32
"""

import json
import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import anomaly, cli_utils, projection, train_encoder  # noqa: E402

#----------------------------------------------------------------------------

def reconstruction_errors(targets, result):
    """Mean pixel MSE, mean PSNR (dB, from uint8 images) and mean LPIPS distance of a projection result."""
    recon = result.images.clamp(-1, 1)
    mse = (targets - recon).square().mean(dim=(1, 2, 3))
    t8, r8 = cli_utils.images_to_uint8(targets), cli_utils.images_to_uint8(recon)
    psnr = [projection.psnr(a, b) for a, b in zip(t8, r8)]
    return dict(mse=float(mse.mean()), psnr=float(np.mean(psnr)), lpips=float(result.distance.mean()))


@click.command()
@click.option('--network', required=True, help='GAN snapshot trained on normal tissue')
@click.option('--encoder', required=True, help='Its encoder snapshot (tools.train_encoder)')
@click.option('--data', required=True, help='Held-out NORMAL patches (folder or zip), never trained on')
@click.option('--lrs', default='0.001,0.003,0.01,0.03,0.1', show_default=True, help='Peak learning rates to try')
@click.option('--num-steps', type=int, default=250, show_default=True, help='Hybrid steps (its default)')
@click.option('--count', type=int, default=32, show_default=True, help='Patches (the first of a fixed shuffle)')
@click.option('--batch', type=int, default=16, show_default=True, help='Patches projected together')
def main(network, encoder, data, lrs, num_steps, count, batch):
    """Print one JSON line per rate (and one for the encoder alone), then the rate with the lowest pixel MSE."""
    torch.manual_seed(0)
    G = cli_utils.load_network(network, key='G_ema', device='cpu')
    E = train_encoder.load_encoder(encoder, G)
    _, images, _ = anomaly.load_patches(data, G.img_resolution, labelled=False)
    images = images[np.random.RandomState(0).permutation(len(images))[:count]]
    lpips = projection.lpips_lib.load_lpips('cpu')
    w_stats = projection.w_statistics(G)
    rows = []
    for lr in [None] + [float(v) for v in lrs.split(',')]:
        began, parts = time.time(), []
        for start in range(0, len(images), batch):
            targets = projection.to_float(images[start:start + batch], 'cpu')
            result = projection.run_method(G, targets, method='encoder' if lr is None else 'hybrid', E=E,
                                           num_steps=num_steps, lpips=lpips, w_stats=w_stats, hybrid_lr=lr,
                                           progress=False)
            parts.append((len(targets), reconstruction_errors(targets, result)))
        total = sum(n for n, _ in parts)
        row = {k: sum(n * p[k] for n, p in parts) / total for k in ('mse', 'psnr', 'lpips')}
        row.update(lr='encoder' if lr is None else lr, steps=0 if lr is None else num_steps, patches=total,
                   seconds=round(time.time() - began, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = min((r for r in rows if r['lr'] != 'encoder'), key=lambda r: r['mse'])
    print(json.dumps(dict(best_lr_by_mse=best['lr'], best_lr_by_lpips=min(
        (r for r in rows if r['lr'] != 'encoder'), key=lambda r: r['lpips'])['lr'])))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
