"""The --cfg table of train.py and the --augpipe table.

A preset is a row of data. It names the classes that make up a GAN family (generator,
discriminator, loss, resolution schedule, optimisers) with their keyword arguments, the
published training hyperparameters, the resolutions the family supports and the paper the
values come from. `training.options` turns a row into the training loop's kwargs; adding a
GAN family means adding its files and a row here, nothing in the loop.

Row fields:
  G, D, loss, schedule, G_opt, D_opt   dict(class_name=..., **kwargs), built by name
  batch        global batch size          batch_gpu   images per process per forward pass
  kimg         training length            ema_kimg    G_ema half-life in kimg (None: G_ema = G)
  ema_beta     fixed G_ema decay per step (overrides ema_kimg)    ema_rampup   half-life ramp
  mbstd        minibatch-stddev group size of D (the batch per process must split into it)
  res_min, res_max        resolutions the networks can be built at (None: no bound)
  res_default_max         largest resolution trained without --allow-highres (None: res_max)
  augment      whether ADA / --aug applies to this family
  knobs        {option: {"G.path.to.kwarg": value or VALUE}}: where train.py's network options
               (--cbase, --cmax, --map, --gamma, --freezed, --fp32, --nhwc, --phase-kimg) land;
               an option a row has no knob for is refused for that row
  source       the paper the values come from (shown by --help and the README)
"""

import copy

import dnnlib

VALUE = '<option value>'  # knob placeholder: replaced by the value the user gave

#----------------------------------------------------------------------------
# StyleGAN2 rows. Every published StyleGAN2(-ADA) preset differs only in a few numbers, listed
# per preset below; the rest of the row is shared.

_ADAM_SG2 = dict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8)

_SG2_KNOBS = {
    'cbase':   {'G.synthesis_kwargs.channel_base': VALUE, 'D.channel_base': VALUE},
    'cmax':    {'G.synthesis_kwargs.channel_max': VALUE, 'D.channel_max': VALUE},
    'map':     {'G.mapping_kwargs.num_layers': VALUE},
    'gamma':   {'loss.r1_gamma': VALUE},
    'freezed': {'D.block_kwargs.freeze_layers': VALUE},
    'fp32':    {'G.synthesis_kwargs.num_fp16_res': 0, 'D.num_fp16_res': 0,
                'G.synthesis_kwargs.conv_clamp': None, 'D.conv_clamp': None},
    'nhwc':    {'G.synthesis_kwargs.fp16_channels_last': True, 'D.block_kwargs.fp16_channels_last': True},
}

_KARRAS_2020 = 'Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (CVPR)'
_ADA_2020 = 'Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data" (NeurIPS)'


def stylegan2_row(fmaps, map_layers, mbstd, batch, ref_gpus, lrate, gamma, ema, ramp, kimg=25000, source=_ADA_2020):
    """One StyleGAN2 preset from the numbers the papers publish per configuration.

    fmaps scales the width (channel_base = fmaps * 32768); ref_gpus is the GPU count the batch
    was published for (each GPU then takes batch / ref_gpus images per pass).
    """
    width = int(fmaps * 32768)
    return dict(
        G=dict(class_name='networks.stylegan2.Generator', z_dim=512, w_dim=512,
               mapping_kwargs=dict(num_layers=map_layers),
               synthesis_kwargs=dict(channel_base=width, channel_max=512, num_fp16_res=4, conv_clamp=256)),
        D=dict(class_name='networks.stylegan2.Discriminator', channel_base=width, channel_max=512,
               num_fp16_res=4, conv_clamp=256, block_kwargs=dict(), mapping_kwargs=dict(),
               epilogue_kwargs=dict(mbstd_group_size=mbstd)),
        loss=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=gamma),
        schedule=dict(class_name='training.schedules.FixedResolution'),
        G_opt=dict(_ADAM_SG2, lr=lrate), D_opt=dict(_ADAM_SG2, lr=lrate),
        batch=batch, batch_gpu=max(batch // ref_gpus, 1), kimg=kimg,
        ema_kimg=ema, ema_beta=None, ema_rampup=ramp, mbstd=mbstd,
        res_min=4, res_max=None, res_default_max=None, augment=True,
        knobs=_SG2_KNOBS, source=source,
    )


def _cifar_row():
    row = stylegan2_row(fmaps=1, map_layers=2, mbstd=32, batch=64, ref_gpus=2, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, kimg=100000)
    row['loss'].update(pl_weight=0, style_mixing_prob=0)  # the ADA paper's CIFAR-10 setup: no PL reg, no mixing,
    row['D']['architecture'] = 'orig'                      # and a D without residual connections
    return row


#----------------------------------------------------------------------------
# Baseline rows, hyperparameters as published (the classes live in the family's own files).

