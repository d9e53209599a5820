"""Export goals: profiles of a segment (and their events) → CSV → encrypt → atomic upload → watermark.

The segment is evaluated in SQL and profiles are read a page at a time into the CSV, so
memory stays flat. Each file is uploaded under a temporary name and renamed; if any upload
fails, the files already placed are removed and the watermark stays where it was, so the
next run exports the same profiles again. `changed_only` exports the profiles updated since
the last successful export began reading.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson
import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import failpoints, pgp, rules, segments, sftp
from sftp_connector.config import models
from sftp_connector.errors import ConfigError, GoalError, TransportError
from sftp_connector.goals.context import RunContext
from sftp_connector.goals.results import FileResult, GoalResult
from sftp_connector.store import exports as store_exports
from sftp_connector.store import queries

logger = logging.getLogger(__name__)

SHOWN_ROWS = 5  # rows a dry run prints


@dataclass(slots=True)
class Plan:
    """What to read: the WHERE expression over `profile p` and its parameters, the columns to pick."""

    where: str
    segment: str
    """The segment and consent tests alone (what events of exported profiles are chosen by)."""
    params: dict[str, Any]
    picks: list[str]
    """Select expressions after p.id: property columns, then one 0/1 flag per segment column."""
    properties: list[str]
    flags: list[str]
    """The segment names the flags stand for, in pick order."""


@dataclass(slots=True)
class Written:
    """A local file ready to upload, with what it holds."""

    name: str
    path: Path
    rows: int
    head: pl.DataFrame | None = None


@dataclass(slots=True)
class Export:
    """The files of one export, the profile ids it holds, and when it began reading."""

    started: float
    files: list[Written] = field(default_factory=list)
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
        _fail(result, GoalError(str(exc), goal=goal.name))
    except GoalError as exc:
        _fail(result, exc.located(goal=goal.name))
    with ctx.store.engine.connect() as conn:
        result.unique_profiles_exchanged = queries.goal_profile_count(conn, goal.name)
    result.finished_at = time.time()
    return result


def _fail(result: GoalResult, exc: GoalError) -> None:
    logger.error("%s", exc)
    result.status, result.error = "failed", str(exc)


def _export(ctx: RunContext, goal: models.ExportProfiles) -> list[FileResult]:
    name = _filename(ctx, goal)
    directory = sftp.resolve(ctx.config.connector.sftp.home, goal.directory)
    with ctx.store.engine.connect() as conn:
        done = _write(ctx, conn, goal, name)
    if done.rows == 0 and not goal.export_empty:
        logger.info("goal %s: nothing to export", goal.name)
        return []
    if ctx.dry_run:
        return [_dry_run(goal, directory, done)]
    sealed = [_sealed(ctx, goal, written) for written in done.files]
    digests = [_sha256(local) for local, _ in sealed]
    placed = _upload(ctx, goal, directory, sealed)
    failpoints.reached("after-upload")
    with ctx.store.transaction() as conn:
        store_exports.save_watermark(conn, goal.name, done.started, placed[0], ctx.run)
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


def plan(ctx: RunContext, conn: Connection, goal: models.ExportProfiles, *, watermark: float | None) -> Plan:
    """Given an export goal, return the query that reads its profiles. Raise ConfigError for an unknown segment."""
    connector = ctx.config.connector
    columns = queries.all_property_columns(conn)
    sql = segments.Sql(sqlite=ctx.store.is_sqlite, columns=columns, segments=dict(connector.segments))
    tests = [sql.segment(goal.segment)] if goal.segment else []
    if connector.privacy.objectives:
        consent = models.Condition.model_validate(
            {"property": connector.privacy.consent_property, "in": list(connector.privacy.objectives)})
        tests.append(segments.condition(sql, consent))
    chosen = " AND ".join(tests) or "(1=1)"
    if watermark is not None:
        tests.append(f"p.updated_at > {sql.param(watermark)}")
    properties = list(dict.fromkeys(_property_of(connector, c) for c in goal.columns if _property_of(connector, c)))
    held = [f"p.{columns[p]} IS NOT NULL" for p in properties if p in columns and _is_exported_property(goal, p)]
    tests.append("(" + " OR ".join(held) + ")" if held else "(1=0)" if _exports_properties(goal) else "(1=1)")
    flags = list(dict.fromkeys(name for c in goal.columns for name in _segment_names(connector, c)))
    picks = [f"p.{columns[p]}" if p in columns else "NULL" for p in properties]
    picks += [f"(CASE WHEN {sql.segment(name)} THEN 1 ELSE 0 END)" for name in flags]
    return Plan(" AND ".join(tests), chosen, sql.params, picks, properties, flags)


def _property_of(connector: models.Connector, column: models.ExportColumn) -> str | None:
    if column.value == "permission_level":
        return connector.privacy.permission_property
    return column.property


def _exports_properties(goal: models.ExportProfiles) -> bool:
    return any(c.property for c in goal.columns)


def _is_exported_property(goal: models.ExportProfiles, prop: str) -> bool:
    return any(c.property == prop for c in goal.columns)


def _segment_names(connector: models.Connector, column: models.ExportColumn) -> list[str]:
    if column.value == "segments":
        return list(connector.segments)
    return list(column.segments or [])


def _write(ctx: RunContext, conn: Connection, goal: models.ExportProfiles, name: str) -> Export:
    """Write the profiles file (and the events files) into the run's work folder."""
    done = Export(started=time.time())
    watermark = store_exports.watermark(conn, goal.name) if goal.changed_only else None
    query = plan(ctx, conn, goal, watermark=watermark)
    local = ctx.work_dir / sftp.local_name(name)
    written = Written(name, local, 0)
    with local.open("wb") as out:
        header = goal.csv.header
        for rows in store_exports.profile_pages(conn, picks=query.picks, where=query.where, params=query.params,
                                                sqlite=ctx.store.is_sqlite):
            page = _render(ctx.config.connector, goal, query, rows)
            done.ids.append(pl.Series("id", [row[0] for row in rows], pl.Int64))
            _append(out, page, goal.csv, header=header)
            header = False
            written.rows += page.height
            if written.head is None:
                written.head = page.head(SHOWN_ROWS)
        if header:  # no rows: the header alone (written only with export_empty)
            _append(out, pl.DataFrame(schema=dict.fromkeys((c.column for c in goal.columns), pl.String)), goal.csv,
                    header=True)
    done.files.append(written)
    if goal.events is not None and (written.rows or goal.export_empty):
        done.files += _write_events(ctx, conn, goal, name, query, watermark)
    return done


