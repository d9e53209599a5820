"""What each console page shows, read from the configuration, the store, the keyring and the server.

Plain data for the templates: no HTML here, and no escaping either (Jinja2 escapes every value
it prints). Values from outside (remote names, cells, errors that quote them) also pass
through `visible`, so a control character or a bidi override shows as its escape, as in the CLI.
"""

from __future__ import annotations

import csv
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sftp_connector import files, history, pgp, preview, rejects, schedule, sftp
from sftp_connector.config import models
from sftp_connector.config.load import Config, goal_digest
from sftp_connector.errors import GoalError
from sftp_connector.goals import runner, selection
from sftp_connector.goals.context import RunContext
from sftp_connector.results import GoalResult, RunResult, iso
from sftp_connector.shown import visible
from sftp_connector.store import queries, runs
from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)

KEY_WARNING_DAYS = 30
MASK = "•••"
RUN_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{6}$")
PREVIEW_ROWS = 10
PREVIEW_READ_ROWS = 1_000
"""Rows of each file a console preview reads: enough for its columns and samples, and memory stays small."""
REJECT_ROWS = 100
PER_PAGE = 50
"""Runs a history page lists."""
CHART_RUNS = 60
"""Runs the history's chart shows (at least a page and one: page 0 is read with it)."""
RUN_FILES_SHOWN = 500
"""Files of a goal a run's page lists (a run of 20,000 small files stays a page)."""


# ── overview ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class KeyRow:
    fingerprint: str
    uids: str
    role: str
    expires: str
    warning: str | None


@dataclass
class KeyCache:
    """The keyring's listing, read at most once a minute (opening the keyring runs gpg a few times)."""

    rows: list[KeyRow] = field(default_factory=list)
    error: str | None = None
    read_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, config: Config) -> tuple[list[KeyRow], str | None]:
        with self.lock:
            if time.time() - self.read_at > 60:
                self.rows, self.error = _keys(config)
                self.read_at = time.time()
            return self.rows, self.error


def _keys(config: Config) -> tuple[list[KeyRow], str | None]:
    if not config.connector.pgp.enabled:
        return [], None
    try:
        keyring = pgp.open_keyring(config.connector.pgp, config.gnupg_home)
    except Exception as exc:  # a missing key file: the page says so, the console goes on
        return [], f"cannot open the keyring: {exc}"
    listed = pgp.list_keys(keyring)  # the agent stays: a run beside the console may be using it
    return [KeyRow(k.fingerprint, visible(", ".join(k.uids)), "our key (decrypts, signs)" if k.secret
                   else "partner key (encrypt to, verify)", k.expires or "never", _expiry_warning(k.expires))
            for k in listed], None


def _expiry_warning(expires: str | None, now: float | None = None) -> str | None:
    """A warning for a key that expires within KEY_WARNING_DAYS days, or has expired."""
    if not expires:
        return None
    moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    days = (moment.timestamp() - (now or time.time())) / 86400
    if days < 0:
        return "expired"
    return f"expires in {days:.0f} day(s): renew it" if days <= KEY_WARNING_DAYS else None


def connection(config: Config) -> dict[str, Any]:
    """The SFTP connection as the overview shows it: never a secret."""
    s = config.connector.sftp
    return {"host": visible(s.host), "port": s.port, "user": visible(s.username), "auth": s.auth.method,
            "home": visible(s.home), "host_keys": _host_keys(s), "proxy_jump": s.proxy_jump}


def _host_keys(s: Any) -> list[str]:
    if s.host_key_fingerprint:
        return [f"pinned {s.host_key_fingerprint}"]
    try:
        return sftp.known_host_fingerprints(s.known_hosts, s.host, s.port)
    except GoalError as exc:
        return [f"known_hosts unusable: {visible(str(exc))}"]


