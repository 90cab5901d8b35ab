"""Project image patches into a trained GAN's latent space: the closest image the generator can make."""

import csv
import os
import time

import click
import numpy as np
import torch

import dnnlib
from tools import cli_utils, projection

#----------------------------------------------------------------------------

def project_files(network, target, outdir, method='lpips', encoder=None, num_steps=None, seed=303, w_plus=False,
                  save_video=False, batch_size=8, device=None, verbose=True):
    """Project one image or every image of a folder/zip; returns one summary row (dict) per target.

    A single image writes its outputs into `outdir`; several write `outdir/<name>/...` plus `outdir/summary.csv`.
    """
    device = torch.device(device) if device is not None else cli_utils.default_device()
    if verbose:
        print(f'Loading network from "{network}"...')
    G = cli_utils.load_network(network, key='G_ema', device=device)
    projection.check_generator(G)
    E = None
    if method in ('encoder', 'hybrid'):
        if encoder is None:
            raise dnnlib.util.UserError(f'--method={method} needs --encoder')
        from tools import train_encoder
        E = train_encoder.load_encoder(encoder, G, device=device)
    elif encoder is not None and verbose:
        print('warning: --encoder ignored with --method=lpips')
    names, images = projection.load_targets(target, G.img_resolution, verbose=verbose)
    single = len(names) == 1 and not os.path.isdir(target) and not target.lower().endswith('.zip')
    cli_utils.make_outdir(outdir)

    w_space = projection.has_w_space(G)
    w_stats = projection.w_statistics(G) if w_space and method != 'encoder' else None
    rows = []
    for start in range(0, len(names), batch_size):
        chunk_names = names[start:start + batch_size]
        chunk = images[start:start + batch_size]
        dirs = [outdir if single else os.path.join(outdir, _safe_stem(name)) for name in chunk_names]
        videos = [projection.VideoWriter(os.path.join(d, 'proj.mp4'), img) for d, img in zip(dirs, chunk)] if save_video else []
        on_step = (lambda _step, imgs: [v.add(frame) for v, frame in zip(videos, cli_utils.images_to_uint8(imgs))]) if videos else None
        if verbose and len(names) > 1:
            print(f'Targets {start + 1}-{start + len(chunk)} of {len(names)}')
        began = time.time()
        try:
            result = projection.run_method(G, projection.to_float(chunk, device), method=method, E=E, num_steps=num_steps,
                                           w_plus=w_plus, seed=seed, w_stats=w_stats, on_step=on_step, progress=verbose)
        except BaseException:
            for video in videos:
                video.close(ok=False)
            raise
        for video in videos:
            video.close()
        projs = cli_utils.images_to_uint8(result.images)
        with_noise = method != 'encoder' and bool(projection.noise_layers(G))
        noisy = cli_utils.images_to_uint8(result.images_noise) if with_noise else [None] * len(projs)
        latents = result.latent.cpu().numpy()
        for idx, name in enumerate(chunk_names):
            projection.save_projection(dirs[idx], chunk[idx], projs[idx], latents[idx], w_space, proj_noise=noisy[idx])
            rows.append(dict(name=name, outdir=dirs[idx], lpips=float(result.distance[idx]),
                             mse=float(np.mean((chunk[idx].astype(np.float64) / 127.5 - projs[idx] / 127.5) ** 2)),
                             psnr=projection.psnr(chunk[idx], projs[idx]), steps=len(result.history),
                             seconds=(time.time() - began) / len(chunk)))
    if not single:
        write_summary(rows, os.path.join(outdir, 'summary.csv'))
    return rows

def _safe_stem(name):
    stem = os.path.splitext(name)[0]
    return stem.replace('/', '_').replace('\\', '_') or 'image'

def write_summary(rows, path):
    fields = ['name', 'lpips', 'mse', 'psnr', 'steps', 'seconds', 'outdir']
    with dnnlib.util.atomic_write(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f'{row[k]:.6g}' if isinstance(row[k], float) else row[k]) for k in fields})

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', help='Network snapshot (.pkl: ours or official StyleGAN2-ADA; .safetensors), path or URL', required=True)
@click.option('--target', help='Image to project, or a folder / .zip of images (batch mode, writes summary.csv)', required=True, metavar='PATH')
@click.option('--outdir', help='Output folder', required=True, metavar='DIR')
@click.option('--method', type=click.Choice(projection.METHODS), default='lpips', show_default=True,
              help='lpips: optimise the latent against LPIPS; encoder: one encoder pass; hybrid: lpips started from the encoder')
@click.option('--encoder', help='Encoder snapshot from tools.train_encoder (for --method encoder/hybrid)', metavar='PKL')
@click.option('--num-steps', type=click.IntRange(min=1), help='Optimisation steps  [default: 1000 for lpips, 250 for hybrid]')
@click.option('--seed', type=int, default=303, show_default=True, help='Seed of the noise maps and the latent jitter')
@click.option('--w-plus', is_flag=True, help='Optimise one w per synthesis layer (W+) instead of one shared w')
@click.option('--save-video', is_flag=True, help='Also write proj.mp4: target | projection at every step')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=8, show_default=True, help='Targets projected together (batch mode)')
@click.option('--device', help='torch device, e.g. cpu or cuda:1  [default: cuda if available]')
def main(network, target, outdir, method, encoder, num_steps, seed, w_plus, save_video, batch_size, device):
    """Find the latent whose image best matches each target patch.

    Writes target.png (the target at the network's resolution), proj.png (the projected latent rendered with the
    generator's constant noise: the reconstruction that is measured and scored), residual.png (|target - proj|
    heat map), projected_w.npz (w [1, num_ws, w_dim]; generate.py --projected-w renders proj.png from it; networks
    without a mapping network write projected_z.npz with z [1, z_dim]), for lpips/hybrid on networks with noise
    inputs proj-noise.png (the same w with the noise maps the search optimised, a picture only) and, with
    --save-video, proj.mp4.

    \b
    python projector.py --network=network-snapshot-000800.pkl --target=patch.png --outdir=out
    python projector.py --network=net.pkl --target=patches.zip --method=hybrid --encoder=encoder.pkl --outdir=out
    """
    try:
        rows = project_files(network, target, outdir, method=method, encoder=encoder, num_steps=num_steps, seed=seed,
                             w_plus=w_plus, save_video=save_video, batch_size=batch_size, device=device)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))
    for row in rows:
        print(f"{row['name']}: LPIPS {row['lpips']:.4f}, PSNR {row['psnr']:.2f} dB -> {row['outdir']}")

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
