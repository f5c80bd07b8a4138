"""Train with BasicSR's loop and our components: ``python basicsr_ext/train.py -opt options/X.yml``.

Same flags as ``basicsr/train.py`` (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--force_yml``);
``experiments/`` and ``tb_logger/`` go under the current working directory.
"""
import os
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a script: import the package from the repository root, not this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import basicsr_ext  # noqa: E402,F401  (compat first, then registration)


def main() -> None:
    from basicsr.train import train_pipeline

    try:
        train_pipeline(os.getcwd())
    except basicsr_ext.USER_ERRORS as e:  # bad options, checkpoints, data or a NaN: a message, not a traceback
        sys.exit(f'error: {type(e).__name__}: {e}')


if __name__ == '__main__':
    main()
