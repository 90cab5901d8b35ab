"""Snapshot loading: HistoSynth pickles (also without the repository), official-format pickles, safetensors."""

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from networks import stylegan2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

def make_snapshot(c_dim=0, res=16):
    torch.manual_seed(0)
    G_kwargs = dict(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
                    mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    G = stylegan2.Generator(**G_kwargs).eval().requires_grad_(False)
    D = stylegan2.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=256, channel_max=16,
                                mapping_kwargs=dict(num_layers=2)).eval().requires_grad_(False)
    with torch.no_grad():
        for module in (G, D):
            for name, param in module.named_parameters():
                if name.endswith('noise_strength'):
                    param.fill_(0.2)  # make noise_const matter
        G.mapping.w_avg.normal_()
    G_ema = stylegan2.Generator(**G_kwargs).eval().requires_grad_(False)
    return dict(G=G, D=D, G_ema=G_ema, augment_pipe=None,
                training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path='patches.zip',
                                                    resolution=res, use_labels=c_dim > 0))

def outputs(data, z, c):
    with torch.no_grad():
        img = data['G_ema'](z, c, noise_mode='const')
        img_g = data['G'](z, c, truncation_psi=0.5, noise_mode='const')
        return img, img_g, data['D'](img, c)

def copy_runtime(dst):
    """Only the packages an official pickle also needs: dnnlib and torch_utils."""
    for name in ('dnnlib', 'torch_utils'):
        shutil.copytree(os.path.join(REPO, name), os.path.join(dst, name), ignore=shutil.ignore_patterns('__pycache__'))

BLOCKER = textwrap.dedent('''
    import sys
    class _Blocker:
        """Fail any import of the repository's own packages: the pickle has to bring its code along."""
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('networks', 'training', 'legacy', 'tools'):
                raise ImportError(f'blocked import of {name}')
            return None
    sys.meta_path.insert(0, _Blocker())
    sys.path = [p for p in sys.path if os.path.abspath(p or '.') != REPO]
''')

