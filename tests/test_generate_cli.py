"""generate.py and style_mixing.py: the files they promise, pixel-exact against the network, one-line errors."""

import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import generate
import legacy
import style_mixing
from networks import stylegan2
from tools import cli_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

def tiny_generator(c_dim=0):
    torch.manual_seed(0)
    G = stylegan2.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(0.2)
    return G

@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    """A tiny random-weight snapshot as .pkl and .safetensors, and its generator."""
    folder = tmp_path_factory.mktemp('snapshot')
    G = tiny_generator()
    data = dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None)
    pkl = str(folder / 'net.pkl')
    with open(pkl, 'wb') as f:
        pickle.dump(data, f)
    st = str(folder / 'net.safetensors')
    legacy.save_network_safetensors(data, st)
    return dnnlib.EasyDict(pkl=pkl, safetensors=st, G=G, folder=folder)

def expected_seed_image(G, seed, psi=1.0, label=None):
    """What the official generate.py writes for a seed: z = RandomState(seed).randn(1, z_dim), rounding +128."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
    c = torch.zeros([1, G.c_dim]) if label is None else label
    with torch.no_grad():
        img = G(z, c, truncation_psi=psi, noise_mode='const')
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()

def read_png(path):
    return np.asarray(PIL.Image.open(path))

def assert_one_line_error(res):
    # Progress goes to stdout; stderr holds the error as one line.
    assert res.exit_code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), res.output
    assert 'Traceback' not in res.output
    assert isinstance(res.exception, SystemExit)

#----------------------------------------------------------------------------
# Shared helpers.

def test_parse_range():
    assert cli_utils.parse_range('1,2,5-9') == [1, 2, 5, 6, 7, 8, 9]
    assert cli_utils.parse_range(' 3 ') == [3]
    assert cli_utils.parse_range([4, 5]) == [4, 5]
    for bad in ['', '1,,2', 'a', '5-2', '-3', '1-2-3', '1.5']:
        with pytest.raises(dnnlib.util.UserError):
            cli_utils.parse_range(bad)

def test_image_grid_and_uint8():
    images = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    grid = cli_utils.make_image_grid(images)  # 3 columns, 2 rows, last cell black
    assert grid.shape == (4, 9, 3)
    np.testing.assert_array_equal(grid[2:4, 3:6], images[4])
    np.testing.assert_array_equal(grid[0:2, 6:9], images[2])
    assert not grid[2:4, 6:9].any()
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 1, 6)
    assert cli_utils.images_to_uint8(x).ravel().tolist() == [0, 64, 128, 255, 255, 255]

#----------------------------------------------------------------------------
# generate.py

@pytest.mark.parametrize('kind', ['pkl', 'safetensors'])
def test_generate_writes_seed_images_and_grid(snapshot, tmp_path, kind):
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', snapshot[kind], '--seeds', '1,3-4',
        '--trunc', '0.7', '--grid', '--outdir', str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path)) == ['grid.png', 'seed0001.png', 'seed0003.png', 'seed0004.png']
    images = []
    for seed in [1, 3, 4]:
        image = read_png(tmp_path / f'seed{seed:04d}.png')
        np.testing.assert_array_equal(image, expected_seed_image(snapshot.G, seed, psi=0.7))
        images.append(image)
    grid = read_png(tmp_path / 'grid.png')
    assert grid.shape == (32, 32, 3)
    np.testing.assert_array_equal(grid[16:, :16], images[2])
    assert not grid[16:, 16:].any()

def test_generate_truncation_zero_gives_one_image(snapshot, tmp_path):
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', snapshot.pkl, '--seeds', '5,6', '--trunc', '0',
        '--outdir', str(tmp_path)])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_png(tmp_path / 'seed0005.png'), read_png(tmp_path / 'seed0006.png'))

def test_generate_projected_w(snapshot, tmp_path):
    G = snapshot.G
    ws = np.random.RandomState(0).randn(2, G.num_ws, G.w_dim).astype(np.float32)
    np.savez(tmp_path / 'projected_w.npz', w=ws)
    out = tmp_path / 'out'
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', snapshot.pkl, '--projected-w',
        str(tmp_path / 'projected_w.npz'), '--outdir', str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(out)) == ['proj00.png', 'proj01.png']
    with torch.no_grad():
        expected = cli_utils.images_to_uint8(G.synthesis(torch.from_numpy(ws[1:2]), noise_mode='const'))[0]
    np.testing.assert_array_equal(read_png(out / 'proj01.png'), expected)

    np.savez(tmp_path / 'wrong.npz', w=ws[:, :2])
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', snapshot.pkl, '--projected-w',
        str(tmp_path / 'wrong.npz'), '--outdir', str(out)])
    assert_one_line_error(res)
    assert 'projected w has shape' in res.output

def test_generate_conditional(tmp_path):
    G = tiny_generator(c_dim=3)
    pkl = tmp_path / 'cond.pkl'
    pkl.write_bytes(pickle.dumps(dict(G=G, D=None, G_ema=G)))
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', str(pkl), '--seeds', '2', '--class', '1',
        '--outdir', str(tmp_path / 'out')])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_png(tmp_path / 'out' / 'seed0002.png'),
                                  expected_seed_image(G, 2, label=torch.eye(3)[1:2]))
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', str(pkl), '--seeds', '2', '--outdir', str(tmp_path)])
    assert_one_line_error(res)
    assert '--class' in res.output
    res = CliRunner().invoke(generate.generate_images_cmd, ['--network', str(pkl), '--seeds', '2', '--class', '3',
        '--outdir', str(tmp_path)])
    assert_one_line_error(res)

def test_generate_bad_input_gives_one_line_errors(snapshot, tmp_path):
    runner = CliRunner()
    (tmp_path / 'notes.txt').write_text('hello')
    (tmp_path / 'garbage.pkl').write_bytes(b'\x00not a pickle at all')
    cases = [
        (['--network', snapshot.pkl, '--seeds', '1,x'], "cannot parse 'x'"),
        (['--network', snapshot.pkl, '--seeds', '9-2'], 'descending range'),
        (['--network', str(tmp_path / 'missing.pkl'), '--seeds', '1'], 'No such file'),
        (['--network', str(tmp_path / 'notes.txt'), '--seeds', '1'], 'unsupported network file type'),
        (['--network', str(tmp_path / 'garbage.pkl'), '--seeds', '1'], 'not a network pickle'),
        (['--network', snapshot.pkl], 'give --seeds'),
    ]
    for args, message in cases:
        res = runner.invoke(generate.generate_images_cmd, args + ['--outdir', str(tmp_path / 'out')])
        assert_one_line_error(res)
        assert message in res.output, res.output
    assert not os.path.exists(tmp_path / 'out') or os.listdir(tmp_path / 'out') == []

def test_generate_script_error_has_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, os.path.join(REPO, 'generate.py'), '--network', str(tmp_path / 'missing.pkl'),
        '--seeds', '1', '--outdir', str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 1
    assert 'Traceback' not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith('Error: No such file')
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr

#----------------------------------------------------------------------------
# style_mixing.py

def test_style_mixing_writes_grid_and_cells(snapshot, tmp_path):
    res = CliRunner().invoke(style_mixing.generate_style_mix, ['--network', snapshot.safetensors, '--rows', '1,2',
        '--cols', '3', '--styles', '0-1', '--outdir', str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path)) == ['1-1.png', '1-3.png', '2-2.png', '2-3.png', '3-3.png', 'grid.png']

    # Cell (1, 3): ws of seed 1 with ws 0 and 1 taken from seed 3.
    G = snapshot.G
    with torch.no_grad():
        w1 = G.mapping(torch.from_numpy(np.random.RandomState(1).randn(1, 16)), None)
        w3 = G.mapping(torch.from_numpy(np.random.RandomState(3).randn(1, 16)), None)
        mixed = torch.cat([w3[:, :2], w1[:, 2:]], dim=1)
        expected = cli_utils.images_to_uint8(G.synthesis(mixed, noise_mode='const'))[0]
    np.testing.assert_array_equal(read_png(tmp_path / '1-3.png'), expected)
    np.testing.assert_array_equal(read_png(tmp_path / '3-3.png'), expected_seed_image(G, 3))

    # Grid: (rows + 1) x (cols + 1) cells, top-left black, top row the column seed, left column the row seeds.
    grid = read_png(tmp_path / 'grid.png')
    assert grid.shape == (48, 32, 3)
    assert not grid[:16, :16].any()
    np.testing.assert_array_equal(grid[:16, 16:], read_png(tmp_path / '3-3.png'))
    np.testing.assert_array_equal(grid[32:, :16], read_png(tmp_path / '2-2.png'))
    np.testing.assert_array_equal(grid[16:32, 16:], read_png(tmp_path / '1-3.png'))

def test_style_mixing_bad_styles(snapshot, tmp_path):
    res = CliRunner().invoke(style_mixing.generate_style_mix, ['--network', snapshot.pkl, '--rows', '1', '--cols', '2',
        '--styles', '0-20', '--outdir', str(tmp_path)])
    assert_one_line_error(res)
    assert 'out of range' in res.output
    res = CliRunner().invoke(style_mixing.generate_style_mix, ['--network', snapshot.pkl, '--rows', 'one', '--cols', '2',
        '--outdir', str(tmp_path)])
    assert_one_line_error(res)

#----------------------------------------------------------------------------
