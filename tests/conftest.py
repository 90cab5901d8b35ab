"""Shared pytest fixtures: real H&E pixels through the asset registry, markers, device skips."""

import os
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_data import any_tissue_crops  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """Run a test on one CPU thread: many tiny ops gain nothing from threads, and on an oversubscribed
    CPU every OpenMP region waits for a descheduled second thread (10-100x slower)."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


@pytest.fixture(scope="session")
def he_slide_path():
    """Path of the real H&E slide CMU-1-Small-Region (Aperio SVS, 2220x2967, 0.499 um/px)."""
    from dnnlib import assets
    return assets.fetch("cmu-small-region")


@pytest.fixture(scope="session")
def he_image(he_slide_path):
    """The whole CMU-1-Small-Region slide at level 0 as a uint8 HWC RGB array."""
    import openslide
    slide = openslide.OpenSlide(he_slide_path)
    w, h = slide.dimensions
    img = np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))
    slide.close()
    return img


@pytest.fixture(scope="session")
def he_crops(he_image):
    """Factory: he_crops(size, count, seed=0) -> uint8 [N, H, W, 3] real tissue crops."""
    return lambda size, count, seed=0: any_tissue_crops(he_image, size, count, seed=seed)
