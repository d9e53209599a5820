"""`preview GOAL`: what an import goal would read, shown before anything is imported.

It lists the goal's files and linked sets, downloads and decrypts one set into the run's work
folder, and prints each file's columns, sample values and first rows, then warnings: fields
the goal names that its files lack (checked after linking and processors, as the import sees
them) and properties that other goals also write. Read-only: the context is a dry run, the
store is never written, remote files are never moved, and the plaintext is deleted on return.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sftp_connector import csvio, files, linked, processors, sftp
from sftp_connector.config import models
from sftp_connector.config.load import Config
from sftp_connector.errors import ConfigError, GoalError, InputError
from sftp_connector.goals import imports, runner, selection
from sftp_connector.goals.context import RunContext
from sftp_connector.shown import visible
from sftp_connector.store.db import Store

SAMPLES = 3  # distinct sample values shown per column
CELL = 40  # characters of a value shown before it is cut


def show(config: Config, store: Store, name: str, *, rows: int, console: Console) -> None:
    """Given the configuration, the store and an import goal's name, print its matched files and linked
    sets, then the columns, sample values and first `rows` rows of its first set, then warnings; change nothing.

    Raise ConfigError for an unknown goal or an export goal; GoalError (naming goal and file) if listing,
    downloading, decrypting or reading fails.
    """
    goal = import_goal(config, name)
    ctx = RunContext(config=config, store=store, run=runner.new_run_id(), dry_run=True)
    try:
        _print_header(console, goal)
        candidates = _print_files(console, ctx, goal)
        chosen = chosen_set(candidates)
        if chosen is None:
            console.print("no root file matches: nothing to preview", markup=False, highlight=False)
            return
        parts = _read_set(ctx, goal, chosen, console)
        for part in parts:
            _print_part(console, part, rows)
        for warning in warnings(config, goal, parts):
            console.print(f"warning: {visible(warning)}", markup=False, highlight=False)
    except GoalError as exc:
        exc.located(goal=goal.name)
        raise
    finally:
        ctx.close()


def import_goal(config: Config, name: str) -> models.ImportGoal:
    """Return the named goal, with stable_after_s 0: a preview looks at files as they are, without waiting."""
    goal = config.goal(name)
    if isinstance(goal, models.ExportProfiles):
        raise ConfigError(f"goal {name} is an export-profiles goal: preview shows import goals")
    return goal.model_copy(update={"stable_after_s": 0})


def _print_header(console: Console, goal: models.ImportGoal) -> None:
    readiness = ("done markers are shown, not waited for" if goal.done_marker
                 else "readiness (whether a file is still being written) is not checked")
    console.print(f"goal {goal.name} ({goal.kind}): preview only: nothing is written to the store and no remote "
                  f"file is moved; {readiness}", markup=False, highlight=False)


# ── files and linked sets ────────────────────────────────────────────────────────────


def _print_files(console: Console, ctx: RunContext, goal: models.ImportGoal) -> list[selection.Candidate]:
    """Print every file entry's matched files and each root file's linked set; return the root files."""
    table = Table(title="matched files")
    for column in ("entry", "file", "wildcard", "size", "modified (UTC)"):
        table.add_column(column)
    for entry in goal.files:
        for match in _matched(ctx, goal, entry):
            remote = match.remote
            table.add_row(entry.name, Text(visible(remote.path)), Text(visible(match.wildcard or "")),
                          _size(remote.size), datetime.fromtimestamp(remote.mtime, UTC).strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)
    candidates = selection.select(ctx, goal)
    if len(goal.files) > 1:
        console.print("linked sets (paired by wildcard value):", markup=False, highlight=False)
        for candidate in candidates:
            console.print(f"  {visible(_pairing(candidate))}", markup=False, highlight=False)
    return candidates


def _matched(ctx: RunContext, goal: models.ImportGoal, entry: models.FileEntry) -> list[files.Match]:
    """The entry's matching files, paired or not (done markers left out, as the import does)."""
    listing = ctx.session().list(entry.directory)
    names = {r.name for r in listing}
    return files.match(entry, [r for r in listing if not files.is_marker(goal.done_marker, r.name, names)])


def _pairing(candidate: selection.Candidate) -> str:
    root = candidate.match
    line = f"{root.remote.name} [{root.wildcard or 'no wildcard'}]"
    if candidate.linked:
        line += " → " + ", ".join(f"{entry.name}: {m.remote.name}" for entry, m in candidate.linked)
    if candidate.missing:
        line += f" → missing: {candidate.missing}"
    return line if candidate.ready else line + " (not ready: no done marker yet)"


def chosen_set(candidates: list[selection.Candidate]) -> selection.Candidate | None:
    """The set to read: the first complete one in name order, else the first."""
    return next((c for c in candidates if not c.missing), candidates[0] if candidates else None)


