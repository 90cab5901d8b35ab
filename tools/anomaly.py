"""Unsupervised anomaly scores from a GAN trained on normal tissue, and their evaluation on labelled patches.

A query patch x is mapped into the latent space (tools/projection.py), giving a reconstruction x' = G(latent):
- `--score fanogan` (f-AnoGAN): A(x) = mean (x - x')^2 + kappa * mean (f(x) - f(x'))^2, f = the discriminator's
  last feature layer (tools/train_encoder.discriminator_features), kappa = 1;
- `--score lpips` (projector): A(x) = LPIPS(x, x') + mean (x - x')^2;
- `--score perceptual`: A(x) = LPIPS(x, x') + kappa * mean (f(x) - f(x'))^2, the f-AnoGAN score with LPIPS in place
  of the pixel residual. Under a briefly trained GAN the pixel residual mostly measures brightness and colour
  mismatch (on CMU normal vs tumour-tile patches its AUROC fell between 0.37 and 0.64). LPIPS and the D features
  see more structure, but after CPU-minutes of training no score separates reliably (AUROC 0.57-0.85 over
  training seeds; tests/test_anomaly_real.py): low-contrast tissue reconstructs better whatever its type;
- `--score critic`: A(x) = -D(x), the discriminator's own verdict on the query (the discrimination term of AnoGAN
  and EGBAD, without a reconstruction). Measured on real H&E it is the strongest term when the normal tissue is
  narrow (a GAN of the tumour tile against CMU patches: AUROC 0.86-0.95 over five training seeds), and as
  seed-dependent as the others for a GAN of the varied CMU slide (0.14-0.71). Like every score here it also
  reacts to stain and scanner differences, not only to tissue type.
The default score follows the method: fanogan for `--method encoder`, lpips for `lpips` / `hybrid`. Pixels are in
[-1, 1]. The CSV keeps every term it measured (residual, features, lpips, critic); the encoder method with the
fanogan or critic score leaves lpips NaN, because running VGG16 would cost several times the encoder and G together.

    python -m tools.anomaly score --network=net.pkl --encoder=enc.pkl --data=patches.zip --outdir=scores
    python -m tools.anomaly evaluate --network=net.pkl --encoder=enc.pkl --data=labelled.zip --outdir=eval

`evaluate` reads 0 (normal) / 1 (tumour) labels from the dataset's dataset.json (as dataset_tool writes them) and
prints one JSON line with AUROC, AUPR and F1max (anomalib's names; computed with scikit-learn). It writes
scores.csv, roc.png and fig4.png (query / reconstruction / residual rows, normal and tumour separately).
"""

import csv
import json
import os

import click
import numpy as np
import torch
import tqdm

import dnnlib
from tools import cli_utils, projection

SCORE_TERMS = ('residual', 'features', 'lpips', 'critic')
SCORE_FIELDS = ('score',) + SCORE_TERMS
SCORES = ('fanogan', 'lpips', 'perceptual', 'critic')
SCORE_HELP = ('fanogan: residual + kappa * D-feature distance; lpips: LPIPS + residual; perceptual: LPIPS + kappa * '
              'D-feature distance (both run VGG16 on every patch); critic: -D(patch), how little the discriminator '
              'believes the patch is normal tissue  [default: fanogan for encoder, lpips otherwise]')

def default_score(method):
    return 'fanogan' if method == 'encoder' else 'lpips'

def needs_lpips(method, score):
    """Whether scoring runs VGG16: for the projector methods, or a score with an LPIPS term. The encoder with
    the fanogan or critic score does not, because VGG16 would cost several times the encoder and G together."""
    return method != 'encoder' or score in ('lpips', 'perceptual')

#----------------------------------------------------------------------------
# Scores.

