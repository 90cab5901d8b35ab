"""Computation variants of the StyleGAN2 networks, timed interleaved in one run (used by generator.py and train_step.py).

Variants:
  baseline          the official StyleGAN2-ADA computation: 'ref' ops, demodulation through the materialised
                    per-sample weights, NCHW, grouped convolution for fp32 inference
  fast              HistoSynth's default path
  fast-ref-ops      the default path with the 'ref' ops instead of the compiled ones
  fast-no-<switch>  the default path with one networks.stylegan2.FAST_PATH switch off
Timings on a shared machine are noisy, so each repetition runs every variant once, in rotating order,
and the report gives the median, the spread (min..max) and the median ratio against the baseline.
"""

import contextlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from networks import stylegan2  # noqa: E402
from torch_utils import custom_ops  # noqa: E402

#----------------------------------------------------------------------------

def variant_names():
    return ['baseline', 'fast', 'fast-ref-ops'] + [f'fast-no-{name}' for name in stylegan2.FAST_PATH]

def variant(name):
    """Context manager that makes the networks compute as variant `name`."""
    if name == 'baseline':
        return stylegan2.official_computation()
    if name == 'fast':
        return contextlib.nullcontext()
    if name == 'fast-ref-ops':
        return custom_ops.force_impl('ref')
    if name.startswith('fast-no-') and name[len('fast-no-'):] in stylegan2.FAST_PATH:
        return stylegan2.computation(**{name[len('fast-no-'):]: False})
    raise ValueError(f'unknown variant {name!r}; choose from {", ".join(variant_names())}')

def time_interleaved(runners, repeats, warmup=1):
    """runners: {variant: fn()}. Returns ({variant: [wall seconds]}, {variant: [process CPU seconds]}) per
    repetition; warm-up calls are not timed. CPU seconds are less disturbed by other processes' load."""
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            with variant(name):
                runners[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate who goes first
            with variant(name):
                start, start_cpu = time.perf_counter(), time.process_time()
                runners[name]()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu

def print_report(title, samples, per=1.0, per_label=None):
    """Median, min..max and median speed-up against 'baseline' of each variant."""
    base = float(np.median(samples['baseline'])) if 'baseline' in samples else None
    print(f'{title:<26} {"median s":>9} {"min..max s":>17}' + (f' {per_label:>10}' if per_label else '')
          + (f' {"speed-up":>9}' if base else ''))
    for name, values in samples.items():
        med = float(np.median(values))
        line = f'{name:<26} {med:>9.3f} {min(values):>8.3f}..{max(values):<8.3f}'
        line += f' {med * per:>10.4g}' if per_label else ''
        line += f' {base / med:>8.2f}x' if base else ''
        print(line)

#----------------------------------------------------------------------------
