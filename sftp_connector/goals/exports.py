"""Export goals: profiles of a segment (and their events) → CSV → encrypt → atomic upload → watermark.

The goal hands the store a selection (segment, consent, columns, watermark: no SQL); the
store evaluates it and reads profiles a page at a time into the CSV, so memory stays flat.
Each file is uploaded under a temporary name and renamed; if any upload fails, the files
already placed are removed and the watermark stays where it was, so the next run exports
the same profiles again. `changed_only` exports the profiles updated since the last
successful export began reading.
"""

from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import failpoints, pgp, sftp
from sftp_connector.config import load, models
from sftp_connector.errors import ConfigError, GoalError, TransportError
from sftp_connector.goals import export_files
from sftp_connector.goals.context import RunContext, sha256_of
from sftp_connector.readahead import read_ahead
from sftp_connector.results import FileResult, GoalResult
from sftp_connector.store import export_reads, queries

logger = logging.getLogger(__name__)

MAX_COLUMNS = 1_600
"""The most properties and segment flags one export reads (one query returns them)."""


@dataclass(slots=True)
class Export:
    """The files of one export, the profile ids it holds, and when it began reading."""

    started: float
    files: list[export_files.Written] = field(default_factory=list)
    ids: list[pl.Series] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.files[0].rows if self.files else 0


def run(ctx: RunContext, goal: models.ExportProfiles) -> GoalResult:
    """Given an export goal, export its profiles and return what happened; never raise a GoalError."""
    result = GoalResult(goal.name, goal.kind, started_at=time.time())
    try:
        result.files += _export(ctx, goal)
    except ConfigError as exc:
        result.fail(str(GoalError(str(exc), goal=goal.name)))
    except GoalError as exc:
        result.fail(str(exc.located(goal=goal.name)))
    return ctx.finish_goal(result)


def _export(ctx: RunContext, goal: models.ExportProfiles) -> list[FileResult]:
    refused = load.denied_columns(ctx.config.connector, goal)
    if refused:
        raise GoalError("; ".join(refused))
    name = _filename(ctx, goal)
    # A dry run does not connect: it names the directory as configured.
    directory = sftp.resolve(ctx.config.connector.sftp.home, goal.directory) if ctx.dry_run \
        else ctx.session().where(goal.directory, "upload to")
    with ctx.store.connection() as conn:  # a database failure is a StoreError: the goal fails, retried next run
        done = _write(ctx, conn, goal, name)
    if done.rows == 0 and not goal.export_empty:
        logger.info("goal %s: nothing to export", goal.name)
        return []
    if ctx.dry_run:
        return [_dry_run(goal, directory, done)]
    sealed = [_sealed(ctx, goal, written) for written in done.files]
    digests = [sha256_of(local) for local, _ in sealed]
    placed = _upload(ctx, goal, directory, sealed)
    failpoints.reached("after-upload")
    with ctx.store.transaction() as conn:
        export_reads.save_watermark(conn, goal.name, done.started, placed[0], ctx.run)
        if done.ids:
            queries.remember_goal_profiles(conn, goal.name, pl.concat(done.ids))
    logger.info("goal %s: exported %d profile(s) to %s", goal.name, done.rows, placed[0])
    return [FileResult(path, "exported", digest, rows_exported=written.rows)
            for path, digest, written in zip(placed, digests, done.files, strict=True)]


def _filename(ctx: RunContext, goal: models.ExportProfiles) -> str:
    """The export file's name from its template (before .gpg); never a path."""
    schedule = ctx.config.connector.schedule
    now = datetime.now(ZoneInfo(schedule.timezone) if schedule else UTC)
    name = goal.filename.format(goal=goal.name, now=now, run=ctx.run)
    if "/" in name or name in (".", ".."):
        raise GoalError(f"filename {goal.filename!r} makes {name!r}, which is not a plain file name")
    return name


# ── read and write the CSV files ──────────────────────────────────────────────────────


def selection(ctx: RunContext, goal: models.ExportProfiles, *, watermark: float | None) -> export_reads.Selection:
    """Given an export goal and its watermark (None: export every profile), return what it reads."""
    connector = ctx.config.connector
    consent = None
    if connector.privacy.objectives:
        consent = models.Condition.model_validate(
            {"property": connector.privacy.consent_property, "in": list(connector.privacy.objectives)})
    read = (export_files.property_of(connector, c) for c in goal.columns)
    properties = tuple(dict.fromkeys(prop for prop in read if prop))
    exported = {c.property for c in goal.columns if c.property}
    return export_reads.Selection(
        segments=dict(connector.segments), segment=goal.segment, consent=consent, changed_after=watermark,
        properties=properties, holding=tuple(p for p in properties if p in exported) if exported else None,
        flags=tuple(dict.fromkeys(name for c in goal.columns for name in export_files.segment_names(connector, c))),
    )


