"""Real H&E made harder, for the tissue-detection tests: marker ink drawn over the slide, the slide cut into
small fragments, a TMA-like grid of small discs. Every maker returns the picture and its ground truth."""

import numpy as np
import PIL.Image
import PIL.ImageDraw
import scipy.ndimage

GLASS_RGB = (238, 237, 233)

# Marker colours as light transmitted through the ink (multiplied onto what lies beneath).
MARKERS = {'blue': (40, 80, 220), 'green': (30, 150, 60), 'black': (22, 22, 26), 'navy': (25, 30, 90)}


def stained(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel ground truth of stained tissue, independent of the detector: darker than glass and coloured."""
    rgb = rgb.astype(np.int16)
    return (rgb.mean(axis=2) < 215) & (rgb.max(axis=2) - rgb.min(axis=2) > 12)


def draw_marker(he_image: np.ndarray, seed: int = 0, strokes_per_colour: int = 2):
    """(inked image, marker mask): translucent strokes of every MARKERS colour across the tissue, and one blob.

    Strokes run between random points of the tissue's bounding box, 10-45 px wide, with soft edges; the mask
    is True wherever ink shows at all (coverage above 10 %), so faint stroke edges count as marker.
    """
    rng = np.random.default_rng(seed)
    h, w = he_image.shape[:2]
    ys, xs = np.nonzero(stained(he_image[::8, ::8]))
    box = (xs.min() * 8, ys.min() * 8, xs.max() * 8, ys.max() * 8)
    transmitted = np.ones((h, w, 3), np.float32)
    marker = np.zeros((h, w), bool)
    for name, colour in MARKERS.items():
        layer = PIL.Image.new('L', (w, h), 0)
        draw = PIL.ImageDraw.Draw(layer)
        for _ in range(strokes_per_colour):
            points = [(float(rng.uniform(box[0], box[2])), float(rng.uniform(box[1], box[3]))) for _ in range(3)]
            draw.line(points, fill=255, width=int(rng.integers(10, 46)), joint='curve')
        if name == 'navy':  # a filled blob, as when a pathologist circles and shades a region
            cx, cy = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
            draw.ellipse((cx - 90, cy - 60, cx + 90, cy + 60), fill=255)
        coverage = scipy.ndimage.gaussian_filter(np.asarray(layer, np.float32) / 255, 1.5)
        for c in range(3):  # ink of opacity 0.9 lets through (1 - 0.9 * coverage * (1 - its colour))
            transmitted[..., c] *= 1 - 0.9 * coverage * (1 - colour[c] / 255)
        marker |= coverage > 0.1
    return (he_image * transmitted).round().astype(np.uint8), marker


def slide_ink(rgb: np.ndarray) -> np.ndarray:
    """The teal margin dye cmu-small-region carries at its tissue edges: greener than red, which H&E never is."""
    rgb = rgb.astype(np.int16)
    return rgb[..., 1] > rgb[..., 0] + 20


def dense_centres(he_image: np.ndarray, diameter: int, min_stained: float = 0.85) -> np.ndarray:
    """int [N, 2] (y, x) centres of diameter-wide windows of he_image that are at least `min_stained` tissue
    (on a 4 px lattice)."""
    density = scipy.ndimage.uniform_filter(stained(he_image[::4, ::4]).astype(np.float32), diameter // 4,
                                           mode='constant')
    r = diameter // 8 + 1
    inner = np.zeros_like(density, bool)
    inner[r:-r, r:-r] = density[r:-r, r:-r] >= min_stained
    centres = np.argwhere(inner) * 4
    if len(centres) == 0:
        raise RuntimeError(f'no {diameter} px window of the slide is {min_stained:.0%} tissue')
    return centres


def scatter_pieces(he_image: np.ndarray, canvas_hw: tuple[int, int], diameters: list[int], shape: str,
                   seed: int = 0, gap: int = 140):
    """(canvas, labels): pieces of real tissue on white glass, laid out on a grid of cells.

    shape 'disc': round TMA cores; 'fragment': irregular blobs (an ellipse with a bitten-off side).
    labels: int32 [H, W], k + 1 inside piece k, 0 on glass.
    """
    rng = np.random.default_rng(seed)
    h, w = canvas_hw
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = GLASS_RGB
    canvas = np.clip(canvas.astype(np.int16) + rng.integers(-3, 4, size=canvas.shape), 0, 255).astype(np.uint8)
    labels = np.zeros((h, w), np.int32)
    cell = max(diameters) + gap
    cols = (w - gap) // cell
    if cols * ((h - gap) // cell) < len(diameters):
        raise ValueError('canvas too small for the pieces')
    centres = dense_centres(he_image, max(diameters))
    for k, d in enumerate(diameters):
        cy, cx = centres[rng.integers(len(centres))]
        yy, xx = np.mgrid[:d, :d] - (d - 1) / 2
        if shape == 'disc':
            inside = yy ** 2 + xx ** 2 <= (d / 2) ** 2
        else:
            a, b = d / 2, d / 2 * rng.uniform(0.65, 1.0)
            t = rng.uniform(0, np.pi)
            u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
            inside = (u / a) ** 2 + (v / b) ** 2 <= 1
            bite = rng.uniform(0, 2 * np.pi)
            inside &= (xx - 0.7 * a * np.cos(bite)) ** 2 + (yy - 0.7 * a * np.sin(bite)) ** 2 > (0.25 * d) ** 2
        src = he_image[cy - d // 2:cy - d // 2 + d, cx - d // 2:cx - d // 2 + d]
        row, col = divmod(k, cols)
        top = gap + row * cell + int(rng.integers(0, cell - d - gap // 2 + 1))
        left = gap + col * cell + int(rng.integers(0, cell - d - gap // 2 + 1))
        view = canvas[top:top + d, left:left + d]
        view[inside] = src[inside]
        labels[top:top + d, left:left + d][inside] = k + 1
    return canvas, labels
