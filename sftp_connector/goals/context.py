"""What every goal of one run shares: configuration, store, one SFTP session, the keyring."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sftp_connector import pgp, sftp
from sftp_connector.config import models
from sftp_connector.config.load import Config
from sftp_connector.errors import GoalError, HostKeyError, StoreError
from sftp_connector.goals import locks
from sftp_connector.private import private_dir
from sftp_connector.results import GoalResult
from sftp_connector.store import queries
from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)


Progress = Callable[[str, int, int, str], None]
"""Told (what, done, total, unit) during long work: unit "bytes" (a download) or "rows" (merged, exported);
total is an estimate while it is not known (rows of a file still being read), 0 if there is none."""


@dataclass(slots=True)
class RunContext:
    """One run's shared state. The SFTP session and keyring are opened on first use."""

    config: Config
    store: Store
    run: str
    dry_run: bool = False
    force: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    """Told how long work goes; the CLI draws progress bars with it on a terminal."""
    stop_agent: bool = True
    """Stop the home's gpg-agent on close. The console's reads keep it: a run of the daemon beside them may be
    decrypting through it, and one agent per home is all that stays."""
    _session: sftp.Session | None = None
    _session_error: GoalError | None = None
    _keyring: pgp.Keyring | None = None
    _work_dir: Path | None = None
    _work_lock: int | None = None

    @property
    def work_dir(self) -> Path:
        """The run's private temp folder (state/tmp/<run>, 0700), locked while the run lives."""
        if self._work_dir is None:
            private_dir(self.config.state_dir)  # decrypted files pass through it
            self._work_dir, self._work_lock = locks.claim_work_dir(self.config.state_dir / "tmp", self.run)
        return self._work_dir

    @property
    def indexed(self) -> frozenset[str]:
        """Every identifier property of every goal: the properties the identity indexes hold (a group's
        identifier is its property `@<type>`)."""
        return frozenset(i.property for g in self.config.goals if isinstance(g, models.ImportProfiles)
                         for i in g.identifiers) | frozenset(
            models.group_identity_property(g.group_type) for g in self.config.goals
            if isinstance(g, models.ImportGroups))

    def finish_goal(self, result: GoalResult) -> GoalResult:
        """Record the goal's count of unique profiles exchanged and its finish time; return it.

        A store that has gone away leaves the count as it was: the goal's own outcome (a file that failed
        with the store error) is what the run reports.
        """
        try:
            with self.store.connection() as conn:
                result.unique_profiles_exchanged = queries.goal_profile_count(conn, result.goal)
        except StoreError as exc:
            logger.warning("goal %s: cannot count its profiles: %s", result.goal, exc)
        result.finished_at = time.time()
        return result

    def session(self) -> sftp.Session:
        """Return the run's SFTP session, connecting on first use. Raise TransportError if that fails.

        A refused host key or login is remembered, so later goals fail fast instead of retrying.
        """
        if self._session_error is not None:
            raise self._session_error
        if self._session is None:
            try:
                self._session = sftp.connect(self.config.connector.sftp)
            except HostKeyError as exc:
                self._session_error = exc
                raise
        return self._session

    def keyring(self) -> pgp.Keyring:
        """Return the connector's keyring, opening it (and importing configured keys) on first use."""
        if self._keyring is None:
            self._keyring = pgp.open_keyring(self.config.connector.pgp, self.config.gnupg_home)
        return self._keyring

    def drop_session(self) -> None:
        """Forget a broken session so the next goal reconnects."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def close(self) -> None:
        """Close the SFTP session, stop the run's gpg-agent and delete the run's temp files (and those of runs
        that were killed)."""
        self.drop_session()
        if self._keyring is not None and self.stop_agent:
            pgp.stop_agent(self._keyring)  # a long-running daemon must not collect agents
        shutil.rmtree(self.config.state_dir / "tmp" / self.run, ignore_errors=True)
        if self._work_lock is not None:
            os.close(self._work_lock)
            self._work_dir = self._work_lock = None
        locks.sweep_work_dirs(self.config.state_dir / "tmp")


def sha256_of(path: Path) -> str:
    """Given a local file, return its SHA-256 (hex), read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
