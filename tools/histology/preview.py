"""The paper's Fig 2 panel for one slide: thumbnail, tissue-filtered thumbnail (ink shown apart), patches by class."""

import io
import math
import os

import matplotlib
import matplotlib.colors
import numpy as np
import PIL.Image
import scipy.ndimage

from dnnlib.util import atomic_write

from .patches import CLASS_BACKGROUND, CLASS_PARTIAL, CLASS_TISSUE

CLASS_COLORS = {CLASS_TISSUE: '#1a9850', CLASS_PARTIAL: '#fee08b', CLASS_BACKGROUND: '#d73027'}
CLASS_LABELS = {CLASS_TISSUE: '≥ 90 % tissue', CLASS_PARTIAL: '10–90 %', CLASS_BACKGROUND: '≤ 10 % tissue'}


MAX_DRAWN_BOXES = 20000
BOX_ALPHA = 0.45                 # the class colours over the slide in the patches panel
INK_COLOR = '#ff8c00'            # orange: neither H&E nor a usual marker colour
TARGET_ASPECT = 16 / 9           # the figure shape the panel layout aims for
MAX_FIGURE_INCHES = (13.0, 8.0)  # width, height of the three panels together (at 100 dpi: pixels / 100)
MAX_PANEL_INCHES = 5.0          # side of a square slide's panel


def class_overlay(shape, cell, xy, extent, classes) -> np.ndarray:
    """float RGBA [h, w, 4]: per pixel, the majority Fig 2 class of the patches centred in it; pixels with no
    centre take the nearest voted pixel's colour if that is within half a patch (chessboard distance) (so the grid reads as areas)."""
    h, w = shape
    xy = np.asarray(xy, dtype=np.float64)
    col = np.clip(((xy[:, 0] + extent / 2) / cell[0]).astype(np.int64), 0, w - 1)
    row = np.clip(((xy[:, 1] + extent / 2) / cell[1]).astype(np.int64), 0, h - 1)
    votes = np.zeros((len(CLASS_COLORS), h, w), dtype=np.int64)
    order = list(CLASS_COLORS)
    for k, cls in enumerate(order):
        sel = np.asarray(classes) == cls
        np.add.at(votes[k], (row[sel], col[sel]), 1)
    winner = votes.argmax(axis=0)
    empty = votes.sum(axis=0) == 0
    dist, (near_r, near_c) = scipy.ndimage.distance_transform_cdt(empty, metric='chessboard', return_indices=True)
    winner = winner[near_r, near_c]
    palette = np.array([matplotlib.colors.to_rgba(CLASS_COLORS[c], alpha=BOX_ALPHA) for c in order])
    overlay = palette[winner]
    overlay[dist > 0.5 * extent / min(cell) + 0.5] = 0  # far from every patch: transparent
    return overlay


def on_white(color) -> np.ndarray:
    """RGB 0-255 (integers) of a class colour drawn at BOX_ALPHA over white, as the grid shows it on bare glass."""
    rgb = np.array(matplotlib.colors.to_rgb(color)) * 255
    return np.round(BOX_ALPHA * rgb + (1 - BOX_ALPHA) * 255)


def quantize_keeping(img: PIL.Image.Image, kept, colors: int = 256, tolerance: int = 2) -> PIL.Image.Image:
    """`img` (RGB) with a median-cut palette of `colors` entries, of which the last len(kept) are the RGB colours
    `kept`: pixels within `tolerance` of one of them (the legend swatches) keep that colour exactly instead of
    drifting to the nearest cluster of the picture (a median cut had turned the red swatch brown, next to the ink)."""
    kept = np.asarray(kept, dtype=np.int64).reshape(-1, 3)
    out = img.quantize(colors=colors - len(kept), method=PIL.Image.Quantize.MEDIANCUT)
    index = np.array(out)
    palette = np.array(out.getpalette()[:3 * int(index.max() + 1)], dtype=np.int64).reshape(-1, 3)
    pixels = np.asarray(img, dtype=np.int64)
    for k, rgb in enumerate(kept):
        index[np.abs(pixels - rgb).max(axis=-1) <= tolerance] = len(palette) + k
    result = PIL.Image.frombytes('P', img.size, index.astype(np.uint8).tobytes())
    result.putpalette(np.concatenate([palette, kept]).astype(np.uint8).ravel().tolist())
    return result


