"""Test with BasicSR's pipeline and our components: ``python basicsr_ext/test.py -opt options/test_X.yml``.

Same flags as ``basicsr/test.py``; ``results/`` goes under the current working directory.
"""
import os
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a script: import the package from the repository root, not this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import basicsr_ext  # noqa: E402,F401


def main() -> None:
    from basicsr.test import test_pipeline

    try:
        test_pipeline(os.getcwd())
    except basicsr_ext.USER_ERRORS as e:  # bad options, checkpoints, data or a NaN: a message, not a traceback
        sys.exit(f'error: {type(e).__name__}: {e}')


if __name__ == '__main__':
    main()
