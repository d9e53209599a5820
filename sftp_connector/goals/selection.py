"""Which root files an import goal reads this run, each with its linked set and whether all of it is ready.

A set is ready when every file in it has its done marker, or when no file of it changed size
or mtime across two listings `stable_after_s` apart. Each directory is listed once per goal.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sftp_connector import files, sftp
from sftp_connector.config import models
from sftp_connector.errors import InputError
from sftp_connector.goals.context import RunContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A matched root file with its linked files, when it was listed, and whether all are ready to be read."""

    match: files.Match
    listed_at: float
    ready: bool
    linked: tuple[tuple[models.FileEntry, files.Match], ...] = ()
    missing: str | None = None
    """Why the linked set is incomplete, if it is."""


def select(
    ctx: RunContext, goal: models.ImportGoal,
    settled: Callable[[sftp.RemoteFile], bool] = lambda _: False,
) -> list[Candidate]:
    """Given an import goal and which files are as they were imported (`settled`), list its directories and
    return the root files, each with its linked files and its readiness.

    A set is ready when every file in it has its done marker, or when their sizes and mtimes
    stay unchanged for stable_after_s between two listings; a set whose files are all settled is
    ready at once (it is skipped unread), so a run of unchanged files does not wait. Raise
    TransportError if listing fails.
    """
    listed_at = time.time()
    listings: dict[str, list[sftp.RemoteFile]] = {}
    matched = {entry.name: _listed(ctx, goal, entry, listings) for entry in goal.files}
    roots = matched[goal.files[0].name]
    candidates = [_paired(goal, root, matched, listed_at) for root in roots]
    if goal.done_marker:
        return [replace(c, ready=all(_has_marker(goal, m, listings) for m in members(c))) for c in candidates]
    fresh = [c for c in candidates if not all(settled(m.remote) for m in members(c))]
    if not fresh or goal.stable_after_s == 0:
        return candidates
    logger.info("goal %s: waiting %gs for %d new or changed file(s) to be stable", goal.name, goal.stable_after_s,
                len(fresh))
    ctx.stop.wait(goal.stable_after_s)
    second = [r for directory in listings for r in ctx.session().list(directory)]
    steady = files.stable([m.remote for c in fresh for m in members(c)], second)
    return [replace(c, ready=all(m.remote.path in steady for m in members(c))) if c in fresh else c
            for c in candidates]


def _listed(
    ctx: RunContext, goal: models.ImportGoal, entry: models.FileEntry,
    listings: dict[str, list[sftp.RemoteFile]],
) -> list[files.Match]:
    """The files of one entry of the goal, its directory listed once per run of the goal."""
    directory = ctx.session().where(entry.directory, "list")
    if directory not in listings:
        listings[directory] = ctx.session().list(directory)
    listing = listings[directory]
    names = {r.name for r in listing}
    return files.match(entry, [r for r in listing if not files.is_marker(goal.done_marker, r.name, names)])


def _has_marker(
    goal: models.ImportGoal, match: files.Match, listings: dict[str, list[sftp.RemoteFile]]
) -> bool:
    assert goal.done_marker is not None
    marker = posixpath.join(posixpath.dirname(match.remote.path), files.done_marker_name(goal.done_marker,
                                                                                          match.remote.name))
    return any(r.path == marker for listing in listings.values() for r in listing)


def _paired(
    goal: models.ImportGoal, root: files.Match, matched: dict[str, list[files.Match]],
    listed_at: float,
) -> Candidate:
    linked, missing = [], None
    for entry in goal.files[1:]:
        try:
            linked.append((entry, files.pair(entry, matched[entry.name], root)))
        except InputError as exc:
            missing = missing or str(exc)
    return Candidate(root, listed_at, True, tuple(linked), missing)


def members(candidate: Candidate) -> list[files.Match]:
    """The root file and its linked files."""
    return [candidate.match, *(m for _, m in candidate.linked)]