def panel_layout(width: int, height: int) -> tuple[int, int, float]:
    """(rows, columns, panel height in inches) for three panels of a `width` x `height` picture.

    Side by side unless the slide is so wide that stacking the panels gives a figure closer to a screen's
    shape; then scaled to fit MAX_FIGURE_INCHES, so a 5600x1000 biopsy is as readable as a square slide.
    """
    aspect = width / height
    def mismatch(rows, cols):
        return abs(math.log(cols * aspect / rows / TARGET_ASPECT))
    rows, cols = min(((1, 3), (3, 1)), key=lambda rc: mismatch(*rc))
    fit = min(MAX_FIGURE_INCHES[0] / (cols * aspect), MAX_FIGURE_INCHES[1] / rows)
    # Panels of about the same area whatever their shape: a tall slide gets tall panels.
    return rows, cols, min(MAX_PANEL_INCHES / math.sqrt(aspect), fit)


def save_preview(path: str, thumb: np.ndarray, mask: np.ndarray, slide_dims: tuple[int, int], xy: np.ndarray,
                 extent: float, classes: np.ndarray, title: str = '', dpi: int = 100,
                 ink: np.ndarray | None = None) -> None:
    """Write a three-panel PNG of the slide `slide_dims` (level 0): `thumb` is any-size picture of the slide,
    `mask` the tissue mask and `ink` the marker ink removed from it (both on the mask's grid), patch boxes are
    level-0 (x, y, extent)."""
    matplotlib.use('Agg', force=False)
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection

    h, w = thumb.shape[:2]
    # Masks shown on the picture's grid (nearest mask pixel): removed pixels black, ink in its own colour.
    rows = np.minimum((np.arange(h) + 0.5) * mask.shape[0] / h, mask.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(w) + 0.5) * mask.shape[1] / w, mask.shape[1] - 1).astype(np.int64)
    filtered = np.where(mask[rows][:, cols][..., None], thumb, 0).astype(np.uint8)
    ink_share = 0.0
    if ink is not None and ink.any():
        ink_rgb = (np.array(matplotlib.colors.to_rgb(INK_COLOR)) * 255).astype(np.uint8)
        filtered[ink[rows][:, cols]] = ink_rgb
        ink_share = ink.mean()
    cell = (slide_dims[0] / w, slide_dims[1] / h)
    n_rows, n_cols, panel_h = panel_layout(w, h)
    fig_w = n_cols * panel_h * w / h + 0.4
    fig_h = n_rows * (panel_h + 0.3) + 0.7
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(fig_w, fig_h), dpi=dpi, squeeze=False)
    axes = axes.ravel()
    try:
        for ax, img, name in zip(axes, (thumb, filtered, thumb), ('thumbnail', 'tissue mask', 'patches')):
            ax.imshow(img, interpolation='antialiased')
            ax.set_title(name, fontsize=9)
            ax.set_axis_off()
        counts = {cls: int((np.asarray(classes) == cls).sum()) for cls in CLASS_COLORS}
        if len(xy) <= MAX_DRAWN_BOXES:
            for cls, color in CLASS_COLORS.items():
                boxes = [mpatches.Rectangle((x / cell[0] - 0.5, y / cell[1] - 0.5), extent / cell[0], extent / cell[1])
                         for x, y in np.asarray(xy)[np.asarray(classes) == cls]]
                axes[2].add_collection(PatchCollection(boxes, facecolor=color, edgecolor=color, alpha=BOX_ALPHA,
                                                       linewidth=0.3))
        else:
            # Too many boxes to draw one by one (a gigapixel slide at 64 px): colour each picture pixel by the
            # most frequent class among the patches centred in it.
            axes[2].imshow(class_overlay((h, w), cell, xy, extent, classes), interpolation='nearest')
        # Class swatches as the grid shows them on glass (the class colour at BOX_ALPHA over white), the ink swatch
        # as the mask panel shows it: the same pixels in the legend as in the panels.
        swatches = {c: on_white(CLASS_COLORS[c]) for c in CLASS_COLORS}
        handles = [mpatches.Patch(color=swatches[c] / 255, label=f'{CLASS_LABELS[c]} ({counts[c]})')
                   for c in CLASS_COLORS]
        kept = list(swatches.values())
        if ink_share > 0:
            ink_label = f'marker ink removed ({100 * ink_share:.1f} % of slide)'
            handles.append(mpatches.Patch(color=INK_COLOR, label=ink_label))
            kept.append(np.round(np.array(matplotlib.colors.to_rgb(INK_COLOR)) * 255))
        fig.legend(handles=handles, loc='lower center', ncol=len(handles), fontsize=8, frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0.35 / fig_h, 1, 1))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format='png', dpi=dpi)
        # A 256-colour palette keeps one preview per slide around 100-200 KB without visible loss.
        img = quantize_keeping(PIL.Image.open(buf).convert('RGB'), kept)
        with atomic_write(path) as tmp:
            img.save(tmp, format='png', optimize=True)
    finally:
        plt.close(fig)