def run_python(script, cwd):
    env = dict(os.environ, PYTHONPATH=cwd, HISTOSYNTH_OPS_IMPL='ref')
    res = subprocess.run([sys.executable, '-c', script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res

#----------------------------------------------------------------------------

def test_histosynth_pickle_round_trip():
    data = make_snapshot(c_dim=2)
    z, c = torch.randn([2, 16]), torch.eye(2)
    expected = outputs(data, z, c)
    loaded = legacy.load_network_pkl(io.BytesIO(pickle.dumps(data)))
    assert type(loaded['G_ema']) is stylegan2.Generator and type(loaded['D']) is stylegan2.Discriminator
    assert loaded['training_set_kwargs'] == data['training_set_kwargs'] and loaded['augment_pipe'] is None
    for a, b in zip(expected, outputs(loaded, z, c)):
        assert torch.equal(a, b)

    # The official persistence format: objects are rebuilt by torch_utils.persistence._reconstruct_persistent_obj.
    raw = pickle.dumps(data)
    assert b'torch_utils.persistence' in raw and b'_reconstruct_persistent_obj' in raw

def test_snapshot_pickle_loads_without_repository(tmp_path):
    data = make_snapshot()
    with open(tmp_path / 'snapshot.pkl', 'wb') as f:
        pickle.dump(data, f)
    z = torch.from_numpy(np.random.RandomState(7).randn(2, 16)).float()
    with torch.no_grad():
        expected = data['G_ema'](z, None, noise_mode='const').numpy()
        expected_d = data['D'](torch.from_numpy(expected), None).numpy()
    np.savez(tmp_path / 'expected.npz', z=z.numpy(), img=expected, logits=expected_d)
    copy_runtime(tmp_path)
    script = f'import os\nREPO = {REPO!r}\n' + BLOCKER + textwrap.dedent('''
        import pickle, numpy as np, torch
        with open('snapshot.pkl', 'rb') as f:
            data = pickle.load(f)
        assert not any(m.split('.')[0] in ('networks', 'training') for m in sys.modules), 'repository code was imported'
        G, D = data['G_ema'], data['D']
        assert type(G).__name__ == 'Generator' and type(G).__module__.startswith('_imported_module_'), type(G)
        ref = np.load('expected.npz')
        with torch.no_grad():
            img = G(torch.from_numpy(ref['z']), None, noise_mode='const')
            logits = D(img, None)
        np.testing.assert_allclose(img.numpy(), ref['img'], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits.numpy(), ref['logits'], rtol=1e-4, atol=1e-4)
        print('loaded', tuple(img.shape))
    ''')
    res = run_python(script, str(tmp_path))
    assert 'loaded (2, 3, 16, 16)' in res.stdout

#----------------------------------------------------------------------------
# An official StyleGAN2-ADA pickle: its networks live in a self-contained module `training.networks`.

def official_style_source():
    """One self-contained module (like the official training/networks.py) with this architecture."""
    with open(os.path.join(REPO, 'networks', 'layers.py')) as f:
        layers_src = f.read()
    with open(os.path.join(REPO, 'networks', 'stylegan2.py')) as f:
        sg2_src = f.read()
    sg2_src = re.sub(r'^\s*from networks import layers\n', '', sg2_src, flags=re.MULTILINE).replace('layers.', '')
    return '"""training/networks.py of an official-style code base."""\n' + layers_src + '\n' + sg2_src

def test_official_format_pickle_converts_to_histosynth(tmp_path):
    copy_runtime(tmp_path)
    os.makedirs(tmp_path / 'training')
    (tmp_path / 'training' / '__init__.py').write_text('')
    (tmp_path / 'training' / 'networks.py').write_text(official_style_source())
    # Written by "official" code: no HistoSynth package around, networks built by name from training.networks.
    script = f'import os\nREPO = {REPO!r}\n' + textwrap.dedent('''
        import sys
        sys.path = [p for p in sys.path if os.path.abspath(p or '.') != REPO]
        import pickle, numpy as np, torch, dnnlib
        torch.manual_seed(5)
        common = dict(c_dim=3, img_resolution=16, img_channels=3)
        G = dnnlib.util.construct_class_by_name(class_name='training.networks.Generator', z_dim=16, w_dim=16,
            mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16, architecture='resnet'), **common)
        D = dnnlib.util.construct_class_by_name(class_name='training.networks.Discriminator', channel_base=256, channel_max=16,
            architecture='skip', mapping_kwargs=dict(num_layers=2), **common)
        for m in (G, D):
            m.eval().requires_grad_(False)
        with torch.no_grad():
            for n, p in G.named_parameters():
                if n.endswith('noise_strength'):
                    p.fill_(0.3)
            G.mapping.w_avg.normal_()
        assert type(G).__module__ == 'training.networks'
        z, c = torch.randn([2, 16]), torch.eye(3)[[0, 2]]
        with torch.no_grad():
            img = G(z, c, truncation_psi=0.7, noise_mode='const')
            logits = D(img, c)
        with open('official.pkl', 'wb') as f:
            pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=dnnlib.EasyDict(path='x.zip')), f)
        np.savez('expected.npz', z=z.numpy(), c=c.numpy(), img=img.numpy(), logits=logits.numpy())
    ''')
    run_python(script, str(tmp_path))

    with open(tmp_path / 'official.pkl', 'rb') as f:
        data = legacy.load_network_pkl(f)
    G, D = data['G_ema'], data['D']
    assert type(G) is stylegan2.Generator and type(D) is stylegan2.Discriminator
    assert G.init_kwargs['synthesis_kwargs']['architecture'] == 'resnet' and D.init_kwargs['architecture'] == 'skip'
    ref = np.load(tmp_path / 'expected.npz')
    z, c = torch.from_numpy(ref['z']), torch.from_numpy(ref['c'])
    with torch.no_grad():
        img = G(z, c, truncation_psi=0.7, noise_mode='const')
        logits = D(img, c)
    np.testing.assert_allclose(img.numpy(), ref['img'], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), ref['logits'], rtol=1e-4, atol=1e-4)

def test_foreign_network_is_returned_unchanged(tmp_path, monkeypatch):
    # A persistent "Generator" from another family (no StyleGAN2 source) is left as the pickled code defines it.
    src = textwrap.dedent('''
        import torch
        from torch_utils import persistence
        @persistence.persistent_class
        class Generator(torch.nn.Module):
            def __init__(self, z_dim):
                super().__init__()
                self.fc = torch.nn.Linear(z_dim, 4)
            def forward(self, z, c):
                return self.fc(z)
    ''')
    (tmp_path / 'foreign_family.py').write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    import foreign_family
    G = foreign_family.Generator(z_dim=3)
    data = legacy.load_network_pkl(io.BytesIO(pickle.dumps(dict(G=G, G_ema=G))))
    assert type(data['G_ema']).__name__ == 'Generator' and not isinstance(data['G_ema'], stylegan2.Generator)

def test_bad_pickles_raise_user_errors(tmp_path):
    with pytest.raises(dnnlib.util.UserError, match='not a network pickle'):
        legacy.load_network_pkl(io.BytesIO(b'this is not a pickle'))
    with pytest.raises(dnnlib.util.UserError, match='not a network snapshot'):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps([1, 2, 3])))
    with pytest.raises(dnnlib.util.UserError, match='none of G, D, G_ema'):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps(dict(foo=1))))

