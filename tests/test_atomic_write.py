"""Nothing is left behind when a write fails, and no room at the destination is one line naming it.

The failing writes run in a subprocess under a small RLIMIT_FSIZE (SIGXFSZ ignored, so writes past the
limit fail with EFBIG as on a full disk) and write into a fresh folder that must be empty afterwards.
"""

import errno
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

import dnnlib
from tools.histology.writer import DatasetWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 64 * 1024

# Each case writes more than LIMIT bytes into `out` (its folder is argv[1]).
CASES = {
    'pickle': '''
        import pickle
        with dnnlib.util.atomic_write(out) as tmp, open(tmp, 'wb') as f:
            pickle.dump(bytes(4 * LIMIT), f)
    ''',
    'torch_save': '''
        import torch
        with dnnlib.util.atomic_write(out) as tmp:
            torch.save({'w': torch.zeros(LIMIT)}, tmp)
    ''',
    'safetensors': '''
        import torch
        from safetensors.torch import save_file
        with dnnlib.util.atomic_write(out) as tmp:
            save_file({'w': torch.zeros(LIMIT)}, tmp)
    ''',
    'dataset_zip': '''
        from tools.histology.writer import DatasetWriter
        with DatasetWriter(out + '.zip') as w:
            for i in range(20):
                w.add(os.urandom(LIMIT // 8))
            w.finish()
    ''',
    'dataset_zip_close': '''
        # Members fit exactly; the central directory, written by zipfile.close(), does not.
        from tools.histology.writer import DatasetWriter, image_fname
        size = 1000
        fit = sum(30 + len(image_fname(i)) + size for i in range(8))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fit + 10, fit + 10))
        with DatasetWriter(out + '.zip') as w:
            for i in range(8):
                w.add(os.urandom(size))
    ''',
    'dataset_folder': '''
        from tools.histology.writer import DatasetWriter
        with DatasetWriter(out) as w:
            for i in range(3):
                w.add(os.urandom(LIMIT // 2 * (i + 1)))
    ''',
}

RUNNER = '''
import os, resource, signal, sys, traceback
import dnnlib.util
LIMIT = {limit}
out = os.path.join(sys.argv[1], 'result')
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
try:
{body}
except dnnlib.util.UserError as err:
    print(err)
    print(''.join(traceback.format_exception(err.__cause__)), file=sys.stderr)
    sys.exit(1)
'''


@pytest.mark.parametrize('case', list(CASES))
def test_no_room_leaves_nothing_and_says_one_line(tmp_path, case):
    script = RUNNER.format(limit=LIMIT, body=textwrap.indent(textwrap.dedent(CASES[case]), '    '))
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, '-c', script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1, res.stderr
    dest = os.path.join(str(tmp_path), 'result' + ('.zip' if case.startswith('dataset_zip') else ''))
    assert res.stdout == f'Cannot write {dest}: {os.strerror(errno.EFBIG)} (errno {errno.EFBIG}); ' \
                         f'make room there (disk space, quota or file-size limit) or write elsewhere\n'
    assert os.listdir(tmp_path) == []
    if case == 'dataset_zip_close':
        assert '_write_end_record' in res.stderr # the failure really came from zipfile.close()


def test_error_while_closing_the_zip_removes_it(tmp_path, monkeypatch):
    def broken_close(self):
        raise OSError(errno.EIO, 'Input/output error')
    with pytest.raises(OSError, match='Input/output error'):
        with DatasetWriter(str(tmp_path / 'd.zip')) as w:
            w.add(b'png bytes')
            monkeypatch.setattr(zipfile.ZipFile, 'close', broken_close)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_folder_dataset_replaces_and_unrelated_errors_pass_through(tmp_path):
    dest = tmp_path / 'ds'
    with DatasetWriter(str(dest)) as w:
        w.add(b'first')
    with DatasetWriter(str(dest), overwrite=True) as w:
        w.add(b'second')
        w.finish()
    assert sorted(os.listdir(dest)) == ['00000', 'dataset.json']
    assert (dest / '00000' / 'img00000000.png').read_bytes() == b'second'
    with pytest.raises(KeyError):
        with dnnlib.util.atomic_write(str(tmp_path / 'x.bin')) as tmp:
            open(tmp, 'wb').write(b'half')
            raise KeyError('not a disk problem')
    assert sorted(os.listdir(tmp_path)) == ['ds']
