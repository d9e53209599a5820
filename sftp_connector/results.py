"""What a run did, file by file and goal by goal: the values history records and the CLI prints.

A foundation module: it imports nothing of the connector, so history, health, notifications and
the summary read run results without the merge, polars or the store."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Counts:
    """Row counters of one file, as recorded in history."""

    rows_read: int = 0
    rows_applied: int = 0
    rows_unchanged: int = 0
    rows_filtered: int = 0
    rows_rejected: int = 0
    cells_rejected: int = 0
    rows_unmatched: int = 0
    orphans: int = 0
    no_consent: int = 0
    erased: int = 0
    cleared: int = 0


    def add_merged(self, more: Counts) -> None:
        """Given the counts a merge of the file's rows made, add them (not rows_read: the reader counts those)."""
        self.rows_applied += more.rows_applied
        self.rows_unchanged += more.rows_unchanged
        self.rows_filtered += more.rows_filtered
        self.rows_rejected += more.rows_rejected
        self.cells_rejected += more.cells_rejected
        self.rows_unmatched += more.rows_unmatched
        self.orphans += more.orphans
        self.no_consent += more.no_consent
        self.erased += more.erased
        self.cleared += more.cleared


@dataclass(frozen=True, slots=True)
class Touched:
    """The profiles (or groups) a file's merge created and updated, and the ids of the last five it touched."""

    created: int
    updated: int
    last: list[int]


_COUNTS = [f.name for f in fields(Counts)]

FileStatus = Literal["imported", "skipped_unchanged", "skipped_unstable", "failed", "exported", "dry_run"]
GoalStatus = Literal["success", "failed", "skipped"]
Trigger = Literal["cli", "schedule"]
"""What started a run: by hand (the command line, or the console's "Run now", whose audit log says who) or the
daemon's schedule."""
RunStatus = Literal["success", "failed", "interrupted", "skipped"]
"""skipped: nothing failed and nothing ran, every goal's lock being held by another run."""


@dataclass(slots=True)
class FileResult:
    path: str
    status: FileStatus
    sha256: str | None = None
    counts: Counts = field(default_factory=Counts)
    error: str | None = None
    signer: str | None = None
    rows_exported: int = 0
    warning: str | None = None
    """Its after_import or on_error action failed: the file's own outcome stands, the server still has it."""

    def as_json(self) -> dict[str, Any]:
        """Return the file's entry of `history --json`."""
        counts = {name: getattr(self.counts, name) for name in _COUNTS}
        return {"path": self.path, "status": self.status, "sha256": self.sha256, **counts,
                "rows_exported": self.rows_exported, "signer": self.signer, "error": self.error,
                "warning": self.warning}


@dataclass(slots=True)
class GoalResult:
    goal: str
    kind: str
    status: GoalStatus = "success"
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    profiles_created: int = 0
    profiles_updated: int = 0
    last_profiles: list[str] = field(default_factory=list)
    unique_profiles_exchanged: int = 0
    files: list[FileResult] = field(default_factory=list)

    def fail(self, error: str) -> GoalResult:
        """Mark the goal failed with an error that names goal, file and cause; return self."""
        logger.error("%s", error)
        self.status, self.error = "failed", error
        return self

    def touch(self, touched: Touched) -> None:
        """Given what one file's merge touched, add it to the goal's."""
        self.profiles_created += touched.created
        self.profiles_updated += touched.updated
        last = [str(pid) for pid in touched.last]
        self.last_profiles = [*last, *(p for p in self.last_profiles if p not in last)][:5]

    def as_json(self, *, files: bool = True) -> dict[str, Any]:
        """Return the goal's entry of `history --json` (without `files`: its own fields only)."""
        own = {"goal": self.goal, "kind": self.kind, "status": self.status, "error": self.error,
               "profiles_created": self.profiles_created, "profiles_updated": self.profiles_updated,
               "last_profiles": self.last_profiles, "unique_profiles_exchanged": self.unique_profiles_exchanged}
        return {**own, "files": [f.as_json() for f in self.files]} if files else own


@dataclass(slots=True)
class RunResult:
    run: str
    trigger: Trigger
    started_at: float
    dry_run: bool = False
    finished_at: float | None = None
    status: RunStatus = "success"
    goals: list[GoalResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """Return 0 when every goal succeeded, 3 when every goal was skipped (another run holds their locks),
        1 when any failed or the run was interrupted."""
        return {"success": 0, "skipped": 3}.get(self.status, 1)

    def as_json(self) -> dict[str, Any]:
        """Return the run as `run --json` and `history --json` print it (the one writer of that shape)."""
        return {"run": self.run, "trigger": self.trigger, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "status": self.status, "dry_run": self.dry_run,
                "goals": [g.as_json() for g in self.goals]}


def iso(timestamp: float | None) -> str | None:
    """Given UTC epoch seconds, return ISO 8601 with a Z, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
