"""Tissue masks on slide thumbnails: the deep-histopath filter chain, or Otsu on saturation; marker ink excluded.

The filter chain follows the published deep-histopath description (green channel, grays, red / green /
blue pen marks, remove small objects, each with its published thresholds). Pixel arithmetic is done in
signed integers so channel differences do not wrap around as they do in uint8.

The published sizes are thumbnail pixels of a 1/32 thumbnail, which suits gigapixel slides only: on a
needle biopsy or a TMA overview whole fragments fall under 500 such pixels. By default the sizes are
physical (µm², from the slide's mpp) or relative (a share of the thumbnail), small slides get a finer
thumbnail, and an ink filter removes marker of any colour. `published_scale()` keeps the exact old masks.
"""

import math

import numpy as np
import scipy.ndimage
import skimage.color
import skimage.filters
import skimage.morphology

from dnnlib import EasyDict
from dnnlib.util import UserError

TISSUE_METHODS = ('deep-histopath', 'otsu')
DEFAULT_DOWNSCALE = 32
MIN_OTSU_SATURATION = 0.07

# Published sizes: 500 px objects on the 1/32 thumbnail of a 0.25 um/px (40x) slide, i.e. 8 um pixels.
PUBLISHED_MIN_OBJECT_PX = 500
PUBLISHED_PIXEL_UM = DEFAULT_DOWNSCALE * 0.25
PUBLISHED_PATCH_UM = 256 * 0.25
DEFAULT_MIN_OBJECT_UM2 = PUBLISHED_MIN_OBJECT_PX * PUBLISHED_PIXEL_UM ** 2  # 32 000 um^2, a 180 um square
MIN_OBJECT_SHARE = 1e-4      # of the thumbnail's area, when the slide's resolution is unknown
MIN_THUMBNAIL_SIDE = 1000    # px on the long side; a small slide gets a finer thumbnail than 1/32

# Ink: HSV hue (0..1) band of eosin pink through haematoxylin purple, wrapping through red. Measured on real
# H&E thumbnails (cmu-small-region, tia tumour tile): 99.9 % of stained pixels lie in 0.69..1 or 0..0.06;
# blue, green, teal and yellow marker lie outside. Near-black is ink whatever its hue, and so is dark blue
# (navy over haematoxylin turns a dark blue-purple that nuclei, redder, rarely reach).
HE_HUE_BAND = (0.69, 0.06)
INK_MIN_SATURATION = 0.25
INK_MAX_VALUE = 0.2
NAVY_MAX_VALUE, NAVY_HUES = 0.3, (0.5, 0.74)
INK_SPECK_RADIUS = 2         # thumbnail px; darker-than-ink specks this small are nuclei or dirt, not marker

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


# ----------------------------------------------------------------------------
# Size thresholds: published pixel counts, or physical / relative sizes that hold on any slide.


def published_scale() -> EasyDict:
    """The deep-histopath constants, in thumbnail pixels whatever the slide (exact reproduction of published masks)."""
    return EasyDict(min_object_px=PUBLISHED_MIN_OBJECT_PX, chain_hole_px=0, otsu_hole_px=PUBLISHED_MIN_OBJECT_PX,
                    close_radius=2, open_radius=1)


def thumbnail_downscale(dimensions: tuple[int, int], downscale: float, published: bool = False) -> float:
    """`downscale`, lowered for small slides so that the thumbnail keeps MIN_THUMBNAIL_SIDE px on its long side."""
    if published:
        return float(downscale)
    long_side = max(dimensions)
    if long_side / downscale >= MIN_THUMBNAIL_SIDE:
        return float(downscale)
    return max(1.0, long_side / MIN_THUMBNAIL_SIDE)


