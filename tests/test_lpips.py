"""tools/lpips.py against the `lpips` package (0.1.4) given the same VGG16 weights, on real H&E pairs."""

import os
import pickle

import numpy as np
import pytest
import torch

from dnnlib import assets
from tools import lpips as our_lpips


def _as_float(images):
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope='module')
def reference_lpips():
    """The lpips package's own model: its v0.1 heads from its wheel, the VGG16 trunk from the asset."""
    lpips_pkg = pytest.importorskip('lpips')
    ref = lpips_pkg.LPIPS(net='vgg', pretrained=True, pnet_rand=True, verbose=False)  # no torchvision download
    with open(assets.fetch('lpips-vgg16', verbose=False), 'rb') as f:
        trunk = pickle.load(f)['VGG16_0']
    convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    with torch.no_grad():
        for idx, conv in enumerate(convs):
            conv.weight.copy_(torch.from_numpy(trunk[f'Conv_{idx}']['kernel']).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(trunk[f'Conv_{idx}']['bias']))
    return ref.eval()


def test_heads_equal_package_weights():
    ours = our_lpips.load_lpips()
    lpips_pkg = pytest.importorskip('lpips')
    pth = os.path.join(os.path.dirname(lpips_pkg.__file__), 'weights', 'v0.1', 'vgg.pth')
    theirs = torch.load(pth, map_location='cpu')
    for idx, head in enumerate(ours.heads()):
        np.testing.assert_allclose(head.numpy(), theirs[f'lin{idx}.model.1.weight'].reshape(-1).numpy(), rtol=1e-6)


def test_distance_equals_lpips_package(reference_lpips, he_crops, one_thread):
    ours = our_lpips.load_lpips()
    crops = he_crops(64, 6, seed=3)
    a, b = _as_float(crops[:3]), _as_float(crops[3:])
    noisy = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    for x, y in [(a, b), (a, noisy), (b, b.flip(3))]:
        expected = reference_lpips(x, y).reshape(-1)
        got = ours(x, y)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # Identical images are at distance 0; different tissue crops are clearly apart.
    assert float(ours(a, a).abs().max()) < 1e-6
    assert float(ours(a, b).min()) > 0.05


def test_embedding_distance_is_sum_of_squares(he_crops, one_thread):
    ours = our_lpips.load_lpips()
    crops = _as_float(he_crops(32, 4, seed=5))
    ea, eb = ours.embed(crops[:2]), ours.embed(crops[2:])
    torch.testing.assert_close(ours(crops[:2], crops[2:]), ((ea - eb) ** 2).sum(1))


def test_gradient_flows_to_the_image(one_thread):
    ours = our_lpips.load_lpips()
    x = torch.zeros([1, 3, 32, 32], requires_grad=True)
    target = torch.rand([1, 3, 32, 32]) * 2 - 1
    ours(x, target).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_area_downsample_matches_block_mean():
    img = torch.rand([2, 3, 512, 512])
    small = our_lpips.area_downsample(img, 256)
    expected = img.reshape(2, 3, 256, 2, 256, 2).mean(dim=(3, 5))
    torch.testing.assert_close(small, expected)
    assert our_lpips.area_downsample(img[:, :, :64, :64], 256).shape[2] == 64


def test_torchscript_weights_use_the_nvidia_interface(tmp_path):
    """A TorchScript file is called as NVIDIA's vgg16.pt is: pixels in [0, 255], return_lpips=True."""

    class Fake(torch.nn.Module):
        def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False):
            assert not resize_images and return_lpips
            return img.mean(dim=(2, 3))

    wrapper = our_lpips.TorchScriptLPIPS(torch.jit.script(Fake()))
    a, b = torch.full([1, 3, 4, 4], -1.0), torch.full([1, 3, 4, 4], 1.0)
    torch.testing.assert_close(wrapper.embed(a), torch.zeros([1, 3]))
    torch.testing.assert_close(wrapper(a, b), torch.tensor([3 * 255.0 ** 2]))
