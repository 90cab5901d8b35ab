"""train.py refuses a bad start with one line and a non-zero exit, before it writes anything (issue 10)."""

import copy
import os

import pytest
from click.testing import CliRunner

from datasets import write_dataset_zip
from training import presets


@pytest.fixture(scope='module')
def he_zip(tmp_path_factory, he_crops):
    return write_dataset_zip(tmp_path_factory.mktemp('data') / 'he16.zip', he_crops(16, 8, seed=2))


def _refused(outdir, *args):
    """Run train.py in-process; return the last output line after checking the refusal left nothing behind."""
    import train
    os.makedirs(outdir, exist_ok=True)
    before = sorted(os.listdir(outdir))
    result = CliRunner().invoke(train.main, [f'--outdir={outdir}', *args])
    assert result.exit_code != 0, result.output
    assert 'Traceback' not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert sorted(os.listdir(outdir)) == before, 'a refused start wrote into --outdir'
    output = result.output  # a progress bar may share the error's line on some terminals
    return output.strip().splitlines()[-1].split('\x1b[A')[-1]


def _row(base='config-e', **changes):
    row = copy.deepcopy(presets.PRESETS[base])
    row.update(changes)
    return row


def test_resume_from_a_text_file(tmp_path, he_zip):
    text = tmp_path / 'notes.pkl'
    text.write_text('not a pickle\n')
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=config-e', '--metrics=none', f'--resume={text}')
    assert last.startswith('Error: --resume: cannot load') and str(text) in last


def test_missing_data(tmp_path):
    last = _refused(tmp_path / 'runs', f'--data={tmp_path / "absent.zip"}', '--metrics=none')
    assert last.startswith('Error: --data:') and 'absent.zip' in last


def test_resolution_outside_the_preset_limits(tmp_path, he_zip, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, 'only64', _row(res_min=64, res_max=64))
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=only64', '--metrics=none')
    assert last == 'Error: --cfg=only64 trains 64x64 patches only; this dataset is 16x16'
    monkeypatch.setitem(presets.PRESETS, 'upto8', _row(res_min=4, res_max=None, res_default_max=8))
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=upto8', '--metrics=none')
    assert 'trains up to 8x8 by default' in last and '--allow-highres' in last
    import train
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--data={he_zip}', '--cfg=upto8',
                                             '--metrics=none', '--allow-highres', '--dry-run'])
    assert result.exit_code == 0, result.output


def test_preset_whose_classes_cannot_be_imported(tmp_path, he_zip, monkeypatch):
    row = _row()
    row['G'] = dict(row['G'], class_name='networks.no_such_family.Generator')
    monkeypatch.setitem(presets.PRESETS, 'missing', row)
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=missing', '--metrics=none')
    assert last.startswith('Error: --cfg=missing needs networks.no_such_family.Generator, which cannot be imported')


def test_options_a_preset_does_not_have(tmp_path, he_zip, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, 'plain', _row(knobs={}, augment=False))
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=plain', '--metrics=none', '--cbase=1024')
    assert last == 'Error: --cbase does not apply to --cfg=plain'
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=plain', '--metrics=none', '--aug=ada')
    assert 'trains without augmentation' in last
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=config-e', '--metrics=none', '--phase-kimg=10')
    assert last == 'Error: --phase-kimg does not apply to --cfg=config-e'
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=nonsense', '--metrics=none')
    assert last.startswith('Error: --cfg=nonsense is not a preset')


def test_damaged_zip_is_found_before_training(tmp_path, he_zip):
    damaged = tmp_path / 'damaged.zip'
    blob = bytearray(open(he_zip, 'rb').read())
    blob[200] ^= 0xFF  # inside the first member's compressed data: the headers still parse
    damaged.write_bytes(bytes(blob))
    last = _refused(tmp_path / 'runs', f'--data={damaged}', '--cfg=config-e', '--metrics=none')
    assert 'damaged.zip' in last and last.startswith('Error: --data')


def test_knobs_land_in_the_network_kwargs(he_zip):
    from training import options
    _desc, args = options.build(data=he_zip, cfg='config-e', cbase=1024, cmax=32, map=3, gamma=2.5, fp32=True, freezed=1)
    assert args.G_kwargs.synthesis_kwargs.channel_base == args.D_kwargs.channel_base == 1024
    assert args.G_kwargs.synthesis_kwargs.channel_max == args.D_kwargs.channel_max == 32
    assert args.G_kwargs.mapping_kwargs.num_layers == 3 and args.loss_kwargs.r1_gamma == 2.5
    assert args.G_kwargs.synthesis_kwargs.num_fp16_res == args.D_kwargs.num_fp16_res == 0
    assert args.D_kwargs.conv_clamp is None and args.D_kwargs.block_kwargs.freeze_layers == 1
    assert presets.PRESETS['config-e']['G']['synthesis_kwargs']['channel_base'] == 16384  # the table itself is untouched


def test_learning_rates_replace_the_presets(tmp_path, he_zip):
    """--glr / --dlr set Adam's rate of G and D for any family; the published table stays as it was."""
    from training import options
    desc, args = options.build(data=he_zip, cfg='config-e', glr=0.005, dlr=0.001)
    assert args.G_opt_kwargs.lr == 0.005 and args.D_opt_kwargs.lr == 0.001
    assert 'glr0.005' in desc and 'dlr0.001' in desc
    _desc, args = options.build(data=he_zip, cfg='config-e', glr=0.005)
    assert args.G_opt_kwargs.lr == 0.005 and args.D_opt_kwargs.lr == presets.PRESETS['config-e']['D_opt']['lr'] == 0.002
    assert presets.PRESETS['config-e']['G_opt']['lr'] == 0.002
    last = _refused(tmp_path / 'runs', f'--data={he_zip}', '--cfg=config-e', '--dlr=0')
    assert last == 'Error: --dlr must be positive'
