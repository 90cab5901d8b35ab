"""The --cfg table of train.py and the --augpipe table: one place for every published preset."""

import dnnlib

#----------------------------------------------------------------------------
# Base configurations. Values of the official StyleGAN2-ADA presets are kept as published;
# 'config-e' is StyleGAN2 paper config E (no growing, half-width networks, R1 gamma as in the
# StyleGAN2 TF code for config E). 'auto' is filled in from the resolution and GPU count.
#   ref_gpus: GPUs the batch split was designed for   kimg: training length
#   mb: global batch   mbstd: minibatch-stddev group size   fmaps: width (channel_base = fmaps * 32768)
#   lrate: Adam learning rate   gamma: R1 weight   ema: G_ema half-life (kimg)   ramp: EMA ramp-up   map: mapping layers

cfg_specs = {
    'auto':      dict(ref_gpus=-1, kimg=25000,  mb=-1, mbstd=-1, fmaps=-1,  lrate=-1,     gamma=-1,   ema=-1,  ramp=0.05, map=2),
    'stylegan2': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=10,   ema=10,  ramp=None, map=8),
    'config-f':  dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=10,   ema=10,  ramp=None, map=8),
    'config-e':  dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=0.5, lrate=0.002,  gamma=100,  ema=10,  ramp=None, map=8),
    'paper256':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=0.5, lrate=0.0025, gamma=1,    ema=20,  ramp=None, map=8),
    'paper512':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=1,   lrate=0.0025, gamma=0.5,  ema=20,  ramp=None, map=8),
    'paper1024': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=2,    ema=10,  ramp=None, map=8),
    'cifar':     dict(ref_gpus=2,  kimg=100000, mb=64, mbstd=32, fmaps=1,   lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2),
}

def resolve_cfg(cfg, resolution, gpus):
    """The spec of one preset as an EasyDict, with 'auto' filled in for this resolution and GPU count."""
    if cfg not in cfg_specs:
        raise dnnlib.util.UserError(f'--cfg={cfg} is not one of: {", ".join(cfg_specs)}')
    spec = dnnlib.EasyDict(cfg_specs[cfg])
    if cfg == 'auto':
        spec.ref_gpus = gpus
        spec.mb = max(min(gpus * min(4096 // resolution, 32), 64), gpus) # bounded GPU memory use
        spec.mbstd = min(spec.mb // gpus, 4) # a fixed group size keeps the other hyperparameters predictable
        spec.fmaps = 1 if resolution >= 512 else 0.5
        spec.lrate = 0.002 if resolution >= 1024 else 0.0025
        spec.gamma = 0.0002 * (resolution ** 2) / spec.mb # heuristic of the ADA paper
        spec.ema = spec.mb * 10 / 32
    return spec

#----------------------------------------------------------------------------
# Augmentation pipelines (probability multipliers of training.augment.AugmentPipe).
# 'histo' is the H&E pipeline: a tissue patch has no canonical orientation, so every flip and
# 90-degree turn is a valid sample (the geometric ops that resample, scale or shear are left out
# because they change nuclear size and shape, which carry diagnostic meaning); small integer shifts;
# colour changes sized to stain variation between labs and scanners (brightness std 0.05, contrast
# log2 std 0.1, hue rotation up to +-9 degrees (hue_max=0.05 of a half turn), saturation log2 std 0.15) rather
# than the generic ranges, which would turn eosin green and make stain-free patches.

augpipe_specs = {
    'blit':   dict(xflip=1, rotate90=1, xint=1),
    'geom':   dict(scale=1, rotate=1, aniso=1, xfrac=1),
    'color':  dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    'filter': dict(imgfilter=1),
    'noise':  dict(noise=1),
    'cutout': dict(cutout=1),
    'bg':     dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
    'bgc':    dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    'bgcf':   dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1),
    'bgcfn':  dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1, noise=1),
    'bgcfnc': dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1, noise=1, cutout=1),
    'histo':  dict(xflip=1, yflip=1, rotate90=1, xint=1, xint_max=0.0625,
                   brightness=1, contrast=1, hue=1, saturation=1,
                   brightness_std=0.05, contrast_std=0.1, hue_max=0.05, saturation_std=0.15),
}

#----------------------------------------------------------------------------
