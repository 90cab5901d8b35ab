"""Pickles that carry their own source code.

Decorating a class with `@persistent_class` makes its instances pickle together
with the full source of the module that defines the class. Unpickling re-executes
that source in a synthetic module, so a snapshot stays loadable after the code
base has moved on or is not installed at all. The pickled form is the one used by
the official StyleGAN2-ADA code base (format version 6): `__reduce__` returns
`(torch_utils.persistence._reconstruct_persistent_obj, (meta,))` where `meta` is a
dict `{type: 'class', version: 6, module_src, class_name, state}`. Official
pickles therefore call `_reconstruct_persistent_obj()` defined here.

Rules inherited from the official design:
- a persistent class must be defined at the top level of its module, because it
  is looked up by name after the module source has been re-executed;
- everything the instance state refers to must itself be pickleable (checked at
  construction time so that problems surface early, not when saving a snapshot);
- constructor arguments are recorded as `obj.init_args` / `obj.init_kwargs` so a
  fresh instance can be built from an old one (e.g. when resuming training).
"""

import copy
import hashlib
import inspect
import io
import pickle
import sys
import types

import dnnlib

#----------------------------------------------------------------------------

_version = 6                # Format version of the pickled meta; matches the official code base.
_decorators = set()         # Every class produced by persistent_class().
_import_hooks = []          # Callables meta -> meta applied before reconstruction.
_module_to_src_dict = dict()  # module object -> its source string
_src_to_module_dict = dict()  # source string -> module object

#----------------------------------------------------------------------------

def persistent_class(orig_class):
    """Class decorator: instances pickle with the defining module's source embedded.

    Example:

        from torch_utils import persistence

        @persistence.persistent_class
        class MyNetwork(torch.nn.Module):
            def __init__(self, num_inputs, num_outputs):
                super().__init__()
                self.fc = MyLayer(num_inputs, num_outputs)

    Only the decorated class itself is made persistent: objects it refers to
    (e.g. `MyLayer` above) must be decorated too, or be importable at load time.
    """
    assert isinstance(orig_class, type)
    if is_persistent(orig_class):
        return orig_class

    assert orig_class.__module__ in sys.modules
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            # Reconstruction looks the class up by name in the re-executed module source.
            if self._orig_class_name not in orig_module.__dict__:
                raise AssertionError(f'persistent class {self._orig_class_name} must be defined at the top level '
                                     f'of module {orig_module.__name__}')
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type='class', version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj  # the callable official pickles name
                fields[1] = (meta,)                      # its single argument
                fields[2] = None                         # the state travels inside meta
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__  # so reprs and tracebacks name the defining module
    Decorator.__doc__ = orig_class.__doc__
    _decorators.add(Decorator)
    return Decorator

#----------------------------------------------------------------------------

def is_persistent(obj):
    """True if `obj` is a persistent class or an instance of one."""
    try:
        if obj in _decorators:
            return True
    except TypeError:
        pass  # unhashable objects are never persistent classes
    return type(obj) in _decorators  # pylint: disable=unidiomatic-typecheck

#----------------------------------------------------------------------------

def import_hook(hook):
    """Register `hook(meta) -> meta`, called on the meta of every persistent object
    before it is reconstructed. Hooks may rewrite `meta.module_src`, `meta.class_name`
    or `meta.state`, e.g. to patch pickles written by older code. `meta` is an
    EasyDict with the fields `type`, `version`, `module_src`, `class_name`, `state`.
    """
    assert callable(hook)
    _import_hooks.append(hook)

#----------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta):
    """Rebuild a persistent object from its pickled meta. Called by unpickling."""
    meta = dnnlib.EasyDict(meta)
    if isinstance(meta.state, dict):
        meta.state = dnnlib.EasyDict(meta.state)  # hooks may then edit it by attribute
    for hook in _import_hooks:
        meta = hook(meta)
        if meta is None:
            raise AssertionError(f'persistence import hook {hook!r} returned None instead of meta')

    if meta.version != _version:
        raise dnnlib.util.UserError(f'unsupported persistent pickle format version {meta.version!r} '
                                    f'(this code reads version {_version})')
    if meta.type != 'class':
        raise dnnlib.util.UserError(f'unsupported persistent object type {meta.type!r} (expected \'class\')')

    module = _src_to_module(meta.module_src)
    if meta.class_name not in module.__dict__:
        raise dnnlib.util.UserError(f'pickled module source does not define class {meta.class_name!r}')
    decorator_class = persistent_class(module.__dict__[meta.class_name])
    obj = decorator_class.__new__(decorator_class)
    setstate = getattr(obj, '__setstate__', None)
    if callable(setstate):
        setstate(meta.state)  # nn.Module and friends restore themselves
    else:
        obj.__dict__.update(meta.state)
    return obj

#----------------------------------------------------------------------------

def _module_to_src(module):
    """Source string of a module, cached so that one module always yields one string."""
    src = _module_to_src_dict.get(module, None)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module  # so loading a pickle of a live module reuses its classes
    return src

def _src_to_module(src):
    """Module object for a source string; each distinct source is executed only once."""
    module = _src_to_module_dict.get(src, None)
    if module is None:
        module_name = '_imported_module_' + hashlib.sha256(src.encode('utf-8')).hexdigest()
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        # Register before exec: the decorators inside the source ask for the module's source.
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        exec(src, module.__dict__)  # pylint: disable=exec-used
    return module

#----------------------------------------------------------------------------

def _check_pickleable(obj):
    """Raise if `obj` cannot be pickled. Leaves known to pickle (tensors, arrays,
    primitives, persistent objects) are skipped so the check stays cheap."""
    def strip(obj):
        if isinstance(obj, (list, tuple, set)):
            return [strip(x) for x in obj]
        if isinstance(obj, dict):
            return [[strip(k), strip(v)] for k, v in obj.items()]
        if obj is None or isinstance(obj, (str, int, float, bool, bytes, bytearray)):
            return None
        if f'{type(obj).__module__}.{type(obj).__name__}' in ('numpy.ndarray', 'torch.Tensor', 'torch.nn.parameter.Parameter'):
            return None
        if is_persistent(obj):
            return None  # its own constructor already ran this check
        return obj
    with io.BytesIO() as f:
        pickle.dump(strip(obj), f)

#----------------------------------------------------------------------------
