"""Map image patches back into a generator's latent space (projection) and write the results.

Three ways in:
- `lpips`: the StyleGAN2 projection algorithm (Karras et al. 2020, appendix D). Start at the mean w, optimise w
  (one vector for all layers, or one per layer = W+) and the synthesis noise maps with Adam against the LPIPS
  distance to the target. Families without a mapping network (DCGAN, WGAN-GP, PGAN) optimise z instead.
- `encoder`: one forward pass of a trained encoder (networks/encoder.py, tools/train_encoder.py).
- `hybrid`: the lpips optimisation started from the encoder's latent and from the generator's constant noise
  buffers, so that step 0 is exactly G(E(x)); fewer steps and its own peak learning rate (HYBRID_INITIAL_LR).

Every function works on a whole batch of targets at once; each target has its own latent and noise maps. The noise
maps are optimised only as a regulariser of the search, as in the published projector: the image that comes back
(and is scored, saved and reproduced by `generate.py --projected-w`) is rendered from the latent with the
generator's constant noise buffers, so per-target noise cannot paint an anomaly's texture back in. The image with
the optimised maps comes back separately as `images_noise`.
"""

import contextlib
import io
import math
import os
import zipfile

import numpy as np
import PIL.Image
import torch
import tqdm

import dnnlib
from tools import cli_utils
from tools import lpips as lpips_lib

# Hyperparameters of the published projector.
NUM_W_SAMPLES = 10000       # z samples behind the w statistics
INITIAL_LR = 0.1
LR_RAMPUP = 0.05            # linear ramp-up over this fraction of the steps
LR_RAMPDOWN = 0.25          # cosine ramp-down over this final fraction
W_NOISE_SCALE = 0.05        # exploration noise on w, in units of w_std ...
W_NOISE_RAMP = 0.75         # ... fading quadratically to zero at this fraction of the steps
NOISE_REG_WEIGHT = 1e5
LPIPS_MAX_SIZE = 256        # images are area-downsampled to at most this before LPIPS

METHODS = ('lpips', 'encoder', 'hybrid')
HYBRID_STEPS_DIVISOR = 4    # hybrid default: a quarter of the lpips steps
HYBRID_W_NOISE_SCALE = 0.0  # an encoder start is already close; exploration noise would only push it away
# Peak rate of the hybrid, chosen on held-out NORMAL patches by the error of the scored (constant-noise)
# reconstruction, never by detection (benchmarks/hybrid_lr.py): the demo's GAN of CMU-1-Small-Region at 10 kimg (32 px),
# its izi_f encoder (0.5 kimg), 16 held-out patches, 250 steps; pixel MSE / LPIPS: step 0 (= G(E(x))) 0.1088 / 0.490,
# rate 0.01 0.1151 / 0.262, 0.03 0.0924 / 0.184, 0.1 0.0744 / 0.135, 0.3 0.0643 / 0.130, 1.0 0.1438 / 0.186. With 100 steps
# on 8 patches: 0.003 0.1124 / 0.389, 0.01 0.1266 / 0.319, 0.03 0.1224 / 0.268, 0.1 0.1010 / 0.200 (step 0: 0.1024 /
# 0.488). The published 0.1 was tuned for a start at w_avg.
HYBRID_INITIAL_LR = 0.3
NOISE_INITS = ('random', 'const')

#----------------------------------------------------------------------------
# Latent spaces.

def has_w_space(G):
    return all(hasattr(G, name) for name in ('mapping', 'synthesis', 'num_ws', 'w_dim'))

def latent_shape(G, w_plus=False):
    """Shape of one optimised latent: [num_ws or 1, w_dim] in W, [z_dim] in Z."""
    if has_w_space(G):
        return [G.num_ws if w_plus else 1, G.w_dim]
    return [G.z_dim]

def check_generator(G):
    if getattr(G, 'c_dim', 0) != 0:
        raise dnnlib.util.UserError('the projector works on unconditional networks only; this one has class labels')

