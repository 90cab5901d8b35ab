"""Generate images with a trained network (StyleGAN2-ADA compatible: the same seed gives the same image).

Works for every HistoSynth GAN family: all it needs is G(z, c, truncation_psi=..., noise_mode=...) and the
attributes z_dim, c_dim and img_resolution. Only --projected-w needs a network with a W latent space
(G.synthesis, G.num_ws, G.w_dim), i.e. StyleGAN and StyleGAN2.
"""

import os

import click
import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from tools import cli_utils

#----------------------------------------------------------------------------

def seed_to_z(seed, z_dim):
    """The latent of a seed, exactly as the official tools draw it: [1, z_dim] float64 numpy."""
    return np.random.RandomState(seed).randn(1, z_dim)


def generate_images(G, seeds, truncation_psi=1, noise_mode='const', label=None):
    """Yield (seed, uint8 HWC image) for each seed; `label` [1, c_dim] from cli_utils.class_label()."""
    device = cli_utils.device_of(G)
    if label is None:
        label = cli_utils.class_label(G, None, device)
    for seed in seeds:
        # float32 for every family; StyleGAN2's mapping casts to float32 first anyway, so images are unchanged.
        z = torch.from_numpy(seed_to_z(seed, G.z_dim)).to(device=device, dtype=torch.float32)
        img = G(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode)
        yield seed, cli_utils.images_to_uint8(img)[0]

def synthesize_projected(G, ws, noise_mode='const'):
    """Yield uint8 HWC images for projected latents ws [N, num_ws, w_dim]."""
    device = cli_utils.device_of(G)
    ws = torch.as_tensor(np.asarray(ws), dtype=torch.float32, device=device)
    for w in ws:
        yield cli_utils.images_to_uint8(G.synthesis(w.unsqueeze(0), noise_mode=noise_mode))[0]

def check_projected_w(G, ws):
    if not cli_utils.has_w_space(G):
        raise dnnlib.util.UserError(f'--projected-w needs a network with a W latent space (StyleGAN, StyleGAN2); '
                                    f'this {type(G).__name__} maps z to images directly: use --seeds')
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise dnnlib.util.UserError(f'projected w has shape {list(ws.shape)}; this network needs [N, {G.num_ws}, {G.w_dim}]')

def load_projected_w(path):
    """The array `w` of a projector .npz file."""
    try:
        with np.load(path) as npz:
            if 'w' not in npz:
                raise dnnlib.util.UserError(f"'{path}' has no array 'w' (it has: {', '.join(npz.files)})")
            return npz['w']
    except (OSError, ValueError) as err:
        raise dnnlib.util.UserError(f"cannot read '{path}' as .npz ({err})")

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network', required=True, metavar='PATH',
              help='Trained snapshot to sample from: .pkl or .safetensors, a path or a URL.')
@click.option('--seeds', type=str, metavar='LIST',
              help='Random seeds, one image each; commas and ranges, e.g. 1,2,5-9. Seed s always gives the same image.')
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True, metavar='PSI',
              help='Truncation: 1 samples the full distribution, smaller values trade variety for typical-looking '
                   'tissue, 0 gives the average image.')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), metavar='INT',
              help='Class index to generate (required for conditional networks, e.g. 0 = normal, 1 = tumour).')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help="Per-pixel noise inputs: the network's stored noise ('const', reproducible), fresh noise "
                   "('random') or none. Families without noise inputs ignore it.")
@click.option('--projected-w', type=str, metavar='FILE',
              help='Render latents found by projector.py instead of seeds: an .npz holding w [N, num_ws, w_dim] '
                   '(StyleGAN-type networks only).')
@click.option('--grid', 'save_grid', is_flag=True, default=False, help='Also write every image into one grid.png.')
@click.option('--outdir', type=str, required=True, metavar='DIR', help='Folder for the PNG files (created if needed).')
def generate_images_cmd(network, seeds, truncation_psi, class_idx, noise_mode, projected_w, save_grid, outdir):
    """Write images from a trained generator: one PNG per seed, or one per projected latent.

    \b
    One image per seed (seed0001.png ... seed0004.png), on CUDA when available:
      python generate.py --network=network-snapshot-000800.pkl --seeds=1-4 --trunc=0.7 --outdir=out

    \b
    Images of latents found by the projector (proj00.png, ...):
      python generate.py --network=net.safetensors --projected-w=projected_w.npz --outdir=out
    """
    try:
        if projected_w is None and seeds is None:
            raise dnnlib.util.UserError('give --seeds (or --projected-w)')
        seeds = cli_utils.parse_range(seeds) if seeds is not None else None
        ws = load_projected_w(projected_w) if projected_w is not None else None
        print(f'Loading network from "{network}"...')
        G = cli_utils.check_generator(cli_utils.load_network(network, key='G_ema'), network)
        if ws is not None:
            check_projected_w(G, ws)
        else:
            label = cli_utils.class_label(G, class_idx, cli_utils.device_of(G))
        cli_utils.make_outdir(outdir)

        images = []
        with torch.no_grad():
            if ws is not None:
                if seeds is not None:
                    print('warning: --seeds ignored when using --projected-w')
                for idx, img in enumerate(tqdm(synthesize_projected(G, ws, noise_mode=noise_mode), total=len(ws), desc='projected w')):
                    cli_utils.save_image(img, os.path.join(outdir, f'proj{idx:02d}.png'))
                    images.append(img)
            else:
                for seed, img in tqdm(generate_images(G, seeds, truncation_psi=truncation_psi, noise_mode=noise_mode,
                        label=label), total=len(seeds), desc='seeds'):
                    cli_utils.save_image(img, os.path.join(outdir, f'seed{seed:04d}.png'))
                    images.append(img)
        if save_grid:
            cli_utils.save_image(cli_utils.make_image_grid(np.stack(images)), os.path.join(outdir, 'grid.png'))
        print(f'Wrote {len(images)} image{"s" if len(images) != 1 else ""}{" and grid.png" if save_grid else ""} to {outdir}')
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_images_cmd()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