def score_patches(G, patches, method='encoder', E=None, D=None, kappa=1.0, num_steps=None, seed=303, batch_size=16,
                  lpips=None, w_stats=None, progress=True, score=None):
    """Anomaly scores of uint8 patches [N, R, R, 3] (R = G.img_resolution; numpy or torch, any device).

    G: the generator (eval, on the device to use). E: encoder for 'encoder'/'hybrid'. D: the discriminator,
    needed for the f-AnoGAN feature term of 'encoder' (optional otherwise; without it `features` is NaN).
    score: 'fanogan', 'lpips', 'perceptual' or 'critic' (see the module doc); default by method. LPIPS is measured
    only where the score or the projection uses it; the D terms (features, critic) wherever D is given.
    Returns EasyDict of numpy arrays: score, residual, features, lpips, critic (float64 [N]; NaN where not
    measured) and recon (uint8 [N, R, R, 3]).
    """
    patches = np.asarray(patches.cpu() if torch.is_tensor(patches) else patches)
    if patches.ndim != 4 or patches.shape[3] != 3 or patches.dtype != np.uint8 or \
            patches.shape[1] != G.img_resolution or patches.shape[2] != G.img_resolution:
        raise dnnlib.util.UserError(f'patches must be uint8 [N, {G.img_resolution}, {G.img_resolution}, 3]; '
                                    f'got {patches.dtype} {list(patches.shape)}')
    score = default_score(method) if score is None else score
    if score not in SCORES:
        raise dnnlib.util.UserError(f"unknown score '{score}' (choose from {', '.join(SCORES)})")
    if score != 'lpips' and D is None:
        raise dnnlib.util.UserError(f'the {score} score needs the discriminator D of the network pickle')
    device = next(G.parameters()).device
    with_lpips = needs_lpips(method, score)
    if lpips is None and with_lpips:
        lpips = projection.lpips_lib.load_lpips(device)
    if w_stats is None and method != 'encoder' and projection.has_w_space(G):
        w_stats = projection.w_statistics(G)
    from tools.train_encoder import discriminator_features, discriminator_outputs

    out = {k: [] for k in SCORE_FIELDS + ('recon',)}
    starts = range(0, len(patches), batch_size)
    for start in tqdm.tqdm(starts, desc=f'scoring ({method})', unit='batch', disable=not progress or len(starts) < 2):
        real = projection.to_float(patches[start:start + batch_size], device)
        result = projection.run_method(G, real, method=method, E=E, num_steps=num_steps, seed=seed, lpips=lpips,
                                       w_stats=w_stats, progress=False, measure_distance=with_lpips)
        with torch.no_grad():
            recon = result.images.clamp(-1, 1)
            residual = (real - recon).square().mean(dim=(1, 2, 3))
            if D is not None:
                real_features, real_logits = discriminator_outputs(D, real)
                features = (real_features - discriminator_features(D, recon)).square().mean(dim=1)
                critic = -real_logits
            else:
                features = critic = torch.full_like(residual, float('nan'))
            distance = result.distance
        total = dict(fanogan=residual + kappa * features, lpips=distance + residual,
                     perceptual=distance + kappa * features, critic=critic)[score]
        for key, value in zip(SCORE_FIELDS, (total, residual, features, distance, critic)):
            out[key].append(value.double().cpu().numpy())
        out['recon'].append(cli_utils.images_to_uint8(recon))
    return dnnlib.EasyDict({k: np.concatenate(v) for k, v in out.items()})

#----------------------------------------------------------------------------
# Detection metrics.

def detection_metrics(labels, scores):
    """Image-level AUROC, AUPR (average precision) and F1max for labels 1 = anomalous, higher score = more anomalous."""
    from sklearn import metrics
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if set(np.unique(labels)) != {0, 1}:
        raise dnnlib.util.UserError('evaluation needs both normal (0) and tumour (1) patches')
    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    with np.errstate(invalid='ignore', divide='ignore'):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return dict(AUROC=float(metrics.roc_auc_score(labels, scores)),
                AUPR=float(metrics.average_precision_score(labels, scores)),
                F1max=float(f1.max()))

#----------------------------------------------------------------------------
# Data and outputs.

