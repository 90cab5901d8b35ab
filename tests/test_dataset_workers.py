"""The training dataset under DataLoader worker processes: every process reads the zip through its own
handle (fork and spawn), and an error inside a worker reaches the user as the main process's one line."""

import os
import pickle

import numpy as np
import pytest
import torch

import dnnlib
from tests.datasets import write_dataset_zip
from training.dataset import ImageFolderDataset


@pytest.fixture(scope='module')
def he_zip(he_crops, tmp_path_factory):
    """48 real 64x64 H&E crops in a dataset zip, and the crops themselves (PNG is lossless: the truth)."""
    crops = he_crops(64, 48, seed=5)
    return write_dataset_zip(tmp_path_factory.mktemp('he') / 'he64.zip', crops), crops


def _read_epochs(ds, context, epochs, workers=3):
    """Every image of `epochs` shuffled passes through a DataLoader, keyed by index; the parent keeps
    reading items of its own between batches, as the training loop does for its image grids."""
    order = torch.Generator().manual_seed(1)
    loader = torch.utils.data.DataLoader(_Indexed(ds), batch_size=4, shuffle=True, generator=order,
                                         num_workers=workers, multiprocessing_context=context,
                                         persistent_workers=True, prefetch_factor=4)
    seen = []
    for _ in range(epochs):
        for idx, images in loader:
            seen += zip(idx.tolist(), images.numpy())
            k = int(idx[0]) ^ 1
            seen.append((k, ds[k][0]))
    return seen


class _Indexed(torch.utils.data.Dataset):
    """(index, image) pairs, so that a wrong item is told apart from a reordered one."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return i, self.ds[i][0]


@pytest.mark.parametrize('context', ['fork', 'spawn'])
def test_workers_read_the_same_bytes_as_one_process(he_zip, context):
    path, crops = he_zip
    ds = ImageFolderDataset(path) # the parent opens the zip here (header check) and keeps it open
    single = [ds[i][0] for i in range(len(ds))]
    for i, img in enumerate(single):
        assert np.array_equal(img, crops[i].transpose(2, 0, 1))
    seen = _read_epochs(ds, context, epochs=3)
    assert len(seen) > 3 * len(ds)
    for i, img in seen:
        assert np.array_equal(img, single[i]), f'item {i} differs from the single-process read'
