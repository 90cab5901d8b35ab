"""Family losses on toy networks whose losses, gradients and penalties are known independently."""

import numpy as np
import pytest
import torch

from networks import progressive
from torch_utils import training_stats
from training.gan_losses import NonSaturatingLoss, WassersteinGPLoss, gradient_penalty

N, C, H, Z = 4, 3, 8, 5

#----------------------------------------------------------------------------

class TanhCritic(torch.nn.Module):
    """D(x) = sum(tanh(a * x)) + b: grad_x D = a * (1 - tanh(a x)^2) in closed form."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(C, H, H) * 0.5)
        self.b = torch.nn.Parameter(torch.tensor(0.2))

    def forward(self, img, c=None):
        return torch.tanh(img * self.a).sum(dim=[1, 2, 3]).unsqueeze(1) + self.b


class ProgressiveCritic(TanhCritic):
    """The toy critic plus the lod buffer that marks a progressive network; records what it was shown."""

    def __init__(self, lod):
        super().__init__()
        self.register_buffer('lod', torch.tensor(float(lod)))
        self.seen = []

    def forward(self, img, c=None):
        self.seen.append(img.detach().clone())
        return super().forward(img, c)


class LinearG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(Z, C * H * H) * 0.3)

    def forward(self, z, c=None, **kwargs):
        return (z @ self.A).reshape(-1, C, H, H)


class StyleG(torch.nn.Module):
    """Mapping = identity rows of z, synthesis records the ws it receives."""

    num_ws = 6

    def __init__(self):
        super().__init__()
        self.mapping = lambda z, c, **kwargs: z.unsqueeze(1).repeat(1, self.num_ws, 1)
        self.A = torch.nn.Parameter(torch.randn(Z, C * H * H))
        self.seen_ws = []

    def synthesis(self, ws, **kwargs):
        self.seen_ws.append(ws.detach().clone())
        return (ws.mean(dim=1) @ self.A).reshape(-1, C, H, H)

    def forward(self, z, c, **kwargs):
        return self.synthesis(self.mapping(z, c), **kwargs)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(N, C, H, H), torch.zeros(N, 0), torch.randn(N, Z), torch.zeros(N, 0)


def _stats(fn):
    collector = training_stats.Collector(regex='Loss/.*')
    collector.update()
    fn()
    collector.update()
    return collector

#----------------------------------------------------------------------------

def test_gradient_penalty_matches_closed_form_and_per_sample_autograd():
    torch.manual_seed(1)
    D = TanhCritic()
    real, fake = torch.randn(N, C, H, H), torch.randn(N, C, H, H)
    mix = torch.rand(N, 1, 1, 1)
    penalty = gradient_penalty(D, real, fake, None, mix=mix)

    x_hat = mix * real + (1 - mix) * fake
    closed = D.a * (1 - torch.tanh(D.a * x_hat) ** 2)
    ref = (closed.flatten(1).norm(dim=1) - 1) ** 2
    torch.testing.assert_close(penalty, ref.detach(), rtol=1e-5, atol=1e-6)

    # Gradient of the mean penalty w.r.t. the critic's parameters, one sample at a time.
    penalty.mean().backward()
    got = D.a.grad.clone()
    D.a.grad = None
    for i in range(N):
        x = x_hat[i:i + 1].detach().requires_grad_(True)
        g, = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        ((g.norm() - 1) ** 2 / N).backward()
    torch.testing.assert_close(got, D.a.grad, rtol=1e-5, atol=1e-6)


def test_wasserstein_critic_step_brute_force(batch):
    real, c, z, _ = batch
    G, D = LinearG(), TanhCritic()
    loss = WassersteinGPLoss('cpu', G, D, gp_lambda=10, n_critic=5, drift=0.001)
    assert [(p.name, p.module, p.interval, p.repeats, p.uses_reals) for p in loss.phases] == [
        ('Dmain', 'D', 1, 5, True), ('Gmain', 'G', 1, 1, False)]
    torch.manual_seed(7)
    stats = _stats(lambda: loss.accumulate_gradients('Dmain', real, c, z, c, gain=2, cur_nimg=0))
    got = D.a.grad.clone(), D.b.grad.clone()

    torch.manual_seed(7)
    mix = torch.rand(N, 1, 1, 1)
    D.zero_grad(set_to_none=True)
    fake = G(z).detach()
    total = 0
    for i in range(N):  # the loss written out per sample
        x_hat = (mix[i] * real[i] + (1 - mix[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        g, = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
        d_real = D(real[i:i + 1]).sum()
        total = total + D(fake[i:i + 1]).sum() - d_real + 10 * (g.norm() - 1) ** 2 + 0.001 * d_real ** 2
    (total / N * 2).backward()
    torch.testing.assert_close(got[0], D.a.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], D.b.grad, rtol=1e-5, atol=1e-6)
    assert stats.mean('Loss/D/loss') == pytest.approx(total.item() / N, rel=1e-5)
    assert WassersteinGPLoss('cpu', G, D, n_critic=1).phases[0].repeats == 1


def test_wasserstein_generator_step(batch):
    real, c, z, _ = batch
    G, D = LinearG(), TanhCritic()
    loss = WassersteinGPLoss('cpu', G, D)
    loss.accumulate_gradients('Gmain', None, c, z, c, gain=1, cur_nimg=0)
    A = G.A.detach().clone().requires_grad_(True)
    (-D((z @ A).reshape(-1, C, H, H)).mean()).backward()
    torch.testing.assert_close(G.A.grad, A.grad, rtol=1e-5, atol=1e-6)


def test_non_saturating_with_r1_closed_form(batch):
    real, c, z, _ = batch
    G, D = LinearG(), TanhCritic()
    loss = NonSaturatingLoss('cpu', G, D, r1_gamma=10)
    assert [p.name for p in loss.phases] == ['Dmain', 'Gmain']
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)

    a = D.a.detach().clone().requires_grad_(True)
    b = D.b.detach().clone().requires_grad_(True)
    logit = lambda x: torch.tanh(x * a).sum(dim=[1, 2, 3]) + b
    grad_real = a * (1 - torch.tanh(a * real) ** 2)  # closed-form input gradient at the reals
    r1 = grad_real.square().sum(dim=[1, 2, 3])
    sp = torch.nn.functional.softplus
    ref = (sp(logit(G(z).detach())) + sp(-logit(real)) + 5 * r1).mean()
    ref.backward()
    torch.testing.assert_close(D.a.grad, a.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(D.b.grad, b.grad, rtol=1e-5, atol=1e-6)

    G.zero_grad()
    loss.accumulate_gradients('Gmain', None, c, z, c, gain=1, cur_nimg=0)
    A = G.A.detach().clone().requires_grad_(True)
    sp(-D((z @ A).reshape(-1, C, H, H))).mean().backward()
    torch.testing.assert_close(G.A.grad, A.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('loss_class', [NonSaturatingLoss, WassersteinGPLoss])
def test_progressive_critic_sees_faded_reals(loss_class, batch):
    real, c, z, _ = batch
    D = ProgressiveCritic(lod=0.4)
    loss = loss_class('cpu', LinearG(), D)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    faded = progressive.fade_reals(real, 0.4)
    assert not torch.allclose(faded, real)
    assert any(torch.allclose(seen, faded) for seen in D.seen)
    assert not any(torch.allclose(seen, real) for seen in D.seen)


def test_style_mixing_switches_latents_at_one_layer(batch):
    real, c, z, _ = batch
    G = StyleG()
    loss = NonSaturatingLoss('cpu', G, TanhCritic(), style_mixing_prob=1.0)
    torch.manual_seed(3)
    cutoffs = set()
    for _ in range(20):
        loss.run_G(z, c)
        ws = G.seen_ws[-1]
        from_z = (ws == z.unsqueeze(1)).all(dim=2).all(dim=0).numpy()
        k = int(from_z.sum())
        assert 1 <= k < G.num_ws and from_z[:k].all()  # a prefix of layers from z, the rest from another latent
        cutoffs.add(k)
    assert len(cutoffs) > 2
    loss.style_mixing_prob = 0.0
    loss.run_G(z, c)
    assert (G.seen_ws[-1] == z.unsqueeze(1)).all()

#----------------------------------------------------------------------------
