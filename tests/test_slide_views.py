"""The slide map where pathologists look: QuPath GeoJSON, ASAP XML regions, the heat-map TIFF and the browser viewer,
made by tools.slide_map on real H&E (CMU-1-Small-Region with tumour tissue pasted in and outlined in ASAP XML) and
read back with independent parsers (shapely, tifffile, OpenSlide, our own annotation parser, headless Chromium)."""

import csv
import hashlib
import json
import os
import re
import shutil

import matplotlib
import numpy as np
import openslide
import PIL.Image
import pytest
import scipy.ndimage
import shapely.geometry
import tifffile
import torch
from click.testing import CliRunner

from dnnlib import assets
from networks import stylegan2
from tools import slide_exports, slide_map, slide_viewer
from tools.histology import annotations as ann

from browser import chromium
from projection_nets import save_snapshot, tiny_stylegan2
from slide_map_inputs import LESION_BOX, save_encoder, write_lesion_slide

GEOMETRY = ['--patch-size', '64', '--level', '1', '--batch', '32']
STEP = 128          # level-0 grid step: 64 px patches at level 1 (downsample 2), stride = patch size
QUANTILE = 0.8      # --threshold-quantile of the second run
VIEWER_LEVEL = 11   # one level below full resolution: 1 um/px on this 0.499 um/px slide
MPP = 0.499


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def mapped(tmp_path_factory, he_image):
    """Two runs over the lesion slide: `plain` with no threshold and no viewer; `full` resumes from plain's CSV
    (nothing scored again) with --threshold-from that CSV and --viewer."""
    folder = tmp_path_factory.mktemp('views')
    with PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)) as img:
        tile = np.asarray(img.convert('RGB'))
    slide, xml = write_lesion_slide(folder, he_image, tile)
    G, _ = tiny_stylegan2(16)
    torch.manual_seed(1)  # a D without minibatch-stddev: a patch's score does not depend on its batch-mates
    D = stylegan2.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=512, channel_max=32,
                                epilogue_kwargs=dict(mbstd_num_channels=0)).eval().requires_grad_(False)
    net, enc = save_snapshot(folder / 'net.pkl', G, D), save_encoder(folder / 'enc.pkl', G, D)
    base = ['--network', net, '--encoder', enc, '--slide', slide, '--annotations', xml, '--device', 'cpu'] + GEOMETRY
    plain, full = folder / 'plain', folder / 'full'
    res = CliRunner().invoke(slide_map.main, base + ['--outdir', str(plain)])
    assert res.exit_code == 0, res.output
    full.mkdir()
    shutil.copy(plain / 'lesion.csv', full / 'lesion.csv')
    normal = folder / 'normal.csv'  # the threshold's "normal slide": the same CSV, a known set of scores
    shutil.copy(plain / 'lesion.csv', normal)
    try:  # the viewer needs OpenSeadragon: from the cache, or from the npm registry with npm
        assets.fetch('openseadragon', verbose=False)
        no_viewer = None
    except assets.AssetError as err:
        no_viewer = f'no viewer without OpenSeadragon ({err})'
    viewer = [] if no_viewer else ['--viewer', '--viewer-max-level', str(VIEWER_LEVEL)]
    res = CliRunner().invoke(slide_map.main, base + ['--outdir', str(full), '--resume', '--threshold-from',
                                                     str(normal), '--threshold-quantile', str(QUANTILE)] + viewer)
    assert res.exit_code == 0, res.output
    rows = read_csv(full / 'lesion.csv')
    scores = np.array([float(r['score']) for r in rows])
    return dict(folder=folder, slide=slide, xml=xml, plain=plain, full=full, rows=rows, scores=scores,
                threshold=float(np.quantile(scores, QUANTILE)), output=res.output, net=net, enc=enc,
                no_viewer=no_viewer)


def patch_grid_of(rows):
    """bool flags on the patch grid, by hand: cell (row, col) = ((y - y_min) / STEP, (x - x_min) / STEP)."""
    x = np.array([int(r['x']) for r in rows])
    y = np.array([int(r['y']) for r in rows])
    return (y - y.min()) // STEP, (x - x.min()) // STEP, x.min(), y.min()

