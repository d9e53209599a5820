"""Write a batch's plan (on the pipeline's writer thread): new profiles get their ids here, then the
identity index, the row records and the group links; and the goal's set of touched profiles."""

from __future__ import annotations

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import failpoints, rules
from sftp_connector.merge.context import FileMerge, field_col
from sftp_connector.merge.plan import Plan
from sftp_connector.store import queries
from sftp_connector.store.db import Store

TOUCHED_FLUSH = 1_000_000


def write_plan(store: Store, conn: Connection, plan: Plan, state: FileMerge) -> None:
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
        queries.insert_profiles(store, conn, real_ids(plan.new, "pid", first).rename({"pid": "id"}), entity)
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
        queries.index_identities(store, conn, real_ids(plan.fresh, "profile_id", first), entity)
        queries.claim_identities(store, conn, real_ids(plan.added, "profile_id", first), entity)
    records = real_ids(plan.records, "pid", first).rename({"pid": "profile_id"})
    queries.append_rows(conn, state.file_id, records)
    if state.ctx.groups:
        _link_groups(store, conn, real_ids(plan.links, "_pid", first), state)
    touched = records.get_column("profile_id")
    state.touched.append(touched)
    if state.ctx.goal.write_mode == "overwrite":
        state.present.append(touched)
    if sum(part.len() for part in state.touched) >= TOUCHED_FLUSH:
        remember_touched(conn, state)
    latest = touched.reverse().unique(maintain_order=True).head(5).to_list()
    state.last = list(dict.fromkeys([*latest, *state.last]))[:5]
    failpoints.reached("mid-merge")  # a batch is written, the file is not committed


def real_ids(frame: pl.DataFrame, column: str, first: int) -> pl.DataFrame:
    """Given a frame, its id column and the id of new profile -1, return it with real ids (-n is first + n - 1)."""
    if not first or frame.is_empty():
        return frame
    return frame.with_columns(pl.when(pl.col(column) < 0).then(first - 1 - pl.col(column)).otherwise(pl.col(column))
                              .alias(column))


def remember_touched(conn: Connection, state: FileMerge) -> None:
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
