"""Each baseline family trained by the one loop on real H&E crops: finite losses, loadable snapshots, the
progressive fade following the schedule, generate.py and calc_metrics.py (SWD) on every family, and the
64x64-only presets refusing other resolutions through train.py."""

import glob
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from datasets import write_dataset_zip
from training import options, schedules

BATCH = 4
# Tiny widths (the preset rows stay as published; only the width kwargs are overridden).
TINY = {
    'dcgan':    dict(G=dict(width=4), D=dict(width=4)),
    'wgan':     dict(G=dict(dim=4), D=dict(dim=4)),
    'pgan':     dict(G=dict(z_dim=16, channel_base=256, channel_max=16), D=dict(channel_base=256, channel_max=16)),
    'stylegan': dict(G=dict(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2),
                            synthesis_kwargs=dict(channel_base=256, channel_max=16)),
                     D=dict(channel_base=256, channel_max=16)),
}
PHASE_KIMG = 0.008  # two steps of 4 images per stable phase and per fade-in
# Progressive families: six steps (8x8, 8x8, 8x8, fade to 16x16, 16x16, 16x16); the others: two steps
# (a WGAN-GP step is five critic executions with double backward, the slowest on a CPU).
KIMG = dict(dcgan=0.008, wgan=0.008, pgan=0.024, stylegan=0.024)


@pytest.fixture(scope='module')
def he64_zip(tmp_path_factory, he_crops):
    return write_dataset_zip(tmp_path_factory.mktemp('data') / 'he64.zip', he_crops(64, 12, seed=3))


def _train(cfg, data, run_dir):
    from training.training_loop import training_loop
    extra = dict(phase_kimg=PHASE_KIMG) if cfg in ('pgan', 'stylegan') else {}
    _desc, kwargs = options.build(data=data, cfg=cfg, kimg=KIMG[cfg], batch=BATCH, tick=BATCH / 1000, snap=1,
                                  metrics=[], workers=0, seed=1, **extra)
    kwargs.G_kwargs.update(TINY[cfg]['G'])
    kwargs.D_kwargs.update(TINY[cfg]['D'])
    kwargs.update(run_dir=run_dir, image_snapshot_ticks=None)
    training_loop(**kwargs)
    return kwargs


@pytest.fixture(scope='module')
def runs(tmp_path_factory, he64_zip):
    out = {}
    for cfg in TINY:
        run_dir = str(tmp_path_factory.mktemp(cfg))
        out[cfg] = (run_dir, _train(cfg, he64_zip, run_dir))
    return out


def _snapshots(run_dir):
    """{images seen: snapshot path}."""
    found = {}
    for path in glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')):
        tag = os.path.basename(path)[len('network-snapshot-'):-len('.pkl')]
        kimg, _, rest = tag.partition('.')
        found[int(kimg) * 1000 + int(rest or 0)] = path
    return found

#----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('cfg', list(TINY))
def test_short_run_has_finite_losses_and_loadable_snapshot(cfg, runs):
    run_dir, kwargs = runs[cfg]
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        ticks = [json.loads(line) for line in f]
    steps = round(KIMG[cfg] * 1000 / BATCH)
    for key in ('Loss/G/loss', 'Loss/D/loss'):
        values = [t[key]['mean'] for t in ticks if key in t]
        assert len(values) == steps and np.all(np.isfinite(values)), (key, values)
    snaps = _snapshots(run_dir)
    assert max(snaps) == round(KIMG[cfg] * 1000)
    data = legacy.load_network(snaps[max(snaps)])
    G = data['G_ema']
    assert type(G).__module__.endswith(kwargs.G_kwargs.class_name.rsplit('.', 1)[0].split('.')[-1])
    assert (G.img_resolution, G.c_dim) == (64, 0) and data['training_set_kwargs']['resolution'] == 64
    with torch.no_grad():
        img = G.eval()(torch.randn(3, G.z_dim), None, noise_mode='const')
    assert img.shape == (3, 3, 64, 64) and torch.isfinite(img).all() and img.std() > 0
    if cfg in ('dcgan', 'wgan'):
        assert img.abs().max() <= 1  # tanh outputs; PGAN and StyleGAN end in a linear toRGB, as published


