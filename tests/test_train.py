"""train.py end to end on real H&E patches (CPU, tiny networks): outputs, exact resume after SIGKILL,
2-process gloo training == 1 process, architecture mismatch on resume, option errors."""

import glob
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import write_dataset_zip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--cfg=config-e', '--cbase=256', '--cmax=64', '--map=2', '--batch=4', '--tick=0.008', '--snap=1',
        '--metrics=none', '--seed=3'] # the default DataLoader workers read the zip
LOSS_KEYS = ['Loss/G/loss', 'Loss/D/loss', 'Loss/G/reg', 'Loss/D/reg', 'Loss/r1_penalty', 'Loss/pl_penalty',
             'Loss/scores/real', 'Loss/scores/fake', 'Loss/signs/real', 'Progress/augment']


def _env():
    # One thread per process keeps runs comparable on a busy machine; 'ref' ops need no compiler.
    return dict(os.environ, OMP_NUM_THREADS='1', HISTOSYNTH_OPS_IMPL='ref', PYTHONPATH=REPO)


def _train(outdir, *args, wait=True):
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--outdir={outdir}', *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def _ticks(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return {int(entry['Progress/tick']['mean']): entry for entry in map(json.loads, f)}


@pytest.fixture(scope='module')
def he_zip(tmp_path_factory, he_crops):
    """16 real 16x16 H&E crops of CMU-1-Small-Region as a dataset zip with dataset.json labels."""
    path = tmp_path_factory.mktemp('data') / 'he16.zip'
    return write_dataset_zip(path, he_crops(16, 16, seed=5), labels=[i % 2 for i in range(16)])


@pytest.fixture(scope='module')
def runs(tmp_path_factory, he_zip):
    """Run A (4 steps in 3 ticks, uninterrupted) and run B (same options, SIGKILLed after its first snapshot), concurrently;
    then B continued in its own run dir up to A's length (--resume=DIR with a shorter --kimg)."""
    root = tmp_path_factory.mktemp('runs')
    out_a, out_b, out_r = str(root / 'a'), str(root / 'b'), str(root / 'r')
    proc_a = _train(out_a, f'--data={he_zip}', *TINY, '--kimg=0.016', wait=False)
    proc_b = _train(out_b, f'--data={he_zip}', *TINY, '--kimg=1', wait=False)
    deadline = time.time() + 600
    while not glob.glob(os.path.join(out_b, '*', 'network-snapshot-*.pkl')):
        assert proc_b.poll() is None, proc_b.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc_b.pid, signal.SIGKILL)
    proc_b.communicate()
    out_text_a, _ = proc_a.communicate(timeout=600)
    assert proc_a.returncode == 0, out_text_a
    run_a = glob.glob(os.path.join(out_a, '*'))[0]
    run_b = glob.glob(os.path.join(out_b, '*'))[0]
    with open(os.path.join(run_b, 'stats.jsonl')) as f:
        ticks_before = len(f.readlines())
    rc, out_text_r = _train(out_r, f'--data={he_zip}', *TINY, '--kimg=0.016', f'--resume={run_b}')
    assert rc == 0, out_text_r
    assert not os.path.exists(out_r)  # continued in place: no new run dir
    return dict(a=run_a, b=run_b, r=run_b, b_killed=(proc_b.returncode == -signal.SIGKILL), log_r=out_text_r,
                ticks_before=ticks_before)


