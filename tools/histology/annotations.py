"""Region annotations: CAMELYON16 ASAP XML and QuPath GeoJSON, rasterised onto the thumbnail grid.

Both formats give polygons in level-0 pixel coordinates. Each polygon is a tumour region or an exclusion
region; anything else in the file is ignored. A patch is tumour when at least `tumor_min` of it lies in
tumour regions, normal when none of it does, skipped in between or when it touches an exclusion region.
"""

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import skimage.draw

from dnnlib import EasyDict
from dnnlib.util import UserError

ANNOTATION_EXTENSIONS = ('.xml', '.geojson', '.json')
TUMOR, EXCLUSION = 'tumor', 'exclusion'

# CAMELYON16: groups _0 and _1 (and "Tumor") outline metastases; _2 outlines normal islands inside them.
ASAP_GROUPS = {'tumor': TUMOR, '_0': TUMOR, '_1': TUMOR, '_2': EXCLUSION, 'exclusion': EXCLUSION}
GEOJSON_CLASSES = {'tumor': TUMOR, 'tumour': TUMOR, 'exclusion': EXCLUSION, 'ignore': EXCLUSION, 'ignore*': EXCLUSION}

LABEL_SKIP, LABEL_NORMAL, LABEL_TUMOR = -1, 0, 1

# ----------------------------------------------------------------------------
# Parsing. A region is EasyDict(kind=TUMOR|EXCLUSION, rings=[exterior, hole, ...]) with float64 [K, 2] (x, y) rings.


def load_annotations(path: str, dimensions: tuple[int, int] | None = None) -> list[EasyDict]:
    """The regions of one annotation file; with the slide's level-0 `dimensions`, also checked to lie on it."""
    ext = os.path.splitext(path)[1].lower()
    if ext == '.xml':
        regions = parse_asap_xml(path)
    elif ext in ('.geojson', '.json'):
        regions = parse_geojson(path)
    else:
        raise UserError(f'{path}: unknown annotation format (expected {", ".join(ANNOTATION_EXTENSIONS)})')
    if dimensions is not None:
        check_on_slide(regions, dimensions, path)
    return regions


def check_on_slide(regions: list[EasyDict], dimensions: tuple[int, int], path: str) -> None:
    """A region wholly outside the slide means the wrong slide's file, or coordinates at another level or in
    micrometres: stop, rather than label every patch normal and report a meaningless AUROC."""
    w, h = dimensions
    for k, region in enumerate(regions):
        (x0, y0), (x1, y1) = region.rings[0].min(axis=0), region.rings[0].max(axis=0)
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            raise UserError(f'{path}: {region.kind} region {k} (x {x0:g}..{x1:g}, y {y0:g}..{y1:g}) lies outside the '
                            f'slide ({w} x {h} px); annotations must be level-0 pixels of this slide')


def parse_asap_xml(path: str) -> list[EasyDict]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise UserError(f'{path}: cannot parse ASAP XML ({err})') from None
    annotations = root.find('Annotations') if root.tag != 'Annotations' else root
    if annotations is None:
        raise UserError(f'{path}: not an ASAP annotation file (no <Annotations> element)')
    regions = []
    for ann in annotations.findall('Annotation'):
        kind = ASAP_GROUPS.get(ann.get('PartOfGroup', '').strip().lower())
        if kind is None:
            continue
        coords = ann.findall('Coordinates/Coordinate')
        try:
            order = [int(float(c.get('Order', i))) for i, c in enumerate(coords)]
            ring = np.array([[float(c.get('X')), float(c.get('Y'))] for c in coords], dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError(f'{path}: annotation {ann.get("Name")!r} has a coordinate without numeric X/Y') from None
        ring = ring[np.argsort(order, kind='stable')].reshape(-1, 2)
        if len(ring) >= 3:
            regions.append(EasyDict(kind=kind, rings=[ring]))
    return regions


def parse_geojson(path: str) -> list[EasyDict]:
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f'{path}: cannot parse GeoJSON ({err})') from None
    if isinstance(data, dict) and data.get('type') == 'FeatureCollection':
        features = data.get('features', [])
    elif isinstance(data, dict) and data.get('type') == 'Feature':
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise UserError(f'{path}: expected a GeoJSON FeatureCollection, Feature or list of features')
    regions = []
    try:
        for feature in features:
            kind = GEOJSON_CLASSES.get(_geojson_class_name(feature).strip().lower())
            geometry = feature.get('geometry') or {}
            if kind is None:
                continue
            if geometry.get('type') == 'Polygon':
                polygons = [geometry['coordinates']]
            elif geometry.get('type') == 'MultiPolygon':
                polygons = geometry['coordinates']
            else:
                continue  # points, lines: no area
            for rings in polygons:
                rings = [np.asarray(ring, dtype=np.float64).reshape(-1, 2)[:, :2] for ring in rings]
                if rings and len(rings[0]) >= 3:
                    regions.append(EasyDict(kind=kind, rings=rings))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f'{path}: malformed GeoJSON feature ({err})') from None
    return regions


