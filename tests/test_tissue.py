"""Tissue masks: each deep-histopath filter on hand-made pixels with known answers, then the chain and Otsu on real H&E."""

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


@pytest.fixture(scope='module')
def thumb_and_dense(he_slide_path, he_image):
    with wsi.open_slide(he_slide_path) as slide:
        thumb = slide.thumbnail(32)
    # Independent reference per thumbnail cell from level-0 pixels: "dense" = >= 95 % stained (G < 180) pixels,
    # "glass" = >= 99 % bright pixels (all channels > 200).
    th, tw = thumb.shape[:2]
    ys = np.linspace(0, he_image.shape[0], th + 1).round().astype(int)
    xs = np.linspace(0, he_image.shape[1], tw + 1).round().astype(int)
    stained = he_image[..., 1] < 180
    bright = (he_image > 200).all(axis=2)
    dense = np.zeros((th, tw), bool)
    glass = np.zeros((th, tw), bool)
    for i in range(th):
        for j in range(tw):
            dense[i, j] = stained[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() >= 0.95
            glass[i, j] = bright[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() >= 0.99
    return thumb, dense, glass


@pytest.mark.parametrize('method', tissue.TISSUE_METHODS)
def test_real_slide_mask(thumb_and_dense, method):
    thumb, dense, glass = thumb_and_dense
    mask = tissue.tissue_mask(thumb, method)
    assert mask.dtype == bool and mask.shape == thumb.shape[:2]
    for corner in (mask[:8, :8], mask[:8, -8:], mask[-8:, :8], mask[-8:, -8:]):
        assert not corner.any()  # white glass corners
    assert dense.sum() > 200 and glass.sum() > 1000  # the references are not trivial
    assert mask[dense].mean() >= 0.97
    assert mask[glass].mean() <= 0.02  # Otsu's closing (disk 2) may bridge a few glass cells beside tissue
    assert 0.2 < mask.mean() < 0.6


def test_blank_slide_has_no_tissue():
    rng = np.random.default_rng(0)
    blank = (242 + rng.integers(-6, 7, size=(60, 50, 3))).astype(np.uint8)
    for method in tissue.TISSUE_METHODS:
        assert not tissue.tissue_mask(blank, method).any()
    with pytest.raises(UserError, match='unknown tissue method'):
        tissue.tissue_mask(blank, 'magic')