@torch.no_grad()
def w_statistics(G, num_samples=NUM_W_SAMPLES, seed=123, batch_size=1000):
    """Mean w [1, 1, w_dim] and the root-mean-square distance of w samples from it (a scalar)."""
    device = next(G.parameters()).device
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim)).to(device, torch.float32)
    c = torch.zeros([batch_size, G.c_dim], device=device)
    w = torch.cat([G.mapping(part, c[:len(part)])[:, :1] for part in z.split(batch_size)])
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = float((w - w_avg).square().sum() / num_samples) ** 0.5
    return w_avg, w_std

def synthesize(G, latent):
    """Images [N, C, R, R] in [-1, 1] from latents: w [N, 1 or num_ws, w_dim] or z [N, z_dim]."""
    if has_w_space(G):
        ws = latent.expand(-1, G.num_ws, -1) if latent.shape[1] == 1 else latent
        return G.synthesis(ws, noise_mode='const')
    c = torch.zeros([latent.shape[0], G.c_dim], device=latent.device)
    return G(latent, c, noise_mode='const')

def full_latent(G, latent):
    """What is saved: w broadcast to [N, num_ws, w_dim] (generate.py --projected-w reads it), or z [N, z_dim]."""
    if has_w_space(G):
        return latent.expand(-1, G.num_ws, -1)
    return latent

def noise_layers(G):
    """Synthesis layers with a `noise_const` buffer (empty for families without noise inputs)."""
    root = getattr(G, 'synthesis', G)
    return [m for m in root.modules() if 'noise_const' in getattr(m, '_buffers', {})]

@contextlib.contextmanager
def per_sample_noise(G, batch_size, generator, init='random'):
    """Give every target its own trainable noise maps [N, 1, H, W] in place of the shared buffers.

    init 'random': fresh N(0, 1) maps (the published projector); 'const': copies of the generator's constant
    buffers, so that before any step the images equal G's noise_mode='const' images."""
    if init not in NOISE_INITS:
        raise ValueError(f'noise init must be one of {NOISE_INITS}, not {init!r}')
    layers = noise_layers(G)
    saved = [layer.noise_const for layer in layers]
    maps = []
    try:
        for layer, buf in zip(layers, saved):
            if init == 'const':
                noise = buf.detach().to(torch.float32).expand(batch_size, 1, *buf.shape[-2:]).clone()
            else:
                noise = torch.randn([batch_size, 1, *buf.shape[-2:]], generator=generator, device=buf.device)
            noise.requires_grad_(True)
            layer.noise_const = noise
            maps.append(noise)
        yield maps
    finally:
        for layer, buf in zip(layers, saved):
            layer.noise_const = buf

