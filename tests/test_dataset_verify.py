"""training.dataset.verify_zip: every member's CRC-32 checked at start-up, the first bad member named in one line."""

import struct
import zipfile

import pytest

import dnnlib
from datasets import write_dataset_zip
from training.dataset import verify_zip


def _flip_member_byte(path, member):
    """Invert one byte in the middle of a member's stored data, after the zip was written."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack('<HH', f.read(4))
        pos = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0xFF]))


@pytest.mark.parametrize('compression', [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupted_member_is_named(he_crops, tmp_path, compression):
    crops = he_crops(32, 8, seed=4)
    path = write_dataset_zip(tmp_path / 'he.zip', crops, labels=[0] * 8)
    if compression != zipfile.ZIP_STORED: # rewrite the same members deflated
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / 'd.zip', 'w', compression) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info))
        path = str(tmp_path / 'd.zip')
    assert verify_zip(path, progress=False) == 9 # 8 PNGs and dataset.json
    _flip_member_byte(path, '00000/img00000005.png')
    with pytest.raises(dnnlib.util.UserError) as info:
        verify_zip(path, progress=True)
    message = str(info.value)
    assert message.startswith(f'Damaged dataset {path}: member 00000/img00000005.png is corrupt (')
    assert '\n' not in message


def test_not_a_zip_and_folder(tmp_path):
    (tmp_path / 'notes.zip').write_bytes(b'not a zip at all')
    with pytest.raises(dnnlib.util.UserError, match='Not a valid zip file'):
        verify_zip(str(tmp_path / 'notes.zip'))
    with pytest.raises(dnnlib.util.UserError, match='Dataset not found'):
        verify_zip(str(tmp_path / 'missing.zip'))
    assert verify_zip(str(tmp_path)) == 0 # folders carry no checksums


def test_corrupt_small_member_at_construction_is_one_line(he_crops, tmp_path):
    from training.dataset import ImageFolderDataset
    path = write_dataset_zip(tmp_path / 'he.zip', he_crops(16, 4, seed=6))
    _flip_member_byte(path, '00000/img00000002.png')
    # A small member is read whole by the header check, which meets the bad CRC there.
    with pytest.raises(dnnlib.util.UserError) as info:
        ImageFolderDataset(path)
    assert str(info.value) == "Unreadable image file: 00000/img00000002.png (BadZipFile: Bad CRC-32 for file '00000/img00000002.png')"
