"""tools/report.py on hand-made inputs: every picture inlined unchanged, every number in the table beside its command."""

import base64
import csv
import html.parser
import io
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from dnnlib.util import UserError
from tools import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PageParser(html.parser.HTMLParser):
    """The <img> tags (attributes) and the rows of the numbers table (cell texts) of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self._table, self._cell = [], [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'img':
            self.images.append(attrs)
        elif tag == 'table':
            self._table = attrs.get('id')
        elif tag == 'tr' and self._table == 'numbers':
            self.rows.append([])
        elif tag == 'td' and self._table == 'numbers':
            self._cell = ''

    def handle_endtag(self, tag):
        if tag == 'td' and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None
        elif tag == 'table':
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def decode(src):
    prefix = 'data:image/png;base64,'
    assert src.startswith(prefix)
    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(src[len(prefix):]))).convert('RGB'))


def save(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(image).save(path)
    return image


def solid(h, w, colour):
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (h, w, 3)).copy()


def has_colour(image, colour, tol=10):
    return bool((np.abs(image.astype(int) - colour).max(axis=2) <= tol).any())


@pytest.fixture
def inputs(tmp_path):
    """A manifest over hand-made files: two gradient pictures, stats, a metric log, projector output."""
    rng = np.random.RandomState(0)
    pictures = {
        'preview.png': save(str(tmp_path / 'preview.png'), rng.randint(0, 256, (40, 90, 3), dtype=np.uint8)),
        'run/reals.png': save(str(tmp_path / 'run/reals.png'), np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4,
                                                                      (64, 1, 3))),
    }
    with open(tmp_path / 'run/stats.jsonl', 'w') as f:
        for tick in range(3):
            row = {'Progress/kimg': {'mean': 0.1 * tick}, 'Loss/G/loss': {'mean': 2.0 - tick},
                   'Loss/D/loss': {'mean': 1.0 + tick}, 'Loss/scores/real': {'mean': 0.5},
                   'Loss/scores/fake': {'mean': -0.5}}
            f.write(json.dumps(row) + '\n')
    with open(tmp_path / 'run/metric-fid10_full.jsonl', 'w') as f:
        f.write(json.dumps({'results': {'fid10_full': 321.5}, 'snapshot_pkl': 'network-snapshot-000000.200.pkl'}) + '\n')
    with open(tmp_path / 'encoder.jsonl', 'w') as f:
        f.write(json.dumps({'kimg': 0.1, 'Loss/loss': 3.0}) + '\n' + json.dumps({'kimg': 0.2, 'Loss/loss': 2.0}) + '\n')
    # Projector batch output: one folder per target; pure colours so the panel can be searched for them.
    proj = tmp_path / 'proj'
    rows = []
    for name, lpips in (('normal-00.png', 0.25), ('tumour-00.png', 0.5)):
        folder = proj / name[:-4]
        for kind, colour in (('target', (255, 0, 0)), ('proj', (0, 255, 0)), ('residual', (0, 0, 255))):
            save(str(folder / f'{kind}.png'), solid(16, 16, colour))
        rows.append(dict(name=name, lpips=lpips, mse=0.1, psnr=20, steps=5, seconds=1, outdir=str(folder)))
    with open(proj / 'summary.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    manifest = dict(title='Test <report>', summary='hand-made', sections=[
        dict(title='Pictures', images=[dict(path='preview.png', caption='noise'), dict(path='run/reals.png', caption='ramp')]),
        dict(title='Curves', curves=dict(training_stats='run/stats.jsonl', metric_logs=['run/metric-fid10_full.jsonl'],
                                         encoder_stats='encoder.jsonl')),
        dict(title='Projection', projection='proj'),
        dict(title='Numbers', numbers=[dict(name='FID', value=123.456, command='python calc_metrics.py --metrics=fid'),
                                       dict(name='patches', value=386, command='python dataset_tool.py --a=1 & b'),
                                       dict(name='AUROC', value=0.87654, command='python -m tools.anomaly evaluate')]),
        dict(title='Steps', steps=[dict(title='cut', command='python dataset_tool.py --a=1 & b', seconds=3.2)]),
    ])
    path = tmp_path / 'report.json'
    path.write_text(json.dumps(manifest))
    return path, pictures


def test_report_inlines_every_picture_and_lists_every_number(inputs, tmp_path):
    manifest, pictures = inputs
    out = report.write_report(str(manifest), str(tmp_path / 'out' / 'report.html'))
    page = open(out, encoding='utf-8').read()
    parser = PageParser()
    parser.feed(page)
    assert 'src="file:' not in page and 'src="http' not in page  # nothing outside the page

    by_key = {img['data-key']: img for img in parser.images}
    assert set(by_key) == {'s0i0', 's0i1', 's1curves', 's2projection'}
    for key, name in (('s0i0', 'preview.png'), ('s0i1', 'run/reals.png')):
        np.testing.assert_array_equal(decode(by_key[key]['src']), pictures[name])  # PNG is lossless: same pixels
        h, w = pictures[name].shape[:2]
        assert (int(by_key[key]['width']), int(by_key[key]['height'])) == (2 * w, 2 * h)  # small grids shown at 2x

    curves = decode(by_key['s1curves']['src'])
    assert 0.8 < curves.shape[1] / curves.shape[0] < 2  # four panels, two by two: losses, D output, metrics, encoder
    for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours
        assert has_colour(curves, colour, tol=3)
    panel = decode(by_key['s2projection']['src'])
    for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255)):  # query, reconstruction, residual rows
        assert has_colour(panel, colour)

    assert [r for r in parser.rows if r] == [['FID', '123.5', 'python calc_metrics.py --metrics=fid'],
                           ['patches', '386', 'python dataset_tool.py --a=1 & b'],
                           ['AUROC', '0.8765', 'python -m tools.anomaly evaluate']]
    assert '<h1>Test &lt;report&gt;</h1>' in page and '&amp; b' in page


def test_report_missing_picture_is_one_clear_error(inputs, tmp_path):
    manifest, _ = inputs
    os.remove(manifest.parent / 'run' / 'reals.png')
    out = tmp_path / 'report.html'
    with pytest.raises(UserError, match='reals.png'):
        report.write_report(str(manifest), str(out))
    assert not out.exists()


def test_report_cli_rejects_bad_manifest(tmp_path):
    bad = tmp_path / 'report.json'
    bad.write_text('{"title": "x", "sections": [{"title": "y", "images": [{"path": "nope.png"}]}]}')
    proc = subprocess.run([sys.executable, '-m', 'tools.report', f'--manifest={bad}', f'--out={tmp_path / "r.html"}'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('Error:') and 'nope.png' in proc.stderr
    assert not (tmp_path / 'r.html').exists()


def _mapping_manifest(tmp_path, block):
    with open(tmp_path / 'metrics.json', 'w') as f:
        json.dump({'AUROC': 0.5, 'mapping_quality': block}, f)
    path = tmp_path / 'report.json'
    path.write_text(json.dumps(dict(title='t', sections=[dict(title='Mapping', mapping_quality='metrics.json')])))
    return path


class TableParser(html.parser.HTMLParser):
    """Cell texts of the table with id `mapping-quality`, and the text of <p class="warning">."""

    def __init__(self):
        super().__init__()
        self.rows, self.warning, self._in_table, self._cell, self._in_warning = [], None, False, None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'table':
            self._in_table = attrs.get('id') == 'mapping-quality'
        elif tag == 'tr' and self._in_table:
            self.rows.append([])
        elif tag in ('td', 'th') and self._in_table:
            self._cell = ''
        elif tag == 'p' and attrs.get('class') == 'warning':
            self._in_warning, self.warning = True, ''

    def handle_endtag(self, tag):
        if tag in ('td', 'th') and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None
        elif tag == 'table':
            self._in_table = False
        elif tag == 'p':
            self._in_warning = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_warning:
            self.warning += data


def test_report_shows_the_mapping_check_and_its_warning(tmp_path):
    block = dict(num_images=100, constant='mean of the queries', psnr_recon=14.25, psnr_constant=15.5, psnr_margin=-1.25,
                 lpips_recon=0.31, lpips_constant=0.2875, lpips_margin=-0.0225, diversity_queries=40.0,
                 diversity_recons=3.0, diversity_ratio=0.075, collapsed=True, warning='reconstructions collapse <x>')
    out = report.write_report(str(_mapping_manifest(tmp_path, block)), str(tmp_path / 'r.html'))
    parser = TableParser()
    parser.feed(open(out, encoding='utf-8').read())
    assert parser.rows == [['100 held-out normal patches', 'reconstructions', 'mean of the queries', 'margin'],
                           ['PSNR (dB), higher is closer', '14.25', '15.5', '-1.25'],
                           ['LPIPS, lower is closer', '0.31', '0.2875', '-0.0225'],
                           ['pairwise distance (RMS, 0-255)', '3', '40 (queries)', 'ratio 0.075']]
    assert parser.warning == 'Warning: reconstructions collapse <x>'

    block.update(psnr_margin=2.0, lpips_margin=None, lpips_recon=None, lpips_constant=None, warning=None)
    out = report.write_report(str(_mapping_manifest(tmp_path, block)), str(tmp_path / 'r.html'))
    parser = TableParser()
    parser.feed(open(out, encoding='utf-8').read())
    assert parser.warning is None and parser.rows[2][1:] == ['\u2013'] * 3 and parser.rows[1][3] == '2'

    (tmp_path / 'metrics.json').write_text('{"AUROC": 0.5}')
    with pytest.raises(UserError, match='no mapping_quality block'):
        report.write_report(str(tmp_path / 'report.json'), str(tmp_path / 'r2.html'))


def test_encoder_curves_add_the_heldout_panel():
    rows = [{'kimg': k, 'Loss/loss': 1.0 / k} for k in (1, 2, 3)]
    plain = PIL.Image.open(io.BytesIO(report.curves_png([], [], rows))).size
    for row in rows:
        row.update({'Heldout/loss': 1.2 / row['kimg'], 'Heldout/psnr_margin': row['kimg'] - 1.5})
    both = PIL.Image.open(io.BytesIO(report.curves_png([], [], rows))).size
    assert both[0] > 1.6 * plain[0] and abs(both[1] - plain[1]) < 0.1 * plain[1]  # a second panel beside the first
