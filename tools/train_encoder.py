"""Train the izi_f encoder of f-AnoGAN (Schlegl et al. 2019) for a frozen GAN.

Loss per batch of real patches x (the izi_f objective, every family):  MSE(x, G(E(x))) + kappa * MSE(f(G(E(x))),
f(x)),  kappa = 1, where f is the discriminator's last feature layer (`D.features(img, c)` where a family has it;
StyleGAN2: the output of `D.b4.fc`, read with a forward hook). An LPIPS term is opt-in (`--lpips=WEIGHT`, W-space
encoders only). W-space generators (StyleGAN2) get a residual encoder into W or W+ with Adam; z-space generators
(WGAN-GP) get the critic-shaped encoder with tanh into z and RMSProp 5e-5.

A fixed random part of the patches (`--heldout`, 5 % by default) is never trained on: each tick logs the loss on
it (`Heldout/*` in stats.jsonl), and the mapping check of tools/mapping_quality.py (PSNR margin of the
reconstructions over the mean training patch, and their diversity), so a run shows where training flattens and
whether the encoder reconstructs rather than returning one average patch.

Run dir `<outdir>/<id>-encoder-<dataset>/`: stats.jsonl (one line per tick), encoder-snapshot-<kimg>.pkl
(dict with E and what it was trained for) and encoder-state-<kimg>.pt beside it (optimizer and position) so
`--resume` continues exactly where the run stopped.

    python -m tools.train_encoder --network=net.pkl --data=normal.zip --outdir=encoder-runs --kimg=200
"""

import contextlib
import json
import os
import pickle
import re
import shutil
import time

import click
import numpy as np
import torch
import tqdm

import dnnlib
from tools import cli_utils, mapping_quality, projection

#----------------------------------------------------------------------------
# Discriminator features.

@contextlib.contextmanager
def per_image_minibatch_std(D):
    """Minibatch-stddev layers see each image alone, so features and scores do not depend on batch-mates."""
    layers = [m for m in D.modules() if hasattr(m, 'group_size') and type(m).__name__ == 'MinibatchStdLayer']
    saved = [m.group_size for m in layers]
    for m in layers:
        m.group_size = 1
    try:
        yield
    finally:
        for m, size in zip(layers, saved):
            m.group_size = size

def discriminator_outputs(D, img, with_logits=True):
    """(f(img) [N, F], D(img) [N] or None): the feature layer of the anomaly score and, when asked, the logit.
    f is D.features where the family has it (the logit then follows from it by D.logits_from_features; a
    pickle from before that method runs D again), else the output of D.b4.fc (StyleGAN2), captured on the way
    to the logit. Either way one pass gives both."""
    c = torch.zeros([img.shape[0], getattr(D, 'c_dim', 0)], device=img.device)
    with per_image_minibatch_std(D):
        if hasattr(D, 'features'):
            features = D.features(img, c)
            if not with_logits:
                return features.flatten(1), None
            logits = D.logits_from_features(features) if hasattr(D, 'logits_from_features') else D(img, c)
            return features.flatten(1), logits.reshape(img.shape[0])
        layer = getattr(getattr(D, 'b4', None), 'fc', None)
        if layer is None:
            raise dnnlib.util.UserError(f'{type(D).__name__} has neither features() nor b4.fc: no feature layer for the anomaly score')
        captured = []
        handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            logits = D(img, c)
        finally:
            handle.remove()
        return captured[0].flatten(1), (logits.reshape(img.shape[0]) if with_logits else None)

def discriminator_features(D, img):
    """f(img) [N, F] (see discriminator_outputs)."""
    return discriminator_outputs(D, img, with_logits=False)[0]

#----------------------------------------------------------------------------
# Encoders and their snapshots.