def test_run_writes_everything(runs):
    run = runs['a']
    assert os.path.basename(run) == '00000-he16-config-e-kimg0.016-batch4-cbase256-cmax64-map2'
    names = set(os.listdir(run))
    for name in ['training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png',
                 'network-snapshot-000000.016.pkl', 'training-state-000000.016.pt', 'fakes000000.016.png']:
        assert name in names
    assert any(n.startswith('events.out.tfevents') for n in names)
    assert PIL.Image.open(os.path.join(run, 'reals.png')).size == (4 * 16, 4 * 16)
    ticks = _ticks(run)
    assert sorted(ticks) == [0, 1, 2]
    for entry in ticks.values():
        for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real']:
            assert entry[key]['num'] > 0 and np.isfinite(entry[key]['mean'])
    with open(os.path.join(run, 'network-snapshot-000000.016.pkl'), 'rb') as f:
        snap = pickle.load(f)
    assert set(snap) == {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}
    img = snap['G_ema'](torch.randn([2, snap['G_ema'].z_dim]), torch.zeros([2, 0]), noise_mode='const')
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    state = torch.load(os.path.join(run, 'training-state-000000.016.pt'), weights_only=False)
    assert state['cur_nimg'] == 16 and state['batch_idx'] == 4 and state['cur_tick'] == 3
    with open(os.path.join(run, 'training_options.json')) as f:
        assert json.load(f)['data_loader_kwargs']['num_workers'] == 3 # trained through the default DataLoader workers
    with open(os.path.join(run, 'log.txt')) as f:
        log = f.read()
    assert 'tick 2 ' in log and 'augment' in log and 'Exiting...' in log


def test_killed_run_resumes_exactly(runs):
    assert runs['b_killed']
    assert 'Exact resume from' in runs['log_r']
    with open(os.path.join(runs['r'], 'log.txt')) as f:
        log = f.read()
    restarts = [line for line in log.splitlines() if line.startswith('=== Restarted ')]
    assert len(restarts) == 1 and 'from network-snapshot-000000.' in restarts[0], restarts
    first_resumed = int(restarts[0].split('tick ')[1].rstrip(') =')) + 1
    assert first_resumed >= 1 # continued, not restarted
    assert runs['ticks_before'] >= first_resumed # the stats of the ticks the snapshot holds were kept
    ticks_a, ticks_r = _ticks(runs['a']), _ticks(runs['r'])
    assert sorted(ticks_r) == [0, 1, 2] # one line per tick: those trained after the snapshot were dropped and redone
    with open(os.path.join(runs['r'], 'stats.jsonl')) as f:
        assert len(f.readlines()) == 3
    compared = 0
    for tick, entry in ticks_r.items(): # the ticks before the kill and those after the restart
        for key in LOSS_KEYS:
            a = ticks_a[tick].get(key)
            if key in entry:
                # The collector reports differences of float64 running sums, which started at different
                # points in the two runs: equal up to float64 rounding (the networks are compared bitwise below).
                assert a['num'] == entry[key]['num'], (tick, key)
                assert a['mean'] == pytest.approx(entry[key]['mean'], rel=1e-12, abs=1e-15), (tick, key)
                assert a['std'] == pytest.approx(entry[key]['std'], rel=1e-9, abs=1e-12), (tick, key)
                compared += 1
            elif a is not None: # the collector repeats a statistic not reported this tick (keep_previous)
                assert a == ticks_a[tick - 1][key], (tick, key)
    assert compared >= 5
    # The finished networks are identical too.
    with open(os.path.join(runs['a'], 'network-snapshot-000000.016.pkl'), 'rb') as f:
        snap_a = pickle.load(f)
    with open(os.path.join(runs['r'], 'network-snapshot-000000.016.pkl'), 'rb') as f:
        snap_r = pickle.load(f)
    for name in ['G', 'D', 'G_ema']:
        for (key, a), (_, r) in zip(snap_a[name].state_dict().items(), snap_r[name].state_dict().items()):
            assert torch.equal(a, r), (name, key)


def test_resume_into_other_architecture_is_one_line_error(runs, he_zip, tmp_path):
    pkl = os.path.join(runs['a'], 'network-snapshot-000000.016.pkl')
    rc, out = _train(str(tmp_path), f'--data={he_zip}', *TINY, '--cbase=512', '--kimg=0.016', f'--resume={pkl}')
    last = out.strip().splitlines()[-1]
    assert rc != 0 and 'Traceback' not in out
    assert last.startswith('Error: Cannot resume from') and 'shape mismatch' in last and 'synthesis.b16.torgb.affine.bias (source [16], destination [32])' in last
    # A run dir continues only with its own options: the command says which differ.
    rc, out = _train(str(tmp_path), f'--data={he_zip}', *TINY, '--cbase=512', '--kimg=0.016', f'--resume={runs["a"]}')
    last = out.strip().splitlines()[-1]
    assert rc != 0 and 'Traceback' not in out
    assert last.startswith(f'Error: --resume: {runs["a"]} was trained with other options')
    assert 'G_kwargs.synthesis_kwargs.channel_base: run has 256, this command 512' in last


