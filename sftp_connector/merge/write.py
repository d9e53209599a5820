"""Write a batch's plan (on the pipeline's writer thread): new profiles get their ids here, then the
identity index, the row records and the group links; and the goal's set of touched profiles."""

from __future__ import annotations

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import failpoints, rules
from sftp_connector.merge.context import FileMerge, field_col
from sftp_connector.merge.plan import Plan
from sftp_connector.store import queries, writes
from sftp_connector.store.db import Store
from sftp_connector.store.writes import real_ids

TOUCHED_FLUSH = 1_000_000


def staged(store: Store, plan: Plan, state: FileMerge) -> writes.Staged:
    """Given a batch's plan, return its profile changes ready for the store to write (on the merge's thread)."""
    return writes.stage(store, writes.ProfileChanges(
        plan.new, plan.patches, plan.releases, plan.claims, plan.fresh, plan.added,
        {p: state.columns[p] for p in state.indexed_props}, state.now))


def write_plan(store: Store, conn: Connection, plan: Plan, profiles: writes.Staged, state: FileMerge) -> None:
    """Write one batch (on the writer thread): its profile changes (new profiles get their ids here), the applied
    rows' records and group links; and keep count of what the file touched."""
    new_ids = profiles.write(store, conn, state.settings.entity)
    first = new_ids.start
    state.created += len(new_ids)
    if new_ids and state.first_created is None:
        state.first_created = first
    records = real_ids(plan.records, "pid", first).rename({"pid": "profile_id"})
    queries.append_rows(conn, state.file_id, records)
    if state.settings.groups:
        _link_groups(store, conn, real_ids(plan.links, "_pid", first), state)
    touched = records.get_column("profile_id")
    state.touched.append(touched)
    if state.settings.goal.write_mode == "overwrite":
        state.present.append(touched)
    if sum(part.len() for part in state.touched) >= TOUCHED_FLUSH:
        remember_touched(conn, state)
    latest = touched.reverse().unique(maintain_order=True).head(5).to_list()
    state.last = list(dict.fromkeys([*latest, *state.last]))[:5]
    failpoints.reached("mid-merge")  # a batch is written, the file is not committed


def remember_touched(conn: Connection, state: FileMerge) -> None:
    """Add the profiles the file touched so far to the goal's set (memory stays flat for huge files)."""
    if state.touched:
        queries.remember_goal_profiles(conn, state.settings.goal.name, pl.concat(state.touched))
        state.touched.clear()


def _link_groups(store: Store, conn: Connection, applied: pl.DataFrame, state: FileMerge) -> None:
    """Link the applied rows' profiles to the groups their group fields name (an empty cell: no change)."""
    for ref in state.settings.groups:
        rows = applied.select(pl.col("_pid").alias("profile_id"), rules.split_expression(
            pl.col(field_col(ref.field)), state.settings.separator).alias("key")).filter(pl.col("key").list.len() > 0)
        if ref.rule == "set":  # a profile's last row in the batch says which groups it is in
            rows = rows.unique(subset="profile_id", keep="last", maintain_order=True)
        links = rows.explode("key").with_columns(type=pl.lit(ref.type))
        queries.link_groups(store, conn, links, replace=ref.rule == "set", goal=state.settings.goal.name)