def noise_regularisation(maps):
    """Per-sample sum over a pyramid of each map (down to 8x8) of squared 1-pixel-shift autocorrelations."""
    total = 0
    for noise in maps:
        x = noise
        while True:
            total = total + (x * torch.roll(x, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            total = total + (x * torch.roll(x, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            if x.shape[2] <= 8:
                break
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2)
    return total

@torch.no_grad()
def renormalise(maps):
    for noise in maps:
        mean = noise.mean(dim=(1, 2, 3), keepdim=True)
        std = noise.std(dim=(1, 2, 3), keepdim=True)
        noise.sub_(mean).div_(std)

def learning_rate(t, initial_lr=INITIAL_LR):
    """Adam learning rate at progress t in [0, 1]: linear ramp-up, cosine ramp-down."""
    down = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    down = 0.5 - 0.5 * math.cos(down * math.pi)
    return initial_lr * down * min(1.0, t / LR_RAMPUP)

def latent_noise_scale(t, scale=W_NOISE_SCALE):
    return scale * max(0.0, 1.0 - t / W_NOISE_RAMP) ** 2

#----------------------------------------------------------------------------

def project(G, targets, num_steps=1000, w_plus=False, init=None, seed=303, lpips=None, w_stats=None,
            initial_lr=INITIAL_LR, w_noise_scale=W_NOISE_SCALE, noise_reg_weight=NOISE_REG_WEIGHT,
            noise_init='random', on_step=None, progress=True):
    """Optimise one latent per target so that synthesize(G, latent) matches it in LPIPS.

    targets: float [N, C, R, R] in [-1, 1] on G's device. init: optional start latents (encoder output,
    [N, num_ws, w_dim] or [N, z_dim]); default the mean w (W space) or z = 0. noise_init: 'random' or 'const'
    (per_sample_noise). on_step(step, images) sees the images of every step (for videos). Returns
    EasyDict(latent (saved form), images (rendered from latent with G's constant noise: what is scored and what
    generate.py --projected-w reproduces), distance [N] (LPIPS of those images), images_noise (the same latent
    with the optimised noise maps; equal to images for families without noise inputs), history [num_steps, N]
    (LPIPS before each step, with the maps being optimised)).
    """
    check_generator(G)
    device = targets.device
    N = targets.shape[0]
    lpips = lpips if lpips is not None else lpips_lib.load_lpips(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    w_space = has_w_space(G)

    if w_space:
        w_avg, w_std = w_stats if w_stats is not None else w_statistics(G)
        start = w_avg.expand(N, *latent_shape(G, w_plus))
    else:
        w_std = 1.0
        start = torch.zeros([N, G.z_dim], device=device)
    if init is not None:
        start = init.to(device, torch.float32)
        if w_space and not w_plus:
            start = start.mean(dim=1, keepdim=True)
        elif w_space and start.shape[1] == 1:
            start = start.expand(-1, G.num_ws, -1)
    latent = start.detach().clone().requires_grad_(True)

    target_embed = lpips.embed(lpips_lib.area_downsample(targets, LPIPS_MAX_SIZE)).detach()
    history = []
    with per_sample_noise(G, N, gen, init=noise_init) as maps:
        optimizer = torch.optim.Adam([latent] + maps, betas=(0.9, 0.999), lr=initial_lr)
        bar = tqdm.trange(num_steps, desc='projecting', unit='step', disable=not progress, leave=False)
        for step in bar:
            t = step / num_steps
            for group in optimizer.param_groups:
                group['lr'] = learning_rate(t, initial_lr)
            jitter = torch.randn(latent.shape, generator=gen, device=device) * (w_std * latent_noise_scale(t, w_noise_scale))
            images = synthesize(G, latent + jitter)
            if on_step is not None:
                on_step(step, images.detach())
            distance = (lpips.embed(lpips_lib.area_downsample(images, LPIPS_MAX_SIZE)) - target_embed).square().sum(dim=1)
            loss = distance.sum() + noise_reg_weight * noise_regularisation(maps).sum() if maps else distance.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            renormalise(maps)
            history.append(distance.detach())
            bar.set_postfix(dist=f"{float(distance.detach().mean()):.4f}")
        with torch.no_grad():
            images_noise = synthesize(G, latent)
    with torch.no_grad():  # the shared constant buffers are back in place
        images = synthesize(G, latent)
        final = (lpips.embed(lpips_lib.area_downsample(images, LPIPS_MAX_SIZE)) - target_embed).square().sum(dim=1)
    return dnnlib.EasyDict(latent=full_latent(G, latent.detach()), images=images, distance=final,
                           images_noise=images_noise,
                           history=torch.stack(history) if history else torch.zeros([0, N], device=device))

@torch.no_grad()
def encode(G, E, targets):
    """One encoder pass: latents in G's saved form, images and LPIPS-free result fields."""
    latent = E(targets)
    if has_w_space(G) and latent.shape[1] == 1:
        latent = latent.expand(-1, G.num_ws, -1)
    images = synthesize(G, latent)
    return dnnlib.EasyDict(latent=latent, images=images, images_noise=images)

def run_method(G, targets, method='lpips', E=None, num_steps=None, w_plus=False, seed=303, lpips=None,
               w_stats=None, on_step=None, progress=True, measure_distance=True, hybrid_lr=None):
    """Project targets with 'lpips', 'encoder' or 'hybrid'; returns the fields of project().

    hybrid_lr: the hybrid's peak Adam rate (default HYBRID_INITIAL_LR).
    `distance` is the LPIPS distance of the final images. The encoder path alone can skip it
    (measure_distance=False: distance is NaN and VGG16 never runs, which is most of that path's cost).
    """
    if method not in METHODS:
        raise dnnlib.util.UserError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    if method != 'lpips' and E is None:
        raise dnnlib.util.UserError(f'--method={method} needs an encoder (--encoder)')
    skip_lpips = method == 'encoder' and not measure_distance
    if lpips is None and not skip_lpips:
        lpips = lpips_lib.load_lpips(targets.device)
    if method == 'lpips':
        return project(G, targets, num_steps=1000 if num_steps is None else num_steps, w_plus=w_plus, seed=seed,
                       lpips=lpips, w_stats=w_stats, on_step=on_step, progress=progress)
    start = encode(G, E, targets)
    if method == 'encoder':
        if skip_lpips:
            start.distance = torch.full([targets.shape[0]], float('nan'), device=targets.device)
        else:
            with torch.no_grad():
                start.distance = lpips(lpips_lib.area_downsample(start.images, LPIPS_MAX_SIZE),
                                       lpips_lib.area_downsample(targets, LPIPS_MAX_SIZE))
        start.history = start.distance[None]
        if on_step is not None:
            on_step(0, start.images)
        return start
    steps = 1000 // HYBRID_STEPS_DIVISOR if num_steps is None else num_steps
    return project(G, targets, num_steps=steps, w_plus=w_plus or E.w_plus, init=start.latent, seed=seed,
                   lpips=lpips, w_stats=w_stats, initial_lr=HYBRID_INITIAL_LR if hybrid_lr is None else hybrid_lr,
                   w_noise_scale=HYBRID_W_NOISE_SCALE, noise_init='const', on_step=on_step, progress=progress)

#----------------------------------------------------------------------------
# Targets.

def decode_image(data, name):
    """Bytes of an image file -> uint8 RGB HWC; undecodable or truncated files are a one-line UserError."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert('RGB'))
    except (OSError, SyntaxError, ValueError, PIL.UnidentifiedImageError) as err:
        raise dnnlib.util.UserError(f"'{name}' is not a readable image ({type(err).__name__}: {err})") from None

def fit_to_resolution(image, resolution, name=None, verbose=True):
    """Centre-crop to a square and resize (Lanczos) to the network's resolution, saying so when it changes."""
    h, w = image.shape[:2]
    size = min(h, w)
    top, left = (h - size) // 2, (w - size) // 2
    out = image[top:top + size, left:left + size]
    notes = []
    if size != h or size != w:
        notes.append(f'centre-cropped from {w}x{h} to {size}x{size}')
    if size != resolution:
        out = np.asarray(PIL.Image.fromarray(out).resize((resolution, resolution), PIL.Image.LANCZOS))
        notes.append(f'resized to {resolution}x{resolution}')
    if notes and verbose:
        print(f'{name or "target"}: {" and ".join(notes)}')
    return np.ascontiguousarray(out)

def _is_image_name(name):
    PIL.Image.init()
    return os.path.splitext(name)[1].lower() in PIL.Image.EXTENSION

def list_targets(path):
    """[(name, bytes loader)] of an image file, a folder of images (recursive) or a zip; sorted by name."""
    if os.path.isdir(path):
        names = sorted(os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
                       for root, _dirs, files in os.walk(path) for f in files if _is_image_name(f))
        items = [(name, lambda n=name: _read_file(os.path.join(path, n))) for name in names]
    elif os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if not n.endswith('/') and _is_image_name(n))
        items = [(name, lambda n=name: _read_zip_member(path, n)) for name in names]
    elif os.path.isfile(path):
        items = [(os.path.basename(path), lambda: _read_file(path))]
    else:
        raise dnnlib.util.UserError(f"target '{path}' does not exist")
    if not items:
        raise dnnlib.util.UserError(f"no images found in '{path}'")
    return items

def _read_file(path):
    with open(path, 'rb') as f:
        return f.read()

def _read_zip_member(path, name):
    with zipfile.ZipFile(path) as z:
        return z.read(name)

def load_targets(path, resolution, verbose=True):
    """All targets under `path` as (names, uint8 [N, R, R, 3]); every file is checked before any work starts."""
    names, images = [], []
    for name, read in list_targets(path):
        images.append(fit_to_resolution(decode_image(read(), name), resolution, name=name, verbose=verbose))
        names.append(name)
    return names, np.stack(images)

def to_float(images, device):
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] on device."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1

#----------------------------------------------------------------------------
# Outputs.

def residual_map(target, proj):
    """Mean absolute difference over colour channels of two uint8 images, in [0, 1] ([H, W] float)."""
    return np.abs(target.astype(np.float32) - proj.astype(np.float32)).mean(axis=-1) / 255

def heat_map(residual, vmax=0.5, cmap='inferno'):
    """Residual [H, W] in [0, 1] -> uint8 RGB via a matplotlib colour map on a fixed scale (comparable images)."""
    import matplotlib
    colours = matplotlib.colormaps[cmap](np.clip(residual / vmax, 0, 1))[..., :3]
    return (colours * 255 + 0.5).astype(np.uint8)

def psnr(target, proj):
    mse = np.mean((target.astype(np.float64) - proj.astype(np.float64)) ** 2)
    return float('inf') if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))

