"""Load and convert network snapshots: HistoSynth and official StyleGAN2-ADA pickles, and code-free safetensors.

Pickles run code when loaded (they carry the source of the networks and re-execute it); load pickles only from
sources you trust. A .safetensors snapshot holds tensors plus JSON and executes no code: the networks are built
from an allow-list of HistoSynth classes and filled with the stored weights.
"""

import contextlib
import copy
import io
import json
import math
import os
import pickle
import re
import urllib.parse
import warnings

import click
import torch

import dnnlib
from networks import stylegan2
from torch_utils import misc, persistence

SNAPSHOT_MODULE_KEYS = ('G', 'D', 'G_ema', 'augment_pipe')
SAFETENSORS_FORMAT = 'histosynth.network'
SAFETENSORS_FORMAT_VERSION = '1'

# Modules whose persistent network classes a .safetensors file may name. Importing them runs our own code only.
SAFE_CLASS_MODULES = ('networks.stylegan2', 'networks.stylegan', 'networks.pgan', 'networks.dcgan', 'networks.wgan',
                      'networks.encoder', 'training.augment')

# Classes of the StyleGAN2 family that a pickled network is rebuilt as (current code, same weights).
_SG2_CONVERTIBLE = ('Generator', 'Discriminator', 'MappingNetwork', 'SynthesisNetwork')
# What a module source must define to be the StyleGAN2 network family (official training/networks.py or ours).
_SG2_SOURCE_MARKERS = ('modulated_conv2d', 'MappingNetwork', 'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock',
                       'SynthesisNetwork', 'DiscriminatorBlock', 'DiscriminatorEpilogue')

#----------------------------------------------------------------------------
# Pickles.

def load_network_pkl(f, force_fp16=False):
    """Unpickle a snapshot dict from a binary file object; networks of the StyleGAN2 family come back as
    networks.stylegan2 classes (rebuilt from their constructor kwargs, weights copied 1:1).

    Returns a dict with the keys G, D, G_ema, augment_pipe, training_set_kwargs (missing ones are None).
    """
    try:
        data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise dnnlib.util.UserError(f'not a network pickle ({err})')
    except (ImportError, AttributeError) as err:
        raise dnnlib.util.UserError(f'pickle refers to code that is not available here ({err})')

    if isinstance(data, tuple) and len(data) == 3 and all(not isinstance(x, torch.nn.Module) for x in data):
        raise dnnlib.util.UserError('TensorFlow StyleGAN2 pickles are not supported; convert them with the official code first')
    if isinstance(data, torch.nn.Module):
        data = dict(G_ema=data)  # a bare generator pickle
    if not isinstance(data, dict):
        raise dnnlib.util.UserError(f'not a network snapshot: the pickle holds a {type(data).__name__}, not a dict')
    data = dict(data)
    for key in SNAPSHOT_MODULE_KEYS + ('training_set_kwargs',):
        data.setdefault(key, None)
    if all(data[key] is None for key in ('G', 'D', 'G_ema')):
        raise dnnlib.util.UserError('not a network snapshot: the pickle has none of G, D, G_ema')
    for key in ('G', 'D', 'G_ema'):
        if data[key] is not None and not isinstance(data[key], torch.nn.Module):
            raise dnnlib.util.UserError(f'not a network snapshot: {key} is a {type(data[key]).__name__}')
        data[key] = convert_to_histosynth(data[key])

    if force_fp16:
        for key in ('G', 'D', 'G_ema'):
            data[key] = _with_fp16(data[key], key)
    return data

