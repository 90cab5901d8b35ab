"""docker/: the image installs exactly the tested pins, matches torch's CUDA version and builds every op."""

import os
import re
import shutil
import subprocess

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    return open(os.path.join(REPO, name), encoding='utf-8').read()


def requirement_pins():
    pins = {}
    for line in read('requirements.txt').splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, version = line.split('==')
            pins[name.lower()] = version
    return pins


def test_dockerfile_installs_the_tested_pins():
    dockerfile, pins = read('docker/Dockerfile'), requirement_pins()
    assert re.search(r'pip install[^\n]*-r requirements\.txt', dockerfile)
    for name, version in re.findall(r'([A-Za-z0-9_.-]+)==([0-9][^\s"\']*)', dockerfile):
        assert pins.get(name.lower()) == version, f'Dockerfile pins {name}=={version}, requirements.txt says {pins.get(name.lower())}'


def test_cuda_image_matches_the_pinned_torch():
    assert torch.__version__.split('+')[0] == requirement_pins()['torch'], 'tests run with another torch than pinned'
    if torch.version.cuda is None:
        pytest.skip('this torch is not a CUDA build')
    image_cuda = re.search(r'ARG CUDA_VERSION=(\d+)\.(\d+)', read('docker/Dockerfile'))
    assert image_cuda, 'Dockerfile has no CUDA_VERSION argument'
    assert '.'.join(image_cuda.groups()) == torch.version.cuda


def test_arch_list_is_supported_by_nvcc():
    nvcc = shutil.which('nvcc') or '/usr/local/cuda/bin/nvcc'
    if not os.path.isfile(nvcc):
        pytest.skip('no nvcc on this machine')
    supported = set(subprocess.run([nvcc, '--list-gpu-arch'], capture_output=True, text=True, check=True).stdout.split())
    archs = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', read('docker/Dockerfile')).group(1)
    for arch in archs.split(';'):
        digits = arch.replace('+PTX', '').replace('.', '')
        assert f'compute_{digits}' in supported, f'nvcc cannot build for {arch}'


def test_build_script_names_existing_plugins():
    from torch_utils.ops import bias_act, upfirdn2d
    script = read('docker/build_ops.py')
    assert 'bias_act, upfirdn2d' in script
    for op in (bias_act, upfirdn2d):
        assert callable(getattr(op, '_cpu_plugin')) and callable(getattr(op, '_cuda_plugin'))