def schedule_view(config: Config) -> dict[str, Any]:
    plan, times = config.connector.schedule, schedule.upcoming(config.connector.schedule)
    if plan is None or times is None:
        return {"words": "none: runs only when started (Run now, or sftp-connector run)", "next": []}
    return {"words": schedule.in_words(plan), "next": times}


def health_view(store: Store, daemon: Callable[[], dict[str, Any]] | None) -> dict[str, Any]:
    """The store's and the daemon's health: the daemon's own report inside it, else the last scheduled run."""
    state: dict[str, Any] = {"store": runs.answers(store), "daemon": None, "last_scheduled": None}
    if daemon is not None:
        state["daemon"] = daemon()
    if state["store"]:
        with store.connection() as conn:
            state["last_scheduled"] = iso(runs.last_started(conn, "schedule"))
    return state


def last_outcomes(config: Config, store: Store) -> list[dict[str, Any]]:
    """Each goal's last recorded run: when, its outcome and error (one index probe per goal)."""
    found = []
    with store.connection() as conn:
        for goal in runner.ordered(config, [g.name for g in config.goals]):
            last = runs.last_goal_run(conn, goal.name)
            found.append({"goal": goal.name, "kind": goal.kind, "enabled": goal.enabled,
                          "run": last["run"] if last else None, "at": iso(last["started_at"]) if last else None,
                          "status": last["status"] if last else "never run",
                          "error": visible(last["error"] or "") if last else ""})
    return found


# ── goals and detected files ─────────────────────────────────────────────────────────


def goal_rows(config: Config) -> list[dict[str, Any]]:
    """Every goal in run order, with what it reads or writes and how it maps."""
    return [_goal_row(config, g) for g in runner.ordered(config, [g.name for g in config.goals])]


def _goal_row(config: Config, goal: runner.Goal) -> dict[str, Any]:
    row: dict[str, Any] = {"name": goal.name, "kind": goal.kind, "enabled": goal.enabled, "order": goal.order,
                           "file": config.goal_files[goal.name].name}
    if isinstance(goal, models.ExportProfiles):
        row["target"] = f"{goal.directory}/{goal.filename} ({goal.format})"
        row["segment"] = goal.segment or "every profile"
        row["columns"] = [{"column": c.column, "from": c.property or c.value or c.text or ", ".join(c.segments or [])}
                          for c in goal.columns]
        return row
    row["files"] = [{"name": e.name, "directory": e.directory, "pattern": e.pattern or e.regex or "",
                     "link": f"{e.link.parent} = {e.link.child}" if e.link else ""} for e in goal.files]
    row["mappings"] = [{"field": m.field, "property": goal.prefix + m.property, "rule": m.rule} for m in goal.mappings]
    if goal.bulk_mapping is not None:
        row["mappings"].append({"field": "* (every other field)", "property": goal.prefix + "<field>",
                                "rule": goal.bulk_mapping.rule})
    if isinstance(goal, models.ImportProfiles):
        row["identifiers"] = [f"{i.field} → {i.property}" for i in goal.identifiers]
        row["events"] = [e.type for e in goal.events]
    else:
        row["identifiers"] = [f"{goal.identifier.field} → group {goal.group_type}"]
        row["events"] = []
    return row


@dataclass(frozen=True, slots=True)
class Detected:
    path: str
    """As listed (the page shows it through `visible`)."""
    root: bool
    entry: str
    size: int
    modified: str
    status: str
    """imports | unchanged | changing | waiting | failed"""
    why: str