def _construct(cls, args, kwargs):
    """Build a network whose weights are about to be overwritten, without advancing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        return cls(*args, **kwargs)

def _source_defines(src, names):
    defined = set(re.findall(r'^(?:class|def)\s+(\w+)', src, flags=re.MULTILINE))
    return all(name in defined for name in names)

def convert_to_histosynth(module):
    """Rebuild a pickled StyleGAN2-family network (official or an older HistoSynth source) as the current
    networks.stylegan2 class with the same constructor kwargs and weights. Anything else is returned as is."""
    if module is None:
        return None
    cls = type(module)
    class_name = getattr(cls, '_orig_class_name', cls.__name__)
    src = getattr(cls, '_orig_module_src', None)
    if class_name not in _SG2_CONVERTIBLE or not persistence.is_persistent(module) or src is None:
        return module
    target_cls = getattr(stylegan2, class_name)
    if cls is target_cls or not _source_defines(src, _SG2_SOURCE_MARKERS):
        return module  # already the current code, or not the StyleGAN2 family

    try:
        new = _construct(target_cls, module.init_args, module.init_kwargs)
    except TypeError:
        return module  # a variant with other constructor arguments: keep the pickled code
    src_names = {name for name, _ in misc.named_params_and_buffers(module)}
    dst_names = {name for name, _ in misc.named_params_and_buffers(new)}
    if src_names != dst_names:
        return module  # unknown architecture variant: keep the pickled code
    misc.copy_params_and_buffers(module, new, require_all=True)
    src_params = dict(module.named_parameters())
    for name, param in new.named_parameters():
        param.requires_grad_(src_params[name].requires_grad)
    return new.train(module.training)

def _with_fp16(module, key):
    """Rebuild G/D with fp16 on the 4 highest resolutions and conv_clamp 256 (the official --force-fp16)."""
    if module is None or not isinstance(module, (stylegan2.Generator, stylegan2.Discriminator)):
        return module
    kwargs = copy.deepcopy(module.init_kwargs)
    if key.startswith('G'):
        kwargs.synthesis_kwargs = dnnlib.EasyDict(kwargs.get('synthesis_kwargs', {}))
        kwargs.synthesis_kwargs.num_fp16_res = 4
        kwargs.synthesis_kwargs.conv_clamp = 256
    else:
        kwargs.num_fp16_res = 4
        kwargs.conv_clamp = 256
    if kwargs == module.init_kwargs:
        return module
    new = _construct(type(module), module.init_args, kwargs).eval().requires_grad_(False)
    misc.copy_params_and_buffers(module, new, require_all=True)
    return new

#----------------------------------------------------------------------------
# Safetensors: weights as tensors named '<key>.<param>', class names and kwargs as JSON metadata.

@contextlib.contextmanager
def _write_errors_as_user_errors(path, also=()):
    """A failed write (full disk, no permission) becomes one line; atomic_write has removed its temp file."""
    try:
        yield
    except (OSError, *also) as err:
        reason = getattr(err, 'strerror', None) or str(err)
        raise dnnlib.util.UserError(f"cannot write '{path}': {reason}") from None

def _class_name(module):
    return f'{type(module).__module__}.{type(module).__qualname__}'

def resolve_safe_class(class_name):
    """The persistent HistoSynth network class named `class_name`, if it is on the allow-list; else UserError."""
    module_name, _, attr = class_name.rpartition('.')
    if module_name not in SAFE_CLASS_MODULES or not re.fullmatch(r'[A-Za-z_]\w*', attr):
        raise dnnlib.util.UserError(f"class '{class_name}' is not an allowed HistoSynth network class")
    cls = getattr(dnnlib.util.get_obj_by_name(module_name), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and persistence.is_persistent(cls)):
        raise dnnlib.util.UserError(f"class '{class_name}' is not an allowed HistoSynth network class")
    return cls

def _to_json(value, what):
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as err:
        raise dnnlib.util.UserError(f'{what} cannot be stored as JSON ({err})')

def save_network_safetensors(data, path):
    """Write the networks of a snapshot dict as one code-free .safetensors file (atomically).
    Returns the list of keys stored; modules that are not HistoSynth network classes are skipped."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    tensors = {}
    modules = {}
    for key in SNAPSHOT_MODULE_KEYS:
        module = data.get(key, None)
        if module is None:
            continue
        class_name = _class_name(module)
        try:
            resolve_safe_class(class_name)
        except dnnlib.util.UserError:
            if key == 'augment_pipe':
                continue  # training-only; a pickled augment pipe of foreign code has no safe equivalent
            raise
        modules[key] = dict(class_name=class_name, init_args=list(module.init_args), init_kwargs=dict(module.init_kwargs))
        _to_json(modules[key], f'constructor arguments of {key}')
        for name, tensor in misc.named_params_and_buffers(module):
            tensors[f'{key}.{name}'] = tensor.detach().cpu().clone().contiguous()
    if not modules:
        raise dnnlib.util.UserError('nothing to save: the snapshot has no HistoSynth networks')

    training_set_kwargs = data.get('training_set_kwargs', None)
    try:
        training_set_json = json.dumps(training_set_kwargs)
    except (TypeError, ValueError):
        training_set_json = 'null'  # informational only; never worth failing the conversion
    metadata = dict(format=SAFETENSORS_FORMAT, format_version=SAFETENSORS_FORMAT_VERSION,
                    modules=_to_json(modules, 'module list'), training_set_kwargs=training_set_json)
    with _write_errors_as_user_errors(path, also=(SafetensorError,)), dnnlib.util.atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return list(modules)

# Constructor arguments read from a .safetensors file are data from an unknown source: before anything is
# built for real they must lie in ranges no HistoSynth network leaves, and the network they describe must
# have exactly the stored tensor names and shapes (checked on a tensor-free "fake" build).
_MAX_RESOLUTION = 4096     # img_resolution and other *resolution arguments: a power of two in [4, 4096]
_MAX_CHANNELS = 16         # img_channels
_MAX_WIDTH = 16384         # *_dim, channel_max, width, *features: sizes of one layer
_MAX_LAYERS = 64           # num_layers and friends
_MAX_INT = 1 << 17         # any other integer (channel_base is 32768 in the largest official configs)
_MAX_DEPTH = 6             # nesting of dicts/lists in the arguments
_MAX_STRING = 1000

