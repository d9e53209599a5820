"""Import goals, one file at a time: list → download → decrypt → read → merge → commit → tidy the server.

Each file's rows and its checksum record are written in one transaction: a file that fails
writes nothing and is tried again next run. Remote files are moved or deleted only after
the store has committed. A lone file is read and merged while gpg decrypts it, unless a
signature is required; gpg's checks are waited for before its rejects file and its commit.
If gpg fails meanwhile (or passes max_file_bytes) no further batch is started: gpg's error is
the file's, and the transaction is rolled back with the merge's queued work.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sftp_connector import csvio, events, failpoints, files, linked, merge, pgp, processors, removals, sftp
from sftp_connector import rejects as rejects_file
from sftp_connector.config import models
from sftp_connector.config.load import goal_digest
from sftp_connector.errors import ConfigError, GoalError, InputError, Interrupted, RowReject, TransportError
from sftp_connector.goals import selection
from sftp_connector.goals.context import RunContext, sha256_of
from sftp_connector.readahead import read_ahead
from sftp_connector.results import FileResult, FileStatus, GoalResult, Touched
from sftp_connector.store import models as tables
from sftp_connector.store import queries

logger = logging.getLogger(__name__)

# Rows merged at a time: memory stays flat whatever the file's size; larger batches gain little.
BATCH_ROWS = 100_000
AHEAD_MAX_BYTES = 1 << 20
"""Files up to this size are fetched (downloaded, their decryption started) while the file before merges."""


def run(ctx: RunContext, goal: models.ImportGoal) -> GoalResult:
    """Given an import goal, import each of its ready files (with their linked files) and return what happened.

    A failing file fails the goal but not the files after it.
    """
    result = GoalResult(goal.name, goal.kind, started_at=time.time())
    digest = goal_digest(ctx.config, goal)
    try:
        steps = processors.build(goal.processors)
        with ctx.store.connection() as conn:
            records = queries.imported_files(conn, goal.name)
        candidates = selection.select(ctx, goal, lambda remote: files.unchanged_by_listing(
            remote, records.get(remote.path), digest, ctx.force))
    except ConfigError as exc:
        result.fail(str(InputError(str(exc)).located(goal=goal.name)))
        result.finished_at = time.time()
        return result
    except GoalError as exc:
        result.fail(str(exc.located(goal=goal.name)))
        result.finished_at = time.time()
        return result
    ahead = _Ahead()
    jobs = [FileJob(goal, c, records, digest, steps, ahead) if c.ready else c for c in candidates]
    try:
        for i, job in enumerate(jobs):
            if ctx.stop.is_set():
                break
            if not isinstance(job, FileJob):
                result.files += [FileResult(m.remote.path, "skipped_unstable") for m in selection.members(job)]
                continue
            ahead.next = next((j for j in jobs[i + 1:] if isinstance(j, FileJob)), None)
            result.files += import_file(ctx, job, result)
    finally:
        ahead.discard()
    failed = [f for f in result.files if f.status == "failed"]
    if failed:
        result.status, result.error = "failed", failed[0].error
    return ctx.finish_goal(result)


@dataclass(frozen=True, slots=True)
class FileJob:
    """One root file (and its linked set) to import: its goal, where it was listed, the goal's import
    records, its digest and its processors."""

    goal: models.ImportGoal
    candidate: selection.Candidate
    records: dict[str, tables.ImportedFile]
    digest: str
    steps: list[processors.Step]
    ahead: _Ahead | None = None

    @property
    def lone(self) -> bool:
        """One file, merged while gpg decrypts it (no linked files, no signature to check first)."""
        return not self.candidate.linked and not self.candidate.missing

    def unchanged_by_listing(self, force: bool) -> bool:
        """True if every file of the set is listed as its import record says: it is skipped without download."""
        return all(files.unchanged_by_listing(r, self.records.get(r.path), self.digest, force) for _, r in self.members)

    @property
    def remote(self) -> sftp.RemoteFile:
        return self.candidate.match.remote

    @property
    def members(self) -> list[tuple[models.FileEntry, sftp.RemoteFile]]:
        """The set's files, root first."""
        return [(self.goal.files[0], self.remote), *((e, m.remote) for e, m in self.candidate.linked)]


