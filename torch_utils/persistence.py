"""Pickles that bring the source code of their classes with them.

Instances of a class decorated with `@persistent_class` pickle together with the complete source text of
the module that defines the class. Loading such a pickle executes that text as a fresh module and takes the
class from there, so snapshots keep working after the code has changed or without the repository at all.

Wire format (shared with StyleGAN2-ADA pickles, which is why official snapshots load here): the pickled
callable is `torch_utils.persistence._reconstruct_persistent_obj` and its only argument is a dict
`meta = {type: 'class', version: 6, module_src: str, class_name: str, state: <the instance state>}`. The
state of each instance includes `_init_args` and `_init_kwargs`, its constructor arguments.

Constraints that follow from the design:
- the class has to live at module top level, because loading looks it up by name in the executed source;
- whatever the instance holds must pickle, which is checked when the object is built, not when it is saved;
- `obj.init_args` / `obj.init_kwargs` return copies of the constructor arguments, so an equivalent object
  can be built from current code (resuming, converting).
Unpickling runs code: open pickles only from sources you trust.
"""

import copy
import hashlib
import inspect
import io
import pickle
import sys
import types

import dnnlib

# ----------------------------------------------------------------------------

_FORMAT_VERSION = 6
_persistent_classes = set()  # every class returned by persistent_class()
_import_hooks = []           # callables meta -> meta, run before an object is rebuilt
_source_by_module = {}       # module -> its source text
_module_by_source = {}       # source text -> module (each text is executed at most once)

# ----------------------------------------------------------------------------


def persistent_class(orig_class):
    """Class decorator making instances pickle with the defining module's source embedded.

    Use it on top-level network, loss or augmentation classes (see networks/stylegan2.py). Only the decorated class travels with the pickle; classes its instances hold must be decorated as
    well or be importable wherever the pickle is loaded.
    """
    if not isinstance(orig_class, type):
        raise TypeError('persistent_class decorates classes only')
    if orig_class in _persistent_classes:
        return orig_class  # decorating twice changes nothing
    home = sys.modules.get(orig_class.__module__)
    if home is None:
        raise AssertionError(f'module {orig_class.__module__} of {orig_class.__name__} is not imported')
    wrapped = _with_embedded_source(orig_class, home, _module_to_src(home))
    _persistent_classes.add(wrapped)
    return wrapped


def _with_embedded_source(base, home, source):
    """Subclass of `base` that records its constructor arguments and pickles in the persistent format."""

    class Persistent(base):
        _orig_module_src = source
        _orig_class_name = base.__name__

        def __init__(self, *args, **kwargs):
            base.__init__(self, *args, **kwargs)
            self._init_args, self._init_kwargs = copy.deepcopy((args, kwargs))
            if self._orig_class_name not in vars(home):
                raise AssertionError(f'persistent class {self._orig_class_name} must be defined at the top level '
                                     f'of module {home.__name__}')
            reduced = self.__reduce__()
            _check_pickleable(reduced)

        @property
        def init_args(self):
            return tuple(copy.deepcopy(self._init_args))

        @property
        def init_kwargs(self):
            copied = copy.deepcopy(self._init_kwargs)
            return dnnlib.EasyDict(copied)

        def __reduce__(self):
            func, args, *extra = super().__reduce__()
            state, rest = (extra[0], extra[1:]) if extra else (None, [])
            if func is _reconstruct_persistent_obj:
                return (func, args, state, *rest)
            meta = dict(type='class', version=_FORMAT_VERSION, module_src=self._orig_module_src,
                        class_name=self._orig_class_name, state=state)
            return (_reconstruct_persistent_obj, (meta,), None, *rest)

    for attr in ('__name__', '__qualname__', '__module__', '__doc__'):
        setattr(Persistent, attr, getattr(base, attr))  # reprs and tracebacks show the original class
    return Persistent

# ----------------------------------------------------------------------------


