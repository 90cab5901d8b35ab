"""training.schedules against schedules worked out by hand."""

import pytest
import torch

from training.schedules import FixedResolution, ProgressiveGrowing


def test_progressive_lod_follows_hand_computed_schedule():
    # 64x64 from 8x8: three doublings (lod 3 -> 0). 2 kimg stable, then per doubling 1 kimg fade + 2 kimg stable.
    schedule = ProgressiveGrowing(start_resolution=8, phase_kimg=2, fade_kimg=1, img_resolution=64)
    expected = {
        0: 3.0, 1999: 3.0, 2000: 3.0,      # first stable phase at 8x8
        2250: 2.75, 2500: 2.5, 3000: 2.0,  # fade 8 -> 16
        4000: 2.0, 5000: 2.0,              # stable at 16x16
        5500: 1.5, 6000: 1.0, 8000: 1.0,   # fade 16 -> 32, stable
        8250: 0.75, 9000: 0.0,             # fade 32 -> 64
        11000: 0.0, 10 ** 7: 0.0,          # full resolution for good
    }
    for nimg, lod in expected.items():
        assert schedule.lod_at(nimg) == pytest.approx(lod, abs=1e-12), nimg


def test_published_schedule_and_edge_cases():
    # Karras et al. 2018: 600 kimg per phase and fade; 256x256 from 8x8 is 5 doublings.
    published = ProgressiveGrowing(img_resolution=256)
    assert published.lod_at(0) == 5 and published.lod_at(600_000) == 5
    assert published.lod_at(900_000) == pytest.approx(4.5)
    assert published.lod_at(600_000 + 5 * 1_200_000 - 600_000) == 0  # the last fade ends
    assert ProgressiveGrowing(start_resolution=64, img_resolution=64).lod_at(10 ** 6) == 0  # nothing to grow
    no_fade = ProgressiveGrowing(start_resolution=8, phase_kimg=1, fade_kimg=0, img_resolution=16)
    assert no_fade.lod_at(999) == 1 and no_fade.lod_at(1001) == 0
    with pytest.raises(ValueError):
        ProgressiveGrowing(phase_kimg=-1)


class Grows(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('lod', torch.tensor(0.0))

    def set_lod(self, lod):
        self.lod.fill_(lod)


def test_apply_sets_lod_on_networks_that_grow():
    G, D, plain = Grows(), Grows(), torch.nn.Linear(1, 1)
    ProgressiveGrowing(start_resolution=4, phase_kimg=1, fade_kimg=1, img_resolution=16).apply(1500, G, D, plain, None)
    assert G.lod.item() == 1.5 and D.lod.item() == 1.5
    FixedResolution(img_resolution=16).apply(0, G, D)  # no-op
    assert G.lod.item() == 1.5