def test_option_errors(he_zip, tmp_path):
    from click.testing import CliRunner

    import train
    for args, message in [
        (['--gpus=3'], '--gpus must be a power of two'),
        (['--aug=fixed'], '--aug=fixed requires specifying --p'),
        (['--p=0.5'], '--p can only be specified with --aug=fixed'),
        (['--batch=3', '--gpus=2'], '--batch must be at least 1 and divisible by --gpus'),
        (['--kimg=0'], '--kimg must be positive'),
        (['--ema=0'], '--ema must be positive'),
        (['--resume=/nonexistent/run'], '--resume: no such file or directory'),
        (['--metrics=nonsense_metric'], '--metrics'),
    ]:
        result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', f'--data={he_zip}', '--dry-run', *args])
        assert result.exit_code != 0, args
        assert message in result.output.strip().splitlines()[-1], (args, result.output)
        assert 'Traceback' not in result.output


def test_ema_override(he_zip):
    from training import options
    desc, args = options.build(data=he_zip, cfg='config-e', batch=4)
    assert args.ema_kimg == 10 # config-e's published half-life
    desc, args = options.build(data=he_zip, cfg='config-e', batch=4, ema=0.5)
    assert args.ema_kimg == 0.5 and desc.endswith('-ema0.5')


def _published(row):
    """(kimg, batch, batch per GPU, mbstd group, channel_base, lr, R1 gamma, EMA kimg, EMA ramp-up, mapping layers) of a StyleGAN2 row."""
    return (row.kimg, row.batch, row.batch_gpu, row.D.epilogue_kwargs.mbstd_group_size, row.G.synthesis_kwargs.channel_base,
            row.G_opt.lr, row.loss.r1_gamma, row.ema_kimg, row.ema_rampup, row.G.mapping_kwargs.num_layers)


def test_presets_keep_published_values():
    from training import presets
    # The StyleGAN2 and StyleGAN2-ADA papers' configurations (fmaps 0.5 = channel_base 16384; 8 reference GPUs).
    assert _published(presets.resolve('config-e', 256, 1)) == (25000, 32, 4, 4, 16384, 0.002, 100, 10, None, 8)
    assert _published(presets.resolve('config-f', 256, 1)) == (25000, 32, 4, 4, 32768, 0.002, 10, 10, None, 8)
    assert _published(presets.resolve('paper256', 256, 1)) == (25000, 64, 8, 8, 16384, 0.0025, 1, 20, None, 8)
    assert _published(presets.resolve('paper512', 512, 1)) == (25000, 64, 8, 8, 32768, 0.0025, 0.5, 20, None, 8)
    assert _published(presets.resolve('paper1024', 1024, 1)) == (25000, 32, 4, 4, 32768, 0.002, 2, 10, None, 8)
    assert _published(presets.resolve('cifar', 32, 1)) == (100000, 64, 32, 32, 32768, 0.0025, 0.01, 500, 0.05, 2)
    assert presets.PRESETS['stylegan2'] == presets.PRESETS['config-f']
    e = presets.resolve('config-e', 256, 1)
    assert e.G_opt == dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8) == e.D_opt
    cifar = presets.resolve('cifar', 32, 1)
    assert (cifar.loss.pl_weight, cifar.loss.style_mixing_prob, cifar.D.architecture) == (0, 0, 'orig')
    # 'auto' at 256x256 on 2 GPUs, by the ADA paper's rule worked out by hand: batch min(2 * 16, 64) = 32,
    # group min(32 / 2, 4) = 4, gamma 0.0002 * 256^2 / 32 = 0.4096, EMA 32 * 10 / 32 = 10 kimg.
    auto = presets.resolve('auto', 256, 2)
    assert _published(auto)[:6] == (25000, 32, 16, 4, 16384, 0.0025)
    assert auto.loss.r1_gamma == pytest.approx(0.4096) and auto.ema_kimg == pytest.approx(10) and auto.ema_rampup == 0.05


