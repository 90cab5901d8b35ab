"""Annotations: ASAP XML and GeoJSON parsing, rasterisation on the thumbnail grid, patch labels."""

import json

import numpy as np
import pytest

from dnnlib.util import UserError
from tools.histology import annotations as ann

ASAP_XML = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="2" X="768.0" Y="768.0" />
        <Coordinate Order="0" X="256.0" Y="256.0" />
        <Coordinate Order="1" X="768.0" Y="256.0" />
        <Coordinate Order="3" X="256.0" Y="768.0" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E">
      <Coordinates>
        <Coordinate Order="0" X="384" Y="384" /><Coordinate Order="1" X="512" Y="384" />
        <Coordinate Order="2" X="512" Y="512" /><Coordinate Order="3" X="384" Y="512" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 2" Type="Dot" PartOfGroup="None"><Coordinates>
      <Coordinate Order="0" X="1" Y="1" /></Coordinates></Annotation>
  </Annotations>
  <AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#FF0000"><Attributes /></Group></AnnotationGroups>
</ASAP_Annotations>
"""


def test_parse_asap_xml(tmp_path):
    path = tmp_path / 'tumor_001.xml'
    path.write_text(ASAP_XML)
    regions = ann.load_annotations(str(path))
    assert [r.kind for r in regions] == [ann.TUMOR, ann.EXCLUSION]  # the "None" dot is ignored
    np.testing.assert_array_equal(regions[0].rings[0], [[256, 256], [768, 256], [768, 768], [256, 768]])


def test_rasterize_aligned_square_is_exact(tmp_path):
    path = tmp_path / 'a.xml'
    path.write_text(ASAP_XML)
    regions = ann.load_annotations(str(path))
    cell = (32.0, 32.0)
    tumor = ann.rasterize(regions, ann.TUMOR, (40, 40), cell)
    excl = ann.rasterize(regions, ann.EXCLUSION, (40, 40), cell)
    ref = np.zeros((40, 40), bool)
    ref[8:24, 8:24] = True  # level-0 [256, 768) covers mask cells 8..23
    np.testing.assert_array_equal(tumor, ref)
    ref = np.zeros((40, 40), bool)
    ref[12:16, 12:16] = True
    np.testing.assert_array_equal(excl, ref)


def test_geojson_holes_multipolygon_and_classes(tmp_path):
    square = lambda x0, y0, x1, y1: [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    features = {'type': 'FeatureCollection', 'features': [
        {'type': 'Feature', 'properties': {'classification': {'name': 'Tumour', 'color': [200, 0, 0]}},
         'geometry': {'type': 'Polygon', 'coordinates': [square(0, 0, 320, 320), square(64, 64, 128, 128)]}},
        {'type': 'Feature', 'properties': {'classification': {'name': 'Ignore*'}},
         'geometry': {'type': 'MultiPolygon', 'coordinates': [[square(640, 0, 704, 64)], [square(0, 640, 64, 704)]]}},
        {'type': 'Feature', 'properties': {'classification': {'name': 'Stroma'}},
         'geometry': {'type': 'Polygon', 'coordinates': [square(0, 0, 900, 900)]}},
    ]}
    path = tmp_path / 'slide.geojson'
    path.write_text(json.dumps(features))
    regions = ann.load_annotations(str(path))
    assert sorted(r.kind for r in regions) == [ann.EXCLUSION, ann.EXCLUSION, ann.TUMOR]
    tumor = ann.rasterize(regions, ann.TUMOR, (30, 30), (32, 32))
    ref = np.zeros((30, 30), bool)
    ref[0:10, 0:10] = True
    ref[2:4, 2:4] = False  # the hole
    np.testing.assert_array_equal(tumor, ref)
    excl = ann.rasterize(regions, ann.EXCLUSION, (30, 30), (32, 32))
    assert excl.sum() == 8 and excl[0:2, 20:22].all() and excl[20:22, 0:2].all()
    # A bare list of features works too.
    path.write_text(json.dumps(features['features'][:1]))
    assert [r.kind for r in ann.load_annotations(str(path))] == [ann.TUMOR]


def test_label_patches():
    tumor = np.array([0.0, 0.0, 0.3, 0.5, 1.0, 1.0])
    excl = np.array([0.0, 0.2, 0.0, 0.0, 0.0, 0.01])
    np.testing.assert_array_equal(ann.label_patches(tumor, excl, 0.5),
                                  [ann.LABEL_NORMAL, ann.LABEL_SKIP, ann.LABEL_SKIP, ann.LABEL_TUMOR, ann.LABEL_TUMOR,
                                   ann.LABEL_SKIP])
    np.testing.assert_array_equal(ann.label_patches(tumor, excl * 0, 0.25)[2], ann.LABEL_TUMOR)


def test_regions_must_lie_on_the_slide(tmp_path):
    path = tmp_path / 'tumor_001.xml'
    path.write_text(ASAP_XML)  # regions span x, y 256..768
    assert len(ann.load_annotations(str(path), (769, 769))) == 2
    assert len(ann.load_annotations(str(path), (400, 400))) == 2  # partly on the slide: fine, clipped when rasterised
    with pytest.raises(UserError, match=r'tumor_001.xml: tumor region 0 \(x 256..768, y 256..768\) lies outside the '
                                        r'slide \(200 x 1000 px\)'):
        ann.load_annotations(str(path), (200, 1000))
    with pytest.raises(UserError, match='exclusion region 1'):  # the tumour region touches the slide, this does not
        ann.check_on_slide(ann.load_annotations(str(path)), (1000, 300), str(path))
    gj = tmp_path / 'b.geojson'
    gj.write_text(json.dumps({'type': 'Feature', 'properties': {'classification': {'name': 'Tumor'}},
                              'geometry': {'type': 'Polygon', 'coordinates': [[[-50, -50], [-10, -50], [-10, -10]]]}}))
    with pytest.raises(UserError, match='lies outside the slide'):
        ann.load_annotations(str(gj), (100, 100))


def test_bad_annotations(tmp_path):
    bad = tmp_path / 'broken.xml'
    bad.write_text('<ASAP_Annotations><Annotations><Annotation PartOfGroup="_0">')
    with pytest.raises(UserError, match='broken.xml: cannot parse ASAP XML'):
        ann.load_annotations(str(bad))
    bad.write_text('<ASAP_Annotations><Annotations><Annotation PartOfGroup="_0"><Coordinates>'
                   '<Coordinate Order="0" X="a" Y="1"/></Coordinates></Annotation></Annotations></ASAP_Annotations>')
    with pytest.raises(UserError, match='numeric'):
        ann.load_annotations(str(bad))
    bad = tmp_path / 'broken.geojson'
    bad.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(UserError, match='cannot parse GeoJSON'):
        ann.load_annotations(str(bad))
    folder = tmp_path / 'ann'
    folder.mkdir()
    (folder / 'tumor_009.xml').write_text(ASAP_XML)
    ann.check_annotation_folder(str(folder), ['tumor_009', 'normal_001'])
    with pytest.raises(UserError, match='tumor_009.xml: annotation for a slide that is not in --source'):
        ann.check_annotation_folder(str(folder), ['tumor_001'])
