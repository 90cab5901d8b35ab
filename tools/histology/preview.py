"""The paper's Fig 2 panel for one slide: thumbnail, tissue-filtered thumbnail, patch grid by tissue class."""

import io
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
    palette = np.array([matplotlib.colors.to_rgba(CLASS_COLORS[c], alpha=0.45) for c in order])
    overlay = palette[winner]
    overlay[dist > 0.5 * extent / min(cell) + 0.5] = 0  # far from every patch: transparent
    return overlay


def save_preview(path: str, thumb: np.ndarray, mask: np.ndarray, slide_dims: tuple[int, int], xy: np.ndarray,
                 extent: float, classes: np.ndarray, title: str = '', dpi: int = 100) -> None:
    """Write a three-panel PNG of the slide `slide_dims` (level 0): `thumb` is any-size picture of the slide,
    `mask` the tissue mask on its own grid, patch boxes are level-0 (x, y, extent)."""
    matplotlib.use('Agg', force=False)
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection

    h, w = thumb.shape[:2]
    # Mask shown on the picture's grid (nearest mask pixel); deep-histopath shows removed pixels black.
    rows = np.minimum((np.arange(h) + 0.5) * mask.shape[0] / h, mask.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(w) + 0.5) * mask.shape[1] / w, mask.shape[1] - 1).astype(np.int64)
    filtered = np.where(mask[rows][:, cols][..., None], thumb, 0).astype(np.uint8)
    cell = (slide_dims[0] / w, slide_dims[1] / h)
    panel_h = 4.0
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_h * w / h + 0.6, panel_h + 0.8), dpi=dpi)
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
                axes[2].add_collection(PatchCollection(boxes, facecolor=color, edgecolor=color, alpha=0.45,
                                                       linewidth=0.3))
        else:
            # Too many boxes to draw one by one (a gigapixel slide at 64 px): colour each picture pixel by the
            # most frequent class among the patches centred in it.
            axes[2].imshow(class_overlay((h, w), cell, xy, extent, classes), interpolation='nearest')
        handles = [mpatches.Patch(color=CLASS_COLORS[c], label=f'{CLASS_LABELS[c]} ({counts[c]})') for c in CLASS_COLORS]
        fig.legend(handles=handles, loc='lower center', ncol=3, fontsize=8, frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format='png', dpi=dpi)
        # A 256-colour palette keeps one preview per slide around 100-200 KB without visible loss.
        img = PIL.Image.open(buf).convert('RGB').quantize(colors=256, method=PIL.Image.Quantize.MEDIANCUT)
        with atomic_write(path) as tmp:
            img.save(tmp, format='png', optimize=True)
    finally:
        plt.close(fig)