def build_encoder(G, D=None, w_plus=False, channel_base=None, channel_max=None):
    """The encoder for G: residual into W (or W+) for W-space generators; for z-space generators a new copy of the
    critic's architecture into z when D has features() (f-AnoGAN), else the DCGAN-style critic stack."""
    from networks import encoder
    if projection.has_w_space(G):
        w_avg = G.mapping.w_avg if hasattr(G.mapping, 'w_avg') else projection.w_statistics(G)[0].reshape(-1)
        kwargs = dict(img_resolution=G.img_resolution, img_channels=G.img_channels, w_dim=G.w_dim, num_ws=G.num_ws,
                      w_plus=w_plus, w_avg=w_avg.detach().cpu().tolist())
        widths = discriminator_widths(D)  # as wide as the critic by default (f-AnoGAN mirrors it), not config-f wide
        widths.update({k: v for k, v in dict(channel_base=channel_base, channel_max=channel_max).items() if v is not None})
        kwargs.update(widths)
        return encoder.ResidualEncoder(**kwargs)
    if w_plus:
        raise dnnlib.util.UserError('--w-plus needs a generator with a W space; this one takes z')
    if D is not None and hasattr(D, 'features') and hasattr(D, 'init_kwargs'):
        trunk = type(D)(*D.init_args, **D.init_kwargs).train().requires_grad_(True)  # same architecture, new weights
        return encoder.MirroredCriticEncoder(trunk=trunk, z_dim=G.z_dim)
    dim = getattr(D, 'dim', None) or (channel_max // 8 if channel_max else 64)
    return encoder.CriticEncoder(img_resolution=G.img_resolution, img_channels=G.img_channels, z_dim=G.z_dim, dim=dim)

def discriminator_widths(D):
    """channel_base / channel_max of a StyleGAN2-style discriminator (empty when D is absent or has no such widths)."""
    init = getattr(D, 'init_kwargs', None) or {}
    return {k: int(init[k]) for k in ('channel_base', 'channel_max') if k in init}

def check_compatible(E, G):
    """One-line UserError unless E produces latents G takes, for G's image size."""
    w_space = projection.has_w_space(G)
    wanted = ('w', G.w_dim, G.num_ws) if w_space else ('z', G.z_dim)
    got = (E.latent_space, E.w_dim, E.num_ws) if E.latent_space == 'w' else (E.latent_space, E.z_dim)
    if got != wanted or E.img_resolution != G.img_resolution or E.img_channels != G.img_channels:
        describe = lambda space, dims, res: f'{space} {dims} at {res}x{res}'
        raise dnnlib.util.UserError(
            f'encoder/network mismatch: the encoder maps {E.img_resolution}x{E.img_resolution} images to '
            f'{describe(got[0], list(got[1:]), E.img_resolution).split(" at")[0]}, the network takes '
            f'{describe(wanted[0], list(wanted[1:]), G.img_resolution)}')

def load_encoder(path, G=None, device='cpu'):
    """E of an encoder snapshot (eval, no gradients, on device); checked against G when given."""
    try:
        with dnnlib.util.open_url(str(path)) as f:
            data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, ValueError, ImportError, AttributeError) as err:
        raise dnnlib.util.UserError(f"'{path}' is not an encoder snapshot ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot read encoder '{path}': {err}") from None
    E = data.get('E', None) if isinstance(data, dict) else None
    if not isinstance(E, torch.nn.Module) or not hasattr(E, 'latent_space'):
        raise dnnlib.util.UserError(f"'{path}' is not an encoder snapshot (no encoder E in it)")
    if G is not None:
        check_compatible(E, G)
    return E.eval().requires_grad_(False).to(device)

def snapshot_paths(run_dir, cur_nimg):
    tag = f'{cur_nimg // 1000:06d}' + (f'.{cur_nimg % 1000:03d}' if cur_nimg % 1000 else '')  # kimg, exact
    return os.path.join(run_dir, f'encoder-snapshot-{tag}.pkl'), os.path.join(run_dir, f'encoder-state-{tag}.pt')

def state_path_for(snapshot_pkl):
    folder, name = os.path.split(snapshot_pkl)
    m = re.fullmatch(r'encoder-snapshot-(\d+(?:\.\d+)?)\.pkl', name)
    return os.path.join(folder, f'encoder-state-{m.group(1)}.pt') if m else None

