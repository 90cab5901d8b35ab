"""Slide-level anomaly maps on real H&E: CMU-1-Small-Region with tumour-tile tissue pasted in, outlined in ASAP XML."""

import csv
import json
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import scipy.ndimage
import tifffile
from click.testing import CliRunner
from sklearn import metrics

from tools import anomaly, assets, slide_map
from tools.histology import wsi

from anomaly_data import any_tissue_crops
from datasets import write_dataset_zip
from projection_nets import save_snapshot, tiny_stylegan2
from slide_map_inputs import LESION_BOX, asap_xml, save_encoder, write_lesion_slide

GEOMETRY = ['--patch-size', '64', '--level', '1', '--batch', '32']


@pytest.fixture(scope='module')
def lesion(tmp_path_factory, he_image):
    folder = tmp_path_factory.mktemp('lesion')
    with PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)) as img:
        tile = np.asarray(img.convert('RGB'))
    slide, xml = write_lesion_slide(folder, he_image, tile)
    G, D = tiny_stylegan2(16)
    reference = write_dataset_zip(folder / 'normal16.zip', any_tissue_crops(he_image, 16, 8, seed=5))
    return dict(folder=folder, slide=slide, xml=xml, image=he_image, network=save_snapshot(folder / 'net.pkl', G, D),
                encoder=save_encoder(folder / 'enc.pkl', G, D), reference=reference)


def run(lesion, outdir, *extra):
    args = ['--network', lesion['network'], '--encoder', lesion['encoder'], '--slide', lesion['slide'],
            '--outdir', str(outdir), '--device', 'cpu', '--reference-data', lesion['reference']] + GEOMETRY + list(extra)
    return CliRunner().invoke(slide_map.main, args)


@pytest.fixture(scope='module')
def straight(lesion, tmp_path_factory):
    outdir = tmp_path_factory.mktemp('straight')
    res = run(lesion, outdir, '--annotations', lesion['xml'])
    assert res.exit_code == 0, res.output
    return outdir, res.output


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_map_follows_the_slide(straight, lesion, one_thread):
    """The raster has the slide's aspect ratio, NaN on background, its TIFF equals the .npy, overlay written."""
    outdir, _ = straight
    raster = np.load(outdir / 'lesion_map.npy')
    w, h = wsi.open_slide(lesion['slide']).dimensions
    assert raster.dtype == np.float32 and raster.shape[0] / raster.shape[1] == pytest.approx(h / w, rel=0.02)
    np.testing.assert_array_equal(tifffile.imread(outdir / 'lesion_map.tif'), raster)
    # background: thumbnail-grid pixels whose level-0 block is nearly white glass
    cell_y, cell_x = h / raster.shape[0], w / raster.shape[1]
    img = np.asarray(PIL.Image.fromarray(lesion['image']).resize(raster.shape[::-1], PIL.Image.BOX)).astype(float)
    glass = img.min(axis=2) > 215
    reach = int(np.ceil(128 / min(cell_x, cell_y)))  # a 64 px patch at level 1 spans 128 level-0 px
    far = scipy.ndimage.minimum_filter(glass, size=2 * reach + 1)  # no tissue within a patch's reach
    assert far.sum() > 0.2 * far.size and np.isnan(raster[far]).all()
    assert np.isfinite(raster[~glass]).mean() > 0.5
    rows = read_csv(outdir / 'lesion.csv')
    assert np.isfinite(raster).sum() > 0 and len(rows) > 50
    for r in rows[::7]:  # a patch's centre pixel carries its score (patches do not overlap at the default stride)
        cx, cy = (int(r['x']) + int(r['size']) / 2) / cell_x, (int(r['y']) + int(r['size']) / 2) / cell_y
        assert raster[int(cy), int(cx)] == pytest.approx(float(r['score']), rel=1e-5)
    with PIL.Image.open(outdir / 'lesion_overlay.png') as img:
        assert min(img.size) > 400


