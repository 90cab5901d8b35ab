"""Tissue masks: each deep-histopath filter and the ink filter on hand-made pixels with known answers, then the chain
and Otsu on real H&E, adaptive sizes, and exact reproduction of the published masks."""

import os

import numpy as np
import pytest

from dnnlib.util import UserError
from tools.histology import tissue, wsi


def pixels(*rgb):
    return np.array([rgb], dtype=np.uint8).reshape(1, -1, 3)


def test_grays_without_uint8_wraparound():
    img = pixels((240, 238, 236), (40, 45, 50), (200, 100, 160), (10, 255, 10), (255, 0, 255), (100, 115, 100),
                 (100, 116, 100))
    # Glass and black are gray; stained pixels are not. (10,255,10) would wrap to |10-255| = 11 in uint8.
    np.testing.assert_array_equal(tissue.filter_grays(img)[0], [False, False, True, True, True, False, True])


def test_green_channel_threshold_and_overmask():
    img = pixels((180, 120, 200), (240, 210, 240), (0, 0, 0), (250, 255, 250))
    np.testing.assert_array_equal(tissue.filter_green_channel(img)[0], [True, False, False, False])
    # 95 % of pixels have 200 <= G < 228: threshold 200 masks >= 90 %, so it rises to ceil(255 - 55/2) = 228.
    img = np.full((1, 100, 3), 150, np.uint8)
    img[0, :95, 1] = 215
    img[0, 95:, 1] = 240
    keep = tissue.filter_green_channel(img)[0]
    assert keep[:95].all() and not keep[95:].any()
    assert not tissue.filter_green_channel(img, avoid_overmask=False).any()


def test_pen_filters():
    red_pen, green_pen, blue_pen, pink, purple = (200, 40, 50), (40, 150, 130), (40, 60, 200), (230, 150, 200), \
        (120, 60, 160)
    img = pixels(red_pen, green_pen, blue_pen, pink, purple)
    np.testing.assert_array_equal(tissue.filter_red_pen(img)[0], [False, True, True, True, True])
    np.testing.assert_array_equal(tissue.filter_green_pen(img)[0], [True, False, True, True, True])
    np.testing.assert_array_equal(tissue.filter_blue_pen(img)[0], [True, True, False, True, True])
    # Published sets are strict inequalities: R exactly at the first red threshold is not pen.
    np.testing.assert_array_equal(tissue.filter_red_pen(pixels((150, 79, 89), (151, 79, 89)))[0], [True, False])


def test_remove_small_objects_and_overmask():
    mask = np.zeros((100, 100), bool)
    mask[5:25, 5:25] = True    # 400 px: removed at min_size 500
    mask[50:80, 50:80] = True  # 900 px: kept
    out = tissue.filter_remove_small_objects(mask, min_size=500)
    assert not out[5:25, 5:25].any() and out[50:80, 50:80].all() and out.sum() == 900
    # A lone 300 px object in a 10000 px image: >= 95 % stays masked, min_size halves 500 -> 250 and keeps it.
    lone = np.zeros((100, 100), bool)
    lone[10:25, 10:30] = True
    assert tissue.filter_remove_small_objects(lone, 500).sum() == 300
    assert tissue.filter_remove_small_objects(lone, 500, avoid_overmask=False).sum() == 0


def cell_means(image, shape):
    """Mean of `image` over each cell of a `shape` grid laid on it (cell edges rounded to pixels)."""
    ys = np.linspace(0, image.shape[0], shape[0] + 1).round().astype(int)
    xs = np.linspace(0, image.shape[1], shape[1] + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(image.astype(np.float64), ys[:-1], axis=0), xs[:-1], axis=1)
    return sums / np.outer(np.diff(ys), np.diff(xs))


REFERENCE_GRID = (93, 70)  # the 1/32 grid of cmu-small-region: 16 um cells


