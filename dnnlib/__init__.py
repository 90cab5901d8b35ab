"""Small shared utilities: EasyDict, URL/cache handling, construct-by-name, logging."""

from .util import EasyDict, make_cache_dir_path

__all__ = ["EasyDict", "make_cache_dir_path", "util"]