def save_projection(outdir, target, proj, latent, w_space, proj_noise=None):
    """target.png, proj.png, residual.png and projected_w.npz (w [1, num_ws, w_dim]) or projected_z.npz (z [1, z_dim]).

    proj is the latent's image with G's constant noise (what generate.py --projected-w renders); proj_noise, when
    given, the same latent with the projection's optimised noise maps (proj-noise.png, a picture only)."""
    cli_utils.make_outdir(outdir)
    cli_utils.save_image(target, os.path.join(outdir, 'target.png'))
    cli_utils.save_image(proj, os.path.join(outdir, 'proj.png'))
    if proj_noise is not None:
        cli_utils.save_image(proj_noise, os.path.join(outdir, 'proj-noise.png'))
    cli_utils.save_image(heat_map(residual_map(target, proj)), os.path.join(outdir, 'residual.png'))
    key = 'w' if w_space else 'z'
    with dnnlib.util.atomic_write(os.path.join(outdir, f'projected_{key}.npz')) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, **{key: np.asarray(latent, dtype=np.float32)[None]})

class VideoWriter:
    """Streams frames (target | projection side by side) to an .mp4 with imageio-ffmpeg; renamed into place on close."""

    def __init__(self, path, target, fps=30):
        import imageio_ffmpeg
        self.path = path
        self.target = target
        self._ctx = dnnlib.util.atomic_write(path)
        self._tmp = self._ctx.__enter__()
        h, w = target.shape[:2]
        self._writer = imageio_ffmpeg.write_frames(self._tmp, (2 * w, h), fps=fps, codec='libx264', quality=8,
                                                   macro_block_size=1, output_params=['-f', 'mp4'])
        self._writer.send(None)

    def add(self, proj):
        self._writer.send(np.ascontiguousarray(np.concatenate([self.target, proj], axis=1)))

    def close(self, ok=True):
        self._writer.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError('aborted'), None)

#----------------------------------------------------------------------------