def _size(size: int) -> str:
    scaled, units = float(size), ["B", "KiB", "MiB", "GiB"]
    while scaled >= 1024 and len(units) > 1:
        scaled, units = scaled / 1024, units[1:]
    return f"{size} B" if units[0] == "B" else f"{scaled:.1f} {units[0]}"


# ── reading the set ──────────────────────────────────────────────────────────────────


def _read_set(
    ctx: RunContext, goal: models.ImportGoal, candidate: selection.Candidate, console: Console
) -> list[linked.Part]:
    """Download, decrypt and read each file of the set; the plaintext is deleted as soon as it is read."""
    members = [(goal.files[0], candidate.match), *candidate.linked]
    names = ", ".join(m.remote.name for _, m in members)
    if len(goal.files) == 1:
        why = "the first matched file in name order"
    elif candidate.missing:
        why = "no linked set is complete: the first root file in name order, with the linked files found"
    else:
        why = "the first complete linked set in name order"
    console.print(f"reading {visible(names)} ({why})", markup=False, highlight=False)
    return [_read(ctx, goal, entry, match.remote, console) for entry, match in members]


def _read(ctx: RunContext, goal: models.ImportGoal, entry: models.FileEntry, remote: sftp.RemoteFile,
          console: Console) -> linked.Part:
    part, signer = read_member(ctx, goal, entry, remote)
    if signer:
        console.print(f"{visible(remote.name)}: signed by {signer}", markup=False, highlight=False)
    return part


def read_member(ctx: RunContext, goal: models.ImportGoal, entry: models.FileEntry,
                remote: sftp.RemoteFile, *, rows: int | None = None) -> tuple[linked.Part, str | None]:
    """Given a file of a goal, download, decrypt and read it (its first `rows` rows or so, if given: memory then
    stays small whatever the file's size); return it and its signer. The plaintext is deleted as soon as it is
    read. Raise GoalError naming goal and remote file."""
    local = None
    try:
        local = imports.fetch(ctx, goal, entry, remote)
        assert local.plain is not None
        if rows is None:
            data = csvio.read(local.plain, goal.csv, label=remote.name, max_bytes=goal.max_file_bytes,
                              work_dir=ctx.work_dir)
        else:
            first = csvio.batches(local.plain, goal.csv, label=remote.name, max_bytes=goal.max_file_bytes,
                                  work_dir=ctx.work_dir, batch_rows=rows)
            try:
                data = next(first)
            finally:
                first.close()
    except GoalError as exc:
        exc.file = remote.path  # pgp names its local temp file; the operator needs the remote one
        exc.located(goal=goal.name)
        raise
    finally:
        if local is not None and local.plain is not None:
            local.plain.unlink(missing_ok=True)
    return linked.Part(entry, remote.name, data), local.signer


# ── printing one file ────────────────────────────────────────────────────────────────


def _print_part(console: Console, part: linked.Part, rows: int) -> None:
    """Print a file's columns with sample values, its first rows and how many rows were unreadable."""
    data = part.data
    console.print(f"\n{visible(part.label)} (file {part.entry.name}): {data.rows_read} row(s), "
                  f"{len(data.columns)} column(s)",
                  markup=False, highlight=False)
    columns = Table(title=f"columns of {visible(part.label)}")
    columns.add_column("column")
    columns.add_column(f"sample values (up to {SAMPLES})")
    for name in data.columns:
        columns.add_row(Text(visible(name)), Text(", ".join(_samples(data.frame, name))))
    console.print(columns)
    if rows > 0:
        console.print(_rows_table(part, rows))
    if data.rejects:
        first = data.rejects[0]
        console.print(f"{len(data.rejects)} unreadable row(s) in {visible(part.label)}; first: row {first.row}: "
                      f"{visible(first.reason)}", markup=False, highlight=False)


def _samples(frame: pl.DataFrame, name: str) -> list[str]:
    values = frame.get_column(name).drop_nulls()
    return [_cut(v) for v in values.filter(values != "").unique(maintain_order=True).head(SAMPLES).to_list()]


def _rows_table(part: linked.Part, rows: int) -> Table:
    frame = part.data.frame
    table = Table(title=f"first {min(rows, frame.height)} of {frame.height} row(s) of {visible(part.label)}")
    table.add_column("row", justify="right")
    for name in part.data.columns:
        table.add_column(Text(visible(name)))
    for record in frame.head(rows).select(csvio.ROW, *part.data.columns).iter_rows():
        table.add_row(str(record[0]), *(Text(_cut(v or "")) for v in record[1:]))
    return table


def _cut(value: str) -> str:
    """A cell as the terminal shows it: escaped (see shown.py), then cut to CELL characters."""
    value = visible(value)
    return value if len(value) <= CELL else value[: CELL - 1] + "…"


# ── warnings ─────────────────────────────────────────────────────────────────────────


