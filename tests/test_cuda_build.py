"""The CUDA sources compile with nvcc on this machine (no GPU needed to build, only to run), and their
Python bindings take exactly the arguments of the CPU bindings that the ops' Python code calls.

Every run compiles from scratch, into a fresh extensions folder of its own (nothing comes from the shared
build cache, and nothing is written to it), so a .cu or a binding that no longer builds fails here. Without
TORCH_CUDA_ARCH_LIST the build targets the oldest GPU generation CUDA 13 supports, with PTX
(BUILD_ARCH_LIST): later architectures add features rather than remove them, so this catches what the
longer default list would, at a fraction of its compile time (docker/build_ops.py compiles the whole list
into the image). .ci/run installs nvcc from the package index where the machine has none.
"""

import os
import time

import pytest
import torch

from torch_utils import custom_ops

pytestmark = pytest.mark.cuda_build

BUILD_ARCH_LIST = '7.5+PTX'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """{op name: (module, build_dir, seconds)} for both CUDA plugins, compiled here and now."""
    if torch.version.cuda is None:
        pytest.skip('torch is not a CUDA build')
    if custom_ops._cuda_home() is None:
        pytest.skip('no CUDA toolkit (nvcc and headers) found; set CUDA_HOME')
    from torch_utils.ops import bias_act, upfirdn2d
    bias_act._cpu_plugin(), upfirdn2d._cpu_plugin()  # for the signatures: loaded from the usual cache, first
    patch = pytest.MonkeyPatch()
    patch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path_factory.mktemp('cuda_extensions')))
    if not os.environ.get('TORCH_CUDA_ARCH_LIST'):
        patch.setenv('TORCH_CUDA_ARCH_LIST', BUILD_ARCH_LIST)
    patch.setattr(custom_ops, '_plugins', dict())  # no module from this process's memory either
    result = {}
    try:
        for name, plugin in [('bias_act', bias_act._cuda_plugin), ('upfirdn2d', upfirdn2d._cuda_plugin)]:
            start = time.time()
            try:
                module = plugin.build()
            except custom_ops.PluginBuildError as err:  # fails the tests of this op, without a rebuild for each
                module = err
            result[name] = (module, plugin.paths()[0], time.time() - start)
        yield result
    finally:
        patch.undo()


def _module(built, op):
    module = built[op][0]
    if isinstance(module, Exception):
        pytest.fail(f'the CUDA sources of {op} do not compile: {module}')
    return module


def _signature(fn):
    # pybind11 puts "name(arg0: type, ...) -> result" on the first line of the docstring.
    return fn.__doc__.splitlines()[0]


@pytest.mark.parametrize('op', ['bias_act', 'upfirdn2d'])
def test_cuda_plugin_compiles_here(built, op):
    module, (_, build_dir, seconds) = _module(built, op), built[op]
    assert build_dir.startswith(os.environ['TORCH_EXTENSIONS_DIR'])
    # Both translation units went through the compilers just now: the nvcc object and the linked library.
    assert os.path.isfile(os.path.join(build_dir, f'{op}.cuda.o'))
    assert os.path.isfile(module.__file__) and os.path.dirname(module.__file__) == build_dir
    with open(os.path.join(build_dir, 'build.ninja')) as f:
        ninja = f.read()
    for arch in os.environ['TORCH_CUDA_ARCH_LIST'].replace('+PTX', '').split(';'):
        assert f'code=sm_{arch.replace(".", "")}' in ninja
    assert 'code=compute_' in ninja or '+PTX' not in os.environ['TORCH_CUDA_ARCH_LIST']
    print(f'{op}: built in {seconds:.0f} s')


def test_bias_act_cuda_sources_compile_with_the_cpu_calling_convention(built):
    from torch_utils.ops import bias_act
    cuda = _module(built, 'bias_act').bias_act
    assert _signature(cuda) == _signature(bias_act._cpu_plugin().bias_act)
    assert _signature(cuda).endswith('-> list[torch.Tensor]')


def test_upfirdn2d_cuda_sources_compile_with_the_cpu_calling_convention(built):
    from torch_utils.ops import upfirdn2d
    cuda = _module(built, 'upfirdn2d').upfirdn2d
    assert _signature(cuda) == _signature(upfirdn2d._cpu_plugin().upfirdn2d)
