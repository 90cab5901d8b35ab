"""End-to-end demo on real H&E, from a slide to anomaly detection, on a CPU in minutes.

It runs the commands a user would type, printing each one before it runs:
  1. fetch the CMU-1-Small-Region slide and the TIA tumour tile through the asset registry;
  2. dataset_tool.py: 32 px (or 64 px) tissue patches of the slide, and the Fig 2 preview panel;
  3. split them into training and held-out patches; bring the tumour tile (about twice the slide's
     magnification) to the slide's 0.499 um/px and cut it into patches as well;
  4. train.py: a short run of a narrow config-e StyleGAN2 on the training patches only;
  5. generate.py and style_mixing.py: synthetic patches and a style-mixing grid;
  6. calc_metrics.py: FID and SWD against the held-out patches, which training never saw;
  7. tools.train_encoder: an f-AnoGAN encoder for the trained generator, on the training patches;
  8. projector.py: a few normal and a few tumour patches mapped into the latent space;
  9. tools.anomaly evaluate (the f-AnoGAN score, its default): AUROC of held-out normal (0) against tumour (1)
     patches, and the AUROC of each term alone (pixel residual, D features, critic);
 10. the other direction: a GAN and encoder of the tumour tile's patches, then tools.anomaly evaluate of held-out
     tile patches (0) against held-out slide patches (1). At CPU scale only this direction is detected, mostly
     by the critic term (README, tools.anomaly);
 11. tools.report: one self-contained page, <outdir>/report.html, with every picture and number.
"""

import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile

import click

HERE = os.path.dirname(os.path.abspath(__file__))

# The slide is scanned at 0.499 um/px; the TIA tile at about twice that magnification (nuclei twice as wide
# in pixels), so it is shrunk by this factor before cutting to give both tissues the same scale.
TUMOUR_TILE_SCALE = 0.5
HELDOUT_FRACTION = 0.25
SPLIT_SEED = 0

# What each mode trains and measures. 'full' is sized for about 15 minutes on two idle CPU cores; 'quick' only
# shows that every step works (2-4 minutes) and learns nothing worth looking at.
# Training settings: three candidates got the same CPU time (~11.5 min, one core) on this demo's 32 px patches,
# FID128 / SWD128 against the held-out patches (the real-vs-real floor is 92 / 38):
#   cbase 512,  cmax 64,  batch 16, gamma 0.1     24 kimg  FID 163 / SWD 63   <- chosen (12 kimg: 247 / 101)
#   cbase 512,  cmax 64,  batch 32, gamma 0.1     32 kimg  FID 195 / SWD 71
#   cbase 4096, cmax 128, batch 16, gamma 0.0128   4 kimg  FID 407 / SWD 214
# Given 400 s each (one core): batch 8 reached 11 kimg at FID 205 / SWD 94, map 8 15 kimg at 239 / 95, the chosen
# setting 20 kimg at 209 / 95 -- no better within run-to-run noise.
# The narrow network costs ~20 s/kimg, the 128-channel one 5x that: in minutes of CPU the number of G/D updates
# matters more than width, and batch 32 halves the updates for the same images. A short G_ema half-life
# (0.1 kimg) suits a short run.
# Learning rate, 20 kimg each, training seeds 0 / 1 / 2 (runs differ far more between seeds than between settings):
#   config-e's 0.002    FID128 161 / 340 / 218   SWD128 74 / 155 / 142
#   0.005 (chosen)      FID128 155 / 214 / 189   SWD128 55 / 103 / 74   <- better for every seed, same cost
#   0.01 (seeds 0, 1)   FID128 199 / 192         SWD128 68 / 56
# and 0.005 for 40 kimg (chosen: ~6 min of training on two cores) FID128 143 / 140, SWD128 52 / 55 (seeds 0, 1).
# The encoder (izi_f, Adam 1e-3, batch 16) on this GAN's settings: 0.5 kimg (31 steps) left reconstructions barely
# closer than the mean patch (held-out PSNR margin +0.8 dB, LPIPS worse than the mean patch); the held-out loss falls
# steeply to ~8 kimg (margin +2.4 dB) and by under 2 % per kimg after it (README, tools.train_encoder). The tile
# GAN's encoder at 0.16 kimg had collapsed (reconstruction diversity 0.09 of the queries', PSNR margin -0.2 dB); its
# held-out loss flattens by ~2.5 kimg, and at 2 kimg the margin is +2.1 dB, diversity 0.56.
PROFILES = {
    'full': dict(patch=32, kimg=40.0, ticks=5, metric_images=128, encoder_kimg=8.0, encoder_batch=16, per_class=4,
                 project_steps=100, eval_per_class=100, real_floor=True, tile_kimg=1.0, tile_encoder_kimg=2.0,
                 train=['--cbase=512', '--cmax=64', '--map=2', '--batch=16', '--gamma=0.1', '--ema=0.1', '--glr=0.005',
                        '--dlr=0.005']),
    'quick': dict(patch=32, kimg=0.02, ticks=1, metric_images=8, encoder_kimg=0.016, encoder_batch=8, per_class=2,
                  project_steps=4, eval_per_class=8, real_floor=False, tile_kimg=0.02, tile_encoder_kimg=0.016,
                  train=['--cbase=512', '--cmax=32', '--map=1', '--batch=4', '--gamma=0.1', '--ema=0.01']),
}

