"""The training loop runs any family through the Loss contract: a toy family (networks, loss and
schedule defined here, unknown to the loop) trains, and the loop runs exactly the declared phases."""

import os
import pickle

import numpy as np
import pytest
import torch

import dnnlib
from datasets import write_dataset_zip
from training.loss import Loss, phase

RES = 16
CALLS = []


class ToyG(torch.nn.Module):
    def __init__(self, z_dim=8, c_dim=0, img_resolution=RES, img_channels=3):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, c_dim, img_resolution, img_channels
        self.fc = torch.nn.Linear(z_dim, img_channels * img_resolution ** 2)
        self.register_buffer('lod', torch.tensor(0.0))

    def set_lod(self, lod):
        self.lod.fill_(lod)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='const', force_fp32=False):
        return torch.tanh(self.fc(z * truncation_psi)).view(-1, self.img_channels, self.img_resolution, self.img_resolution)


class ToyD(torch.nn.Module):
    def __init__(self, c_dim=0, img_resolution=RES, img_channels=3):
        super().__init__()
        self.fc = torch.nn.Linear(img_channels * img_resolution ** 2, 1)

    def forward(self, img, c):
        return self.fc(img.flatten(1))


class ToyLoss(Loss):
    """Three critic executions every step, a generator step every second step."""

    def __init__(self, device, G, D, augment_pipe=None):
        super().__init__(device, G, D, augment_pipe)
        self.phases = [phase('Dmain', 'D', repeats=3), phase('Gmain', 'G', interval=2, uses_reals=False)]

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        CALLS.append(dict(phase=phase, real=None if real_img is None else real_img.clone(), z=gen_z.clone(), gain=gain,
                          cur_nimg=cur_nimg, D_trains=self.D.fc.weight.requires_grad, G_trains=self.G.fc.weight.requires_grad,
                          lod=float(self.G.lod)))
        fake = self.G(gen_z, gen_c)
        if phase == 'Dmain':
            loss = self.D(fake, gen_c).mean() - self.discriminate_reals(real_img, real_c).mean()
        else:
            loss = -self.D(fake, gen_c).mean()
        (loss * gain).backward()


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory, he_crops):
    root = tmp_path_factory.mktemp('toy')
    data = write_dataset_zip(root / 'he.zip', he_crops(RES, 16, seed=1))
    CALLS.clear()
    from training.training_loop import training_loop
    training_loop(
        run_dir=str(root), training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data),
        data_loader_kwargs=dict(num_workers=3, prefetch_factor=2),  # the default workers
        G_kwargs=dict(class_name=f'{__name__}.ToyG'), D_kwargs=dict(class_name=f'{__name__}.ToyD'),
        G_opt_kwargs=dict(class_name='torch.optim.SGD', lr=0.01), D_opt_kwargs=dict(class_name='torch.optim.SGD', lr=0.01),
        loss_kwargs=dict(class_name=f'{__name__}.ToyLoss'),
        schedule_kwargs=dict(class_name='training.schedules.ProgressiveGrowing', start_resolution=4, phase_kimg=0.004, fade_kimg=0.008),
        batch_size=4, batch_gpu=4, ema_kimg=None, total_kimg=0.012, kimg_per_tick=0.004,
        image_snapshot_ticks=None, network_snapshot_ticks=100)
    with open(root / 'network-snapshot-000000.012.pkl', 'rb') as f:
        return list(CALLS), pickle.load(f), root


def test_loop_runs_declared_phases_with_intervals_and_repeats(toy_run):
    calls, _snapshot, _root = toy_run
    assert [c['phase'] for c in calls] == ['Dmain'] * 3 + ['Gmain'] + ['Dmain'] * 3 + ['Dmain'] * 3 + ['Gmain']
    assert [c['cur_nimg'] for c in calls] == [0] * 4 + [4] * 3 + [8] * 4
    assert all(c['gain'] == (2 if c['phase'] == 'Gmain' else 1) for c in calls)
    # Only the phase's own network trains.
    assert all(c['D_trains'] and not c['G_trains'] for c in calls if c['phase'] == 'Dmain')
    assert all(c['G_trains'] and not c['D_trains'] for c in calls if c['phase'] == 'Gmain')


def test_every_execution_gets_fresh_reals_and_latents(toy_run):
    calls, _snapshot, _root = toy_run
    reals = [c['real'] for c in calls if c['phase'] == 'Dmain']
    assert all(c['real'] is None for c in calls if c['phase'] == 'Gmain')
    # 16 images, batch 4: the first four real batches are one epoch, so pairwise disjoint.
    first_epoch = torch.cat(reals[:4]).flatten(1)
    assert len(torch.unique(first_epoch, dim=0)) == 16
    latents = torch.stack([c['z'] for c in calls]).flatten(1)
    assert len(torch.unique(latents, dim=0)) == len(calls)


def test_schedule_and_ema_reach_the_snapshot(toy_run):
    calls, snapshot, root = toy_run
    # 16 from 4 is lod 2; 4 images stable, then an 8-image fade: lod 2, 2, 2 - 4/8 at images 0, 4, 8.
    assert [c['lod'] for c in calls if c['phase'] == 'Dmain'][::3] == [2.0, 2.0, 1.5]
    assert snapshot['G'].lod.item() == 1.5 and snapshot['G_ema'].lod.item() == 1.5
    # No EMA in this family: G_ema is a copy of G.
    for (name, p), (_, q) in zip(snapshot['G'].named_parameters(), snapshot['G_ema'].named_parameters()):
        assert torch.equal(p, q), name
    state = torch.load(os.path.join(root, 'training-state-000000.012.pt'), weights_only=False)
    assert state['cur_nimg'] == 12 and state['batch_idx'] == 3
    assert state['data_position'] == 9 * 4  # nine real batches of 4 were drawn
    assert set(state['optimizers']) == {'G', 'D'}
    signs = state['loss']['real_sign_stats'].numpy()
    assert signs[1] == 9 * 4 and abs(signs[0]) <= signs[1]


class NoPhasesLoss(Loss):
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        pass


def test_loss_base_needs_accumulate_gradients():
    with pytest.raises(TypeError, match='accumulate_gradients'):
        Loss('cpu', ToyG(), ToyD())
    loss = NoPhasesLoss('cpu', ToyG(), ToyD())
    assert loss.optimizer_kwargs('G', dnnlib.EasyDict(lr=1)) == dict(lr=1)
    loss.real_sign_stats += torch.tensor([3.0, 5.0], dtype=torch.float64)
    other = NoPhasesLoss('cpu', ToyG(), ToyD())
    other.load_state_dict(loss.state_dict())
    np.testing.assert_array_equal(other.real_sign_stats.numpy(), [3, 5])
