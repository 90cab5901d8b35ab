"""Unsupervised anomaly scores from a GAN trained on normal tissue, and their evaluation on labelled patches.

A query patch x is mapped into the latent space (tools/projection.py: encoder, lpips projector or hybrid), giving a
reconstruction x' = G(latent) rendered with the generator's constant noise. Whatever the mapping, the default score
is the paper's, f-AnoGAN's (Schlegl et al. 2019):
- `--score fanogan`: A(x) = mean (x - x')^2 + kappa * mean (f(x) - f(x'))^2, f = the discriminator's last feature
  layer (tools/train_encoder.discriminator_outputs), kappa = 1. The projector is thus not scored by the LPIPS
  distance it minimised. Options:
- `--score lpips`: A(x) = LPIPS(x, x') + mean (x - x')^2 (the projector's own distance plus the residual);
- `--score perceptual`: A(x) = LPIPS(x, x') + kappa * mean (f(x) - f(x'))^2, the f-AnoGAN score with LPIPS in place
  of the pixel residual;
- `--score critic`: A(x) = -D(x), the discriminator's own verdict on the query (the discrimination term of AnoGAN
  and EGBAD, without a reconstruction). On real H&E it is the strongest term when the normal tissue is narrow and
  as seed-dependent as the others for a varied slide (README). Like every score here it also reacts to stain and
  scanner differences, not only to tissue type: `--stain-normalize` (tools/histology/stain.py) removes most of that.
Pixels are in [-1, 1]. The CSV keeps every term it measured (residual, features, lpips, critic); the encoder method
with the fanogan or critic score leaves lpips NaN, because running VGG16 would cost several times the encoder and G.

D's features and logit of a patch are computed with its minibatch-stddev statistic taken in a group completed by
a fixed sample of the GAN's normal training patches (tools/reference_group.py), so a score depends neither on the
patch's batch-mates nor on a group size D never saw. The training patches come from `--reference-data`, or by
default from the path the network pickle records (training_set_kwargs); they also fit the stain normaliser.

    python -m tools.anomaly score --network=net.pkl --encoder=enc.pkl --data=patches.zip --outdir=scores
    python -m tools.anomaly evaluate --network=net.pkl --encoder=enc.pkl --data=labelled.zip --outdir=eval

`evaluate` reads 0 (normal) / 1 (tumour) labels from the dataset's dataset.json (as dataset_tool writes them) and
prints one JSON line: AUROC, AUPR, F1_oracle (the best F1 over thresholds chosen on the test labels themselves:
an upper bound, not a result) over all patches, and F1_at_threshold: F1 with the threshold set at a quantile
(default 0.95) of the scores of a validation split of the normal patches, measured on the rest. It writes
scores.csv (with each patch's split), metrics.json, roc.png and fig4.png (query / reconstruction / residual rows,
normal and tumour separately).
"""

import contextlib
import csv
import json
import os

import click
import numpy as np
import torch
import tqdm

import dnnlib
from tools import cli_utils, projection, reference_group
from tools.histology import stain

SCORE_TERMS = ('residual', 'features', 'lpips', 'critic')
SCORE_FIELDS = ('score',) + SCORE_TERMS
SCORES = ('fanogan', 'lpips', 'perceptual', 'critic')
DEFAULT_SCORE = 'fanogan'
SCORE_HELP = ('fanogan (f-AnoGAN, the paper\'s score for every mapping): residual + kappa * D-feature distance; '
              'lpips: LPIPS + residual; perceptual: LPIPS + kappa * D-feature distance (both run VGG16 on every '
              'patch); critic: -D(patch), how little the discriminator believes the patch is normal tissue  '
              '[default: fanogan]')
REFERENCE_COUNT = 64        # training patches sampled (seed 0) for the minibatch-stddev groups and the stain fit
VAL_FRACTION = 0.25         # share of the labelled normal patches that only sets the detection threshold
VAL_QUANTILE = 0.95         # the threshold: this quantile of the validation normals' scores

def default_score(method=None):
    """The score every mapping gets unless told otherwise (the argument is kept for callers that pass one)."""
    return DEFAULT_SCORE

