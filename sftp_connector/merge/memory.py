"""Exactly-once memory: each row's key and content hash, and what the file's earlier import remembered.

A row is keyed by its first identifier value and that value's occurrence number in the
file; a row whose key and hash match the earlier import's is unchanged and skipped. Pure:
the remembered rows come in as a frame.
"""

from __future__ import annotations

import polars as pl

from sftp_connector.errors import RowReject
from sftp_connector.merge.context import FileMerge, field_col
from sftp_connector.rowkeys import HASH_SEED


def latest_by_hash(rows: pl.DataFrame) -> pl.DataFrame:
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


def keyed(batch: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Add _key and _hash to the rows that have an identifier; reject the others."""
    fields = [f for f, _ in state.identifiers]
    ident = pl.coalesce(pl.when(pl.col(f) != "").then(pl.lit(f"{i}\x1f") + pl.col(f)) for i, f in enumerate(fields))
    needed = list(dict.fromkeys(fields + [m.field for m in state.maps] + [g.field for g in state.settings.groups]))
    rows = batch.select("_row", *(pl.col(f).alias(field_col(f)) for f in needed), _ident=ident,
                        _hash=_digest(needed, state.settings.digest))
    for number in rows.filter(pl.col("_ident").is_null()).get_column("_row").to_list():
        state.rejects.append(RowReject(state.settings.label, number, None,
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


def fresh(rows: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Join what the file's earlier import remembered; count and drop rows unchanged since."""
    if state.previous is None:
        return rows.with_columns(_prev_hash=pl.lit(None, pl.Int64), _prev_sums=pl.lit(None, pl.String))
    rows = rows.with_columns(remembered(rows.get_column("_key"), state.previous))
    unchanged = (pl.col("_prev_hash") == pl.col("_hash")).fill_null(False)
    kept = rows.filter(unchanged)
    state.counts.rows_unchanged += kept.height
    if state.settings.goal.write_mode == "overwrite":
        state.present.append(kept.get_column("_prev_pid"))
    return rows.filter(~unchanged).drop("_prev_pid")


def remembered(keys: pl.Series, previous: pl.DataFrame) -> pl.DataFrame:
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