#----------------------------------------------------------------------------
# Safetensors.

def test_safetensors_round_trip_executes_no_pickle(tmp_path, monkeypatch):
    from safetensors import safe_open
    data = make_snapshot(c_dim=2)
    path = str(tmp_path / 'net.safetensors')
    assert legacy.save_network_safetensors(data, path) == ['G', 'D', 'G_ema']
    with safe_open(path, framework='pt') as f:
        meta = f.metadata()
        keys = set(f.keys())
    modules = json.loads(meta['modules'])
    assert modules['G']['class_name'] == 'networks.stylegan2.Generator'
    assert modules['D']['init_kwargs']['c_dim'] == 2
    assert 'G_ema.mapping.w_avg' in keys and 'D.b4.out.weight' in keys and 'G.synthesis.b4.const' in keys

    def no_pickles(*args, **kwargs):
        raise AssertionError('loading a safetensors file must not unpickle anything')

    class NoUnpickler(pickle.Unpickler):  # still a class: torch may subclass pickle.Unpickler on a lazy import
        def __init__(self, *args, **kwargs):
            no_pickles()
    monkeypatch.setattr(pickle, 'load', no_pickles)
    monkeypatch.setattr(pickle, 'loads', no_pickles)
    monkeypatch.setattr(pickle, 'Unpickler', NoUnpickler)
    monkeypatch.setattr(torch, 'load', no_pickles)
    loaded = legacy.load_network(path)
    monkeypatch.undo()

    z, c = torch.randn([2, 16]), torch.eye(2)
    for a, b in zip(outputs(data, z, c), outputs(loaded, z, c)):
        assert torch.equal(a, b)
    assert loaded['training_set_kwargs'] == data['training_set_kwargs']

    # Building the networks does not advance the caller's random stream (resuming stays reproducible).
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    legacy.load_network(path)
    assert torch.equal(torch.rand(3), expected_draw)
    assert not loaded['G_ema'].training and not any(p.requires_grad for p in loaded['G_ema'].parameters())

def write_crafted_safetensors(path, class_name):
    from safetensors.torch import save_file
    modules = dict(G_ema=dict(class_name=class_name, init_args=['echo hacked'], init_kwargs={}))
    save_file({'G_ema.x': torch.zeros(1)}, path, metadata=dict(format=legacy.SAFETENSORS_FORMAT,
        format_version=legacy.SAFETENSORS_FORMAT_VERSION, modules=json.dumps(modules), training_set_kwargs='null'))

