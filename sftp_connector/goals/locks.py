"""One replica at a time per goal: several daemons may share one store.

On PostgreSQL a goal holds a session-level advisory lock on its own connection while it
runs (released with the connection, even if the process dies). On SQLite, whose store is
one local file, an exclusive `flock` on a lock file beside the state does the same for
daemons on one machine. A goal whose lock is held elsewhere is skipped this run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from sftp_connector.store.db import Store


@contextlib.contextmanager
def goal_lock(store: Store, state_dir: Path, goal: str) -> Iterator[bool]:
    """Given a goal, hold its lock for the block; yield False (holding nothing) if another replica has it."""
    if store.is_sqlite:
        with _file_lock(state_dir / "locks" / f"{_key(goal)}.lock") as held:
            yield held
        return
    with store.engine.connect() as conn:
        key = int.from_bytes(hashlib.sha256(f"sftp-connector goal {goal}".encode()).digest()[:8], "big", signed=True)
        held = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key(goal: str) -> str:
    """A goal name as a safe file name."""
    return hashlib.sha256(goal.encode()).hexdigest()[:16]
