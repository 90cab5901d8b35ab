"""Stain normalisation of H&E patches towards the stain of a GAN's training patches (torchstain, numpy backend).

Tissue from two labs or scanners differs in stain colour before it differs in anything else, so an anomaly score
can separate two sources by colour alone. Normalising every query patch to the training set's stain removes most
of that shortcut:
- `reinhard` (Reinhard et al. 2001): each patch's L*a*b* channels are standardised and given the training set's
  mean and standard deviation (so each patch's overall contrast is equalised too);
- `macenko` (Macenko et al. 2009): each patch's two stain vectors are estimated in optical density and its stain
  concentrations re-rendered with the training set's stain vectors and 99th-percentile concentrations.

The target statistics are fitted once on a sample of training patches laid side by side as one image. A patch the
method cannot handle (no stained pixels for Macenko, a flat channel for Reinhard) is left as it is and counted.
"""

import warnings

import numpy as np

import dnnlib

METHODS = ('none', 'reinhard', 'macenko')
HELP = ('Stain normalisation of every scored patch towards the GAN\'s training patches (torchstain): none, reinhard '
        '(L*a*b* mean/std per patch) or macenko (stain vectors per patch)')

#----------------------------------------------------------------------------

def check_method(method):
    if method not in METHODS:
        raise dnnlib.util.UserError(f"unknown stain normalisation '{method}' (choose from {', '.join(METHODS)})")
    return method


def mosaic(patches):
    """uint8 [N, H, W, 3] -> one uint8 image [H, N * W, 3] (the patches side by side)."""
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8 or not len(patches):
        raise dnnlib.util.UserError(f'stain normalisation needs uint8 [N, H, W, 3] patches, got {patches.dtype} '
                                    f'{list(patches.shape)}')
    return np.ascontiguousarray(np.concatenate(list(patches), axis=1))


class StainNormalizer:
    """A torchstain normaliser fitted on training patches, applied patch by patch."""

    def __init__(self, method, target_patches):
        import torchstain
        self.method = check_method(method)
        if method == 'none':
            raise ValueError("'none' needs no normaliser (fit() returns None for it)")
        make = dict(reinhard=torchstain.normalizers.ReinhardNormalizer, macenko=torchstain.normalizers.MacenkoNormalizer)
        self._normalizer = make[method](backend='numpy')
        try:
            self._normalizer.fit(mosaic(target_patches))
        except (ValueError, IndexError, np.linalg.LinAlgError) as err:
            raise dnnlib.util.UserError(f'cannot fit {method} stain normalisation on the training patches '
                                        f'({type(err).__name__}: {err})') from None
        self.unchanged = 0  # patches left as they were (see the module doc)

    def _one(self, patch):
        if self.method == 'reinhard':
            from torchstain.numpy.utils.rgb2lab import rgb2lab
            lab = rgb2lab(patch.astype(np.float32) / 255)
            if (lab.reshape(-1, 3).std(axis=0) < 1e-6).any():
                return None
            return self._normalizer.normalize(patch)
        with np.errstate(all='ignore'), warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # numpy's empty-slice warnings of a stainless patch
            try:
                out, _, _ = self._normalizer.normalize(patch, stains=False)
            except (ValueError, IndexError, np.linalg.LinAlgError):
                return None
        return out

    def __call__(self, patches):
        """uint8 [N, H, W, 3] -> normalised uint8 [N, H, W, 3]."""
        patches = np.asarray(patches)
        out = np.empty_like(patches)
        for idx, patch in enumerate(patches):
            done = self._one(np.ascontiguousarray(patch))
            if done is None:
                self.unchanged += 1
                done = patch
            out[idx] = done
        return out


def fit(method, target_patches):
    """A StainNormalizer fitted on uint8 patches [N, H, W, 3]; None for method 'none'."""
    if check_method(method) == 'none':
        return None
    return StainNormalizer(method, target_patches)


def apply(normalizer, patches):
    """The patches normalised, or unchanged when normalizer is None."""
    return patches if normalizer is None else normalizer(patches)

#----------------------------------------------------------------------------