#----------------------------------------------------------------------------
# Training.

def default_optimizer(E):
    """Adam 1e-4 for the W encoder; RMSProp 5e-5 for the critic-shaped z encoder (f-AnoGAN)."""
    if E.latent_space == 'z':
        return dnnlib.EasyDict(class_name='torch.optim.RMSprop', lr=5e-5)
    return dnnlib.EasyDict(class_name='torch.optim.Adam', lr=1e-4, betas=(0.9, 0.999))

def encoder_loss(G, D, E, real, kappa=1.0, lpips=None, lpips_weight=0.0):
    """EasyDict of the loss terms for a real batch float [N, C, R, R] in [-1, 1] (total in `loss`)."""
    return reconstruction_loss(D, real, projection.synthesize(G, E(real)), kappa, lpips, lpips_weight)

def reconstruction_loss(D, real, recon, kappa=1.0, lpips=None, lpips_weight=0.0):
    """The terms of encoder_loss for given reconstructions: image (pixel MSE), features (D-feature MSE), lpips
    when an LPIPS network is given, and loss = image + kappa * features (+ lpips_weight * lpips)."""
    terms = dnnlib.EasyDict()
    terms.image = (recon - real).square().mean()
    with torch.no_grad():
        real_features = discriminator_features(D, real)
    terms.features = (discriminator_features(D, recon) - real_features).square().mean()
    terms.loss = terms.image + kappa * terms.features
    if lpips is not None:
        terms.lpips = lpips(projection.lpips_lib.area_downsample(recon, projection.LPIPS_MAX_SIZE),
                            projection.lpips_lib.area_downsample(real, projection.LPIPS_MAX_SIZE)).mean()
        terms.loss = terms.loss + lpips_weight * terms.lpips
    return terms

HELDOUT_SEED = 0           # the held-out split does not follow --seed: runs with other seeds are judged on the same patches
MAX_HELDOUT = 1024         # at most this many held-out patches (they are all scored every tick)
MEAN_IMAGE_SAMPLES = 4096  # training patches averaged into the mean training patch

def split_heldout(num_images, fraction):
    """(training indices, held-out indices), both sorted: a fixed random `fraction` of num_images (at least one
    when fraction > 0, at most MAX_HELDOUT) is held out; the same split for every seed and every resume."""
    if fraction <= 0:
        return np.arange(num_images), np.arange(0)
    count = min(max(int(round(num_images * fraction)), 1), MAX_HELDOUT)
    if count >= num_images:
        raise dnnlib.util.UserError(f'--heldout={fraction:g} of {num_images} patches leaves nothing to train on')
    order = np.random.RandomState(HELDOUT_SEED).permutation(num_images)
    return np.sort(order[count:]), np.sort(order[:count])

def read_images(dataset, indices):
    """uint8 [N, C, R, R] of the dataset's images at `indices`."""
    return torch.from_numpy(np.stack([dataset[int(idx)][0] for idx in indices])) if len(indices) else None

def mean_image(dataset, indices):
    """The mean of the dataset's images at `indices`, [R, R, C] float64 on the 0..255 scale (summed one at a time,
    so thousands of 512x512 patches need no more memory than one)."""
    total = None
    for idx in indices:
        image = dataset[int(idx)][0].astype(np.float64)
        total = image if total is None else total + image
    return (total / len(indices)).transpose(1, 2, 0)

def heldout_row(G, D, E, heldout, constant, kappa, lpips, lpips_weight, batch_size):
    """stats.jsonl fields for the held-out patches uint8 [N, C, R, R]: the mean of each loss term, and the mapping
    check against the constant image (mean training patch, [R, R, C] on 0..255): PSNR, its margin, diversity."""
    device = next(E.parameters()).device
    was_training = E.training
    E.eval()
    sums, recons = {}, []
    with torch.no_grad():
        for real in heldout.split(batch_size):
            real = real.to(device).to(torch.float32) / 127.5 - 1
            recon = projection.synthesize(G, E(real))
            for key, value in reconstruction_loss(D, real, recon, kappa, lpips, lpips_weight).items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(real)
            recons.append(cli_utils.images_to_uint8(recon.clamp(-1, 1)))
    E.train(was_training)
    row = {f'Heldout/{k}': v / len(heldout) for k, v in sums.items()}
    quality = mapping_quality.mapping_quality(heldout.permute(0, 2, 3, 1).numpy(), np.concatenate(recons), constant)
    row.update({'Heldout/psnr': quality['psnr_recon'], 'Heldout/psnr_mean_image': quality['psnr_constant'],
                'Heldout/psnr_margin': quality['psnr_margin'], 'Heldout/diversity_ratio': quality['diversity_ratio']})
    return row

