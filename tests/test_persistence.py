"""torch_utils.persistence: pickles that embed their source, in the official StyleGAN2-ADA format."""

import copy
import importlib
import os
import pickle
import subprocess
import sys
import textwrap
import uuid

import pytest
import torch

from torch_utils import persistence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET_SRC = textwrap.dedent('''
    import torch
    from torch_utils import persistence

    @persistence.persistent_class
    class TinyNet(torch.nn.Module):
        def __init__(self, width, gain=1.0):
            super().__init__()
            self.fc = torch.nn.Linear(width, width)
            self.register_buffer('offset', torch.arange(width, dtype=torch.float32))
            self.gain = gain

        def forward(self, x):
            return self.fc(x) * self.gain + self.offset
''')

# A minimal persistent class written as a plain string, as it would appear inside an official pickle.
ADDER_SRC = textwrap.dedent('''
    from torch_utils import persistence

    @persistence.persistent_class
    class Adder:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return x + self.k
''')


@pytest.fixture
def tmp_module(tmp_path):
    """Factory writing a uniquely named module into tmp_path and importing it; cleans sys.path/modules."""
    names = []
    sys.path.insert(0, str(tmp_path))

    def make(src):
        name = f'hs_persist_{uuid.uuid4().hex[:12]}'
        (tmp_path / f'{name}.py').write_text(src)
        names.append(name)
        return importlib.import_module(name), tmp_path / f'{name}.py'

    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        sys.modules.pop(name, None)


def official_format_pickle(meta):
    """Pickle bytes for `_reconstruct_persistent_obj(meta)` built from raw opcodes, not via our __reduce__."""
    body = pickle.dumps(meta, protocol=2)
    assert body[:2] == b'\x80\x02' and body[-1:] == b'.'
    return (b'\x80\x02' + b'ctorch_utils.persistence\n_reconstruct_persistent_obj\n'
            + body[2:-1] + b'\x85' + b'R' + b'.')  # TUPLE1, REDUCE, STOP


def test_round_trip_and_meta_format(tmp_module):
    mod, _ = tmp_module(NET_SRC)
    torch.manual_seed(0)
    net = mod.TinyNet(4, gain=2.0)
    assert persistence.is_persistent(net) and persistence.is_persistent(mod.TinyNet)
    assert not persistence.is_persistent(torch.nn.Linear(2, 2))
    assert net.init_args == (4,) and net.init_kwargs == {'gain': 2.0} and net.init_kwargs.gain == 2.0

    func, args = net.__reduce__()[:2]
    assert func is persistence._reconstruct_persistent_obj
    meta = args[0]
    assert meta['type'] == 'class' and meta['version'] == 6 and meta['class_name'] == 'TinyNet'
    assert meta['module_src'] == NET_SRC
    assert 'fc' in meta['state']['_modules']

    data = pickle.dumps(net)
    assert b'torch_utils.persistence' in data and b'_reconstruct_persistent_obj' in data
    net2 = pickle.loads(data)
    assert type(net2) is type(net)  # the live module is reused, not re-executed
    x = torch.randn(3, 4)
    assert torch.equal(net2(x), net(x))
    assert net2.init_kwargs == {'gain': 2.0}


def test_unpickle_without_defining_module(tmp_module, tmp_path):
    mod, path = tmp_module(NET_SRC)
    torch.manual_seed(1)
    net = mod.TinyNet(3)
    x = torch.randn(2, 3)
    expected = net(x).detach()
    pkl = tmp_path / 'net.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(net=net, x=x), f)
    path.rename(tmp_path / 'renamed_away.txt')

    script = textwrap.dedent(f'''
        import pickle, sys, torch
        with open({str(pkl)!r}, 'rb') as f:
            data = pickle.load(f)
        net = data['net']
        assert type(net).__module__.startswith('_imported_module_'), type(net).__module__
        assert {mod.__name__!r} not in sys.modules
        torch.save(net(data['x']).detach(), sys.argv[1])
    ''')
    out = tmp_path / 'out.pt'
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, '-c', script, str(out)], cwd=str(tmp_path / '..'), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert torch.allclose(torch.load(out), expected)


def test_hand_built_official_pickle():
    state = {'k': 5, '_init_args': (5,), '_init_kwargs': {}}
    meta = dict(type='class', version=6, module_src=ADDER_SRC, class_name='Adder', state=state)
    data = official_format_pickle(meta)
    adder = pickle.loads(data)
    assert adder(1) == 6 and adder.init_args == (5,)
    assert type(adder).__module__.startswith('_imported_module_')
    assert persistence.is_persistent(adder)
    # The same source is executed only once: a second load yields the very same class.
    assert type(pickle.loads(data)) is type(adder)
    # ...and the reconstructed object pickles again in the same format.
    again = pickle.loads(pickle.dumps(adder))
    assert again(10) == 15 and type(again) is type(adder)


def test_unsupported_version_is_a_clear_error():
    meta = dict(type='class', version=5, module_src=ADDER_SRC, class_name='Adder', state={'k': 1})
    with pytest.raises(Exception, match='version'):
        pickle.loads(official_format_pickle(meta))


def test_import_hook_rewrites_meta():
    marker = f'# hook test {uuid.uuid4().hex}\n'
    meta = dict(type='class', version=6, module_src=marker + ADDER_SRC, class_name='Adder', state={'k': 3})

    def hook(meta):
        if meta.module_src.startswith(marker):
            meta.module_src = meta.module_src.replace('x + self.k', 'x * self.k')
            meta.state.k = 7
        return meta

    persistence.import_hook(hook)
    try:
        obj = pickle.loads(official_format_pickle(meta))
    finally:
        persistence._import_hooks.remove(hook)
    assert obj(2) == 14


def test_deepcopy(tmp_module):
    mod, _ = tmp_module(NET_SRC)
    net = mod.TinyNet(4)
    clone = copy.deepcopy(net).eval().requires_grad_(False)
    assert type(clone) is type(net)
    assert clone.init_args == (4,)
    x = torch.randn(2, 4)
    assert torch.equal(clone(x), net(x))
    with torch.no_grad():
        clone.fc.weight.add_(1)
    assert not torch.equal(clone.fc.weight, net.fc.weight)  # storage is not shared
    assert net.training and not clone.training


def test_rules_checked_at_construction(tmp_module):
    mod, _ = tmp_module(textwrap.dedent('''
        import threading
        from torch_utils import persistence

        def make_local():
            @persistence.persistent_class
            class Local:
                pass
            return Local

        @persistence.persistent_class
        class HoldsLock:
            def __init__(self):
                self.lock = threading.Lock()
    '''))
    with pytest.raises(AssertionError, match='top level'):
        mod.make_local()()
    with pytest.raises(TypeError):
        mod.HoldsLock()  # unpicklable state is reported when the object is built, not when it is saved
