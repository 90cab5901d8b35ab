"""Resolution schedules: what the networks train at as training goes on.

The training loop builds the preset's schedule by name (with the dataset's `img_resolution`) and calls
`schedule.apply(cur_nimg, G, D)` before every step. A schedule sets state on the networks; it keeps
none of its own, so a resumed run gets the same value from the restored image count.
"""

import math


class FixedResolution:
    """Every step trains at the full dataset resolution (StyleGAN2, DCGAN, WGAN-GP)."""

    def __init__(self, img_resolution=None):
        self.img_resolution = img_resolution

    def apply(self, cur_nimg, *networks):
        pass


class ProgressiveGrowing:
    """Karras et al. 2018: train at `start_resolution` first, then double the resolution again and again.

    Level of detail (lod) counts halvings below the full resolution: lod = k trains at
    img_resolution / 2**k, lod = 0 at full resolution. The schedule, in thousands of images:
    `phase_kimg` stable at the start resolution; then per doubling a linear fade of `fade_kimg`
    (lod falls by one) followed by `phase_kimg` stable; lod stays 0 after the last doubling.
    """

    def __init__(self, start_resolution=8, phase_kimg=600, fade_kimg=600, img_resolution=None):
        if phase_kimg < 0 or fade_kimg < 0:
            raise ValueError('phase_kimg and fade_kimg must be non-negative')
        self.start_resolution = start_resolution
        self.phase_kimg = phase_kimg
        self.fade_kimg = fade_kimg
        self.img_resolution = img_resolution

    @property
    def num_doublings(self):
        if self.img_resolution is None:
            raise ValueError('ProgressiveGrowing needs img_resolution to place the schedule')
        return max(int(round(math.log2(self.img_resolution / self.start_resolution))), 0)

    def lod_at(self, cur_nimg):
        """The lod for the step that starts after `cur_nimg` training images."""
        top = self.num_doublings
        kimg_grown = cur_nimg / 1000 - self.phase_kimg  # time spent past the first stable phase
        if kimg_grown <= 0 or top == 0:
            return float(top)
        cycle = self.fade_kimg + self.phase_kimg
        finished = int(kimg_grown // cycle) if cycle > 0 else top
        if finished >= top:
            return 0.0
        into_cycle = kimg_grown - finished * cycle
        fading = min(into_cycle / self.fade_kimg, 1.0) if self.fade_kimg > 0 else 1.0
        return float(top - finished - fading)

    def apply(self, cur_nimg, *networks):
        lod = self.lod_at(cur_nimg)
        for net in networks:
            if net is not None and hasattr(net, 'set_lod'):
                net.set_lod(lod)
