"""Patch candidates, exact tissue fractions (vs a brute-force overlap sum), Fig 2 classes, strip reads in workers."""

import io

import numpy as np
import PIL.Image
import pytest

from dnnlib import EasyDict
from dnnlib.util import UserError
from tools.histology import patches as pt
from tools.histology import wsi


def brute_force_fraction(mask, cell, x, y, extent):
    """Sum over mask cells of value x overlap area, from the separable 1-D overlaps of the box with each cell."""
    def overlaps(start, n, size):
        edges = np.arange(n + 1) * size
        return np.clip(np.minimum(edges[1:], start + extent) - np.maximum(edges[:-1], start), 0, None)
    ox = overlaps(x, mask.shape[1], cell[0])
    oy = overlaps(y, mask.shape[0], cell[1])
    return float((mask * oy[:, None] * ox[None, :]).sum() / (extent * extent))


def test_box_fractions_exact():
    rng = np.random.default_rng(1)
    mask = rng.random((23, 17)) < 0.5
    cell = (31.7, 28.3)  # non-integer level-0 pixels per mask pixel, as on real slides
    w, h = mask.shape[1] * cell[0], mask.shape[0] * cell[1]
    for extent in (10.0, 64.0, 150.5):
        xy = np.stack([rng.uniform(0, w - extent, 200), rng.uniform(0, h - extent, 200)], axis=1)
        got = pt.box_fractions(mask, cell, xy, extent)
        ref = [brute_force_fraction(mask, cell, x, y, extent) for x, y in xy]
        np.testing.assert_allclose(got, ref, atol=1e-9)
    # Boxes aligned with mask cells give plain means.
    np.testing.assert_allclose(pt.box_fractions(mask, (32, 32), np.array([[64, 96]]), 64), mask[3:5, 2:4].mean())


def test_classify_thresholds():
    f = np.array([0.0, 0.1, 0.10001, 0.5, 0.89999, 0.9, 1.0])
    expected = [pt.CLASS_BACKGROUND] * 2 + [pt.CLASS_PARTIAL] * 3 + [pt.CLASS_TISSUE] * 2
    np.testing.assert_array_equal(pt.classify(f), expected)


@pytest.fixture(scope='module')
def pyramid(tmp_path_factory, he_image):
    path = str(tmp_path_factory.mktemp('pyr') / 'cmu.tif')
    wsi.write_pyramid_tiff(path, he_image, levels=2, mpp=0.499)
    return path


def test_grid_and_random_candidates(he_slide_path, pyramid):
    with wsi.open_slide(he_slide_path) as slide:
        geom = pt.patch_geometry(slide, 256)
        xy = pt.grid_candidates(geom)
        assert len(xy) == (2220 // 256) * (2967 // 256)
        assert (xy[:, 0] + 256 <= 2220).all() and (xy[:, 1] + 256 <= 2967).all()
        assert set(np.unique(xy[:, 0])) == set(range(0, 2220 - 255, 256))
        assert len(pt.grid_candidates(geom, stride=128)) == ((2220 - 256) // 128 + 1) * ((2967 - 256) // 128 + 1)
        rnd = pt.random_candidates(geom, 40, np.random.default_rng(0), no_overlap=True)
        assert len(rnd) == 40
        dx = np.abs(rnd[:, None, 0] - rnd[None, :, 0])
        dy = np.abs(rnd[:, None, 1] - rnd[None, :, 1])
        clash = (dx < 256) & (dy < 256)
        assert clash.sum() == len(rnd)  # only each box with itself
        with pytest.raises(UserError, match='larger than the slide'):
            pt.patch_geometry(slide, 4096)
    with wsi.open_slide(pyramid) as slide:
        geom = pt.patch_geometry(slide, 128, level=1)
        assert geom.extent == pytest.approx(128 * slide.level_downsamples[1])
        xy = pt.grid_candidates(geom)
        assert len(xy) == (1110 // 128) * (1483 // 128)
        geom = pt.patch_geometry(slide, 128, mpp=1.5)
        assert geom.level == 1 and geom.read_size == round(128 * 1.5 / slide.level_mpp(1))


def decode(png):
    return np.asarray(PIL.Image.open(io.BytesIO(png)))


@pytest.mark.parametrize('workers', [1, 2])
def test_reader_matches_direct_reads(pyramid, workers):
    with wsi.open_slide(pyramid) as slide:
        for level, mpp in ((0, None), (1, None), (None, 1.5)):
            geom = pt.patch_geometry(slide, 64, level=level, mpp=mpp)
            xy = pt.grid_candidates(geom)[::3][:40]  # gaps between neighbours exercise strip planning
            with pt.PatchReader(workers) as reader:
                got = dict(reader.read(pyramid, xy, geom))
            assert sorted(got) == list(range(len(xy)))
            for i, (x, y) in enumerate(xy):
                ref = slide.read_region(x, y, geom.level, (geom.read_size, geom.read_size))
                if geom.read_size != 64:
                    ref = np.asarray(PIL.Image.fromarray(ref).resize((64, 64), PIL.Image.LANCZOS))
                np.testing.assert_array_equal(decode(got[i]), ref)


def test_strips_group_rows():
    geom = EasyDict(downsample=1.0, read_size=64)
    xy = np.array([[0, 0], [64, 0], [192, 0], [448, 0], [0, 64], [64, 64]])
    strips = pt.plan_strips(xy, geom)
    # A gap of one patch still shares the read; a wider gap or a new row starts a new strip.
    assert strips == [(0, 0, 256, [(0, 0), (1, 64), (2, 192)]), (448, 0, 64, [(3, 0)]),
                      (0, 64, 128, [(4, 0), (5, 64)])]


@pytest.mark.parametrize('level', [0, 1])
def test_in_memory_cut_matches_strip_reads(pyramid, level):
    with wsi.open_slide(pyramid) as slide:
        geom = pt.patch_geometry(slide, 64, level=level)
        xy = pt.grid_candidates(geom)[5::7][:30]
        image = slide.read_level(level)
    with pt.PatchReader(2) as reader:
        from_memory = dict(reader.read(pyramid, xy, geom, level_image=image))
    with pt.PatchReader(1) as reader:
        from_strips = dict(reader.read(pyramid, xy, geom))
    assert sorted(from_memory) == sorted(from_strips) == list(range(len(xy)))
    if level == 0:
        assert from_memory == from_strips  # byte-identical PNGs
    else:
        # Level 1 downsample is 2.0003 (2967/1483 rows): OpenSlide maps integer level-0 coordinates to fractional
        # level coordinates and resamples (shift < 0.25 px), while memory cuts whole level pixels at the rounded
        # position. Same place and content; only that sub-pixel shift differs (sharp H&E edges: a few levels).
        for i, (x, y) in enumerate(xy):
            xl, yl = int(round(x / geom.downsample)), int(round(y / geom.downsample))
            np.testing.assert_array_equal(decode(from_memory[i]), image[yl:yl + 64, xl:xl + 64])
            diff = np.abs(decode(from_memory[i]).astype(int) - decode(from_strips[i]).astype(int))
            assert diff.mean() < 10


@pytest.mark.parametrize('compress_level', [0, 1, 6])
def test_png_encoder_round_trip(he_crops, compress_level):
    rgb = he_crops(32, 1)[0]
    for img in (rgb, rgb[..., 1]):
        png = pt.encode_png(img, compress_level)
        np.testing.assert_array_equal(decode(png), img)
    stored, deflated = pt.encode_png(rgb, 0), pt.encode_png(rgb, 6)
    assert len(stored) > 32 * 32 * 3 and len(deflated) < len(stored)
