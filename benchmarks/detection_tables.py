"""Detection on real H&E before and after issue 26: old default scores vs new, with and without stain normalisation.

Both directions of tests/test_anomaly_real.py at its small setting (config-e narrowed as tests/anomaly_runs.py,
32 px patches, 0.32 kimg GAN, encoder 0.16 kimg at batch 16, lr 1e-3, izi_f objective without LPIPS, as
anomaly_runs.train_gan_and_encoder trains it):
- slide: a GAN of CMU-1-Small-Region; 120 held-out CMU patches (0) against 120 tumour-tile patches (1);
- tile: a GAN of the tumour tile (resampled to 0.5 um/px); 120 held-out tile patches (0) against 120 CMU patches (1).
Each GAN and encoder are trained once, by this tree's code, and the same pickles are scored by `tools.anomaly
evaluate` of two code versions: --old-tree (a checkout of the commit before issue 26, e.g. `git worktree add
/tmp/old_hs 93ff31c`: minibatch-stddev over a group of one) with its default score (fanogan for the encoder) and the
critic score, and this tree with its default fanogan score (reference-group stddev) under --stain-normalize none,
reinhard and macenko. Runs go seed by seed, both directions per seed; a --workdir that already holds a run's
pickles or a variant's metrics.json is reused (an interrupted measurement continues). --slide-map-seeds adds tools.slide_map (this
tree, default score) on the pasted-lesion pyramid of tests/test_anomaly_real.py for the slide GAN of those seeds.

    python benchmarks/detection_tables.py --old-tree=/tmp/old_hs --seeds=0-4 --directions=slide,tile --out=det.json
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'tests')]

RES = 32
VARIANTS = [  # (name, code version, score, stain normalisation)
    ('old fanogan (default)', 'old', 'fanogan', None),
    ('old critic', 'old', 'critic', None),
    ('new fanogan (default)', 'new', 'fanogan', 'none'),
    ('new fanogan + reinhard', 'new', 'fanogan', 'reinhard'),
    ('new fanogan + macenko', 'new', 'fanogan', 'macenko'),
]
METRICS = ('AUROC', 'AUPR', 'F1_at_threshold')


def parse_seeds(text):
    out = []
    for part in text.split(','):
        lo, _, hi = part.partition('-')
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def build_data(folder):
    """Per direction: (training zip, labelled zip); the crops of tests/test_anomaly_real.py."""
    import openslide
    import PIL.Image
    from anomaly_data import BLOCK, TILE_BLOCK, block_crops, resample_tile, tumour_crops
    from datasets import write_dataset_zip

    from dnnlib import assets
    slide = openslide.OpenSlide(assets.fetch('cmu-small-region', verbose=False))
    he_image = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert('RGB'))
    slide.close()
    with PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)) as img:
        tumour_tile = np.asarray(img.convert('RGB'))
    tile = resample_tile(tumour_tile)
    tissues = dict(slide=(he_image, BLOCK, tumour_crops(tumour_tile, RES, 120, seed=3)),
                   tile=(tile, TILE_BLOCK, block_crops(he_image, RES, 120, held_out=True, seed=2)))
    out = {}
    for direction, (image, block, other) in tissues.items():
        (folder / direction).mkdir(exist_ok=True)
        data = write_dataset_zip(folder / direction / 'train.zip',
                                 block_crops(image, RES, 2000, held_out=False, seed=1, block=block))
        known = block_crops(image, RES, 120, held_out=True, seed=2, block=block)
        labelled = write_dataset_zip(folder / direction / 'labelled.zip', np.concatenate([known, other]),
                                     labels=[0] * 120 + [1] * 120)
        out[direction] = (str(data), str(labelled))
    return out, he_image, tumour_tile


def run_tool(tree, args, outdir):
    """metrics.json of `python -m tools.X ...` run in `tree` (its own code on PYTHONPATH)."""
    proc = subprocess.run([sys.executable, '-m', *args], cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise click.ClickException(f'{" ".join(args[:2])} in {tree} failed:\n{proc.stdout[-2000:]}')
    with open(Path(outdir) / 'metrics.json') as f:
        return json.load(f)


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def fmt(value):
    return '–' if value is None else f'{value:.3f}'


@click.command()
@click.option('--old-tree', type=click.Path(exists=True, file_okay=False), required=True,
              help='Checkout of the code before the change (scored with its own tools.anomaly)')
@click.option('--seeds', default='0-4', show_default=True, help='Training seeds, e.g. 0-4 or 0,2')
@click.option('--directions', default='slide,tile', show_default=True, help='slide and/or tile (comma-separated)')
@click.option('--slide-map-seeds', default='', help='Seeds whose slide GAN also maps the pasted-lesion pyramid')
@click.option('--out', 'out_path', default='detection_tables.json', show_default=True, help='JSON written here')
@click.option('--workdir', type=click.Path(file_okay=False), default=None, help='Keep runs here (default: temp)')
def main(old_tree, seeds, directions, slide_map_seeds, out_path, workdir):
    """Train the small GANs and encoders once per seed and direction; score with old and new code; print tables."""
    from anomaly_runs import train_gan_and_encoder

    import dnnlib
    seeds = parse_seeds(seeds)
    map_seeds = parse_seeds(slide_map_seeds) if slide_map_seeds else []
    directions = directions.split(',')
    for d in directions:
        if d not in ('slide', 'tile'):
            raise click.BadParameter(f"unknown direction '{d}' (slide, tile)")
    old_tree = str(Path(old_tree).resolve())
    folder = Path(workdir or tempfile.mkdtemp(prefix='detection_tables_'))
    folder.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    data, he_image, tumour_tile = build_data(folder)
    results = dict(setting=dict(res=RES, gan_kimg=0.32, encoder_kimg=0.16, encoder='lr 1e-3, batch 16, lpips 0',
                                trained_by='new tree', old_tree=old_tree), runs=[])

    def save():
        with dnnlib.util.atomic_write(out_path) as tmp:
            with open(tmp, 'w') as f:
                json.dump(results, f, indent=1)

    for seed in seeds:
        for direction in directions:
            train_zip, labelled = data[direction]
            run = folder / f'{direction}{seed}'
            t0 = time.time()
            network, encoder = trained(run) or train_gan_and_encoder(run, train_zip, seed, workers=1)
            row = dict(direction=direction, seed=seed, train_s=round(time.time() - t0, 1), variants={})
            for name, version, score, stain in VARIANTS:
                outdir = run / name.replace(' ', '_').replace('(', '').replace(')', '').replace('+', '')
                args = ['tools.anomaly', 'evaluate', '--network', network, '--encoder', encoder, '--data', labelled,
                        '--outdir', str(outdir), '--score', score, '--device', 'cpu', '--batch', '40']
                if stain is not None:
                    args += ['--stain-normalize', stain, '--reference-data', train_zip]
                t1 = time.time()
                found = json.loads((outdir / 'metrics.json').read_text()) if (outdir / 'metrics.json').exists() else \
                    run_tool(old_tree if version == 'old' else str(REPO), args, outdir)
                row['variants'][name] = dict({k: found.get(k) for k in ('AUROC', 'AUPR', 'F1_oracle', 'F1max')},
                                             F1_at_threshold=(found.get('threshold') or {}).get('F1'),
                                             seconds=round(time.time() - t1, 1))
            if direction == 'slide' and seed in map_seeds:
                row['slide_map'] = slide_map_run(run, network, encoder, he_image, tumour_tile, train_zip)
            results['runs'].append(row)
            print(f'{direction} seed {seed}: ' + ', '.join(f'{k} {fmt(v["AUROC"])}' for k, v in row['variants'].items()),
                  flush=True)
            save()
    results['total_s'] = round(time.time() - t_start, 1)
    results['summary'] = summarise(results['runs'])
    save()
    print(table(results))


def trained(run):
    """(network pkl, encoder pkl) of a finished earlier training in `run`, or None."""
    networks = sorted(run.glob('runs/*/network-snapshot-*.pkl'))
    encoders = sorted(run.glob('encoder/encoder-snapshot-*.pkl'))
    return (str(networks[-1]), str(encoders[-1])) if networks and encoders else None


def slide_map_run(run, network, encoder, he_image, tumour_tile, train_zip):
    """Patch AUROC etc. of tools.slide_map on the pasted-lesion pyramid (as tests/test_anomaly_real.py), per stain."""
    from slide_map_inputs import write_lesion_slide
    top, left = 300, 500
    slide, xml = write_lesion_slide(run, he_image[top:top + 1400, left:left + 1500], tumour_tile,
                                    box=(600, 400, 1100, 900))
    out = {}
    for stain in ('none', 'macenko'):
        outdir = run / f'map_{stain}'
        if (outdir / 'evaluation.json').exists():
            found = json.loads((outdir / 'evaluation.json').read_text())
            out[stain] = {k: found.get(k) for k in ('patch_AUROC', 'patch_AUPR', 'patch_F1_oracle')}
            continue
        args = ['tools.slide_map', '--network', network, '--encoder', encoder, '--slide', slide, '--annotations', xml,
                '--outdir', str(outdir), '--patch-size', str(RES), '--level', '0', '--stride', '32',
                '--tissue-min', '0.9', '--batch', '64', '--device', 'cpu', '--stain-normalize', stain,
                '--reference-data', train_zip]
        proc = subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise click.ClickException(f'slide_map failed:\n{proc.stdout[-2000:]}')
        found = json.loads(proc.stdout.strip().splitlines()[-1])
        out[stain] = {k: found.get(k) for k in ('patch_AUROC', 'patch_AUPR', 'patch_F1_oracle')}
    return out


def summarise(runs):
    out = {}
    for direction in sorted({r['direction'] for r in runs}):
        rows = [r for r in runs if r['direction'] == direction]
        out[direction] = {name: {m: mean_sd([r['variants'][name][m] for r in rows]) for m in METRICS}
                          for name, *_ in VARIANTS}
    return out


def table(results):
    lines = []
    for direction, by_variant in results['summary'].items():
        rows = [r for r in results['runs'] if r['direction'] == direction]
        seeds = ' / '.join(str(r['seed']) for r in rows)
        lines += [f'\n{direction} GAN (seeds {seeds})',
                  '| score | AUROC mean ± sd | AUROC per seed | AUPR mean ± sd | F1_at_threshold mean ± sd |',
                  '|---|---|---|---|---|']
        for name, *_ in VARIANTS:
            cells = []
            for m in METRICS:
                ms = by_variant[name][m]
                cells.append('–' if ms is None else f'{ms[0]:.3f} ± {ms[1]:.3f}')
            per_seed = ' / '.join(fmt(r['variants'][name]['AUROC']) for r in rows)
            lines.append(f'| {name} | {cells[0]} | {per_seed} | {cells[1]} | {cells[2]} |')
    maps = [(r['seed'], r['slide_map']) for r in results['runs'] if 'slide_map' in r]
    for seed, m in maps:
        lines.append(f'slide map, slide GAN seed {seed}: ' +
                     ', '.join(f'{k}: patch AUROC {fmt(v["patch_AUROC"])}' for k, v in m.items()))
    lines.append(f'total {results.get("total_s", 0):.0f} s')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
