"""tools/histology/stain.py: Reinhard and Macenko normalisation (torchstain) against hand-built stains with known
answers, identity on the target, and one-line errors."""

import numpy as np
import pytest
import skimage.color

import dnnlib
from tools.histology import stain


def _restain_lab(image, scale, shift):
    """The image with its L*a*b* channels scaled and shifted (scikit-image's conversion): another lab's stain."""
    lab = skimage.color.rgb2lab(image)
    lab = lab * np.asarray(scale) + np.asarray(shift)
    return (np.clip(skimage.color.lab2rgb(lab), 0, 1) * 255 + 0.5).astype(np.uint8)


def _lab_stats(images):
    lab = skimage.color.rgb2lab(np.concatenate(list(images), axis=1)).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def test_reinhard_gives_each_patch_the_target_statistics(he_crops):
    """Reinhard standardises each patch in L*a*b* and gives it the mean/std of the fitted patches (pooled): a
    re-stained patch ends at the target's statistics, far from where it started."""
    target = he_crops(32, 12, seed=31)
    others = np.stack([_restain_lab(p, (0.8, 1.3, 0.7), (6, -8, 9)) for p in he_crops(32, 4, seed=32)])
    normaliser = stain.fit('reinhard', target)
    out = normaliser(others)
    assert out.shape == others.shape and out.dtype == np.uint8 and normaliser.unchanged == 0
    mean_t, std_t = _lab_stats(target)
    for before, after in zip(others, out):
        mean_b, std_b = _lab_stats(before[None])
        mean_a, std_a = _lab_stats(after[None])
        # scikit-image and torchstain convert with slightly different constants and the output is rounded down
        # to uint8: a few tenths of a L*a*b* unit
        np.testing.assert_allclose(mean_a, mean_t, atol=1.5)
        np.testing.assert_allclose(std_a, std_t, rtol=0.1, atol=0.5)
        assert np.abs(mean_a - mean_t).sum() < 0.3 * np.abs(mean_b - mean_t).sum()


def test_reinhard_undoes_a_lab_restaining_and_is_identity_on_its_target(he_crops):
    """Fitted on one image, Reinhard maps an affine L*a*b* re-staining of that image back onto it, and the image
    itself onto itself (up to rounding)."""
    image = he_crops(64, 1, seed=33)
    normaliser = stain.fit('reinhard', image)
    itself = normaliser(image)
    assert np.abs(itself.astype(int) - image).mean() < 1.5
    restained = _restain_lab(image[0], (0.85, 1.2, 0.8), (5, -6, 7))[None]
    assert np.abs(restained.astype(int) - image).mean() > 8
    assert np.abs(normaliser(restained).astype(int) - image).mean() < 2.5


def _render(stains, concentrations, shape, io=240):
    """Beer-Lambert: uint8 RGB of stain vectors [3, 2] (optical density per unit) and concentrations [2, N]."""
    rgb = io * np.exp(-stains @ concentrations)
    return np.clip(rgb.T.reshape(*shape, 3), 0, 255).astype(np.uint8)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_macenko_renders_another_stain_with_the_target_stain_vectors():
    """Two images with the same stain concentrations and different stain vectors (hand-built by Beer-Lambert): fitted
    on the first, Macenko turns the second into (nearly) the first, and leaves the first as it is."""
    rnd = np.random.RandomState(0)
    n = 64 * 64
    share = rnd.uniform(0, 1, n)             # from pure eosin to pure haematoxylin, every mixture in between
    amount = rnd.uniform(0.3, 1.6, n)
    concentrations = np.stack([amount * share, amount * (1 - share)])
    target_stains = np.stack([_unit([0.65, 0.70, 0.29]), _unit([0.07, 0.99, 0.11])], axis=1)  # Ruifrok & Johnston H, E
    other_stains = np.stack([_unit([0.45, 0.80, 0.40]), _unit([0.20, 0.95, 0.25])], axis=1)
    target = _render(target_stains, concentrations, (64, 64))[None]
    other = _render(other_stains, concentrations, (64, 64))[None]
    assert np.abs(other.astype(int) - target).mean() > 10
    normaliser = stain.fit('macenko', target)
    assert np.abs(normaliser(other).astype(int) - target).mean() < 4
    assert np.abs(normaliser(target).astype(int) - target).mean() < 3
    assert normaliser.unchanged == 0
    blank = np.full((1, 16, 16, 3), 250, np.uint8)  # glass only: no stain to separate, left as it is and counted
    np.testing.assert_array_equal(normaliser(blank), blank)
    assert normaliser.unchanged == 1


def test_none_and_bad_methods(he_crops):
    patches = he_crops(16, 2)
    assert stain.fit('none', patches) is None and stain.apply(None, patches) is patches
    with pytest.raises(dnnlib.util.UserError, match="unknown stain normalisation 'vahadane'") as err:
        stain.fit('vahadane', patches)
    assert '\n' not in str(err.value)
    with pytest.raises(dnnlib.util.UserError, match='uint8'):
        stain.fit('reinhard', patches.astype(np.float32))
