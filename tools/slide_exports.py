"""A slide map in the files pathologists' viewers open: QuPath GeoJSON tiles and ASAP XML regions.

- `<slide>.geojson`: a FeatureCollection for QuPath's File > Import objects (format of QuPath v0.4 and later:
  `properties.objectType`, `properties.classification = {name, color}`, `properties.measurements` as a
  name -> value object). One `tile` object per scored patch with its level-0 square, every score term and the
  tissue fraction as measurements, classified 'Anomaly' / 'Normal' by the threshold; the lesion outlines of the
  annotation file, when given, as `annotation` objects ('Tumor' / 'Exclusion').
- `<slide>_regions.xml`: connected patches at or above the threshold as ASAP XML polygons in level-0 pixels,
  the format of the CAMELYON16 annotations: outer outlines in group '_0' (metastasis), holes in group '_2'
  (normal tissue inside), so tools/histology/annotations.py and the CAMELYON16 evaluation read them back.

Both work on the patch grid (`PatchGrid`): one cell per grid position, a `step`-wide square centred on its
patch's centre (the patch itself at the default stride). The same grid carries the heat map TIFF and the viewer.
"""

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import scipy.ndimage
import skimage.measure

import dnnlib
from dnnlib import EasyDict
from dnnlib.util import UserError
from tools.histology import annotations as ann

ANOMALY_CLASS, NORMAL_CLASS = 'Anomaly', 'Normal'
CLASS_COLOURS = {ANOMALY_CLASS: [230, 40, 40], NORMAL_CLASS: [60, 140, 230], 'Tumor': [240, 200, 0],
                 'Exclusion': [120, 120, 120]}
REGION_GROUP, HOLE_GROUP = '_0', '_2'
CONTOUR_UPSAMPLE = 4   # cells are enlarged this much before tracing, so a traced corner is cut by 1/8 of a cell

#----------------------------------------------------------------------------
# The patch grid.

def grid_step(geom, stride=None):
    """Level-0 distance between neighbouring grid patches (tools/histology/patches.grid_candidates' step)."""
    stride = geom.size if stride is None else int(stride)
    return max(1, int(round(stride * geom.read_size / geom.size))) * geom.downsample


class PatchGrid:
    """Cells of the patch grid: cell (row, col) is the `step`-wide level-0 square centred on a patch's centre.

    x, y: level-0 top-left corners of the patches (on one regular grid); extent: their level-0 side."""

    def __init__(self, x, y, extent, step):
        self.x, self.y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.extent, self.step = float(extent), float(step)
        if len(self.x):
            x0, y0 = self.x.min(), self.y.min()
            self.cols = np.rint((self.x - x0) / self.step).astype(np.int64)
            self.rows = np.rint((self.y - y0) / self.step).astype(np.int64)
            self.shape = (int(self.rows.max()) + 1, int(self.cols.max()) + 1)
        else:
            x0 = y0 = 0.0
            self.cols = self.rows = np.zeros(0, dtype=np.int64)
            self.shape = (0, 0)
        # level-0 position of the top-left corner of cell (0, 0)
        self.origin = (x0 + self.extent / 2 - self.step / 2, y0 + self.extent / 2 - self.step / 2)

    def cells(self, values, fill=np.nan):
        """float64 [rows, cols] with each patch's value in its cell, `fill` where no patch was scored."""
        out = np.full(self.shape, fill, dtype=np.float64)
        out[self.rows, self.cols] = values
        return out

    def to_level0(self, rows, cols):
        """Level-0 (x, y) of fractional cell coordinates (0 = the top/left edge of cell 0)."""
        return self.origin[0] + np.asarray(cols) * self.step, self.origin[1] + np.asarray(rows) * self.step

#----------------------------------------------------------------------------
# Threshold.

def flagged(scores, threshold):
    """bool [N]: a patch is flagged when its score is at or above the threshold (never when it is NaN)."""
    values = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        return np.isfinite(values) & (values >= threshold)


def threshold_from_normal(score_arrays, quantile):
    """The `quantile` of the patch scores of normal slides (a list of arrays): the operating point at which that
    fraction of normal patches stays below the threshold."""
    if not 0 < quantile <= 1:
        raise UserError(f'--threshold-quantile must be in (0, 1], got {quantile}')
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in score_arrays]) if score_arrays else np.zeros(0)
    values = values[np.isfinite(values)]
    if not len(values):
        raise UserError('no scored patches on the normal slides to choose a threshold from')
    return float(np.quantile(values, quantile))

#----------------------------------------------------------------------------
# QuPath GeoJSON.

def _square(x, y, size):
    x, y, size = float(x), float(y), float(size)
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]


def _class(name):
    return dict(name=name, color=CLASS_COLOURS[name])


def tile_features(scores, threshold=None, measurement_fields=()):
    """One QuPath tile Feature per patch of `scores` (read_scores' columns): level-0 square, measurements, class."""
    marked = flagged(scores.score, threshold) if threshold is not None else None
    features = []
    for k in range(len(scores.index)):
        measurements = {}
        for key in measurement_fields:
            value = float(scores[key][k])
            if math.isfinite(value):  # QuPath reads a missing measurement as NaN; JSON has no NaN
                measurements[key] = value
        props = dict(objectType='tile', name=f'patch {int(scores.index[k])}', measurements=measurements)
        if marked is not None:
            props['classification'] = _class(ANOMALY_CLASS if marked[k] else NORMAL_CLASS)
        features.append(dict(type='Feature', geometry=dict(type='Polygon', coordinates=[
            _square(scores.x[k], scores.y[k], scores.size[k])]), properties=props))
    return features