@pytest.mark.slow
@pytest.mark.parametrize('cfg', ['pgan', 'stylegan'])
def test_fade_follows_schedule_and_growth_reaches_snapshot(cfg, runs):
    run_dir, kwargs = runs[cfg]
    schedule = schedules.ProgressiveGrowing(start_resolution=8, phase_kimg=PHASE_KIMG, fade_kimg=PHASE_KIMG, img_resolution=64)
    snaps = _snapshots(run_dir)
    lods = {}
    for nimg, path in sorted(snaps.items()):
        if nimg == 0:
            continue
        data = legacy.load_network(path)
        expected = schedule.lod_at(nimg - BATCH)  # the schedule is applied before the step that ends at nimg
        for key in ('G', 'G_ema', 'D'):
            assert float(data[key].lod) == pytest.approx(expected, abs=1e-6), (key, nimg)
        lods[nimg] = (expected, data['G_ema'])
    assert [lod for lod, _ in lods.values()] == [3.0, 3.0, 3.0, 2.5, 2.0, 2.0]

    def visible_block(G):
        """Largest k such that the 64x64 output is constant on k x k pixel blocks."""
        with torch.no_grad():
            img = G.eval()(torch.randn(2, G.z_dim), None, noise_mode='const').numpy()
        for k in (8, 4, 2):
            blocks = img.reshape(2, 3, 64 // k, k, 64 // k, k)
            if np.allclose(blocks, blocks[:, :, :, :1, :, :1], atol=1e-6):
                return k
        return 1
    assert visible_block(lods[12][1]) == 8   # still 8x8 before the growth step
    assert visible_block(lods[20][1]) == 4   # after it: a 16x16 image


@pytest.mark.slow
@pytest.mark.parametrize('cfg', list(TINY))
def test_generate_and_swd_on_every_family(cfg, runs, he64_zip, tmp_path):
    import calc_metrics
    import generate
    run_dir, _ = runs[cfg]
    pkl = _snapshots(run_dir)[round(KIMG[cfg] * 1000)]
    result = CliRunner().invoke(generate.generate_images_cmd, [f'--network={pkl}', '--seeds=0-1', '--trunc=0.7',
                                                               f'--outdir={tmp_path}'])
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        img = np.asarray(PIL.Image.open(tmp_path / f'seed{seed:04d}.png'))
        assert img.shape == (64, 64, 3) and img.std() > 0
    result = CliRunner().invoke(calc_metrics.main, [f'--network={pkl}', '--metrics=swd16', f'--data={he64_zip}'])
    assert result.exit_code == 0, result.output
    # The metric's one-line JSON result (progress bars may share its line).
    lines = [line[line.index('{"'):] for line in result.output.splitlines() if '"results"' in line]
    results = json.loads(lines[-1])['results']
    assert set(results) == {'swd16_64', 'swd16_32', 'swd16_16', 'swd16_avg'}
    assert all(np.isfinite(v) and v > 0 for v in results.values())

#----------------------------------------------------------------------------

@pytest.mark.parametrize('cfg', ['dcgan', 'wgan'])
def test_64_only_presets_refuse_other_resolutions(cfg, tmp_path, he_crops):
    import train
    data = write_dataset_zip(tmp_path / 'he256.zip', he_crops(256, 2, seed=4))
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--data={data}', f'--cfg={cfg}', '--dry-run'])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == f'Error: --cfg={cfg} trains 64x64 patches only; this dataset is 256x256'
    assert 'Traceback' not in result.output and not os.path.exists(tmp_path / 'runs')


def test_progressive_presets_accept_width_knobs(he_crops, tmp_path):
    data = write_dataset_zip(tmp_path / 'he64.zip', he_crops(64, 2, seed=4))
    _, kwargs = options.build(data=data, cfg='stylegan', cbase=512, cmax=32, map=2)
    assert kwargs.G_kwargs.synthesis_kwargs == dict(channel_base=512, channel_max=32)
    assert kwargs.G_kwargs.mapping_kwargs == dict(num_layers=2)
    assert (kwargs.D_kwargs.channel_base, kwargs.D_kwargs.channel_max) == (512, 32)
    _, kwargs = options.build(data=data, cfg='pgan', cbase=512, cmax=32, batch=8)
    assert (kwargs.G_kwargs.channel_base, kwargs.D_kwargs.channel_max) == (512, 32)
    # The minibatch-stddev layer groups 4 images: a batch it cannot split is refused up front.
    with pytest.raises(dnnlib.util.UserError, match='minibatch-stddev group size'):
        options.build(data=data, cfg='pgan', batch=6)