def needs_lpips(method, score):
    """Whether scoring runs VGG16: for the projector methods, or a score with an LPIPS term. The encoder with
    the fanogan or critic score does not, because VGG16 would cost several times the encoder and G together."""
    return method != 'encoder' or score in ('lpips', 'perceptual')

#----------------------------------------------------------------------------
# Scores.

def score_patches(G, patches, method='encoder', E=None, D=None, kappa=1.0, num_steps=None, seed=303, batch_size=16,
                  lpips=None, w_stats=None, progress=True, score=None, reference=None, hybrid_lr=None):
    """Anomaly scores of uint8 patches [N, R, R, 3] (R = G.img_resolution; numpy or torch, any device).

    G: the generator (eval, on the device to use). E: encoder for 'encoder'/'hybrid'. D: the discriminator,
    needed by every score but lpips (optional there; without it `features` and `critic` are NaN).
    score: 'fanogan' (default), 'lpips', 'perceptual' or 'critic' (see the module doc). LPIPS is measured only
    where the score or the projection uses it; the D terms (features, critic) wherever D is given.
    reference: uint8 [K, R, R, 3] normal training patches completing each patch's minibatch-stddev group (needed
    when D has such a layer; the first reference_group.references_needed(D) are used).
    Returns EasyDict of numpy arrays: score, residual, features, lpips, critic (float64 [N]; NaN where not
    measured) and recon (uint8 [N, R, R, 3], the scored reconstruction).
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
    groups = contextlib.nullcontext()
    if D is not None:
        need = reference_group.references_needed(D)
        if need and (reference is None or len(reference) < need):
            raise dnnlib.util.UserError(f'the discriminator compares each patch with {need} other patches (minibatch '
                                        f'stddev): give reference patches of the GAN\'s training set (--reference-data)')
        groups = reference_group.reference_groups(D, projection.to_float(np.asarray(reference[:need]), device)
                                                  if need else None)
    from tools.train_encoder import discriminator_features, discriminator_outputs

    out = {k: [] for k in SCORE_FIELDS + ('recon',)}
    starts = range(0, len(patches), batch_size)
    with groups:
        for start in tqdm.tqdm(starts, desc=f'scoring ({method})', unit='batch', disable=not progress or len(starts) < 2):
            real = projection.to_float(patches[start:start + batch_size], device)
            result = projection.run_method(G, real, method=method, E=E, num_steps=num_steps, seed=seed, lpips=lpips,
                                           w_stats=w_stats, progress=False, measure_distance=with_lpips,
                                           hybrid_lr=hybrid_lr)
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
    """Image-level AUROC, AUPR (average precision) and F1_oracle for labels 1 = anomalous, higher score = more
    anomalous. F1_oracle (anomalib's F1max) is the best F1 over all thresholds, picked with the labels being
    evaluated: an upper bound that no deployed detector reaches; threshold_metrics gives an honest F1."""
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
                F1_oracle=float(f1.max()))


def validation_split(labels, fraction=VAL_FRACTION, seed=0):
    """bool [N]: the normal patches (label 0) that only set the threshold, a random `fraction` of them (at least one,
    and at least one normal patch left for the test)."""
    labels = np.asarray(labels)
    normal = np.flatnonzero(labels == 0)
    count = min(max(int(round(fraction * len(normal))), 1), len(normal) - 1) if fraction > 0 else 0
    chosen = np.random.RandomState(seed).permutation(normal)[:max(count, 0)]
    split = np.zeros(len(labels), dtype=bool)
    split[chosen] = True
    return split


def threshold_metrics(labels, scores, val_scores, quantile=VAL_QUANTILE):
    """Detection at a threshold fixed in advance: the `quantile` of the validation normals' scores (numpy's linear
    interpolation). A patch scoring above it is flagged. Returns threshold, F1, precision, recall and the false
    positive rate on (labels, scores), which must not include the validation patches."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    val_scores = np.asarray(val_scores, dtype=np.float64)
    if not len(val_scores):
        raise dnnlib.util.UserError('a threshold needs validation normal patches (at least two normal patches)')
    threshold = float(np.quantile(val_scores, quantile))
    flagged = scores > threshold
    tp = int(np.sum(flagged & (labels == 1)))
    fp = int(np.sum(flagged & (labels == 0)))
    fn = int(np.sum(~flagged & (labels == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    negatives = int(np.sum(labels == 0))
    return dict(quantile=float(quantile), threshold=threshold, F1=float(f1), precision=float(precision),
                recall=float(recall), false_positive_rate=float(fp / negatives) if negatives else float('nan'))

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

def write_scores_csv(path, names, result, labels=None, validation=None):
    """name[, label][, split: val (sets the threshold) / test], then the score and its terms."""
    with dnnlib.util.atomic_write(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['name'] + (['label'] if labels is not None else []) +
                            (['split'] if validation is not None else []) + list(SCORE_FIELDS))
            for idx, name in enumerate(names):
                writer.writerow([name] + ([int(labels[idx])] if labels is not None else []) +
                                ([('val' if validation[idx] else 'test')] if validation is not None else []) +
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


def training_data_of(network):
    """The training-set path a network pickle records (training_set_kwargs.path), or None."""
    import legacy
    kwargs = legacy.load_network(network).get('training_set_kwargs', None) or {}
    path = kwargs.get('path', None) if isinstance(kwargs, dict) else None
    return str(path) if path else None


def reference_patches(path, resolution, count=REFERENCE_COUNT, seed=0):
    """uint8 [K, R, R, 3]: min(count, size) patches of a training set (folder or zip), drawn with a fixed seed."""
    from training import dataset as dataset_lib
    if not os.path.exists(path):
        raise dnnlib.util.UserError(f"reference patches: '{path}' does not exist (give the GAN's training patches "
                                    f"with --reference-data)")
    ds = dataset_lib.ImageFolderDataset(path=path)
    try:
        if ds.resolution != resolution or ds.num_channels != 3:
            raise dnnlib.util.UserError(f'reference patches: {path} holds {ds.resolution}x{ds.resolution} images with '
                                        f'{ds.num_channels} channels; the network needs {resolution}x{resolution} RGB')
        picked = np.sort(np.random.RandomState(seed).choice(len(ds), size=min(count, len(ds)), replace=False))
        return np.stack([ds[int(i)][0].transpose(1, 2, 0) for i in picked])
    finally:
        ds.close()


def load_reference(network, D, reference_data=None, stain_normalize='none', resolution=None):
    """(reference patches or None, stain normaliser or None, the path they came from or None).

    Training patches are read only where needed: D has minibatch-stddev groups, or stain normalisation is on. They
    come from reference_data, else from the path the network pickle records."""
    stain.check_method(stain_normalize)
    needed = (D is not None and reference_group.references_needed(D) > 0) or stain_normalize != 'none'
    if not needed:
        return None, None, None
    path = reference_data or training_data_of(network)
    if path is None:
        raise dnnlib.util.UserError(f"'{network}' does not record its training data; give the GAN's training patches "
                                    f"with --reference-data (needed for the discriminator's minibatch-stddev groups"
                                    f"{' and the stain normaliser' if stain_normalize != 'none' else ''})")
    reference = reference_patches(path, resolution)
    return reference, stain.fit(stain_normalize, reference), path


def evaluate(network, data, outdir, method='encoder', encoder=None, kappa=1.0, num_steps=None, batch_size=16,
             device=None, progress=True, score=None, reference_data=None, stain_normalize='none',
             val_fraction=VAL_FRACTION, val_quantile=VAL_QUANTILE):
    """Score a labelled dataset and write scores.csv, roc.png, fig4.png and metrics.json; returns the metrics dict.

    AUROC, AUPR and F1_oracle cover every patch; F1_at_threshold (and the `threshold` block) the patches outside
    the validation split, with the threshold at the val_quantile of the validation normals' scores."""
    score = default_score(method) if score is None else score
    stain.check_method(stain_normalize)
    G, D, E = load_models(network, method, encoder, device, score)
    names, images, labels = load_patches(data, G.img_resolution, labelled=True)
    if len(np.unique(labels)) < 2:
        raise dnnlib.util.UserError(f'{data} must hold both normal (0) and tumour (1) patches')
    reference, normalizer, reference_path = load_reference(network, D, reference_data, stain_normalize,
                                                           G.img_resolution)
    images = stain.apply(normalizer, images)
    result = score_patches(G, images, method=method, E=E, D=D, kappa=kappa, num_steps=num_steps,
                           batch_size=batch_size, progress=progress, score=score, reference=reference)
    found = detection_metrics(labels, result.score)
    validation = validation_split(labels, val_fraction)
    test = ~validation
    threshold = None
    if validation.any() and set(np.unique(labels[test])) == {0, 1}:
        threshold = threshold_metrics(labels[test], result.score[test], result.score[validation], val_quantile)
        threshold.update(num_val_normal=int(validation.sum()), num_test_normal=int((labels[test] == 0).sum()),
                         num_test_tumour=int((labels[test] == 1).sum()))
    found.update(F1_at_threshold=None if threshold is None else threshold['F1'], threshold=threshold,
                 method=method, score=score, num_normal=int((labels == 0).sum()), num_tumour=int((labels == 1).sum()),
                 stain_normalize=stain_normalize,
                 stain_unchanged_patches=None if normalizer is None else int(normalizer.unchanged),
                 reference_data=reference_path, network=str(network),
                 encoder=None if encoder is None else str(encoder), data=str(data))
    from tools import mapping_quality  # does the mapping reconstruct held-out normal patches, or return one average?
    found['mapping_quality'] = mapping_quality.check(images[labels == 0], result.recon[labels == 0],
                                                     device=next(G.parameters()).device)
    cli_utils.make_outdir(outdir)
    write_scores_csv(os.path.join(outdir, 'scores.csv'), names, result, labels, validation)
    plot_roc(os.path.join(outdir, 'roc.png'), labels, result.score, found['AUROC'], title=f'{method}, {score} score: {os.path.basename(str(data))}')
    plot_fig4(os.path.join(outdir, 'fig4.png'), images, result.recon, labels, result.score)
    write_metrics(os.path.join(outdir, 'metrics.json'), found)
    return found


def write_metrics(path, found):
    with dnnlib.util.atomic_write(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(found, f, indent=2)

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
    click.option('--reference-data', metavar='PATH',
                 help='The GAN\'s training patches (folder or zip): the minibatch-stddev reference group and the stain '
                      'target  [default: the path the network pickle records]'),
    click.option('--stain-normalize', type=click.Choice(stain.METHODS), default='none', show_default=True,
                 help=stain.HELP),
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
def score(network, data, outdir, method, score, encoder, kappa, num_steps, batch_size, reference_data,
          stain_normalize, device):
    """Score every patch; writes scores.csv (name, score, residual, features, lpips, critic)."""
    try:
        G, D, E = load_models(network, method, encoder, device, score)
        names, images, _ = load_patches(data, G.img_resolution, labelled=False)
        reference, normalizer, _ = load_reference(network, D, reference_data, stain_normalize, G.img_resolution)
        result = score_patches(G, stain.apply(normalizer, images), method=method, E=E, D=D, kappa=kappa,
                               num_steps=num_steps, batch_size=batch_size, score=score, reference=reference)
        cli_utils.make_outdir(outdir)
        write_scores_csv(os.path.join(outdir, 'scores.csv'), names, result)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))
    print(f'Scored {len(names)} patches (mean score {result.score.mean():.4g}) -> {os.path.join(outdir, "scores.csv")}')

@cli.command(name='evaluate')
@_with_common
@click.option('--val-fraction', type=click.FloatRange(0, 1, max_open=True), default=VAL_FRACTION, show_default=True,
              help='Share of the normal patches held out to set the threshold of F1_at_threshold (not in its test)')
@click.option('--val-quantile', type=click.FloatRange(0, 1), default=VAL_QUANTILE, show_default=True,
              help='Threshold = this quantile of the validation normal patches\' scores')
def evaluate_cmd(network, data, outdir, method, score, encoder, kappa, num_steps, batch_size, reference_data,
                 stain_normalize, device, val_fraction, val_quantile):
    """Score a labelled dataset (0 normal, 1 tumour); print AUROC, AUPR, F1_oracle, F1_at_threshold as one JSON line."""
    try:
        found = evaluate(network, data, outdir, method=method, encoder=encoder, kappa=kappa, num_steps=num_steps,
                         batch_size=batch_size, device=device, score=score, reference_data=reference_data,
                         stain_normalize=stain_normalize, val_fraction=val_fraction, val_quantile=val_quantile)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))
    print(json.dumps(found))

if __name__ == '__main__':
    cli()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
