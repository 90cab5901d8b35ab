"""Tissue masks on slide thumbnails: the deep-histopath filter chain, or Otsu on saturation.

The filter chain follows the published deep-histopath description (green channel, grays, red / green /
blue pen marks, remove small objects, each with its published thresholds). Pixel arithmetic is done in
signed integers so channel differences do not wrap around as they do in uint8.
"""

import math

import numpy as np
import skimage.color
import skimage.filters
import skimage.morphology

from dnnlib.util import UserError

TISSUE_METHODS = ('deep-histopath', 'otsu')
DEFAULT_DOWNSCALE = 32
MIN_OTSU_SATURATION = 0.07

# Pen-mark colour boxes, one row per published threshold set.
# Red pen:   masked when R > r_lower and G < g_upper and B < b_upper.
RED_PEN_THRESHOLDS = [
    (150, 80, 90), (110, 20, 30), (185, 65, 105), (195, 85, 125), (220, 115, 145),
    (125, 40, 70), (200, 120, 150), (100, 50, 65), (85, 25, 45),
]
# Green pen: masked when R < r_upper and G > g_lower and B > b_lower.
GREEN_PEN_THRESHOLDS = [
    (150, 160, 140), (70, 110, 110), (45, 115, 100), (30, 75, 60), (195, 220, 210),
    (225, 230, 225), (170, 210, 200), (20, 30, 20), (50, 60, 40), (30, 50, 35),
    (65, 70, 60), (100, 110, 105), (165, 180, 180), (140, 140, 150), (185, 195, 195),
]
# Blue pen:  masked when R < r_upper and G < g_upper and B > b_lower.
BLUE_PEN_THRESHOLDS = [
    (60, 120, 190), (120, 170, 200), (175, 210, 230), (145, 180, 210), (37, 95, 160),
    (30, 65, 130), (130, 155, 180), (40, 35, 85), (30, 20, 65), (90, 90, 140),
    (60, 60, 120), (110, 110, 175),
]


def masked_percent(mask: np.ndarray) -> float:
    """Percentage of pixels that a keep-mask removes (0 = keeps everything)."""
    return 100.0 * (1.0 - np.count_nonzero(mask) / mask.size)


def _channels(rgb: np.ndarray):
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected a uint8 [H, W, 3] RGB image, got {rgb.dtype} {list(rgb.shape)}')
    return rgb[..., 0], rgb[..., 1], rgb[..., 2]


def filter_green_channel(rgb, green_thresh=200, avoid_overmask=True, overmask_thresh=90):
    """Keep 0 < G < green_thresh (H&E stains hold little green); raise the threshold if it masks too much."""
    _r, g, _b = _channels(rgb)
    while True:
        keep = (g > 0) & (g < green_thresh)
        if not (avoid_overmask and masked_percent(keep) >= overmask_thresh and green_thresh < 255):
            return keep
        green_thresh = int(math.ceil((255 - green_thresh) / 2 + green_thresh))


def filter_grays(rgb, tolerance=15):
    """Drop pixels whose three channels lie within `tolerance` of each other (glass, shadows, black)."""
    r, g, b = (c.astype(np.int16) for c in _channels(rgb))
    gray = (np.abs(r - g) <= tolerance) & (np.abs(r - b) <= tolerance) & (np.abs(g - b) <= tolerance)
    return ~gray


def _filter_boxes(rgb, thresholds, signs):
    # signs: per channel, +1 means "channel > threshold", -1 means "channel < threshold".
    channels = _channels(rgb)
    keep = np.ones(rgb.shape[:2], dtype=bool)
    for row in thresholds:
        hit = np.ones(rgb.shape[:2], dtype=bool)
        for c, t, s in zip(channels, row, signs):
            hit &= (c > t) if s > 0 else (c < t)
        keep &= ~hit
    return keep


def filter_red_pen(rgb):
    return _filter_boxes(rgb, RED_PEN_THRESHOLDS, (+1, -1, -1))


def filter_green_pen(rgb):
    return _filter_boxes(rgb, GREEN_PEN_THRESHOLDS, (-1, +1, +1))


def filter_blue_pen(rgb):
    return _filter_boxes(rgb, BLUE_PEN_THRESHOLDS, (-1, -1, +1))


def filter_remove_small_objects(mask, min_size=500, avoid_overmask=True, overmask_thresh=95):
    """Remove connected components smaller than `min_size` px; halve `min_size` while it masks too much."""
    mask = np.asarray(mask, dtype=bool)
    while True:
        # skimage's max_size is inclusive: components of at most max_size pixels go.
        kept = skimage.morphology.remove_small_objects(mask, max_size=max(int(min_size) - 1, 0))
        if not (avoid_overmask and masked_percent(kept) >= overmask_thresh and min_size >= 1):
            return kept
        min_size = min_size / 2


def deep_histopath_mask(rgb: np.ndarray) -> np.ndarray:
    keep = filter_green_channel(rgb) & filter_grays(rgb)
    keep &= filter_red_pen(rgb) & filter_green_pen(rgb) & filter_blue_pen(rgb)
    return filter_remove_small_objects(keep, min_size=500)


def otsu_mask(rgb: np.ndarray, min_size=500) -> np.ndarray:
    """Tissue is saturated (stained), glass is not: Otsu threshold on HSV saturation, then tidy the blobs."""
    _channels(rgb)
    saturation = skimage.color.rgb2hsv(rgb[..., :3])[..., 1]
    if np.ptp(saturation) == 0:
        return np.zeros(rgb.shape[:2], dtype=bool)
    # Glass has a little saturation from noise and stain haze; never call that tissue, even on a blank slide.
    mask = saturation > max(skimage.filters.threshold_otsu(saturation), MIN_OTSU_SATURATION)
    mask = skimage.morphology.closing(mask, skimage.morphology.disk(2)).astype(bool)
    mask = skimage.morphology.opening(mask, skimage.morphology.disk(1)).astype(bool)
    mask = skimage.morphology.remove_small_holes(mask, max_size=max(min_size - 1, 0))
    return skimage.morphology.remove_small_objects(mask, max_size=max(min_size - 1, 0))


def tissue_mask(rgb: np.ndarray, method: str = 'deep-histopath') -> np.ndarray:
    """Boolean [H, W] mask, True where the thumbnail pixel shows tissue."""
    if method == 'deep-histopath':
        return deep_histopath_mask(rgb)
    if method == 'otsu':
        return otsu_mask(rgb)
    raise UserError(f'unknown tissue method {method!r}; choose one of {", ".join(TISSUE_METHODS)}')