def import_file(ctx: RunContext, job: FileJob, totals: GoalResult) -> list[FileResult]:
    """Given a ready root file, import it with its linked files in one transaction and return a result per
    file; never raise a GoalError."""
    goal = job.goal
    if job.unchanged_by_listing(ctx.force) and not job.candidate.missing:
        return [FileResult(r.path, "skipped_unchanged", job.records[r.path].sha256) for _, r in job.members]
    try:
        if job.candidate.missing:
            raise InputError(job.candidate.missing)
        return _download_and_merge(ctx, job, totals)
    except GoalError as exc:
        exc.file = _remote_path_of(ctx, job, exc.file)  # the one place an import's errors get their file
        exc.located(goal=goal.name)
        logger.error("%s", exc)
        if isinstance(exc, TransportError) and exc.transient:
            ctx.drop_session()
        warnings = {r.path: None if isinstance(exc, Interrupted) else _after_error(ctx, goal, r)
                    for _, r in job.members}
        return [FileResult(r.path, "failed", error=str(exc), warning=warnings[r.path]) for _, r in job.members]
    finally:
        for _, member in job.members:
            for leftover in ctx.work_dir.glob(sftp.local_name(member.path) + "*"):
                leftover.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Local:
    """A downloaded file of the set: its entry, its remote file, its plaintext and who signed it.

    While `decryption` is set, gpg is still writing `plain`: read it through `source`, and trust
    nothing of it (commit nothing, write no rejects) before `_verified` returned."""

    entry: models.FileEntry
    remote: sftp.RemoteFile
    sha256: str
    plain: Path | None = None
    signer: str | None = None
    decryption: pgp.Decryption | None = None

    @property
    def source(self) -> csvio.Source:
        assert self.plain is not None
        return self.decryption.open if self.decryption is not None else self.plain


def _remote_path_of(ctx: RunContext, job: FileJob, file: str | None) -> str:
    """Given the file an error names, return the remote path the operator knows it by: the stages name a file
    by what they were given (the reader by its bare name, as rejects do; gpg by its local copy). The one place
    an import's errors are located."""
    for _, remote in job.members:
        local = str(ctx.work_dir / sftp.local_name(remote.path))
        if file in (remote.path, remote.name) or (file is not None and file.startswith(local)):
            return remote.path
    return file or job.remote.path


def _download_and_merge(ctx: RunContext, job: FileJob, totals: GoalResult) -> list[FileResult]:
    streamed = job.lone and not ctx.config.connector.pgp.decrypt.require_signature_from
    prefetched = job.ahead.take(job.remote.path) if job.ahead is not None and streamed else None
    downloaded = [prefetched] if prefetched else [_download(ctx, job.goal, e, r) for e, r in job.members]
    failpoints.reached("after-download")
    if all(files.unchanged_by_content(d.sha256, job.records.get(d.remote.path), job.digest, ctx.force)
           for d in downloaded):
        _stop_decryptions(downloaded)
        for d in downloaded:
            _refresh_listing(ctx, job.records.get(d.remote.path), d.remote, job.candidate.listed_at)
        return [FileResult(d.remote.path, "skipped_unchanged", d.sha256) for d in downloaded]
    # A lone file is merged while gpg decrypts it, unless a signature is required: then no row is read before
    # the signature is checked. Linked files are joined whole.
    if streamed:
        plain = downloaded if prefetched else [_decrypting(ctx, job.goal, downloaded[0])]
        if job.ahead is not None:
            job.ahead.fetch(ctx, plain[0])  # the next small file downloads now and decrypts while this one merges
    else:
        plain = [_verified(_decrypting(ctx, job.goal, d)) for d in downloaded]
    with _decryptions_stopped_on_failure(plain):
        results = _merge(ctx, job, plain, totals) if len(plain) == 1 else _merge_linked(ctx, job, plain, totals)
    for result, d in zip(results, plain, strict=True):
        result.signer = result.signer or d.signer  # a streamed file's merge verified it; a linked set was before
    if results[0].status == "imported":
        for result, d in zip(results, plain, strict=True):
            result.warning = _after_import(ctx, job.goal, d.remote)
    for result in results:
        logger.info("goal %s: %s %s: %s", job.goal.name, result.status, result.path, _counts_line(result.counts))
    return results


