"""Merge a file's rows into profiles, one batch of rows at a time, over whole columns (polars).

Per batch: key every row (its first identifier value and occurrence number) and hash its
content; drop rows applied before in this exact form; find each row's profile and read the
mapped properties of those profiles (`_read`); apply the rules in one pass, all the rows of
a profile together as applying them one after the other would, and work out every write (`_plan`);
then write new profiles, patches of changed ones, the identity index and the row records
(`_store`). The `Pipeline` runs the three on three threads, each on a different batch.
Nothing here commits: the goal runs every batch of a file in the file's one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson
import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import failpoints, identity, rowkeys, rules
from sftp_connector.config import models
from sftp_connector.errors import InputError, RowReject
from sftp_connector.rowkeys import HASH_SEED, Occurrences
from sftp_connector.store import queries
from sftp_connector.store.db import Store

TOUCHED_FLUSH = 1_000_000
T = TypeVar("T")


def field_col(field: str) -> str:
    """The working-frame column of a CSV field (namespaced: a field may share a property's name)."""
    return f"f\x1f{field}"


def prop_col(prop: str) -> str:
    """The working-frame column of a property."""
    return f"p\x1f{prop}"


@dataclass(frozen=True, slots=True)
class Mapping:
    field: str
    property: str
    rule: models.Rule


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


@dataclass(frozen=True, slots=True)
class Context:
    """What merging a file (or one level of a linked set) needs to know besides its rows."""

    goal: models.ImportProfiles | models.ImportGroups
    label: str
    separator: str | None
    digest: str
    indexed: frozenset[str]
    """Every identifier property of every goal: their values are kept in the identity index."""
    identifiers: tuple[tuple[str, str], ...]
    """(field, property) pairs, tried in order."""
    allow_new: bool = True
    level: frozenset[str] | None = None
    """Of a linked set, the fields of the file being merged: only their mappings apply (None: a lone file)."""
    groups: tuple[models.GroupRef, ...] = ()
    entity: queries.Entity = queries.PROFILES
    group_type: str | None = None
    """For an import-groups goal, the type of the groups it writes."""
    objectives: tuple[str, ...] = ()
    consent_property: str = "consented_objectives"


def context(
    goal: models.ImportProfiles | models.ImportGroups, *, label: str, digest: str, indexed: frozenset[str],
    privacy: models.Privacy, level: frozenset[str] | None = None, root: bool = True,
) -> Context:
    """Given an import goal and the file being merged, return its merge context.

    A group's identifier value is kept as its property `@<type>`; rows of a linked file below
    the root never create profiles (their root row did) and carry no group links.
    """
    common = {"goal": goal, "label": label, "separator": goal.csv.multi_value_separator, "digest": digest,
              "indexed": indexed, "level": level}
    if isinstance(goal, models.ImportGroups):
        prop = group_identity_property(goal.group_type)
        return Context(**common, identifiers=((goal.identifier.field, prop),), allow_new=root,
                       entity=queries.GROUPS, group_type=goal.group_type)
    return Context(**common, identifiers=tuple((i.field, i.property) for i in goal.identifiers),
                   allow_new=goal.allow_new_profiles and root, groups=tuple(goal.groups) if root else (),
                   objectives=tuple(privacy.objectives), consent_property=privacy.consent_property)


def group_identity_property(group_type: str) -> str:
    """The property (and identity index key) holding a group's identifier value."""
    return f"@{group_type}"


@dataclass(slots=True)
class FileMerge:
    """One file's merge across its batches: what it carries between them and what it counted.

    The pipeline's writer thread alone sets `last`, `touched`, `created` and `first_created`
    and appends to `present`; read them once the pipeline is flushed.
    """

    ctx: Context
    maps: list[Mapping]
    file_id: int
    previous: pl.DataFrame | None
    """The rows remembered from the file's earlier import (key, hash, profile_id, sums, _h: key hash), sorted by
    key hash, if any."""
    columns: dict[str, str]
    """The profile column of every property a batch reads or writes."""
    now: float
    counts: Counts = field(default_factory=Counts)
    rejects: list[RowReject] = field(default_factory=list)
    last: list[int] = field(default_factory=list)
    occurrences: Occurrences = field(default_factory=Occurrences)
    touched: list[pl.Series] = field(default_factory=list)
    """The profile ids each batch applied rows to (8 bytes a row), for the goal's set of profiles."""
    known_before: dict[str, bool] = field(default_factory=dict)
    """Whether the store held values of each identifier property before this file."""
    added: dict[str, pl.Series] = field(default_factory=dict)
    """Short hashes of the identifier values this file added to the index, by property, sorted: a prefilter
    (4 bytes a value; a collision only costs a lookup that finds nothing)."""
    present: list[pl.Series] = field(default_factory=list)
    """The profiles of the file's rows, applied or unchanged (what an overwrite keeps)."""
    created: int = 0
    first_created: int | None = None
    """The first profile id this file created: every id it created is from there on."""
    changed: pl.Series = field(default_factory=lambda: pl.Series("pid", [], dtype=pl.Int64))
    """The stored profiles a batch changed, sorted and distinct (for the count of updated profiles)."""
    new_columns: bool = False
    """Whether the file added profile columns (in its transaction: other connections do not see them)."""

    @property
    def identifiers(self) -> list[tuple[str, str]]:
        return list(self.ctx.identifiers)

    @property
    def props(self) -> list[str]:
        """The properties a batch reads and may write: mapped, identifier and consent properties."""
        names = [m.property for m in self.maps] + [p for _, p in self.identifiers]
        return list(dict.fromkeys(names + ([self.ctx.consent_property] if self.ctx.objectives else [])))

    @property
    def indexed_props(self) -> list[str]:
        """The properties of `props` kept in the identity index."""
        return [p for p in self.props if p in self.ctx.indexed]

    @property
    def sum_props(self) -> set[str]:
        return {m.property for m in self.maps if m.rule == "sum"}


def mappings(
    goal: models.ImportProfiles | models.ImportGroups, columns: list[str], level: frozenset[str] | None = None
) -> list[Mapping]:
    """Given a goal and the file's columns, return its mappings with prefix and bulk mapping applied.

    With `level` (a linked set's file), only mappings of that file's fields; bulk mapping
    covers the root file only. Raise InputError if a mapped or identifier field is not a
    column of the file, or a property is mapped with `sum` and another rule.
    """
    ids = [i.field for i in goal.identifiers] if isinstance(goal, models.ImportProfiles) else [goal.identifier.field]
    explicit = [Mapping(m.field, goal.prefix + m.property, m.rule) for m in goal.mappings
                if level is None or m.field in level]
    missing = [f for f in [*ids, *(m.field for m in explicit)] if f not in columns]
    if missing:
        raise InputError(f"field(s) {', '.join(dict.fromkeys(missing))} not in the file "
                         f"(columns: {', '.join(c for c in columns if c != '_row')})")
    if goal.bulk_mapping is not None:
        taken = {m.field for m in goal.mappings} | set(ids)
        if isinstance(goal, models.ImportProfiles):
            taken |= {g.field for g in goal.groups}
        explicit += [Mapping(c, goal.prefix + c, goal.bulk_mapping.rule) for c in columns
                     if c not in taken and not c.startswith("_") and (level is None or c in level)]
    _check_sums_alone(explicit)
    return explicit


def _check_sums_alone(maps: list[Mapping]) -> None:
    """Raise InputError if a property is mapped with `sum` and with another rule (a sum holds one number)."""
    sums = {m.property for m in maps if m.rule == "sum"}
    mixed = sorted({m.property for m in maps if m.rule != "sum" and m.property in sums})
    if mixed:
        raise InputError(f"property {', '.join(mixed)} is mapped with `sum` and with another rule: a `sum` "
                         "property holds one number; map it with `sum` only")


def start(store: Store, conn: Connection, ctx: Context, fields: list[str], *, file_id: int, now: float) -> FileMerge:
    """Given the merge context and the file's columns, return the state for merging its batches.

    Raise InputError if a mapped or identifier field is not a column of the file.
    """
    previous = queries.imported_rows(conn, file_id)
    if previous is not None:
        previous = _latest_by_hash(previous.with_columns(_h=pl.col("key").hash(seed=HASH_SEED)))
    state = FileMerge(ctx, mappings(ctx.goal, fields, ctx.level), file_id, previous, {}, now)
    before = queries.all_property_columns(conn, ctx.entity)
    state.columns = queries.property_columns(store, conn, state.props, ctx.entity)
    state.new_columns = any(p not in before for p in state.props)
    state.known_before = {p: queries.has_identities(conn, p, ctx.entity) for _, p in state.identifiers}
    return state


def _latest_by_hash(rows: pl.DataFrame) -> pl.DataFrame:
    """Given remembered rows in the order they were applied, with their key hash `_h`, return the latest of each
    key, sorted by key hash (for each batch's binary search).

    The sort is stable, so a key's rows end up side by side, the latest last; should two keys
    share a hash, they are told apart by a unique on the key instead.
    """
    rows = rows.sort("_h", maintain_order=True)
    same_next = (pl.col("_h") == pl.col("_h").shift(-1)).fill_null(False)
    if rows.select((same_next & (pl.col("key") != pl.col("key").shift(-1))).any()).item():
        return rows.unique("key", keep="last", maintain_order=True)
    return rows.filter(~same_next)


class Pipeline:
    """Merges a file's batches in three stages on three threads: reading batch k+2 from the store,
    applying the rules to batch k+1 (the caller's thread), writing batch k ("store-writer").

    A batch is read on a second connection ("store-reader"), which sees the store as it was
    before the file: exact for a batch that touches no profile and no identifier value the
    file has changed so far, the common case when a file names each customer once. Any other
    batch, and every batch while the file adds identifier values of its own (a first load),
    is read by the writer just before it writes the batch before; that read is exact unless
    that batch writes what it reads. A batch whose read may be stale is read again by the
    writer once every earlier batch is written (counted in `rereads`). `flush` waits for
    every write before anything else goes to the store.
    """

    def __init__(self, store: Store, conn: Connection, *, side_reads: bool = True) -> None:
        """Given the store and the file's connection; side_reads False if something else in the transaction
        has changed profiles already (the second connection would not see it)."""
        self.store, self.conn = store, conn
        self.rereads = 0
        self.side_reads = 0
        self._side_conn: Connection | None = None
        self._side_ok = side_reads
        self._waiting: _Reading | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")
        self._jobs: list[Future[Any]] = []
        self._failed = threading.Event()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self.flush()
        finally:  # after an error, what was queued is dropped: the transaction is rolled back
            self._reader.shutdown(wait=True, cancel_futures=kind is not None)
            self._writer.shutdown(wait=True, cancel_futures=kind is not None)
            if self._side_conn is not None:
                self._side_conn.close()

    def apply(self, batch: pl.DataFrame, state: FileMerge) -> None:
        """Given one batch of a file's rows (String columns and _row), start merging it; the batch before
        is applied meanwhile, and its writes may still be under way when this returns."""
        if batch.is_empty():
            return
        rows = _fresh(_keyed(batch, state), state)
        if rows.is_empty():
            return
        reading = self._start_read(rows, state)
        written = self._finish_waiting()
        if reading.behind is None and not reading.side:
            reading.behind = written  # the one plan stored after this read
        self._waiting = reading

    def flush(self, *, store_changes: bool = False) -> None:
        """Apply the last batch, write what is planned and wait for the writer: the connection is free again.

        With store_changes (the caller is about to change profiles itself: erasures), the
        file's later batches are read through the writer's connection only.
        """
        self._finish_waiting()
        self._drain()
        if store_changes:
            self._side_ok = False

    def _start_read(self, rows: pl.DataFrame, state: FileMerge) -> _Reading:
        side = self._side() if self._side_ok and not state.new_columns and not _added_by_file(rows, state) else None
        if side is not None:
            self.side_reads += 1
            return _Reading(rows, state, self._reader.submit(_read, self.store, side, rows, state), True)
        return _Reading(rows, state, self._submit(_read, rows, state), False)

    def _finish_waiting(self) -> Plan | None:
        """Check the waiting batch's read, read it again if it may be stale, apply it and queue its writes;
        return its plan (None if there was nothing to write)."""
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return None
        rows, state = waiting.rows, waiting.state
        read = waiting.future.result() if waiting.side else self._result(waiting.future)
        if self._stale(waiting, read):
            self.rereads += 1
            read = self._result(self._submit(_read, rows, state))  # after every earlier batch's writes
        state.counts.rows_unmatched += read.unmatched
        if read.rows.is_empty():
            return None
        plan = _plan(read, state, prepare=self.store.is_sqlite)
        self._submit(_store, plan, state)
        return plan

    @staticmethod
    def _stale(waiting: _Reading, read: Read) -> bool:
        """True if the read may miss writes of the file's earlier batches (all planned by now)."""
        rows, state = waiting.rows, waiting.state
        if waiting.side:
            return _changed_by_file(read, state) or _added_by_file(rows, state)
        return waiting.behind is not None and _conflicts(rows, read, waiting.behind, state)

    def _side(self) -> Connection | None:
        """The connection for reads beside the writer's, opened on first use; None where the database cannot
        read beside a write in progress (SQLite outside WAL mode, an in-memory store)."""
        if self._side_conn is None and self._side_ok:
            conn = self.store.engine.connect().execution_options(reads_only=True)
            if self.store.is_sqlite and conn.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
                conn.close()
                self._side_ok = False
                return None
            self._side_conn = conn
        return self._side_conn

    def _submit(self, work: Callable[..., T], *args: Any) -> Future[T]:
        """Queue work for the writer (which runs it with the store and the file's connection)."""
        def job() -> T:
            if self._failed.is_set():  # an earlier job failed: its error is the one to report
                raise _Abandoned
            try:
                return work(self.store, self.conn, *args)
            except BaseException:
                self._failed.set()
                raise

        future = self._writer.submit(job)
        self._jobs.append(future)
        return future

    def _result(self, future: Future[T]) -> T:
        """Wait for a writer job; raise the first error of it or the jobs before it."""
        futures.wait([future])
        # Jobs run in order: those up to this one are done (a later wait may have checked them already).
        done = self._jobs[:self._jobs.index(future) + 1] if future in self._jobs else []
        del self._jobs[:len(done)]
        for job in done:
            if job.exception() is not None:
                raise job.exception()  # type: ignore[misc]
        return future.result()

    def _drain(self) -> None:
        if self._jobs:
            self._result(self._jobs[-1])


@dataclass(slots=True)
class _Reading:
    """A batch whose read is under way: on the side connection, or by the writer (then `behind` is the plan
    stored right after that read, the one write it did not see)."""

    rows: pl.DataFrame
    state: FileMerge
    future: Future[Read]
    side: bool
    behind: Plan | None = None


class _Abandoned(Exception):
    """A job not run because one before it failed."""


@dataclass(frozen=True, slots=True)
class Read:
    """What a batch reads from the store: its rows with the profile each goes to (unmatched rows dropped),
    the stored ones of those profiles, and the identifier values each new one is created with."""

    rows: pl.DataFrame
    stored: pl.DataFrame
    new_profiles: pl.DataFrame
    unmatched: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What one batch writes, all computed before anything is written. New profiles still have their
    placeholder (negative) ids: the writer gives them real ones."""

    new: pl.DataFrame
    """New profiles: pid and their profile columns (empty once prepared as `rows`)."""
    patches: list[pl.DataFrame]
    """Changed stored profiles: pid and the columns to write, one frame per set of columns (none once prepared
    as `patch_rows`)."""
    releases: pl.DataFrame
    claims: pl.DataFrame
    """(property, value, profile_id): identity index changes of stored profiles."""
    fresh: pl.DataFrame
    """The values new profiles were found by that no stored profile claims (indexed without a conflict check)."""
    added: pl.DataFrame
    """The values the rules added to new profiles (indexed if no profile holds them)."""
    records: pl.DataFrame
    """The applied rows' records: key, hash, pid, sums."""
    links: pl.DataFrame
    """The applied rows' group fields with _pid, in file order (empty without group references)."""
    changed: pl.Series
    """The stored profiles whose columns change."""
    pairs: pl.DataFrame
    """(property, value): every identifier value added to or dropped from the index."""
    rows: queries.Prepared | None = None
    """On SQLite, the new profiles' columns as prepared rows (in `new`'s order, without ids)."""
    patch_rows: list[queries.Prepared] | None = None
    """On SQLite, `patches` as prepared rows."""


def _read(store: Store, conn: Connection, rows: pl.DataFrame, state: FileMerge) -> Read:
    """Find each row's profile and read those profiles (the only part of a batch that reads the store)."""
    read: list[pl.DataFrame] = []  # the profiles the lookups found, returned whole
    found = identity.resolve(lambda prop, values: _lookup(store, conn, prop, values, state, read), rows,
                             [(field_col(f), p) for f, p in state.identifiers],
                             allow_new=state.ctx.allow_new)
    rows = rows.with_columns(_pid=found.pids)
    unmatched = rows.get_column("_pid").null_count()
    rows = rows.filter(pl.col("_pid").is_not_null())
    if rows.is_empty():
        return Read(rows, pl.DataFrame(), found.new_profiles, unmatched)
    return Read(rows, _stored(rows, state, read), found.new_profiles, unmatched)


def _conflicts(rows: pl.DataFrame, read: Read, plan: Plan, state: FileMerge) -> bool:
    """True if the batch read before `plan` was written may have read something the plan changes."""
    pids = read.rows.get_column("_pid")
    if pids.is_in(plan.changed.implode()).any():
        return True
    if plan.pairs.is_empty():
        return False
    values = pl.concat(rows.select(property=pl.lit(prop), value=pl.col(field_col(f)))
                       for f, prop in state.identifiers)
    return not values.join(plan.pairs, on=["property", "value"], how="semi").is_empty()


def _added_by_file(rows: pl.DataFrame, state: FileMerge) -> bool:
    """True if some identifier value of the rows may be one the file added to the index (prefilter hit)."""
    for f, prop in state.identifiers:
        added = state.added.get(prop)
        values = rows.get_column(field_col(f))
        if added is not None and rowkeys.among(rowkeys.short_hash(values.filter(values != "")), added).any():
            return True
    return False


def _changed_by_file(read: Read, state: FileMerge) -> bool:
    """True if the read found a stored profile the file has changed."""
    if state.changed.is_empty():
        return False
    pids = read.rows.get_column("_pid")
    return bool(rowkeys.among(pids.filter(pids > 0), state.changed).any())


def _lookup(
    store: Store, conn: Connection, prop: str, values: pl.Series, state: FileMerge, read: list[pl.DataFrame]
) -> pl.DataFrame:
    """Find stored profiles by identifier values, asking the store only about values that may be there.

    A value can be stored only if the property had values before this file, or this file
    added it: for a first load, that is almost no lookups at all. The profiles' properties come
    with them (added to `read`).
    """
    if not state.known_before.get(prop, True):
        added = state.added.get(prop)
        values = values.clear() if added is None else values.filter(rowkeys.among(rowkeys.short_hash(values), added))
    found = queries.find_identities(store, conn, prop, values, state.ctx.entity, state.columns)
    read.append(found.drop("value"))
    return found.select("value", "pid")


def _keyed(batch: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Add _key and _hash to the rows that have an identifier; reject the others."""
    fields = [f for f, _ in state.identifiers]
    ident = pl.coalesce(pl.when(pl.col(f) != "").then(pl.lit(f"{i}\x1f") + pl.col(f)) for i, f in enumerate(fields))
    needed = list(dict.fromkeys(fields + [m.field for m in state.maps] + [g.field for g in state.ctx.groups]))
    rows = batch.select("_row", *(pl.col(f).alias(field_col(f)) for f in needed), _ident=ident,
                        _hash=_digest(needed, state.ctx.digest))
    for number in rows.filter(pl.col("_ident").is_null()).get_column("_row").to_list():
        state.rejects.append(RowReject(state.ctx.label, number, None,
                                       f"no usable identifier: {', '.join(fields)} all empty"))
    state.counts.rows_rejected += rows.get_column("_ident").null_count()
    rows = rows.filter(pl.col("_ident").is_not_null())
    occurrence = state.occurrences.number(rows.get_column("_ident"))
    return rows.with_columns(_key=pl.col("_ident") + "\x1f" + pl.Series(occurrence).cast(pl.String)).drop("_ident")


def _digest(fields: list[str], config_digest: str) -> pl.Expr:
    """A row's content hash over the fields it uses and the goal's configuration.

    A changed configuration changes every hash, so a changed mapping takes effect on re-import.
    """
    return pl.struct(*fields, pl.lit(config_digest).alias("_config")).hash(seed=HASH_SEED).reinterpret(signed=True)


def _fresh(rows: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Join what the file's earlier import remembered; count and drop rows unchanged since."""
    if state.previous is None:
        return rows.with_columns(_prev_hash=pl.lit(None, pl.Int64), _prev_sums=pl.lit(None, pl.String))
    rows = rows.with_columns(_remembered(rows.get_column("_key"), state.previous))
    unchanged = (pl.col("_prev_hash") == pl.col("_hash")).fill_null(False)
    kept = rows.filter(unchanged)
    state.counts.rows_unchanged += kept.height
    if state.ctx.goal.write_mode == "overwrite":
        state.present.append(kept.get_column("_prev_pid"))
    return rows.filter(~unchanged).drop("_prev_pid")


def _remembered(keys: pl.Series, previous: pl.DataFrame) -> pl.DataFrame:
    """Given a batch's row keys and the remembered rows (sorted by key hash), return each key's remembered
    _prev_hash, _prev_sums and _prev_pid (null for a new key).

    A binary search by key hash (each batch would otherwise hash-join the whole file's rows), the
    keys then compared exactly; should two keys share a hash, the batch is joined instead.
    """
    wanted = pl.DataFrame({"_key": keys, "_h": keys.hash(seed=HASH_SEED)})
    at = previous.get_column("_h").search_sorted(wanted.get_column("_h")).clip(0, max(previous.height - 1, 0))
    found = previous.select(pl.all().gather(at)) if previous.height else previous.clear(wanted.height)
    same_hash = found.get_column("_h") == wanted.get_column("_h")
    exact = same_hash & (found.get_column("key") == keys)
    if (same_hash & ~exact).any():
        found = wanted.join(previous.rename({"key": "_key"}), on="_key", how="left", maintain_order="left")
        exact = found.get_column("hash").is_not_null()
    return found.select(pl.when(exact).then(pl.col("hash")).alias("_prev_hash"),
                        pl.when(exact).then(pl.col("sums").cast(pl.String)).alias("_prev_sums"),
                        pl.when(exact).then(pl.col("profile_id")).alias("_prev_pid"))


def _stored(rows: pl.DataFrame, state: FileMerge, read: list[pl.DataFrame]) -> pl.DataFrame:
    """The stored profiles of the rows (pid and each property's JSON array text), as the lookups that found
    them returned them: every stored profile a row goes to was found by a lookup."""
    pids = rows.get_column("_pid")
    wanted = pids.filter(pids > 0).unique().alias("pid").to_frame()
    schema = {"pid": pl.Int64, **dict.fromkeys(state.columns, pl.String)}
    return pl.concat([pl.DataFrame(schema=schema), *read]).unique("pid").join(wanted, on="pid", how="semi")


def _before(read: Read, state: FileMerge) -> pl.DataFrame:
    """The touched profiles' properties before the batch: stored ones as read, new ones from their identifiers."""
    props = state.props
    columns = [prop_col(p) for p in props]
    stored = read.stored.rename({p: prop_col(p) for p in props}).select("pid", *columns)
    new = read.new_profiles.group_by("pid", "property", maintain_order=True).agg("value")
    fresh = pl.DataFrame({"pid": read.new_profiles.get_column("pid").unique(maintain_order=True)})
    for prop in props:
        values = new.filter(pl.col("property") == prop).select("pid", pl.col("value").alias(prop_col(prop)))
        fresh = fresh.join(values, on="pid", how="left", maintain_order="left")
    fresh = fresh.with_columns(rules.encode(pl.col(c).fill_null([]).cast(pl.List(pl.String))).alias(c) for c in columns)
    return pl.concat([stored, fresh.select("pid", *columns)])


def _applied(rows: pl.DataFrame, before: pl.DataFrame, state: FileMerge) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply the batch's rows to their profiles in one pass, however many rows a profile has; return (after:
    every touched profile's properties after the batch, applied: the rows that applied, in file order).

    A profile's rows apply together, per rule, as one after the other would: `set` keeps the
    last values, `set_or_clear` the last cell, `set_if_empty` the first values where none
    were held, `add` the ordered union, `sum` the total of the differences.
    """
    rows = rows.with_columns(_pos=pl.int_range(pl.len(), dtype=pl.UInt32))
    joined = rows.join(before, left_on="_pid", right_on="pid", how="left", maintain_order="left")
    split = {m.field for m in state.maps if m.rule != "sum"}
    joined = joined.with_columns(rules.split_expression(pl.col(field_col(f)), state.ctx.separator)
                                 .alias(_values_col(f)) for f in split)
    joined = _sum_differences(joined, state)
    if state.ctx.objectives:
        joined = _consented(joined, state)
    state.counts.rows_applied += joined.height
    repeated = pl.col("_pid").is_duplicated()
    changes = [_each_once(joined.filter(~repeated), state)]
    many = joined.filter(repeated)
    if not many.is_empty():
        changes.append(_folded(many, before, state))
    after = before.update(pl.concat(changes), on="pid", include_nulls=True)
    applied = joined.with_columns(_sums=_sums_json(state) if state.sum_props else pl.lit(None, pl.String))
    return after, applied.drop(_values_col(f) for f in split)


def _sum_differences(joined: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Add, per `sum` property, each row's amount (`_c…`, what it contributes from now on) and its difference
    from what the row contributed when the file was imported before (`_d…`; null: nothing to add); reject
    the cells that are not numbers."""
    if not state.sum_props:
        return joined
    dtype = pl.Struct({prop: pl.Float64 for prop in sorted(state.sum_props)})
    joined = joined.with_columns(_prev=pl.col("_prev_sums").str.json_decode(dtype))
    for prop in sorted(state.sum_props):
        amounts = []
        for mapping in (m for m in state.maps if m.property == prop):
            cell = pl.col(field_col(mapping.field))
            amount = rules.amount_expression(cell)
            _reject_amounts(joined.filter(cell.is_not_null() & (cell != "") & amount.is_null()), mapping, state)
            amounts.append(amount)
        amount = amounts[0] if len(amounts) == 1 else pl.when(pl.any_horizontal(a.is_not_null() for a in amounts)) \
            .then(pl.sum_horizontal(amounts))
        was = pl.col("_prev").struct.field(prop)
        joined = joined.with_columns((amount - was.fill_null(0.0)).alias(_difference_col(prop)),
                                     pl.coalesce(amount, was).alias(_contribution_col(prop)))
    return joined.drop("_prev")


def _reject_amounts(bad: pl.DataFrame, mapping: Mapping, state: FileMerge) -> None:
    for number, value in bad.select("_row", field_col(mapping.field)).iter_rows():
        state.rejects.append(RowReject(state.ctx.label, number, mapping.field, f"`{mapping.field}` is not a number",
                                       value[:200]))
    state.counts.cells_rejected += bad.height


def _consented(joined: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Keep the rows after which their profile holds a consented objective (rows that fail change nothing, so
    a later row of the profile sees the profile without them); count the others as no_consent."""
    prop, objectives = state.ctx.consent_property, list(state.ctx.objectives)
    held = pl.col(prop_col(prop))  # before the batch
    held_any = rules.decode(held).list.set_intersection(objectives).list.len() > 0
    maps = [m for m in state.maps if m.property == prop]
    if not maps:
        passes = joined.select(held_any).to_series()
    elif len(maps) == 1 and maps[0].rule != "sum":
        passes = joined.select(_consent_by_rule(maps[0], held, held_any, objectives)).to_series()
    else:
        passes = _consent_one_by_one(joined, maps, state)
    state.counts.no_consent += passes.len() - passes.sum()
    return joined.filter(passes)


def _consent_by_rule(mapping: Mapping, held: pl.Expr, held_any: pl.Expr, objectives: list[str]) -> pl.Expr:
    """Whether each row passes the consent check when one mapping writes the consent property.

    Rows of a profile that failed added no objective, so "an earlier row applied values
    holding one" is "an earlier row's values held one" (for `add`: any earlier row's).
    """
    values = pl.col(_values_col(mapping.field))
    has = values.list.len() > 0
    names_one = values.list.set_intersection(objectives).list.len() > 0

    def earlier(condition: pl.Expr) -> pl.Expr:
        return (condition.cast(pl.UInt32).cum_sum().over("_pid") - condition.cast(pl.UInt32)) > 0

    if mapping.rule == "set":
        return pl.when(has).then(names_one).otherwise(held_any | earlier(has & names_one))
    if mapping.rule == "set_or_clear":
        return names_one
    if mapping.rule == "set_if_empty":
        return pl.when(held.is_not_null()).then(held_any).otherwise(names_one | earlier(names_one))
    return held_any | names_one | earlier(names_one)  # add


def _consent_one_by_one(joined: pl.DataFrame, maps: list[Mapping], state: FileMerge) -> pl.Series:
    """The consent check row by row, for a consent property written by several mappings (rare)."""
    objectives = set(state.ctx.objectives)
    names = [_contribution_col(m.property) if m.rule == "sum" else _values_col(m.field) for m in maps]
    unique = list(dict.fromkeys(names))
    held: dict[int, list[Any]] = {}
    passes = []
    for pid, text, *values in joined.select("_pid", prop_col(state.ctx.consent_property), *unique).iter_rows():
        current = held[pid] if pid in held else (orjson.loads(text) if text else [])
        for mapping, name in zip(maps, names, strict=True):
            current = _pure_rule(mapping.rule, current, values[unique.index(name)])
        ok = bool(objectives & {str(v) for v in current})
        if ok:
            held[pid] = current
        passes.append(ok)
    return pl.Series(passes, dtype=pl.Boolean)


def _pure_rule(rule: models.Rule, current: list[Any], cell: Any) -> list[Any]:
    if rule != "sum":
        return rules.RULES[rule](current, cell)
    try:
        return rules.sum_(current, [] if cell is None else [cell])
    except ValueError:  # a stored value that is not a number counts as 0, as over whole columns
        return rules.sum_([], [] if cell is None else [cell])


def _each_once(once: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Given rows whose profile has no other row in the batch (each beside its profile's values), return each
    profile's values after its row: the rules as expressions over whole columns."""
    for layer in _layers([m for m in state.maps if m.rule != "sum"]):
        once = once.with_columns(
            rules.expression(m.rule, pl.col(prop_col(m.property)), pl.col(_values_col(m.field)))
            .alias(prop_col(m.property)) for m in layer)
    once = once.with_columns(rules.expression("sum", pl.col(prop_col(p)), pl.col(_difference_col(p)))
                             .alias(prop_col(p)) for p in state.sum_props)
    return once.select(pl.col("_pid").alias("pid"), *(prop_col(p) for p in state.props))


def _folded(many: pl.DataFrame, before: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Given the rows of profiles that have several in the batch (file order), return those profiles' values
    after all their rows, each property folded once over its operations in file and mapping order."""
    current = before.join(many.select(pl.col("_pid").alias("pid")).unique(), on="pid", how="semi")
    listed = [m for m in state.maps if m.rule != "sum"]
    if listed:
        props = list(dict.fromkeys(m.property for m in listed))
        folded = _fold_lists(_operations(many, listed, props), current, props)
        current = current.update(folded, on="pid", include_nulls=True)
    if state.sum_props:
        totals = many.group_by("_pid").agg(
            pl.when(pl.col(_difference_col(p)).count() > 0).then(pl.col(_difference_col(p)).sum()).alias(p)
            for p in state.sum_props)
        current = current.join(totals, left_on="pid", right_on="_pid", how="left").with_columns(
            rules.expression("sum", pl.col(prop_col(p)), pl.col(p)).alias(prop_col(p)) for p in state.sum_props
        ).drop(*state.sum_props)
    return current.select("pid", *(prop_col(p) for p in state.props))


def _operations(many: pl.DataFrame, listed: list[Mapping], props: list[str]) -> pl.DataFrame:
    """One row per (row, mapping): _pid, _p (the property's index in props), _rule, _v (the cell's values),
    grouped by profile and property, in file and mapping order."""
    index = {p: n for n, p in enumerate(props)}
    return pl.concat([
        many.select("_pid", "_pos", _m=pl.lit(j, pl.UInt32), _p=pl.lit(index[m.property], pl.UInt32),
                    _rule=pl.lit(m.rule), _v=pl.col(_values_col(m.field)))
        for j, m in enumerate(listed)
    ]).sort("_pid", "_p", "_pos", "_m")


def _fold_lists(ops: pl.DataFrame, current: pl.DataFrame, props: list[str]) -> pl.DataFrame:
    """Given every list rule's operations on the profiles (see _operations) and their values before, return
    (pid, each property's JSON array text after the operations).

    The result is what the operation that last replaced the values left (`set` with values,
    `set_or_clear`, `set_if_empty` with values where none were held), or the values held
    before, followed by the values of every `add` after it, without repeats.
    """
    held = current.unpivot(on=[prop_col(p) for p in props], index="pid", variable_name="_name", value_name="_held") \
        .with_columns(_p=pl.col("_name").replace_strict({prop_col(p): n for n, p in enumerate(props)},
                                                        return_dtype=pl.UInt32)).drop("_name")
    key = ["_pid", "_p"]
    rule, has = pl.col("_rule"), pl.col("_v").list.len() > 0
    was_empty = pl.col("_held").is_null()
    # Whether the property is empty after each operation, where the operation decides it.
    decided = pl.when(rule.is_in(["set", "set_if_empty", "add"]) & has).then(False) \
        .when(rule == "set_or_clear").then(~has)
    ops = ops.join(held, left_on=key, right_on=["pid", "_p"], how="left", maintain_order="left").with_columns(
        _empty=decided.forward_fill().over(key), _i=pl.int_range(pl.len(), dtype=pl.UInt32))
    empty_before = pl.col("_empty").shift(1).over(key).fill_null(was_empty)
    replaces = ((rule == "set") & has) | (rule == "set_or_clear") | ((rule == "set_if_empty") & has & empty_before)
    ops = ops.with_columns(_last=pl.when(replaces).then(pl.col("_i")).max().over(key))
    adds = (rule == "add") & has & (pl.col("_last").is_null() | (pl.col("_i") > pl.col("_last")))
    ops = ops.with_columns(_adds=adds, _keep=(pl.col("_i") == pl.col("_last")).fill_null(False) | adds)
    result = ops.group_by(key, maintain_order=True).agg(
        pl.col("_held").first(), pl.col("_last").first().is_not_null().alias("_replaced"),
        pl.col("_adds").any(), pl.col("_v").filter(pl.col("_keep")).explode().drop_nulls().alias("_values"))
    base = pl.when(pl.col("_replaced")).then(pl.lit([], pl.List(pl.String))).otherwise(rules.decode(pl.col("_held")))
    merged = base.list.concat(pl.col("_values"))
    final = pl.when(pl.col("_adds")).then(merged.list.unique(maintain_order=True)).otherwise(merged)
    text = pl.when(pl.col("_replaced") | pl.col("_adds")).then(rules.encode(final)).otherwise(pl.col("_held"))
    wide = result.select("_pid", "_p", _text=text).pivot(on="_p", index="_pid", values="_text")
    return wide.rename({"_pid": "pid", **{str(n): prop_col(p) for n, p in enumerate(props)}})


def _values_col(field: str) -> str:
    return f"v\x1f{field}"


def _difference_col(prop: str) -> str:
    return f"d\x1f{prop}"


def _contribution_col(prop: str) -> str:
    return f"c\x1f{prop}"


def _layers(maps: list[Mapping]) -> list[list[Mapping]]:
    """Split the list-rule mappings, in order, into groups that can be computed together (one pass, all cores).

    A group never holds two mappings of one property (the second must see the first's
    result).
    """
    layers: list[list[Mapping]] = []
    for mapping in maps:
        if not layers or mapping.property in {m.property for m in layers[-1]}:
            layers.append([mapping])
        else:
            layers[-1].append(mapping)
    return layers


def _sums_json(state: FileMerge) -> pl.Expr:
    return pl.struct(pl.col(_contribution_col(p)).alias(p) for p in sorted(state.sum_props)).struct.json_encode()


def _plan(read: Read, state: FileMerge, *, prepare: bool = False) -> Plan:
    """Apply the batch's rows to their profiles; return what is to be written (with prepare, SQLite's rows of
    it too: the writer then only binds them)."""
    before = _before(read, state)
    after, applied = _applied(read.rows, before, state)
    # A new profile none of whose rows applied (no consent) is not created.
    after = after.filter((pl.col("pid") > 0) | pl.col("pid").is_in(applied.get_column("_pid").implode()))
    before, after, applied = _numbered(before, after, applied)
    new = after.filter(pl.col("pid") < 0)
    kind = {"type": pl.lit(state.ctx.group_type)} if state.ctx.group_type else {}
    profiles = new.select("pid", **kind, created_at=pl.lit(state.now), updated_at=pl.lit(state.now),
                          **{state.columns[p]: pl.col(prop_col(p)) for p in state.props})
    mapped = list(dict.fromkeys(m.property for m in state.maps))
    # Stored profiles beside what they held before the batch (columns `…_was`): compared once, used thrice.
    changed = _changed(after.filter(pl.col("pid") > 0).join(before, on="pid", suffix="_was"), mapped)
    patches = [rows.select("pid", **{state.columns[p]: pl.col(prop_col(p)) for p in props})
               for props, rows in _patches(changed, mapped)]
    # New profiles beside the identifier values they were found by (`…_was`): what the resolution made them.
    created = new.join(before.select("pid", *map(prop_col, state.indexed_props)), on="pid", suffix="_was")
    releases, claims, fresh, added = _reindexed(changed, created, state)
    state.changed = rowkeys.merge_sorted(state.changed, changed.get_column("pid"), distinct=True)
    in_order = applied  # in file order
    records = in_order.select(pl.col("_key").alias("key"), pl.col("_hash").alias("hash"), pl.col("_pid").alias("pid"),
                              pl.col("_sums").cast(pl.String).alias("sums"))
    links = in_order.select("_pid", *dict.fromkeys(field_col(ref.field) for ref in state.ctx.groups))
    pairs = pl.concat([releases, claims, fresh, added]).select("property", "value")
    plan = Plan(profiles, patches, releases, claims, fresh, added, records, links, changed.get_column("pid"), pairs)
    if not prepare:
        return plan
    # The frames' columns are not kept beside their rows: a batch's rows as Python objects are large.
    return replace(plan, new=profiles.clear(), patches=[],
                   rows=queries.prepared(profiles.drop("pid", "created_at", "updated_at"), state.now),
                   patch_rows=[queries.prepared(rows.rename({"pid": "id"}), state.now) for rows in patches])


def _store(store: Store, conn: Connection, plan: Plan, state: FileMerge) -> None:
    """Write one batch's plan (on the writer thread): new profiles, changed columns of stored ones, the
    identity index and the applied rows' records; new profiles get their ids here."""
    entity = state.ctx.entity
    if plan.rows is not None and plan.patch_rows is not None:
        first = queries.append_profiles(store, conn, plan.rows, entity)
        new_ids = range(first, first + len(plan.rows.rows))
        for prepared in plan.patch_rows:
            queries.update_prepared(store, conn, prepared, entity)
    else:
        new_ids = queries.reserve_profile_ids(conn, plan.new.height, entity)
        first = new_ids[0] if new_ids else 0
        queries.insert_profiles(store, conn, _real(plan.new, "pid", first).rename({"pid": "id"}), entity)
        for rows in plan.patches:
            queries.update_profiles(store, conn, rows.rename({"pid": "id"}), state.now, entity)
    state.created += len(new_ids)
    if new_ids and state.first_created is None:
        state.first_created = new_ids[0]
    # Changed profiles first: they were stored before the batch, so they claim a value first.
    queries.release_identities(store, conn, plan.releases, entity)
    queries.claim_identities(store, conn, plan.claims, entity)
    if store.is_sqlite and new_ids:  # SQLite indexes the new profiles' values from the rows it has just written
        for prop in state.indexed_props:
            queries.claim_held_identities(store, conn, prop, state.columns[prop], (new_ids[0], new_ids[-1]), entity)
    elif not store.is_sqlite:
        queries.index_identities(store, conn, _real(plan.fresh, "profile_id", first), entity)
        queries.claim_identities(store, conn, _real(plan.added, "profile_id", first), entity)
    records = _real(plan.records, "pid", first).rename({"pid": "profile_id"})
    queries.append_rows(conn, state.file_id, records)
    if state.ctx.groups:
        _link_groups(store, conn, _real(plan.links, "_pid", first), state)
    touched = records.get_column("profile_id")
    state.touched.append(touched)
    if state.ctx.goal.write_mode == "overwrite":
        state.present.append(touched)
    if sum(part.len() for part in state.touched) >= TOUCHED_FLUSH:
        _remember_touched(conn, state)
    latest = touched.reverse().unique(maintain_order=True).head(5).to_list()
    state.last = list(dict.fromkeys([*latest, *state.last]))[:5]
    failpoints.reached("mid-merge")  # a batch is written, the file is not committed


def _numbered(
    before: pl.DataFrame, after: pl.DataFrame, applied: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Number the new profiles -1, -2, … in the order they are stored (the writer's ids then follow by
    arithmetic); they are unless a new profile was dropped."""
    placeholders = after.get_column("pid").filter(after.get_column("pid") < 0)
    dense = -pl.int_range(1, placeholders.len() + 1, eager=True)
    if placeholders.equals(dense, check_names=False, check_dtypes=False):
        return before, after, applied
    renumber = lambda name: pl.col(name).replace_strict(placeholders, dense, default=pl.col(name))  # noqa: E731
    # A dropped profile's row before the batch goes too: its number may now be another's.
    kept = before.filter((pl.col("pid") > 0) | pl.col("pid").is_in(placeholders.implode()))
    return kept.with_columns(renumber("pid")), after.with_columns(renumber("pid")), \
        applied.with_columns(renumber("_pid"))


def _real(frame: pl.DataFrame, column: str, first: int) -> pl.DataFrame:
    """Given a frame, its id column and the id of new profile -1, return it with real ids (-n is first + n - 1)."""
    if not first or frame.is_empty():
        return frame
    return frame.with_columns(pl.when(pl.col(column) < 0).then(first - 1 - pl.col(column)).otherwise(pl.col(column))
                              .alias(column))


def _changed(compared: pl.DataFrame, mapped: list[str]) -> pl.DataFrame:
    """Given stored profiles after the batch beside their `…_was` columns, keep those whose mapped
    properties differ."""
    if not mapped:
        return compared.clear()
    return compared.filter(pl.any_horizontal(pl.col(prop_col(p)).ne_missing(pl.col(f"{prop_col(p)}_was"))
                                             for p in mapped))


def _patches(changed: pl.DataFrame, mapped: list[str], own: int = 4) -> list[tuple[list[str], pl.DataFrame]]:
    """Group the changed profiles by which mapped properties changed: each of the `own` most common patterns
    writes only its columns, the rest together write the columns any of them changed (fewer values to send)."""
    if changed.is_empty():
        return []
    if len(mapped) > 64:  # a pattern is one bit a property in a UInt64: write the columns any profile changed
        diff = changed.select(pl.col(prop_col(p)).ne_missing(pl.col(f"{prop_col(p)}_was")).any() for p in mapped)
        return [([p for p, hit in zip(mapped, diff.row(0), strict=True) if hit], changed)]
    bits = [pl.col(prop_col(p)).ne_missing(pl.col(f"{prop_col(p)}_was")).cast(pl.UInt64) * (1 << i)
            for i, p in enumerate(mapped)]
    marked = changed.with_columns(_pattern=pl.sum_horizontal(bits))
    common = marked.get_column("_pattern").value_counts(sort=True).head(own).get_column("_pattern").to_list()
    groups = [([p for i, p in enumerate(mapped) if pattern >> i & 1], marked.filter(pl.col("_pattern") == pattern))
              for pattern in common]
    rest = marked.filter(~pl.col("_pattern").is_in(common))
    if not rest.is_empty():
        union = rest.select(pl.col("_pattern").unique()).to_series().to_list()
        groups.append(([p for i, p in enumerate(mapped) if any(u >> i & 1 for u in union)], rest))
    return groups


def _reindexed(
    changed: pl.DataFrame, created: pl.DataFrame, state: FileMerge
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Given changed stored profiles and new ones (placeholder ids), both beside their `…_was` columns, return
    the identity index changes (property, value, profile_id) that keep it in step: releases and claims of
    stored profiles, and the new profiles' values found by (unclaimed) and added; each sorted by value.

    Only stored profiles whose identifier text changed are compared value by value.
    """
    props = state.indexed_props
    if not props:
        empty = pl.DataFrame(schema={"property": pl.String, "value": pl.String, "profile_id": pl.Int64})
        return empty, empty, empty, empty
    moved = pl.any_horizontal(pl.col(prop_col(p)).ne_missing(pl.col(f"{prop_col(p)}_was")) for p in props)
    stored = changed.filter(moved)
    claims, releases, found, added = [], [], [], []
    for prop in props:
        old, new = rules.decode(pl.col(f"{prop_col(prop)}_was")), rules.decode(pl.col(prop_col(prop)))
        claims.append(_long(stored, prop, new.list.set_difference(old)))
        releases.append(_long(stored, prop, old.list.set_difference(new)))
        same = pl.col(prop_col(prop)).eq_missing(pl.col(f"{prop_col(prop)}_was"))
        found.append(_long(created.filter(same), prop, new))  # the common case: no row of the batch added any
        grown = created.filter(~same)
        found.append(_long(grown, prop, new.list.set_intersection(old)))
        added.append(_long(grown, prop, new.list.set_difference(old)))
    claimed = pl.concat(claims).sort("property", "value")
    # The values a new profile was found by were looked up before the batch: no profile held them, so
    # PostgreSQL indexes them without a conflict check (twice as fast), unless a stored one claimed them.
    fresh = pl.concat(found).join(claimed, on=["property", "value"], how="anti", maintain_order="left")
    for (prop,), group in pl.concat([claimed, *found, *added]).group_by("property"):
        hashes = rowkeys.short_hash(group.get_column("value"))
        state.added[prop] = rowkeys.merge_sorted(state.added[prop], hashes) if prop in state.added else hashes.sort()
    return (pl.concat(releases).sort("property", "value"), claimed,
            fresh.unique(["property", "value"], maintain_order=True).sort("property", "value"),
            pl.concat(added).sort("property", "value"))


def _long(joined: pl.DataFrame, prop: str, values: pl.Expr) -> pl.DataFrame:
    return joined.select(pl.lit(prop).alias("property"), values.alias("value"), pl.col("pid").alias("profile_id")) \
        .explode("value").drop_nulls("value")


def _remember_touched(conn: Connection, state: FileMerge) -> None:
    """Add the profiles the file touched so far to the goal's set (memory stays flat for huge files)."""
    if state.touched:
        queries.remember_goal_profiles(conn, state.ctx.goal.name, pl.concat(state.touched))
        state.touched.clear()


def _link_groups(store: Store, conn: Connection, applied: pl.DataFrame, state: FileMerge) -> None:
    """Link the applied rows' profiles to the groups their group fields name (an empty cell: no change)."""
    for ref in state.ctx.groups:
        rows = applied.select(pl.col("_pid").alias("profile_id"), rules.split_expression(
            pl.col(field_col(ref.field)), state.ctx.separator).alias("key")).filter(pl.col("key").list.len() > 0)
        if ref.rule == "set":  # a profile's last row in the batch says which groups it is in
            rows = rows.unique(subset="profile_id", keep="last", maintain_order=True)
        links = rows.explode("key").with_columns(type=pl.lit(ref.type))
        queries.link_groups(store, conn, links, replace=ref.rule == "set", goal=state.ctx.goal.name)


def finish(conn: Connection, states: list[FileMerge], *, cleared: int = 0) -> tuple[int, int, list[int]]:
    """Given the merges of one file (or linked set) and how many profiles its overwrite cleared, add the
    profiles they touched to the goal's set; return (created, updated, last five touched ids).

    A profile the file created and then changed again counts as created only.
    """
    last: list[int] = []
    for state in states:
        _remember_touched(conn, state)
        last = list(dict.fromkeys([*state.last, *last]))[:5]
    firsts = [s.first_created for s in states if s.first_created is not None]
    changed = pl.concat([s.changed for s in states]).unique()
    if firsts:
        changed = changed.filter(changed < min(firsts))
    return sum(s.created for s in states), changed.len() + cleared, last
