"""Folders and files only this user can read: what the connector creates holds customer data or locks.

`Path.mkdir(mode=0o700, parents=True)` gives the mode to the last folder only (the parents get the
umask's), and a file opened with `open(..., "a")` is 0644 under the usual umask; these helpers give
every level they create, and every file, this user's access alone. Folders that already exist are left
as the operator made them, unless the caller says the folder is the connector's own (state/tmp, say,
made 0755 by an earlier release).
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, own: bool = False) -> Path:
    """Given a folder, create it and any missing parent 0700 (whatever the umask); return it. With `own`,
    an existing folder is made 0700 too."""
    missing = []
    for level in (path, *path.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(level, FOLDER_MODE)  # mkdir's mode passes through the umask
    if own and not missing:
        os.chmod(path, FOLDER_MODE)
    return path


def private_file(path: Path) -> Path:
    """Given a file path, create the file 0600 (and its folder 0700) if it is missing; return it. An existing
    file is not opened (it may be read-only)."""
    if not path.exists():
        private_dir(path.parent)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    return path
