"""Style mixing: coarse/fine styles of column seeds copied into row seeds (StyleGAN2-ADA compatible)."""

import os

import click
import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from tools import cli_utils

#----------------------------------------------------------------------------

def style_mix(G, row_seeds, col_seeds, col_styles, truncation_psi=1, noise_mode='const', label=None):
    """Images for every seed and every (row, col) mix: dict (row_seed, col_seed) -> uint8 HWC image.

    (s, s) is the unmixed image of seed s; (r, c) takes the ws of row seed r and replaces the ws listed
    in col_styles with those of column seed c.
    """
    bad = [idx for idx in col_styles if not 0 <= idx < G.num_ws]
    if bad:
        raise dnnlib.util.UserError(f'--styles {bad} out of range: this network has styles 0..{G.num_ws - 1}')
    device = next(G.parameters()).device
    all_seeds = sorted(set(row_seeds + col_seeds))
    all_z = torch.from_numpy(np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in all_seeds])).to(device)
    if label is None:
        label = torch.zeros([1, G.c_dim], device=device)
    all_w = G.mapping(all_z, label.expand(len(all_seeds), -1))
    w_avg = G.mapping.w_avg
    all_w = w_avg + (all_w - w_avg) * truncation_psi
    w_dict = dict(zip(all_seeds, all_w))

    images = {}
    for seed, w in zip(tqdm(all_seeds, desc='seeds'), all_w):
        images[(seed, seed)] = cli_utils.images_to_uint8(G.synthesis(w.unsqueeze(0), noise_mode=noise_mode))[0]
    cells = [(r, c) for r in row_seeds for c in col_seeds]
    for row_seed, col_seed in tqdm(cells, desc='mixes'):
        w = w_dict[row_seed].clone()
        w[col_styles] = w_dict[col_seed][col_styles]
        images[(row_seed, col_seed)] = cli_utils.images_to_uint8(G.synthesis(w.unsqueeze(0), noise_mode=noise_mode))[0]
    return images

def style_mix_grid(images, row_seeds, col_seeds):
    """The official layout: top row = column seeds, left column = row seeds, mixes inside, top-left black."""
    h, w, c = next(iter(images.values())).shape
    canvas = np.zeros([h * (len(row_seeds) + 1), w * (len(col_seeds) + 1), c], dtype=np.uint8)
    for row_idx, row_seed in enumerate([None] + list(row_seeds)):
        for col_idx, col_seed in enumerate([None] + list(col_seeds)):
            if row_seed is None and col_seed is None:
                continue
            if row_seed is None:
                key = (col_seed, col_seed)
            elif col_seed is None:
                key = (row_seed, row_seed)
            else:
                key = (row_seed, col_seed)
            canvas[row_idx * h:(row_idx + 1) * h, col_idx * w:(col_idx + 1) * w] = images[key]
    return canvas

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network', help='Network snapshot: .pkl or .safetensors, path or URL', required=True)
@click.option('--rows', 'row_seeds', type=str, help='Random seeds of the rows, e.g. 85,100,75', required=True)
@click.option('--cols', 'col_seeds', type=str, help='Random seeds of the columns, e.g. 55,821', required=True)
@click.option('--styles', 'col_styles', type=str, help='Style (w) indices taken from the column seeds', default='0-6', show_default=True)
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi (1 = no truncation)', default=1, show_default=True)
@click.option('--class', 'class_idx', type=click.IntRange(min=0), help='Class label index (conditional networks)')
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--outdir', type=str, help='Where to save the output images', required=True, metavar='DIR')
def generate_style_mix(network, row_seeds, col_seeds, col_styles, truncation_psi, class_idx, noise_mode, outdir):
    """Generate a style-mixing grid: grid.png plus one PNG per cell ({row_seed}-{col_seed}.png).

    \b
    python style_mixing.py --network=network-snapshot-000800.pkl --rows=85,100,75 --cols=55,821,1789 --outdir=out
    """
    try:
        row_seeds, col_seeds, col_styles = (cli_utils.parse_range(s) for s in (row_seeds, col_seeds, col_styles))
        print(f'Loading network from "{network}"...')
        G = cli_utils.load_network(network, key='G_ema')
        label = cli_utils.class_label(G, class_idx, next(G.parameters()).device)
        cli_utils.make_outdir(outdir)
        with torch.no_grad():
            images = style_mix(G, row_seeds, col_seeds, col_styles, truncation_psi=truncation_psi,
                noise_mode=noise_mode, label=label)
        for (row_seed, col_seed), image in images.items():
            cli_utils.save_image(image, os.path.join(outdir, f'{row_seed}-{col_seed}.png'))
        cli_utils.save_image(style_mix_grid(images, row_seeds, col_seeds), os.path.join(outdir, 'grid.png'))
        print(f'Wrote grid.png and {len(images)} cell images to {outdir}')
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_style_mix()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
