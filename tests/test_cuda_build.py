"""The CUDA sources compile with nvcc on this machine (no GPU needed to build, only to run)."""

import importlib
import os

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


def test_bias_act_cuda_sources_compile():
    from torch_utils.ops import bias_act
    module = bias_act._cuda_plugin()
    assert callable(module.bias_act)


def test_upfirdn2d_cuda_sources_compile():
    try:
        upfirdn2d = importlib.import_module('torch_utils.ops.upfirdn2d')
    except ImportError as err:
        pytest.skip(f'torch_utils.ops.upfirdn2d is not importable yet: {err}')
    cu_file = os.path.join(os.path.dirname(upfirdn2d.__file__), 'upfirdn2d.cu')
    if not hasattr(upfirdn2d, '_cuda_plugin') or not os.path.isfile(cu_file):
        pytest.skip('upfirdn2d has no CUDA sources yet')
    module = upfirdn2d._cuda_plugin()
    assert module is not None