def detected(config: Config, store: Store, name: str) -> list[Detected]:
    """Given an import goal, list its files on the server now and say what the next run does with each.

    Raise ConfigError for an unknown or export goal; GoalError if the server cannot be listed.
    """
    goal = preview.import_goal(config, name)
    original = config.goal(name)
    stable_after = original.stable_after_s if not isinstance(original, models.ExportProfiles) else 0
    ctx = RunContext(config=config, store=store, run=runner.new_run_id(), dry_run=True, stop_agent=False)
    try:
        with store.connection() as conn:
            records = queries.imported_files(conn, goal.name)
        digest = goal_digest(config, goal)
        failed = _failed_last_time(store, goal.name)
        found = []
        for candidate in selection.select(ctx, goal):
            for entry, match in [(goal.files[0].name, candidate.match),
                                 *((e.name, m) for e, m in candidate.linked)]:
                remote = match.remote
                status, why = _next_run(candidate, remote, records.get(remote.path), digest, stable_after,
                                        failed.get(remote.path))
                found.append(Detected(remote.path, entry == goal.files[0].name, entry, remote.size,
                                      _when(remote.mtime), status, visible(why)))
        return found
    finally:
        ctx.close()


def _next_run(candidate: selection.Candidate, remote: sftp.RemoteFile, record: Any, digest: str,
              stable_after: float, failure: str | None) -> tuple[str, str]:
    if candidate.missing:
        return "waiting", f"its linked set is incomplete: {candidate.missing}"
    if not candidate.ready:
        return "waiting", "no done marker yet: still being written"
    if files.unchanged_by_listing(remote, record, digest, False):
        return "unchanged", f"imported {_when(record.imported_at)}; skipped unless it changes"
    age = time.time() - remote.mtime
    if stable_after and age < stable_after:
        return "changing", (f"modified {age:.0f} s ago: a run imports it once it stays unchanged for "
                            f"{stable_after:g} s")
    if failure:
        return "failed", f"failed last time, retried on the next run: {failure}"
    return "imports", "new or changed: imported on the next run"


def _failed_last_time(store: Store, goal: str) -> dict[str, str]:
    last = history.recent(store, goal=goal, limit=1)
    return {f.path: f.error or "" for run in last for g in run.goals for f in g.files if f.status == "failed"}