@dataclass(slots=True)
class _Ahead:
    """The goal's next lone file, downloaded and being decrypted while the file in hand merges: many small
    files then spend gpg's time and the merge's side by side. A failure here is dropped: the file's own
    turn downloads it again and reports it."""

    next: FileJob | None = None
    held: Local | None = None

    def fetch(self, ctx: RunContext, current: Local) -> None:
        """Given the file in hand (its gpg started), fetch the next one if it is a small lone file."""
        job, self.next = self.next, None
        if job is None or not job.lone or job.remote.size > AHEAD_MAX_BYTES or ctx.stop.is_set() \
                or job.unchanged_by_listing(ctx.force):
            return
        entry, remote = job.members[0]
        try:
            downloaded = _download(ctx, job.goal, entry, remote)
            unchanged = files.unchanged_by_content(downloaded.sha256, job.records.get(remote.path), job.digest,
                                                   ctx.force)
            if current.decryption is not None:
                current.decryption.wait_running()  # gpg takes files one at a time: the one in hand goes first
            self.held = downloaded if unchanged else _decrypting(ctx, job.goal, downloaded)
        except GoalError as exc:
            logger.debug("goal %s: %s not fetched ahead (its turn fetches it again): %s", job.goal.name,
                         remote.path, exc)
            if isinstance(exc, TransportError) and exc.transient:
                ctx.drop_session()

    def take(self, path: str) -> Local | None:
        held, self.held = self.held, None
        if held is not None and held.remote.path != path:
            self._drop(held)
            return None
        return held

    def discard(self) -> None:
        """Stop and remove what is held (a stop, or the goal's end)."""
        if self.held is not None:
            self._drop(self.held)
            self.held = None

    @staticmethod
    def _drop(held: Local) -> None:
        _stop_decryptions([held])
        for path in (held.plain, held.plain.with_suffix("") if held.plain else None):
            if path is not None:
                path.unlink(missing_ok=True)


def fetch(
    ctx: RunContext, goal: models.ImportGoal, entry: models.FileEntry,
    remote: sftp.RemoteFile,
) -> Local:
    """Given a listed file of the goal, download and decrypt it into the run's work folder (as `preview`
    needs); the caller removes it. Raise GoalError if a stage fails."""
    return _verified(_decrypting(ctx, goal, _download(ctx, goal, entry, remote)))


def _local(ctx: RunContext, remote: sftp.RemoteFile) -> Path:
    return ctx.work_dir / sftp.local_name(remote.path)


def _download(
    ctx: RunContext, goal: models.ImportGoal, entry: models.FileEntry,
    remote: sftp.RemoteFile,
) -> Local:
    report = ctx.progress
    local = _local(ctx, remote)
    ctx.session().download(remote, local, max_bytes=goal.max_file_bytes,
                           progress=(lambda done: report(remote.name, done, remote.size, "bytes")) if report else None)
    return Local(entry, remote, sha256_of(local))


def _decrypting(ctx: RunContext, goal: models.ImportGoal, downloaded: Local) -> Local:
    """Start decrypting the downloaded file; return it with its plaintext being written (see `Local`).
    A plaintext file is returned as it is. Raise GoalError if it cannot be decrypted here."""
    local = _local(ctx, downloaded.remote)
    if not pgp.looks_encrypted(local):
        return replace(downloaded, plain=local)
    settings = ctx.config.connector.pgp
    if not settings.enabled:
        raise InputError("the file is OpenPGP-encrypted but pgp.enabled is false: enable pgp and configure "
                         "pgp.decrypt.private_key", file=downloaded.remote.path)
    passphrase = settings.decrypt.passphrase.get_secret_value() if settings.decrypt.passphrase else None
    plain = local.with_name(local.name + ".plain")
    symmetric = settings.decrypt.symmetric_passphrase
    decryption = pgp.Decryption(ctx.keyring(), local, plain, passphrase=passphrase, max_bytes=goal.max_file_bytes,
                                symmetric_passphrase=symmetric.get_secret_value() if symmetric else None,
                                require_signers=settings.decrypt.require_signature_from)
    return replace(downloaded, plain=plain, decryption=decryption)


