"""Supervised check of synthetic patches: a DenseNet121 normal-vs-tumour classifier (the paper's Table 2).

The idea (Stepec & Skocaj 2020): train a classifier on real normal and tumour patches, then measure its
accuracy on a real test set and on an equally sized synthesized set (normal patches from a GAN trained on
normal tissue, tumour patches from one trained on tumour tissue). Similar accuracies say the GANs draw the
biology the classifier relies on.

    python -m tools.classifier train --data=train64.zip --outdir=runs/cls64 --epochs=20
    python -m tools.classifier eval --model=runs/cls64/best.pt --real=test64.zip \\
        --normal-network=G_normal.pkl --tumor-network=G_tumor.pkl --num=10000

Labels come from the dataset's dataset.json as dataset_tool.py writes them: 0 = normal, 1 = tumour.
"""

import json
import os
import re
import time

import click
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from tqdm import tqdm

import dnnlib
from tools import cli_utils

CLASS_NAMES = ('normal', 'tumour')
# torchvision's DenseNet expects ImageNet-normalised RGB whether or not ImageNet weights are used.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = 'histosynth-densenet121-v1'

#----------------------------------------------------------------------------
# Data.

def open_labelled_dataset(path):
    """A labelled patch dataset (zip or folder) whose labels are exactly 0 (normal) and 1 (tumour)."""
    from training.dataset import ImageFolderDataset
    if not os.path.exists(path):
        raise dnnlib.util.UserError(f"dataset '{path}' does not exist")
    dataset = ImageFolderDataset(path=path, use_labels=True)
    if not dataset.has_labels:
        raise dnnlib.util.UserError(f"'{path}' has no labels: write it with dataset_tool.py and a dataset.json "
                                    "(0 normal, 1 tumour)")
    labels = np.asarray(dataset._get_raw_labels())
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise dnnlib.util.UserError(f"'{path}': labels must be integer classes (0 normal, 1 tumour), "
                                    f"not {labels.dtype} of shape {list(labels.shape)}")
    unknown = sorted(set(labels.tolist()) - {0, 1})
    if unknown:
        raise dnnlib.util.UserError(f"'{path}': labels must be 0 (normal) or 1 (tumour); found {unknown}")
    if dataset.image_shape[0] != 3:
        raise dnnlib.util.UserError(f"'{path}': RGB patches expected, the images have {dataset.image_shape[0]} channel(s)")
    return dataset, labels.astype(np.int64)

def class_counts(labels):
    return [int((labels == k).sum()) for k in range(len(CLASS_NAMES))]

def split_train_val(labels, val_split, seed):
    """Stratified index split with a fixed seed, so a resumed or repeated run validates on the same patches."""
    from sklearn.model_selection import train_test_split
    indices = np.arange(len(labels))
    if val_split <= 0:
        return indices, indices[:0]
    try:
        train_idx, val_idx = train_test_split(indices, test_size=val_split, random_state=seed, stratify=labels)
    except ValueError as err:
        raise dnnlib.util.UserError(f'cannot split {len(labels)} patches ({class_counts(labels)} per class) with '
                                    f'--val-split={val_split}: {err}')
    return np.sort(train_idx), np.sort(val_idx)

def iterate_batches(dataset, indices, batch_size, workers, generator=None):
    """Yield (uint8 [N, 3, H, W], int64 [N] dataset indices) in order, or shuffled with `generator`."""
    if generator is not None:
        indices = indices[torch.randperm(len(indices), generator=generator).numpy()]
    subset = torch.utils.data.Subset(dataset, indices.tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         persistent_workers=False)
    start = 0
    for images, _onehot in loader:
        yield images, torch.as_tensor(indices[start:start + len(images)])
        start += len(images)

#----------------------------------------------------------------------------
# Model.

def build_model():
    """torchvision's DenseNet121 with a two-class head, randomly initialised."""
    return torchvision.models.densenet121(weights=None, num_classes=len(CLASS_NAMES))

# Old ImageNet checkpoints name layers 'denselayer1.norm.1.weight'; current torchvision modules say 'norm1'.
_OLD_DENSENET_KEY = re.compile(r'^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$')

