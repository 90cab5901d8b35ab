"""The Fig 2 preview panel read back as pixels: the legend shows each colour as the panels draw it."""

import numpy as np
import PIL.Image
import PIL.ImageColor
import scipy.ndimage

from tools.histology import patches as pt
from tools.histology.preview import INK_COLOR, save_preview


def modal_colour(pixels):
    """The most frequent RGB triple of an [n, 3] array."""
    values, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    return values[counts.argmax()]


def test_legend_swatches_match_the_panels(tmp_path):
    # A white slide (bare glass) with a purple tissue block and an orange-marked ink stroke outside it.
    size, cell = 400, 4  # thumbnail pixels; level-0 pixels per thumbnail pixel
    thumb = np.full((size, size, 3), 255, np.uint8)
    thumb[150:250, 150:250] = (150, 80, 160)
    mask = np.zeros((size, size), bool)
    mask[150:250, 150:250] = True
    ink = np.zeros((size, size), bool)
    ink[40:48, 20:380] = True
    extent = 100 * cell // 4  # 25 thumbnail pixels per patch
    xy = np.array([[x, y] for y in range(0, size * cell, extent) for x in range(0, size * cell, extent)])
    inside = ((xy >= 150 * cell) & (xy + extent <= 250 * cell)).all(axis=1)
    classes = np.where(inside, pt.CLASS_TISSUE, pt.CLASS_BACKGROUND)
    classes[0] = pt.CLASS_PARTIAL  # one of each class, so the legend has its three class swatches
    path = tmp_path / 'preview.png'
    save_preview(str(path), thumb, mask, (size * cell, size * cell), xy, extent, classes, ink=ink)
    img = np.asarray(PIL.Image.open(path).convert('RGB')).astype(np.int64)
    height, width = img.shape[:2]

    # The grid's background colour: what the patches panel (right third) mostly is, white glass under red boxes.
    panel = img[: int(0.85 * height), 2 * width // 3:]
    chroma = panel.max(axis=-1) - panel.min(axis=-1)
    grid_background = modal_colour(panel[chroma > 20])
    ink_rgb = np.round(np.array(PIL.ImageColor.getrgb(INK_COLOR)))
    assert grid_background[0] > grid_background[1] + 40  # reddish: the red boxes over white
    # The ink as the mask panel (middle third) draws it.
    middle = img[: int(0.85 * height), width // 3: 2 * width // 3]
    assert (np.abs(middle - ink_rgb).max(axis=-1) == 0).sum() > 500

    # The legend under the panels: small coloured blocks, left to right ≥ 90 %, 10-90 %, ≤ 10 %, ink (text is grey;
    # the bottom edge of the panels reaches into the band as wide blocks).
    band = img[int(0.85 * height):]
    colourful = (band.max(axis=-1) - band.min(axis=-1)) > 20
    labels, _ = scipy.ndimage.label(colourful)
    blocks = [sl for k, sl in enumerate(scipy.ndimage.find_objects(labels), 1)
              if (labels[sl] == k).sum() >= 40 and sl[0].stop - sl[0].start < 20 and sl[1].stop - sl[1].start < 60]
    assert len(blocks) == 4, [(sl[1].start, (labels[sl] > 0).sum()) for sl in blocks]
    blocks.sort(key=lambda sl: sl[1].start)
    swatch = [modal_colour(band[sl]) for sl in blocks]
    # The "≤ 10 % tissue" swatch is the grid's background colour, not the ink's, and the ink swatch is the ink's.
    np.testing.assert_array_equal(swatch[2], grid_background)
    assert np.abs(swatch[2] - ink_rgb).max() > 80
    np.testing.assert_array_equal(swatch[3], ink_rgb)
