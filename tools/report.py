"""A single self-contained HTML page about one demo run: pictures inlined as data URIs, curves drawn
from the runs' stats.jsonl with matplotlib, and a table pairing every number with the command behind it.

The page is described by a JSON manifest (demo.py writes one; any script can):

    {"title": "...", "summary": "...",
     "sections": [
       {"title": "...", "text": "...", "images": [{"path": "reals.png", "caption": "reals"}, ...]},
       {"title": "...", "curves": {"training_stats": "run/stats.jsonl", "metric_logs": ["run/metric-....jsonl"],
                                   "encoder_stats": "encoder-run/stats.jsonl"}},
       {"title": "...", "projection": "projector.py batch output folder (summary.csv + one folder per patch)"},
       {"title": "...", "mapping_quality": "tools.anomaly evaluate's metrics.json (its mapping_quality block)"},
       {"title": "...", "numbers": [{"name": "FID", "value": 123.4, "command": "python calc_metrics.py ..."}]},
       {"title": "...", "steps": [{"title": "...", "command": "...", "seconds": 12.3}]}]}

Sections appear in order; each may combine text, images and the other kinds. Relative paths are taken
from the manifest's folder. Every key but "title" is optional.

    python -m tools.report --manifest=demo-out/report.json --out=demo-out/report.html
"""

import base64
import csv
import html
import io
import json
import math
import os

import click
import numpy as np
import PIL.Image

import dnnlib

#----------------------------------------------------------------------------
# Inputs.

def format_number(value):
    """How the page prints a number: integers as they are, other values to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise dnnlib.util.UserError(f'report numbers must be int or float, got {value!r}')
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f'{value:.4g}'

def read_jsonl(path):
    """The JSON objects of a .jsonl file, one per non-empty line."""
    rows = []
    try:
        with open(path, 'rt') as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    rows.append(json.loads(line))
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot read '{path}': {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise dnnlib.util.UserError(f"'{path}' line {lineno} is not JSON ({err.msg})") from None
    return rows

def stat_value(row, key):
    """A number from a stats row: training_stats writes {"mean": ...} per key, the encoder plain floats."""
    value = row.get(key)
    if isinstance(value, dict):
        value = value.get('mean')
    return float(value) if isinstance(value, (int, float)) else None

def png_bytes(image):
    buf = io.BytesIO()
    PIL.Image.fromarray(image).save(buf, format='PNG')
    return buf.getvalue()

def image_file_bytes(path):
    """PNG bytes of an image file (re-encoded only when it is not a PNG already); one clear error if unreadable."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.format == 'PNG':
                return data
            return png_bytes(np.asarray(img.convert('RGB')))
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot read image '{path}': {getattr(err, 'strerror', None) or err}") from None

def data_uri(png):
    return 'data:image/png;base64,' + base64.b64encode(png).decode('ascii')

#----------------------------------------------------------------------------
# Figures drawn here.

def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt

def figure_png(fig):
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
    plt.close(fig)
    return buf.getvalue()

def _series(rows, key, x_key):
    points = [(stat_value(r, x_key), stat_value(r, key)) for r in rows]
    points = [(x, y) for x, y in points if x is not None and y is not None]
    return [p[0] for p in points], [p[1] for p in points]

def _snapshot_kimg(entry):
    """kimg of the snapshot a metric line was measured on, from its file name (network-snapshot-<kimg>.pkl)."""
    name = os.path.basename(str(entry.get('snapshot_pkl') or ''))
    stem = name[len('network-snapshot-'):-len('.pkl')] if name.startswith('network-snapshot-') else ''
    try:
        return float(stem)
    except ValueError:
        return None

def curves_png(training_rows, metric_entries, encoder_rows):
    """Loss, discriminator-score and metric curves over training time (kimg), one panel each."""
    plt = _pyplot()
    import matplotlib.ticker
    panels = []
    if training_rows:
        panels.append(('GAN losses', 'kimg', [(k.split('/')[1] + ' loss', *_series(training_rows, k, 'Progress/kimg'))
                                               for k in ('Loss/G/loss', 'Loss/D/loss')]))
        panels.append(('D output', 'kimg', [(name, *_series(training_rows, k, 'Progress/kimg'))
                                            for name, k in (('reals', 'Loss/scores/real'), ('fakes', 'Loss/scores/fake'))]))
    if metric_entries:
        lines = {}
        for entry in metric_entries:
            kimg = _snapshot_kimg(entry)
            for key, value in entry.get('results', {}).items():
                if kimg is not None and isinstance(value, (int, float)) and (key.startswith('fid') or key.endswith('_avg')):
                    lines.setdefault(key, ([], []))
                    lines[key][0].append(kimg)
                    lines[key][1].append(float(value))
        if lines:
            panels.append(('metrics (held-out reals)', 'kimg', [(k, *v) for k, v in sorted(lines.items())]))
    if encoder_rows:
        keys = sorted(k for k in encoder_rows[0] if k.startswith('Loss/'))
        lines = [(k[len('Loss/'):], *_series(encoder_rows, k, 'kimg')) for k in keys]
        lines += [(f'held-out {k[len("Loss/"):]}', *_series(encoder_rows, 'Heldout/' + k[len('Loss/'):], 'kimg'))
                  for k in keys]  # tools.train_encoder --heldout: the same terms on patches it never trains on
        panels.append(('encoder losses', 'kimg', lines))
        panels.append(('encoder: held-out PSNR over the mean patch (dB)', 'kimg',
                       [('margin', *_series(encoder_rows, 'Heldout/psnr_margin', 'kimg'))]))
    panels = [p for p in panels if any(len(xs) for _name, xs, _ys in p[2])]
    if not panels:
        return None
    cols = min(len(panels), 2)  # two per row keeps the figure within the page width, unscaled
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (title, xlabel, lines) in zip(axes.flat, panels):
        for name, xs, ys in lines:
            if xs:
                ax.plot(xs, ys, marker='o' if len(xs) < 4 else None, ms=4, label=name,
                        linestyle='--' if name.startswith('held-out') else '-')
        ax.set(title=title, xlabel=xlabel)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)