def _when(timestamp: float | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ── preview ──────────────────────────────────────────────────────────────────────────


def identifier_properties(config: Config) -> list[str]:
    """Every identifier property of the profile goals, in goal order: what a bare value is looked up by."""
    found: list[str] = []
    for goal in config.goals:
        if isinstance(goal, models.ImportProfiles):
            found += [i.property for i in goal.identifiers if i.property not in found]
    return found


def pii_properties(config: Config) -> set[str]:
    """The properties labelled pii in connector.yaml: their values are masked unless an operator unmasks."""
    return {prop for prop, labels in config.connector.labels.items() if "pii" in labels}


def preview_view(config: Config, store: Store, name: str, *, unmasked: bool, path: str | None = None
                 ) -> dict[str, Any]:
    """Given an import goal (and one of its root files' remote path, else the first), decrypt that set in
    memory (the plaintext is deleted once read) and return its files' columns (how each maps), first rows
    (pii masked unless unmasked) and warnings.

    Raise ConfigError for an unknown or export goal; GoalError if listing or reading fails.
    """
    goal = preview.import_goal(config, name)
    ctx = RunContext(config=config, store=store, run=runner.new_run_id(), dry_run=True, stop_agent=False)
    try:
        candidates = selection.select(ctx, goal)
        chosen = next((c for c in candidates if c.match.remote.path == path), None) if path \
            else preview.chosen_set(candidates)
        if chosen is None:
            return {"goal": name, "parts": [], "warnings": [], "empty": True, "file": visible(path) if path else None}
        members = [(goal.files[0], chosen.match), *chosen.linked]
        read = [preview.read_member(ctx, goal, entry, m.remote, rows=PREVIEW_READ_ROWS) for entry, m in members]
    finally:
        ctx.close()
    parts = [part for part, _ in read]
    pii = pii_properties(config)
    return {"goal": name, "empty": False, "file": None,
            "parts": [_part_view(goal, part, signer, pii, masked=not unmasked, root=i == 0)
                      for i, (part, signer) in enumerate(read)],
            "warnings": [visible(w) for w in preview.warnings(config, goal, parts)]}


def _part_view(goal: models.ImportGoal, part: Any, signer: str | None, pii_labelled: set[str], *, masked: bool,
               root: bool) -> dict:
    data = part.data
    mapping = column_mapping(goal, part.entry.name, data.columns, root=root)
    pii = [c for c in data.columns if mapping[c]["property"] in pii_labelled]
    hidden = pii if masked else []
    rows = []
    for record in data.frame.head(PREVIEW_ROWS).select(*data.columns).iter_rows():
        rows.append([MASK if column in hidden and value else visible(value or "")
                     for column, value in zip(data.columns, record, strict=True)])
    return {"label": visible(part.label), "entry": part.entry.name, "rows_read": data.rows_read, "signer": signer,
            "columns": [{"name": visible(c), "pii": c in pii, **mapping[c]} for c in data.columns],
            "rows": rows, "unreadable": len(data.rejects)}


def column_mapping(goal: models.ImportGoal, entry: str, columns: list[str], *, root: bool) -> dict[str, dict]:
    """Given a goal and a file of it, return for each column the property it writes and with which rule
    (identifiers and group keys too); property None for an unmapped column."""
    def field_of(name: str) -> str | None:
        head, _, rest = name.partition(".")
        if rest and head == entry and not root:
            return rest
        return name if root and not (rest and head in {e.name for e in goal.files[1:]}) else None

    found: dict[str, dict[str, Any]] = {c: {"property": None, "rule": None} for c in columns}
    for m in goal.mappings:
        column = field_of(m.field)
        if column in found:
            found[column] = {"property": goal.prefix + m.property, "rule": m.rule}
    if isinstance(goal, models.ImportProfiles) and root:
        for i in goal.identifiers:
            if i.field in found:
                found[i.field] = {"property": i.property, "rule": "identifier"}
        for g in goal.groups:
            if g.field in found:
                found[g.field] = {"property": f"group {g.type}", "rule": g.rule}
    elif isinstance(goal, models.ImportGroups) and root and goal.identifier.field in found:
        found[goal.identifier.field] = {"property": f"group {goal.group_type}", "rule": "identifier"}
    if goal.bulk_mapping is not None and root:
        for column, shown in found.items():
            if shown["property"] is None and not column.startswith("_"):
                found[column] = {"property": goal.prefix + column, "rule": goal.bulk_mapping.rule}
    return found


# ── history ──────────────────────────────────────────────────────────────────────────


def history_page(store: Store, *, page: int) -> dict[str, Any]:
    """A page of runs, newest first, each with its totals, whether an older page exists, and the chart of the
    newest CHART_RUNS runs: one read of the runs and their totals (page 0's runs are the chart's newest)."""
    with store.connection() as conn:
        newest = runs.recent(conn, limit=CHART_RUNS)
        listed = newest[:PER_PAGE + 1] if page == 0 else runs.recent(conn, limit=PER_PAGE + 1,
                                                                        offset=page * PER_PAGE)
        totals = runs.totals(conn, list({r["id"] for r in [*newest, *listed[:PER_PAGE]]}))
    none = {"goals": 0, "failed": 0, "rows": 0}
    rows = [{"run": r["id"], "trigger": r["trigger"], "started": _when(r["started_at"]), "status": r["status"],
             "dry_run": bool(r["dry_run"]), **totals.get(r["id"], none)} for r in listed[:PER_PAGE]]
    return {"runs": rows, "older": len(listed) > PER_PAGE, "page": page,
            "chart": _chart([(r["id"], totals.get(r["id"], none)) for r in reversed(newest)])}


def _chart(counted: list[tuple[str, dict[str, int]]]) -> dict[str, Any]:
    """Rows read (bars) and goals failed (dots) per run, oldest first, laid out for SVG."""
    width, height, slot = 600, 120, 600 / CHART_RUNS
    top = max([t["rows"] for _, t in counted] + [1])
    bars = []
    for i, (run, t) in enumerate(counted):
        tall = t["rows"] / top * (height - 14)
        bars.append({"run": run, "x": round(i * slot, 1), "width": round(max(slot - 2, 1), 1),
                     "y": round(height - tall, 1), "height": round(tall, 1), "rows": t["rows"],
                     "failed": t["failed"], "cx": round(i * slot + slot / 2, 1)})
    return {"bars": bars, "top_rows": top, "runs": len(counted), "width": width, "height": height,
            "failed_runs": sum(1 for _, t in counted if t["failed"])}


def run_view(config: Config, store: Store, run: str) -> RunResult | None:
    """Given a run id, return the run as it was recorded, or None."""
    if not RUN_ID.match(run):
        return None
    with store.connection() as conn:
        found = runs.one(conn, run)
    return None if found is None else history.recorded(store, found)


def reject_files(config: Config, run: str, result: GoalResult | None = None) -> dict[str, str]:
    """Given a run, return its reject files by the remote path they came from (name as stored)."""
    stored = {p.name for p in _stored_rejects(config, run)}
    paths = [f.path for f in result.files] if result else []
    return {path: rejects.file_name(path) for path in paths if rejects.file_name(path) in stored}


def reject_path(config: Config, run: str, name: str) -> Path | None:
    """Given a run and a reject file's name, return its path if it is one of the run's reject files."""
    return next((p for p in _stored_rejects(config, run) if p.name == name), None)


def _stored_rejects(config: Config, run: str) -> list[Path]:
    """The reject files of a run (none for a string that is not a run id: it never becomes a path)."""
    folder = config.state_dir / "rejects" / run
    if not RUN_ID.match(run) or not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_file() and p.suffix == ".csv"]