def test_evaluation_equals_sklearn_on_its_csv(straight, lesion):
    outdir, output = straight
    found = json.loads(output.strip().splitlines()[-1])
    rows = read_csv(outdir / 'lesion.csv')
    labels = np.array([int(r['label']) for r in rows])
    scores = np.array([float(r['score']) for r in rows])
    # labels from the polygon: tumour patches lie inside the pasted box, normal ones do not touch it
    x0, y0, x1, y1 = LESION_BOX
    for r, label in zip(rows, labels):
        x, y, s = int(r['x']), int(r['y']), int(r['size'])
        overlap = max(0, min(x + s, x1) - max(x, x0)) * max(0, min(y + s, y1) - max(y, y0)) / s ** 2
        # the polygon is rasterised on the thumbnail grid (cells of ~3 px), so allow a cell of slack at its edges
        assert (label == 1) == (overlap >= 0.5) or 0.45 < overlap < 0.55
        assert label != 0 or overlap < 0.05
    keep = labels >= 0
    assert (labels == 1).sum() >= 5 and (labels == 0).sum() >= 20
    # patches left out: partly in the lesion (no exclusion regions here), each counted once; the rasterised
    # outline reaches up to a thumbnail cell (~3 px) past the box, so a patch touching it may count as partial
    def overlaps(margin):
        return np.array([max(0, min(int(r['x']) + int(r['size']), x1 + margin) - max(int(r['x']), x0 - margin)) *
                         max(0, min(int(r['y']) + int(r['size']), y1 + margin) - max(int(r['y']), y0 - margin)) /
                         int(r['size']) ** 2 for r in rows])
    assert found['left_out'] == dict(partial_lesion=int((labels == -1).sum()), exclusion=0)
    inside, grown = overlaps(0), overlaps(8)
    assert ((inside > 0.05) & (inside < 0.45)).sum() <= found['left_out']['partial_lesion'] <= \
        ((grown > 0) & (inside < 0.55)).sum()
    assert found['left_out']['partial_lesion'] > 0
    assert found['patch_AUROC'] == pytest.approx(metrics.roc_auc_score(labels[keep], scores[keep]), rel=1e-9)
    assert found['patch_AUPR'] == pytest.approx(metrics.average_precision_score(labels[keep], scores[keep]), rel=1e-9)
    slide = json.load(open(outdir / 'evaluation.json'))['slides'][0]
    assert slide['max'] == pytest.approx(scores.max()) and slide['tumour'] == 1
    assert slide['top_k_mean'] == pytest.approx(np.sort(scores)[-10:].mean())
    assert '| patch_AUROC |' in (outdir / 'evaluation.md').read_text()
    for r in rows[:5]:  # the f-AnoGAN score's terms as tools.anomaly defines them, kappa = 1
        assert float(r['score']) == pytest.approx(float(r['residual']) + float(r['features']), rel=1e-5)


def test_interrupted_run_resumes_to_the_straight_result(straight, lesion, tmp_path, monkeypatch, one_thread):
    real = anomaly.score_patches
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(anomaly, 'score_patches', interrupted)
    res = run(lesion, tmp_path)
    assert res.exit_code == 1 and len(calls) == 3  # click turns Ctrl-C into 'Aborted!'
    assert not (tmp_path / 'lesion.csv').exists() and len(read_csv(tmp_path / 'lesion.csv.partial')) == 64
    with open(tmp_path / 'lesion.csv.partial', 'a') as f:
        f.write('64,1152,')  # a kill in the middle of a line
    monkeypatch.setattr(anomaly, 'score_patches', real)
    res = run(lesion, tmp_path, '--resume', '--workers', '2')
    assert res.exit_code == 0, res.output
    assert not (tmp_path / 'lesion.csv.partial').exists()
    resumed, expected = read_csv(tmp_path / 'lesion.csv'), read_csv(straight[0] / 'lesion.csv')
    assert [r['index'] for r in resumed] == [r['index'] for r in expected]
    for a, b in zip(resumed, expected):
        assert (a['x'], a['y'], a['tissue_fraction']) == (b['x'], b['y'], b['tissue_fraction'])
        assert float(a['score']) == pytest.approx(float(b['score']), rel=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / 'lesion_map.npy'), np.load(straight[0] / 'lesion_map.npy'),
                               rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize('case', ['missing-slide', 'not-a-slide', 'broken-xml', 'bad-coordinate', 'off-the-slide',
                                  'folder-typo'])