def tick_line(row):
    """The line printed per tick: training and held-out loss, held-out PSNR, its margin and the diversity ratio."""
    show = lambda key, spec: 'n/a' if row.get(key) is None else format(row[key], spec)  # noqa: E731
    return (f'kimg {row["kimg"]:<8g} loss {show("Loss/loss", ".4f")}  held-out {show("Heldout/loss", ".4f")}  '
            f'PSNR {show("Heldout/psnr", ".2f")} dB ({show("Heldout/psnr_margin", "+.2f")} over the mean patch)  '
            f'diversity {show("Heldout/diversity_ratio", ".2f")}')

def train_encoder(network, data, run_dir, kimg=100, batch_size=16, kappa=1.0, lpips_weight=0.0, w_plus=False,
                  tick_kimg=1.0, snap_ticks=10, seed=0, resume=None, workers=2, device=None, encoder_kwargs=None,
                  lr=None, progress=True, heldout=0.05):
    """Train E for `kimg` thousand images; writes stats.jsonl and snapshots into run_dir. Returns the last snapshot path."""
    from training import dataset as dataset_lib
    device = torch.device(device) if device is not None else cli_utils.default_device()
    G = cli_utils.load_network(network, key='G_ema', device=device)
    D = cli_utils.load_network(network, key='D', device=device)
    projection.check_generator(G)
    training_set = dataset_lib.ImageFolderDataset(path=data)
    if training_set.resolution != G.img_resolution or training_set.num_channels != G.img_channels:
        raise dnnlib.util.UserError(f'{data} holds {training_set.resolution}x{training_set.resolution} images with '
                                    f'{training_set.num_channels} channels; the network makes {G.img_resolution}x'
                                    f'{G.img_resolution} with {G.img_channels}')

    cur_nimg = 0
    state = None
    if resume is not None:
        E = load_encoder(resume, G, device=device).train().requires_grad_(True)
        spath = state_path_for(resume)
        if spath is None or not os.path.isfile(spath):
            raise dnnlib.util.UserError(f'{resume} has no encoder-state file beside it; cannot resume exactly')
        state = torch.load(spath, map_location=device, weights_only=True)
        cur_nimg = int(state['cur_nimg'])
        if int(state['batch_size']) != batch_size:
            raise dnnlib.util.UserError(f'{resume} was trained with --batch={state["batch_size"]}; an exact resume needs the same')
        if float(state.get('heldout', 0.0)) != heldout:
            raise dnnlib.util.UserError(f'{resume} was trained with --heldout={state.get("heldout", 0.0):g}; an exact resume needs the same')
    else:
        torch.manual_seed(seed)
        E = build_encoder(G, D, w_plus=w_plus, **(encoder_kwargs or {})).to(device).train()
    opt_spec = default_optimizer(E)
    if lr is not None:
        opt_spec.lr = lr
    optimizer = dnnlib.util.construct_class_by_name(E.parameters(), **opt_spec)
    if state is not None:
        optimizer.load_state_dict(state['optimizer'])
    lpips = projection.lpips_lib.load_lpips(device) if E.latent_space == 'w' and lpips_weight > 0 else None

    train_idx, heldout_idx = split_heldout(len(training_set), heldout)
    heldout_images = read_images(training_set, heldout_idx)
    mean_idx = train_idx[np.random.RandomState(HELDOUT_SEED).permutation(len(train_idx))[:MEAN_IMAGE_SAMPLES]]
    mean_patch = mean_image(training_set, mean_idx)
    sampler = dataset_lib.ResumableSampler(len(train_idx), seed=seed, start=cur_nimg)
    training_set.close()  # forked workers must open their own zip handle, not share one file offset
    loader = iter(torch.utils.data.DataLoader(torch.utils.data.Subset(training_set, train_idx.tolist()), sampler=sampler,
                                              batch_size=batch_size, num_workers=workers,
                                              generator=torch.Generator()))  # own generator: global RNG untouched
    os.makedirs(run_dir, exist_ok=True)
    total = int(kimg * 1000)
    tick_nimg = max(int(tick_kimg * 1000), 1)
    sums, count, tick_start, cur_tick = {}, 0, time.time(), cur_nimg // tick_nimg
    tidy_run_dir(run_dir, cur_tick)  # what a killed process left in a run continued in place
    last_pkl = resume
    bar = tqdm.tqdm(total=total, initial=min(cur_nimg, total), unit='img', desc='encoder', disable=not progress)
    with open(os.path.join(run_dir, 'stats.jsonl'), 'at') as stats:
        while cur_nimg < total:
            images, _labels = next(loader)
            real = images.to(device).to(torch.float32) / 127.5 - 1
            terms = encoder_loss(G, D, E, real, kappa=kappa, lpips=lpips, lpips_weight=lpips_weight)
            if not torch.isfinite(terms.loss):
                raise dnnlib.util.UserError(f'encoder loss became {float(terms.loss.detach())} at image {cur_nimg}; '
                                            f'last good snapshot: {last_pkl or "none"}')
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            optimizer.step()
            cur_nimg += batch_size
            bar.update(batch_size)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            bar.set_postfix(loss=f'{sums["loss"] / count:.4f}')

            done = cur_nimg >= total
            if not done and cur_nimg < (cur_tick + 1) * tick_nimg:
                continue
            cur_tick += 1
            now = time.time()
            row = {f'Loss/{k}': v / count for k, v in sums.items()}
            row.update(kimg=cur_nimg / 1000, tick=cur_tick, sec_per_kimg=(now - tick_start) / (count * batch_size) * 1000,
                       timestamp=now)
            if heldout_images is not None:
                row.update(heldout_row(G, D, E, heldout_images, mean_patch, kappa, lpips, lpips_weight, batch_size))
                if progress:
                    bar.write(tick_line(row))
            stats.write(json.dumps(row) + '\n')
            stats.flush()
            sums, count, tick_start = {}, 0, time.time()  # held-out scoring stays out of sec_per_kimg
            if done or cur_tick % snap_ticks == 0:
                last_pkl = save_snapshot(run_dir, E, optimizer, cur_nimg, batch_size, network, data, kappa, lpips_weight,
                                         heldout)
    bar.close()
    return last_pkl