def load_pretrained(model, source):
    """Copy ImageNet DenseNet121 weights (path or URL, cached by dnnlib.util.open_url) into `model`, except the head."""
    try:
        with dnnlib.util.open_url(source, verbose=True) as f:
            state = torch.load(f, map_location='cpu', weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise dnnlib.util.UserError(f"cannot read pretrained weights '{source}': {err}")
    if isinstance(state, dict) and 'model' in state and isinstance(state['model'], dict):
        state = state['model']
    renamed = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2).replace('.', '', 1) if match else key] = value
    backbone = {k: v for k, v in renamed.items() if not k.startswith('classifier.')}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    missing = [k for k in missing if not k.startswith('classifier.')]
    if missing or unexpected:
        raise dnnlib.util.UserError(f"'{source}' is not a DenseNet121 state dict "
                                    f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {(missing + unexpected)[:2]})")
    return model

def normalise(images_uint8, device):
    """uint8 NCHW RGB -> float NCHW normalised as torchvision's ImageNet models expect."""
    x = images_uint8.to(device=device, dtype=torch.float32) / 255
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std

def augment(images_uint8, generator):
    """Histology augmentation on a uint8 batch: flips and 90-degree turns (no canonical orientation) and mild
    brightness/contrast/saturation jitter (stain and scanner variation). Geometry that resamples is left out
    because nuclear size and shape carry the diagnosis."""
    x = images_uint8.float() / 255
    n = x.shape[0]
    rnd = torch.rand([n, 6], generator=generator)
    out = []
    for i in range(n):
        img = x[i]
        if rnd[i, 0] < 0.5:
            img = img.flip(2)
        img = torch.rot90(img, int(rnd[i, 1] * 4) % 4, dims=(1, 2))
        out.append(img)
    x = torch.stack(out)
    brightness = 1 + (rnd[:, 2] - 0.5) * 0.2
    contrast = 1 + (rnd[:, 3] - 0.5) * 0.2
    saturation = 1 + (rnd[:, 4] - 0.5) * 0.2
    x = x * brightness.view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * saturation.view(-1, 1, 1, 1) + grey
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)

@torch.no_grad()
def predict(model, batches, device):
    """Class predictions (int64 numpy) for an iterable of uint8 NCHW batches."""
    model.eval()
    preds = []
    for images in batches:
        preds.append(model(normalise(images, device)).argmax(dim=1).cpu())
    return torch.cat(preds).numpy() if preds else np.zeros([0], dtype=np.int64)

def classification_report(y_true, y_pred):
    """Accuracy, per-class recall and the confusion matrix (rows: true class, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, recall_score
    labels = list(range(len(CLASS_NAMES)))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return dict(accuracy=float(accuracy_score(y_true, y_pred)),
                recall={name: float(r) for name, r in zip(CLASS_NAMES, recall)},
                confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
                count=int(len(y_true)))

#----------------------------------------------------------------------------
# Checkpoints: tensors and plain values only, so they load with torch.load(weights_only=True).

def save_checkpoint(path, model, optimizer, epoch, best_accuracy, resolution, options):
    state = dict(format=CHECKPOINT_FORMAT, arch='densenet121', classes=list(CLASS_NAMES), resolution=resolution,
                 epoch=epoch, best_accuracy=best_accuracy, options=options, model=model.state_dict(),
                 optimizer=optimizer.state_dict() if optimizer is not None else None)
    with dnnlib.util.atomic_write(path) as tmp:
        torch.save(state, tmp)

def load_checkpoint(path):
    if not os.path.isfile(path):
        raise dnnlib.util.UserError(f"classifier checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # pickle, zip and tensor errors all mean the same to the user
        raise dnnlib.util.UserError(f"'{path}' is not a classifier checkpoint ({type(err).__name__})")
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise dnnlib.util.UserError(f"'{path}' is not a checkpoint written by 'python -m tools.classifier train'")
    model = build_model()
    model.load_state_dict(state['model'])
    return model, state

#----------------------------------------------------------------------------
# Continuing a run (--resume): outdir is the run.

# Options a continued run may change: its length (the cosine schedule is a function of epoch and epochs).
EXTENDABLE_OPTIONS = ('epochs',)

def resumed_state(outdir, last_path, resume, options, resolution):
    """last.pt's checkpoint to continue from, or None to start; refuses a start over a run and a change of options."""
    from training import run_dirs
    exists = os.path.isfile(last_path)
    if not resume:
        if exists:
            raise dnnlib.util.UserError(f"'{outdir}' already holds a run (last.pt); continue it with --resume "
                                        '(or --resume=auto), or choose another --outdir')
        return None
    if not exists:
        if resume == 'auto':
            print(f"--resume=auto: no run in '{outdir}' yet; starting one")
            return None
        raise dnnlib.util.UserError(f"--resume: '{outdir}' has no last.pt to continue from")
    _, state = load_checkpoint(last_path)
    if state['resolution'] != resolution:
        raise dnnlib.util.UserError(f'--resume: last.pt was trained on {state["resolution"]}px patches, '
                                    f'this dataset has {resolution}px')
    keys = run_dirs.differences(state['options'], options, EXTENDABLE_OPTIONS)
    if keys:
        raise dnnlib.util.UserError(f"--resume: '{outdir}' was trained with other options "
                                    f"({run_dirs.describe_differences(state['options'], options, keys)}); repeat its options")
    print(run_dirs.restart_line('last.pt', f'after epoch {int(state["epoch"])}'))
    return state

