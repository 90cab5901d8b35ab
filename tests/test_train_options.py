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


#----------------------------------------------------------------------------
# Which run a --resume continues (issue 30), on hand-made run dirs: options files and training states only.

def _fake_run(outdir, name, args, cur_nimg=None, total_kimg=None, resume_pkl=None, cur_tick=1):
    """A run dir as train.py leaves it: training_options.json and, with cur_nimg, one snapshot and its state."""
    import json

    import torch

    from training import training_loop
    run_dir = os.path.join(outdir, name)
    os.makedirs(run_dir)
    stored = dict(args, run_dir=run_dir, resume_pkl=resume_pkl)
    if total_kimg is not None:
        stored['total_kimg'] = total_kimg
    with open(os.path.join(run_dir, 'training_options.json'), 'w') as f:
        json.dump(stored, f)
    if cur_nimg is not None:
        pkl = os.path.join(run_dir, f'network-snapshot-{training_loop.snapshot_tag(cur_nimg, 0.004)}.pkl')
        open(pkl, 'wb').close()
        torch.save(dict(cur_nimg=cur_nimg, cur_tick=cur_tick), training_loop.state_path_for(pkl))
        return run_dir, pkl
    return run_dir, None


def _args(he_zip, **changes):
    from training import options
    return options.build(**dict(dict(data=he_zip, cfg='config-e', batch=4, tick=0.004, kimg=0.016, metrics=[]), **changes))


def test_auto_continues_the_newest_unfinished_run_with_the_same_options(tmp_path, he_zip):
    from training import run_dirs
    desc, args = _args(he_zip)
    outdir = str(tmp_path)
    plan = run_dirs.plan_train_run(outdir, desc, args, 'auto')  # nothing there: a new run
    assert plan.run_dir == os.path.join(outdir, f'00000-{desc}') and plan.restart is None and not plan.finished
    _fake_run(outdir, '00000-done', args, cur_nimg=16)
    _fake_run(outdir, '00001-older', args, cur_nimg=4)
    newest, pkl = _fake_run(outdir, '00002-newer', args, cur_nimg=8, cur_tick=2)
    _fake_run(outdir, '00003-other-gamma', _args(he_zip, gamma=5)[1], cur_nimg=4)
    _fake_run(outdir, '00004-longer', args, cur_nimg=4, total_kimg=1)   # a different length is another run for auto
    foreign = tmp_path / 'foreign.pkl'
    foreign.write_bytes(b'')
    _fake_run(outdir, '00005-transfer', args, cur_nimg=4, resume_pkl=str(foreign))  # transfer learning: not the same start
    plan = run_dirs.plan_train_run(outdir, desc, dict(args, metrics=['fid50k_full'], data_loader_kwargs={}), 'auto')
    assert plan.run_dir == newest and plan.args.resume_pkl == pkl and not plan.finished
    assert plan.notes == [f'--resume=auto: continuing {newest}']
    assert plan.restart.startswith('=== Restarted ') and plan.restart.endswith(
        'from network-snapshot-000000.008.pkl (kimg 0.008, tick 1) ===')
    for name in ['00001-older', '00002-newer', '00004-longer', '00005-transfer']:
        import shutil
        shutil.rmtree(os.path.join(outdir, name))
    plan = run_dirs.plan_train_run(outdir, desc, args, 'auto')  # only the finished one left
    assert plan.finished and plan.notes == [f'{os.path.join(outdir, "00000-done")} has finished: 0.016 of 0.016 kimg '
                                            '(network-snapshot-000000.016.pkl); nothing to do']
    plan = run_dirs.plan_train_run(outdir, desc, _args(he_zip, gamma=7)[1], 'auto')
    assert plan.run_dir == os.path.join(outdir, f'00004-{desc}') and plan.restart is None


def test_resume_dir_follows_continuations_of_older_versions(tmp_path, he_zip):
    from training import run_dirs
    desc, args = _args(he_zip)
    outdir = str(tmp_path / 'runs')
    first, pkl0 = _fake_run(outdir, '00000-first', args, cur_nimg=4)
    second, pkl1 = _fake_run(outdir, '00001-first-resumecustom', args, cur_nimg=8, resume_pkl=pkl0)
    _fake_run(outdir, '00002-branch-resumecustom', _args(he_zip, gamma=3)[1], cur_nimg=12, resume_pkl=pkl0)
    third, pkl2 = _fake_run(outdir, '00003-first-resumecustom-resumecustom', args, cur_nimg=12, cur_tick=3, resume_pkl=pkl1)
    plan = run_dirs.plan_train_run(outdir, desc, args, first)
    assert plan.run_dir == third and plan.args.resume_pkl == pkl2 and plan.origin == pkl1
    assert plan.notes == [f'--resume: {first} was continued in {third} by an earlier version; continuing that run']
    # A longer --kimg continues the same run; other options are refused, naming what differs.
    plan = run_dirs.plan_train_run(outdir, desc, dict(args, total_kimg=1), third)
    assert plan.run_dir == third and plan.notes == [] and plan.args.total_kimg == 1
    with pytest.raises(run_dirs.UserError, match=r'was trained with other options \(loss_kwargs\.r1_gamma: run has 100, this command 3\.5\)'):
        run_dirs.plan_train_run(outdir, desc, _args(he_zip, gamma=3.5)[1], third)
    # Killed before its first snapshot: starts again in place, from where the run started.
    fresh, _ = _fake_run(outdir, '00004-fresh', args, resume_pkl=pkl2)
    plan = run_dirs.plan_train_run(outdir, desc, args, fresh)
    assert plan.run_dir == fresh and plan.args.resume_pkl == pkl2 and 'from the start' in plan.restart


def test_torn_stats_line_and_temporaries_are_removed(tmp_path):
    from training import run_dirs
    stats = tmp_path / 'stats.jsonl'
    stats.write_text('{"Progress/tick": {"mean": 0}}\n{"Progress/tick": {"mean": 1}}\n{"Progress/tick": {"mean": 2}}\n{"Progr')
    assert run_dirs.truncate_jsonl(str(stats), lambda r: r['Progress/tick']['mean'] < 2) == 2
    assert stats.read_text() == '{"Progress/tick": {"mean": 0}}\n{"Progress/tick": {"mean": 1}}\n'
    for name in ['.network-snapshot-000000.004.pkl.ab12cd.tmp', 'network-snapshot-000000.004.pkl', 'log.txt']:
        (tmp_path / name).write_text('x')
    assert run_dirs.remove_temporaries(str(tmp_path)) == ['.network-snapshot-000000.004.pkl.ab12cd.tmp']
    assert sorted(os.listdir(tmp_path)) == ['log.txt', 'network-snapshot-000000.004.pkl', 'stats.jsonl']
    # A continued train.py run: an orphan training state (its pickle never written) goes too, and the stats lines
    # from the first tick trained again.
    for name in ['training-state-000000.004.pt', 'training-state-000000.008.pt', '.training-state-000000.012.pt.x1.tmp']:
        (tmp_path / name).write_text('x')
    assert run_dirs.tidy_train_run(str(tmp_path), 1) == [
        'Removed .training-state-000000.012.pt.x1.tmp, left by an interrupted write',
        'Removed training-state-000000.008.pt, whose network snapshot was never written',
        'Dropped 1 stats.jsonl line(s) of ticks trained again from tick 1']
    assert sorted(os.listdir(tmp_path)) == ['log.txt', 'network-snapshot-000000.004.pkl', 'stats.jsonl',
                                            'training-state-000000.004.pt']
    assert stats.read_text() == '{"Progress/tick": {"mean": 0}}\n'