def save_snapshot(run_dir, E, optimizer, cur_nimg, batch_size, network, data, kappa, lpips_weight, heldout=0.0):
    pkl, state = snapshot_paths(run_dir, cur_nimg)
    E_copy = pickle.loads(pickle.dumps(E)).eval().requires_grad_(False).cpu()
    snapshot = dict(E=E_copy, network=str(network), data=str(data), kappa=kappa, lpips_weight=lpips_weight, cur_nimg=cur_nimg,
                    heldout=heldout)
    with dnnlib.util.atomic_write(state) as tmp:
        torch.save(dict(optimizer=optimizer.state_dict(), cur_nimg=cur_nimg, batch_size=batch_size, heldout=heldout), tmp)
    with dnnlib.util.atomic_write(pkl) as tmp:
        with open(tmp, 'wb') as f:
            pickle.dump(snapshot, f)
    return pkl

def make_run_dir(outdir, data):
    cli_utils.make_outdir(outdir)
    ids = [int(m.group()) for m in (re.match(r'^\d+', x) for x in os.listdir(outdir)) if m]
    name = os.path.splitext(os.path.basename(os.path.normpath(data)))[0]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-encoder-{name}')

#----------------------------------------------------------------------------
# Continuing a run in its own folder (--resume=DIR, --resume=auto).

