"""The training dataset under DataLoader worker processes: every process reads the zip through its own
handle (fork and spawn), and an error inside a worker reaches the user as the main process's one line."""

import os
import pickle

import numpy as np
import pytest
import torch

import dnnlib
from datasets import write_dataset_zip
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


def _first_error(ds, workers):
    """str() of the UserError raised while reading every item, through `workers` DataLoader workers (0 = here)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
    with pytest.raises(dnnlib.util.UserError) as info:
        for _ in loader:
            pass
    return str(info.value), info.value


def _corrupt_png(png):
    """The same PNG with its pixel data overwritten: a valid header, an undecodable body."""
    body = png.find(b'IDAT') + 8
    return png[:body] + bytes(255 - b for b in png[body:body + 200]) + png[body + 200:]


def test_corrupt_member_in_a_worker_is_the_main_process_line(he_crops, tmp_path):
    import io
    import zipfile

    import PIL.Image
    crops = he_crops(32, 6, seed=2)
    pngs = []
    for c in crops:
        buf = io.BytesIO()
        PIL.Image.fromarray(c).save(buf, format='PNG')
        pngs.append(buf.getvalue())
    pngs[3] = _corrupt_png(pngs[3]) # stored with a matching CRC: only decoding can find it
    path = tmp_path / 'corrupt.zip'
    with zipfile.ZipFile(path, 'w') as z:
        for i, png in enumerate(pngs):
            z.writestr(f'img{i}.png', png)
    ds = ImageFolderDataset(str(path))
    here, _ = _first_error(ds, workers=0)
    there, err = _first_error(ds, workers=2)
    assert here.startswith('Unreadable image file: img3.png (') and '\n' not in here
    assert there == here
    assert 'Caught UserError in DataLoader worker process' in err.worker_traceback


def test_vanished_folder_file_in_a_worker_is_the_main_process_line(he_crops, tmp_path):
    import PIL.Image
    for i, c in enumerate(he_crops(16, 6, seed=3)):
        PIL.Image.fromarray(c).save(tmp_path / f'p{i}.png')
    ds = ImageFolderDataset(str(tmp_path))
    os.remove(tmp_path / 'p4.png') # deleted after the dataset was indexed
    here, _ = _first_error(ds, workers=0)
    there, _ = _first_error(ds, workers=2)
    assert here.startswith('Unreadable image file: p4.png (FileNotFoundError') and '\n' not in here
    assert there == here


def test_worker_report_of_another_type_is_left_alone():
    report = 'Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\nValueError: x'
    assert str(dnnlib.util.UserError(report)) == report
    assert str(pickle.loads(pickle.dumps(dnnlib.util.UserError('one line')))) == 'one line'


def test_handle_belongs_to_the_process_that_opened_it(he_zip, monkeypatch):
    path, crops = he_zip
    ds = ImageFolderDataset(path)
    parents = ds._files._get()
    clone = pickle.loads(pickle.dumps(ds)) # what a spawned worker receives
    assert clone._files._archive is None
    real_pid = os.getpid()
    monkeypatch.setattr(os, 'getpid', lambda: real_pid + 1) # as seen by a forked child
    assert np.array_equal(ds[7][0], crops[7].transpose(2, 0, 1))
    assert ds._files._archive is not parents and parents.fp is None # the inherited copy is closed
