"""The paper's Fig 2 panel for one slide: thumbnail, tissue-filtered thumbnail, patch grid by tissue class."""

import os

import matplotlib
import numpy as np

from dnnlib.util import atomic_write

from .patches import CLASS_BACKGROUND, CLASS_PARTIAL, CLASS_TISSUE

CLASS_COLORS = {CLASS_TISSUE: '#1a9850', CLASS_PARTIAL: '#fee08b', CLASS_BACKGROUND: '#d73027'}
CLASS_LABELS = {CLASS_TISSUE: '≥ 90 % tissue', CLASS_PARTIAL: '10–90 %', CLASS_BACKGROUND: '≤ 10 % tissue'}


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
        counts = {}
        for cls, color in CLASS_COLORS.items():
            sel = np.asarray(classes) == cls
            counts[cls] = int(sel.sum())
            boxes = [mpatches.Rectangle((x / cell[0] - 0.5, y / cell[1] - 0.5), extent / cell[0], extent / cell[1])
                     for x, y in np.asarray(xy)[sel]]
            axes[2].add_collection(PatchCollection(boxes, facecolor=color, edgecolor=color, alpha=0.45, linewidth=0.3))
        handles = [mpatches.Patch(color=CLASS_COLORS[c], label=f'{CLASS_LABELS[c]} ({counts[c]})') for c in CLASS_COLORS]
        fig.legend(handles=handles, loc='lower center', ncol=3, fontsize=8, frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format='png', dpi=dpi)
    finally:
        plt.close(fig)
