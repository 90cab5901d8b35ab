"""GAN losses. The training loop knows a loss only through the `Loss` interface below, so every GAN
family (its loss named by class in the preset table) trains in the same loop.

A loss declares its training phases; per step the loop runs each phase whose interval divides the
step index, `repeats` times, each time with a fresh real batch and fresh latents, and steps the
optimiser of the phase's module afterwards. `accumulate_gradients` computes one phase's loss and
calls backward itself.
"""

import abc

import numpy as np
import torch

import dnnlib
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

#----------------------------------------------------------------------------

def phase(name, module, interval=1, repeats=1, uses_reals=True):
    """One entry of `Loss.phases`. `module` is 'G' or 'D'; `uses_reals=False` lets the loop skip
    fetching a real batch the phase would ignore."""
    assert module in ('G', 'D') and interval >= 1 and repeats >= 1
    return dnnlib.EasyDict(name=name, module=module, interval=interval, repeats=repeats, uses_reals=uses_reals)


def mean_over_ranks(value):
    """A scalar tensor averaged over all processes (itself when training in one process)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()

#----------------------------------------------------------------------------

class Loss(abc.ABC):
    """Base of every GAN loss (the family contract).

    Subclasses fill `self.phases` (see `phase`) and implement `accumulate_gradients`. The base keeps
    `real_sign_stats`, a float64 [sum of sign(D(real)), count] that the ADA controller reads and
    clears; losses feed it through `discriminate_reals`. Tensors a loss must carry across an exact
    resume are listed in `self.resume_tensors` (names of attributes) and saved by the loop.
    """

    def __init__(self, device, G, D, augment_pipe=None):
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.phases = []
        self.real_sign_stats = torch.zeros([2], dtype=torch.float64, device=device)
        self.resume_tensors = ['real_sign_stats']

    @abc.abstractmethod
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        """Add d(gain * loss of phase `phase` (its name)) to the gradients of the phase's module."""

    def optimizer_kwargs(self, module, opt_kwargs):
        """The optimiser settings to build for module 'G' or 'D' from the preset's; unchanged by default."""
        return opt_kwargs

    def run_D(self, img, c):
        """D's output for images as the discriminator sees them (through the augmentation pipe, if any)."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def discriminate_reals(self, real_img, real_c):
        """run_D on real images, recording the signs of the outputs for ADA and the statistics."""
        logits = self.run_D(real_img, real_c)
        signs = logits.detach().sign()
        self.real_sign_stats[0] += signs.sum().double()
        self.real_sign_stats[1] += signs.numel()
        training_stats.report('Loss/scores/real', logits)
        training_stats.report('Loss/signs/real', signs)
        return logits

    def state_dict(self):
        return {name: getattr(self, name).detach().cpu().clone() for name in self.resume_tensors}

    def load_state_dict(self, state):
        for name, value in state.items():
            if value is not None:
                getattr(self, name).copy_(value)

#----------------------------------------------------------------------------

class StyleGAN2Loss(Loss):
    """The StyleGAN2 objective: non-saturating logistic loss, style-mixing regularisation, and the two
    lazy regularisers (Karras et al. 2020) — R1 on D every `D_reg_interval` steps and path-length
    regularisation on G every `G_reg_interval` steps, each weighted by its interval. An interval of
    None runs the regulariser in the main phase of every step instead ('Gboth'/'Dboth').

    The path-length target is an exponential moving average of the observed lengths, averaged over
    processes so that N processes regularise towards the target one process would; it enters the
    penalty as a constant.
    """

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0.9,
                 pl_weight=2, pl_batch_shrink=2, pl_decay=0.01, G_reg_interval=4, D_reg_interval=16):
        super().__init__(device, G, D, augment_pipe)
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.reg_intervals = dict(G=G_reg_interval, D=D_reg_interval)
        self.pl_mean = torch.zeros([], device=device)
        self.resume_tensors.append('pl_mean')
        for module in ('G', 'D'):
            every = self.reg_intervals[module]
            if every is None:
                self.phases.append(phase(module + 'both', module))
            else:
                self.phases.append(phase(module + 'main', module, uses_reals=(module == 'D')))
                self.phases.append(phase(module + 'reg', module, interval=every, uses_reals=(module == 'D')))

    def optimizer_kwargs(self, module, opt_kwargs):
        # The main phase makes every/(every+1) of a module's updates when its regulariser is lazy:
        # the learning rate and Adam's decay per update shrink by that share, so that the time
        # constants measured in images stay as published.
        every = self.reg_intervals[module]
        if every is None:
            return opt_kwargs
        share = every / (every + 1)
        adjusted = dnnlib.EasyDict(opt_kwargs, lr=opt_kwargs['lr'] * share)
        if 'betas' in adjusted:
            adjusted.betas = [float(b) ** share for b in adjusted.betas]
        return adjusted

    def generate(self, z, c):
        """(images, ws). With probability style_mixing_prob the styles from a random layer on come
        from a second latent, so that the generator cannot rely on neighbouring styles being related."""
        ws = self.G.mapping(z, c)
        if self.style_mixing_prob > 0:
            num_ws = ws.shape[1]
            switch_at = torch.randint(1, num_ws, [], device=ws.device)
            use_mixing = torch.rand([], device=ws.device) < self.style_mixing_prob
            switch_at = torch.where(use_mixing, switch_at, torch.full_like(switch_at, num_ws))
            ws_other = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            layer_idx = torch.arange(num_ws, device=ws.device).view(1, num_ws, 1)
            ws = torch.where(layer_idx < switch_at, ws, ws_other)
        return self.G.synthesis(ws), ws

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg=0):
        if phase not in ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'):
            raise ValueError(f'StyleGAN2Loss has no phase {phase!r}')
        main = phase.endswith('main') or phase.endswith('both')
        reg = phase.endswith('reg') or phase.endswith('both')
        if phase.startswith('G'):
            if main:
                self._generator_main(gen_z, gen_c, gain)
            if reg and self.pl_weight != 0:
                self._path_length(gen_z, gen_c, gain)
        else:
            fake_loss = self._discriminator_fakes(gen_z, gen_c, gain) if main else None
            if main or (reg and self.r1_gamma != 0):
                self._discriminator_reals(real_img, real_c, gain, fake_loss, with_r1=(reg and self.r1_gamma != 0))

    def _report_fakes(self, logits):
        training_stats.report('Loss/scores/fake', logits)
        training_stats.report('Loss/signs/fake', logits.sign())

    def _generator_main(self, gen_z, gen_c, gain):
        # G wants D to call its images real: -log sigmoid(D(G(z))).
        img, _ws = self.generate(gen_z, gen_c)
        logits = self.run_D(img, gen_c)
        self._report_fakes(logits)
        loss = torch.nn.functional.softplus(-logits)
        training_stats.report('Loss/G/loss', loss)
        (loss.mean() * gain).backward()

    def _path_length(self, gen_z, gen_c, gain):
        # |J^T y| for a random image-space direction y should not depend on w: penalise its
        # squared distance from the running mean.
        count = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        img, ws = self.generate(gen_z[:count], gen_c[:count])
        height, width = img.shape[2], img.shape[3]
        direction = torch.randn_like(img) / np.sqrt(height * width)
        with conv2d_gradfix.no_weight_gradients():
            ws_grad, = torch.autograd.grad(outputs=[(img * direction).sum()], inputs=[ws], create_graph=True)
        lengths = ws_grad.square().sum(dim=2).mean(dim=1).sqrt()
        target = self.pl_mean.lerp(mean_over_ranks(lengths.mean().detach()), self.pl_decay)
        self.pl_mean.copy_(target.detach())
        penalty = (lengths - target).square()
        training_stats.report('Loss/pl_penalty', penalty)
        weighted = penalty * self.pl_weight
        training_stats.report('Loss/G/reg', weighted)
        (weighted.mean() * gain).backward()

    def _discriminator_fakes(self, gen_z, gen_c, gain):
        # D pushes its output on generated images down: -log(1 - sigmoid(D(G(z)))).
        img, _ws = self.generate(gen_z, gen_c)
        logits = self.run_D(img, gen_c)
        self._report_fakes(logits)
        loss = torch.nn.functional.softplus(logits)
        (loss.mean() * gain).backward()
        return loss.detach()

    def _discriminator_reals(self, real_img, real_c, gain, fake_loss, with_r1):
        # On reals D pushes its output up (-log sigmoid(D(x))), and R1 penalises the squared norm
        # of D's gradient with respect to the real image, weighted by gamma / 2.
        real_img = real_img.detach().requires_grad_(with_r1)
        logits = self.discriminate_reals(real_img, real_c)
        total = torch.zeros_like(logits)
        if fake_loss is not None:
            real_loss = torch.nn.functional.softplus(-logits)
            training_stats.report('Loss/D/loss', fake_loss + real_loss)
            total = total + real_loss
        if with_r1:
            with conv2d_gradfix.no_weight_gradients():
                img_grad, = torch.autograd.grad(outputs=[logits.sum()], inputs=[real_img], create_graph=True)
            r1 = img_grad.square().sum(dim=[1, 2, 3])
            training_stats.report('Loss/r1_penalty', r1)
            weighted = r1 * (self.r1_gamma / 2)
            training_stats.report('Loss/D/reg', weighted)
            total = total + weighted.unsqueeze(1)
        (total.mean() * gain).backward()

#----------------------------------------------------------------------------