def _render(connector: models.Connector, goal: models.ExportProfiles, query: Plan,
            rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """Given a page of (id, property cells…, segment flags…), return the export columns as strings."""
    names = ["id", *(f"v{i}" for i in range(len(query.properties))), *(f"s{i}" for i in range(len(query.flags)))]
    schema = {n: (pl.Int64 if n == "id" or n.startswith("s") else pl.String) for n in names}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    sep = goal.csv.multi_value_separator
    where = {prop: f"v{i}" for i, prop in enumerate(query.properties)}
    flag = {name: f"s{i}" for i, name in enumerate(query.flags)}

    def value(column: models.ExportColumn) -> pl.Expr:
        if column.text is not None:
            return pl.lit(column.text)
        if column.value == "profile_id":
            return pl.col("id").cast(pl.String)
        names = _segment_names(connector, column)
        if column.value == "segments" or column.segments is not None:
            return pl.concat_list(pl.when(pl.col(flag[n]) == 1).then(pl.lit(n)) for n in names).list.drop_nulls() \
                .list.join(sep) if names else pl.lit("")
        prop = _property_of(connector, column)
        return rules.decode(pl.col(where[prop or ""])).list.join(sep)

    return frame.select(value(c).alias(f"c{i}") for i, c in enumerate(goal.columns)).rename(
        {f"c{i}": c.column for i, c in enumerate(goal.columns)})


def _append(out: IO[bytes], frame: pl.DataFrame, options: models.ExportCsv, *, header: bool) -> None:
    if options.escape_formulas:
        frame = frame.with_columns(_defused(pl.col(c)).alias(c) for c, t in frame.schema.items() if t == pl.String)
    frame.write_csv(out, separator=options.delimiter, quote_char=options.quote, include_header=header)


def _defused(value: pl.Expr) -> pl.Expr:
    """A text column with formula-looking values prefixed by `'` (a plain number such as -5 stays as it is)."""
    risky = value.str.contains(r"^[=+\-@\t\r]") & ~value.str.contains(r"^[+-]?[0-9]+(\.[0-9]+)?$")
    return pl.when(risky).then(pl.lit("'") + value).otherwise(value)


def _write_events(
    ctx: RunContext, conn: Connection, goal: models.ExportProfiles, name: str, query: Plan, watermark: float | None,
) -> list[Written]:
    """One CSV per event type (profile_id, id, time, its properties), and one per nested list (parent id, items)."""
    assert goal.events is not None
    spec = goal.events
    types = store_exports.event_types(conn) if spec.types == "all" else list(spec.types)
    stem, ext = (name[:-4], ".csv") if name.lower().endswith(".csv") else (name, "")
    since = spec.since or (segments.Sql(sqlite=True, columns={}, segments={}).cutoff(spec.since_days)
                           if spec.since_days is not None else None)
    files = []
    for kind in types:
        params = dict(query.params)
        mark = (lambda key: f":{key}") if ctx.store.is_sqlite else (lambda key: f"%({key})s")
        params.update({"event_type": kind, "event_since": since or "", "event_after": watermark or 0.0})
        where = f"e.type = {mark('event_type')} AND {query.segment}"
        if watermark is not None:
            where += f" AND e.updated_at > {mark('event_after')}"
        if since:
            where += f" AND e.time >= {mark('event_since')}"
        rows = store_exports.events_of(conn, where=where, params=params)
        files += _event_files(ctx, goal, f"{stem}_{kind}", ext, kind, rows)
    return files


def _event_files(ctx: RunContext, goal: models.ExportProfiles, stem: str, ext: str, kind: str,
                 rows: list[tuple[Any, ...]]) -> list[Written]:
    events, nested = [], {}
    for pid, event_id, at, properties, items in rows:
        events.append({"profile_id": str(pid), "id": event_id, "time": at or "", **orjson.loads(properties)})
        for list_name, entries in orjson.loads(items).items():
            nested.setdefault(list_name, []).extend({f"{kind}_id": event_id, **entry} for entry in entries)
    files = [_table_file(ctx, goal, f"{stem}{ext}", events, ["profile_id", "id", "time"])]
    files += [_table_file(ctx, goal, f"{stem}_{list_name}{ext}", entries, [f"{kind}_id"])
              for list_name, entries in nested.items()]
    return files


def _table_file(ctx: RunContext, goal: models.ExportProfiles, name: str, records: list[dict[str, Any]],
                first: list[str]) -> Written:
    """Write records (dicts of strings) as a CSV whose columns are `first`, then every other key in order seen."""
    keys = list(dict.fromkeys([*first, *(k for r in records for k in r)]))
    frame = pl.DataFrame({k: [_cell(r.get(k)) for r in records] for k in keys}, schema=dict.fromkeys(keys, pl.String))
    local = ctx.work_dir / sftp.local_name(name)
    with local.open("wb") as out:
        _append(out, frame, goal.csv, header=goal.csv.header)
    return Written(name, local, frame.height, frame.head(SHOWN_ROWS))


def _cell(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


# ── encrypt, upload, report ───────────────────────────────────────────────────────────


def _dry_run(goal: models.ExportProfiles, directory: str, done: Export) -> FileResult:
    for written in done.files:
        logger.info("goal %s (dry run): would export %d row(s) to %s", goal.name, written.rows,
                    posixpath.join(directory, written.name))
        if written.head is not None and written.head.height:
            with pl.Config(tbl_rows=SHOWN_ROWS, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=40):
                logger.info("goal %s (dry run): first rows of %s:\n%s", goal.name, written.name, written.head)
    return FileResult(posixpath.join(directory, done.files[0].name), "dry_run", rows_exported=done.rows)


def _sealed(ctx: RunContext, goal: models.ExportProfiles, written: Written) -> tuple[Path, str]:
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def members(store: Any, connector: models.Connector, condition: models.Condition) -> list[int]:
    """Given a condition (or a segment, as {segment: name}), return the ids of the profiles it holds, in id order."""
    with store.engine.connect() as conn:
        sql = segments.Sql(sqlite=store.is_sqlite, columns=queries.all_property_columns(conn),
                           segments=dict(connector.segments))
        where = segments.condition(sql, condition)
        return [row[0] for page in store_exports.profile_pages(conn, picks=[], where=where, params=sql.params,
                                                               sqlite=store.is_sqlite) for row in page]