def _int_limit(key):
    """(upper bound, whether the value must be an integer) for a constructor argument named `key`."""
    key = (key or '').lower()
    if key == 'img_channels':
        return _MAX_CHANNELS, True
    if 'layers' in key:
        return _MAX_LAYERS, True
    if key.endswith('_dim') or key in ('channel_max', 'width') or key.endswith('features'):
        return _MAX_WIDTH, True
    if key.startswith('channel_') or key.startswith('num_'):
        return _MAX_INT, True
    return _MAX_INT, False

def _check_stored_value(value, where, key=None, depth=0):
    """UserError unless a JSON value from the file is a sane constructor argument."""
    if depth > _MAX_DEPTH:
        raise dnnlib.util.UserError(f'{where}: constructor arguments are nested too deeply')
    if isinstance(value, dict):
        for name, item in value.items():
            _check_stored_value(item, f'{where}.{name}', name, depth + 1)
        return
    if isinstance(value, list):
        for idx, item in enumerate(value):
            _check_stored_value(item, f'{where}[{idx}]', key, depth + 1)
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if len(value) > _MAX_STRING:
            raise dnnlib.util.UserError(f'{where}: string argument of {len(value)} characters is too long')
        return
    if not isinstance(value, (int, float)):
        raise dnnlib.util.UserError(f'{where}: unsupported argument type {type(value).__name__}')
    if key is not None and key.lower().endswith('resolution'):
        if not isinstance(value, int) or value < 4 or value > _MAX_RESOLUTION or value & (value - 1):
            raise dnnlib.util.UserError(f'{where}={value!r} is not a power of two between 4 and {_MAX_RESOLUTION}')
        return
    limit, integral = _int_limit(key)
    if integral and not isinstance(value, int):
        raise dnnlib.util.UserError(f'{where}={value!r} must be an integer')
    if not math.isfinite(value) or value < 0 or value > limit:
        raise dnnlib.util.UserError(f'{where}={value!r} is outside the sane range [0, {limit}]')