ENCODER_OPTIONS = 'encoder_options.json'
# Options free to change between restarts of one run; --resume=DIR may also change the length.
REPORTING_OPTIONS = ('snap_ticks', 'workers', 'device', 'resume_pkl')
EXTENDABLE_OPTIONS = ('kimg',)

def tidy_run_dir(run_dir, cur_tick):
    """Delete temporary files of interrupted writes and states whose pickle never arrived; keep the stats.jsonl
    lines of ticks up to cur_tick (the later ones are trained again)."""
    from training import run_dirs
    run_dirs.remove_temporaries(run_dir)
    for name in os.listdir(run_dir):
        match = re.fullmatch(r'encoder-state-(.+)\.pt', name)
        if match and not os.path.isfile(os.path.join(run_dir, f'encoder-snapshot-{match.group(1)}.pkl')):
            os.remove(os.path.join(run_dir, name))
    run_dirs.truncate_jsonl(os.path.join(run_dir, 'stats.jsonl'), lambda row: row.get('tick', 0) <= cur_tick)

def latest_snapshot(run_dir):
    """(images trained, encoder-snapshot pickle) of the run's newest snapshot with its state, or (0, None)."""
    found = [(0, None)]
    for name in os.listdir(run_dir):
        match = re.fullmatch(r'encoder-snapshot-(\d+)(?:\.(\d+))?\.pkl', name)
        path = os.path.join(run_dir, name)
        if match and os.path.isfile(state_path_for(path)):
            found.append((int(match.group(1)) * 1000 + int(match.group(2) or 0), path))
    return max(found)

def choose_run(outdir, options, resume):
    """(run dir, snapshot to resume from or None, message when the run has finished, the pickle the run started from)
    for --resume=auto or a run dir.

    auto: the newest unfinished run in outdir whose encoder_options.json matches `options` (all but snap, workers,
    device), else a new run dir. A run dir: continued in place with the same options (a different --kimg allowed)."""
    from training import run_dirs
    finished = lambda path, kimg: latest_snapshot(path)[0] >= int(kimg * 1000)
    if resume == 'auto':
        same = [path for path in run_dirs.list_runs(outdir)
                if (stored := run_dirs.read_options(os.path.join(path, ENCODER_OPTIONS))) is not None
                and not run_dirs.differences(stored, options, REPORTING_OPTIONS)]
        unfinished, done = run_dirs.newest_unfinished(same, lambda path: finished(path, options['kimg']))
        run_dir = unfinished or done
        if run_dir is None:
            run_dir = make_run_dir(outdir, options['data'])
            print(f'--resume=auto: no encoder run with these options in {outdir}; starting {run_dir}')
            return run_dir, None, None, None
        if unfinished:
            print(f'--resume=auto: continuing {run_dir}')
    else:
        run_dir = resume
        stored = run_dirs.read_options(os.path.join(run_dir, ENCODER_OPTIONS))
        if stored is None:
            raise dnnlib.util.UserError(f'--resume: {run_dir} is not an encoder run dir (no {ENCODER_OPTIONS}); '
                                        'give an encoder-snapshot-*.pkl to start a new run from it')
        keys = run_dirs.differences(stored, options, REPORTING_OPTIONS + EXTENDABLE_OPTIONS)
        if keys:
            raise dnnlib.util.UserError(f'--resume: {run_dir} was trained with other options '
                                        f'({run_dirs.describe_differences(stored, options, keys)}); repeat its options')
    origin = run_dirs.read_options(os.path.join(run_dir, ENCODER_OPTIONS)).get('resume_pkl')
    nimg, pkl = latest_snapshot(run_dir)
    if nimg >= int(options['kimg'] * 1000):
        return run_dir, pkl, f'{run_dir} has finished: {nimg / 1000:g} of {options["kimg"]:g} kimg; nothing to do', origin
    print(run_dirs.restart_line(os.path.basename(pkl) if pkl else 'the start', f'kimg {nimg / 1000:.3f}'))
    return run_dir, pkl or origin, None, origin

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', help='Frozen GAN snapshot (.pkl or .safetensors) with G_ema and D', required=True)
@click.option('--data', help='Training patches (normal tissue): folder or zip, as for train.py', required=True)
@click.option('--outdir', help='Parent folder of the run dir', required=True, metavar='DIR')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=100, show_default=True, help='Training length in thousands of images')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=16, show_default=True, help='Images per step')
@click.option('--kappa', type=click.FloatRange(min=0), default=1.0, show_default=True, help='Weight of the discriminator-feature term')
@click.option('--lpips', 'lpips_weight', type=click.FloatRange(min=0), default=0.0, show_default=True, help='Weight of an LPIPS term added to the izi_f objective (opt-in; W-space encoders only)')
@click.option('--heldout', type=click.FloatRange(min=0, max=0.5), default=0.05, show_default=True, help='Fraction of the patches never trained on, scored every tick (Heldout/* in stats.jsonl; at most 1024; 0 = none)')
@click.option('--w-plus', is_flag=True, help='Predict one w per synthesis layer (W+)')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), help='Learning rate  [default: Adam 1e-4 for W, RMSProp 5e-5 for z]')
@click.option('--tick', 'tick_kimg', type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help='kimg between stats.jsonl lines')
@click.option('--snap', 'snap_ticks', type=click.IntRange(min=1), default=10, show_default=True, help='Ticks between snapshots')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the initial weights and the data order')
@click.option('--resume', help='auto: continue the newest unfinished run in --outdir with the same options (all but --snap, '
              '--workers, --device), or start one. A run dir: continue it in place from its latest snapshot (--kimg may '
              'change). A pickle: a new run from that encoder-snapshot-*.pkl (its state file must sit beside it)',
              metavar='auto|DIR|PKL')