def read_projection_summary(folder):
    """Rows of projector.py's summary.csv with each target's target/proj/residual images loaded."""
    path = os.path.join(folder, 'summary.csv')
    try:
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot read '{path}': {err.strerror or err}") from None
    if not rows:
        raise dnnlib.util.UserError(f"'{path}' lists no projected patches")
    for row in rows:
        outdir = row['outdir'] if os.path.isabs(row['outdir']) else os.path.join(folder, os.path.basename(row['outdir']))
        for kind in ('target', 'proj', 'residual'):
            image_path = os.path.join(outdir, f'{kind}.png')
            png = image_file_bytes(image_path)
            row[kind] = np.asarray(PIL.Image.open(io.BytesIO(png)).convert('RGB'))
    return rows

def projection_png(rows):
    """Columns = projected patches (name and LPIPS above); rows = query, reconstruction, residual."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, len(rows), figsize=(1.3 * len(rows) + 1.2, 4.4), squeeze=False)
    for col, row in enumerate(rows):
        for r, (kind, label) in enumerate((('target', 'query'), ('proj', 'reconstruction'), ('residual', 'residual'))):
            ax = axes[r][col]
            ax.imshow(row[kind])
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
        stem = os.path.splitext(os.path.basename(row['name']))[0]
        axes[0][col].set_title(f"{stem}\nLPIPS {format_number(float(row['lpips']))}", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)

#----------------------------------------------------------------------------
# The page.

STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
td.value { font-family: monospace; white-space: nowrap; text-align: right; }
code { font-size: 0.85em; word-break: break-all; }
p.warning { background: #fff3cd; border-left: 4px solid #c90; padding: 0.4em 0.6em; }
"""

def _figure_html(png, caption, key):
    width, height = PIL.Image.open(io.BytesIO(png)).size
    zoom = 2 if width <= 300 else 1  # small patch grids are shown at twice their size, pixels kept sharp
    return (f'<figure><img data-key="{html.escape(key)}" alt="{html.escape(caption)}" width="{width * zoom}" '
            f'height="{height * zoom}" src="{data_uri(png)}">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')

MAPPING_ROWS = (('PSNR (dB), higher is closer', 'psnr_recon', 'psnr_constant', 'psnr_margin'),
                ('LPIPS, lower is closer', 'lpips_recon', 'lpips_constant', 'lpips_margin'),
                ('pairwise distance (RMS, 0-255)', 'diversity_recons', 'diversity_queries', 'diversity_ratio'))

def read_mapping_quality(path):
    """The mapping_quality block of a tools.anomaly evaluate metrics.json."""
    try:
        with open(path, 'rt') as f:
            block = json.load(f).get('mapping_quality')
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot read '{path}': {err.strerror or err}") from None
    except (json.JSONDecodeError, AttributeError):
        raise dnnlib.util.UserError(f"'{path}' is not a metrics.json object") from None
    if not isinstance(block, dict):
        raise dnnlib.util.UserError(f"'{path}' has no mapping_quality block (written by tools.anomaly evaluate)")
    return block

def _mapping_quality_html(block):
    """Reconstructions against the constant image and their diversity, and the check's verdict in one line."""
    show = lambda value: '&ndash;' if value is None else html.escape(format_number(float(value)))  # noqa: E731
    constant = html.escape(str(block.get('constant', 'mean patch')))
    head = (f'<tr><th>{block.get("num_images", 0)} held-out normal patches</th><th>reconstructions</th>'
            f'<th>{constant}</th><th>margin</th></tr>')
    body = ''.join(f'<tr><td>{label}</td><td class="value">{show(block.get(a))}</td>'
                   f'<td class="value">{show(block.get(b))}</td><td class="value">{show(block.get(c))}</td></tr>'
                   for label, a, b, c in MAPPING_ROWS[:2])
    label, a, b, c = MAPPING_ROWS[2]
    body += (f'<tr><td>{label}</td><td class="value">{show(block.get(a))}</td><td class="value">{show(block.get(b))} '
             f'(queries)</td><td class="value">ratio {show(block.get(c))}</td></tr>')
    verdict = (f'<p class="warning"><strong>Warning:</strong> {html.escape(block["warning"])}</p>' if block.get('warning')
               else '<p class="verdict">The reconstructions beat the constant image and differ between queries.</p>')
    return f'<table id="mapping-quality">{head}{body}</table>{verdict}'

