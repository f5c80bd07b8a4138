"""Test with BasicSR's pipeline and our components: ``python basicsr_ext/test.py -opt options/test_X.yml``.

Same flags as ``basicsr/test.py``; ``results/`` goes under the current working directory.

All results or none: the pipeline writes into a hidden staging folder next to ``results/``
(``.results-staging-*``); only when every test set has been evaluated is ``results/<name>`` put in place (an
earlier ``results/<name>`` is then moved aside to ``<name>_archived_<time>``, as BasicSR does at the start). A run
that fails (a corrupt image, a bad checkpoint) or is interrupted leaves ``results/`` as it was. Distributed runs
(``--launcher``) write in place, as BasicSR does.
"""
import os
import os.path as osp
import shutil
import sys
import tempfile

if __package__ in (None, ''):  # run as a script: import the package from the repository root, not this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import basicsr_ext  # noqa: E402,F401


def _distributed(argv) -> bool:
    if int(os.environ.get('WORLD_SIZE', '1') or 1) > 1:
        return True
    for i, arg in enumerate(argv):
        value = arg.split('=', 1)[1] if arg.startswith('--launcher=') else \
            argv[i + 1] if arg == '--launcher' and i + 1 < len(argv) else None
        if value not in (None, 'none'):
            return True
    return False


def _close_log_files(folder: str) -> None:
    """Close the handlers of BasicSR's logger writing under ``folder`` (the log is complete; the folder moves)."""
    import logging
    logger = logging.getLogger('basicsr')
    root = osp.abspath(folder) + os.sep
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and osp.abspath(handler.baseFilename).startswith(root):
            handler.close()
            logger.removeHandler(handler)


def run_all_or_none(pipeline, root: str) -> list[str]:
    """Run ``pipeline(staging_root)`` and move what it wrote under ``results/`` to ``<root>/results/``; on any
    exception remove the staging folder and re-raise. Returns the final result folders."""
    from basicsr.utils import get_time_str
    staging = tempfile.mkdtemp(prefix='.results-staging-', dir=root)
    try:
        pipeline(staging)
    except BaseException:
        _close_log_files(staging)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _close_log_files(staging)
    made = osp.join(staging, 'results')
    final_dirs = []
    for name in sorted(os.listdir(made)) if osp.isdir(made) else []:
        final = osp.join(root, 'results', name)
        os.makedirs(osp.dirname(final), exist_ok=True)
        if osp.exists(final):
            archived = f'{final}_archived_{get_time_str()}'
            print(f'Path already exists. Rename it to {archived}', flush=True)
            os.rename(final, archived)
        os.rename(osp.join(made, name), final)
        final_dirs.append(final)
    shutil.rmtree(staging, ignore_errors=True)
    return final_dirs


def main() -> None:
    from basicsr.test import test_pipeline

    try:
        if _distributed(sys.argv[1:]):
            test_pipeline(os.getcwd())
        else:
            for folder in run_all_or_none(test_pipeline, os.getcwd()):
                print(f'results: {folder}', flush=True)
    except basicsr_ext.USER_ERRORS as e:  # bad options, checkpoints, data or a NaN: a message, not a traceback
        sys.exit(f'error: {type(e).__name__}: {e}')


if __name__ == '__main__':
    main()