def load_patches(data, resolution, labelled):
    """(names, uint8 [N, R, R, 3], labels or None) of a dataset folder/zip; labels are dataset.json's 0/1 ints."""
    from training import dataset as dataset_lib
    ds = dataset_lib.ImageFolderDataset(path=data, use_labels=labelled)
    if ds.resolution != resolution or ds.num_channels != 3:
        raise dnnlib.util.UserError(f'{data} holds {ds.resolution}x{ds.resolution} images with {ds.num_channels} '
                                    f'channels; the network needs {resolution}x{resolution} RGB')
    names, images, labels = [], [], []
    for idx in tqdm.trange(len(ds), desc='reading', unit='img', disable=len(ds) < 256):
        details = ds.get_details(idx)
        image, _ = ds[idx]
        names.append(details.fname)
        images.append(image.transpose(1, 2, 0))
        if labelled:
            labels.append(details.raw_label)
    if labelled:
        if not ds.has_labels:
            raise dnnlib.util.UserError(f'{data} has no dataset.json labels (0 = normal, 1 = tumour)')
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind != 'i' or not set(np.unique(labels)) <= {0, 1}:
            raise dnnlib.util.UserError(f'{data}: labels must be 0 (normal) or 1 (tumour)')
    return names, np.stack(images), (labels if labelled else None)

def write_scores_csv(path, names, result, labels=None):
    with dnnlib.util.atomic_write(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['name'] + (['label'] if labels is not None else []) + list(SCORE_FIELDS))
            for idx, name in enumerate(names):
                writer.writerow([name] + ([int(labels[idx])] if labels is not None else []) +
                                [f'{result[k][idx]:.6g}' for k in SCORE_FIELDS])

def _save_figure(fig, path):
    import matplotlib.pyplot as plt
    with dnnlib.util.atomic_write(path) as tmp:
        fig.savefig(tmp, format='png', dpi=120, bbox_inches='tight')
    plt.close(fig)

def plot_roc(path, labels, scores, auroc, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from sklearn import metrics
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=2, label=f'AUROC = {auroc:.3f}')
    ax.plot([0, 1], [0, 1], '--', color='grey', lw=1, label='chance')
    ax.set(xlabel='false positive rate (normal flagged)', ylabel='true positive rate (anomalies found)', title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc='lower right')
    _save_figure(fig, path)

