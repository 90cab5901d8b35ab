"""The CUDA sources compile with nvcc on this machine (no GPU needed to build, only to run), and their
Python bindings take exactly the arguments of the CPU bindings that the ops' Python code calls."""

import pytest
import torch

from torch_utils import custom_ops

pytestmark = pytest.mark.cuda_build


@pytest.fixture(scope='module', autouse=True)
def cuda_toolkit():
    if torch.version.cuda is None:
        pytest.skip('torch is not a CUDA build')
    if custom_ops._cuda_home() is None:
        pytest.skip('no CUDA toolkit (nvcc and headers) found; set CUDA_HOME')


def _signature(fn):
    # pybind11 puts "name(arg0: type, ...) -> result" on the first line of the docstring.
    return fn.__doc__.splitlines()[0]


def test_bias_act_cuda_sources_compile_with_the_cpu_calling_convention():
    from torch_utils.ops import bias_act
    cuda = bias_act._cuda_plugin().bias_act
    assert _signature(cuda) == _signature(bias_act._cpu_plugin().bias_act)
    assert _signature(cuda).endswith('-> list[torch.Tensor]')


def test_upfirdn2d_cuda_sources_compile_with_the_cpu_calling_convention():
    from torch_utils.ops import upfirdn2d
    cuda = upfirdn2d._cuda_plugin().upfirdn2d
    assert _signature(cuda) == _signature(upfirdn2d._cpu_plugin().upfirdn2d)
