"""Style mixing: render row seeds with some of their styles (per-layer w) replaced by those of column seeds.

Shows which layers carry what: copying the coarse styles (low indices) from another seed transfers tissue
architecture, the fine ones (high indices) colour and texture. Needs a network with a W latent space
(StyleGAN, StyleGAN2); seeds map to images exactly as in generate.py.
"""

import itertools
import os

import click
import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from tools import cli_utils

# ----------------------------------------------------------------------------


def _ws_of_seeds(G, seeds, label, truncation_psi):
    """{seed: ws [num_ws, w_dim]} with the generate.py latent of each seed (RandomState(seed).randn)."""
    z = np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])
    z = torch.as_tensor(z, dtype=torch.float32, device=label.device)
    ws = G.mapping(z, label.expand(len(seeds), -1), truncation_psi=truncation_psi)
    return dict(zip(seeds, ws))


def _render(G, ws, noise_mode):
    return cli_utils.images_to_uint8(G.synthesis(ws.unsqueeze(0), noise_mode=noise_mode))[0]


def style_mix(G, row_seeds, col_seeds, col_styles, truncation_psi=1, noise_mode='const', label=None):
    """{(row_seed, col_seed): uint8 HWC image} for every mix, plus {(s, s): ...} the plain image of every seed.

    Mix (r, c) uses the ws of row seed r except at the indices in col_styles, which come from column seed c.
    """
    if not cli_utils.has_w_space(G):
        raise dnnlib.util.UserError(f'style mixing needs a network with a W latent space (StyleGAN, StyleGAN2); '
                                    f'this {type(G).__name__} maps z to images directly')
    out_of_range = sorted({idx for idx in col_styles if not 0 <= idx < G.num_ws})
    if out_of_range:
        raise dnnlib.util.UserError(f'--styles {out_of_range} out of range: this network has styles 0..{G.num_ws - 1}')
    if label is None:
        label = torch.zeros([1, G.c_dim], device=cli_utils.device_of(G))

    seeds = sorted(set(row_seeds) | set(col_seeds))
    ws = _ws_of_seeds(G, seeds, label, truncation_psi)
    from_col = torch.zeros(G.num_ws, dtype=torch.bool, device=label.device)
    from_col[list(col_styles)] = True
    from_col = from_col.unsqueeze(1)  # broadcast over w_dim

    images = {(seed, seed): _render(G, ws[seed], noise_mode) for seed in tqdm(seeds, desc='seeds')}
    for row, col in tqdm(list(itertools.product(row_seeds, col_seeds)), desc='mixes'):
        images[(row, col)] = _render(G, torch.where(from_col, ws[col], ws[row]), noise_mode)
    return images


def style_mix_grid(images, row_seeds, col_seeds):
    """One canvas: column seeds along the top, row seeds down the left, their mixes inside, black corner."""
    h, w, channels = next(iter(images.values())).shape
    canvas = np.zeros([(len(row_seeds) + 1) * h, (len(col_seeds) + 1) * w, channels], dtype=np.uint8)

    def paste(i, j, image):
        canvas[i * h:(i + 1) * h, j * w:(j + 1) * w] = image

    for j, col in enumerate(col_seeds, start=1):
        paste(0, j, images[(col, col)])
    for i, row in enumerate(row_seeds, start=1):
        paste(i, 0, images[(row, row)])
        for j, col in enumerate(col_seeds, start=1):
            paste(i, j, images[(row, col)])
    return canvas

# ----------------------------------------------------------------------------


@click.command()
@click.option('--network', 'network', required=True, metavar='PATH',
              help='Trained StyleGAN-type snapshot: .pkl or .safetensors, a path or a URL.')
@click.option('--rows', 'row_seeds', type=str, required=True, metavar='LIST',
              help='Seeds whose images form the rows (they keep the styles not listed in --styles), e.g. 85,100,75.')
@click.option('--cols', 'col_seeds', type=str, required=True, metavar='LIST',
              help='Seeds that lend the styles listed in --styles, one per column, e.g. 55,821.')
@click.option('--styles', 'col_styles', type=str, default='0-6', show_default=True, metavar='LIST',
              help='Indices of the per-layer latents taken from the column seed; low = coarse structure, '
                   'high = colour and fine texture.')
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True, metavar='PSI',
              help='Truncation towards the average latent (1 = none).')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), metavar='INT',
              help='Class index for conditional networks.')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help="Noise inputs: the network's stored noise, fresh random noise, or none.")
@click.option('--outdir', type=str, required=True, metavar='DIR', help='Folder for the PNG files (created if needed).')
def generate_style_mix(network, row_seeds, col_seeds, col_styles, truncation_psi, class_idx, noise_mode, outdir):
    """Write a style-mixing grid (grid.png) and every cell as <row seed>-<col seed>.png.

    \b
    python style_mixing.py --network=network-snapshot-000800.pkl --rows=85,100,75 --cols=55,821,1789 --outdir=out
    """
    try:
        rows, cols, styles = (cli_utils.parse_range(text) for text in (row_seeds, col_seeds, col_styles))
        print(f"Loading network '{network}'...")
        G = cli_utils.check_generator(cli_utils.load_network(network, key='G_ema'), network)
        label = cli_utils.class_label(G, class_idx, cli_utils.device_of(G))
        with torch.no_grad():
            images = style_mix(G, rows, cols, styles, truncation_psi=truncation_psi, noise_mode=noise_mode, label=label)
        cli_utils.make_outdir(outdir)
        for (row, col), image in images.items():
            cli_utils.save_image(image, os.path.join(outdir, f'{row}-{col}.png'))
        cli_utils.save_image(style_mix_grid(images, rows, cols), os.path.join(outdir, 'grid.png'))
        print(f'Wrote grid.png and {len(images)} cell images to {outdir}')
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))


if __name__ == '__main__':
    generate_style_mix()  # pylint: disable=no-value-for-parameter