def _verified(d: Local) -> Local:
    """Given a file, wait for its decryption if one is under way; return it with its signer. Raise
    GoalError if gpg failed: the file is not to be trusted (bad signature, altered data, too big)."""
    if d.decryption is None:
        return d
    outcome = d.decryption.wait()  # its errors name the local copy: import_file says the remote path
    _decrypted(d)
    return replace(d, signer=outcome.signer or outcome.signer_key_id, decryption=None)


def _decrypted(d: Local) -> None:
    """The file passed gpg's checks: drop its encrypted download to free the disk early."""
    assert d.plain is not None
    d.plain.with_suffix("").unlink(missing_ok=True)
    failpoints.reached("after-decrypt")


@contextlib.contextmanager
def _decryptions_stopped_on_failure(locals_: list[Local]) -> Iterator[None]:
    """Stop any gpg still running when the file fails before or around its merge (the merge itself runs
    inside `pgp.checked`, which decides whose error the file's is)."""
    try:
        yield
    except BaseException:
        _stop_decryptions(locals_)
        raise


def _stop_decryptions(locals_: list[Local]) -> None:
    for d in locals_:
        if d.decryption is not None:
            d.decryption.stop()


def _record(conn: Any, job: FileJob, d: Local, run: str, now: float) -> int:
    return queries.save_imported_file(conn, tables.ImportedFile(
        goal=job.goal.name, path=d.remote.path, size=d.remote.size, mtime=d.remote.mtime, sha256=d.sha256,
        config_digest=job.digest, listed_at=job.candidate.listed_at, imported_at=now, run=run))


def _merge(ctx: RunContext, job: FileJob, locals_: list[Local], totals: GoalResult) -> list[FileResult]:
    """Merge a lone file batch by batch, with its checksum record, in one transaction (rolled back on any error)."""
    goal, (d,) = job.goal, locals_
    assert d.plain is not None
    settings = _merge_context(ctx, goal, d.remote.name, job.digest)
    logger.debug("goal %s: merging %s in one transaction", goal.name, d.remote.path)
    now = time.time()
    with ctx.store.transaction(rollback=ctx.dry_run) as conn:
        with pgp.checked(d.decryption) as verified, merge.Pipeline(ctx.store, conn) as pipeline:
            state, rejects = _merge_batches(ctx, job, d, conn, pipeline, settings, now)
        # gpg's signature and integrity checks passed (`checked` raised otherwise): only now is anything kept.
        if d.decryption is not None:
            _decrypted(d)
        touched = _close_set(ctx, conn, goal, [(d, state.counts, [*rejects, *state.rejects])], [state], now)
    if ctx.progress is not None:
        ctx.progress(f"{d.remote.name} rows merged", state.counts.rows_read, state.counts.rows_read, "rows")
    return _imported(ctx, totals, touched, [(d, state.counts)], signer=verified.signer)


def _merge_batches(
    ctx: RunContext, job: FileJob, d: Local, conn: Any, pipeline: merge.Pipeline, settings: merge.Settings,
    now: float,
) -> tuple[merge.FileMerge, list[RowReject]]:
    """Merge a lone file's batches as they are read (and decrypted); return its merge and its rejects."""
    goal = job.goal
    file_id = _record(conn, job, d, ctx.run, now)
    state: merge.FileMerge | None = None
    rejects: list[RowReject] = []
    for data, processed in read_ahead(_processed_batches(ctx, job, d), name="import-batches"):
        _stop_if_asked(ctx)
        _stop_if_failed(d)
        if state is None:
            state = merge.start(ctx.store, conn, settings, processed.frame.columns, file_id=file_id, now=now)
        counts = state.counts
        counts.rows_read += data.rows_read
        counts.rows_filtered += processed.filtered
        counts.rows_rejected += len(data.rejects)
        counts.cells_rejected += len(processed.rejects)
        rejects += [*data.rejects, *processed.rejects]
        kept, erasures = removals.split_erasures(processed.frame, goal, d.remote.name)
        pipeline.apply(kept, state)
        _report_rows(ctx, d, data, counts.rows_read)
        if not erasures.is_empty() or _has_events(goal):  # they read the store: this batch must be in it
            pipeline.flush(store_changes=not erasures.is_empty())
        counts.erased += removals.erase(ctx.store, conn, erasures, settings, now=now)
        joined = linked.Joined(processed.frame, goal.files[0].name, {goal.files[0].name: d.remote.name})
        for unmatched, rejected in _events(ctx, conn, goal, joined, now).values():
            counts.rows_unmatched += unmatched
            counts.cells_rejected += len(rejected)
            rejects += rejected
    assert state is not None
    _stop_if_failed(d)
    pipeline.flush()
    _stop_if_asked(ctx)  # the writes of the last batches were under way until now
    return state, rejects


