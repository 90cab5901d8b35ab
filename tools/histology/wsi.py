"""Whole-slide images through OpenSlide: geometry, resolution, region reads at a level or at an mpp.

Every format OpenSlide reads (Aperio SVS, generic tiled TIFF, Hamamatsu NDPI, MIRAX, Leica SCN,
DICOM, Ventana BIF, ...) opens through openslide-python with the bundled openslide-bin library.
Plain images (PNG, JPEG, a TIFF OpenSlide rejects) open as one-level slides with unknown mpp.
"""

import math
import os

import numpy as np
import openslide
import PIL.Image

from dnnlib.util import UserError

SLIDE_EXTENSIONS = ('.svs', '.tif', '.tiff', '.ndpi', '.mrxs', '.scn', '.dcm', '.vms', '.vmu', '.bif', '.svslide')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')

# A slide this many times over the requested mpp still counts as "at" that mpp (scanner rounding).
MPP_TOLERANCE = 0.02
# Resolutions scanners and microscope cameras produce; outside, the metadata is most likely wrong (unit mix-ups).
PLAUSIBLE_MPP = (0.1, 20.0)
# --mpp may enlarge the finest level at most this much; more would invent pixels (and, on a slide whose
# metadata is off by 1000x, plan millions of patches).
MAX_ENLARGEMENT = 2.0


def is_slide_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in SLIDE_EXTENSIONS


def _mean_mpp(properties) -> float | None:
    try:
        mpp_x = float(properties[openslide.PROPERTY_NAME_MPP_X])
        mpp_y = float(properties[openslide.PROPERTY_NAME_MPP_Y])
    except (KeyError, ValueError):
        return None
    if not (mpp_x > 0 and mpp_y > 0):
        return None
    return (mpp_x + mpp_y) / 2