def _expected_tensor_shapes(cls, args, kwargs, where):
    """{name: shape} of every parameter and buffer of cls(*args, **kwargs), found without allocating them."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    try:
        with warnings.catch_warnings(), FakeTensorMode(allow_non_fake_inputs=True), torch.random.fork_rng(devices=[]):
            warnings.simplefilter('ignore')
            fake = cls(*args, **kwargs)
            return {name: tuple(t.shape) for name, t in misc.named_params_and_buffers(fake)}
    except Exception as err:  # any failure means the stored arguments do not describe a network of this class
        detail = (str(err).strip().splitlines() or [''])[0][:200]
        raise dnnlib.util.UserError(f'{where}: the stored constructor arguments do not build a {cls.__name__} '
                                    f'({type(err).__name__}: {detail})') from None

def _compare_tensors(expected, stored, where):
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise dnnlib.util.UserError(f'{where}: stored tensors do not match the stored constructor arguments '
                                    f'(missing {missing[:3]}, unexpected {extra[:3]})')
    for name, shape in expected.items():
        if stored[name] != shape:
            raise dnnlib.util.UserError(f'{where}.{name} has shape {list(stored[name])}, the stored constructor '
                                        f'arguments give {list(shape)}')

def _read_header(f, path):
    metadata = f.metadata() or {}
    if metadata.get('format', None) != SAFETENSORS_FORMAT:
        raise dnnlib.util.UserError(f"'{path}' is a safetensors file but not a HistoSynth network snapshot")
    if metadata.get('format_version', None) != SAFETENSORS_FORMAT_VERSION:
        raise dnnlib.util.UserError(f"'{path}' uses snapshot format version {metadata.get('format_version')!r}; "
                                    f"this code reads version {SAFETENSORS_FORMAT_VERSION}")
    try:
        modules = json.loads(metadata['modules'])
        training_set_kwargs = json.loads(metadata.get('training_set_kwargs', 'null'))
    except (KeyError, json.JSONDecodeError) as err:
        raise dnnlib.util.UserError(f"'{path}' has broken snapshot metadata ({err})")
    if not isinstance(modules, dict) or not all(isinstance(spec, dict) for spec in modules.values()):
        raise dnnlib.util.UserError(f"'{path}' has broken snapshot metadata (modules is not a table)")
    return modules, training_set_kwargs

def _restore_module(f, path, key, spec, shapes):
    """Build the network `key` from its checked spec and fill it with the stored tensors."""
    where = f"'{path}': {key}"
    if key not in SNAPSHOT_MODULE_KEYS:
        raise dnnlib.util.UserError(f"'{path}' names an unknown snapshot entry '{key}'")
    cls = resolve_safe_class(str(spec.get('class_name')))
    args, kwargs = spec.get('init_args', []), spec.get('init_kwargs', {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise dnnlib.util.UserError(f'{where}: init_args must be a list and init_kwargs a table')
    _check_stored_value(args, f'{where} init_args')
    _check_stored_value(kwargs, f'{where}', None)
    prefix = key + '.'
    stored = {name[len(prefix):]: shape for name, shape in shapes.items() if name.startswith(prefix)}
    _compare_tensors(_expected_tensor_shapes(cls, args, kwargs, where), stored, where)

    module = _construct(cls, args, kwargs)  # now known to be exactly as large as the stored tensors
    with torch.no_grad():
        for name, tensor in misc.named_params_and_buffers(module):
            tensor.copy_(f.get_tensor(prefix + name))
    return module.eval().requires_grad_(False)

def load_network_safetensors(path):
    """Load a snapshot dict from a .safetensors file written by save_network_safetensors.

    Executes no code from the file and allocates nothing it describes until its constructor arguments are
    in range and match the stored tensor names and shapes; tensors are then read one at a time.
    """
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework='pt') as f:
            modules, training_set_kwargs = _read_header(f, path)
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            orphans = sorted(name for name in shapes if name.split('.', 1)[0] not in modules)
            if orphans:
                raise dnnlib.util.UserError(f"'{path}' holds tensors of no listed network: {orphans[:3]}")
            data = {key: None for key in SNAPSHOT_MODULE_KEYS}
            for key, spec in modules.items():
                data[key] = _restore_module(f, path, key, spec, shapes)
    except (SafetensorError, OSError, ValueError) as err:
        raise dnnlib.util.UserError(f"cannot read '{path}' as safetensors ({err})")
    data['training_set_kwargs'] = dnnlib.EasyDict(training_set_kwargs) if isinstance(training_set_kwargs, dict) else training_set_kwargs
    return data

#----------------------------------------------------------------------------

def _url_suffix(path_or_url):
    path = urllib.parse.urlparse(path_or_url).path if re.match(r'^[a-z]+://', path_or_url) else path_or_url
    return os.path.splitext(path)[1].lower()

def load_network(path_or_url, force_fp16=False):
    """Load a snapshot dict from a .pkl or .safetensors path or URL (dispatch on the suffix)."""
    suffix = _url_suffix(str(path_or_url))
    if suffix == '.pkl':
        with dnnlib.util.open_url(str(path_or_url)) as f:
            return load_network_pkl(f, force_fp16=force_fp16)
    if suffix == '.safetensors':
        local_path = dnnlib.util.open_url(str(path_or_url), return_filename=True)
        data = load_network_safetensors(local_path)
        if force_fp16:
            for key in ('G', 'D', 'G_ema'):
                data[key] = _with_fp16(data[key], key)
        return data
    raise dnnlib.util.UserError(f"unsupported network file type '{suffix or os.path.basename(str(path_or_url))}' "
                                f"(expected .pkl or .safetensors): {path_or_url}")

def save_network_pkl(data, path):
    """Pickle a snapshot dict atomically."""
    buf = io.BytesIO()
    pickle.dump(data, buf)
    with _write_errors_as_user_errors(path), dnnlib.util.atomic_write(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(buf.getvalue())

#----------------------------------------------------------------------------

@click.command()
@click.option('--source', help='Input snapshot: .pkl or .safetensors, path or URL', required=True, metavar='PATH')
@click.option('--dest', help='Output snapshot: .safetensors (code-free) or .pkl', required=True, metavar='PATH')
@click.option('--force-fp16', help='Rebuild G and D with fp16 on the 4 highest resolutions (used on CUDA only)',
              is_flag=True, default=False)
def convert_network(source, dest, force_fp16):
    """Convert a network snapshot, e.g. an official StyleGAN2-ADA pickle into a code-free safetensors file.

    \b
    python legacy.py --source=network-snapshot-000800.pkl --dest=network-snapshot-000800.safetensors
    """
    try:
        dest_suffix = _url_suffix(dest)
        if dest_suffix not in ('.pkl', '.safetensors'):
            raise dnnlib.util.UserError(f"--dest must end in .pkl or .safetensors, not '{dest_suffix or dest}'")
        print(f"Loading '{source}'...")
        data = load_network(source, force_fp16=force_fp16)
        print(f"Saving '{dest}'...")
        if dest_suffix == '.safetensors':
            keys = save_network_safetensors(data, dest)
        else:
            save_network_pkl(data, dest)
            keys = [key for key in SNAPSHOT_MODULE_KEYS if data.get(key, None) is not None]
        print(f"Done: {', '.join(keys)}")
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    convert_network()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
