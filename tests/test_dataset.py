"""ImageFolderDataset on real H&E crops (zip and folder), labels, metadata, subsets, flips, every error; ResumableSampler."""

import io
import itertools
import json
import zipfile

import numpy as np
import PIL.Image
import pytest

import dnnlib
from training.dataset import ImageFolderDataset, ResumableSampler


def _png(arr, mode=None):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr, mode).save(buf, format='png')
    return buf.getvalue()


def _write_zip(path, files):
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in files.items():
            z.writestr(name, data if isinstance(data, bytes) else json.dumps(data))
    return str(path)


@pytest.fixture(scope='module')
def crops(he_crops):
    return he_crops(16, 6, seed=1)


def test_zip_images_labels_metadata(tmp_path, crops):
    files = {f'patches/p{i}.png': _png(c) for i, c in enumerate(crops)}
    files['dataset.json'] = {'labels': [[f'patches/p{i}.png', i % 3] for i in range(6)]}
    files['metadata.json'] = {'patches': {'patches/p2.png': dict(slide='CMU-1-Small-Region', level=0, x=10, y=20, size=16, tissue_fraction=0.97, label='normal')}}
    ds = ImageFolderDataset(_write_zip(tmp_path / 'he16.zip', files), use_labels=True)
    assert ds.name == 'he16' and len(ds) == 6
    assert ds.raw_shape == [6, 3, 16, 16] and ds.image_shape == [3, 16, 16] and ds.resolution == 16 and ds.num_channels == 3
    assert ds.has_labels and ds.has_onehot_labels and ds.label_shape == [3] and ds.label_dim == 3
    img, label = ds[4]
    assert img.dtype == np.uint8 and np.array_equal(img, crops[4].transpose(2, 0, 1))
    assert label.dtype == np.float32 and np.array_equal(label, [0, 1, 0])
    assert ds.get_metadata(2) == dict(slide='CMU-1-Small-Region', level=0, x=10, y=20, size=16, tissue_fraction=0.97, label='normal')
    assert ds.get_metadata(1) is None
    assert ds.get_details(2).fname == 'patches/p2.png' and ds.get_details(2).metadata['x'] == 10


def test_folder_vector_labels_xflip_subset(tmp_path, crops):
    for i, c in enumerate(crops):
        PIL.Image.fromarray(c).save(tmp_path / f'img{i}.bmp') # a non-PNG, lossless format (PIL path)
    with open(tmp_path / 'dataset.json', 'w') as f:
        json.dump({'labels': [[f'img{i}.bmp', [i, -i]] for i in range(6)]}, f)
    ds = ImageFolderDataset(str(tmp_path), use_labels=True, xflip=True, max_size=4, random_seed=7)
    assert len(ds) == 8 and ds.label_shape == [2] and not ds.has_onehot_labels
    chosen = np.sort(np.random.RandomState(7).permutation(6)[:4]) # the same fixed-seed choice
    for k in range(4):
        img, label = ds[k]
        assert np.array_equal(img, crops[chosen[k]].transpose(2, 0, 1))
        assert np.array_equal(label, [chosen[k], -chosen[k]])
        flipped, _ = ds[k + 4]
        assert np.array_equal(flipped, img[:, :, ::-1])
    no_labels = ImageFolderDataset(str(tmp_path), use_labels=False)
    assert not no_labels.has_labels and no_labels[0][1].shape == (0,)


def test_grayscale(tmp_path, crops):
    gray = crops.mean(axis=3).astype(np.uint8)
    ds = ImageFolderDataset(_write_zip(tmp_path / 'g.zip', {f'{i}.png': _png(g) for i, g in enumerate(gray)}))
    assert ds.num_channels == 1 and np.array_equal(ds[0][0][0], gray[0])


