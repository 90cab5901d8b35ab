"""Slides through OpenSlide: real Aperio SVS metadata, pyramids written with tifffile, mpp-based reads, bad files."""

import numpy as np
import PIL.Image
import pytest

from dnnlib.util import UserError
from tools.histology import wsi

CMU_DIMS = (2220, 2967)
CMU_MPP = 0.499


@pytest.fixture(scope='module')
def pyramids(tmp_path_factory, he_image):
    """The real slide rewritten as 3-level pyramids: generic TIFF (resolution tags) and Aperio-style."""
    folder = tmp_path_factory.mktemp('pyramids')
    paths = {}
    for flavor in ('generic', 'aperio'):
        paths[flavor] = str(folder / f'cmu_{flavor}.tif')
        wsi.write_pyramid_tiff(paths[flavor], he_image, levels=3, mpp=CMU_MPP, flavor=flavor, objective_power=20)
    return paths


def test_real_svs_properties(he_slide_path, he_image):
    with wsi.open_slide(he_slide_path) as slide:
        assert slide.dimensions == CMU_DIMS
        assert slide.level_count == 1
        assert slide.mpp == pytest.approx(CMU_MPP)
        assert slide.objective_power == 20
        assert slide.vendor == 'aperio'
        region = slide.read_region(100, 200, 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        np.testing.assert_array_equal(region, he_image[200:232, 100:164])


@pytest.mark.parametrize('flavor', ['generic', 'aperio'])
def test_pyramid_levels_and_mpp(pyramids, he_image, flavor):
    with wsi.open_slide(pyramids[flavor]) as slide:
        assert slide.vendor == ('generic-tiff' if flavor == 'generic' else 'aperio')
        assert slide.level_count == 3
        assert slide.level_dimensions == ((2220, 2967), (1110, 1483), (555, 741))
        assert slide.mpp == pytest.approx(CMU_MPP)
        if flavor == 'aperio':
            assert slide.objective_power == 20
        # Level mpp follows the downsample: about 0.998 and 1.996 um/px.
        assert slide.level_mpp(1) == pytest.approx(CMU_MPP * 2, rel=1e-3)
        # The coarsest level not coarser than the request.
        assert slide.level_for_mpp(0.25) == 0
        assert slide.level_for_mpp(0.5) == 0
        assert slide.level_for_mpp(1.0) == 1
        assert slide.level_for_mpp(1.5) == 1
        assert slide.level_for_mpp(2.0) == 2
        assert slide.level_for_mpp(8.0) == 2
        # Lossless (deflate) pyramid: level 0 equals the source pixels.
        np.testing.assert_array_equal(slide.read_region(300, 400, 0, (50, 40)), he_image[400:440, 300:350])


def test_read_region_at_mpp(pyramids, he_image):
    with wsi.open_slide(pyramids['generic']) as slide:
        # 1.0 um/px: read 128 px at level 1 (0.998 um/px, within tolerance) without resampling.
        level, read = slide.read_size_for_mpp(128, 1.0)
        assert (level, read) == (1, 128)
        exact = slide.read_region(512, 512, 1, (128, 128))
        np.testing.assert_array_equal(slide.read_region_mpp(512, 512, 1.0, (128, 128)), exact)
        # 1.5 um/px: read at level 1 and shrink 192 -> 128; compare with a box-shrunk level-0 crop.
        level, read = slide.read_size_for_mpp(128, 1.5)
        assert level == 1 and read == round(128 * 1.5 / slide.level_mpp(1))
        got = slide.read_region_mpp(512, 512, 1.5, (128, 128)).astype(np.float64)
        extent = int(round(read * slide.level_downsamples[1]))
        ref = np.asarray(PIL.Image.fromarray(he_image[512:512 + extent, 512:512 + extent]).resize((128, 128),
                                                                                                 PIL.Image.BOX))
        assert got.shape == (128, 128, 3)
        assert np.abs(got - ref).mean() < 8  # same content; differences are resampling only


def test_thumbnail_geometry(he_slide_path, he_image):
    with wsi.open_slide(he_slide_path) as slide:
        thumb = slide.thumbnail(32)
    assert thumb.shape == (93, 70, 3)  # ceil(2967/32), ceil(2220/32)
    # Interior thumbnail pixels are box averages of their level-0 area (cell = 2220/70 x 2967/93 px).
    cx, cy = 2220 / 70, 2967 / 93
    for (i, j) in [(10, 10), (40, 35), (80, 60)]:
        y0, y1, x0, x1 = int(round(i * cy)), int(round((i + 1) * cy)), int(round(j * cx)), int(round((j + 1) * cx))
        ref = he_image[y0:y1, x0:x1].reshape(-1, 3).mean(0)
        assert np.abs(thumb[i, j].astype(np.float64) - ref).max() < 6


def test_plain_image_is_one_level_slide(tmp_path, he_image):
    path = str(tmp_path / 'tile.png')
    PIL.Image.fromarray(he_image[:300, :400]).save(path)
    with wsi.open_slide(path) as slide:
        assert slide.dimensions == (400, 300) and slide.level_count == 1
        assert slide.mpp is None
        np.testing.assert_array_equal(slide.read_region(10, 20, 0, (30, 40)), he_image[20:60, 10:40])
        with pytest.raises(UserError, match='no mpp'):
            slide.level_for_mpp(1.0)


def test_bad_files(tmp_path, he_slide_path):
    text = tmp_path / 'notes.svs'
    text.write_text('not a slide\n')
    with pytest.raises(UserError, match='notes.svs.*cannot open'):
        wsi.open_slide(str(text))
    with pytest.raises(UserError, match='no such slide'):
        wsi.open_slide(str(tmp_path / 'missing.svs'))
    data = open(he_slide_path, 'rb').read()
    truncated = tmp_path / 'truncated.svs'
    truncated.write_bytes(data[:len(data) // 3])
    with pytest.raises(UserError, match='truncated.svs'):
        with wsi.open_slide(str(truncated)) as slide:
            slide.read_region(0, 0, 0, slide.dimensions)


def test_thumbnail_sources_agree(tmp_path, he_image):
    # One-level generic TIFF: the band reader and a thumbnail made from the decoded level are the same pixels,
    # and both are box averages over each thumbnail cell.
    path = str(tmp_path / 'flat.tif')
    img = np.ascontiguousarray(he_image[:1000, :900])
    wsi.write_pyramid_tiff(path, img, levels=1, mpp=0.5)
    with wsi.open_slide(path) as slide:
        assert not slide.has_associated_thumbnail(32)
        banded = slide.thumbnail(32, band_rows=7)
        whole = slide.thumbnail(32, level_image=slide.read_level(0), level=0)
    np.testing.assert_array_equal(banded, whole)
    assert banded.shape == (32, 29, 3)
    ref = PIL.Image.fromarray(img).resize((29, 32), PIL.Image.BOX)
    assert np.abs(banded.astype(int) - np.asarray(ref)).max() <= 1


def test_associated_thumbnail_used_when_cheaper(he_slide_path, he_image):
    with wsi.open_slide(he_slide_path) as slide:
        assert slide.has_associated_thumbnail(32)       # 574x768 stored thumbnail, full-slide aspect ratio
        assert not slide.has_associated_thumbnail(2)    # coarser than asked for
        thumb = slide.thumbnail(32)
    ref = np.asarray(PIL.Image.fromarray(he_image).resize((70, 93), PIL.Image.BOX)).astype(int)
    assert np.abs(thumb.astype(int) - ref).mean() < 4


def test_mpp_enlargement_limit_and_plausible_range(he_slide_path):
    with wsi.open_slide(he_slide_path) as slide:
        assert slide.mpp_plausible
        # 0.499 um/px read at 0.26 um/px: 1.9x larger, allowed (128 px patches come from 67 px reads).
        assert slide.read_size_for_mpp(128, 0.26) == (0, 67)
        with pytest.raises(UserError, match=r'0\.499 um/px at level 0, so --mpp=0\.2 would enlarge it 2\.5x.*--level'):
            slide.read_size_for_mpp(128, 0.2)