def tidy_run_dir(outdir, start_epoch):
    """Temporary files of interrupted writes go, and the stats.jsonl lines of epochs after start_epoch (trained again)."""
    from training import run_dirs
    run_dirs.remove_temporaries(outdir)
    run_dirs.truncate_jsonl(os.path.join(outdir, 'stats.jsonl'), lambda record: record.get('epoch', 0) <= start_epoch)

#----------------------------------------------------------------------------
# Training.

def train_classifier(data, outdir, val_split=0.1, epochs=20, batch=32, lr=1e-3, pretrained=None, seed=0,
                     workers=2, resume=False, device=None):
    """Train DenseNet121 on a labelled patch dataset; keeps best.pt (best validation accuracy) and last.pt.

    resume: False starts a run in outdir (refused when outdir holds one); True continues outdir's run from last.pt;
    'auto' continues it when there is one and starts it otherwise. A finished run is left as it is."""
    device = cli_utils.default_device() if device is None else torch.device(device)
    dataset, labels = open_labelled_dataset(data)
    counts = class_counts(labels)
    if min(counts) == 0:
        missing = CLASS_NAMES[counts.index(0)]
        raise dnnlib.util.UserError(f"'{data}' has only one class ({counts[0]} normal, {counts[1]} tumour "
                                    f"patches): a {missing} class is needed to train a classifier")
    train_idx, val_idx = split_train_val(labels, val_split, seed)
    resolution = int(dataset.resolution)
    options = dict(data=os.path.abspath(data), val_split=val_split, epochs=epochs, batch=batch, lr=lr,
                   pretrained=pretrained, seed=seed)

    torch.manual_seed(seed)  # the initial weights are part of the run: same seed, same network
    model = build_model()
    if pretrained:
        load_pretrained(model, pretrained)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start_epoch, best_accuracy = 0, -1.0
    last_path, best_path = os.path.join(outdir, 'last.pt'), os.path.join(outdir, 'best.pt')
    state = resumed_state(outdir, last_path, resume, options, resolution)
    if state is not None:
        start_epoch, best_accuracy = int(state['epoch']), float(state['best_accuracy'])
        if start_epoch >= epochs:
            print(f"'{outdir}' has finished: {start_epoch} of {epochs} epochs; nothing to do")
            return dict(best_accuracy=best_accuracy, best=best_path, last=last_path)
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        print(f'Resuming after epoch {start_epoch} (best validation accuracy so far {best_accuracy:.4f})')
    cli_utils.make_outdir(outdir)
    tidy_run_dir(outdir, start_epoch)
    print(f'{len(train_idx)} training and {len(val_idx)} validation patches of {resolution}px '
          f'({counts[0]} normal, {counts[1]} tumour in all), device {device}')

    stats_path = os.path.join(outdir, 'stats.jsonl')
    for epoch in range(start_epoch, epochs):
        # One generator per epoch: shuffling and augmentation are a function of (seed, epoch), so a resumed
        # run repeats exactly what an uninterrupted one would do.
        gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
        lr_now = float(lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs)))  # cosine decay per epoch; a python float keeps the checkpoint weights-only
        for group in optimizer.param_groups:
            group['lr'] = lr_now
        model.train()
        t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        bar = tqdm(iterate_batches(dataset, train_idx, batch, workers, generator=gen),
                   total=int(np.ceil(len(train_idx) / batch)), desc=f'epoch {epoch + 1}/{epochs}', leave=False)
        for images, idx in bar:
            target = torch.as_tensor(labels[idx.numpy()], device=device)
            logits = model(normalise(augment(images, gen), device))
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(target)
            correct += int((logits.argmax(dim=1) == target).sum())
            seen += len(target)
            bar.set_postfix(loss=f'{loss_sum / seen:.4f}')
        if not np.isfinite(loss_sum):
            raise dnnlib.util.UserError(f'training loss became {loss_sum} in epoch {epoch + 1}: try a lower --lr')

        eval_idx = val_idx if len(val_idx) else train_idx
        val_pred = predict(model, (img for img, _ in iterate_batches(dataset, eval_idx, batch, workers)), device)
        report = classification_report(labels[eval_idx], val_pred)
        improved = report['accuracy'] > best_accuracy
        if improved:
            best_accuracy = report['accuracy']
            save_checkpoint(best_path, model, None, epoch + 1, best_accuracy, resolution, options)
        record = dict(epoch=epoch + 1, lr=lr_now, train_loss=loss_sum / seen, train_accuracy=correct / seen,
                      val_accuracy=report['accuracy'], val_recall=report['recall'], best=improved,
                      sec=time.time() - t0, timestamp=time.time())
        with open(stats_path, 'a') as f:  # before last.pt: a run killed in between drops the line when it resumes
            f.write(json.dumps(record) + '\n')
        save_checkpoint(last_path, model, optimizer, epoch + 1, best_accuracy, resolution, options)
        print(f'epoch {epoch + 1}/{epochs}  loss {record["train_loss"]:.4f}  train acc {record["train_accuracy"]:.3f}  '
              f'val acc {report["accuracy"]:.3f}{"  (best)" if improved else ""}  {record["sec"]:.0f}s')
    return dict(best_accuracy=best_accuracy, best=best_path, last=last_path)

