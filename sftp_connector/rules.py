"""The five merge rules: as pure functions on multi-valued properties (the reference, read
like the SPEC's table), and as polars expressions over whole columns (what imports run,
tested against the reference).

A property is a list of values: strings, except a `sum` property, which holds one number.
`values` is what the CSV cell holds after splitting on the multi-value separator (empty
when the cell is empty); for `sum` it holds the one amount to add.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import polars as pl

from sftp_connector.config.models import Rule

Values = list[Any]


def set_(current: Values, values: Values) -> Values:
    """Given the current and imported values, return the imported ones, or current if none."""
    return list(values) if values else current


def set_if_empty(current: Values, values: Values) -> Values:
    """Given the current and imported values, return the imported ones only where current is empty."""
    return list(values) if values and not current else current


def set_or_clear(current: Values, values: Values) -> Values:
    """Given the current and imported values, return the imported ones; an empty cell clears."""
    return list(values)


def add(current: Values, values: Values) -> Values:
    """Given the current and imported values, return current plus the new ones, without duplicates."""
    merged = list(current)
    for value in values:
        if value not in merged:
            merged.append(value)
    return merged if len(merged) != len(current) else current


def sum_(current: Values, values: Values) -> Values:
    """Given the current total and amounts, return [total + amounts]; an empty total counts as 0.

    Raise ValueError if the current value is not a number.
    """
    if not values:
        return current
    total = to_decimal(current[0]) if current else Decimal(0)
    for amount in values:
        total += to_decimal(amount)
    return [to_number(total)]


RULES: dict[Rule, Callable[[Values, Values], Values]] = {
    "set": set_,
    "set_if_empty": set_if_empty,
    "set_or_clear": set_or_clear,
    "add": add,
    "sum": sum_,
}


def split(cell: str | None, separator: str | None) -> Values:
    """Given a CSV cell and the multi-value separator, return its non-empty values, each once, in order."""
    if cell is None or cell == "":
        return []
    if not separator:
        return [cell]
    return list(dict.fromkeys(part for part in cell.split(separator) if part != ""))


def parse_amount(cell: str) -> Decimal:
    """Given a `sum` cell, return its amount. Raise ValueError if it is not one finite number."""
    try:
        amount = Decimal(cell.strip())
    except InvalidOperation as exc:
        raise ValueError(f"{cell!r} is not a number") from exc
    if not amount.is_finite():
        raise ValueError(f"{cell!r} is not a finite number")
    return amount


def to_decimal(value: Any) -> Decimal:
    """Given a stored number (int, float or numeric string), return it exactly as a Decimal.

    Raise ValueError if it is not a number.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | Decimal):
        return Decimal(value)
    return parse_amount(str(value))


def to_number(value: Decimal) -> int | float:
    """Given a Decimal total, return it as an int when whole, else as the nearest float."""
    return int(value) if value == value.to_integral_value() else float(value)


# ── the same rules over whole columns (polars), for bulk merges ──────────────────────
# A stored property is its values as JSON array text, null when it has none, so most rules
# never parse it. `values` is a List(String) column of the cell's values (empty when the
# cell is empty); for `sum` it is the Float64 amount to add (null: nothing to add). Tested
# against the pure functions above.