def _geojson_class_name(feature) -> str:
    props = feature.get('properties') or {}
    cls = props.get('classification')
    if isinstance(cls, dict):
        return str(cls.get('name', ''))
    if isinstance(cls, str):
        return cls
    return str(props.get('name', ''))


# ----------------------------------------------------------------------------
# Rasterisation and labels.


def rasterize(regions: list[EasyDict], kind: str, shape: tuple[int, int], cell: tuple[float, float]) -> np.ndarray:
    """bool [H, W] on a grid whose pixel (i, j) covers level-0 [j*cell_x, (j+1)*cell_x) x [i*cell_y, ...).

    A grid pixel is inside when its centre is inside the polygon (holes of a polygon cut it out).
    """
    out = np.zeros(shape, dtype=bool)
    for region in regions:
        if region.kind != kind:
            continue
        inside = _ring_mask(region.rings[0], shape, cell)
        for hole in region.rings[1:]:
            inside &= ~_ring_mask(hole, shape, cell)
        out |= inside
    return out


def _ring_mask(ring, shape, cell):
    # skimage places pixel (r, c) at integer coordinates; level-0 point p lies at p/cell - 0.5 in that frame.
    rows = ring[:, 1] / cell[1] - 0.5
    cols = ring[:, 0] / cell[0] - 0.5
    rr, cc = skimage.draw.polygon(rows, cols, shape=shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rr, cc] = True
    return mask


def label_patches(tumor_fraction: np.ndarray, exclusion_fraction: np.ndarray, tumor_min: float = 0.5) -> np.ndarray:
    """int64 [N]: LABEL_TUMOR, LABEL_NORMAL or LABEL_SKIP per patch from its coverage fractions."""
    if not 0 < tumor_min <= 1:
        raise UserError(f'--tumor-min must be in (0, 1], got {tumor_min}')
    labels = np.full(len(tumor_fraction), LABEL_SKIP, dtype=np.int64)
    labels[tumor_fraction <= 0] = LABEL_NORMAL
    labels[tumor_fraction >= tumor_min] = LABEL_TUMOR
    labels[exclusion_fraction > 0] = LABEL_SKIP
    return labels


def find_annotation(folder: str, slide_name: str) -> str | None:
    """The annotation file for a slide in `folder`, matched by the slide's file-name stem."""
    for ext in ANNOTATION_EXTENSIONS:
        path = os.path.join(folder, slide_name + ext)
        if os.path.isfile(path):
            return path
    return None


def check_annotation_folder(folder: str, slide_names: list[str]) -> None:
    """Every annotation file in `folder` must belong to one of the slides (catches typos and wrong folders)."""
    if not os.path.isdir(folder):
        raise UserError(f'--annotations: {folder} is not a folder')
    names = set(slide_names)
    for fname in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(fname)
        if ext.lower() in ANNOTATION_EXTENSIONS and stem not in names:
            raise UserError(f'{os.path.join(folder, fname)}: annotation for a slide that is not in --source ({stem})')