def _numbers_table(numbers):
    body = ''.join(f'<tr><td>{html.escape(str(n["name"]))}</td><td class="value">{format_number(n["value"])}</td>'
                   f'<td><code>{html.escape(str(n.get("command", "")))}</code></td></tr>' for n in numbers)
    return f'<table id="numbers"><tr><th>quantity</th><th>value</th><th>command that made it</th></tr>{body}</table>'

def _steps_table(steps):
    body = ''.join(f'<tr><td>{html.escape(str(s["title"]))}</td><td class="value">{float(s["seconds"]):.0f} s</td>'
                   f'<td><code>{html.escape(str(s["command"]))}</code></td></tr>' for s in steps)
    return f'<table id="steps"><tr><th>step</th><th>time</th><th>command</th></tr>{body}</table>'

def _section_html(idx, section, resolve):
    parts = [f'<h2>{html.escape(str(section["title"]))}</h2>']
    if section.get('text'):
        parts.append(f'<p>{html.escape(str(section["text"]))}</p>')
    for jdx, image in enumerate(section.get('images', [])):
        parts.append(_figure_html(image_file_bytes(resolve(image['path'])), image.get('caption', ''), f's{idx}i{jdx}'))
    if 'curves' in section:
        spec = section['curves']
        training = read_jsonl(resolve(spec['training_stats'])) if spec.get('training_stats') else []
        metric_entries = [e for p in spec.get('metric_logs', []) for e in read_jsonl(resolve(p))]
        encoder = read_jsonl(resolve(spec['encoder_stats'])) if spec.get('encoder_stats') else []
        png = curves_png(training, metric_entries, encoder)
        if png is None:
            raise dnnlib.util.UserError(f'section "{section["title"]}": the stats files hold no curve to draw')
        parts.append(_figure_html(png, 'loss means per tick (stats.jsonl) and metrics per snapshot (metric-*.jsonl)',
                                  f's{idx}curves'))
    if 'projection' in section:
        rows = read_projection_summary(resolve(section['projection']))
        parts.append(_figure_html(projection_png(rows), 'query / reconstruction / |query - reconstruction|',
                                  f's{idx}projection'))
    if 'mapping_quality' in section:
        parts.append(_mapping_quality_html(read_mapping_quality(resolve(section['mapping_quality']))))
    if 'numbers' in section:
        parts.append(_numbers_table(section['numbers']))
    if 'steps' in section:
        parts.append(_steps_table(section['steps']))
    return parts

def render_report(manifest, base_dir='.'):
    """The page (str) for a manifest dict; relative paths in it are relative to base_dir."""
    def resolve(path):
        return path if os.path.isabs(path) else os.path.join(base_dir, path)

    if not isinstance(manifest, dict) or 'title' not in manifest:
        raise dnnlib.util.UserError('the report manifest must be a JSON object with at least a "title"')
    parts = [f'<h1>{html.escape(str(manifest["title"]))}</h1>']
    if manifest.get('summary'):
        parts.append(f'<p>{html.escape(str(manifest["summary"]))}</p>')
    for idx, section in enumerate(manifest.get('sections', [])):
        try:
            parts += _section_html(idx, section, resolve)
        except (KeyError, TypeError, ValueError) as err:
            raise dnnlib.util.UserError(f'report manifest section {idx}: malformed ({type(err).__name__}: {err})') from None
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{html.escape(str(manifest["title"]))}</title><style>{STYLE}</style></head>\n<body>\n'
            + '\n'.join(parts) + '\n</body></html>\n')

def write_report(manifest_path, out_path):
    """Read the manifest, render the page and write it atomically; returns out_path."""
    try:
        with open(manifest_path, 'rt') as f:
            manifest = json.load(f)
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot read '{manifest_path}': {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise dnnlib.util.UserError(f"'{manifest_path}' is not JSON ({err.msg}, line {err.lineno})") from None
    page = render_report(manifest, base_dir=os.path.dirname(os.path.abspath(manifest_path)))
    try:
        with dnnlib.util.atomic_write(out_path) as tmp:
            with open(tmp, 'wt', encoding='utf-8') as f:
                f.write(page)
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot write '{out_path}': {err.strerror or err}") from None
    return out_path

#----------------------------------------------------------------------------

@click.command()
@click.option('--manifest', required=True, metavar='JSON', help='Description of the page: sections of images, stats files, numbers and commands (see the module docstring)')
@click.option('--out', required=True, metavar='HTML', help='The page to write; pictures are inlined, so it can be mailed or archived alone')
def main(manifest, out):
    """Write one self-contained HTML report from a run manifest (demo.py makes one)."""
    try:
        write_report(manifest, out)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))
    print(f'Wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB)')

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
