"""Losses of the baseline GAN families, run by the one training loop through their `phases`.

NonSaturatingLoss -- Goodfellow et al. 2014, in the "-log D(G(z))" form: DCGAN (Radford et al. 2016 / AnoGAN)
    with no regulariser, StyleGAN v1 (Karras et al. 2019) with R1 = gamma/2 * |grad D(real)|^2 every step
    and style mixing.
WassersteinGPLoss -- Gulrajani et al. 2017: critic loss D(fake) - D(real) + lambda * (|grad D(x_hat)|_2 - 1)^2
    on random interpolates x_hat, n_critic critic steps per generator step (WGAN-GP / f-AnoGAN); PGAN
    (Karras et al. 2018) adds the drift term epsilon * D(real)^2 and runs one critic step.

Both show the reals to D at the networks' current level of detail (networks.progressive.fade_reals) when D
grows progressively, so real and fake images carry the same resolution and cross-fade.
"""

import torch

from networks import progressive
from torch_utils import training_stats
from training.loss import Loss, phase

#----------------------------------------------------------------------------

def gradient_penalty(D, real_img, fake_img, c, mix=None):
    """Per-sample (|grad_x D(x_hat)|_2 - 1)^2 at x_hat = mix * real + (1 - mix) * fake; mix ~ U[0, 1] per sample.

    `D` is any callable (img, c) -> [N, 1]. Returns the [N] penalties, built with create_graph so they train D.
    """
    if mix is None:
        mix = torch.rand([real_img.shape[0], 1, 1, 1], device=real_img.device)
    x_hat = torch.lerp(fake_img.detach(), real_img.detach(), mix).requires_grad_(True)
    grads, = torch.autograd.grad(outputs=D(x_hat, c).sum(), inputs=x_hat, create_graph=True)
    return (grads.flatten(1).norm(dim=1) - 1).square()


class _FamilyLoss(Loss):
    """What both family losses share: fading reals for progressive networks and the D-then-G phase list."""

    def __init__(self, device, G, D, augment_pipe=None, n_critic=1):
        super().__init__(device, G, D, augment_pipe)
        self.phases = [phase('Dmain', 'D', repeats=n_critic), phase('Gmain', 'G', uses_reals=False)]

    def run_G(self, z, c):
        return self.G(z, c, noise_mode='random')

    def prepare_reals(self, real_img):
        """Reals as D should see them now: cross-faded to the current lod when D grows progressively."""
        if hasattr(self.D, 'lod'):
            return progressive.fade_reals(real_img, float(self.D.lod))
        return real_img

#----------------------------------------------------------------------------

class NonSaturatingLoss(_FamilyLoss):
    """Logistic GAN loss: D minimises softplus(D(fake)) + softplus(-D(real)) [+ R1], G minimises softplus(-D(fake))."""

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=0.0, style_mixing_prob=0.0):
        super().__init__(device, G, D, augment_pipe)
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob

    def run_G(self, z, c):
        if self.style_mixing_prob <= 0 or not hasattr(self.G, 'mapping'):
            return super().run_G(z, c)
        ws = self.G.mapping(z, c)
        if torch.rand([]).item() < self.style_mixing_prob:
            # Mixing regularisation: from a random layer on, the styles come from a second latent.
            cutoff = int(torch.randint(1, ws.shape[1], []))
            other = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            ws = torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)
        return self.G.synthesis(ws, noise_mode='random')

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg=None):
        if phase == 'Gmain':
            fake_logits = self.run_D(self.run_G(gen_z, gen_c), gen_c)
            loss_G = torch.nn.functional.softplus(-fake_logits)
            training_stats.report('Loss/scores/fake', fake_logits)
            training_stats.report('Loss/G/loss', loss_G)
            loss_G.mean().mul(gain).backward()
            return
        assert phase == 'Dmain', phase
        with torch.no_grad():
            fake_img = self.run_G(gen_z, gen_c)
        fake_logits = self.run_D(fake_img, gen_c)
        real = self.prepare_reals(real_img).detach().requires_grad_(self.r1_gamma != 0)
        real_logits = self.discriminate_reals(real, real_c)
        loss_D = torch.nn.functional.softplus(fake_logits) + torch.nn.functional.softplus(-real_logits)
        training_stats.report('Loss/scores/fake', fake_logits)
        training_stats.report('Loss/D/loss', loss_D)
        if self.r1_gamma != 0:
            r1_grads, = torch.autograd.grad(outputs=real_logits.sum(), inputs=real, create_graph=True)
            r1_penalty = r1_grads.square().sum(dim=[1, 2, 3])
            training_stats.report('Loss/r1_penalty', r1_penalty)
            loss_D = loss_D + (self.r1_gamma / 2) * r1_penalty.unsqueeze(1)
        loss_D.mean().mul(gain).backward()

#----------------------------------------------------------------------------

class WassersteinGPLoss(_FamilyLoss):
    """WGAN-GP: critic minimises D(fake) - D(real) + gp_lambda * GP [+ drift * D(real)^2]; G minimises -D(fake)."""

    def __init__(self, device, G, D, augment_pipe=None, gp_lambda=10.0, n_critic=5, drift=0.0):
        super().__init__(device, G, D, augment_pipe, n_critic=n_critic)
        self.gp_lambda = gp_lambda
        self.n_critic = n_critic
        self.drift = drift

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg=None):
        if phase == 'Gmain':
            fake_scores = self.run_D(self.run_G(gen_z, gen_c), gen_c)
            training_stats.report('Loss/scores/fake', fake_scores)
            training_stats.report('Loss/G/loss', -fake_scores)
            (-fake_scores).mean().mul(gain).backward()
            return
        assert phase == 'Dmain', phase
        with torch.no_grad():
            fake_img = self.run_G(gen_z, gen_c)
        real = self.prepare_reals(real_img)
        real_scores = self.discriminate_reals(real, real_c)
        fake_scores = self.run_D(fake_img, gen_c)
        # The penalty holds the critic as the loss sees it (after augmentation, when there is any).
        penalty = gradient_penalty(self.run_D, real, fake_img, real_c)
        loss_D = fake_scores - real_scores + self.gp_lambda * penalty.unsqueeze(1)
        if self.drift:
            loss_D = loss_D + self.drift * real_scores.square()
        training_stats.report('Loss/scores/fake', fake_scores)
        training_stats.report('Loss/gp_penalty', penalty)
        training_stats.report('Loss/D/loss', loss_D)
        loss_D.mean().mul(gain).backward()

#----------------------------------------------------------------------------
