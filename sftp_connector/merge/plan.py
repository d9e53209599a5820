"""A batch's read and plan: find each row's profile, read those profiles, and work out every write.

`read_batch` is the one part of a batch that reads the store; `plan_batch` is pure: it turns
what was read into a `Plan` of frames (new profiles, patches, identity index changes,
row records, group links) that the writer stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import identity, rowkeys, rules
from sftp_connector.merge import apply
from sftp_connector.merge.context import FileMerge, field_col, prop_col
from sftp_connector.store import queries
from sftp_connector.store.db import Store


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
    """New profiles: pid and their profile columns."""
    patches: list[pl.DataFrame]
    """Changed stored profiles: pid and the columns to write, one frame per set of columns."""
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
    """The applied rows' _pid and group fields, in file order (only _pid without group references)."""
    changed: pl.Series
    """The stored profiles whose columns change."""
    pairs: pl.DataFrame
    """(property, value): every identifier value added to or dropped from the index."""


def read_batch(store: Store, conn: Connection, rows: pl.DataFrame, state: FileMerge) -> Read:
    """Find each row's profile and read those profiles (the only part of a batch that reads the store)."""
    read: list[pl.DataFrame] = []  # the profiles the lookups found, returned whole
    found = identity.resolve(lambda prop, values: _lookup(store, conn, prop, values, state, read), rows,
                             [(field_col(f), p) for f, p in state.identifiers],
                             allow_new=state.settings.allow_new)
    rows = rows.with_columns(_pid=found.pids)
    unmatched = rows.get_column("_pid").null_count()
    rows = rows.filter(pl.col("_pid").is_not_null())
    if rows.is_empty():
        return Read(rows, pl.DataFrame(), found.new_profiles, unmatched)
    return Read(rows, _stored(rows, state, read), found.new_profiles, unmatched)


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
    found = queries.find_identities(store, conn, prop, values, state.settings.entity, state.columns)
    read.append(found.drop("value"))
    return found.select("value", "pid")


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
    fresh = pl.DataFrame({"pid": read.new_profiles.get_column("pid").unique(maintain_order=True)})
    # A new profile holds only the identifier values it was found by: one column per identifier property
    # (not a join per property: a file may map thousands).
    values = read.new_profiles.group_by("pid", "property", maintain_order=True).agg("value")
    for prop in dict.fromkeys(p for _, p in state.identifiers):
        found = values.filter(pl.col("property") == prop).select("pid", pl.col("value").alias(prop_col(prop)))
        fresh = fresh.join(found, on="pid", how="left", maintain_order="left")
    fresh = fresh.select("pid", *(rules.encode(pl.col(c).fill_null([]).cast(pl.List(pl.String))).alias(c)
                                  if c in fresh.columns else pl.lit(None, pl.String).alias(c) for c in columns))
    return pl.concat([stored, fresh])


def plan_batch(read: Read, state: FileMerge) -> Plan:
    """Apply the batch's rows to their profiles; return what is to be written."""
    before = _before(read, state)
    after, applied = apply.applied(read.rows, before, state)
    # A new profile none of whose rows applied (no consent) is not created.
    after = after.filter((pl.col("pid") > 0) | pl.col("pid").is_in(applied.get_column("_pid").implode()))
    before, after, applied = numbered(before, after, applied)
    new = after.filter(pl.col("pid") < 0)
    kind = {"type": pl.lit(state.settings.group_type)} if state.settings.group_type else {}
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
    links = in_order.select("_pid", *dict.fromkeys(field_col(ref.field) for ref in state.settings.groups))
    pairs = pl.concat([releases, claims, fresh, added]).select("property", "value")
    return Plan(profiles, patches, releases, claims, fresh, added, records, links, changed.get_column("pid"), pairs)


def numbered(
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


def conflicts(rows: pl.DataFrame, read: Read, plan: Plan, state: FileMerge) -> bool:
    """True if the batch read before `plan` was written may have read something the plan changes."""
    pids = read.rows.get_column("_pid")
    if pids.is_in(plan.changed.implode()).any():
        return True
    if plan.pairs.is_empty():
        return False
    values = pl.concat(rows.select(property=pl.lit(prop), value=pl.col(field_col(f)))
                       for f, prop in state.identifiers)
    return not values.join(plan.pairs, on=["property", "value"], how="semi").is_empty()


def added_by_file(rows: pl.DataFrame, state: FileMerge) -> bool:
    """True if some identifier value of the rows may be one the file added to the index (prefilter hit)."""
    for f, prop in state.identifiers:
        added = state.added.get(prop)
        values = rows.get_column(field_col(f))
        if added is not None and rowkeys.among(rowkeys.short_hash(values.filter(values != "")), added).any():
            return True
    return False


def changed_by_file(read: Read, state: FileMerge) -> bool:
    """True if the read found a stored profile the file has changed."""
    if state.changed.is_empty():
        return False
    pids = read.rows.get_column("_pid")
    return bool(rowkeys.among(pids.filter(pids > 0), state.changed).any())
