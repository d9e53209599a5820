"""The two ways an import removes data: erasure requests (`delete_when`) and overwrite mode.

An erasure row erases the profile it matches: properties, group links, events and row
records go, the id is never reused, and a later mention makes a new profile (if the goal
may create profiles), never the old one back. In overwrite mode each imported file (set)
is the whole truth for its goal: for every profile the goal held before and the file does
not, the goal's mapped properties are cleared, its `sum` contributions withdrawn and its
group links removed. Both happen in the file's transaction.
"""

from __future__ import annotations

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import identity, merge, rules
from sftp_connector.config import models
from sftp_connector.errors import InputError
from sftp_connector.store import queries, removal, writes
from sftp_connector.store.db import Store


def split_erasures(frame: pl.DataFrame, goal: models.ImportGoal,
                   label: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Given a batch of rows, return (rows to merge, erasure requests). Raise InputError if the
    delete_when field is not a column of the file."""
    rule = goal.delete_when
    if rule is None:
        return frame, frame.clear()
    if rule.field not in frame.columns:
        raise InputError(f"delete_when field {rule.field} is not a column of the file", file=label)
    hit = (pl.col(rule.field).str.strip_chars() == rule.equals).fill_null(False)
    return frame.filter(~hit), frame.filter(hit)


def erase(store: Store, conn: Connection, rows: pl.DataFrame, settings: merge.Settings, *, now: float) -> int:
    """Given erasure requests, erase the profiles they match; return how many were erased."""
    if rows.is_empty():
        return 0
    found = identity.resolve(lambda prop, values: queries.find_identities(store, conn, prop, values, settings.entity),
                             rows, list(settings.identifiers), allow_new=False)
    ids = found.pids.drop_nulls().unique()
    removal.erase(store, conn, ids, settings.entity, goal=settings.goal.name, now=now)
    return ids.len()


def overwrite(store: Store, conn: Connection, states: list[merge.FileMerge], *, force: bool, now: float) -> int:
    """Given the merged file set of an overwrite goal, clear what the goal wrote for the profiles it held
    before and the file set does not hold; return how many. Raise InputError (nothing is written) when
    that is more than max_clear_ratio of them, unless forced."""
    goal = states[0].settings.goal
    present = pl.concat([part for state in states for part in state.present] or [pl.Series([], dtype=pl.Int64)])
    before = removal.snapshot(conn, goal.name)
    if before is None:  # the first overwrite: what the goal wrote before, in append mode
        before = queries.goal_profiles(conn, goal.name)
    absent = before.filter(~before.is_in(present.implode()))
    if before.len() and absent.len() / before.len() > goal.max_clear_ratio and not force:
        raise InputError(f"write_mode overwrite would clear {absent.len()} of the goal's {before.len()} profiles "
                         f"({absent.len() / before.len():.0%}), above max_clear_ratio {goal.max_clear_ratio:.0%}: "
                         "nothing was imported (a truncated file?); run --force to allow it")
    _clear(store, conn, absent, states, now)
    removal.save_snapshot(conn, goal.name, present)
    return absent.len()


def _clear(store: Store, conn: Connection, absent: pl.Series, states: list[merge.FileMerge], now: float) -> None:
    settings = states[0].settings
    maps = [m for state in states for m in state.maps if m.property not in settings.indexed]
    if absent.is_empty():
        return
    sums = sorted({m.property for m in maps if m.rule == "sum"})
    plain = sorted({m.property for m in maps if m.rule != "sum"} - set(sums))
    columns = queries.property_columns(store, conn, [*plain, *sums], settings.entity)
    withdrawn = _withdraw_rows(conn, settings.goal.name, absent, sums)
    current = queries.property_values(store, conn, absent, {p: columns[p] for p in sums}, settings.entity)
    if sums:
        current = current.join(withdrawn, on="pid", how="left")
    changes = current.select(
        pl.col("pid").alias("id"),
        *(pl.lit(None, pl.String).alias(columns[p]) for p in plain),
        *(rules.expression("sum", pl.col(p), -pl.col(f"_w_{p}").fill_null(0.0)).alias(columns[p]) for p in sums))
    writes.update_profiles(store, conn, changes, now, settings.entity)
    if settings.entity == queries.PROFILES:
        removal.unlink_goal(store, conn, settings.goal.name, absent)


def _withdraw_rows(conn: Connection, goal: str, absent: pl.Series, sums: list[str]) -> pl.DataFrame:
    """Forget the goal's row records of the absent profiles; return what they added to each `sum` (pid, _w_…)."""
    totals = []
    dtype = pl.Struct({p: pl.Float64 for p in sums})
    for file_id, rows in removal.goal_rows(conn, goal):
        gone = rows.get_column("profile_id").is_in(absent.implode())
        if not gone.any():
            continue
        if sums:
            totals.append(rows.filter(gone).select(pl.col("profile_id").alias("pid"), pl.col("sums").cast(pl.String)
                                                   .str.json_decode(dtype).struct.unnest()))
        removal.forget_rows(conn, file_id, rows.filter(~gone))
    if not totals:
        return pl.DataFrame(schema={"pid": pl.Int64, **{f"_w_{p}": pl.Float64 for p in sums}})
    return pl.concat(totals).group_by("pid").agg(pl.col(p).sum().alias(f"_w_{p}") for p in sums)
