"""Compile every custom op (C++ CPU and CUDA plugins) into TORCH_EXTENSIONS_DIR, e.g. while building the image.

A GPU is not needed to build the CUDA plugins, only nvcc (CUDA_HOME) and TORCH_CUDA_ARCH_LIST.
Exits non-zero when any plugin fails to build, so a Docker build stops instead of shipping reference ops.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402


def main():
    failed = []
    for op in (bias_act, upfirdn2d):
        for kind in ('cpu', 'cuda'):
            name = f'{op.__name__.rsplit(".", 1)[-1]} ({kind})'
            try:
                plugin = getattr(op, f'_{kind}_plugin')()
            except Exception as err:  # a compiler error of any kind: report it, go on, fail at the end
                plugin, detail = None, f'{type(err).__name__}: {err}'
            else:
                detail = 'no plugin returned'
            print(f'{name}: {"built" if plugin is not None else "FAILED - " + detail}')
            if plugin is None:
                failed.append(name)
    if failed:
        sys.exit(f'custom ops failed to build: {", ".join(failed)}')


if __name__ == '__main__':
    main()