def test_bad_inputs_one_line_and_nothing_written(lesion, tmp_path, case):
    slide, xml = lesion['slide'], None
    if case == 'missing-slide':
        slide = str(tmp_path / 'nope.svs')
    elif case == 'not-a-slide':
        slide = str(tmp_path / 'fake.svs')
        open(slide, 'w').write('not a slide')
    elif case == 'broken-xml':
        xml = tmp_path / 'lesion.xml'
        xml.write_text('<ASAP_Annotations><Annotations>')
    elif case == 'bad-coordinate':
        xml = tmp_path / 'lesion.xml'
        xml.write_text(asap_xml([LESION_BOX]).replace('X="1100"', 'X="left"'))
    elif case == 'off-the-slide':  # micrometres instead of pixels, say, on a bigger slide
        xml = tmp_path / 'lesion.xml'
        xml.write_text(asap_xml([tuple(20 * v for v in LESION_BOX)]))
    else:
        xml = tmp_path / 'ann'
        xml.mkdir()
        (xml / 'lesoin.xml').write_text(asap_xml([LESION_BOX]))
    outdir = tmp_path / 'out'
    args = ['--network', lesion['network'], '--encoder', lesion['encoder'], '--slide', slide, '--outdir', str(outdir),
            '--device', 'cpu'] + GEOMETRY + (['--annotations', str(xml)] if xml is not None else [])
    res = CliRunner().invoke(slide_map.main, args)
    assert res.exit_code == 1, res.output
    assert res.output.startswith('Error: ') and len(res.output.strip().splitlines()) == 1, res.output
    assert 'Traceback' not in res.output
    assert not outdir.exists() or not os.listdir(outdir)


def test_slide_set_evaluation_and_shards(lesion, straight, tmp_path, monkeypatch, one_thread):
    """A folder of a lesion slide and a normal slide, annotations for the lesion only. Shards fill one output folder
    (--shard picks from the sorted list); a final --resume run over all slides rescores nothing and evaluates: the
    normal slide's patches are all normal, the slide-level AUROC is sklearn's over the CSVs' maxima."""
    slides = tmp_path / 'slides'
    slides.mkdir()
    os.link(lesion['slide'], slides / 'lesion.tif')
    wsi.write_pyramid_tiff(str(slides / 'normal.tif'), lesion['image'][1024:2048, :1024], levels=2, mpp=0.499)
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'lesion.xml').write_text(open(lesion['xml']).read())
    outdir = tmp_path / 'maps'
    base = ['--network', lesion['network'], '--encoder', lesion['encoder'], '--slide', str(slides),
            '--annotations', str(notes), '--device', 'cpu', '--outdir', str(outdir),
            '--reference-data', lesion['reference']] + GEOMETRY
    res = CliRunner().invoke(slide_map.main, base + ['--shard', '1/2'])
    assert res.exit_code == 0, res.output
    assert sorted(f for f in os.listdir(outdir) if f.endswith('.csv')) == ['normal.csv']
    shutil.copy(straight[0] / 'lesion.csv', outdir / 'lesion.csv')  # shard 0/2, scored by the `straight` run

    def no_scoring(*_args, **_kwargs):
        raise AssertionError('a finished slide was scored again')
    monkeypatch.setattr(anomaly, 'score_patches', no_scoring)
    res = CliRunner().invoke(slide_map.main, base + ['--resume'])
    assert res.exit_code == 0, res.output
    found = json.loads(res.output.strip().splitlines()[-1])
    normal = read_csv(outdir / 'normal.csv')
    assert len(normal) >= 8 and {r['label'] for r in normal} == {'0'}
    maxima = [max(float(r['score']) for r in read_csv(outdir / f'{n}.csv')) for n in ('lesion', 'normal')]
    assert found['num_slides'] == 2 and found['num_patches'] == len(normal) + len(read_csv(outdir / 'lesion.csv'))
    assert found['slide_AUROC_max'] == pytest.approx(metrics.roc_auc_score([1, 0], maxima))
    assert (outdir / 'normal_overlay.png').exists() and (outdir / 'lesion_overlay.png').exists()
