"""Crash, resume, crash, resume (issue 30): train.py killed with SIGKILL again and again, and the same command
repeated each time, ends as one uninterrupted run would: one run dir, every snapshot loadable, no temporary
files, exactly the kimg asked for, at most one tick trained twice per kill, and the same final weights.

The kills are seeded. The default-suite chain kills at chosen points of the training loop (inside a snapshot
write, between the stats line and the snapshot, at a snapshot boundary, mid-tick) from inside the process,
so a failure reproduces exactly; the slow test kills from outside at seeded random times."""

import glob
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from datasets import write_dataset_zip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# As tests/test_train.py's TINY; the DataLoader workers stay at the default (3), as users get them.
TINY = ['--cfg=config-e', '--cbase=256', '--cmax=64', '--map=2', '--batch=4', '--snap=1', '--metrics=none', '--seed=3']

# Runs a training CLI (train.py, tools.train_encoder or tools.classifier train) in this process and SIGKILLs it at
# the n-th occurrence of one point of its training loop.
_DRIVER = r'''
import os, pickle, signal, sys
import torch

where, n = sys.argv[1].split(':')
program = sys.argv[2]
n, count = int(n), [0]

def due():
    count[0] += 1
    return count[0] == n

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def wrap(owner, name, before=False, after=False):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
        if before and due():
            die()
        result = original(*args, **kwargs)
        if after and due():
            die()
        return result
    setattr(owner, name, wrapped)

if program == 'train':
    import train
    from training import training_loop as loop
    step, snapshot, main = 'training_step', 'save_snapshot', lambda: train.main(sys.argv[3:])
elif program == 'encoder':
    from tools import train_encoder as loop
    step, snapshot, main = 'encoder_loss', 'save_snapshot', lambda: loop.main(sys.argv[3:])
else:
    from tools import classifier as loop
    step, snapshot, main = 'augment', 'save_checkpoint', lambda: loop.cli(['train', *sys.argv[3:]])

if where == 'step':          # before a training step: mid-tick
    wrap(loop, step, before=True)
elif where == 'stats':       # the tick's stats line is written, its snapshot not yet
    wrap(loop, 'write_stats', after=True)
elif where == 'boundary':    # right after a complete snapshot
    wrap(loop, snapshot, after=True)
elif where == 'state':       # a training state (or checkpoint) written to its temporary file, not yet renamed
    wrap(torch, 'save', after=True)
elif where == 'pickle':      # half of the network pickle written to its temporary file
    class HalfPickle:
        def __getattr__(self, name):
            return getattr(pickle, name)
        def dump(self, obj, f, *args, **kwargs):
            if due():
                data = pickle.dumps(obj)
                f.write(data[:len(data) // 2])
                f.flush()
                die()
            return pickle.dump(obj, f, *args, **kwargs)
    loop.pickle = HalfPickle()
main()
'''


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', HISTOSYNTH_OPS_IMPL='ref', PYTHONPATH=REPO)


def _start(outdir, args, kill=None, program='train'):
    """A training CLI in a new session (its DataLoader workers with it); kill: 'where:n' for the driver, else none."""
    cmd = [sys.executable, '-c', _DRIVER, kill or 'none:0', program, f'--outdir={outdir}', *args]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers a killed process left behind
    except ProcessLookupError:
        pass
    return proc.returncode, out


def _only_run(outdir):
    runs = sorted(glob.glob(os.path.join(outdir, '0*')))
    assert len(runs) == 1, runs
    return runs[0]


def _load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _status_ticks(run_dir):
    """Tick numbers of the status lines in log.txt, every process of the run."""
    with open(os.path.join(run_dir, 'log.txt')) as f:
        return [int(line.split()[1]) for line in f if line.startswith('tick ')]