def _report_rows(ctx: RunContext, d: Local, data: csvio.CsvData, rows: int) -> None:
    """Tell the progress display how many rows of the file went to the merge, and about how many it has: the
    rows so far scaled by the bytes read of the text's size (of the plaintext written so far while gpg still
    decrypts: the estimate grows to the count)."""
    if ctx.progress is None:
        return
    size = data.text_size if data.text_size is not None else \
        d.decryption.plaintext_bytes if d.decryption is not None else 0
    total = rows * size // data.text_read if data.text_read else 0
    ctx.progress(f"{d.remote.name} rows merged", rows, max(total, rows), "rows")


def _stop_if_asked(ctx: RunContext) -> None:
    """Raise Interrupted if a shutdown signal came: the file's transaction is rolled back."""
    if ctx.stop.is_set():
        raise Interrupted("stopped by a shutdown signal: nothing of the file was written; it is imported "
                          "on the next run")


def _stop_if_failed(d: Local) -> None:
    """Raise gpg's error if the file's decryption failed (passed max_file_bytes, say) while it was merged:
    the batch in hand is not started and the queued ones are dropped."""
    if d.decryption is not None and d.decryption.failed:
        d.decryption.wait()  # raises why


def _processed_batches(ctx: RunContext, job: FileJob, d: Local) -> Iterator[tuple[csvio.CsvData, processors.Processed]]:
    """The file's batches, read and run through the goal's processors (the next one while this one merges)."""
    for data in csvio.batches(d.source, job.goal.csv, label=d.remote.name, max_bytes=job.goal.max_file_bytes,
                              work_dir=ctx.work_dir, batch_rows=BATCH_ROWS):
        yield data, processors.run(job.steps, data.frame, label=d.remote.name)


def _merge_linked(ctx: RunContext, job: FileJob, locals_: list[Local], totals: GoalResult) -> list[FileResult]:
    """Join a root file with its linked files, then merge each file's mappings and import the events, all in
    one transaction with the files' checksum records."""
    goal = job.goal
    parts = [linked.Part(d.entry, d.remote.name, csvio.read(d.plain, goal.csv, label=d.remote.name,
                                                            max_bytes=goal.max_file_bytes, work_dir=ctx.work_dir))
             for d in locals_ if d.plain is not None]
    joined = linked.join(parts)
    processed = processors.run(job.steps, joined.frame, label=parts[0].label)
    joined.frame, erasures = removals.split_erasures(processed.frame, goal, parts[0].label)
    linked.check_fields(goal, joined.frame.columns, joined.labels)
    counts = {p.entry.name: merge.Counts(rows_read=p.data.rows_read, rows_rejected=len(p.data.rejects))
              for p in parts}
    counts[parts[0].entry.name].rows_filtered = processed.filtered
    rejects = {p.entry.name: [*p.data.rejects, *joined.orphans.get(p.entry.name, [])] for p in parts}
    rejects[parts[0].entry.name] += processed.rejects
    counts[parts[0].entry.name].cells_rejected += len(processed.rejects)
    for name, orphans in joined.orphans.items():
        counts[name].orphans = len(orphans)
    now = time.time()
    with ctx.store.transaction(rollback=ctx.dry_run) as conn:
        ids = {d.entry.name: _record(conn, job, d, ctx.run, now) for d in locals_}
        erase_settings = _merge_context(ctx, goal, parts[0].label, job.digest)
        counts[parts[0].entry.name].erased = removals.erase(
            ctx.store, conn, erasures.unique(subset=csvio.ROW, keep="first"), erase_settings, now=now)
        states: list[merge.FileMerge] = []
        for part in parts:
            # Only the first level to change profiles may read beside the transaction (see merge.Pipeline).
            side_reads = not states and erasures.is_empty()
            state = _merge_level(ctx, conn, job, joined, part, ids[part.entry.name], now, side_reads=side_reads)
            if state is not None:
                states.append(state)
                counts[part.entry.name].add_merged(state.counts)
                rejects[part.entry.name] += state.rejects
            _stop_if_asked(ctx)
        for name, (unmatched, rejected) in _events(ctx, conn, goal, joined, now).items():
            counts[name].rows_unmatched += unmatched
            counts[name].cells_rejected += len(rejected)
            rejects[name] += rejected
        touched = _close_set(ctx, conn, goal, [(d, counts[d.entry.name], rejects[d.entry.name]) for d in locals_],
                             states, now)
    return _imported(ctx, totals, touched, [(d, counts[d.entry.name]) for d in locals_])