#----------------------------------------------------------------------------
# QuPath GeoJSON.

def test_geojson_tiles_are_the_csv(mapped):
    with open(mapped['full'] / 'lesion.geojson') as f:
        data = json.load(f)
    assert data['type'] == 'FeatureCollection'
    tiles = [f for f in data['features'] if f['properties']['objectType'] == 'tile']
    notes = [f for f in data['features'] if f['properties']['objectType'] == 'annotation']
    assert len(tiles) == len(mapped['rows']) > 50
    for feature, row in zip(tiles, mapped['rows']):
        shape = shapely.geometry.shape(feature['geometry'])
        x, y, s = int(row['x']), int(row['y']), int(row['size'])
        assert s == STEP and shape.is_valid and shape.bounds == (x, y, x + s, y + s) and shape.area == s * s
        found = feature['properties']['measurements']
        for key in ('score', 'residual', 'features', 'critic', 'tissue_fraction', 'label'):
            assert found[key] == pytest.approx(float(row[key]), rel=1e-12), key
        assert 'lpips' not in found  # NaN in the CSV (not measured): left out, as QuPath reads a missing value
        flagged = float(row['score']) >= mapped['threshold']
        assert feature['properties']['classification']['name'] == ('Anomaly' if flagged else 'Normal')
    assert sum(f['properties']['classification']['name'] == 'Anomaly' for f in tiles) == \
        int((mapped['scores'] >= mapped['threshold']).sum()) > 5
    # the lesion outline, as drawn in the ASAP XML; our annotation parser reads it back from the GeoJSON too
    assert len(notes) == 1 and notes[0]['properties']['classification']['name'] == 'Tumor'
    assert shapely.geometry.shape(notes[0]['geometry']).equals(shapely.geometry.box(*LESION_BOX))
    back, = ann.load_annotations(str(mapped['full'] / 'lesion.geojson'))
    assert back.kind == ann.TUMOR and shapely.geometry.Polygon(back.rings[0]).equals(shapely.geometry.box(*LESION_BOX))


def test_without_threshold_tiles_are_unclassified_and_no_regions(mapped):
    with open(mapped['plain'] / 'lesion.geojson') as f:
        tiles = [t for t in json.load(f)['features'] if t['properties']['objectType'] == 'tile']
    assert len(tiles) == len(mapped['rows']) and not any('classification' in t['properties'] for t in tiles)
    assert not (mapped['plain'] / 'lesion_regions.xml').exists()
    assert not (mapped['plain'] / 'lesion_viewer').exists()

#----------------------------------------------------------------------------
# ASAP XML regions.

def test_regions_round_trip_through_the_annotation_parser(mapped):
    w, h = openslide.OpenSlide(mapped['slide']).dimensions
    regions = ann.load_annotations(str(mapped['full'] / 'lesion_regions.xml'), (w, h))
    outlines = [shapely.geometry.Polygon(r.rings[0]) for r in regions if r.kind == ann.TUMOR]
    holes = [shapely.geometry.Polygon(r.rings[0]) for r in regions if r.kind == ann.EXCLUSION]
    assert all(p.is_valid for p in outlines + holes)
    flagged = mapped['scores'] >= mapped['threshold']
    # every patch centre: inside an outline and outside every hole exactly when the patch is flagged
    for row, marked in zip(mapped['rows'], flagged):
        centre = shapely.geometry.Point(int(row['x']) + STEP / 2, int(row['y']) + STEP / 2)
        inside = any(p.contains(centre) for p in outlines) and not any(p.contains(centre) for p in holes)
        assert inside == marked, row
    # one outline per 4-connected group of flagged patches, counted with scipy on the hand-made grid
    rr, cc, _, _ = patch_grid_of(mapped['rows'])
    grid = np.zeros((rr.max() + 1, cc.max() + 1), bool)
    grid[rr[flagged], cc[flagged]] = True
    _, count = scipy.ndimage.label(grid)
    assert len(outlines) == count >= 2
    # the outlines cover the flagged squares: corners are cut by 1/8 of a patch, nothing else is missing or extra
    area = sum(p.area for p in outlines) - sum(p.area for p in holes)
    assert area == pytest.approx(flagged.sum() * STEP ** 2, rel=0.03)
    # the enclosed unflagged cells are the holes (filled with scipy, background 8-connected)
    filled = scipy.ndimage.binary_fill_holes(grid, structure=np.ones((3, 3)))
    assert sum(p.area for p in holes) == pytest.approx((filled & ~grid).sum() * STEP ** 2, rel=0.1, abs=1)