def _stats_ticks(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [int(json.loads(line)['Progress/tick']['mean']) for line in f]


def check_chain(chain_dir, reference_dir, kills, total_nimg):
    """Everything issue 30 asks of a run that was killed `kills` times, against the uninterrupted reference."""
    names = os.listdir(chain_dir)
    assert not [n for n in names if n.endswith('.tmp')], names
    snapshots = sorted(n for n in names if n.startswith('network-snapshot-'))
    states = sorted(n for n in names if n.startswith('training-state-'))
    assert [n.replace('network-snapshot-', '').replace('.pkl', '') for n in snapshots] == \
           [n.replace('training-state-', '').replace('.pt', '') for n in states]
    assert snapshots == sorted(n for n in os.listdir(reference_dir) if n.startswith('network-snapshot-'))
    for name in snapshots:  # every snapshot loads, with its state
        snap = _load(os.path.join(chain_dir, name))
        assert set(snap) >= {'G', 'D', 'G_ema'}
        torch.load(os.path.join(chain_dir, name.replace('network-snapshot-', 'training-state-').replace('.pkl', '.pt')),
                   weights_only=False)
    final = torch.load(os.path.join(chain_dir, states[-1]), weights_only=False)
    assert final['cur_nimg'] == total_nimg  # exactly the length asked for
    one_run = _status_ticks(reference_dir)
    trained = _status_ticks(chain_dir)
    assert len(one_run) <= len(trained) <= len(one_run) + kills, (one_run, trained)
    assert sorted(set(trained)) == one_run
    with open(os.path.join(chain_dir, 'log.txt')) as f:
        assert f.read().count('=== Restarted ') == kills
    assert _stats_ticks(chain_dir) == one_run  # each tick once in stats.jsonl, in order
    assert any(n.startswith('events.out.tfevents') for n in names)
    # Exact resume across the chain: the same final networks, bit for bit.
    a, b = _load(os.path.join(reference_dir, snapshots[-1])), _load(os.path.join(chain_dir, snapshots[-1]))
    for net in ['G', 'D', 'G_ema']:
        for (key, x), (_, y) in zip(a[net].state_dict().items(), b[net].state_dict().items()):
            assert torch.equal(x, y), (net, key)
    return len(one_run), len(trained)


def seeded_kills(seed, count):
    """count (where, n) kill points; at least one lands inside a snapshot write."""
    rng = random.Random(seed)
    kinds = ['state', 'pickle', 'stats', 'boundary', 'step']
    chosen = [rng.choice(['state', 'pickle'])] + [rng.choice(kinds) for _ in range(count - 1)]
    rng.shuffle(chosen)
    # One event into a process at most one tick is done (ticks of one step); 'step' 1 would be before any work.
    return [f'{kind}:{2 if kind == "step" else 1}' for kind in chosen]


@pytest.fixture(scope='module')
def he_zip(tmp_path_factory, he_crops):
    path = tmp_path_factory.mktemp('data') / 'he16.zip'
    return write_dataset_zip(path, he_crops(16, 16, seed=5), labels=[i % 2 for i in range(16)])


def test_three_kills_same_command(he_zip, tmp_path):
    """4 ticks of one step (0.016 kimg), killed 3 times at seeded points; the same --resume=auto line each time."""
    args = [f'--data={he_zip}', *TINY, '--tick=0.004', '--kimg=0.016', '--resume=auto']
    started = time.time()
    reference = _start(str(tmp_path / 'reference'), args)
    kills = seeded_kills(seed=30, count=3)
    outdir = str(tmp_path / 'chain')
    for kill in kills:
        rc, out = _finish(_start(outdir, args, kill=kill))
        assert rc == -signal.SIGKILL, (kill, out)
    rc, out = _finish(_start(outdir, args))
    assert rc == 0, out
    assert 'Exiting...' in out and '--resume=auto: continuing' in out
    rc, out_ref = _finish(reference)
    assert rc == 0, out_ref
    one_run, trained = check_chain(_only_run(outdir), _only_run(str(tmp_path / 'reference')), len(kills), 16)
    # The finished run, resumed again: says so and exits 0, writing nothing.
    before = sorted(os.listdir(_only_run(outdir)))
    rc, out = _finish(_start(outdir, args))
    assert rc == 0 and 'has finished: 0.016 of 0.016 kimg' in out, out
    assert sorted(os.listdir(_only_run(outdir))) == before
    print(f'kills {kills}: {trained} ticks trained for {one_run} of one run, {time.time() - started:.0f} s')


@pytest.mark.slow
def test_random_kills_from_outside(he_zip, tmp_path):
    """12 ticks of two steps (0.096 kimg), SIGKILLed from outside 7 times at seeded random moments after training
    starts; the same --resume=DIR command each time after the first start."""
    args = [f'--data={he_zip}', *TINY, '--tick=0.008', '--kimg=0.096']
    started = time.time()
    reference = _start(str(tmp_path / 'reference'), args)
    rng = random.Random(7)
    outdir = str(tmp_path / 'chain')
    kills, command = 0, args
    for attempt in range(7):
        proc = _start(outdir, command)
        delay = rng.uniform(0, 12)
        log = None
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:  # wait for training to start, then the seeded delay
            log = log or next(iter(glob.glob(os.path.join(outdir, '0*', 'log.txt'))), None)
            if log is not None:
                with open(log) as f:
                    if f.read().count('Training for') > attempt:
                        break
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        _finish(proc)
        command = [*args, f'--resume={_only_run(outdir)}']
    rc, out = _finish(_start(outdir, command))
    assert rc == 0, out
    rc, out_ref = _finish(reference)
    assert rc == 0, out_ref
    one_run, trained = check_chain(_only_run(outdir), _only_run(str(tmp_path / 'reference')), kills, 96)
    print(f'{kills} kills: {trained} ticks trained for {one_run} of one run, {time.time() - started:.0f} s')


#----------------------------------------------------------------------------
# The encoder and the classifier: the same command after each kill, --resume=auto.

def _no_temporaries(folder):
    names = os.listdir(folder)
    assert not [n for n in names if n.endswith('.tmp')], names


@pytest.mark.slow
def test_encoder_killed_twice(tmp_path):
    """tools.train_encoder, 4 ticks of one step, killed inside a state write and at a snapshot boundary."""
    from projection_nets import image_from_w, save_snapshot, tiny_stylegan2

    from tools import cli_utils, train_encoder
    G, D = tiny_stylegan2(16)
    network = save_snapshot(tmp_path / 'net.pkl', G, D)
    with torch.no_grad():
        images = [cli_utils.images_to_uint8(image_from_w(G, seed)[1])[0] for seed in range(40)]
    data = write_dataset_zip(tmp_path / 'fakes.zip', images)
    args = [f'--network={network}', f'--data={data}', '--kimg=0.064', '--batch=16', '--tick=0.016', '--snap=1',
            '--heldout=0.1', '--device=cpu', '--resume=auto']
    reference = _start(str(tmp_path / 'reference'), args, program='encoder')
    outdir = str(tmp_path / 'chain')
    for kill in seeded_kills(seed=31, count=2):
        kill = kill.replace('stats', 'boundary')  # the encoder's loop writes its stats line inline
        rc, out = _finish(_start(outdir, args, kill=kill, program='encoder'))
        assert rc == -signal.SIGKILL, (kill, out)
    rc, out = _finish(_start(outdir, args, program='encoder'))
    assert rc == 0 and '--resume=auto: continuing' in out and '=== Restarted ' in out, out
    assert _finish(reference)[0] == 0
    run, ref = _only_run(outdir), _only_run(str(tmp_path / 'reference'))
    _no_temporaries(run)
    snapshots = sorted(n for n in os.listdir(run) if n.startswith('encoder-snapshot-'))
    assert snapshots == sorted(n for n in os.listdir(ref) if n.startswith('encoder-snapshot-'))
    for name in snapshots:
        train_encoder.load_encoder(os.path.join(run, name))
        assert os.path.isfile(train_encoder.state_path_for(os.path.join(run, name)))
    with open(os.path.join(run, 'stats.jsonl')) as f:
        assert [json.loads(line)['tick'] for line in f] == [1, 2, 3, 4]
    a = train_encoder.load_encoder(os.path.join(ref, snapshots[-1])).state_dict()
    b = train_encoder.load_encoder(os.path.join(run, snapshots[-1])).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rc, out = _finish(_start(outdir, args, program='encoder'))
    assert rc == 0 and 'has finished: 0.064 of 0.064 kimg' in out, out


@pytest.mark.slow
def test_classifier_killed_three_times(tmp_path, he_crops):
    """tools.classifier train, 3 epochs, killed mid-epoch, between epochs and inside a checkpoint write; --resume=auto each time."""
    from tools import classifier
    data = write_dataset_zip(tmp_path / 'cls.zip', he_crops(32, 24, seed=4), labels=[i % 2 for i in range(24)])
    args = [f'--data={data}', '--epochs=3', '--batch=8', '--val-split=0.25', '--device=cpu', '--resume=auto']
    reference = _start(str(tmp_path / 'reference'), args, program='classifier')
    outdir = str(tmp_path / 'chain')
    for kill in ['step:3', 'boundary:2', 'state:1']:  # mid-epoch 1 (3 steps an epoch); after epoch 1's last.pt; inside epoch 2's first checkpoint write
        rc, out = _finish(_start(outdir, args, kill=kill, program='classifier'))
        assert rc == -signal.SIGKILL, (kill, out)
    rc, out = _finish(_start(outdir, args, program='classifier'))
    assert rc == 0 and '=== Restarted ' in out, out
    assert _finish(reference)[0] == 0
    _no_temporaries(outdir)
    with open(os.path.join(outdir, 'stats.jsonl')) as f:
        assert [json.loads(line)['epoch'] for line in f] == [1, 2, 3]
    a = torch.load(os.path.join(str(tmp_path / 'reference'), 'last.pt'), weights_only=True)
    b = torch.load(os.path.join(outdir, 'last.pt'), weights_only=True)
    assert a['epoch'] == b['epoch'] == 3
    for key in a['model']:
        torch.testing.assert_close(a['model'][key], b['model'][key], rtol=0, atol=0, msg=key)
    classifier.load_checkpoint(os.path.join(outdir, 'best.pt'))
    rc, out = _finish(_start(outdir, args, program='classifier'))
    assert rc == 0 and 'has finished: 3 of 3 epochs' in out, out


def test_encoder_and_classifier_choose_the_run_to_continue(tmp_path):
    """The run-choosing part of the encoder's and the classifier's --resume on hand-made run folders (no training)."""
    from tools import classifier, train_encoder
    options = dict(network='net.pkl', data='fakes.zip', kimg=0.064, batch_size=16, kappa=1.0, lpips_weight=0.0,
                   heldout=0.1, w_plus=False, lr=None, tick_kimg=0.016, snap_ticks=1, seed=0, workers=2, device='cpu')
    outdir = tmp_path / 'enc'

    def run(name, nimg, **changes):
        folder = outdir / name
        folder.mkdir(parents=True)
        (folder / 'encoder_options.json').write_text(json.dumps(dict(options, resume_pkl=None, **changes)))
        pkl, state = train_encoder.snapshot_paths(str(folder), nimg)
        open(pkl, 'wb').close()
        open(state, 'wb').close()
        return str(folder), pkl

    run('00000-encoder-fakes', 64)                    # finished
    older = run('00001-encoder-fakes', 16)
    newer, pkl = run('00002-encoder-fakes', 32)
    run('00003-encoder-fakes', 48, kappa=2.0)         # other options
    assert train_encoder.choose_run(str(outdir), dict(options, workers=0), 'auto') == (newer, pkl, None, None)
    assert train_encoder.choose_run(str(outdir), options, older[0]) == (older[0], older[1], None, None)
    done = train_encoder.choose_run(str(outdir), options, str(outdir / '00000-encoder-fakes'))
    assert done[2] == f'{outdir / "00000-encoder-fakes"} has finished: 0.064 of 0.064 kimg; nothing to do'
    assert train_encoder.choose_run(str(outdir), dict(options, kimg=0.128), older[0])[:2] == older  # a longer run
    with pytest.raises(train_encoder.dnnlib.util.UserError, match=r'other options \(kappa: run has 1\.0, this command 2\.0\)'):
        train_encoder.choose_run(str(outdir), dict(options, kappa=2.0), newer)
    fresh = train_encoder.choose_run(str(outdir), dict(options, seed=5), 'auto')
    assert fresh == (str(outdir / '00004-encoder-fakes'), None, None, None)

    # The classifier: outdir is the run; last.pt says how far it came and with which options.
    folder = tmp_path / 'cls'
    folder.mkdir()
    last = str(folder / 'last.pt')
    cls_options = dict(data='/x/train.zip', val_split=0.1, epochs=5, batch=32, lr=1e-3, pretrained=None, seed=0)
    model = classifier.build_model()
    classifier.save_checkpoint(last, model, torch.optim.Adam(model.parameters()), 2, 0.75, 32, cls_options)
    with pytest.raises(classifier.dnnlib.util.UserError, match='already holds a run'):
        classifier.resumed_state(str(folder), last, False, cls_options, 32)
    state = classifier.resumed_state(str(folder), last, 'auto', dict(cls_options, epochs=8), 32)
    assert state['epoch'] == 2 and state['best_accuracy'] == 0.75
    with pytest.raises(classifier.dnnlib.util.UserError, match=r"other options \(lr: run has 0\.001, this command 0\.01\)"):
        classifier.resumed_state(str(folder), last, True, dict(cls_options, lr=1e-2), 32)
    assert classifier.resumed_state(str(tmp_path / 'empty'), str(tmp_path / 'empty' / 'last.pt'), 'auto', cls_options, 32) is None
    with pytest.raises(classifier.dnnlib.util.UserError, match='has no last.pt'):
        classifier.resumed_state(str(tmp_path / 'empty'), str(tmp_path / 'empty' / 'last.pt'), True, cls_options, 32)