#----------------------------------------------------------------------------
# Data preparation the CLIs do not do themselves. The demo runs these through `python -c`, so the printed
# command is exactly what ran and can be repeated by hand.

def read_dataset_zip(path):
    """[(name, png bytes, label or None)] of a dataset zip, in name order."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith('.png'))
        labels = {}
        if 'dataset.json' in z.namelist():
            labels = {name: label for name, label in (json.loads(z.read('dataset.json')).get('labels') or [])}
        return [(name, z.read(name), labels.get(name)) for name in names]


def write_dataset_zip(path, members):
    """A dataset zip (PNGs plus dataset.json labels when every member has one), written atomically."""
    import dnnlib
    with dnnlib.util.atomic_write(path) as tmp:
        with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_STORED) as z:
            for name, data, _label in members:
                z.writestr(name, data)
            if members and all(label is not None for _name, _data, label in members):
                z.writestr('dataset.json', json.dumps({'labels': [[name, label] for name, _data, label in members]}))


def split_patches(source, train, heldout, heldout_fraction=HELDOUT_FRACTION, seed=SPLIT_SEED):
    """Random split of a patch zip into a training zip and a held-out zip (for FID/SWD and anomaly scoring)."""
    import numpy as np
    members = read_dataset_zip(source)
    num_heldout = min(max(int(round(len(members) * heldout_fraction)), 1), len(members) - 1)
    if num_heldout < 1:
        raise SystemExit(f'{source} holds {len(members)} patches; a split needs at least 2')
    chosen = set(np.random.RandomState(seed).permutation(len(members))[:num_heldout].tolist())
    write_dataset_zip(train, [m for i, m in enumerate(members) if i not in chosen])
    write_dataset_zip(heldout, [m for i, m in enumerate(members) if i in chosen])
    print(f'{len(members) - num_heldout} training patches -> {train}\n{num_heldout} held-out patches -> {heldout}')


def resample_image(source, dest, scale):
    """Resize an image by `scale` (Lanczos, antialiased when shrinking) and save it as PNG."""
    import PIL.Image
    import dnnlib
    with PIL.Image.open(source) as img:
        img = img.convert('RGB')
        size = (max(round(img.width * scale), 1), max(round(img.height * scale), 1))
        with dnnlib.util.atomic_write(dest) as tmp:
            img.resize(size, PIL.Image.LANCZOS).save(tmp, format='PNG')
    print(f'{source}: {img.width}x{img.height} -> {dest}: {size[0]}x{size[1]}')


def make_evaluation_sets(normal, tumour, labelled, targets=None, per_class=0, limit=None, kinds=('normal', 'tumour')):
    """A labelled zip (normal 0, tumour 1) of the patches (at most `limit` of each kind), and a folder of the
    first `per_class` of each kind for the projector (when `targets` is given). `kinds` name the members."""
    sets = [(kinds[0], 0, read_dataset_zip(normal)[:limit]), (kinds[1], 1, read_dataset_zip(tumour)[:limit])]
    write_dataset_zip(labelled, [(f'{kind}/{os.path.basename(name)}', data, label)
                                 for kind, label, members in sets for name, data, _ in members])
    if targets is None:
        print(f'{labelled}: ' + ', '.join(f'{len(m)} {kind} ({label})' for kind, label, m in sets))
        return
    shutil.rmtree(targets, ignore_errors=True)  # a rerun with fewer targets must not project stale ones
    os.makedirs(targets)
    for kind, _label, members in sets:
        for idx, (_name, data, _) in enumerate(members[:per_class]):
            with open(os.path.join(targets, f'{kind}-{idx:02d}.png'), 'wb') as f:
                f.write(data)
    counts = ', '.join(f'{len(m)} {kind}' for kind, _, m in sets)
    print(f'{labelled}: {counts}\n{targets}: {per_class} of each kind to project')

def score_aurocs(scores_csv):
    """AUROC of each term of tools.anomaly's scores.csv used alone as the score (label 1 = tumour); one JSON line."""
    import math
    from sklearn.metrics import roc_auc_score
    from tools.anomaly import SCORE_TERMS
    with open(scores_csv, newline='') as f:
        rows = list(csv.DictReader(f))
    labels = [int(row['label']) for row in rows]
    found = {}
    for term in SCORE_TERMS:
        values = [float(row[term]) for row in rows]
        if all(math.isfinite(v) for v in values):
            found[term] = roc_auc_score(labels, values)
    print(json.dumps(found))