def test_baseline_rows_as_the_contract_lists_them():
    from training import presets
    rows = {name: presets.resolve(name, 64, 1) for name in ['dcgan', 'wgan', 'pgan', 'stylegan']}
    assert rows['dcgan'].G == dict(class_name='networks.dcgan.Generator', z_dim=100)
    assert rows['dcgan'].loss.class_name == 'training.gan_losses.NonSaturatingLoss'
    assert (rows['dcgan'].G_opt.lr, rows['dcgan'].G_opt.betas, rows['dcgan'].batch) == (2e-4, [0.5, 0.999], 64)
    assert rows['wgan'].G == dict(class_name='networks.wgan.Generator', z_dim=128, dim=64)
    assert rows['wgan'].loss == dict(class_name='training.gan_losses.WassersteinGPLoss', gp_lambda=10, n_critic=5)
    assert (rows['wgan'].D_opt.lr, rows['wgan'].D_opt.betas) == (1e-4, [0.0, 0.9])
    assert rows['pgan'].loss == dict(class_name='training.gan_losses.WassersteinGPLoss', gp_lambda=10, n_critic=1, drift=0.001)
    assert rows['pgan'].ema_beta == 0.999 and rows['stylegan'].ema_kimg == 10
    assert rows['stylegan'].loss == dict(class_name='training.gan_losses.NonSaturatingLoss', r1_gamma=10, style_mixing_prob=0.9)
    for name in ['pgan', 'stylegan']:
        assert rows[name].schedule == dict(class_name='training.schedules.ProgressiveGrowing', start_resolution=8, phase_kimg=600, fade_kimg=600)
        assert (rows[name].G_opt.lr, rows[name].G_opt.betas, rows[name].G_opt.eps) == (1e-3, [0.0, 0.99], 1e-8)
        assert rows[name].res_default_max == 256
    for name in ['dcgan', 'wgan']:
        assert (rows[name].res_min, rows[name].res_max, rows[name].ema_kimg, rows[name].ema_beta) == (64, 64, None, None)
    for name, row in rows.items():
        assert not row.augment and row.source, name


_DDP_SCRIPT = r'''
import copy, json, sys
import dnnlib, train
from training import options
desc, args = options.build(data=sys.argv[1], cfg='config-e', cbase=256, cmax=64, map=2, batch=4,
    gpus=int(sys.argv[3]), aug='noaug', tick=0.004, snap=1, metrics=[], seed=1, kimg=0.004)
args.G_kwargs.synthesis_kwargs.use_noise = False   # per-rank noise draws would differ from one process's
args.loss_kwargs.style_mixing_prob = 0              # likewise the per-rank mixing cutoff
args.loss_kwargs.pl_weight = 0                      # and the per-rank path-length probe noise
args.D_kwargs.epilogue_kwargs.mbstd_group_size = 2  # groups {0,2},{1,3}: the same split as the ranks'
args.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.SGD', lr=0.1) # update linear in the gradient:
args.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.SGD', lr=0.1) # Adam's first step is ~sign(grad)
args.image_snapshot_ticks = None
args.run_dir = sys.argv[2]
train.launch_processes(args)
'''


