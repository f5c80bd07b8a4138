"""The one atomic writer: every file we write (checkpoints, training states, images, tables, option files) goes
to a hidden temporary file in the destination folder and is renamed over the destination only when complete, so
a kill leaves the old file or none, never half a file. Standard library only: every module may import it.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Callable

#: the name :func:`atomic_write` gives its temporary file: ``.<destination name>.<8 random characters>.tmp``
#: (``tempfile.mkstemp``'s alphabet); :func:`remove_stale_temps` removes nothing else
_TEMP_NAME = re.compile(r'\..+\.[a-z0-9_]{8}\.tmp')


def atomic_write(path: str, write: Callable[[str], None], fsync: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then rename it to ``path``.

    ``fsync`` flushes the file to disk before the rename (what a crash-safe checkpoint needs); writers that stage
    a whole folder and rename the folder at the end (``basicsr_ext.data.prep``) skip it. The file gets the usual
    permissions (``0o666`` less the umask), not ``mkstemp``'s 0600. On any exception the temporary file is removed.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def is_temp_name(name: str) -> bool:
    """``name`` (a file name, no folder) is one :func:`atomic_write` gives its temporary files."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(folder: str) -> list[str]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` (not its subfolders) when its process was
    killed mid-write; returns their paths. Only plain files named as the writer names them (:func:`is_temp_name`)
    go; folders, links and every other file stay. Call it only while nothing writes into ``folder`` (a run's own
    ``models/`` and ``training_states/`` before it starts)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.remove(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.path)
    return sorted(removed)


def write_bytes_atomic(path: str, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` with :func:`atomic_write`."""

    def _write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(data)

    atomic_write(path, _write, fsync=fsync)


def write_text_atomic(path: str, text: str, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    write_bytes_atomic(path, text.encode('utf-8'), fsync=fsync)