def is_persistent(obj):
    """Whether `obj` is a persistent class or an instance of one."""
    try:
        is_class = obj in _persistent_classes
    except TypeError:  # unhashable objects cannot be classes
        is_class = False
    return is_class or type(obj) in _persistent_classes


def import_hook(hook):
    """Register `hook(meta) -> meta`, applied to every persistent object's meta before it is rebuilt.

    `meta` is an EasyDict (type, version, module_src, class_name, state; state is an EasyDict too when it
    is a dict), so a hook can patch the source, the class name or the state of old pickles.
    """
    if not callable(hook):
        raise TypeError('an import hook must be callable')
    _import_hooks.append(hook)

# ----------------------------------------------------------------------------


def _reconstruct_persistent_obj(meta):
    """Unpickling entry point named inside every persistent pickle: rebuild the object described by `meta`."""
    meta = dnnlib.EasyDict(**meta)
    if isinstance(meta.state, dict):
        meta.state = dnnlib.EasyDict(**meta.state)  # hooks may then edit it by attribute
    for hook in list(_import_hooks):
        patched = hook(meta)
        if patched is None:
            raise AssertionError(f'persistence import hook {hook!r} returned None instead of meta')
        meta = patched

    if meta.version != _FORMAT_VERSION:
        raise dnnlib.util.UserError(f'unsupported persistent pickle format version {meta.version!r} '
                                    f'(this code reads version {_FORMAT_VERSION})')
    if meta.type != 'class':
        raise dnnlib.util.UserError(f"unsupported persistent object type {meta.type!r} (expected 'class')")
    namespace = vars(_src_to_module(meta.module_src))
    if meta.class_name not in namespace:
        raise dnnlib.util.UserError(f'pickled module source does not define class {meta.class_name!r}')

    cls = persistent_class(namespace[meta.class_name])
    instance = cls.__new__(cls)
    restore = getattr(instance, '__setstate__', None)
    if callable(restore):
        restore(meta.state)  # nn.Module and similar classes restore their own state
    else:
        vars(instance).update(meta.state)
    return instance

# ----------------------------------------------------------------------------


def _module_to_src(module):
    """Source text of `module`, read once so that one module always maps to one exact string."""
    if module not in _source_by_module:
        text = inspect.getsource(module)
        _source_by_module[module] = text
        _module_by_source[text] = module  # pickles of live code reuse the live classes (latest import wins)
    return _source_by_module[module]


def _src_to_module(src):
    """The module made from source text `src`, executing the text the first time it is seen."""
    if src in _module_by_source:
        return _module_by_source[src]
    name = '_imported_module_' + hashlib.sha256(src.encode('utf-8')).hexdigest()
    fresh = types.ModuleType(name)
    # Register before executing: the decorators in the text ask for this module's source.
    sys.modules[name] = fresh
    _source_by_module[fresh] = src
    _module_by_source[src] = fresh
    exec(compile(src, name, 'exec'), vars(fresh))  # pylint: disable=exec-used
    return fresh

# ----------------------------------------------------------------------------

_KNOWN_PICKLEABLE = {'numpy.ndarray', 'torch.Tensor'}  # and their subclasses (Parameter, fake/meta tensors)


def _known_pickleable(value):
    return any(f'{cls.__module__}.{cls.__qualname__}' in _KNOWN_PICKLEABLE for cls in type(value).__mro__)


def _check_pickleable(obj):
    """Raise the pickling error now if `obj` could not be pickled later.

    Values certain to pickle (primitives, arrays, tensors, persistent objects) are replaced by None
    before the trial dump, which keeps the check cheap for large networks.
    """
    def prune(value):
        if isinstance(value, dict):
            return [(prune(k), prune(v)) for k, v in value.items()]
        if isinstance(value, (list, tuple, set)):
            return [prune(item) for item in value]
        if value is None or isinstance(value, (str, bytes, bytearray, bool, int, float)):
            return None
        if _known_pickleable(value) or is_persistent(value):
            return None
        return value
    pickle.dump(prune(obj), io.BytesIO())