#----------------------------------------------------------------------------
# Evaluation on real and synthesized patches.

def load_generator(path, resolution, device, what):
    if not path:
        raise dnnlib.util.UserError(f'give {what}')
    G = cli_utils.load_network(path, key='G_ema', device=device)
    if G.img_resolution != resolution or G.img_channels != 3:
        raise dnnlib.util.UserError(f"{what} '{path}' makes {G.img_channels}x{G.img_resolution}x{G.img_resolution} "
                                    f"images; the classifier was trained on 3x{resolution}x{resolution} patches")
    if G.c_dim != 0:
        raise dnnlib.util.UserError(f"{what} '{path}' is conditional; train one GAN per tissue class instead")
    return G

@torch.no_grad()
def synthesize(G, num, batch, seed, device):
    """Yield uint8 NCHW batches of `num` images drawn from G with truncation psi = 1 (the full distribution)."""
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < num:
        n = min(batch, num - done)
        z = torch.randn([n, G.z_dim], generator=gen).to(device)
        c = torch.zeros([n, 0], device=device)
        img = G(z, c, truncation_psi=1, noise_mode='random')
        yield (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu()
        done += n

def table2_markdown(resolution, real_accuracy, synthetic_accuracy):
    return ('| Image size | Real CA | Synthesized CA |\n'
            '|---|---|---|\n'
            f'| {resolution}×{resolution} | {real_accuracy:.4f} | {synthetic_accuracy:.4f} |\n')

def evaluate_classifier(model_path, real, normal_network, tumor_network, num=10000, batch=64, seed=0, workers=2,
                        outdir=None, device=None):
    """Accuracy on a real labelled test set and on `num` synthesized patches per class; writes JSON + Markdown."""
    device = cli_utils.default_device() if device is None else torch.device(device)
    model, state = load_checkpoint(model_path)
    model.to(device)
    resolution = int(state['resolution'])
    dataset, labels = open_labelled_dataset(real)
    if dataset.resolution != resolution:
        raise dnnlib.util.UserError(f"'{real}' has {dataset.resolution}px patches; the classifier was trained on "
                                    f"{resolution}px")
    generators = [load_generator(normal_network, resolution, device, '--normal-network'),
                  load_generator(tumor_network, resolution, device, '--tumor-network')]
    if num < 1:
        raise dnnlib.util.UserError('--num must be at least 1')

    indices = np.arange(len(labels))
    real_pred = predict(model, tqdm((img for img, _ in iterate_batches(dataset, indices, batch, workers)),
                                    total=int(np.ceil(len(indices) / batch)), desc='real', leave=False), device)
    real_report = classification_report(labels, real_pred)

    synth_true, synth_pred = [], []
    for label, G in enumerate(generators):
        batches = tqdm(synthesize(G, num, batch, seed + label, device), total=int(np.ceil(num / batch)),
                       desc=f'synthesized {CLASS_NAMES[label]}', leave=False)
        synth_pred.append(predict(model, batches, device))
        synth_true.append(np.full([num], label, dtype=np.int64))
    synth_report = classification_report(np.concatenate(synth_true), np.concatenate(synth_pred))

    result = dict(resolution=resolution, model=os.path.abspath(model_path), real_data=os.path.abspath(real),
                  normal_network=normal_network, tumor_network=tumor_network, num_per_class=num, seed=seed,
                  real=real_report, synthesized=synth_report)
    outdir = outdir or os.path.dirname(os.path.abspath(model_path))
    cli_utils.make_outdir(outdir)
    with dnnlib.util.atomic_write(os.path.join(outdir, 'classifier_eval.json')) as tmp:
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=2)
    with dnnlib.util.atomic_write(os.path.join(outdir, 'table2.md')) as tmp:
        with open(tmp, 'w') as f:
            f.write(table2_markdown(resolution, real_report['accuracy'], synth_report['accuracy']))
    return result