@pytest.fixture(scope='module', params=['published', 'adaptive'])
def thumb_and_dense(request, he_slide_path, he_image):
    """(thumbnail, scale, dense, glass) for the published 1/32 thumbnail and the default adaptive one."""
    with wsi.open_slide(he_slide_path) as slide:
        if request.param == 'published':
            thumb, scale = slide.thumbnail(32), None
        else:
            downscale = tissue.thumbnail_downscale(slide.dimensions, 32)
            thumb = slide.thumbnail(downscale)
            scale = tissue.adaptive_scale(thumb.shape[:2], slide.mpp * downscale, patch_px=(128 / downscale) ** 2)
    # Independent reference per 16 um cell from level-0 pixels: "dense" = >= 95 % stained (G < 180) pixels,
    # "glass" = >= 99 % bright pixels (all channels > 200).
    dense = cell_means(he_image[..., 1] < 180, REFERENCE_GRID) >= 0.95
    glass = cell_means((he_image > 200).all(axis=2), REFERENCE_GRID) >= 0.99
    return thumb, scale, dense, glass


@pytest.mark.parametrize('method', tissue.TISSUE_METHODS)
def test_real_slide_mask(thumb_and_dense, method):
    thumb, scale, dense, glass = thumb_and_dense
    mask = tissue.tissue_mask(thumb, method, scale, ink_filter=scale is not None)
    assert mask.dtype == bool and mask.shape == thumb.shape[:2]
    n = max(8, thumb.shape[0] // 12)
    for corner in (mask[:n, :n], mask[:n, -n:], mask[-n:, :n], mask[-n:, -n:]):
        assert not corner.any()  # white glass corners
    assert dense.sum() > 200 and glass.sum() > 1000  # the references are not trivial
    share = cell_means(mask, REFERENCE_GRID)  # the mask's cover of each reference cell
    assert share[dense].mean() >= 0.97
    assert share[glass].mean() <= 0.02  # Otsu's closing may bridge a little glass beside tissue
    assert 0.2 < mask.mean() < 0.6


PUBLISHED = np.load(os.path.join(os.path.dirname(__file__), 'data', 'published_masks.npz'))


@pytest.mark.parametrize('method', tissue.TISSUE_METHODS)
def test_published_thresholds_reproduce_old_masks(he_slide_path, method):
    """tests/data/published_masks.npz holds the masks and kept patches of the code before issue 11, computed on
    the real slide and the real tumour tile; the published option must give exactly those."""
    from dnnlib import assets
    from tools.histology import slide_dataset
    for name, path in (('cmu', he_slide_path), ('tile', assets.fetch('tia-tumour-tile'))):
        with wsi.open_slide(path) as slide:
            for downscale in (32, 16):
                mask = tissue.tissue_mask(slide.thumbnail(downscale), method, tissue.published_scale())
                np.testing.assert_array_equal(mask, PUBLISHED[f'{name}_ds{downscale}_{method}'])
            for size in (64, 128):
                opts = slide_dataset.default_options(patch_size=size, tissue_method=method, published_thresholds=True)
                plan = slide_dataset.plan_slide(slide, opts, level_image=slide_dataset.read_level_if_cheap(slide, opts))
                np.testing.assert_array_equal(plan.kept, PUBLISHED[f'{name}_kept_p{size}_{method}'])
                assert not plan.ink.any()


def test_sizes_follow_resolution_and_thumbnail():
    # 40x gigapixel slide: the published 1/32 thumbnail, and 500 of its 8 um pixels.
    assert tissue.thumbnail_downscale((100000, 80000), 32) == 32
    scale = tissue.adaptive_scale((2500, 3125), 8.0)
    assert scale.min_object_px == 500 and (scale.close_radius, scale.open_radius) == (2, 1)
    # A 20x slide at 1/32 (16 um pixels): the same 32 000 um^2 is 125 pixels.
    assert tissue.adaptive_scale((2500, 3125), 16.0).min_object_px == 125
    # A small slide: the thumbnail keeps 1000 px on its long side; never upsampled.
    assert tissue.thumbnail_downscale((2220, 2967), 32) == pytest.approx(2.967)
    assert tissue.thumbnail_downscale((600, 800), 32) == 1.0
    assert tissue.thumbnail_downscale((2220, 2967), 32, published=True) == 32
    # Resolution unknown: 1/10000 of the thumbnail; any known size is capped at one patch's footprint.
    assert tissue.adaptive_scale((1000, 800), None).min_object_px == 80
    capped = tissue.adaptive_scale((1000, 749), 1.48, patch_px=1861.0)
    assert capped.min_object_px == 1861 and capped.chain_hole_px == 186
    assert tissue.adaptive_scale((1000, 749), 1.48).min_object_px == round(32000 / 1.48 ** 2)


def blocks(*rgb, size=9):
    """A row of size x size blocks, one per colour (the ink filter ignores specks, so test with areas)."""
    row = np.concatenate([np.broadcast_to(np.array(c, np.uint8), (size, size, 3)) for c in rgb], axis=1)
    return np.pad(row, ((size, size), (size, size), (0, 0)), constant_values=240)


def test_ink_filter_colours():
    he = [(230, 150, 200), (190, 90, 160), (120, 60, 160), (70, 40, 110), (235, 120, 140), (245, 200, 220)]
    marker = [(40, 80, 220), (30, 150, 60), (20, 20, 24), (25, 30, 90), (230, 200, 40), (40, 170, 170),
              (18, 17, 55)]
    size = 9
    img = blocks(*he, *marker, size=size)
    ink = tissue.ink_mask(img)
    centres = ink[size + size // 2, size + size // 2::size]
    np.testing.assert_array_equal(centres[:len(he) + len(marker)], [False] * len(he) + [True] * len(marker))
    # Grown by one pixel around each marker block, no further; a lone dark pixel is not ink.
    first = size * (1 + len(he))
    assert ink[size + 4, first - 1] and not ink[size + 4, first - 2]
    speck = np.full((20, 20, 3), 235, np.uint8)
    speck[9:11, 9:11] = 10
    assert not tissue.ink_mask(speck).any()


@pytest.mark.parametrize('method', tissue.TISSUE_METHODS)
def test_ink_filter_spares_clean_he(he_slide_path, method):
    """On the real tumour tile (no marker) the filter removes almost nothing; on cmu-small-region it finds the
    teal margin dye along the tissue edge (greener than red, which H&E never is) and little else."""
    from dnnlib import assets
    with wsi.open_slide(assets.fetch('tia-tumour-tile')) as slide:
        tile = slide.thumbnail(1)
    found = tissue.detect_tissue(tile, method, tissue.adaptive_scale(tile.shape[:2], None, 128 ** 2), ink_filter=True)
    assert found.ink.mean() < 0.002 and found.tissue.mean() > 0.9
    with wsi.open_slide(he_slide_path) as slide:
        thumb = slide.thumbnail(tissue.thumbnail_downscale(slide.dimensions, 32))
    ink = tissue.ink_mask(thumb)
    import scipy.ndimage
    import skimage.morphology
    teal = thumb[..., 1].astype(int) > thumb[..., 0].astype(int) + 20
    solid = skimage.morphology.opening(teal, skimage.morphology.disk(2))  # dye areas, not single fibres
    assert 0.0005 < ink.mean() < 0.01 and solid.sum() > 100
    assert ink[solid].mean() > 0.6  # most dye areas are caught
    # What is flagged lies by the dye: dilate the dye by 4 px and count what lies outside.
    near_dye = scipy.ndimage.binary_dilation(teal, iterations=4)
    assert (ink & ~near_dye).sum() < 0.2 * ink.sum()


def test_blank_slide_has_no_tissue():
    rng = np.random.default_rng(0)
    blank = (242 + rng.integers(-6, 7, size=(60, 50, 3))).astype(np.uint8)
    for method in tissue.TISSUE_METHODS:
        assert not tissue.tissue_mask(blank, method).any()
    with pytest.raises(UserError, match='unknown tissue method'):
        tissue.tissue_mask(blank, 'magic')
