"""Does the mapping into the latent space reconstruct, or does it return one average patch for every query?

An anomaly score built on a reconstruction x' of a query x means something only when x' follows x. An encoder
that maps every patch to about the same latent gives nearly the same x' for all of them; its residual then
measures how far a patch lies from that average image (contrast, colour), not whether the GAN can produce it.
Two checks on normal patches the mapping never trained on:

- margin over the best constant image: PSNR and LPIPS of the reconstructions against those of one constant
  image for every query, the mean normal patch (the mean *training* patch where the caller has it, else the
  mean of the queries, which no constant beats in mean squared error). Margin > 0: the reconstructions are
  closer to their queries than the mean patch is;
- diversity: the mean pairwise RMS pixel distance of the reconstructions divided by that of their queries.
  1 when reconstructions differ as much as the patches do, 0 when every query gets the same image.

`tools.anomaly evaluate` writes the result as the "mapping_quality" block of its JSON and prints one warning
line when the margin is missing or not positive, or the reconstructions collapse.
"""

import sys

import numpy as np
import torch

COLLAPSE_RATIO = 0.25   # reconstructions less diverse than this fraction of their queries count as collapsed
MAX_IMAGES = 256        # the check looks at most at this many patches (pairwise distances are quadratic)

#----------------------------------------------------------------------------

def _as_float(images):
    """uint8 or float images [N, R, R, C] (0..255) as float64 numpy [N, R*R*C]."""
    array = np.asarray(images.cpu() if torch.is_tensor(images) else images, dtype=np.float64)
    return array.reshape(array.shape[0], -1)

def psnr(queries, recons):
    """PSNR in dB (peak 255) of each reconstruction against its query: float64 [N]; inf where they are equal."""
    mse = np.mean((_as_float(queries) - _as_float(recons)) ** 2, axis=1)
    with np.errstate(divide='ignore'):
        return 10 * np.log10(255.0 ** 2 / mse)

def mean_pairwise_distance(images):
    """Mean over pairs i < j of the RMS pixel distance between images i and j (0..255 scale)."""
    flat = torch.from_numpy(_as_float(images))
    if flat.shape[0] < 2:
        return float('nan')
    distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    upper = torch.triu_indices(flat.shape[0], flat.shape[0], offset=1)
    return float(distances[upper[0], upper[1]].mean())

def lpips_distance(lpips, queries, images, device='cpu', batch_size=64):
    """LPIPS of each image against its query (uint8 [N, R, R, 3]), as the projector measures it: float64 [N]."""
    from tools import projection
    found = []
    for start in range(0, len(queries), batch_size):
        a = projection.to_float(np.asarray(queries[start:start + batch_size]), device)
        b = projection.to_float(np.asarray(images[start:start + batch_size]), device)
        with torch.no_grad():
            found.append(lpips(projection.lpips_lib.area_downsample(b, projection.LPIPS_MAX_SIZE),
                               projection.lpips_lib.area_downsample(a, projection.LPIPS_MAX_SIZE)).double().cpu().numpy())
    return np.concatenate(found)

#----------------------------------------------------------------------------