_NO_AUGMENT = dict(augment=False, ema_rampup=None, mbstd=None)
_PROGRESSIVE_KNOBS = {'phase_kimg': {'schedule.phase_kimg': VALUE, 'schedule.fade_kimg': VALUE}}
# PGAN and StyleGAN v1 size their levels as min(channel_base / resolution, channel_max), StyleGAN2's meaning.
_PGAN_KNOBS = dict(_PROGRESSIVE_KNOBS, cbase={'G.channel_base': VALUE, 'D.channel_base': VALUE},
                   cmax={'G.channel_max': VALUE, 'D.channel_max': VALUE})
_STYLEGAN_KNOBS = dict(_PROGRESSIVE_KNOBS, gamma={'loss.r1_gamma': VALUE}, map={'G.mapping_kwargs.num_layers': VALUE},
                       cbase={'G.synthesis_kwargs.channel_base': VALUE, 'D.channel_base': VALUE},
                       cmax={'G.synthesis_kwargs.channel_max': VALUE, 'D.channel_max': VALUE})

_BASELINES = {
    'dcgan': dict(
        G=dict(class_name='networks.dcgan.Generator', z_dim=100), D=dict(class_name='networks.dcgan.Discriminator'),
        loss=dict(class_name='training.gan_losses.NonSaturatingLoss'),
        schedule=dict(class_name='training.schedules.FixedResolution'),
        G_opt=dict(class_name='torch.optim.Adam', lr=2e-4, betas=[0.5, 0.999]),
        D_opt=dict(class_name='torch.optim.Adam', lr=2e-4, betas=[0.5, 0.999]),
        batch=64, batch_gpu=64, kimg=25000, ema_kimg=None, ema_beta=None,
        res_min=64, res_max=64, res_default_max=None, knobs={},
        source='Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional GANs" (ICLR), '
               'as used by AnoGAN: Schlegl et al. 2017 (IPMI)', **_NO_AUGMENT),
    'wgan': dict(
        G=dict(class_name='networks.wgan.Generator', z_dim=128, dim=64), D=dict(class_name='networks.wgan.Discriminator', dim=64),
        loss=dict(class_name='training.gan_losses.WassersteinGPLoss', gp_lambda=10, n_critic=5),
        schedule=dict(class_name='training.schedules.FixedResolution'),
        G_opt=dict(class_name='torch.optim.Adam', lr=1e-4, betas=[0.0, 0.9]),
        D_opt=dict(class_name='torch.optim.Adam', lr=1e-4, betas=[0.0, 0.9]),
        batch=64, batch_gpu=64, kimg=25000, ema_kimg=None, ema_beta=None,
        res_min=64, res_max=64, res_default_max=None, knobs={},
        source='Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (NeurIPS), '
               'as used by f-AnoGAN: Schlegl et al. 2019 (Medical Image Analysis)', **_NO_AUGMENT),
    'pgan': dict(
        G=dict(class_name='networks.pgan.Generator', z_dim=512), D=dict(class_name='networks.pgan.Discriminator'),
        loss=dict(class_name='training.gan_losses.WassersteinGPLoss', gp_lambda=10, n_critic=1, drift=0.001),
        schedule=dict(class_name='training.schedules.ProgressiveGrowing', start_resolution=8, phase_kimg=600, fade_kimg=600),
        G_opt=dict(class_name='torch.optim.Adam', lr=1e-3, betas=[0.0, 0.99], eps=1e-8),
        D_opt=dict(class_name='torch.optim.Adam', lr=1e-3, betas=[0.0, 0.99], eps=1e-8),
        batch=16, batch_gpu=16, kimg=12000, ema_kimg=None, ema_beta=0.999,
        res_min=8, res_max=1024, res_default_max=256, knobs=_PGAN_KNOBS,
        source='Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and Variation" (ICLR)',
        **dict(_NO_AUGMENT, mbstd=4)),
    'stylegan': dict(
        G=dict(class_name='networks.stylegan.Generator', z_dim=512, w_dim=512), D=dict(class_name='networks.stylegan.Discriminator'),
        loss=dict(class_name='training.gan_losses.NonSaturatingLoss', r1_gamma=10, style_mixing_prob=0.9),
        schedule=dict(class_name='training.schedules.ProgressiveGrowing', start_resolution=8, phase_kimg=600, fade_kimg=600),
        G_opt=dict(class_name='torch.optim.Adam', lr=1e-3, betas=[0.0, 0.99], eps=1e-8),
        D_opt=dict(class_name='torch.optim.Adam', lr=1e-3, betas=[0.0, 0.99], eps=1e-8),
        batch=32, batch_gpu=32, kimg=25000, ema_kimg=10, ema_beta=None,
        res_min=8, res_max=1024, res_default_max=256,
        knobs=_STYLEGAN_KNOBS,
        source='Karras et al. 2019, "A Style-Based Generator Architecture for Generative Adversarial Networks" (CVPR)',
        **dict(_NO_AUGMENT, mbstd=4)),
}