def test_two_gloo_processes_match_one(he_zip, tmp_path):
    results = {}
    for gpus in [1, 2]:
        run_dir = tmp_path / f'gpus{gpus}'
        run_dir.mkdir()
        proc = subprocess.run([sys.executable, '-c', _DDP_SCRIPT, he_zip, str(run_dir), str(gpus)], cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout
        with open(run_dir / 'network-snapshot-000000.004.pkl', 'rb') as f:
            results[gpus] = pickle.load(f)
    # One SGD step from the same initial weights: compare the weights, and check the step was not tiny.
    beta = 0.5 ** (4 / (10 * 1000)) # G_ema = lerp(G, G_init, beta) after one step (ema 10 kimg, batch 4)
    for name in ['G', 'D']:
        params_1 = dict(results[1][name].named_parameters())
        params_2 = dict(results[2][name].named_parameters())
        assert params_1.keys() == params_2.keys()
        for key in params_1:
            np.testing.assert_allclose(params_2[key].numpy(), params_1[key].numpy(), atol=1e-5, rtol=0, err_msg=f'{name}.{key}')
    ema = dict(results[1]['G_ema'].named_parameters())
    steps = [(p - (ema[k] - (1 - beta) * p) / beta).abs().max().item() for k, p in results[1]['G'].named_parameters()]
    assert max(steps) > 1e-3
    with open(tmp_path / 'gpus1' / 'stats.jsonl') as f:
        stats = [json.loads(line) for line in f]
    assert stats[-1]['Loss/D/loss']['num'] == 4 # one step, global batch of 4
    with open(tmp_path / 'gpus2' / 'stats.jsonl') as f:
        stats2 = [json.loads(line) for line in f]
    assert stats2[-1]['Loss/D/loss']['num'] == 4 # statistics are reduced over both ranks
    assert stats2[-1]['Loss/D/loss']['mean'] == pytest.approx(stats[-1]['Loss/D/loss']['mean'], rel=1e-5)


class NaNAtThirdDmainLoss(__import__('training.loss', fromlist=['StyleGAN2Loss']).StyleGAN2Loss):
    """StyleGAN2Loss whose discriminator turns NaN from the third Dmain phase (step 2) on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dmain_calls = 0
        self.poisoned = False

    def accumulate_gradients(self, phase, *args, **kwargs):
        if phase == 'Dmain':
            self.dmain_calls += 1
            self.poisoned = self.dmain_calls >= 3
        return super().accumulate_gradients(phase, *args, **kwargs)

    def run_D(self, img, c):
        logits = super().run_D(img, c)
        return logits * float('nan') if self.poisoned else logits


def test_nan_loss_aborts_naming_phase_and_keeps_last_snapshot(he_zip, tmp_path, monkeypatch):
    import dnnlib
    from training import options
    monkeypatch.setenv('HISTOSYNTH_OPS_IMPL', 'ref')
    _desc, args = options.build(data=he_zip, cfg='config-e', cbase=256, cmax=64, map=2, batch=4,
                                                   aug='noaug', tick=0.008, snap=1, metrics=[], kimg=1)
    args.loss_kwargs.class_name = f'{__name__}.NaNAtThirdDmainLoss'
    args.run_dir = str(tmp_path)
    from training.training_loop import training_loop
    with pytest.raises(dnnlib.util.UserError) as err:
        training_loop(**args)
    message = str(err.value)
    assert 'Dmain' in message and 'kimg 0.008' in message and '\n' not in message
    assert message.endswith(os.path.join(str(tmp_path), 'network-snapshot-000000.004.pkl'))
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith('.pkl')) == ['network-snapshot-000000.004.pkl']
    with open(tmp_path / 'network-snapshot-000000.004.pkl', 'rb') as f:
        snap = pickle.load(f)
    assert all(torch.isfinite(p).all() for p in snap['D'].parameters())


def test_pickle_without_state_is_transfer_learning(runs, he_zip, tmp_path):
    import shutil
    pkl = str(tmp_path / 'source.pkl') # no training-state file beside it
    shutil.copy(os.path.join(runs['a'], 'network-snapshot-000000.016.pkl'), pkl)
    rc, out = _train(str(tmp_path / 'out'), f'--data={he_zip}', *TINY, '--kimg=0.004', f'--resume={pkl}')
    assert rc == 0, out
    assert 'transferring weights only' in out and 'Exact resume' not in out
    run = glob.glob(str(tmp_path / 'out' / '*'))[0]
    assert run.endswith('-resumecustom')
    state = torch.load(os.path.join(run, 'training-state-000000.004.pt'), weights_only=False)
    assert state['cur_nimg'] == 4 # counters restart; the weights came from the pickle
    with open(os.path.join(run, 'training_options.json')) as f:
        options = json.load(f)
    assert options['ada_kimg'] == 100 and options['ema_rampup'] is None # the official transfer-learning settings