def lesion_features(regions):
    """QuPath annotation Features of the annotation file's regions (tumour and exclusion, holes kept)."""
    names = {ann.TUMOR: 'Tumor', ann.EXCLUSION: 'Exclusion'}
    features = []
    for k, region in enumerate(regions or []):
        rings = [np.vstack([r, r[:1]]).tolist() if not np.array_equal(r[0], r[-1]) else r.tolist()
                 for r in region.rings]
        features.append(dict(type='Feature', geometry=dict(type='Polygon', coordinates=rings),
                             properties=dict(objectType='annotation', name=f'{names[region.kind]} {k}',
                                             classification=_class(names[region.kind]))))
    return features


def write_geojson(path, scores, threshold=None, regions=None, measurement_fields=()):
    collection = dict(type='FeatureCollection',
                      features=tile_features(scores, threshold, measurement_fields) + lesion_features(regions))
    with dnnlib.util.atomic_write(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(collection, f, allow_nan=False, separators=(',', ':'))
    return collection

#----------------------------------------------------------------------------
# ASAP XML regions.

def _trace(mask):
    """Outline of one 4-connected component without holes, as fractional (row, col) cell coordinates [K, 2]."""
    k = CONTOUR_UPSAMPLE
    big = np.pad(np.kron(mask.astype(np.uint8), np.ones((k, k), np.uint8)), 1)
    # fully_connected='low': the component is face-connected and the background around it fully connected,
    # the same connectivity that label() and the hole filling below use.
    contours = skimage.measure.find_contours(big.astype(np.float32), 0.5, fully_connected='low')
    ring = max(contours, key=len)
    ring = skimage.measure.approximate_polygon(ring, tolerance=0.05)  # drop the points along straight edges
    return (ring - 1 + 0.5) / k  # upsampled pixel centre (i + 0.5) / k in cell units; the pad shifts by one


def score_regions(grid, marked):
    """Connected flagged patches (4-neighbours on the patch grid): list of EasyDict(outline, holes, patches) with
    level-0 [K, 2] (x, y) rings; holes are unflagged cells enclosed by the region."""
    if not np.any(marked):
        return []  # nothing flagged (or no patch at all: a slide without tissue)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[grid.rows[marked], grid.cols[marked]] = True
    labels = skimage.measure.label(mask, connectivity=1)
    regions = []
    for prop in skimage.measure.regionprops(labels):
        r0, c0, _, _ = prop.bbox
        component = prop.image
        filled = scipy.ndimage.binary_fill_holes(component, structure=np.ones((3, 3), bool))
        rings = []
        for part in [filled] + [h for h in _components(filled & ~component)]:
            rc = _trace(part)
            x, y = grid.to_level0(rc[:, 0] + r0, rc[:, 1] + c0)
            rings.append(np.stack([x, y], axis=1))
        regions.append(EasyDict(outline=rings[0], holes=rings[1:], patches=int(component.sum())))
    return regions


def _components(mask):
    holes = skimage.measure.label(mask, connectivity=2)  # the background is fully connected
    return [holes == i for i in range(1, int(holes.max()) + 1)]


def asap_regions_xml(regions, name='Anomaly'):
    root = ET.Element('ASAP_Annotations')
    annotations = ET.SubElement(root, 'Annotations')
    count = 0
    for k, region in enumerate(regions):
        for ring, group in [(region.outline, REGION_GROUP)] + [(h, HOLE_GROUP) for h in region.holes]:
            node = ET.SubElement(annotations, 'Annotation', Name=f'{name} {k}' + ('' if group == REGION_GROUP else
                                                                                  f' hole {count}'),
                                 Type='Polygon', PartOfGroup=group, Color='#F4FA58' if group == REGION_GROUP
                                 else '#64FE2E')
            coords = ET.SubElement(node, 'Coordinates')
            ring = ring[:-1] if len(ring) > 1 and np.array_equal(ring[0], ring[-1]) else ring
            for order, (x, y) in enumerate(ring.tolist()):
                ET.SubElement(coords, 'Coordinate', Order=str(order), X=f'{x:.2f}', Y=f'{y:.2f}')
            count += group == HOLE_GROUP
    groups = ET.SubElement(root, 'AnnotationGroups')
    for group, colour in ((REGION_GROUP, '#F4FA58'), (HOLE_GROUP, '#64FE2E')):
        ET.SubElement(ET.SubElement(groups, 'Group', Name=group, PartOfGroup='None', Color=colour), 'Attributes')
    ET.indent(root)
    return ET.tostring(root, encoding='unicode', xml_declaration=True) + '\n'


def write_regions_xml(path, grid, scores, threshold):
    regions = score_regions(grid, flagged(scores, threshold))
    with dnnlib.util.atomic_write(path) as tmp:
        with open(tmp, 'w') as f:
            f.write(asap_regions_xml(regions))
    return regions