def _close_set(
    ctx: RunContext, conn: Any, goal: models.ImportGoal, files: list[tuple[Local, merge.Counts, list[RowReject]]],
    states: list[merge.FileMerge], now: float,
) -> Touched | None:
    """End a set's merge (a lone file is a set of one) inside its transaction: write each file's rejects and
    check its reject ratio, clear what overwrite mode clears (counted on the root file), remember what the
    merges touched. Raise InputError if a file has too many rejects: the transaction is rolled back."""
    for d, counts, rejects in files:
        _write_rejects(ctx, goal, d, rejects)
        _check_reject_ratio(goal, counts)
    root = files[0][1]
    if goal.write_mode == "overwrite" and states:
        root.cleared = removals.overwrite(ctx.store, conn, states, force=ctx.force, now=now)
    return merge.finish(conn, states, cleared=root.cleared) if states else None


def _imported(
    ctx: RunContext, totals: GoalResult, touched: Touched | None, files: list[tuple[Local, merge.Counts]],
    *, signer: str | None = None,
) -> list[FileResult]:
    """Once the set's transaction committed: add what it touched to the goal's totals (a failed commit touched
    nothing) and return each file's result."""
    if touched is not None:
        totals.touch(touched)
    status: FileStatus = "dry_run" if ctx.dry_run else "imported"
    return [FileResult(d.remote.path, status, d.sha256, counts, signer=signer) for d, counts in files]


def _merge_level(
    ctx: RunContext, conn: Any, job: FileJob, joined: linked.Joined, part: linked.Part, file_id: int, now: float,
    *, side_reads: bool,
) -> merge.FileMerge | None:
    """Merge one file of a linked set: the root's rows with the root's mappings, a child's rows (carrying
    their root row's identifiers) with the mappings of the child's fields. None if nothing maps to it."""
    goal, name = job.goal, part.entry.name
    root = name == joined.root
    own = frozenset(joined.fields(name))
    mapped = {m.field for m in goal.mappings} | ({"*"} if goal.bulk_mapping and root else set())
    if not root and not mapped & own:
        return None
    settings = _merge_context(ctx, goal, part.label, job.digest, level=own, root=root)
    rows = joined.level(name, [] if root else [f for f, _ in settings.identifiers])
    state = merge.start(ctx.store, conn, settings, rows.columns, file_id=file_id, now=now)
    with merge.Pipeline(ctx.store, conn, side_reads=side_reads) as pipeline:
        for start in range(0, max(rows.height, 1), BATCH_ROWS):
            pipeline.apply(rows.slice(start, BATCH_ROWS), state)
    return state


def _has_events(goal: models.ImportGoal) -> bool:
    return isinstance(goal, models.ImportProfiles) and bool(goal.events)