def adaptive_scale(thumb_shape: tuple[int, int], thumb_mpp: float | None, patch_px: float | None = None,
                   min_object_um2: float = DEFAULT_MIN_OBJECT_UM2) -> EasyDict:
    """Thresholds for a thumbnail of `thumb_mpp` µm per pixel (None: unknown), in that thumbnail's pixels.

    The smallest object is `min_object_um2` when the resolution is known, else a fixed share of the thumbnail;
    never more than `patch_px`, the area one patch covers on the thumbnail, because a piece of tissue that can
    hold a whole patch is worth keeping. Holes under a tenth of a patch (of the smallest object without one)
    are filled: a fine thumbnail resolves lumens, pale stroma and single nuclei that the published 1/32
    thumbnail averaged into the tissue around them. Morphology radii keep their published physical size.
    """
    if thumb_mpp is not None:
        min_object = min_object_um2 / thumb_mpp ** 2
    else:
        min_object = MIN_OBJECT_SHARE * thumb_shape[0] * thumb_shape[1]
    # Thumbnail pixels per published thumbnail pixel, along one side. Resolution unknown: take a patch to be
    # 64 um wide, as the published 256 px patches at 0.25 um/px are.
    if thumb_mpp is not None:
        linear = PUBLISHED_PIXEL_UM / thumb_mpp
    elif patch_px is not None:
        linear = math.sqrt(patch_px) / (PUBLISHED_PATCH_UM / PUBLISHED_PIXEL_UM)
    else:
        linear = math.sqrt(min_object / PUBLISHED_MIN_OBJECT_PX)
    if patch_px is not None:
        min_object = min(min_object, patch_px)
    min_object = max(1, int(round(min_object)))
    hole = int((min_object if patch_px is None else patch_px) // 10)
    return EasyDict(min_object_px=min_object, chain_hole_px=hole, otsu_hole_px=hole,
                    close_radius=max(1, int(round(2 * linear))), open_radius=int(round(linear)))


# ----------------------------------------------------------------------------
# Ink and marker: H&E is pink to purple; other saturated hues, and near-black, are something drawn on the glass.


def ink_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean [H, W], True on marker ink: saturated pixels outside the H&E hue band, near-black and navy pixels.

    Specks narrower than a disk of INK_SPECK_RADIUS go (clusters of dark nuclei on a fine thumbnail), and what
    is left grows by one pixel to catch the stroke's edge, where ink and tissue blend into an in-between colour.
    """
    _channels(rgb)
    # HSV value and saturation straight from the channel extremes; the hue (skimage) only where it matters.
    high, low = rgb[..., :3].max(axis=2), rgb[..., :3].min(axis=2)
    value = high / np.float32(255)
    saturation = (high.astype(np.float32) - low) / np.maximum(high, 1)
    ink = value < INK_MAX_VALUE
    candidates = ((saturation > INK_MIN_SATURATION) | (value < NAVY_MAX_VALUE)) & ~ink
    hue = skimage.color.rgb2hsv(rgb[..., :3][candidates][None])[0, :, 0]
    off_band = (hue < HE_HUE_BAND[0]) & (hue > HE_HUE_BAND[1])  # the band wraps through red (hue 1 == 0)
    navy = (value[candidates] < NAVY_MAX_VALUE) & (hue > NAVY_HUES[0]) & (hue < NAVY_HUES[1])
    ink[candidates] = (off_band & (saturation[candidates] > INK_MIN_SATURATION)) | navy
    ink = scipy.ndimage.binary_opening(ink, skimage.morphology.disk(INK_SPECK_RADIUS))
    return scipy.ndimage.binary_dilation(ink, skimage.morphology.disk(1))


# ----------------------------------------------------------------------------
# The two methods.


def deep_histopath_mask(rgb: np.ndarray, scale: EasyDict | None = None, ink: np.ndarray | None = None) -> np.ndarray:
    """The published filter chain; `scale` (default: published) sets its sizes, `ink` pixels are taken out."""
    scale = published_scale() if scale is None else scale
    keep = filter_green_channel(rgb) & filter_grays(rgb)
    # The pen boxes are per pixel: test only the pixels still kept (glass is most of a slide).
    candidates = rgb[..., :3][keep][None]
    keep[keep] = (filter_red_pen(candidates) & filter_green_pen(candidates) & filter_blue_pen(candidates))[0]
    if scale.chain_hole_px > 0:
        # On a fine thumbnail, lumens and single nuclei (dark purple falls in the blue-pen boxes) leave holes.
        keep = skimage.morphology.remove_small_holes(keep, max_size=scale.chain_hole_px - 1)
    if ink is not None:
        keep &= ~ink
    return filter_remove_small_objects(keep, min_size=scale.min_object_px)


def otsu_mask(rgb: np.ndarray, scale: EasyDict | None = None, ink: np.ndarray | None = None) -> np.ndarray:
    """Tissue is saturated (stained), glass is not: Otsu threshold on HSV saturation, then tidy the blobs."""
    scale = published_scale() if scale is None else scale
    _channels(rgb)
    saturation = skimage.color.rgb2hsv(rgb[..., :3])[..., 1]
    if np.ptp(saturation) == 0:
        return np.zeros(rgb.shape[:2], dtype=bool)
    # Glass has a little saturation from noise and stain haze; never call that tissue, even on a blank slide.
    mask = saturation > max(skimage.filters.threshold_otsu(saturation), MIN_OTSU_SATURATION)
    mask = _disk_morphology('closing', mask, scale.close_radius)
    mask = _disk_morphology('opening', mask, scale.open_radius)
    mask = skimage.morphology.remove_small_holes(mask, max_size=max(scale.otsu_hole_px - 1, 0))
    if ink is not None:
        mask &= ~ink  # ink is saturated too: Otsu calls it tissue
    return skimage.morphology.remove_small_objects(mask, max_size=max(scale.min_object_px - 1, 0))


def _disk_morphology(op: str, mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    if radius <= 2:  # the published radii, with skimage's exact disk footprint
        return getattr(skimage.morphology, op)(mask, skimage.morphology.disk(radius)).astype(bool)
    # Large radii (fine thumbnails): the distance-transform form is much faster than a big footprint.
    return getattr(skimage.morphology, 'isotropic_' + op)(mask, radius)


def detect_tissue(rgb: np.ndarray, method: str = 'deep-histopath', scale: EasyDict | None = None,
                  ink_filter: bool = False) -> EasyDict:
    """EasyDict(tissue, ink): boolean [H, W] masks of the thumbnail; ink is all False without `ink_filter`."""
    if method not in TISSUE_METHODS:
        raise UserError(f'unknown tissue method {method!r}; choose one of {", ".join(TISSUE_METHODS)}')
    ink = ink_mask(rgb) if ink_filter else None
    masker = deep_histopath_mask if method == 'deep-histopath' else otsu_mask
    tissue = masker(rgb, scale, ink)
    return EasyDict(tissue=tissue, ink=np.zeros(tissue.shape, bool) if ink is None else ink)


def tissue_mask(rgb: np.ndarray, method: str = 'deep-histopath', scale: EasyDict | None = None,
                ink_filter: bool = False) -> np.ndarray:
    """Boolean [H, W] mask, True where the thumbnail pixel shows tissue (defaults: the published behaviour)."""
    return detect_tissue(rgb, method, scale, ink_filter).tissue
