"""Helpers shared by the command-line tools: number ranges, network loading, images out, atomic writes."""

import os
import re

import torch

import dnnlib
from dnnlib.images import make_image_grid, save_image  # noqa: F401 (their old home; the CLIs import them from here)

#----------------------------------------------------------------------------

def parse_range(s):
    """'1,2,5-9' -> [1, 2, 5, 6, 7, 8, 9]. Accepts a list of ints unchanged (click may call twice)."""
    if isinstance(s, (list, tuple)):
        return list(s)
    text = str(s).strip()
    if not text:
        raise dnnlib.util.UserError('empty number list (expected e.g. 1,2,5-9)')
    values = []
    for part in text.split(','):
        part = part.strip()
        match = re.fullmatch(r'(\d+)\s*-\s*(\d+)', part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise dnnlib.util.UserError(f"descending range '{part}' in '{text}' (write it as {hi}-{lo})")
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            values.append(int(part))
        else:
            raise dnnlib.util.UserError(f"cannot parse '{part}' in '{text}' (expected non-negative integers and ranges like 1,2,5-9)")
    return values

#----------------------------------------------------------------------------

def default_device():
    """CUDA when available, otherwise the CPU."""
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')

def load_network(network, key='G_ema', device=None):
    """One module (default the EMA generator) of a snapshot given as .pkl / .safetensors path or URL.

    The module comes back in eval mode, without gradients, on `device` (default: default_device()).
    """
    import legacy  # root module; imported here so tools stays importable on its own
    data = legacy.load_network(network)
    module = data.get(key, None)
    if module is None:
        present = [k for k in ('G', 'D', 'G_ema') if data.get(k, None) is not None]
        raise dnnlib.util.UserError(f"'{network}' has no '{key}' network (it has: {', '.join(present) or 'none'})")
    device = default_device() if device is None else torch.device(device)
    return module.eval().requires_grad_(False).to(device)

def check_generator(G, network):
    """One-line error unless G can be driven as G(z, c, ...): it must state z_dim, c_dim and img_resolution."""
    missing = [attr for attr in ('z_dim', 'c_dim', 'img_resolution') if not hasattr(G, attr)]
    if missing:
        raise dnnlib.util.UserError(f"'{network}': its {type(G).__name__} is not a generator these tools can drive "
                                    f"(no {', '.join(missing)})")
    return G

def device_of(module):
    """Where a network's weights live (the CPU for one without any)."""
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device('cpu')

def has_w_space(G):
    """Whether G exposes the intermediate latent space W (StyleGAN, StyleGAN2), not only z -> image."""
    return all(hasattr(G, attr) for attr in ('mapping', 'synthesis', 'num_ws', 'w_dim'))

def class_label(G, class_idx, device):
    """One-hot label [1, c_dim] for a conditional G; zeros [1, 0] for an unconditional one."""
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None:
            raise dnnlib.util.UserError('this network is conditional: choose a class with --class')
        if not 0 <= class_idx < G.c_dim:
            raise dnnlib.util.UserError(f'--class={class_idx} is out of range: the network has classes 0..{G.c_dim - 1}')
        label[:, class_idx] = 1
    elif class_idx is not None:
        print('warning: --class ignored, the network is unconditional')
    return label

#----------------------------------------------------------------------------

def images_to_uint8(img):
    """Float images [N, C, H, W] in [-1, 1] -> uint8 numpy [N, H, W, C] (rounding as the official tools do)."""
    assert img.ndim == 4
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()

def make_outdir(outdir):
    """Create the output folder; one clear error if that is impossible."""
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot create output folder '{outdir}': {err.strerror}")
    return outdir

#----------------------------------------------------------------------------