class Slide:
    """An open slide. Coordinates of regions are (x, y) at level 0, sizes are (width, height) at the level read."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.name = os.path.splitext(os.path.basename(path))[0]
        self._assoc_thumb = None
        if not os.path.isfile(path):
            raise UserError(f'{path}: no such slide file')
        ext = os.path.splitext(path)[1].lower()
        try:
            if ext in IMAGE_EXTENSIONS:
                self._osr = openslide.ImageSlide(path)
            else:
                self._osr = self._open_openslide(path, ext)
            self._validate()
        except UserError:
            raise
        except (openslide.OpenSlideError, OSError, ValueError, PIL.Image.DecompressionBombError) as err:
            raise UserError(f'{path}: cannot open as a slide ({_one_line(err)})') from None

    @staticmethod
    def _open_openslide(path, ext):
        try:
            return openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError:
            if ext in ('.tif', '.tiff'):
                return openslide.ImageSlide(path)  # A flat TIFF: one level, mpp unknown.
            raise UserError(f'{path}: cannot open as a slide (format not recognised by OpenSlide)') from None

    def _validate(self):
        w, h = self._osr.dimensions
        if w <= 0 or h <= 0:
            raise UserError(f'{self.path}: slide has no pixels')

    # Geometry and resolution.

    @property
    def dimensions(self) -> tuple[int, int]:
        return tuple(self._osr.dimensions)

    @property
    def level_count(self) -> int:
        return self._osr.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._osr.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._osr.level_downsamples)

    @property
    def properties(self) -> dict:
        return dict(self._osr.properties)

    @property
    def mpp(self) -> float | None:
        """Microns per pixel at level 0 (mean of x and y), None when the file does not say."""
        return _mean_mpp(self._osr.properties)

    @property
    def objective_power(self) -> float | None:
        value = self._osr.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    @property
    def vendor(self) -> str | None:
        return self._osr.properties.get(openslide.PROPERTY_NAME_VENDOR)

    @property
    def mpp_plausible(self) -> bool:
        """False when the file states a resolution outside what scanners produce (None counts as plausible)."""
        return self.mpp is None or PLAUSIBLE_MPP[0] <= self.mpp <= PLAUSIBLE_MPP[1]

    def level_mpp(self, level: int) -> float | None:
        return None if self.mpp is None else self.mpp * self.level_downsamples[level]

    def best_level_for_downsample(self, downsample: float) -> int:
        return self._osr.get_best_level_for_downsample(downsample)

    def check_level(self, level: int) -> None:
        if not 0 <= level < self.level_count:
            raise UserError(f'{self.path}: level {level} does not exist (slide has {self.level_count} levels)')

    def level_for_mpp(self, mpp: float) -> int:
        """The coarsest level not coarser than `mpp`: read there, then downscale (never upscale) to `mpp`."""
        if self.mpp is None:
            raise UserError(f'{self.path}: slide has no mpp in its metadata; use --level instead of --mpp')
        if mpp <= 0:
            raise UserError(f'--mpp must be positive, got {mpp}')
        best = 0
        for level in range(self.level_count):
            if self.level_mpp(level) <= mpp * (1 + MPP_TOLERANCE):
                best = level
        return best

    def read_size_for_mpp(self, size: int, mpp: float) -> tuple[int, int]:
        """(level, pixels to read at that level) so that the read region spans `size` pixels at `mpp`."""
        level = self.level_for_mpp(mpp)
        ratio = mpp / self.level_mpp(level)
        if abs(ratio - 1) <= MPP_TOLERANCE:
            ratio = 1.0
        if ratio * MAX_ENLARGEMENT < 1:
            raise UserError(f'{self.path}: the slide says {self.mpp:g} um/px at level 0, so --mpp={mpp:g} would '
                            f'enlarge it {round(1 / ratio, 1):g}x (at most {MAX_ENLARGEMENT:g}x allowed); if that '
                            f'resolution is wrong, read pixels as stored with --level=0 instead of --mpp')
        return level, max(1, int(round(size * ratio)))

    # Pixels.

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """uint8 [H, W, 3] RGB of the region at `level` whose top-left corner is (x, y) at level 0.

        Transparent pixels (outside the scanned area of sparse formats) become white, like glass.
        """
        w, h = int(size[0]), int(size[1])
        try:
            img = self._osr.read_region((int(x), int(y)), int(level), (w, h))
        except (openslide.OpenSlideError, OSError, ValueError) as err:
            raise UserError(f'{self.path}: cannot read region at ({x}, {y}) level {level} ({_one_line(err)})') from None
        if img.mode == 'RGBA' and img.getchannel('A').getextrema()[0] < 255:
            white = PIL.Image.new('RGBA', img.size, (255, 255, 255, 255))
            white.alpha_composite(img)
            img = white
        return np.asarray(img.convert('RGB'))

    def read_level(self, level: int) -> np.ndarray:
        """The whole of `level` as uint8 [H, W, 3] (only sensible for small levels)."""
        self.check_level(level)
        return self.read_region(0, 0, level, self.level_dimensions[level])

    def read_region_mpp(self, x: int, y: int, mpp: float, size: tuple[int, int]) -> np.ndarray:
        """uint8 [H, W, 3] region of `size` pixels at `mpp`: read at the nearest finer level, then resize."""
        level = self.level_for_mpp(mpp)
        scale = mpp / self.level_mpp(level)
        read = (max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale))))
        region = self.read_region(x, y, level, read)
        if read == tuple(size):
            return region
        return np.asarray(PIL.Image.fromarray(region).resize(tuple(size), PIL.Image.LANCZOS))

    def thumbnail_size(self, downscale: float) -> tuple[int, int]:
        w, h = self.dimensions
        return max(1, int(math.ceil(w / downscale))), max(1, int(math.ceil(h / downscale)))

    def thumbnail(self, downscale: float = 32, band_rows: int = 256, level_image: np.ndarray | None = None,
                  level: int | None = None) -> np.ndarray:
        """uint8 [h, w, 3] image of the whole slide, `downscale` times smaller than level 0 (sizes rounded up).

        Read from the best pyramid level in horizontal bands so a gigapixel slide never sits in memory at once,
        or made from `level_image`, the whole of `level` already decoded. Each band is box-filtered onto exactly
        its rows of the thumbnail (PIL resize with a sub-pixel source box).
        """
        tw, th = self.thumbnail_size(downscale)
        if level_image is None:
            level = self.best_level_for_downsample(downscale)
            img = self._associated_thumbnail(downscale)
            if img is not None:
                if img.mode == 'RGBA':
                    white = PIL.Image.new('RGBA', img.size, (255, 255, 255, 255))
                    white.alpha_composite(img)
                    img = white
                return np.asarray(img.convert('RGB').resize((tw, th), PIL.Image.BOX))
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        sy = lh / th  # level rows per thumbnail row
        bands = []
        for r0 in range(0, th, band_rows):
            r1 = min(th, r0 + band_rows)
            y0 = int(math.floor(r0 * sy))
            y1 = min(lh, int(math.ceil(r1 * sy)))
            if level_image is not None:
                region = level_image[y0:y1]
            else:
                region = self.read_region(0, int(round(y0 * ds)), level, (lw, y1 - y0))
            band = PIL.Image.fromarray(region).resize((tw, r1 - r0), PIL.Image.BOX,
                                                      box=(0, r0 * sy - y0, lw, min(r1 * sy, lh) - y0))
            bands.append(np.asarray(band))
        return np.concatenate(bands, axis=0)

    def _associated_thumbnail(self, downscale: float) -> PIL.Image.Image | None:
        """The scanner's stored thumbnail when it covers the whole slide (same aspect ratio within 0.5 %), is at
        least as fine as `downscale`, and is much cheaper than decoding the pyramid level; else None."""
        if not isinstance(self._osr, openslide.OpenSlide) or 'thumbnail' not in self._osr.associated_images:
            return None
        if self._assoc_thumb is None:
            try:
                self._assoc_thumb = self._osr.associated_images['thumbnail']
            except openslide.OpenSlideError:
                return None
        tw, th = self.thumbnail_size(downscale)
        lw, lh = self.level_dimensions[self.best_level_for_downsample(downscale)]
        (w, h), (aw, ah) = self.dimensions, self._assoc_thumb.size
        if aw < tw or ah < th or abs((aw / ah) / (w / h) - 1) > 0.005 or lw * lh < 4 * aw * ah:
            return None
        return self._assoc_thumb

    def has_associated_thumbnail(self, downscale: float) -> bool:
        return self._associated_thumbnail(downscale) is not None

    def describe(self) -> dict:
        """JSON-ready summary that the dataset metadata keeps for every slide."""
        return dict(path=self.path, name=self.name, vendor=self.vendor, dimensions=list(self.dimensions),
                    level_count=self.level_count, level_dimensions=[list(d) for d in self.level_dimensions],
                    level_downsamples=list(self.level_downsamples), mpp=self.mpp,
                    objective_power=self.objective_power)

    def close(self):
        self._osr.close()

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()


def open_slide(path: str) -> Slide:
    return Slide(path)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def write_pyramid_tiff(path: str, rgb: np.ndarray, levels: int = 3, mpp: float | None = None, flavor: str = 'generic',
                       tile: int = 256, objective_power: float | None = None) -> None:
    """Save a uint8 [H, W, 3] image as a tiled, deflate-compressed pyramidal TIFF that OpenSlide reads.

    flavor 'generic': resolution tags (pixels per centimetre) carry the mpp; 'aperio': an Aperio-style
    ImageDescription with `MPP = ...` and `AppMag = ...`, which OpenSlide reads as an Aperio slide.
    Each level halves the previous one (box filter).
    """
    import tifffile
    if flavor not in ('generic', 'aperio'):
        raise ValueError(f'unknown flavor {flavor!r}')
    h, w = rgb.shape[:2]
    pyramid = [rgb]
    for _ in range(1, levels):
        prev = pyramid[-1]
        if min(prev.shape[:2]) < 2 * tile:
            break
        pyramid.append(np.asarray(PIL.Image.fromarray(prev).resize((prev.shape[1] // 2, prev.shape[0] // 2),
                                                                     PIL.Image.BOX)))
    with tifffile.TiffWriter(path) as tw:
        for i, img in enumerate(pyramid):
            kwargs = dict(tile=(tile, tile), photometric='rgb', compression='zlib', metadata=None)
            if flavor == 'generic':
                if mpp is not None:
                    ppcm = 1e4 / (mpp * w / img.shape[1])
                    kwargs.update(resolution=(ppcm, ppcm), resolutionunit='CENTIMETER')
                kwargs['subfiletype'] = 0 if i == 0 else 1  # reduced-resolution image
            else:
                desc = f'Aperio Image Library HistoSynth \n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) Deflate'
                if i == 0:
                    if objective_power is not None:
                        desc += f'|AppMag = {objective_power:g}'
                    if mpp is not None:
                        desc += f'|MPP = {mpp}'
                else:
                    desc += f' -> {img.shape[1]}x{img.shape[0]}'
                kwargs['description'] = desc
            tw.write(img, **kwargs)