#----------------------------------------------------------------------------
# CLI.

@click.group()
def cli():
    """DenseNet121 normal-vs-tumour classifier: train on real patches, then compare its accuracy on real and
    synthesized patches (Stepec & Skocaj 2020, Table 2)."""

@cli.command('train')
@click.option('--data', required=True, metavar='ZIP|DIR', help='Labelled patch dataset from dataset_tool.py (0 normal, 1 tumour)')
@click.option('--outdir', required=True, metavar='DIR', help='Where best.pt, last.pt and stats.jsonl go')
@click.option('--val-split', type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help='Share of patches held out (stratified, fixed seed) to choose the best epoch; 0 validates on the training set')
@click.option('--epochs', type=click.IntRange(min=1), default=20, show_default=True, help='Passes over the training patches')
@click.option('--batch', type=click.IntRange(min=1), default=32, show_default=True, help='Patches per optimiser step')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help='Adam learning rate at the start (cosine decay to 0 over the epochs)')
@click.option('--pretrained', metavar='PATH|URL', default=None,
              help='ImageNet DenseNet121 state dict to start from (never fetched unless given); default: from scratch')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the split, shuffling and augmentation')
@click.option('--workers', type=click.IntRange(min=0), default=2, show_default=True, help='DataLoader worker processes')
@click.option('--resume', is_flag=False, flag_value='last', default=None, metavar='[auto]',
              help='Continue the run in OUTDIR from its last.pt (the same options; --epochs may change). --resume=auto: '
                   'continue it if there is one, else start it. A finished run says so and exits 0')
@click.option('--device', default=None, help='torch device (default: cuda if available, else cpu)')
def train_cmd(resume, **kwargs):
    """Train the classifier on real labelled patches.

    \b
    python -m tools.classifier train --data=camelyon64_train.zip --outdir=runs/cls64 --epochs=20
    """
    try:
        if resume not in (None, 'last', 'auto'):
            raise dnnlib.util.UserError(f'--resume takes no value but auto (got {resume})')
        result = train_classifier(resume={None: False, 'last': True}.get(resume, resume), **kwargs)
        print(f'Best validation accuracy {result["best_accuracy"]:.4f}: {result["best"]}')
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))

@cli.command('eval')
@click.option('--model', 'model_path', required=True, metavar='PT', help='Checkpoint from "train" (best.pt)')
@click.option('--real', required=True, metavar='ZIP|DIR', help='Labelled real test patches (0 normal, 1 tumour)')
@click.option('--normal-network', required=True, metavar='PKL', help='GAN trained on normal tissue (.pkl or .safetensors, any family)')
@click.option('--tumor-network', required=True, metavar='PKL', help='GAN trained on tumour tissue')
@click.option('--num', type=click.IntRange(min=1), default=10000, show_default=True, help='Synthesized patches per class')
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Images per forward pass')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the synthesized latents')
@click.option('--workers', type=click.IntRange(min=0), default=2, show_default=True, help='DataLoader worker processes')
@click.option('--outdir', default=None, metavar='DIR', help='Where classifier_eval.json and table2.md go (default: beside --model)')
@click.option('--device', default=None, help='torch device (default: cuda if available, else cpu)')
def eval_cmd(**kwargs):
    """Accuracy on real and on synthesized patches, as JSON and as the paper's Table 2 row.

    \b
    python -m tools.classifier eval --model=runs/cls64/best.pt --real=camelyon64_test.zip \\
        --normal-network=normal64.pkl --tumor-network=tumor64.pkl --num=10000
    """
    try:
        result = evaluate_classifier(**kwargs)
        print(json.dumps(dict(resolution=result['resolution'], real_accuracy=result['real']['accuracy'],
                              synthesized_accuracy=result['synthesized']['accuracy'])))
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))

if __name__ == '__main__':
    cli()  # pylint: disable=no-value-for-parameter