def _events(
    ctx: RunContext, conn: Any, goal: models.ImportGoal, joined: linked.Joined, now: float
) -> dict[str, tuple[int, list[RowReject]]]:
    """Import the goal's events from joined rows; return, by event file, (rows without a profile, rejects)."""
    found: dict[str, tuple[int, list[RowReject]]] = {}
    if not isinstance(goal, models.ImportProfiles):
        return found
    pairs = [(i.field, i.property) for i in goal.identifiers]
    for spec in goal.events:
        built, rejected = events.build(joined, spec, [f for f, _ in pairs])
        outcome = events.write(ctx.store, conn, built, spec, identifiers=pairs, goal=goal.name, now=now)
        unmatched, earlier = found.get(spec.file or joined.root, (0, []))
        found[spec.file or joined.root] = (unmatched + outcome.unmatched, [*earlier, *rejected])
    return found


def _merge_context(
    ctx: RunContext, goal: models.ImportGoal, label: str, digest: str,
    level: frozenset[str] | None = None, root: bool = True,
) -> merge.Settings:
    return merge.context(goal, label=label, digest=digest, indexed=ctx.indexed, privacy=ctx.config.connector.privacy,
                         level=level, root=root)


def _check_reject_ratio(goal: models.ImportGoal, counts: merge.Counts) -> None:
    if counts.rows_read and counts.rows_rejected / counts.rows_read > goal.max_reject_ratio:
        raise InputError(
            f"{counts.rows_rejected} of {counts.rows_read} rows rejected "
            f"({counts.rows_rejected / counts.rows_read:.1%}), above max_reject_ratio {goal.max_reject_ratio:.1%}: "
            "nothing was imported (see the rejects file)")


def _write_rejects(ctx: RunContext, goal: models.ImportGoal, d: Local,
                   rejects: list[RowReject]) -> None:
    """Write the file's rejected rows as read (a second read of its decrypted copy, only if there are any)."""
    assert d.plain is not None
    target = rejects_file.write(ctx.config.state_dir, ctx.run, d.remote.path, d.plain, goal.csv, rejects,
                                max_bytes=goal.max_file_bytes, work_dir=ctx.work_dir)
    if target:
        logger.info("%d rejected row(s) or cell(s) of %s written to %s", len(rejects), d.remote.path, target)


def _refresh_listing(ctx: RunContext, record: tables.ImportedFile | None, remote: sftp.RemoteFile,
                     listed_at: float) -> None:
    """An unchanged file with a new mtime: remember the new listing so the next run skips it unread."""
    if record is None or ctx.dry_run:
        return
    with ctx.store.transaction() as conn:
        queries.save_imported_file(conn, record.model_copy(update={
            "size": remote.size, "mtime": remote.mtime, "listed_at": listed_at}))


def _after_import(ctx: RunContext, goal: models.ImportGoal,
                  remote: sftp.RemoteFile) -> str | None:
    """Delete or move the imported file (and its done marker); the store has already committed. Return the
    warning to record on the file if that failed."""
    if ctx.dry_run or goal.after_import == "keep":
        return None
    action = "delete" if goal.after_import == "delete" else goal.after_import.move_to
    return _tidy(ctx, goal, remote, action, "after_import")


def _after_error(ctx: RunContext, goal: models.ImportGoal,
                 remote: sftp.RemoteFile) -> str | None:
    if ctx.dry_run or goal.on_error == "keep":
        return None
    return _tidy(ctx, goal, remote, goal.on_error.move_to, "on_error")


def _tidy(ctx: RunContext, goal: models.ImportGoal, remote: sftp.RemoteFile,
          action: str, setting: str) -> str | None:
    """Apply `delete` or a move_to directory (relative to the file's directory) to a file and its marker.
    Return a warning naming the setting, the action, the file and the cause if it failed, else None."""
    paths = [remote.path]
    if goal.done_marker:
        paths.append(remote.path.rsplit("/", 1)[0] + "/" + files.done_marker_name(goal.done_marker, remote.name))
    try:
        for path in paths:
            if action == "delete":
                ctx.session().remove(path)
            else:
                ctx.session().move(path, sftp.resolve(path.rsplit("/", 1)[0] or "/", action))
    except GoalError as exc:
        what = "delete" if action == "delete" else f"move to {action}"
        warning = f"{setting}: could not {what} {remote.path}: {exc.cause}"
        logger.warning("goal %s: %s", goal.name, warning)
        return warning
    return None


def _counts_line(counts: merge.Counts) -> str:
    return ", ".join(f"{name} {value}" for name, value in asdict(counts).items() if value) or "no rows"