#----------------------------------------------------------------------------
# The table. 'auto' is completed from the resolution and process count by `resolve`.

PRESETS = {
    'auto':      None,  # sized to the data by resolve(): see _auto_row
    'stylegan2': stylegan2_row(fmaps=1,   map_layers=8, mbstd=4,  batch=32, ref_gpus=8, lrate=0.002,  gamma=10,  ema=10, ramp=None, source=_KARRAS_2020),
    'config-f':  stylegan2_row(fmaps=1,   map_layers=8, mbstd=4,  batch=32, ref_gpus=8, lrate=0.002,  gamma=10,  ema=10, ramp=None, source=_KARRAS_2020),
    'config-e':  stylegan2_row(fmaps=0.5, map_layers=8, mbstd=4,  batch=32, ref_gpus=8, lrate=0.002,  gamma=100, ema=10, ramp=None, source=_KARRAS_2020),
    'paper256':  stylegan2_row(fmaps=0.5, map_layers=8, mbstd=8,  batch=64, ref_gpus=8, lrate=0.0025, gamma=1,   ema=20, ramp=None),
    'paper512':  stylegan2_row(fmaps=1,   map_layers=8, mbstd=8,  batch=64, ref_gpus=8, lrate=0.0025, gamma=0.5, ema=20, ramp=None),
    'paper1024': stylegan2_row(fmaps=1,   map_layers=8, mbstd=4,  batch=32, ref_gpus=8, lrate=0.002,  gamma=2,   ema=10, ramp=None),
    'cifar':     _cifar_row(),
    **_BASELINES,
}


def _auto_row(resolution, gpus):
    """The ADA paper's rule for a preset sized to the data: batch and width from the resolution,
    R1 weight from the heuristic gamma = 0.0002 * resolution^2 / batch."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    fmaps = 1 if resolution >= 512 else 0.5
    lrate = 0.002 if resolution >= 1024 else 0.0025
    mbstd = min(batch // gpus, 4)
    return stylegan2_row(fmaps=fmaps, map_layers=2, mbstd=mbstd, batch=batch, ref_gpus=gpus, lrate=lrate,
                         gamma=0.0002 * resolution ** 2 / batch, ema=batch * 10 / 32, ramp=0.05)


def resolve(cfg, resolution, gpus):
    """A deep copy of preset `cfg` as nested EasyDicts, with 'auto' completed for this resolution and process count."""
    if cfg not in PRESETS:
        raise dnnlib.util.UserError(f'--cfg={cfg} is not a preset; choose one of: {", ".join(PRESETS)}')
    row = _auto_row(resolution, gpus) if cfg == 'auto' else copy.deepcopy(PRESETS[cfg])
    return _easy(row)


def _easy(value):
    if isinstance(value, dict):
        return dnnlib.EasyDict({key: _easy(item) for key, item in value.items()})
    return value

#----------------------------------------------------------------------------
# Augmentation pipelines (probability multipliers of training.augment.AugmentPipe).
# 'histo' is the H&E pipeline: a tissue patch has no canonical orientation, so every flip and
# 90-degree turn is a valid sample (the geometric ops that resample, scale or shear are left out
# because they change nuclear size and shape, which carry diagnostic meaning); small integer shifts;
# colour changes sized to stain variation between labs and scanners (brightness std 0.05, contrast
# log2 std 0.1, hue rotation up to +-9 degrees (hue_max=0.05 of a half turn), saturation log2 std 0.15) rather
# than the generic ranges, which would turn eosin green and make stain-free patches.

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

augpipe_specs = {
    'blit':   dict(_BLIT),
    'geom':   dict(_GEOM),
    'color':  dict(_COLOR),
    'filter': dict(imgfilter=1),
    'noise':  dict(noise=1),
    'cutout': dict(cutout=1),
    'bg':     dict(_BLIT, **_GEOM),
    'bgc':    dict(_BLIT, **_GEOM, **_COLOR),
    'bgcf':   dict(_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    'bgcfn':  dict(_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    'bgcfnc': dict(_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
    'histo':  dict(xflip=1, yflip=1, rotate90=1, xint=1, xint_max=0.0625,
                   brightness=1, contrast=1, hue=1, saturation=1,
                   brightness_std=0.05, contrast_std=0.1, hue_max=0.05, saturation_std=0.15),
}

#----------------------------------------------------------------------------