def encode(values: pl.Expr) -> pl.Expr:
    """Given a List(String) expression, return its JSON array text; null for an empty list."""
    text = pl.struct(values.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(values.list.len() > 0).then(text)


def decode(text: pl.Expr) -> pl.Expr:
    """Given a JSON array text expression, return its values as List(String); empty for null."""
    return text.str.json_decode(pl.List(pl.String)).fill_null([])


def expression(rule: Rule, current: pl.Expr, values: pl.Expr) -> pl.Expr:
    """Given a rule, the current JSON array text and the cell's values, return the new JSON array text."""
    if rule == "sum":
        total = current.str.strip_prefix("[").str.strip_suffix("]").cast(pl.Float64, strict=False).fill_null(0.0)
        return pl.when(values.is_not_null()).then(pl.lit("[") + number_text(total + values) + pl.lit("]")) \
            .otherwise(current)
    has = values.list.len() > 0
    if rule == "set":
        return pl.when(has).then(encode(values)).otherwise(current)
    if rule == "set_if_empty":
        return pl.when(has & current.is_null()).then(encode(values)).otherwise(current)
    if rule == "set_or_clear":
        return encode(values)
    merged = decode(current).list.set_union(values)  # current's values, then the new ones, in order
    return pl.when(has).then(encode(merged)).otherwise(current)


def number_text(total: pl.Expr) -> pl.Expr:
    """Given a Float64 expression, return it as JSON number text: whole numbers without '.0'.

    Sums of decimal amounts are rounded to 9 places, so 0.1 + 0.2 is 0.3. (Computed on the
    evaluated column in steps: as one expression polars would evaluate `total` many times.)
    """
    return total.map_batches(_number_text, return_dtype=pl.String)


def _number_text(total: pl.Series) -> pl.Series:
    t = pl.col("t")
    frame = total.alias("t").to_frame().with_columns(t=pl.when(t.abs() < 1e15).then(t.round(9)).otherwise(t))
    whole = (t == t.round(0)) & (t.abs() < 2.0**53)
    return frame.select(pl.when(whole).then(t.cast(pl.Int64).cast(pl.String)).otherwise(t.cast(pl.String))).to_series()


def split_expression(cell: pl.Expr, separator: str | None) -> pl.Expr:
    """Given a String cell column and the separator, return its non-empty values as a List(String) (a value
    may repeat: `with_split` keeps each once).

    Runs of the separator collapse to one and it is stripped at both ends, so the split has no
    empty part. Many cells at once go through `with_split`: list expressions take memory that
    grows with the square of how many run in one `with_columns`.
    """
    empty = pl.lit([], pl.List(pl.String))
    if not separator:
        return pl.when(cell.is_not_null() & (cell != "")).then(pl.concat_list(cell)).otherwise(empty)
    single = cell.str.replace_all(f"(?:{re.escape(separator)})+", separator) \
        .str.strip_prefix(separator).str.strip_suffix(separator)
    return pl.when(single.is_not_null() & (single != "")).then(single.str.split(separator)).otherwise(empty)


SPLIT_CHUNK = 64
"""Cells split per `with_columns`: polars holds memory quadratic in the number of list expressions of one
(5,000 in one took 9.6 GB)."""


def with_split(frame: pl.DataFrame, cells: dict[str, str], separator: str | None) -> pl.DataFrame:
    """Given a frame and {new column: String cell column}, add each cell's values (see split_expression), each
    value once, in order (a property's values never repeat: `add` could not tell which copy it kept)."""
    names = list(cells)
    # A column none of whose cells holds the separator is split as if there were none: most are, and the
    # check costs a tenth of the split.
    holding = set() if not separator or not names else set(names) if not frame.height else {
        name for name, hit in zip(names, frame.select(
            pl.col(cells[name]).str.contains(separator, literal=True).any().alias(name) for name in names).row(0),
            strict=True) if hit}
    for start in range(0, len(names), SPLIT_CHUNK):
        chunk = names[start:start + SPLIT_CHUNK]
        frame = frame.with_columns(split_expression(pl.col(cells[name]), separator if name in holding else None)
                                   .alias(name) for name in chunk)
        chunk = [name for name in chunk if name in holding]
        if chunk:
            # Only a column with a cell of several values can repeat one: most hold one value a cell, and
            # list.unique over every cell would cost more than the split.
            longest = frame.select(pl.col(chunk).list.len().max()).row(0)
            several = [name for name, most in zip(chunk, longest, strict=True) if most and most > 1]
            frame = frame.with_columns(pl.col(several).list.unique(maintain_order=True))
    return frame


def amount_expression(cell: pl.Expr) -> pl.Expr:
    """Given a String `sum` cell column, return its amount as Float64; null when empty or not a number."""
    amount = cell.str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(amount.is_finite()).then(amount).otherwise(None)
