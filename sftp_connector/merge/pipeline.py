"""A file's merge from start to finish: its batches read, applied and written on three threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector.merge.context import FileMerge, Settings, mappings
from sftp_connector.merge.memory import fresh, keyed, latest_by_hash
from sftp_connector.merge.plan import Plan, Read, added_by_file, changed_by_file, conflicts, plan_batch, read_batch
from sftp_connector.merge.write import remember_touched, staged, write_plan
from sftp_connector.results import Touched
from sftp_connector.rowkeys import HASH_SEED
from sftp_connector.store import queries
from sftp_connector.store.db import Store

T = TypeVar("T")


def start(
    store: Store, conn: Connection, settings: Settings, fields: list[str], *, file_id: int, now: float
) -> FileMerge:
    """Given the merge settings and the file's columns, return the state for merging its batches.

    Raise InputError if a mapped or identifier field is not a column of the file.
    """
    previous = queries.imported_rows(conn, file_id)
    if previous is not None:
        previous = latest_by_hash(previous.with_columns(_h=pl.col("key").hash(seed=HASH_SEED)))
    state = FileMerge(settings, mappings(settings.goal, fields, settings.level), file_id, previous, {}, now)
    before = queries.all_property_columns(conn, settings.entity)
    state.columns = queries.property_columns(store, conn, state.props, settings.entity)
    state.new_columns = any(p not in before for p in state.props)
    state.known_before = {p: queries.has_identities(conn, p, settings.entity) for _, p in state.identifiers}
    return state


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
        rows = fresh(keyed(batch, state), state)
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
        side = self._side() if self._side_ok and not state.new_columns and not added_by_file(rows, state) else None
        if side is not None:
            self.side_reads += 1
            return _Reading(rows, state, self._reader.submit(read_batch, self.store, side, rows, state), True)
        return _Reading(rows, state, self._submit(read_batch, rows, state), False)

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
            read = self._result(self._submit(read_batch, rows, state))  # after every earlier batch's writes
        state.counts.rows_unmatched += read.unmatched
        if read.rows.is_empty():
            return None
        plan = plan_batch(read, state)
        self._submit(write_plan, plan, staged(self.store, plan, state), state)
        return plan

    @staticmethod
    def _stale(waiting: _Reading, read: Read) -> bool:
        """True if the read may miss writes of the file's earlier batches (all planned by now)."""
        rows, state = waiting.rows, waiting.state
        if waiting.side:
            return changed_by_file(read, state) or added_by_file(rows, state)
        return waiting.behind is not None and conflicts(rows, read, waiting.behind, state)

    def _side(self) -> Connection | None:
        """The connection for reads beside the writer's, opened on first use; None where the database cannot
        read beside a write in progress (SQLite outside WAL mode, an in-memory store)."""
        if self._side_conn is None and self._side_ok:
            self._side_conn = queries.reader_beside_writer(self.store)
            self._side_ok = self._side_conn is not None
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


def finish(conn: Connection, states: list[FileMerge], *, cleared: int = 0) -> Touched:
    """Given the merges of one file (or linked set) and how many profiles its overwrite cleared, add the
    profiles they touched to the goal's set; return how many it created and updated, and the last it touched.

    A profile the file created and then changed again counts as created only.
    """
    last: list[int] = []
    for state in states:
        remember_touched(conn, state)
        last = list(dict.fromkeys([*state.last, *last]))[:5]
    firsts = [s.first_created for s in states if s.first_created is not None]
    changed = pl.concat([s.changed for s in states]).unique()
    if firsts:
        changed = changed.filter(changed < min(firsts))
    return Touched(sum(s.created for s in states), changed.len() + cleared, last)
