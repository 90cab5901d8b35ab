"""demo.py, the README's main command: every step of the pipeline, its printed commands, and the report it ends with
(parsed here, and opened in headless Chromium: the --quick demo's report in the default suite, the full one's slow)."""

import base64
import csv
import glob
import io
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
from browser import chromium
from sklearn.metrics import roc_auc_score

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Steps in the order the demo runs them, as their printed command lines begin.
EVALUATE = ['python -m tools.anomaly evaluate', 'python -c \'import demo; demo.score_aurocs(']
STEP_COMMANDS = ['python dataset_tool.py', 'python -c \'import demo; demo.split_patches(',
                 'python -c \'import demo; demo.resample_image(', 'python dataset_tool.py',
                 'python -c \'import demo; demo.make_evaluation_sets(', 'python -c \'import demo; demo.split_patches(',
                 'python -c \'import demo; demo.make_evaluation_sets(', 'python train.py', 'python generate.py',
                 'python style_mixing.py', 'python calc_metrics.py', 'python -m tools.train_encoder',
                 'python projector.py', *EVALUATE, 'python train.py', 'python -m tools.train_encoder', *EVALUATE,
                 'python -m tools.report']


def run_demo(out, *args, timeout):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'demo.py'), f'--outdir={out}', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo') / 'out'
    return out, run_demo(out, '--quick', timeout=1200)


def pngs(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n.endswith('.png')}


def labels(path):
    with zipfile.ZipFile(path) as z:
        return dict(json.loads(z.read('dataset.json'))['labels'])


def expected_numbers(out):
    """The numbers the report must show, read from the files the steps wrote (not from the report's manifest)."""
    found = {}
    run_dir, = glob.glob(str(out / 'training-runs' / '*'))
    for path in glob.glob(os.path.join(run_dir, 'metric-*.jsonl')):
        with open(path) as f:
            for key, value in json.loads(f.readlines()[-1])['results'].items():
                if key.startswith('fid') or key.endswith('_avg'):
                    found[key] = value
    for folder in ('anomaly', 'anomaly-tile-vs-slide'):
        with open(out / folder / 'metrics.json') as f:
            metrics = json.load(f)
        found.update({f'{folder} {k}': metrics[k] for k in ('AUROC', 'AUPR', 'F1_oracle', 'F1_at_threshold')
                      if metrics[k] is not None})
        found.update({f'{folder} mapping {k}': v for k, v in metrics['mapping_quality'].items()  # the encoder check
                      if k in ('psnr_margin', 'lpips_margin', 'diversity_ratio') and v is not None})
        with open(out / folder / 'scores.csv', newline='') as f:
            rows = list(csv.DictReader(f))
        for term in ('residual', 'features', 'lpips', 'critic'):  # each term alone as the score, by scikit-learn
            values = [float(r[term]) for r in rows]
            if all(np.isfinite(values)):
                found[f'{folder} AUROC {term}'] = roc_auc_score([int(r['label']) for r in rows], values)
    with open(out / 'projection' / 'summary.csv', newline='') as f:
        found.update({f'lpips {row["name"]}': float(row['lpips']) for row in csv.DictReader(f)})
    for name in ('cmu-32', 'cmu-32-train', 'cmu-32-heldout', 'tumour-32'):
        found[name] = len(pngs(out / f'{name}.zip'))
    return run_dir, found


def shown(value):
    return str(value) if isinstance(value, int) else f'{value:.4g}'


def test_demo_quick_runs_every_step(quick_demo):
    out, stdout = quick_demo
    commands = [line[2:] for line in stdout.splitlines() if line.startswith('$ python')]
    assert len(commands) == len(STEP_COMMANDS)
    for command, start in zip(commands, STEP_COMMANDS):
        assert command.startswith(start), (command, start)
    assert 'narrow config-e' in stdout

    # The split is a partition: held-out patches never reach training.
    everything, train, heldout = (pngs(out / f'{n}.zip') for n in ('cmu-32', 'cmu-32-train', 'cmu-32-heldout'))
    assert not set(train) & set(heldout) and set(train) | set(heldout) == set(everything)
    assert len(heldout) == round(0.25 * len(everything))
    assert all(train[n] == everything[n] for n in train)
    # The tumour tile is shrunk to half size (0.25 -> 0.5 um/px) before cutting.
    assert PIL.Image.open(out / 'tumour-tile-0.499um.png').size == (500, 500)
    tumour = pngs(out / 'tumour-32.zip')
    assert len(tumour) > 10
    # The labelled evaluation set: held-out normal patches 0, tumour patches 1 (quick mode: 8 of each).
    labelled = labels(out / 'anomaly-heldout.zip')
    assert sorted(labelled.values()) == [0] * 8 + [1] * 8
    eval_pngs = pngs(out / 'anomaly-heldout.zip')
    assert all(eval_pngs[n] in heldout.values() for n, lab in labelled.items() if lab == 0)
    assert all(eval_pngs[n] in tumour.values() for n, lab in labelled.items() if lab == 1)
    # The other direction: a GAN of tumour patches never sees its held-out ones (0); slide patches are held out (1).
    tumour_train, tumour_heldout = pngs(out / 'tumour-32-train.zip'), pngs(out / 'tumour-32-heldout.zip')
    assert not set(tumour_train) & set(tumour_heldout) and set(tumour_train) | set(tumour_heldout) == set(tumour)
    reverse, reverse_pngs = labels(out / 'anomaly-tile-vs-slide.zip'), pngs(out / 'anomaly-tile-vs-slide.zip')
    assert sorted(reverse.values()) == [0] * 8 + [1] * 8
    assert all(reverse_pngs[n] in tumour_heldout.values() for n, lab in reverse.items() if lab == 0)
    assert all(reverse_pngs[n] in heldout.values() for n, lab in reverse.items() if lab == 1)

    run_dir, numbers = expected_numbers(out)
    assert glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl'))
    assert len(glob.glob(str(out / 'generated' / 'seed*.png'))) == 36 and (out / 'style-mixing' / 'grid.png').is_file()
    assert numbers['fid8'] > 0 and numbers['swd8_avg'] > 0 and 0 <= numbers['anomaly AUROC'] <= 1
    assert len(glob.glob(str(out / 'projection' / '*' / 'residual.png'))) == 4

    page = (out / 'report.html').read_text()
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(srcs) >= 11 and all(s.startswith('data:image/png;base64,') for s in srcs)
    for src in srcs:
        PIL.Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1]))).verify()
    for value in numbers.values():
        assert f'<td class="value">{shown(value)}</td>' in page