def reject_rows(path: Path) -> tuple[list[str], list[list[str]], bool]:
    """A reject file's header and first REJECT_ROWS rows (escaped for display); whether there are more."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [visible(c) for c in next(reader, [])]
        rows: list[list[str]] = []
        for row in reader:
            if len(rows) == REJECT_ROWS:
                return header, rows, True
            rows.append([visible(c) for c in row])
    return header, rows, False


# ── profiles ─────────────────────────────────────────────────────────────────────────


def find_profile(store: Store, query: str, identifiers: Sequence[str]) -> dict[str, Any] | None:
    """Given an identifier value (tried under each of `identifiers`, in order), `PROPERTY=VALUE` or a profile
    id, return the profile with its events, or None."""
    with store.connection() as conn:
        if query.strip().isdigit():
            profile = next(queries.iter_profiles(conn, only=int(query.strip())), None)
        elif "=" in query:
            prop, value = query.split("=", 1)
            profile = queries.profile_by(conn, prop.strip(), value.strip())
        else:
            profile = queries.profile_by_identifier(conn, query.strip(), identifiers)
        if profile is None:
            return None
        profile["events"] = queries.events_of(conn, int(profile["id"]), limit=100)
    return profile


def profile_view(profile: dict[str, Any], masked: set[str]) -> dict[str, Any]:
    """A profile as the page shows it: values escaped, pii masked."""
    def shown(prop: str, values: list[Any]) -> list[str]:
        return [MASK] if prop in masked and values else [visible(str(v)) for v in values]

    return {"id": str(profile["id"]), "created": iso(profile["created_at"]), "updated": iso(profile["updated_at"]),
            "properties": [(visible(k), shown(k, v)) for k, v in sorted(profile["properties"].items())],
            "groups": [(visible(k), [visible(x) for x in v]) for k, v in sorted(profile["groups"].items())],
            "events": [{"type": visible(e["type"]), "id": visible(str(e["id"])), "time": e["time"],
                        "properties": visible(str(e["properties"])), "nested": visible(str(e["nested"]))}
                       for e in profile["events"]]}