def _write(ctx: RunContext, conn: Connection, goal: models.ExportProfiles, name: str) -> Export:
    """Write the profiles file (and the events files) into the run's work folder."""
    done = Export(started=time.time())
    watermark = export_reads.watermark(conn, goal.name) if goal.changed_only else None
    chosen = selection(ctx, goal, watermark=watermark)
    query = export_reads.query(ctx.store, conn, chosen)
    main = export_files.file_name(goal, name)
    if len(chosen.properties) + len(chosen.flags) > MAX_COLUMNS:
        raise GoalError(f"the export reads {len(chosen.properties) + len(chosen.flags)} properties and segment "
                        f"flags, more than the {MAX_COLUMNS:,} one query may return (PostgreSQL: 1,664 columns, "
                        "SQLite: 2,000): nothing was exported; split the columns over several export goals",
                        file=main)
    sink = export_files.Sink(ctx.work_dir / sftp.local_name(main), main, goal)
    properties, flags = list(chosen.properties), list(chosen.flags)
    pages = export_reads.pages(conn, query, export_files.page_schema(properties, flags))
    total = export_reads.count(conn, query) if ctx.progress is not None else 0
    exported = 0
    for page in read_ahead(pages, depth=2, name="export-pages"):
        sink.add(export_files.render(ctx.config.connector, goal, properties, flags, page))
        done.ids.append(page.get_column("id"))
        exported += page.height
        if ctx.progress is not None:
            ctx.progress(f"{main} rows exported", exported, max(total, exported), "rows")
    written = sink.close()
    done.files.append(written)
    if goal.events is not None and (written.rows or goal.export_empty):
        done.files += _write_events(ctx, conn, goal, name, query)
    return done


def _write_events(
    ctx: RunContext, conn: Connection, goal: models.ExportProfiles, name: str, query: export_reads.Query,
) -> list[export_files.Written]:
    """The events files of the exported profiles: one per event type, and one per nested list."""
    assert goal.events is not None
    spec = goal.events
    types = export_reads.event_types(conn) if spec.types == "all" else list(spec.types)
    files = []
    for kind in types:
        rows = export_reads.events_of(conn, query, kind, since=spec.since, since_days=spec.since_days)
        files += export_files.event_files(ctx.work_dir, goal, name, kind, rows)
    return files


# ── encrypt, upload, report ───────────────────────────────────────────────────────────


def _dry_run(goal: models.ExportProfiles, directory: str, done: Export) -> FileResult:
    for written in done.files:
        logger.info("goal %s (dry run): would export %d row(s) to %s", goal.name, written.rows,
                    posixpath.join(directory, written.name))
        if written.head is not None and written.head.height:
            with pl.Config(tbl_rows=export_files.SHOWN_ROWS, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=40):
                logger.info("goal %s (dry run): first rows of %s:\n%s", goal.name, written.name, written.head)
    return FileResult(posixpath.join(directory, done.files[0].name), "dry_run", rows_exported=done.rows)


def _sealed(ctx: RunContext, goal: models.ExportProfiles, written: export_files.Written) -> tuple[Path, str]:
    """The file to upload and its remote name: encrypted (and signed) to the configured recipients
    when encryption is on."""
    settings = ctx.config.connector.pgp
    encrypt = goal.encrypt if goal.encrypt is not None else settings.enabled and bool(settings.encrypt.recipients)
    if not encrypt:
        return written.path, written.name
    if not settings.enabled or not settings.encrypt.recipients:
        raise GoalError("encrypt is true but pgp is disabled or pgp.encrypt.recipients is empty")
    suffix = ".asc" if settings.encrypt.armor else ".gpg"
    target = written.path.with_name(written.path.name + suffix)
    passphrase = settings.decrypt.passphrase.get_secret_value() if settings.decrypt.passphrase else None
    pgp.encrypt(ctx.keyring(), written.path, target, recipients=settings.encrypt.recipients,
                sign=settings.encrypt.sign, armor=settings.encrypt.armor, passphrase=passphrase)
    written.path.unlink(missing_ok=True)
    return target, written.name + suffix


def _upload(ctx: RunContext, goal: models.ExportProfiles, directory: str, files: list[tuple[Path, str]]) -> list[str]:
    """Upload each file atomically; on any failure remove the ones placed and raise. Return the remote paths."""
    session = ctx.session()
    placed: list[str] = []
    try:
        for local, name in files:
            remote = posixpath.join(directory, name)
            if goal.if_exists == "fail" and session.stat(remote) is not None:
                raise GoalError(f"{remote} already exists on the server (set if_exists: overwrite to replace it)",
                                file=remote)
            session.upload_atomic(local, remote)
            placed.append(remote)
    except GoalError:
        _take_back(ctx, placed)
        raise
    finally:
        for local, _ in files:
            local.unlink(missing_ok=True)
    return placed


def _take_back(ctx: RunContext, placed: list[str]) -> None:
    for path in placed:
        try:
            ctx.session().remove(path)
        except TransportError as exc:
            logger.warning("could not remove %s after the failed export: %s", path, exc)