def test_demo_rejects_bad_options():
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'demo.py'), '--kimg=0'], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('Error:')

#----------------------------------------------------------------------------
# The report in a real browser.

CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images).map(img => {
    const r = img.getBoundingClientRect();
    return {key: img.dataset.key, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
            complete: img.complete, x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height};
  });
  const out = document.createElement('pre');
  out.id = 'image-check';
  out.textContent = JSON.stringify({images: images, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def decoded_images(page):
    found = {}
    for key, src in re.findall(r'<img data-key="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', page):
        found[key] = np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(src))).convert('RGB'))
    return found


def check_report_in_chromium(out, tmp_path):
    """The demo's report.html in headless Chromium: every image decodes, every number shows, the pixels are there."""
    page = (out / 'report.html').read_text()
    images = decoded_images(page)

    # The DOM after loading: every <img> decoded to its own size.
    probe = tmp_path / 'probe.html'
    probe.write_text(page.replace('</body>', CHECK_SCRIPT + '</body>'))
    dom = chromium('--window-size=1280,1000', '--dump-dom', probe.as_uri())
    state = json.loads(re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S).group(1).replace('&quot;', '"'))
    assert len(state['images']) == len(images) >= 9
    for img in state['images']:
        h, w = images[img['key']].shape[:2]
        assert img['complete'] and (img['naturalWidth'], img['naturalHeight']) == (w, h), img

    # Every number in the rendered text, as the files the steps wrote hold it.
    text = chromium('--window-size=1280,1000', '--dump-dom', (out / 'report.html').as_uri())
    _, numbers = expected_numbers(out)
    for name, value in numbers.items():
        assert f'<td class="value">{shown(value)}</td>' in text, name

    # The screenshot: where each image sits, the pixels are that image (a broken one would leave the page white).
    shot = tmp_path / 'shot.png'
    height = int(state['height']) + 50
    chromium(f'--window-size=1280,{height}', f'--screenshot={shot}', (out / 'report.html').as_uri())
    screen = PIL.Image.open(shot).convert('RGB')
    for img in state['images']:
        x, y, w, h = (img[k] for k in ('x', 'y', 'w', 'h'))
        crop = screen.crop((round(x) + 1, round(y) + 1, round(x + w) - 1, round(y + h) - 1))  # inside the 1 px border
        expected = PIL.Image.fromarray(images[img['key']]).resize(crop.size, PIL.Image.BILINEAR)
        # Compared in 8x8 blocks: browsers and PIL scale with different filters, a missing image is off everywhere.
        small = (max(crop.size[0] // 8, 1), max(crop.size[1] // 8, 1))
        seen, want = (np.asarray(im.resize(small, PIL.Image.BOX)).astype(float) for im in (crop, expected))
        error, blank = np.abs(seen - want).mean(), np.abs(255 - want).mean()
        assert error < 0.25 * blank, (img['key'], error, blank)


def test_quick_report_renders_in_chromium(quick_demo, tmp_path):
    check_report_in_chromium(quick_demo[0], tmp_path)


@pytest.fixture(scope='module')
def full_demo(tmp_path_factory):
    # About 10 minutes on two idle cores; 24 on this shared machine at load 6-10. The limit leaves room for that.
    out = tmp_path_factory.mktemp('demo-full') / 'demo'
    return out, run_demo(out, timeout=3600)


@pytest.mark.slow
def test_demo_full_runs(full_demo):
    out, stdout = full_demo
    assert 'Done in' in stdout
    _, numbers = expected_numbers(out)
    assert numbers['fid128'] > 0 and 0 <= numbers['anomaly AUROC'] <= 1
    assert (out / 'report.html').is_file()


@pytest.mark.slow
def test_full_report_renders_in_chromium(full_demo, tmp_path):
    check_report_in_chromium(full_demo[0], tmp_path)