@click.option('--workers', type=click.IntRange(min=0), default=2, show_default=True, help='DataLoader worker processes')
@click.option('--device', help='torch device  [default: cuda if available]')
def main(network, data, outdir, kimg, batch_size, kappa, lpips_weight, heldout, w_plus, lr, tick_kimg, snap_ticks, seed, resume, workers, device):
    """Train an encoder from images to the latent space of a frozen GAN (f-AnoGAN izi_f).

    \b
    python -m tools.train_encoder --network=network-snapshot-000800.pkl --data=normal.zip --outdir=encoder-runs
    """
    run_dir = None
    try:
        options = dict(network=str(network), data=str(data), kimg=kimg, batch_size=batch_size, kappa=kappa,
                       lpips_weight=lpips_weight, heldout=heldout, w_plus=w_plus, lr=lr, tick_kimg=tick_kimg,
                       snap_ticks=snap_ticks, seed=seed, workers=workers, device=device)
        if resume == 'auto' or (resume is not None and os.path.isdir(resume)):
            run_dir, resume, finished, origin = choose_run(outdir, options, resume)
            if finished:
                print(finished)
                return
        else:
            run_dir, origin = make_run_dir(outdir, data), resume
        print(f'Run dir: {run_dir}')
        os.makedirs(run_dir, exist_ok=True)
        with dnnlib.util.atomic_write(os.path.join(run_dir, ENCODER_OPTIONS)) as tmp, open(tmp, 'w') as f:
            json.dump(dict(options, resume_pkl=origin), f, indent=2)
        last = train_encoder(network, data, run_dir, kimg=kimg, batch_size=batch_size, kappa=kappa, lr=lr,
                             lpips_weight=lpips_weight, w_plus=w_plus, tick_kimg=tick_kimg, snap_ticks=snap_ticks,
                             seed=seed, resume=resume, workers=workers, device=device, heldout=heldout)
    except dnnlib.util.UserError as err:
        if run_dir is not None and os.path.isdir(run_dir) and os.listdir(run_dir) == [ENCODER_OPTIONS]:
            shutil.rmtree(run_dir)  # a refused start leaves nothing behind
        raise click.ClickException(str(err))
    print(f'Last snapshot: {last}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
