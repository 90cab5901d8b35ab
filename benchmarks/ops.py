"""Speed of the compiled CPU ops against the reference computation, measured in the same run.

For each op and shape, the baseline (impl='ref': the plain PyTorch formulation that the official StyleGAN2-ADA
code uses) and the compiled kernel (impl='cpu') run alternately, in alternating order, `--repeats` times. Printed
per row: the median time of each, their spread (lowest..highest), and the speed-up ref/cpu as the median of
the per-pair ratios with its lowest..highest. Pairs run back to back, so a noisy neighbour slows both sides
of a pair alike and the ratio stays meaningful on a shared machine.

    python benchmarks/ops.py                      # issue-14 shapes: [8,256,64,64] and [8,512,64,64], float32
    python benchmarks/ops.py --quick --repeats 5  # small shapes, a smoke run
    python benchmarks/ops.py --overhead           # microseconds per call on a tiny tensor: the fixed cost of a call
"""

import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402

# ----------------------------------------------------------------------------


def _bias_act_case(shape):
    bias = torch.randn([shape[1]])
    # The configuration of a StyleGAN2 conv layer: lrelu, bias, gain sqrt(2), clamp 256.
    return lambda x, b, impl: bias_act.bias_act(x, b, act='lrelu', gain=2 ** 0.5, clamp=256, impl=impl), bias


def _cases(ops, shapes):
    """(label, shape, op(x, b, impl), bias or None) for every benchmarked op and shape."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for shape in shapes:
        if 'bias_act' in ops:
            op, bias = _bias_act_case(shape)
            yield 'bias_act lrelu+bias+gain+clamp', shape, op, bias
        if 'upfirdn2d' in ops:
            up = lambda x, b, impl: upfirdn2d.upsample2d(x, f, up=2, impl=impl)  # noqa: E731
            down = lambda x, b, impl: upfirdn2d.downsample2d(x, f, down=2, impl=impl)  # noqa: E731
            yield 'upfirdn2d up=2, 4x4 filter', shape, up, None
            yield 'upfirdn2d down=2, 4x4 filter', shape, down, None


def _runner(op, x, bias, impl, backward):
    """A zero-argument function for one timed call: the forward pass, or forward + backward to x (and b)."""
    if not backward:
        def forward_only():
            with torch.no_grad():
                op(x, bias, impl)
        return forward_only
    xg = x.detach().requires_grad_(True)
    bg = None if bias is None else bias.detach().requires_grad_(True)
    inputs = [xg] if bg is None else [xg, bg]
    with torch.no_grad():
        dy = torch.randn_like(op(x, bias, 'ref'))  # the incoming gradient exists before backward: made once

    def forward_backward():
        torch.autograd.grad(op(xg, bg, impl), inputs, dy)
    return forward_backward


def _interleaved(run_ref, run_cpu, repeats):
    """Times of both, paired: each repetition runs both, the order alternating between repetitions."""
    run_ref(), run_cpu()  # warm-up: plugin build/load, allocator, caches
    times = {'ref': [], 'cpu': []}
    for i in range(repeats):
        order = [('ref', run_ref), ('cpu', run_cpu)] if i % 2 == 0 else [('cpu', run_cpu), ('ref', run_ref)]
        for name, fn in order:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times['ref'], times['cpu']


def benchmark(ops, shapes, repeats, modes):
    """Yield one result dict per (op, shape, mode)."""
    torch.manual_seed(0)
    for label, shape, op, bias in _cases(ops, shapes):
        x = torch.randn(shape)
        for mode in modes:
            backward = mode == 'forward+backward'
            runners = [_runner(op, x, bias, impl, backward) for impl in ['ref', 'cpu']]
            ref, cpu = _interleaved(*runners, repeats)
            ratios = [r / c for r, c in zip(ref, cpu)]
            yield dict(op=label, shape=shape, mode=mode, ref=ref, cpu=cpu, ratio=statistics.median(ratios),
                       ratio_lo=min(ratios), ratio_hi=max(ratios))

def call_overhead(calls=2000, repeats=5):
    """{label: median microseconds per call} of the compiled ops on a [1, 2, 4, 4] tensor, where the arithmetic
    is negligible and what is left is the cost of a call: argument checks, implementation choice, plugin lookup."""
    x = torch.randn([1, 2, 4, 4])
    xg = x.clone().requires_grad_(True)
    b = torch.zeros([2])
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    cases = {
        'upfirdn2d upsample2d forward': lambda: upfirdn2d.upsample2d(x, f, impl='cpu'),
        'upfirdn2d upsample2d forward+backward': lambda: upfirdn2d.upsample2d(xg, f, impl='cpu').sum().backward(),
        'bias_act lrelu forward': lambda: bias_act.bias_act(x, b, act='lrelu', impl='cpu'),
        'bias_act lrelu forward+backward': lambda: bias_act.bias_act(xg, b, act='lrelu', impl='cpu').sum().backward(),
    }
    result = {}
    for label, fn in cases.items():
        fn()  # plugin build/load
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - start) / calls * 1e6)
        result[label] = statistics.median(times)
    return result

# ----------------------------------------------------------------------------


def _ms(values):
    return f'{statistics.median(values) * 1e3:7.1f} ({min(values) * 1e3:.0f}..{max(values) * 1e3:.0f})'


@click.command()
@click.option('--ops', 'ops', type=click.Choice(['bias_act', 'upfirdn2d']), multiple=True,
              default=['bias_act', 'upfirdn2d'], show_default=True,
              help='Which ops to time (repeat the option for several).')
@click.option('--quick', is_flag=True,
              help='Small shapes ([2,64,32,32], [2,32,64,64]) for a smoke run instead of the issue-14 shapes.')
@click.option('--repeats', type=click.IntRange(min=1), default=9, show_default=True,
              help='Interleaved ref/cpu pairs per row.')
@click.option('--threads', type=click.IntRange(min=1), default=None,
              help='torch.set_num_threads for both sides (default: torch default).')
@click.option('--backward-only', is_flag=True,
              help='Time only forward+backward (what training pays), not the forward pass alone.')
@click.option('--overhead', is_flag=True,
              help='Instead: microseconds per call of each compiled op on a tiny tensor (the fixed cost of a call).')
def main(ops, quick, repeats, threads, backward_only, overhead):
    """Print ref/cpu speed ratios of the compiled CPU ops (median of interleaved pairs, with spread)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if overhead:
        for label, us in call_overhead().items():
            print(f'{label:40s} {us:8.1f} us per call', flush=True)
        return
    shapes = [[2, 64, 32, 32], [2, 32, 64, 64]] if quick else [[8, 256, 64, 64], [8, 512, 64, 64]]
    modes = ['forward+backward'] if backward_only else ['forward', 'forward+backward']
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} '
          f'at start, {repeats} interleaved pairs; times in ms: median (lowest..highest)')
    print(f'{"op":30s} {"shape":17s} {"pass":16s} {"ref ms":>17s} {"cpu ms":>17s}  ref/cpu (range)')
    for r in benchmark(ops, shapes, repeats, modes):
        print(f'{r["op"]:30s} {str(r["shape"]):17s} {r["mode"]:16s} {_ms(r["ref"]):>17s} {_ms(r["cpu"]):>17s}  '
              f'{r["ratio"]:5.2f}x ({r["ratio_lo"]:.2f}..{r["ratio_hi"]:.2f})', flush=True)
    print(f'load average {os.getloadavg()[0]:.1f} at the end')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
