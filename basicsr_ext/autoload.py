"""Autoload: the first ``import basicsr`` of any Python process also imports basicsr_ext.

So BasicSR's own entry points (``python -m basicsr.train -opt …``, ``python -m basicsr.test``, a BasicSR clone's
``python basicsr/train.py``) and any BasicSR-based codebase (a fork whose ``train.py`` calls
``basicsr.train.train_pipeline``) get our patches (``basicsr_ext.patches``) and find our archs, models, losses,
datasets and metrics in BasicSR's registries.

How: one small ``basicsr_ext_autoload.pth`` in the environment's site-packages. Its single line runs at every
interpreter start and only checks ``BASICSR_EXT_AUTOLOAD`` and puts a lazy finder at the front of
``sys.meta_path`` (:func:`_hook`, no import of torch, BasicSR or us). When ``basicsr`` is first imported the
finder takes itself off ``sys.meta_path`` and hands the import to a loader that imports ``basicsr_ext``, which
applies the torchvision fixes, then imports ``basicsr`` (the normal way), applies the other patches and registers
our components; the ``basicsr`` module that import produced is what the original ``import basicsr`` returns.
Works when the first import is ``import basicsr.train``, and with ``python -m basicsr.train`` (runpy imports the
package ``basicsr`` first). When ``basicsr_ext`` is the first import (``python basicsr_ext/train.py``) the finder
steps aside: the package does the same work itself. A stale hook (basicsr_ext uninstalled) steps aside too.

- ``BASICSR_EXT_AUTOLOAD=0`` (or ``false``/``no``/``off``) turns it off for a process: stock BasicSR.
- ``python -m basicsr_ext.autoload install`` writes the ``.pth`` into ``sysconfig.get_paths()['purelib']`` of the
  running interpreter (idempotent); ``uninstall`` removes it; ``status`` says where it is and whether it is active.
  An editable install (``pip install -e .``) installs no ``.pth`` of a package, hence this explicit step (in the
  Makefile and the README); a wheel (``pip install .``) ships the same file (``setup.py``'s ``build_py``).
"""
from __future__ import annotations

import inspect
import os
import sys
import sysconfig

PTH_NAME = 'basicsr_ext_autoload.pth'
ENV = 'BASICSR_EXT_AUTOLOAD'
OFF_VALUES = ('0', 'false', 'no', 'off')


def _hook() -> None:
    """The code the ``.pth`` line runs at interpreter start (self-contained: it is copied into the line)."""
    import os
    import sys

    if os.environ.get('BASICSR_EXT_AUTOLOAD', '1').strip().lower() in ('0', 'false', 'no', 'off'):
        return
    if any(getattr(f, 'basicsr_ext_autoload', False) for f in sys.meta_path):
        return

    class BasicsrExtLoader:
        """Loads ``basicsr`` by importing basicsr_ext (torchvision fixes, basicsr, patches, registration)."""

        def create_module(self, spec):
            return None  # a placeholder module: replaced by the real basicsr in exec_module

        def exec_module(self, module):
            sys.modules.pop('basicsr', None)  # drop the placeholder: basicsr_ext imports the real basicsr
            import basicsr_ext  # noqa: F401
            if 'basicsr' not in sys.modules:  # basicsr_ext always imports it; be explicit for the caller
                import basicsr  # noqa: F401

    class BasicsrExtAutoload:
        """A one-shot ``sys.meta_path`` finder: the first ``import basicsr`` imports basicsr_ext too."""

        basicsr_ext_autoload = True

        def find_spec(self, name, path=None, target=None):
            if name != 'basicsr' or self not in sys.meta_path:
                return None
            sys.meta_path.remove(self)  # one shot; also keeps the imports below from coming back here
            if 'basicsr_ext' in sys.modules:
                return None  # basicsr_ext is importing basicsr itself: let the normal import run
            from importlib.machinery import ModuleSpec
            from importlib.util import find_spec
            if find_spec('basicsr') is None or find_spec('basicsr_ext') is None:
                return None  # nothing to add to, or a stale hook (basicsr_ext uninstalled)
            return ModuleSpec('basicsr', BasicsrExtLoader())

    sys.meta_path.insert(0, BasicsrExtAutoload())


def pth_line() -> str:
    """The one line of ``basicsr_ext_autoload.pth`` (``import`` lines of a .pth are executed by ``site``)."""
    source = inspect.getsource(_hook) + '\n_hook()\n'
    return (f"import os, sys; os.environ.get({ENV!r}, '1').strip().lower() in {OFF_VALUES!r} or "
            f"exec({source!r}, {{'__name__': 'basicsr_ext_autoload'}})\n")


def site_dir() -> str:
    """The active environment's purelib folder (site-packages of a venv), where the .pth goes."""
    return sysconfig.get_paths()['purelib']


def pth_path(target: str | None = None) -> str:
    return os.path.join(target or site_dir(), PTH_NAME)


def install(target: str | None = None) -> tuple[str, bool]:
    """Write the .pth (atomically) unless it is already there with this content; ``(path, changed)``."""
    path = pth_path(target)
    text = pth_line()
    try:
        with open(path, encoding='utf-8') as f:
            if f.read() == text:
                return path, False
    except FileNotFoundError:
        pass
    # imported here, not at the top: setup.py loads this file alone (no torch/basicsr at build time)
    from basicsr_ext.utils.atomic import write_text_atomic
    write_text_atomic(path, text)
    return path, True


def uninstall(target: str | None = None) -> tuple[str, bool]:
    """Remove the .pth if present; ``(path, removed)``."""
    path = pth_path(target)
    try:
        os.remove(path)
    except FileNotFoundError:
        return path, False
    return path, True


def is_installed(target: str | None = None) -> bool:
    """The .pth is in place with the current content."""
    try:
        with open(pth_path(target), encoding='utf-8') as f:
            return f.read() == pth_line()
    except FileNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog='python -m basicsr_ext.autoload',
                                     description='install / remove the hook that imports basicsr_ext with basicsr')
    parser.add_argument('action', choices=['install', 'uninstall', 'status'], nargs='?', default='status')
    parser.add_argument('--target', default=None, help='folder for the .pth (default: this environment\'s purelib)')
    args = parser.parse_args(argv)
    if args.action == 'install':
        path, changed = install(args.target)
        print(f'{"installed" if changed else "already installed"}: {path}')
    elif args.action == 'uninstall':
        path, removed = uninstall(args.target)
        print(f'{"removed" if removed else "not installed"}: {path}')
    else:
        path = pth_path(args.target)
        state = 'installed' if is_installed(args.target) else 'outdated' if os.path.exists(path) else 'not installed'
        off = os.environ.get(ENV, '1').strip().lower() in OFF_VALUES
        print(f'{state}: {path}' + (f' ({ENV} turns it off in this shell)' if off else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
