"""Find the profile each row belongs to: identifiers are tried in order, the first match wins.

Rows are resolved against the store as it was before the batch, plus the profiles that
earlier rows of the same batch created (a new profile is found by any identifier value of
the row that created it), so two rows for one new customer make one profile. The common
case is resolved over whole columns; when an identifier value would point at two
different profiles, the batch is resolved row by row instead, which gives the same answer
as applying the rows one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

Pair = tuple[str, str]
Lookup = Callable[[str, pl.Series], pl.DataFrame]
"""Given an identifier property and values, return (value, pid) of the values a stored profile holds."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """Which profile each row goes to: an existing id, a new one (negative, not yet stored), or null."""

    pids: pl.Series
    new_profiles: pl.DataFrame
    """(pid, property, value): the identifier values each new profile is created with."""


def resolve(
    lookup: Lookup, rows: pl.DataFrame, identifiers: Sequence[tuple[str, str]], *, allow_new: bool
) -> Resolution:
    """Given rows and the (field, property) identifiers in order, return which profile each row is.

    A row with no identifier value, or (without allow_new) one that matches nothing, gets null.
    """
    values = rows.select(_cell(field).alias(f"_v{i}") for i, (field, _) in enumerate(identifiers))
    pids = _existing(lookup, values, identifiers)
    labelled = values.with_columns(_pid=pids, _first=_first_pair(identifiers), _n=pl.int_range(pl.len()))
    if _ambiguous(labelled, identifiers):
        return _one_by_one(lookup, values, identifiers, allow_new=allow_new)
    new_rows = labelled.filter(pl.col("_pid").is_null() & pl.col("_first").is_not_null())
    if not allow_new or new_rows.is_empty():
        return Resolution(pids, _no_new())
    creators = new_rows.filter(pl.col("_n") == pl.col("_n").min().over("_first"))
    placeholders = creators.select("_first", _new=-pl.int_range(1, pl.len() + 1))
    pids = labelled.join(placeholders, on="_first", how="left", maintain_order="left").select(
        pl.coalesce("_pid", "_new")).to_series()
    created = creators.join(placeholders, on="_first").select("_new", *values.columns)
    return Resolution(pids, _pairs_of(created.rename({"_new": "pid"}), identifiers))


def _cell(field: str) -> pl.Expr:
    return pl.when(pl.col(field) != "").then(pl.col(field))


def _existing(lookup: Lookup, values: pl.DataFrame, identifiers: Sequence[tuple[str, str]]) -> pl.Series:
    """The stored profile of each row: by the first identifier whose value some profile holds."""
    pids = pl.Series("_pid", [None] * values.height, dtype=pl.Int64)
    for i, (_, prop) in enumerate(identifiers):
        wanted = values.get_column(f"_v{i}").filter(pids.is_null())
        found = lookup(prop, wanted)
        if found.is_empty():
            continue
        matched = values.select(f"_v{i}").join(found, left_on=f"_v{i}", right_on="value", how="left",
                                                maintain_order="left")
        pids = pids.fill_null(matched.get_column("pid"))
    return pids


def _first_pair(identifiers: Sequence[tuple[str, str]]) -> pl.Expr:
    return pl.coalesce(pl.lit(f"{prop}\x1f") + pl.col(f"_v{i}") for i, (_, prop) in enumerate(identifiers))


def _ambiguous(labelled: pl.DataFrame, identifiers: Sequence[tuple[str, str]]) -> bool:
    """True if some identifier value belongs to rows that would go to different profiles.

    A row's profile is its stored id, or for a new profile its first identifier pair.
    """
    group = [pl.col("_pid"), pl.when(pl.col("_pid").is_null()).then(pl.col("_first")).alias("_new")]
    for i in range(len(identifiers)):
        value = pl.col(f"_v{i}")
        distinct = labelled.filter(value.is_not_null()).select(value, *group).unique()
        if distinct.get_column(f"_v{i}").is_duplicated().any():
            return True
    return False


def _pairs_of(created: pl.DataFrame, identifiers: Sequence[tuple[str, str]]) -> pl.DataFrame:
    return pl.concat([
        created.select("pid", pl.lit(prop).alias("property"), pl.col(f"_v{i}").alias("value"))
        for i, (_, prop) in enumerate(identifiers)
    ]).drop_nulls().unique(maintain_order=True)


def _no_new() -> pl.DataFrame:
    return pl.DataFrame(schema={"pid": pl.Int64, "property": pl.String, "value": pl.String})


def _one_by_one(
    lookup: Lookup, values: pl.DataFrame, identifiers: Sequence[tuple[str, str]], *, allow_new: bool
) -> Resolution:
    """Resolve rows in file order, the way applying them one at a time would."""
    known: dict[Pair, int] = {}
    for i, (_, prop) in enumerate(identifiers):
        for value, pid in lookup(prop, values.get_column(f"_v{i}")).iter_rows():
            known[(prop, value)] = pid
    created: dict[Pair, int] = {}
    new: list[tuple[int, str, str]] = []
    created_by: list[int] = []
    pids: list[int | None] = []
    for cells in values.iter_rows():
        pairs = [(prop, value) for (_, prop), value in zip(identifiers, cells, strict=True) if value is not None]
        pid = next((known.get(p, created.get(p)) for p in pairs if p in known or p in created), None)
        if pid is None and allow_new and pairs:
            pid = -(len(created_by) + 1)
            created_by.append(pid)
            for pair in pairs:
                if pair not in created:
                    created[pair] = pid
                    new.append((pid, *pair))
        pids.append(pid)
    frame = pl.DataFrame(new, schema=_no_new().schema, orient="row") if new else _no_new()
    return Resolution(pl.Series("_pid", pids, dtype=pl.Int64), frame)