#----------------------------------------------------------------------------
# Running steps and keeping their record.

class StepFailed(Exception):
    pass


def q(text):
    """A string as a Python literal in double quotes (so the printed `python -c '...'` needs no escaping)."""
    return json.dumps(text)


def shown(path):
    """A path as the printed commands give it: relative to the repository when inside it."""
    rel = os.path.relpath(path, HERE)
    return path if rel.startswith('..') else rel


class Demo:
    """Runs the steps, echoing commands and output, and keeps every number with the command behind it."""

    def __init__(self):
        self.steps = []
        self.numbers = []

    def run(self, title, args):
        """Run `python <args>` in the repository; stream its output; return its stdout text."""
        command = shlex.join(['python'] + args)
        print(f'\n== {title}\n$ {command}', flush=True)
        start = time.time()
        with subprocess.Popen([sys.executable] + args, cwd=HERE, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
            lines = []
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                lines.append(line)
        if proc.returncode != 0:
            raise StepFailed(f'{title} failed (exit code {proc.returncode}); see the messages above')
        seconds = time.time() - start
        print(f'   ({seconds:.0f} s)', flush=True)
        self.steps.append(dict(title=title, command=command, seconds=seconds))
        return ''.join(lines)

    def run_python(self, title, call):
        """Run one of this file's helpers in a fresh interpreter, as `python -c "import demo; demo.<call>"`."""
        return self.run(title, ['-c', f'import demo; demo.{call}'])

    def number(self, name, value, command=None):
        self.numbers.append(dict(name=name, value=value, command=command or self.steps[-1]['command']))


def json_lines(text):
    """The JSON objects printed one per line in a step's output."""
    found = []
    for line in text.splitlines():
        if line.startswith('{'):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return found


def count_patches(path):
    with zipfile.ZipFile(path) as z:
        return sum(1 for n in z.namelist() if n.lower().endswith('.png'))


def new_run_dir(parent, before):
    """The run folder a step created under `parent` (names it did not hold before)."""
    created = sorted(set(os.listdir(parent)) - before) if os.path.isdir(parent) else []
    if not created:
        raise StepFailed(f'the step wrote no run folder under {parent}')
    return os.path.join(parent, created[-1])


def latest(folder, prefix, suffix):
    files = sorted(f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(suffix))
    if not files:
        raise StepFailed(f'no {prefix}*{suffix} in {folder}')
    return os.path.join(folder, files[-1])


def metric_count(n):
    return f'{n // 1000}k' if n % 1000 == 0 else str(n)

#----------------------------------------------------------------------------
# The pipeline.

def prepare_data(demo, out, profile):
    from dnnlib import assets
    print('== Fetching the real H&E: the CMU-1-Small-Region slide and the TIA tumour tile (asset registry)', flush=True)
    slide, tile = assets.fetch('cmu-small-region'), assets.fetch('tia-tumour-tile')
    for name, path in (('cmu-small-region', slide), ('tia-tumour-tile', tile)):
        print(f'   {path} ({assets.asset_source(name)})')

    size = profile['patch']
    p = {k: os.path.join(out, v) for k, v in dict(
        all=f'cmu-{size}.zip', train=f'cmu-{size}-train.zip', heldout=f'cmu-{size}-heldout.zip',
        tile='tumour-tile-0.499um.png', tumour=f'tumour-{size}.zip', labelled='anomaly-heldout.zip',
        targets='projection-targets', preview='preview', tumour_train=f'tumour-{size}-train.zip',
        tumour_heldout=f'tumour-{size}-heldout.zip', reverse='anomaly-tile-vs-slide.zip').items()}
    cut = ['dataset_tool.py', f'--patch-size={size}', '--level=0', '--tissue-min=0.9', '--overwrite']
    demo.run(f'Cutting {size} px tissue patches out of the slide (Fig 2 preview panel beside them)', cut[:1] + [
        f'--source={slide}', f'--dest={shown(p["all"])}', '--label=normal', f'--preview={shown(p["preview"])}'] + cut[1:])
    demo.number('slide patches kept (>= 90 % tissue)', count_patches(p['all']))
    demo.run_python('Holding out a quarter of the patches: never trained on, used for FID/SWD and anomaly scores',
                    f'split_patches({q(shown(p["all"]))}, {q(shown(p["train"]))}, {q(shown(p["heldout"]))})')
    demo.number('training patches', count_patches(p['train']))
    demo.number('held-out normal patches', count_patches(p['heldout']))
    demo.run_python(f'Shrinking the tumour tile by {TUMOUR_TILE_SCALE} to the slide\'s 0.499 um/px',
                    f'resample_image({q(tile)}, {q(shown(p["tile"]))}, {TUMOUR_TILE_SCALE})')
    demo.run(f'Cutting {size} px patches out of the tumour tile', cut[:1] + [
        f'--source={shown(p["tile"])}', f'--dest={shown(p["tumour"])}', '--label=tumor'] + cut[1:])
    demo.number('tumour patches', count_patches(p['tumour']))
    demo.run_python('Labelling held-out normal (0) and tumour (1) patches for the anomaly evaluation',
                    f'make_evaluation_sets({q(shown(p["heldout"]))}, {q(shown(p["tumour"]))}, '
                    f'{q(shown(p["labelled"]))}, {q(shown(p["targets"]))}, {profile["per_class"]}, '
                    f'limit={profile["eval_per_class"]})')
    demo.run_python('Holding out a quarter of the tumour patches too, for the other direction (a GAN of the tumour)',
                    f'split_patches({q(shown(p["tumour"]))}, {q(shown(p["tumour_train"]))}, '
                    f'{q(shown(p["tumour_heldout"]))})')
    demo.run_python('Labelling held-out tumour (0, the GAN\'s tissue) and held-out slide (1) patches for it',
                    f'make_evaluation_sets({q(shown(p["tumour_heldout"]))}, {q(shown(p["heldout"]))}, '
                    f'{q(shown(p["reverse"]))}, limit={profile["eval_per_class"]}, kinds=("tile", "slide"))')
    return p


def usable_cores():
    """The cores this process may run on (taskset or a container can allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def train_gan(demo, out, data, profile, kimg, runs, what):
    """train.py with the profile's narrow config-e settings on `data`; (run folder, last snapshot)."""
    runs = os.path.join(out, runs)
    before = set(os.listdir(runs)) if os.path.isdir(runs) else set()
    demo.run(f'Training a narrow config-e StyleGAN2 for a short {kimg:g} kimg on {what}', [
        'train.py', f'--outdir={shown(runs)}', f'--data={shown(data)}', '--cfg=config-e'] + profile['train'] + [
        f'--kimg={kimg:g}', f'--tick={kimg / profile["ticks"]:g}', f'--snap={profile["ticks"]}', '--mirror=1',
        '--augpipe=histo', '--metrics=none', '--workers=0'])
    run_dir = new_run_dir(runs, before)
    return run_dir, latest(run_dir, 'network-snapshot-', '.pkl')


def train_slide_gan(demo, out, p, profile, kimg):
    print(f'\n(The GAN is a narrow config-e StyleGAN2 ({" ".join(profile["train"])}) trained for only {kimg:g} kimg '
          'so that a CPU finishes in minutes; the paper trains 512-channel networks for thousands of kimg on GPUs.)')
    result = train_gan(demo, out, p['train'], profile, kimg, 'training-runs', 'the training patches')
    demo.number('training time (s)', round(demo.steps[-1]['seconds'], 1))
    return result


def synthesize(demo, out, snapshot):
    generated, mixing = os.path.join(out, 'generated'), os.path.join(out, 'style-mixing')
    # Noise drawn per patch, as calc_metrics draws it for FID (--noise-mode=const gives every patch the same noise).
    demo.run('Generating 36 synthetic patches', [
        'generate.py', f'--network={shown(snapshot)}', '--seeds=0-35', '--grid', '--noise-mode=random',
        f'--outdir={shown(generated)}'])
    demo.run('Style mixing: rows keep their coarse styles, columns lend layers 0-6', [
        'style_mixing.py', f'--network={shown(snapshot)}', '--rows=1,2,3,4', '--cols=5,6,7,8', '--styles=0-6',
        f'--outdir={shown(mixing)}'])
    return os.path.join(generated, 'grid.png'), os.path.join(mixing, 'grid.png')


def measure(demo, p, snapshot, profile, metric_images):
    count = metric_count(metric_images)
    metrics = f'fid{count},swd{count}'
    # Inception runs on every image at 299x299, the demo's main cost on a CPU: n generated against n held-out.
    text = demo.run(f'FID and SWD of {metric_images} generated patches against {metric_images} held-out real '
                    'patches', [
        'calc_metrics.py', f'--network={shown(snapshot)}', f'--data={shown(p["heldout"])}', f'--metrics={metrics}'])
    for entry in json_lines(text):
        for key, value in sorted(entry.get('results', {}).items()):
            if key.startswith('fid') or key.endswith('_avg'):
                demo.number(f'{key} (generator vs held-out reals)', float(value))
    if profile['real_floor']:
        # As many training patches as generated ones above: the same statistics, so the same small-sample bias.
        count = metric_count(min(metric_images, count_patches(p['train'])))
        text = demo.run('The same metrics for training patches instead of generated ones: what a perfect generator '
                        'would score with this few patches', [
                            'calc_metrics.py', f'--data={shown(p["heldout"])}', f'--data2={shown(p["train"])}',
                            f'--metrics=fid{count},swd{count}'])
        for entry in json_lines(text):
            for key, value in sorted(entry.get('results', {}).items()):
                if key.startswith('fid') or key.endswith('_avg'):
                    demo.number(f'{key} (training reals vs held-out reals)', float(value))


def train_encoder(demo, out, snapshot, data, kimg, batch, runs='encoder-runs', what='the normal training patches'):
    enc_runs = os.path.join(out, runs)
    before = set(os.listdir(enc_runs)) if os.path.isdir(enc_runs) else set()
    demo.run(f'Training an f-AnoGAN encoder (izi_f) for {kimg:g} kimg on {what}', [
        '-m', 'tools.train_encoder', f'--network={shown(snapshot)}', f'--data={shown(data)}',
        f'--outdir={shown(enc_runs)}', f'--kimg={kimg:g}', f'--batch={batch}', f'--tick={kimg / 8:g}',
        '--snap=8', '--lr=1e-3', '--workers=0'])
    enc_dir = new_run_dir(enc_runs, before)
    return enc_dir, latest(enc_dir, 'encoder-snapshot-', '.pkl')


MAPPING_NUMBERS = (('psnr_margin', 'encoder PSNR margin over the mean patch, normal patches (dB)'),
                   ('lpips_margin', 'encoder LPIPS margin over the mean patch, normal patches'),
                   ('diversity_ratio', 'reconstruction diversity / query diversity, normal patches'))


def evaluate(demo, title, snapshot, encoder, data, outdir, label, score=None):
    """tools.anomaly evaluate (its default score unless `score`), its metrics and the AUROC of every score term
    alone, as report numbers."""
    text = demo.run(title, [
        '-m', 'tools.anomaly', 'evaluate', f'--network={shown(snapshot)}', f'--encoder={shown(encoder)}',
        f'--data={shown(data)}', f'--outdir={shown(outdir)}', '--method=encoder'] + (
            [f'--score={score}'] if score else []))
    found = json_lines(text)
    if not found:
        raise StepFailed('tools.anomaly evaluate printed no result line')
    for key in ('AUROC', 'AUPR', 'F1_oracle', 'F1_at_threshold'):
        if found[-1].get(key) is not None:
            demo.number(f'{label}anomaly {key}, {found[-1]["score"]} score '
                        f'({os.path.splitext(os.path.basename(data))[0]})', float(found[-1][key]))
    for key, name in MAPPING_NUMBERS:  # does the encoder reconstruct the normal patches (tools/mapping_quality.py)?
        if found[-1].get('mapping_quality', {}).get(key) is not None:
            demo.number(f'{label}{name}', float(found[-1]['mapping_quality'][key]))
    text = demo.run_python('AUROC of each term of the score on its own (pixel residual, D features, LPIPS, critic)',
                           f'score_aurocs({q(shown(os.path.join(outdir, "scores.csv")))})')
    for term, value in json_lines(text)[-1].items():
        demo.number(f'{label}anomaly AUROC, {term} term alone', float(value))


def detect_anomalies(demo, out, p, snapshot, profile):
    projection, anomaly = os.path.join(out, 'projection'), os.path.join(out, 'anomaly')
    enc_dir, encoder = train_encoder(demo, out, snapshot, p['train'], profile['encoder_kimg'], profile['encoder_batch'])
    demo.number('encoder training time (s)', round(demo.steps[-1]['seconds'], 1))
    demo.run(f'Projecting {profile["per_class"]} normal and {profile["per_class"]} tumour patches (encoder start, '
             f'then {profile["project_steps"]} LPIPS steps)', [
                 'projector.py', f'--network={shown(snapshot)}', f'--target={shown(p["targets"])}',
                 f'--outdir={shown(projection)}', '--method=hybrid', f'--encoder={shown(encoder)}',
                 f'--num-steps={profile["project_steps"]}'])
    with open(os.path.join(projection, 'summary.csv'), newline='') as f:
        for row in csv.DictReader(f):
            demo.number(f'projection LPIPS, {os.path.splitext(row["name"])[0]}', float(row['lpips']))
    evaluate(demo, 'Anomaly detection: f-AnoGAN scores (pixel residual + D features) of held-out normal (0) vs '
             'tumour (1) patches', snapshot, encoder, p['labelled'], anomaly, label='')
    return enc_dir, projection, anomaly


def detect_other_direction(demo, out, p, profile):
    """A GAN of the tumour tile judging slide tissue: the direction that CPU-scale training does detect."""
    anomaly = os.path.join(out, 'anomaly-tile-vs-slide')
    _, snapshot = train_gan(demo, out, p['tumour_train'], profile, profile['tile_kimg'], 'training-runs-tile',
                            'the tumour tile\'s training patches')
    _, encoder = train_encoder(demo, out, snapshot, p['tumour_train'], profile['tile_encoder_kimg'],
                               profile['encoder_batch'], runs='encoder-runs-tile', what='the same tumour patches')
    evaluate(demo, 'The other direction: f-AnoGAN scores of held-out tumour (0, the GAN\'s tissue) vs held-out '
             'slide (1) patches', snapshot, encoder, p['reverse'], anomaly, label='tile GAN: ')
    return anomaly


def write_manifest(demo, out, p, run_dir, grids, enc_dir, projection, anomaly, reverse, mode, wall):
    fakes = latest(run_dir, 'fakes0', '.png')
    rel = lambda path: os.path.relpath(path, out)  # noqa: E731 - the manifest lives in `out`
    preview = sorted(f for f in os.listdir(p['preview']) if f.endswith('.png'))
    metric_logs = sorted(f for f in os.listdir(run_dir) if f.startswith('metric-') and f.endswith('.jsonl'))
    manifest = dict(
        title='HistoSynth demo: real H&E to anomaly detection',
        summary=f'Mode {mode}; wall time {wall:.0f} s on {usable_cores()} CPU cores (load average '
                f'{os.getloadavg()[0]:.1f} at the end)'
                f'{" and CUDA" if _cuda() else ""}. Every picture below was made by this run; every number is listed '
                'with the command that produced it.',
        sections=[
            dict(title='Slide, tissue mask and kept patches (Fig 2)',
                 images=[dict(path=rel(os.path.join(p['preview'], f)), caption=f) for f in preview]),
            dict(title='Real vs synthetic patches',
                 text='Left: training patches as the discriminator saw them. Right: the generator at the end of '
                      'training (same grid size), drawn by the training loop with fixed noise, so one noise pattern '
                      'repeats in every patch. Below: 36 more seeds from generate.py with noise drawn per patch, as '
                      'the FID draws them.',
                 images=[dict(path=rel(os.path.join(run_dir, 'reals.png')), caption='real (reals.png)'),
                         dict(path=rel(fakes), caption=f'synthetic ({os.path.basename(fakes)})'),
                         dict(path=rel(grids[0]), caption='generate.py --seeds=0-35 --grid --noise-mode=random')]),
            dict(title='Training curves', curves=dict(
                training_stats=rel(os.path.join(run_dir, 'stats.jsonl')),
                metric_logs=[rel(os.path.join(run_dir, f)) for f in metric_logs],
                encoder_stats=rel(os.path.join(enc_dir, 'stats.jsonl')))),
            dict(title='Style mixing', text='Top row: column seeds; left column: row seeds; cells: row seed with '
                 'layers 0-6 from the column seed.', images=[dict(path=rel(grids[1]), caption='style_mixing.py grid')]),
            dict(title='Projection into the latent space', projection=rel(projection)),
            dict(title='Anomaly detection (held-out normal vs tumour)',
                 mapping_quality=rel(os.path.join(anomaly, 'metrics.json')),
                 text='Below the pictures, the mapping check: do the encoder\'s reconstructions of held-out normal '
                      'patches beat the mean patch, and do they differ between patches? Without that, the scores '
                      'measure distance from an average image.',
                 images=[dict(path=rel(os.path.join(anomaly, 'roc.png')), caption='ROC curve'),
                         dict(path=rel(os.path.join(anomaly, 'fig4.png')), caption='query / reconstruction / residual')]),
            dict(title='The other direction (a GAN of the tumour tile: held-out tumour vs slide patches)',
                 mapping_quality=rel(os.path.join(reverse, 'metrics.json')),
                 text='Measured over training seeds, a briefly trained GAN of this skin slide flags the tumour in '
                      'some runs and not in others (AUROC 0.14-0.85; the slide\'s epidermis resembles the tumour at '
                      'this patch size), while a GAN of the tumour tile flags the slide\'s tissue in every run '
                      '(critic AUROC 0.86-0.95 over five seeds). Here: the f-AnoGAN score of this run; the critic '
                      'term alone is among the numbers below.',
                 images=[dict(path=rel(os.path.join(reverse, 'roc.png')), caption='ROC curve'),
                         dict(path=rel(os.path.join(reverse, 'fig4.png')), caption='query / reconstruction / residual')]),
            dict(title='Every number', numbers=demo.numbers),
            dict(title='Every command', steps=demo.steps),
        ])
    path = os.path.join(out, 'report.json')
    with open(path, 'w') as f:
        json.dump(manifest, f, indent=1)
    return path


def _cuda():
    import torch
    return torch.cuda.is_available()


@click.command()
@click.option('--outdir', default='demo-out', show_default=True, help='Folder for everything the demo writes.')
@click.option('--quick', is_flag=True,
              help='Tiny network, a few training steps, few metric images: checks every step in about 2 minutes.')
@click.option('--patch-size', type=click.Choice(['32', '64']),
              help='Patch size in pixels at the slide\'s 0.499 um/px  [default: 32: most tissue per CPU-minute]')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True),
              help=f'GAN training length in thousands of real images  [default: {PROFILES["full"]["kimg"]:g}, '
                   f'--quick {PROFILES["quick"]["kimg"]:g}]')
