"""One replica at a time per goal: several daemons may share one store; and each run's work folder.

A goal holds its lock while it runs; the store's dialect takes it (on PostgreSQL a
session-level advisory lock, released with its connection even if the process dies; on
SQLite, whose store is one local file, an exclusive `flock` on a file in state/locks, which
does the same for daemons on one machine). A goal whose lock is held elsewhere is skipped
this run.

A run's work folder (`state/tmp/<run>`, downloads and decrypted plaintext) is `flock`ed
while the run lives. A process killed outright (SIGKILL, OOM, power loss) cannot remove
its folder, so each run removes the folders no live run holds: plaintext does not linger
and the disk does not fill.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from sftp_connector.private import private_dir
from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)

_CLAIMING = ".claiming-"
CLAIM_GRACE_S = 60.0
"""A folder still being claimed (created, not yet locked) is left alone this long."""


@contextlib.contextmanager
def goal_lock(store: Store, state_dir: Path, goal: str) -> Iterator[bool]:
    """Given a goal, hold its lock for the block; yield False (holding nothing) if another replica has it.
    Raise StoreError if the store cannot take it."""
    with store.dialect.goal_lock(store.engine, goal, state_dir / "locks") as held:
        yield held


def held(store: Store, state_dir: Path, goal: str) -> bool:
    """Given a goal, return whether a run (here or elsewhere) holds its lock now; the lock is not taken."""
    return store.dialect.goal_lock_held(store.engine, goal, state_dir / "locks")


def claim_work_dir(root: Path, run: str) -> tuple[Path, int]:
    """Given state/tmp and a run id, create the run's work folder (0700) and lock it; return it and the
    lock's file descriptor, which the caller closes when the run ends. Folders of dead runs are removed first.
    """
    sweep_work_dirs(root)
    private_dir(root, own=True)  # 0.3 made state/ and state/tmp with the umask's mode
    staging = root / f"{_CLAIMING}{run}"
    staging.mkdir(mode=0o700)
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    path = root / run
    os.rename(staging, path)  # seen under its run name only once locked: a sweep never takes a live folder
    return path, fd


def sweep_work_dirs(root: Path) -> list[Path]:
    """Given state/tmp, remove the work folders that no live run holds locked; return them.

    Contract: never raises for a folder that vanishes or cannot be removed; idempotent.
    """
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        if entry.name.startswith(_CLAIMING) and _age(entry) < CLAIM_GRACE_S:
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue  # gone meanwhile, or not a folder
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live run holds it
        else:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
            logger.info("removed %s, left by a run that was killed", entry)
        finally:
            os.close(fd)
    return removed


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