def warnings(config: Config, goal: models.ImportGoal, parts: list[linked.Part]) -> list[str]:
    """Given a goal and the files of one of its sets as read, return warnings: fields the goal names that the
    files lack, linking or processor failures the import would hit, and properties other goals also write."""
    view, problems = _view(goal, parts)
    problems += [w for w in _field_warnings(goal, view) if w]
    return problems + _overlap_warnings(config, goal, view.fields(view.root))


def _view(goal: models.ImportGoal, parts: list[linked.Part]) -> tuple[linked.Joined, list[str]]:
    """The set's rows as the import's mappings see them (linked, then processed); and why not, if that fails."""
    problems: list[str] = []
    try:
        view = linked.join(parts) if len(parts) > 1 else _alone(parts[0])
    except InputError as exc:
        problems.append(f"{exc.cause} (the import would fail)")
        view = _alone(parts[0], parts[1:])
    try:
        view.frame = processors.run(processors.build(goal.processors), view.frame, label=parts[0].label).frame
    except InputError as exc:
        problems.append(f"{exc.cause} (the import would fail; fields are checked before the processors)")
    return view, problems


def _alone(root: linked.Part, children: list[linked.Part] | None = None) -> linked.Joined:
    """The set's columns without joining rows: a root file alone, or a set whose link keys are wrong."""
    frame = root.data.frame
    if children:
        frame = pl.DataFrame(schema={**dict.fromkeys(root.data.columns, pl.String), **{
            f"{p.entry.name}.{c}": pl.String for p in children for c in p.data.columns}})
    labels = {root.entry.name: root.label, **{p.entry.name: p.label for p in children or []}}
    return linked.Joined(frame, root.entry.name, labels)


def _field_warnings(goal: models.ImportGoal, view: linked.Joined) -> list[str | None]:
    """A warning for each field the goal names that is not in its file (files not read are not checked)."""
    children = {e.name for e in goal.files[1:]}
    found = [_missing(view, "mapping", *_owned(m.field, view.root, children)) for m in goal.mappings]
    if isinstance(goal, models.ImportGroups):
        return [*found, _missing(view, "identifier", view.root, goal.identifier.field)]
    found += [_missing(view, "identifier", view.root, i.field) for i in goal.identifiers]
    found += [_missing(view, f"groups[{g.type}]", view.root, g.field) for g in goal.groups]
    for event in goal.events:
        own = [event.id, *([event.time] if event.time else []), *event.properties.values()]
        found += [_missing(view, f"event {event.type}", event.file or view.root, f) for f in own]
        found += [_missing(view, f"event {event.type}.{n.name}", n.file, f)
                  for n in event.nested for f in n.properties.values()]
    return found


def _owned(name: str, root: str, children: set[str]) -> tuple[str, str]:
    """Given a mapped field, return (file entry, field): `orders.amount` is `amount` of `orders`."""
    entry, _, field = name.partition(".")
    return (entry, field) if field and entry in children else (root, name)


def _missing(view: linked.Joined, what: str, entry: str, field: str) -> str | None:
    if entry not in view.labels or linked.column(entry, field, view.root) in view.frame.columns:
        return None
    own = [c.removeprefix(f"{entry}.") for c in view.fields(entry)]
    return (f"{what} names field {field!r}, which is not in {view.labels[entry]} (file {entry}; "
            f"fields: {', '.join(own) or 'none'})")


def _overlap_warnings(config: Config, goal: models.ImportGoal, root_fields: list[str]) -> list[str]:
    """A warning for each property this goal maps that another goal of the same target also maps."""
    writers: dict[str, list[str]] = {}
    for other in config.goals:
        if other.name != goal.name and isinstance(other, models.ImportGoal) and _target(other) == _target(goal):
            for prop in {other.prefix + m.property for m in other.mappings}:
                writers.setdefault(prop, []).append(other.name)
    return [f"{_target(goal)} property {prop} is also written by goal(s) {', '.join(writers[prop])}"
            for prop in sorted(_written(goal, root_fields)) if prop in writers]


def _target(goal: models.ImportGoal) -> str:
    return "profile" if isinstance(goal, models.ImportProfiles) else f"group ({goal.group_type})"


def _written(goal: models.ImportGoal, root_fields: list[str]) -> set[str]:
    """The properties the goal writes: its mappings, and with bulk_mapping each unmapped root field."""
    written = {goal.prefix + m.property for m in goal.mappings}
    if goal.bulk_mapping is None:
        return written
    taken = {m.field for m in goal.mappings}
    if isinstance(goal, models.ImportProfiles):
        taken |= {i.field for i in goal.identifiers} | {g.field for g in goal.groups}
    else:
        taken.add(goal.identifier.field)
    return written | {goal.prefix + f for f in root_fields if f not in taken and not f.startswith("_")}
