"""StyleGAN2Loss on small linear stand-in networks whose losses and penalties have closed forms."""

import numpy as np
import pytest
import torch

from torch_utils import training_stats
from training.loss import StyleGAN2Loss

N, NUM_WS, W_DIM, C, H = 4, 3, 5, 2, 4


class Mapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(W_DIM, W_DIM) * 0.5)
        self.calls = []

    def forward(self, z, c, skip_w_avg_update=False):
        self.calls.append(z.detach().clone())
        return (z @ self.weight).unsqueeze(1).repeat(1, NUM_WS, 1)


class Synthesis(torch.nn.Module):
    """img = (sum over layers of ws) @ A, reshaped: the Jacobian w.r.t. every layer's w is A."""

    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(W_DIM, C * H * H) * 0.3)
        self.seen_ws = []

    def forward(self, ws):
        self.seen_ws.append(ws.detach().clone())
        return (ws.sum(dim=1) @ self.A).reshape(-1, C, H, H)


class LinearD(torch.nn.Module):
    """D(x) = <a, x> + b: its input gradient is a, so the R1 penalty is |a|^2 for every image."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(C, H, H) * 0.2)
        self.b = torch.nn.Parameter(torch.tensor(0.1))

    def forward(self, img, c):
        return (img * self.a).sum(dim=[1, 2, 3], keepdim=False).unsqueeze(1) + self.b


class Generator(torch.nn.Module):
    """The mapping + synthesis layout StyleGAN2Loss drives (G.mapping, G.synthesis)."""

    def __init__(self, mapping, synthesis):
        super().__init__()
        self.mapping = mapping
        self.synthesis = synthesis


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return [m.requires_grad_(False) for m in (Mapping(), Synthesis(), LinearD())] # as in the loop: one module trains at a time


def make_loss(mapping, synthesis, D, **kwargs):
    return StyleGAN2Loss('cpu', Generator(mapping, synthesis), D, **kwargs)


def _collect(fn):
    collector = training_stats.Collector(regex='Loss/.*')
    collector.update()
    fn()
    collector.update()
    return collector


def test_main_losses_match_closed_form(nets):
    mapping, synthesis, D = nets
    loss = make_loss(mapping, synthesis, D, style_mixing_prob=0, r1_gamma=0, pl_weight=0)
    z, c = torch.randn(N, W_DIM), torch.zeros(N, 0)
    real = torch.randn(N, C, H, H)

    D.requires_grad_(True)
    stats = _collect(lambda: loss.accumulate_gradients('Dmain', real, c, z, c, gain=3))
    fake = synthesis(mapping(z, c)).detach()
    ref_D = D.a.detach().clone().requires_grad_(True), D.b.detach().clone().requires_grad_(True)
    logit = lambda x: (x * ref_D[0]).sum(dim=[1, 2, 3]) + ref_D[1]
    ref = torch.nn.functional.softplus(logit(fake)).mean() + torch.nn.functional.softplus(-logit(real)).mean()
    (ref * 3).backward()
    np.testing.assert_allclose(D.a.grad.numpy(), ref_D[0].grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(D.b.grad.item(), ref_D[1].grad.item(), rtol=1e-5)
    assert stats.mean('Loss/D/loss') == pytest.approx(ref.item(), rel=1e-5)
    assert stats.mean('Loss/signs/real') == pytest.approx(np.sign(logit(real).detach().numpy()).mean())
    s = loss.real_sign_stats.tolist()
    assert s[1] == N and s[0] == pytest.approx(np.sign(logit(real).detach().numpy()).sum())

    D.requires_grad_(False)
    synthesis.requires_grad_(True)
    stats = _collect(lambda: loss.accumulate_gradients('Gmain', real, c, z, c, gain=1))
    A = synthesis.A.detach().clone().requires_grad_(True)
    ws = mapping(z, c).detach()
    ref = torch.nn.functional.softplus(-((ws.sum(1) @ A).reshape(-1, C, H, H) * D.a).sum(dim=[1, 2, 3]) - D.b).mean()
    ref.backward()
    np.testing.assert_allclose(synthesis.A.grad.numpy(), A.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert stats.mean('Loss/G/loss') == pytest.approx(ref.item(), rel=1e-5)


def test_r1_penalty_is_squared_input_gradient(nets):
    mapping, synthesis, D = nets
    loss = make_loss(mapping, synthesis, D, style_mixing_prob=0, r1_gamma=4, pl_weight=0)
    z, c = torch.randn(N, W_DIM), torch.zeros(N, 0)
    D.requires_grad_(True)
    stats = _collect(lambda: loss.accumulate_gradients('Dreg', torch.randn(N, C, H, H), c, z, c, gain=16))
    sq = D.a.detach().square().sum().item()
    assert stats.mean('Loss/r1_penalty') == pytest.approx(sq, rel=1e-5)
    # d/da (gamma/2 |a|^2) * gain = gamma * gain * a; b gets nothing.
    np.testing.assert_allclose(D.a.grad.numpy(), (4 * 16 * D.a.detach()).numpy(), rtol=1e-5)
    assert D.b.grad is None or D.b.grad.abs().item() == 0


def test_path_length_penalty_and_mean(nets):
    mapping, synthesis, D = nets
    loss = make_loss(mapping, synthesis, D, style_mixing_prob=0, r1_gamma=0, pl_weight=2, pl_decay=0.01, pl_batch_shrink=2)
    z, c = torch.randn(N, W_DIM), torch.zeros(N, 0)
    mapping.requires_grad_(True) # the G phases train mapping and synthesis together
    synthesis.requires_grad_(True)
    torch.manual_seed(5)
    stats = _collect(lambda: loss.accumulate_gradients('Greg', None, c, z, c, gain=4))
    # Recompute with the same noise draw: grads w.r.t. every layer's w equal A @ noise.
    torch.manual_seed(5)
    noise = torch.randn(N // 2, C, H, H) / H
    A = synthesis.A.detach()
    lengths = (noise.reshape(N // 2, -1) @ A.t()).norm(dim=1)
    pl_mean = 0.01 * lengths.mean()
    assert loss.pl_mean.item() == pytest.approx(pl_mean.item(), rel=1e-5)
    assert stats.mean('Loss/pl_penalty') == pytest.approx((lengths - pl_mean).square().mean().item(), rel=1e-4)
    assert synthesis.A.grad is not None and torch.isfinite(synthesis.A.grad).all()
    assert stats.num('Loss/pl_penalty') == N // 2


def test_style_mixing_switches_latents_at_a_cutoff(nets):
    mapping, synthesis, D = nets
    loss = make_loss(mapping, synthesis, D, style_mixing_prob=1.0, r1_gamma=0, pl_weight=0)
    z, c = torch.randn(N, W_DIM), torch.zeros(N, 0)
    torch.manual_seed(2)
    loss.generate(z, c)
    ws = synthesis.seen_ws[-1]
    first = mapping.calls[-2] @ mapping.weight.detach()
    second = mapping.calls[-1] @ mapping.weight.detach()
    assert torch.equal(mapping.calls[-2], z) and not torch.equal(mapping.calls[-1], z)
    from_first = [torch.allclose(ws[:, i], first) for i in range(NUM_WS)]
    from_second = [torch.allclose(ws[:, i], second) for i in range(NUM_WS)]
    cutoff = from_first.index(False)
    assert 1 <= cutoff < NUM_WS and all(from_first[:cutoff]) and all(from_second[cutoff:])


def test_augment_pipe_sees_reals_and_fakes(nets):
    mapping, synthesis, D = nets
    seen = []

    def pipe(img):
        seen.append(img.shape[0])
        return img.flip(3)

    loss = make_loss(mapping, synthesis, D, augment_pipe=pipe, style_mixing_prob=0, r1_gamma=1, pl_weight=0)
    z, c = torch.randn(N, W_DIM), torch.zeros(N, 0)
    D.requires_grad_(True)
    loss.accumulate_gradients('Dboth', torch.randn(N, C, H, H), c, z, c, gain=1)
    assert seen == [N, N] # fakes, then reals
    # R1 goes through the augmentation: |d D(flip(x)) / dx|^2 is still |a|^2.
    stats = _collect(lambda: loss.accumulate_gradients('Dreg', torch.randn(N, C, H, H), c, z, c, gain=1))
    assert stats.mean('Loss/r1_penalty') == pytest.approx(D.a.detach().square().sum().item(), rel=1e-5)