def test_region_tracing_on_a_hand_made_grid():
    """A ring of flagged cells round an unflagged one, a lone cell touching it diagonally, and a far cell."""
    flags = np.zeros((6, 7), bool)
    flags[1:4, 1:4] = True
    flags[2, 2] = False
    flags[4, 4] = True
    flags[0, 6] = True
    rows, cols = np.nonzero(np.ones_like(flags))
    grid = slide_exports.PatchGrid(1000 + cols * 100, 500 + rows * 100, extent=100, step=100)
    regions = slide_exports.score_regions(grid, flags[rows, cols])
    boxes = sorted((tuple(np.round(r.outline.min(0))) + tuple(np.round(r.outline.max(0))), r.patches, len(r.holes))
                   for r in regions)
    assert boxes == [((1100, 600, 1400, 900), 8, 1), ((1400, 900, 1500, 1000), 1, 0), ((1600, 500, 1700, 600), 1, 0)]
    ring = next(r for r in regions if r.patches == 8)
    hole = shapely.geometry.Polygon(ring.holes[0])
    assert hole.bounds == pytest.approx((1200, 700, 1300, 800), abs=100 / 8 + 1e-9) and hole.contains(
        shapely.geometry.Point(1250, 750))

def test_exports_of_a_slide_without_patches(tmp_path):
    """No tissue, nothing scored: an empty FeatureCollection, an ASAP file without regions, a transparent TIFF."""
    from dnnlib import EasyDict
    from tools import heatmap_tiff
    empty = np.zeros(0)
    scores = EasyDict(index=empty.astype(int), x=empty, y=empty, size=empty, score=empty, tissue_fraction=empty)
    grid = slide_exports.PatchGrid(empty, empty, extent=128, step=128)
    slide_exports.write_geojson(str(tmp_path / 'a.geojson'), scores, 0.5, None, ('score', 'tissue_fraction'))
    assert json.loads((tmp_path / 'a.geojson').read_text()) == dict(type='FeatureCollection', features=[])
    assert slide_exports.write_regions_xml(str(tmp_path / 'a.xml'), grid, empty, 0.5) == []
    assert ann.load_annotations(str(tmp_path / 'a.xml')) == []
    heatmap_tiff.write_heatmap_tiff(str(tmp_path / 'a.tif'), grid, empty, (1000, 700), mpp=0.5)
    with tifffile.TiffFile(tmp_path / 'a.tif') as tif:
        assert [p.shape for p in tif.pages] == [(700, 1000, 4), (350, 500, 4)]
        assert not tif.pages[0].asarray().any()

#----------------------------------------------------------------------------
# The heat-map TIFF.

def expected_colours(mapped):
    vmin, vmax = np.percentile(mapped['scores'], [1, 99])
    rgba = matplotlib.colormaps['inferno']((mapped['scores'] - vmin) / (vmax - vmin))
    return np.round(np.clip(rgba, 0, 1) * 255).astype(int)[:, :3]