def mapping_quality(queries, recons, constant=None, lpips=None, device='cpu', max_images=MAX_IMAGES,
                    collapse_ratio=COLLAPSE_RATIO):
    """The check on normal query patches and their reconstructions, both uint8 [N, R, R, 3] in the same order.

    constant: the constant image to beat, [R, R, 3] on the 0..255 scale (default: the mean of the queries).
    lpips: an LPIPS network (tools.lpips.load_lpips) for the perceptual margin; without it those fields are None.
    Uses the first `max_images` patches. Returns a JSON-ready dict; `warning` is None when the mapping passes.
    """
    queries, recons = np.asarray(queries)[:max_images], np.asarray(recons)[:max_images]
    if queries.shape != recons.shape or queries.ndim != 4:
        raise ValueError(f'queries and reconstructions must be [N, R, R, C] of one shape; got {queries.shape} and {recons.shape}')
    found = dict(num_images=int(len(queries)), constant='mean training patch' if constant is not None else 'mean of the queries')
    if len(queries) < 2:
        found.update(psnr_recon=None, psnr_constant=None, psnr_margin=None, psnr_wins=None, lpips_recon=None,
                     lpips_constant=None, lpips_margin=None, diversity_queries=None, diversity_recons=None,
                     diversity_ratio=None, collapsed=None)
        found['warning'] = warning(found)
        return found
    constant = queries.astype(np.float64).mean(axis=0) if constant is None else np.asarray(constant, dtype=np.float64)
    if constant.shape != queries.shape[1:]:
        raise ValueError(f'the constant image must be {list(queries.shape[1:])}; got {list(constant.shape)}')
    flat = np.broadcast_to(constant, queries.shape)
    psnr_recon, psnr_constant = psnr(queries, recons), psnr(queries, flat)
    with np.errstate(invalid='ignore'):
        margin = float(np.mean(psnr_recon - psnr_constant))  # inf for an exact reconstruction, NaN if inf - inf
    found.update(psnr_recon=float(np.mean(psnr_recon)), psnr_constant=float(np.mean(psnr_constant)),
                 psnr_margin=None if np.isnan(margin) else margin, psnr_wins=float(np.mean(psnr_recon > psnr_constant)))
    if lpips is not None:
        const_uint8 = np.broadcast_to(np.clip(np.rint(constant), 0, 255).astype(np.uint8), queries.shape)
        lpips_recon = lpips_distance(lpips, queries, recons, device)
        lpips_constant = lpips_distance(lpips, queries, const_uint8, device)
        found.update(lpips_recon=float(lpips_recon.mean()), lpips_constant=float(lpips_constant.mean()),
                     lpips_margin=float(lpips_constant.mean() - lpips_recon.mean()))
    else:
        found.update(lpips_recon=None, lpips_constant=None, lpips_margin=None)
    diversity_queries, diversity_recons = mean_pairwise_distance(queries), mean_pairwise_distance(recons)
    ratio = diversity_recons / diversity_queries if diversity_queries > 0 else None
    found.update(diversity_queries=diversity_queries, diversity_recons=diversity_recons, diversity_ratio=ratio,
                 collapsed=None if ratio is None else bool(ratio < collapse_ratio))
    found['warning'] = warning(found)
    return found

def warning(quality):
    """One line saying what is wrong with the mapping, or None when the margins are positive and nothing collapsed."""
    problems = []
    if quality.get('psnr_margin') is None:
        problems.append(f'no PSNR margin could be measured ({quality.get("num_images", 0)} normal patches)')
    elif not quality['psnr_margin'] > 0:
        problems.append(f'reconstructions are no closer than the {quality["constant"]} '
                        f'(PSNR margin {quality["psnr_margin"]:+.2f} dB)')
    if quality.get('lpips_margin') is not None and not quality['lpips_margin'] > 0:
        problems.append(f'LPIPS margin {quality["lpips_margin"]:+.3f} over the {quality["constant"]}')
    if quality.get('collapsed'):
        problems.append(f'reconstructions collapse (pairwise distance {quality["diversity_ratio"]:.2f} of the '
                        f'queries\', below {COLLAPSE_RATIO})')
    if not problems:
        return None
    return ('the mapping does not reconstruct held-out normal patches: ' + '; '.join(problems) +
            '. Scores then measure distance from an average patch; train the encoder longer.')

def check(queries, recons, device='cpu', lpips=None, constant=None, file=None):
    """mapping_quality with LPIPS (VGG16 from the asset registry unless given) and the warning printed; the dict."""
    from tools import lpips as lpips_lib
    lpips = lpips_lib.load_lpips(device) if lpips is None and len(queries) >= 2 else lpips
    quality = mapping_quality(queries, recons, constant=constant, lpips=lpips, device=device)
    warn(quality, file=file)
    return quality

def warn(quality, file=None):
    """Print the warning line (if any) to stderr."""
    if quality.get('warning'):
        print(f'Warning: {quality["warning"]}', file=file or sys.stderr)

#----------------------------------------------------------------------------
