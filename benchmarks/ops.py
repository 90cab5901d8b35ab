"""Speed of the compiled CPU ops relative to their plain-PyTorch 'ref' versions, measured in the same run.

Prints, per op and shape, the median time of impl='ref' and impl='cpu' and the ratio ref/cpu (> 1 means
the compiled kernel is faster), for the forward pass alone and for forward + backward.

    python benchmarks/ops.py [--quick] [--repeats 5] [--threads N]
"""

import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils.ops import bias_act  # noqa: E402

try:
    from torch_utils.ops import upfirdn2d  # noqa: E402
except ImportError:
    upfirdn2d = None

# ----------------------------------------------------------------------------


def _median_time(fn, repeats):
    fn()  # Warm-up: builds/loads the plugin, touches the allocator.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cases(shapes):
    """(op label, shape, fn(x, impl) -> output) for every benchmarked op."""
    cases = []
    for shape in shapes:
        bias = torch.randn([shape[1]])
        cases.append(('bias_act lrelu+bias+gain+clamp', shape,
                      lambda x, impl, bias=bias: bias_act.bias_act(x, bias, act='lrelu', gain=2 ** 0.5, clamp=256, impl=impl)))
    if upfirdn2d is not None:
        f = upfirdn2d.setup_filter([1, 3, 3, 1])
        for shape in shapes:
            cases.append(('upfirdn2d up=2 4x4 filter', shape, lambda x, impl: upfirdn2d.upsample2d(x, f, up=2, impl=impl)))
            cases.append(('upfirdn2d down=2 4x4 filter', shape, lambda x, impl: upfirdn2d.downsample2d(x, f, down=2, impl=impl)))
    return cases


def benchmark(shapes, repeats):
    """Yield a result dict per (op, shape, pass)."""
    for label, shape, op in _cases(shapes):
        x = torch.randn(shape)
        for mode in ['forward', 'forward+backward']:
            times = {}
            for impl in ['ref', 'cpu']:
                if mode == 'forward':
                    def run(impl=impl):
                        with torch.no_grad():
                            op(x, impl)
                else:
                    # The incoming gradient exists before the backward pass: make it once, outside the timing.
                    xg = x.clone().requires_grad_(True)
                    with torch.no_grad():
                        dy = torch.randn_like(op(x, 'ref'))
                    def run(impl=impl, xg=xg, dy=dy):
                        torch.autograd.grad(op(xg, impl), [xg], dy)
                times[impl] = _median_time(run, repeats)
            yield dict(op=label, shape=shape, mode=mode, ref=times['ref'], cpu=times['cpu'], ratio=times['ref'] / times['cpu'])

# ----------------------------------------------------------------------------


@click.command()
@click.option('--quick', is_flag=True, help='Small shapes ([2,64,32,32] and [2,32,64,64]) for a fast smoke run.')
@click.option('--repeats', type=click.IntRange(min=1), default=5, show_default=True, help='Timed repetitions per measurement (median reported).')
@click.option('--threads', type=click.IntRange(min=1), default=None, help='torch.set_num_threads for both impls (default: torch default).')
def main(quick, repeats, threads):
    """Print ref/cpu speed ratios of the compiled CPU ops."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    shapes = [[2, 64, 32, 32], [2, 32, 64, 64]] if quick else [[8, 512, 64, 64], [8, 128, 256, 256]]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, median of {repeats}')
    if upfirdn2d is None:
        print('torch_utils.ops.upfirdn2d not available: benchmarking bias_act only')
    print(f'{"op":32s} {"shape":20s} {"pass":17s} {"ref ms":>9s} {"cpu ms":>9s} {"ref/cpu":>8s}')
    for r in benchmark(shapes, repeats):
        print(f'{r["op"]:32s} {str(r["shape"]):20s} {r["mode"]:17s} {r["ref"] * 1e3:9.1f} {r["cpu"] * 1e3:9.1f} {r["ratio"]:7.2f}x', flush=True)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