def test_heatmap_tiff_in_tifffile_and_openslide(mapped):
    path = str(mapped['full'] / 'lesion_heatmap.tif')
    w, h = openslide.OpenSlide(mapped['slide']).dimensions
    colours = expected_colours(mapped)
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert pages[0].shape == (h, w, 4) and pages[0].is_tiled and len(pages) >= 3
        for i, page in enumerate(pages):
            assert page.shape[:2] == (-(-h // 2 ** i), -(-w // 2 ** i))  # each level halves, rounded up
            num, den = page.tags['XResolution'].value
            assert page.tags['ResolutionUnit'].value == 3 and num / den * MPP * 2 ** i == pytest.approx(1e4, rel=2e-3)
            level = page.asarray()
            for row, colour in list(zip(mapped['rows'], colours))[::5]:
                cx, cy = (int(row['x']) + STEP / 2) / 2 ** i, (int(row['y']) + STEP / 2) / 2 ** i
                assert np.abs(level[int(cy), int(cx), :3].astype(int) - colour).max() <= 1, (i, row['index'])
                assert level[int(cy), int(cx), 3] == 255
            assert level[0, 0, 3] == 0  # the top-left corner is glass: not scored, transparent
        info = json.loads(pages[0].description)
        assert info['vmin'] == pytest.approx(np.percentile(mapped['scores'], 1))
    osr = openslide.OpenSlide(path)
    assert osr.dimensions == (w, h) and osr.level_count == len(pages)
    assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(MPP, rel=1e-3)
    row, colour = mapped['rows'][3], colours[3]
    for level in range(osr.level_count):
        pixel = np.asarray(osr.read_region((int(row['x']) + 60, int(row['y']) + 60), level, (1, 1)))[0, 0]
        assert pixel[3] == 255 and np.abs(pixel[:3].astype(int) - colour).max() <= 1, level
    osr.close()

#----------------------------------------------------------------------------
# The viewer's files.

def read_data_js(folder):
    text = (folder / 'data.js').read_text()
    assert text.startswith('window.SLIDE = ') and text.rstrip().endswith(';')
    return json.loads(text[len('window.SLIDE = '):].rstrip().rstrip(';'))  # NaN: Python's json reads it too


def test_viewer_files(mapped):
    if mapped['no_viewer']:
        pytest.skip(mapped['no_viewer'])
    folder = mapped['full'] / 'lesion_viewer'
    assert re.search(r'lesion: viewer in [\d.]+ s, [\d.]+ MB \(\d+ tiles, levels 0..11 of 12', mapped['output'])
    digest = hashlib.sha256((folder / 'openseadragon.min.js').read_bytes()).hexdigest()
    assert digest == assets.get_asset('openseadragon').sources[0].sha256
    data = read_data_js(folder)
    assert (data['width'], data['height'], data['mpp']) == (2220, 2967, MPP)
    assert data['threshold'] == pytest.approx(mapped['threshold'], rel=1e-12)
    assert data['tiles']['maxLevel'] == VIEWER_LEVEL and data['tiles']['scale'] == 2
    assert (data['tiles']['width'], data['tiles']['height']) == (1110, 1484)
    # the tile pyramid: levels 0..11, the finest one of 254 px tiles with a 1 px overlap
    assert sorted(int(n) for n in os.listdir(folder / 'slide_files')) == list(range(VIEWER_LEVEL + 1))
    assert len(os.listdir(folder / 'slide_files' / '11')) == 5 * 6
    with PIL.Image.open(folder / 'slide_files' / '11' / '1_2.jpeg') as img:
        tile = np.asarray(img.convert('RGB')).astype(float)
    assert tile.shape == (256, 256, 3)  # 254 + an overlap pixel on each side
    image = np.asarray(PIL.Image.open(mapped['slide']).convert('RGB'))  # level 0 of the written slide
    x0, y0 = 2 * (254 - 1), 2 * (2 * 254 - 1)
    expected = np.asarray(PIL.Image.fromarray(image[y0:y0 + 512, x0:x0 + 512]).resize((256, 256), PIL.Image.BOX))
    assert np.abs(tile - expected).mean() < 6 and np.abs(tile - 255).mean() > 30
    # the table holds the CSV; images were kept for the highest-scoring patches (all of them here)
    fields = data['fields']
    for row, shown in zip(mapped['rows'], data['patches']):
        assert shown[fields.index('index')] == int(row['index'])
        assert shown[fields.index('score')] == float(row['score'])
    assert sorted(data['images']) == sorted(int(r['index']) for r in mapped['rows'])
    # the query image is the patch as the network saw it: the level-1 region, resized to 16 px
    row = mapped['rows'][int(np.argmax(mapped['scores']))]
    with PIL.Image.open(folder / 'patches' / f'{row["index"]}_query.png') as img:
        query = np.asarray(img.convert('RGB')).astype(float)
    osr = openslide.OpenSlide(mapped['slide'])
    region = osr.read_region((int(row['x']), int(row['y'])), 1, (64, 64)).convert('RGB')
    osr.close()
    expected = np.asarray(region.resize((16, 16), PIL.Image.LANCZOS)).astype(float)
    # (the patch reader's resampling differs from this one by a few levels; another patch differs by tens)
    assert query.shape == (16, 16, 3) and np.abs(query - expected).mean() < 3
    with PIL.Image.open(folder / 'patches' / f'{row["index"]}_reconstruction.png') as img:
        assert img.size == (16, 16) and np.abs(np.asarray(img.convert('RGB')).astype(float) - query).mean() > 1


def test_viewer_levels():
    # CMU-1-Small-Region: 13 deep-zoom levels (12 = 0.499 um/px), 2 um/px is level 10 (1.996 um/px)
    assert slide_viewer.deepzoom_levels((2220, 2967)) == 13
    assert slide_viewer.default_max_level((2220, 2967), 0.499) == 10
    # a CAMELYON16 slide, 100 000 x 200 000 px at 0.243 um/px: level 18 is the slide, 15 is 1.94 um/px
    assert slide_viewer.deepzoom_levels((100000, 200000)) == 19
    assert slide_viewer.default_max_level((100000, 200000), 0.243) == 15
    assert slide_viewer.default_max_level((100000, 200000), None) == 18  # no resolution known: all of it
    assert slide_viewer.default_max_level((500, 400), 4.0) == 9  # coarser than 2 um/px already: never beyond


@pytest.mark.parametrize('case', ['max-level', 'both-thresholds', 'threshold-from-missing', 'not-a-csv'])
def test_bad_view_options_one_line_nothing_written(mapped, tmp_path, case):
    extra = {'max-level': ['--viewer', '--viewer-max-level', '13'],
             'both-thresholds': ['--threshold', '1', '--threshold-from', str(mapped['folder'] / 'normal.csv')],
             'threshold-from-missing': ['--threshold-from', str(tmp_path / 'nope')],
             'not-a-csv': ['--threshold-from', mapped['xml']]}[case]
    outdir = tmp_path / 'out'
    res = CliRunner().invoke(slide_map.main, ['--network', mapped['net'], '--encoder', mapped['enc'], '--slide',
                                              mapped['slide'], '--outdir', str(outdir), '--device', 'cpu']
                             + GEOMETRY + extra)
    assert res.exit_code == 1 and res.output.startswith('Error: ') and len(res.output.strip().splitlines()) == 1, \
        res.output
    assert not outdir.exists()

#----------------------------------------------------------------------------
# The viewer in a real browser.

PROBE = """<script>
window.addEventListener('load', function () {
  const v = window.osdViewer, S = window.SLIDE, target = %(target)s;
  const full = S.tiles.width * S.tiles.scale;
  const wait = function (ms) { return new Promise(function (done) { setTimeout(done, ms); }); };
  const report = {};
  const run = async function () {
    // zoom in: the target patch and a patch's width round it fill the view
    const pad = 1.5 * target.size;
    v.viewport.fitBounds(new OpenSeadragon.Rect((target.x - pad) / full, (target.y - pad) / full,
                                                (target.size + 2 * pad) / full, (target.size + 2 * pad) / full), true);
    await wait(2500);
    // the overlay off, then on again at full opacity; outlines off (they would cover pixels we compare)
    const toggle = document.getElementById('overlay-toggle');
    const heat = document.getElementById('heat');
    toggle.click();
    await wait(500);  // a few redraws later the overlay is still hidden
    report.hidden = {display: getComputedStyle(heat).display, state: window.viewerState.overlay};
    toggle.click();
    const slider = document.getElementById('overlay-opacity');
    slider.value = '100';
    slider.dispatchEvent(new Event('input'));
    document.getElementById('outline-toggle').click();
    // a mouse click on the patch's centre, at the screen point the viewer puts it
    const p = v.viewport.pixelFromPoint(new OpenSeadragon.Point((target.x + target.size / 2) / full,
                                                                (target.y + target.size / 2) / full), true);
    const box = v.container.getBoundingClientRect();
    const at = document.elementFromPoint(box.left + p.x, box.top + p.y);
    const init = {bubbles: true, cancelable: true, composed: true, pointerId: 1, pointerType: 'mouse', isPrimary: true,
                  button: 0, buttons: 1, clientX: box.left + p.x, clientY: box.top + p.y};
    at.dispatchEvent(new PointerEvent('pointerdown', init));
    at.dispatchEvent(new PointerEvent('pointerup', Object.assign({}, init, {buttons: 0})));
    await wait(2500);
    const tl = v.viewport.pointFromPixel(new OpenSeadragon.Point(0, 0), true);
    const br = v.viewport.pointFromPixel(new OpenSeadragon.Point(box.width, box.height), true);
    Object.assign(report, {state: window.viewerState, clickedOn: at.tagName,
      view: {left: box.left, top: box.top, width: box.width, height: box.height,
             x0: tl.x * full, y0: tl.y * full, x1: br.x * full, y1: br.y * full},
      heat: {display: getComputedStyle(heat).display, opacity: getComputedStyle(heat).opacity,
             complete: heat.complete, naturalWidth: heat.naturalWidth},
      title: (document.getElementById('patch-title') || {}).textContent,
      scores: Array.from(document.querySelectorAll('#patch-scores tr')).map(function (tr) {
        return {field: tr.dataset.field, value: tr.dataset.value, shown: tr.querySelector('td').textContent}; }),
      images: Array.from(document.querySelectorAll('#patch-images img')).map(function (img) {
        const r = img.getBoundingClientRect();
        return {id: img.id, src: img.getAttribute('src'), complete: img.complete, naturalWidth: img.naturalWidth,
                x: r.left, y: r.top, w: r.width, h: r.height}; })});
    const out = document.createElement('pre');
    out.id = 'viewer-check';
    out.style.display = 'none';
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  };
  const guarded = function () {
    run().catch(function (err) {
      const out = document.createElement('pre');
      out.id = 'viewer-check';
      out.textContent = JSON.stringify({error: String(err && err.stack || err)});
      document.body.appendChild(out);
    });
  };
  if (v.world.getItemCount() > 0) guarded(); else v.addOnceHandler('open', guarded);
});
</script>"""


def test_viewer_in_chromium(mapped, tmp_path):
    """Zoom in on the highest-scoring patch, toggle the overlay, click the patch: the DOM shows its scores as the CSV
    has them and its three images loaded; the screenshot shows slide tiles where no patch was scored, the heat-map
    colour of each scored cell, and the patch images where the DOM puts them."""
    if mapped['no_viewer']:
        pytest.skip(mapped['no_viewer'])
    folder = mapped['full'] / 'lesion_viewer'
    k = int(np.argmax(mapped['scores']))
    row = mapped['rows'][k]
    target = dict(x=int(row['x']), y=int(row['y']), size=int(row['size']))
    page = (folder / 'index.html').read_text()
    probe = folder / 'probe.html'  # beside index.html, so that its relative paths hold
    probe.write_text(page.replace('</body>', PROBE % dict(target=json.dumps(target)) + '</body>'))
    size = '--window-size=1100,760'
    try:
        dom = chromium(size, '--dump-dom', probe.as_uri(), budget_ms=15000)
        shot = tmp_path / 'shot.png'
        chromium(size, f'--screenshot={shot}', probe.as_uri(), budget_ms=15000)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="viewer-check"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    report = json.loads(found.group(1).replace('&quot;', '"').replace('&amp;', '&'))
    assert 'error' not in report, report
    state = report['state']
    assert state['tilesLoaded'] > 5 and state['tilesFailed'] == 0 and state['finestLevelLoaded'] == VIEWER_LEVEL
    assert report['hidden'] == dict(display='none', state=False)
    assert report['heat']['display'] == 'block' and report['heat']['opacity'] == '1'
    assert report['heat']['complete'] and report['heat']['naturalWidth'] > 5
    assert state['selected'] == int(row['index']) and report['title'].startswith(f'patch {row["index"]} at ')
    shown = {s['field']: s for s in report['scores']}
    assert float(shown['score']['value']) == float(row['score'])  # the CSV's number, to the last digit
    assert float(shown['score']['shown']) == pytest.approx(float(row['score']), rel=1e-5)
    assert float(shown['residual']['shown']) == pytest.approx(float(row['residual']), rel=1e-5)
    assert shown['lpips']['shown'] == '–'  # NaN in the CSV
    assert [i['id'] for i in report['images']] == ['img-query', 'img-reconstruction', 'img-residual']
    assert all(i['complete'] and i['naturalWidth'] == 16 for i in report['images'])

    screen = np.asarray(PIL.Image.open(shot).convert('RGB')).astype(float)
    view = report['view']
    scale = (view['x1'] - view['x0']) / view['width']  # level-0 px per screen px
    assert scale < 2  # zoomed in beyond the finest tiles' 2 level-0 px (1 um/px) per pixel
    image = np.asarray(PIL.Image.open(mapped['slide']).convert('RGB')).astype(float)
    colours = dict(zip([(int(r['x']), int(r['y'])) for r in mapped['rows']], expected_colours(mapped)))
    tile_err, heat_err, blocks = [], [], 12
    for by in range(int(view['height'] * 0.15), int(view['height'] * 0.85) - blocks, blocks):
        for bx in range(int(view['width'] * 0.25), int(view['width'] * 0.95) - blocks, blocks):
            x0, y0 = view['x0'] + bx * scale, view['y0'] + by * scale
            x1, y1 = x0 + blocks * scale, y0 + blocks * scale
            cells = {(int((x - 0) // STEP * STEP), int(y // STEP * STEP)) for x in (x0, x1) for y in (y0, y1)}
            seen = screen[int(view['top']) + by:int(view['top']) + by + blocks,
                          int(view['left']) + bx:int(view['left']) + bx + blocks].reshape(-1, 3)
            if len(cells) != 1 or min(x0, y0) < 0 or x1 > image.shape[1] or y1 > image.shape[0]:
                continue  # the block straddles a cell edge or leaves the slide
            cell = cells.pop()
            if cell in colours:
                heat_err.append(np.abs(seen - colours[cell]).mean())
            else:
                expected = image[int(y0):int(y1), int(x0):int(x1)].reshape(-1, 3).mean(0)
                tile_err.append(np.abs(seen.mean(0) - expected).mean())
    # scored cells: the colour map's colour at full opacity; elsewhere: the slide, as its tiles render it
    assert len(heat_err) > 20 and np.median(heat_err) < 4, (len(heat_err), np.median(heat_err))
    assert len(tile_err) > 20 and np.median(tile_err) < 10, (len(tile_err), np.median(tile_err))
    for img in report['images']:
        with PIL.Image.open(folder / img['src']) as picture:
            expected = np.asarray(picture.convert('RGB').resize((4, 4), PIL.Image.BOX)).astype(float)
        crop = PIL.Image.fromarray(screen.astype(np.uint8)).crop(
            (round(img['x']) + 2, round(img['y']) + 2, round(img['x'] + img['w']) - 2, round(img['y'] + img['h']) - 2))
        seen = np.asarray(crop.resize((4, 4), PIL.Image.BOX)).astype(float)
        assert np.abs(seen - expected).mean() < 12, img['id']