@click.option('--metric-images', type=click.IntRange(min=2),
              help=f'Generated images for FID and SWD (Inception runs on the CPU: keep it small)  [default: '
                   f'{PROFILES["full"]["metric_images"]}, --quick {PROFILES["quick"]["metric_images"]}]')
def main(outdir, quick, patch_size, kimg, metric_images):
    """Run HistoSynth end to end on real H&E: patches, a GAN, metrics, projection and anomaly detection.

    Writes everything under --outdir, ending with report.html.
    """
    from dnnlib.util import UserError
    mode = 'quick' if quick else 'full'
    profile = dict(PROFILES[mode])
    if patch_size is not None:
        profile['patch'] = int(patch_size)
    kimg = profile['kimg'] if kimg is None else kimg
    metric_images = profile['metric_images'] if metric_images is None else metric_images
    out = os.path.abspath(outdir)
    os.makedirs(out, exist_ok=True)
    print(f'HistoSynth demo ({mode}{": every step, tiny settings" if quick else ""}) on '
          f'{"CUDA" if _cuda() else f"the CPU ({usable_cores()} cores)"}; writing to {out}', flush=True)
    start = time.time()
    demo = Demo()
    try:
        p = prepare_data(demo, out, profile)
        run_dir, snapshot = train_slide_gan(demo, out, p, profile, kimg)
        grids = synthesize(demo, out, snapshot)
        measure(demo, p, snapshot, profile, metric_images)
        enc_dir, projection, anomaly = detect_anomalies(demo, out, p, snapshot, profile)
        reverse = detect_other_direction(demo, out, p, profile)
        demo.number('demo wall time before the report (s)', round(time.time() - start, 1),
                    shlex.join(['python', 'demo.py'] + sys.argv[1:]))
        manifest = write_manifest(demo, out, p, run_dir, grids, enc_dir, projection, anomaly, reverse, mode,
                                  time.time() - start)
        report = os.path.join(out, 'report.html')
        demo.run('Writing the report', ['-m', 'tools.report', f'--manifest={shown(manifest)}', f'--out={shown(report)}'])
    except (StepFailed, UserError, OSError) as err:
        raise click.ClickException(str(err))

    print(f'\nDone in {time.time() - start:.0f} s.')
    for item in demo.numbers:
        print(f'  {item["name"]}: {item["value"]:.4g}')
    print(f'Open {report} in a browser: slide preview, reals beside fakes, curves, style mixing, projections, ROC and '
          f'every command. Run folder: {run_dir}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
