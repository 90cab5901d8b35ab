"""Crafted .safetensors snapshots: refused with one line before anything they describe is allocated."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

import generate
import legacy
from test_legacy import make_snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_safetensors(path):
    from safetensors import safe_open
    with safe_open(path, framework='pt') as f:
        return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata())


def write_variant(src, dst, edit_kwargs=None, edit_tensors=None):
    """Copy snapshot `src` to `dst`, changing G's and G_ema's constructor kwargs and/or the tensors."""
    from safetensors.torch import save_file
    tensors, meta = read_safetensors(src)
    modules = json.loads(meta['modules'])
    for key in ('G', 'G_ema'):
        if edit_kwargs is not None:
            edit_kwargs(modules[key]['init_kwargs'])
    if edit_tensors is not None:
        edit_tensors(tensors)
    meta['modules'] = json.dumps(modules)
    save_file(tensors, dst, metadata=meta)
    return dst


def setitem(path, value):
    """kwargs editor: set a (dotted) key."""
    def edit(kwargs):
        *parents, last = path.split('.')
        for name in parents:
            kwargs = kwargs.setdefault(name, {})
        kwargs[last] = value
    return edit


def rename(old, new):
    def edit(tensors):
        tensors[new] = tensors.pop(old)
    return edit


def reshape(name, shape):
    def edit(tensors):
        tensors[name] = torch.zeros(shape)
    return edit


# name -> (kwargs edit, tensor edit, words the one-line error must contain)
CASES = {
    'resolution_65536': (setitem('img_resolution', 65536), None, 'img_resolution=65536'),
    'resolution_2048': (setitem('img_resolution', 2048), None, 'resolution_2048.safetensors'),
    'resolution_not_power_of_two': (setitem('img_resolution', 24), None, 'power of two'),
    'resolution_float': (setitem('img_resolution', 16.0), None, 'power of two'),
    'renamed_tensor': (None, rename('G_ema.synthesis.b16.torgb.weight', 'G_ema.synthesis.b16.torgb.weightx'), 'missing'),
    'wrong_shape': (None, reshape('G_ema.mapping.fc0.weight', [16, 17]), 'G_ema.mapping.fc0.weight has shape [16, 17]'),
    # Consistent names, widths that would need ~10 GB if built for real: refused on shapes, memory flat.
    'huge_widths': (lambda kw: (setitem('synthesis_kwargs.channel_base', 1 << 17)(kw),
                                setitem('synthesis_kwargs.channel_max', 16384)(kw)), None, 'has shape'),
    'absurd_channel_max': (setitem('synthesis_kwargs.channel_max', 10 ** 9), None, 'channel_max=1000000000'),
    'z_dim_fraction': (setitem('z_dim', 16.5), None, 'must be an integer'),
    'negative_w_dim': (setitem('w_dim', -16), None, 'w_dim=-16'),
    'negative_channels': (setitem('img_channels', -3), None, 'img_channels=-3'),
    'layers_string': (setitem('mapping_kwargs.num_layers', 'many'), None, 'do not build a Generator'),
    'unknown_argument': (setitem('evil', 1), None, 'do not build a Generator'),
}


@pytest.fixture(scope='module')
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp('crafted')
    good = str(folder / 'good.safetensors')
    legacy.save_network_safetensors(make_snapshot(), good)
    files = {name: write_variant(good, str(folder / f'{name}.safetensors'), kw, ts) for name, (kw, ts, _) in CASES.items()}
    return good, files


LOADER = textwrap.dedent('''
    import json, resource, sys, time
    import dnnlib, legacy
    results = {}
    for name, path in json.loads(sys.argv[1]).items():
        start = time.time()
        try:
            legacy.load_network(path)
            outcome = 'loaded'
        except dnnlib.util.UserError as err:
            outcome = str(err)
        results[name] = dict(outcome=outcome, seconds=time.time() - start,
                             peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    print(json.dumps(results))
''')


@pytest.fixture(scope='module')
def outcomes(crafted):
    """Load every crafted file in one fresh process and record the error line, time and peak memory."""
    good, files = crafted
    res = subprocess.run([sys.executable, '-c', LOADER, json.dumps(dict(files, good=good))], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_untouched_file_loads(outcomes):
    assert outcomes['good']['outcome'] == 'loaded'


@pytest.mark.parametrize('name', sorted(CASES))
def test_crafted_file_is_refused_in_one_line(outcomes, name):
    outcome = outcomes[name]
    assert outcome['outcome'] != 'loaded'
    assert '\n' not in outcome['outcome'] and CASES[name][2] in outcome['outcome'], outcome['outcome']
    assert outcome['seconds'] < 60


def test_memory_stays_flat(outcomes):
    # Building any of the crafted networks for real would need gigabytes ('huge_widths' about 10 GB);
    # the whole process, torch included, stays far below that.
    assert max(o['peak_gb'] for o in outcomes.values()) < 2.0


def test_generate_refuses_the_65536_file_without_output(crafted, tmp_path):
    _good, files = crafted
    out = tmp_path / 'out'
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', files['resolution_65536'], '--seeds', '1',
                                                            '--outdir', str(out)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: ') and 'img_resolution=65536' in lines[0]
    assert not out.exists()


def test_orphan_tensors_and_broken_module_table_are_refused(crafted, tmp_path):
    from safetensors.torch import save_file
    good, _files = crafted
    tensors, meta = read_safetensors(good)
    save_file(dict(tensors, **{'X.payload': torch.zeros(3)}), str(tmp_path / 'orphan.safetensors'), metadata=meta)
    with pytest.raises(legacy.dnnlib.util.UserError, match='no listed network'):
        legacy.load_network(str(tmp_path / 'orphan.safetensors'))
    save_file(tensors, str(tmp_path / 'table.safetensors'), metadata=dict(meta, modules=json.dumps([1, 2])))
    with pytest.raises(legacy.dnnlib.util.UserError, match='broken snapshot metadata'):
        legacy.load_network(str(tmp_path / 'table.safetensors'))