@pytest.mark.parametrize('case, message', [
    ('empty', 'No image files found'),
    ('nonsquare', 'must be square, got 16x8: b.png'),
    ('notpow2', 'power of two (>= 4), got 12: a.png'),
    ('mixedsize', 'Mixed image sizes or channel counts: a.png is 16x16x3, b.png is 32x32x3'),
    ('mixedchannels', 'Mixed image sizes or channel counts: a.png is 16x16x3, b.png is 16x16x1'),
    ('rgba', 'alpha channel (RGBA/LA not supported, save as RGB): b.png'),
    ('unreadable', 'Unreadable image file: b.png'),
    ('missinglabel', 'dataset.json has no label for 1 image(s), e.g. b.png'),
])
def test_errors_are_one_line(tmp_path, crops, case, message):
    rgb = crops[0]
    files = {'a.png': _png(rgb)}
    if case == 'empty':
        files = {'notes.txt': b'no images here'}
    elif case == 'nonsquare':
        files['b.png'] = _png(rgb[:8])
    elif case == 'notpow2':
        files = {'a.png': _png(np.ascontiguousarray(rgb[:12, :12]))}
    elif case == 'mixedsize':
        files['b.png'] = _png(np.tile(rgb, (2, 2, 1)))
    elif case == 'mixedchannels':
        files['b.png'] = _png(rgb[:, :, 0].copy())
    elif case == 'rgba':
        files['b.png'] = _png(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    elif case == 'unreadable':
        files['b.png'] = b'\x89PNG\r\n\x1a\n' + b'garbage' * 3
    elif case == 'missinglabel':
        files['b.png'] = _png(rgb)
        files['dataset.json'] = {'labels': [['a.png', 0]]}
    path = _write_zip(tmp_path / f'{case}.zip', files)
    with pytest.raises(dnnlib.util.UserError) as err:
        ds = ImageFolderDataset(path, use_labels=True)
        ds.get_label(0)
    assert message in str(err.value) and '\n' not in str(err.value)


def test_missing_path_and_truncated_pixels(tmp_path, crops):
    with pytest.raises(dnnlib.util.UserError, match='Dataset not found'):
        ImageFolderDataset(str(tmp_path / 'nope.zip'))
    good = _png(crops[0])
    path = _write_zip(tmp_path / 't.zip', {'a.png': good, 'b.png': good[:60]}) # valid header, truncated data
    ds = ImageFolderDataset(path)
    with pytest.raises(dnnlib.util.UserError, match='Unreadable image file: b.png'):
        ds[1]


def test_cond_without_labels_is_a_one_line_cli_error(tmp_path, crops):
    from click.testing import CliRunner

    import train
    path = _write_zip(tmp_path / 'nolabels.zip', {f'{i}.png': _png(c) for i, c in enumerate(crops)})
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--data', path, '--cond=1', '--dry-run'])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == 'Error: --cond=True requires labels in dataset.json'
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--data', str(tmp_path / 'missing.zip'), '--dry-run'])
    assert result.exit_code != 0 and 'Dataset not found' in result.output and 'Traceback' not in result.output


def test_resumable_sampler_replicas_and_restart():
    def take(sampler, n):
        return list(itertools.islice(iter(sampler), n))
    single = take(ResumableSampler(10, seed=3), 40)
    # Epochs are permutations.
    for e in range(4):
        assert sorted(single[e * 10:(e + 1) * 10]) == list(range(10))
    # Two replicas interleave to the single-process stream.
    r0 = take(ResumableSampler(10, rank=0, num_replicas=2, seed=3), 20)
    r1 = take(ResumableSampler(10, rank=1, num_replicas=2, seed=3), 20)
    assert [x for pair in zip(r0, r1) for x in pair] == single
    # Starting at a position continues the same stream.
    assert take(ResumableSampler(10, seed=3, start=13), 27) == single[13:]
    assert take(ResumableSampler(10, rank=1, num_replicas=2, seed=3, start=12), 5) == single[13:23:2]
    assert take(ResumableSampler(10, seed=4), 10) != single[:10]