@pytest.mark.parametrize('class_name', ['os.system', 'builtins.eval', 'networks.stylegan2.np', 'networks.stylegan2.torch.nn.Linear',
                                        'networks.layers.FullyConnectedLayer', 'subprocess.Popen'])
def test_safetensors_allow_list(tmp_path, class_name):
    path = str(tmp_path / 'evil.safetensors')
    write_crafted_safetensors(path, class_name)
    with pytest.raises(dnnlib.util.UserError, match='not an allowed HistoSynth network class'):
        legacy.load_network(path)

def test_safetensors_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file
    path = str(tmp_path / 'plain.safetensors')
    save_file({'w': torch.zeros(2)}, path)
    with pytest.raises(dnnlib.util.UserError, match='not a HistoSynth network snapshot'):
        legacy.load_network(path)
    (tmp_path / 'junk.safetensors').write_bytes(b'\x00' * 5)
    with pytest.raises(dnnlib.util.UserError, match='cannot read'):
        legacy.load_network(str(tmp_path / 'junk.safetensors'))

def test_load_network_dispatch(tmp_path):
    data = make_snapshot()
    pkl = tmp_path / 'net.pkl'
    pkl.write_bytes(pickle.dumps(data))
    loaded = legacy.load_network('file://' + str(pkl))
    assert type(loaded['G_ema']) is stylegan2.Generator
    with pytest.raises(dnnlib.util.UserError, match='unsupported network file type'):
        legacy.load_network(str(tmp_path / 'net.txt'))
    with pytest.raises(dnnlib.util.UserError, match='No such file'):
        legacy.load_network(str(tmp_path / 'missing.pkl'))

def test_force_fp16_rebuilds_with_same_weights():
    data = make_snapshot()
    loaded = legacy.load_network_pkl(io.BytesIO(pickle.dumps(data)), force_fp16=True)
    G = loaded['G_ema']
    assert G.init_kwargs.synthesis_kwargs.num_fp16_res == 4 and G.init_kwargs.synthesis_kwargs.conv_clamp == 256
    assert loaded['D'].init_kwargs.num_fp16_res == 4
    z = torch.randn([2, 16])
    with torch.no_grad():  # on the CPU fp16 blocks run in float32 and the clamp at 256 never bites here
        torch.testing.assert_close(G(z, None, noise_mode='const'), data['G_ema'](z, None, noise_mode='const'))

def test_convert_cli(tmp_path):
    data = make_snapshot()
    src = tmp_path / 'net.pkl'
    src.write_bytes(pickle.dumps(data))
    runner = CliRunner()
    res = runner.invoke(legacy.convert_network, ['--source', str(src), '--dest', str(tmp_path / 'net.safetensors')])
    assert res.exit_code == 0, res.output
    assert 'Done: G, D, G_ema' in res.output
    z = torch.randn([1, 16])
    with torch.no_grad():
        assert torch.equal(legacy.load_network(str(tmp_path / 'net.safetensors'))['G_ema'](z, None),
                           data['G_ema'](z, None))
    assert [p for p in os.listdir(tmp_path) if p.endswith('.tmp')] == []

    res = runner.invoke(legacy.convert_network, ['--source', str(src), '--dest', str(tmp_path / 'net.onnx')])
    assert res.exit_code != 0 and res.output.strip().count('\n') == 0 and 'Error: --dest must end in' in res.output
    res = runner.invoke(legacy.convert_network, ['--source', str(tmp_path / 'nope.pkl'), '--dest', str(tmp_path / 'x.safetensors')])
    assert res.exit_code != 0 and 'No such file' in res.output and 'Traceback' not in res.output

#----------------------------------------------------------------------------