def plot_fig4(path, images, recon, labels, scores, per_class=6):
    """Query / reconstruction / residual rows, normal patches on the left, tumour on the right (up to per_class each)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(2 * 0.9 * per_class + 1, 3 * 0.9 + 0.8))
    for ax, cls, title in zip(axes, (0, 1), ('label 0 (normal)', 'label 1 (anomalous)')):
        if not np.any(labels == cls):
            ax.set_axis_off()
            continue
        idx = np.flatnonzero(labels == cls)[:per_class]
        rows = [cli_utils.make_image_grid(images[idx], grid_w=len(idx)),
                cli_utils.make_image_grid(recon[idx], grid_w=len(idx)),
                cli_utils.make_image_grid(np.stack([projection.heat_map(projection.residual_map(images[i], recon[i]))
                                                    for i in idx]), grid_w=len(idx))]
        ax.imshow(np.concatenate(rows, axis=0))
        res = images.shape[1]
        ax.set_yticks([res * 0.5, res * 1.5, res * 2.5], ['query', 'reconstruction', 'residual'] if cls == 0 else [])
        ax.set_xticks([res * (k + 0.5) for k in range(len(idx))], [f'{scores[i]:.3g}' for i in idx], fontsize=7)
        ax.set_title(f'{title}, score below', fontsize=10)
    _save_figure(fig, path)

#----------------------------------------------------------------------------

def load_models(network, method, encoder, device, score=None):
    device = torch.device(device) if device is not None else cli_utils.default_device()
    G = cli_utils.load_network(network, key='G_ema', device=device)
    projection.check_generator(G)
    D = None
    try:
        D = cli_utils.load_network(network, key='D', device=device)
    except dnnlib.util.UserError:
        if (score or default_score(method)) != 'lpips':
            raise
    E = None
    if method in ('encoder', 'hybrid'):
        if encoder is None:
            raise dnnlib.util.UserError(f'--method={method} needs --encoder')
        from tools import train_encoder
        E = train_encoder.load_encoder(encoder, G, device=device)
    return G, D, E

def evaluate(network, data, outdir, method='encoder', encoder=None, kappa=1.0, num_steps=None, batch_size=16,
             device=None, progress=True, score=None):
    """Score a labelled dataset and write scores.csv, roc.png, fig4.png and metrics.json; returns the metrics dict."""
    score = default_score(method) if score is None else score
    G, D, E = load_models(network, method, encoder, device, score)
    names, images, labels = load_patches(data, G.img_resolution, labelled=True)
    if len(np.unique(labels)) < 2:
        raise dnnlib.util.UserError(f'{data} must hold both normal (0) and tumour (1) patches')
    result = score_patches(G, images, method=method, E=E, D=D, kappa=kappa, num_steps=num_steps,
                           batch_size=batch_size, progress=progress, score=score)
    found = detection_metrics(labels, result.score)
    found.update(method=method, score=score, num_normal=int((labels == 0).sum()), num_tumour=int((labels == 1).sum()),
                 network=str(network), encoder=None if encoder is None else str(encoder), data=str(data))
    cli_utils.make_outdir(outdir)
    write_scores_csv(os.path.join(outdir, 'scores.csv'), names, result, labels)
    plot_roc(os.path.join(outdir, 'roc.png'), labels, result.score, found['AUROC'], title=f'{method}, {score} score: {os.path.basename(str(data))}')
    plot_fig4(os.path.join(outdir, 'fig4.png'), images, result.recon, labels, result.score)
    with dnnlib.util.atomic_write(os.path.join(outdir, 'metrics.json')) as tmp:
        with open(tmp, 'w') as f:
            json.dump(found, f, indent=2)
    return found

#----------------------------------------------------------------------------

_common = [
    click.option('--network', help='GAN snapshot trained on normal tissue (.pkl or .safetensors)', required=True),
    click.option('--data', help='Patches: folder or zip (dataset_tool layout)', required=True),
    click.option('--outdir', help='Output folder', required=True, metavar='DIR'),
    click.option('--method', type=click.Choice(projection.METHODS), default='encoder', show_default=True,
                 help='How a patch is mapped into the latent space: encoder (one forward pass), lpips (projector '
                      'optimisation), hybrid (projector started from the encoder)'),
    click.option('--score', type=click.Choice(SCORES), help=SCORE_HELP),
    click.option('--encoder', help='Encoder snapshot from tools.train_encoder (encoder, hybrid)', metavar='PKL'),
    click.option('--kappa', type=click.FloatRange(min=0), default=1.0, show_default=True, help='Weight of the D-feature term (fanogan, perceptual)'),
    click.option('--num-steps', type=click.IntRange(min=1), help='Projection steps (lpips, hybrid)  [default: 1000 / 250]'),
    click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=16, show_default=True, help='Patches scored together'),
    click.option('--device', help='torch device  [default: cuda if available]'),
]

def _with_common(func):
    for option in reversed(_common):
        func = option(func)
    return func

@click.group()
def cli():
    """Anomaly scores of patches under a GAN trained on normal tissue, and their evaluation."""

@cli.command()
@_with_common
def score(network, data, outdir, method, score, encoder, kappa, num_steps, batch_size, device):
    """Score every patch; writes scores.csv (name, score, residual, features, lpips, critic)."""
    try:
        G, D, E = load_models(network, method, encoder, device, score)
        names, images, _ = load_patches(data, G.img_resolution, labelled=False)
        result = score_patches(G, images, method=method, E=E, D=D, kappa=kappa, num_steps=num_steps,
                               batch_size=batch_size, score=score)
        cli_utils.make_outdir(outdir)
        write_scores_csv(os.path.join(outdir, 'scores.csv'), names, result)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))
    print(f'Scored {len(names)} patches (mean score {result.score.mean():.4g}) -> {os.path.join(outdir, "scores.csv")}')

@cli.command(name='evaluate')
@_with_common
def evaluate_cmd(network, data, outdir, method, score, encoder, kappa, num_steps, batch_size, device):
    """Score a labelled dataset (0 normal, 1 tumour); print AUROC, AUPR, F1max as one JSON line."""
    try:
        found = evaluate(network, data, outdir, method=method, encoder=encoder, kappa=kappa, num_steps=num_steps,
                         batch_size=batch_size, device=device, score=score)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))
    print(json.dumps(found))

if __name__ == '__main__':
    cli()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
