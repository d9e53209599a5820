"""The rules over frames: a batch's rows applied to their profiles' values in one pass.

Pure: rows (each beside its profile's `pid`) and the profiles' values before the batch come
in as frames, the values after and the applied rows go out.
"""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl

from sftp_connector import rules
from sftp_connector.config import models
from sftp_connector.errors import RowReject
from sftp_connector.merge.context import ColumnRule, FileMerge, field_col, prop_col


def applied(rows: pl.DataFrame, before: pl.DataFrame, state: FileMerge) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply the batch's rows to their profiles in one pass, however many rows a profile has; return (after:
    every touched profile's properties after the batch, applied: the rows that applied, in file order).

    A profile's rows apply together, per rule, as one after the other would: `set` keeps the
    last values, `set_or_clear` the last cell, `set_if_empty` the first values where none
    were held, `add` the ordered union, `sum` the total of the differences.
    """
    rows = rows.with_columns(_pos=pl.int_range(pl.len(), dtype=pl.UInt32))
    joined = rows.join(before, left_on="_pid", right_on="pid", how="left", maintain_order="left")
    split = {m.field for m in state.maps if m.rule != "sum"}
    joined = rules.with_split(joined, {_values_col(f): field_col(f) for f in split}, state.settings.separator)
    joined = _sum_differences(joined, state)
    if state.settings.objectives:
        joined = _consented(joined, state)
    state.counts.rows_applied += joined.height
    if joined.get_column("_pid").is_duplicated().any():
        repeated = pl.col("_pid").is_duplicated()
        changes = pl.concat([_each_once(joined.filter(~repeated), state),
                             _folded(joined.filter(repeated), before, state)])
    else:  # the common case (a first load, most files): no profile has two rows of the batch
        changes = _each_once(joined, state)
    after = before.update(changes, on="pid", include_nulls=True)
    applied = joined.with_columns(_sums=_sums_json(state) if state.sum_props else pl.lit(None, pl.String))
    return after, applied.drop(_values_col(f) for f in split)


def _sum_differences(joined: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Add, per `sum` property, each row's amount (`_c…`, what it contributes from now on) and its difference
    from what the row contributed when the file was imported before (`_d…`; null: nothing to add); reject
    the cells that are not numbers."""
    if not state.sum_props:
        return joined
    dtype = pl.Struct({prop: pl.Float64 for prop in sorted(state.sum_props)})
    joined = joined.with_columns(_prev=pl.col("_prev_sums").str.json_decode(dtype))
    for prop in sorted(state.sum_props):
        amounts = []
        for mapping in (m for m in state.maps if m.property == prop):
            cell = pl.col(field_col(mapping.field))
            amount = rules.amount_expression(cell)
            _reject_amounts(joined.filter(cell.is_not_null() & (cell != "") & amount.is_null()), mapping, state)
            amounts.append(amount)
        amount = amounts[0] if len(amounts) == 1 else pl.when(pl.any_horizontal(a.is_not_null() for a in amounts)) \
            .then(pl.sum_horizontal(amounts))
        was = pl.col("_prev").struct.field(prop)
        joined = joined.with_columns((amount - was.fill_null(0.0)).alias(_difference_col(prop)),
                                     pl.coalesce(amount, was).alias(_contribution_col(prop)))
    return joined.drop("_prev")


def _reject_amounts(bad: pl.DataFrame, mapping: ColumnRule, state: FileMerge) -> None:
    for number, value in bad.select("_row", field_col(mapping.field)).iter_rows():
        state.rejects.append(RowReject(state.settings.label, number, mapping.field,
                                       f"`{mapping.field}` is not a number", value[:200]))
    state.counts.cells_rejected += bad.height


def _consented(joined: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Keep the rows after which their profile holds a consented objective (rows that fail change nothing, so
    a later row of the profile sees the profile without them); count the others as no_consent."""
    prop, objectives = state.settings.consent_property, list(state.settings.objectives)
    held = pl.col(prop_col(prop))  # before the batch
    held_any = rules.decode(held).list.set_intersection(objectives).list.len() > 0
    maps = [m for m in state.maps if m.property == prop]
    if not maps:
        passes = joined.select(held_any).to_series()
    elif len(maps) == 1 and maps[0].rule != "sum":
        passes = joined.select(_consent_by_rule(maps[0], held, held_any, objectives)).to_series()
    else:
        passes = _consent_one_by_one(joined, maps, state)
    state.counts.no_consent += passes.len() - int(passes.sum())
    return joined.filter(passes)


def _consent_by_rule(mapping: ColumnRule, held: pl.Expr, held_any: pl.Expr, objectives: list[str]) -> pl.Expr:
    """Whether each row passes the consent check when one mapping writes the consent property.

    Rows of a profile that failed added no objective, so "an earlier row applied values
    holding one" is "an earlier row's values held one" (for `add`: any earlier row's).
    """
    values = pl.col(_values_col(mapping.field))
    has = values.list.len() > 0
    names_one = values.list.set_intersection(objectives).list.len() > 0

    def earlier(condition: pl.Expr) -> pl.Expr:
        return (condition.cast(pl.UInt32).cum_sum().over("_pid") - condition.cast(pl.UInt32)) > 0

    if mapping.rule == "set":
        return pl.when(has).then(names_one).otherwise(held_any | earlier(has & names_one))
    if mapping.rule == "set_or_clear":
        return names_one
    if mapping.rule == "set_if_empty":
        return pl.when(held.is_not_null()).then(held_any).otherwise(names_one | earlier(names_one))
    return held_any | names_one | earlier(names_one)  # add


def _consent_one_by_one(joined: pl.DataFrame, maps: list[ColumnRule], state: FileMerge) -> pl.Series:
    """The consent check row by row, for a consent property written by several mappings (rare)."""
    objectives = set(state.settings.objectives)
    names = [_contribution_col(m.property) if m.rule == "sum" else _values_col(m.field) for m in maps]
    unique = list(dict.fromkeys(names))
    held: dict[int, list[Any]] = {}
    passes = []
    for pid, text, *values in joined.select("_pid", prop_col(state.settings.consent_property), *unique).iter_rows():
        current = held[pid] if pid in held else (orjson.loads(text) if text else [])
        for mapping, name in zip(maps, names, strict=True):
            current = _pure_rule(mapping.rule, current, values[unique.index(name)])
        ok = bool(objectives & {str(v) for v in current})
        if ok:
            held[pid] = current
        passes.append(ok)
    return pl.Series(passes, dtype=pl.Boolean)


def _pure_rule(rule: models.Rule, current: list[Any], cell: Any) -> list[Any]:
    if rule != "sum":
        return rules.RULES[rule](current, cell)
    try:
        return rules.sum_(current, [] if cell is None else [cell])
    except ValueError:  # a stored value that is not a number counts as 0, as over whole columns
        return rules.sum_([], [] if cell is None else [cell])


def _each_once(once: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Given rows whose profile has no other row in the batch (each beside its profile's values), return each
    profile's values after its row: the rules as expressions over whole columns."""
    for layer in layers([m for m in state.maps if m.rule != "sum"]):
        once = once.with_columns(
            rules.expression(m.rule, pl.col(prop_col(m.property)), pl.col(_values_col(m.field)))
            .alias(prop_col(m.property)) for m in layer)
    once = once.with_columns(rules.expression("sum", pl.col(prop_col(p)), pl.col(_difference_col(p)))
                             .alias(prop_col(p)) for p in state.sum_props)
    return once.select(pl.col("_pid").alias("pid"), *(prop_col(p) for p in state.props))


def _folded(many: pl.DataFrame, before: pl.DataFrame, state: FileMerge) -> pl.DataFrame:
    """Given the rows of profiles that have several in the batch (file order), return those profiles' values
    after all their rows, each property folded once over its operations in file and mapping order."""
    current = before.join(many.select(pl.col("_pid").alias("pid")).unique(), on="pid", how="semi")
    listed = [m for m in state.maps if m.rule != "sum"]
    if listed:
        props = list(dict.fromkeys(m.property for m in listed))
        folded = _fold_lists(_operations(many, listed, props), current, props)
        current = current.update(folded, on="pid", include_nulls=True)
    if state.sum_props:
        totals = many.group_by("_pid").agg(
            pl.when(pl.col(_difference_col(p)).count() > 0).then(pl.col(_difference_col(p)).sum()).alias(p)
            for p in state.sum_props)
        current = current.join(totals, left_on="pid", right_on="_pid", how="left").with_columns(
            rules.expression("sum", pl.col(prop_col(p)), pl.col(p)).alias(prop_col(p)) for p in state.sum_props
        ).drop(*state.sum_props)
    return current.select("pid", *(prop_col(p) for p in state.props))


def _operations(many: pl.DataFrame, listed: list[ColumnRule], props: list[str]) -> pl.DataFrame:
    """One row per (row, mapping): _pid, _p (the property's index in props), _rule, _v (the cell's values),
    grouped by profile and property, in file and mapping order."""
    index = {p: n for n, p in enumerate(props)}
    return pl.concat([
        many.select("_pid", "_pos", _m=pl.lit(j, pl.UInt32), _p=pl.lit(index[m.property], pl.UInt32),
                    _rule=pl.lit(m.rule), _v=pl.col(_values_col(m.field)))
        for j, m in enumerate(listed)
    ]).sort("_pid", "_p", "_pos", "_m")


def _fold_lists(ops: pl.DataFrame, current: pl.DataFrame, props: list[str]) -> pl.DataFrame:
    """Given every list rule's operations on the profiles (see _operations) and their values before, return
    (pid, each property's JSON array text after the operations).

    The result is what the operation that last replaced the values left (`set` with values,
    `set_or_clear`, `set_if_empty` with values where none were held), or the values held
    before, followed by the values of every `add` after it, without repeats.
    """
    held = current.unpivot(on=[prop_col(p) for p in props], index="pid", variable_name="_name", value_name="_held") \
        .with_columns(_p=pl.col("_name").replace_strict({prop_col(p): n for n, p in enumerate(props)},
                                                        return_dtype=pl.UInt32)).drop("_name")
    key = ["_pid", "_p"]
    rule, has = pl.col("_rule"), pl.col("_v").list.len() > 0
    was_empty = pl.col("_held").is_null()
    # Whether the property is empty after each operation, where the operation decides it.
    decided = pl.when(rule.is_in(["set", "set_if_empty", "add"]) & has).then(False) \
        .when(rule == "set_or_clear").then(~has)
    ops = ops.join(held, left_on=key, right_on=["pid", "_p"], how="left", maintain_order="left").with_columns(
        _empty=decided.forward_fill().over(key), _i=pl.int_range(pl.len(), dtype=pl.UInt32))
    empty_before = pl.col("_empty").shift(1).over(key).fill_null(was_empty)
    replaces = ((rule == "set") & has) | (rule == "set_or_clear") | ((rule == "set_if_empty") & has & empty_before)
    ops = ops.with_columns(_last=pl.when(replaces).then(pl.col("_i")).max().over(key))
    adds = (rule == "add") & has & (pl.col("_last").is_null() | (pl.col("_i") > pl.col("_last")))
    ops = ops.with_columns(_adds=adds, _keep=(pl.col("_i") == pl.col("_last")).fill_null(False) | adds)
    result = ops.group_by(key, maintain_order=True).agg(
        pl.col("_held").first(), pl.col("_last").first().is_not_null().alias("_replaced"),
        pl.col("_adds").any(), pl.col("_v").filter(pl.col("_keep")).explode().drop_nulls().alias("_values"))
    base = pl.when(pl.col("_replaced")).then(pl.lit([], pl.List(pl.String))).otherwise(rules.decode(pl.col("_held")))
    merged = base.list.concat(pl.col("_values"))
    final = pl.when(pl.col("_adds")).then(merged.list.unique(maintain_order=True)).otherwise(merged)
    text = pl.when(pl.col("_replaced") | pl.col("_adds")).then(rules.encode(final)).otherwise(pl.col("_held"))
    wide = result.select("_pid", "_p", _text=text).pivot(on="_p", index="_pid", values="_text")
    return wide.rename({"_pid": "pid", **{str(n): prop_col(p) for n, p in enumerate(props)}})


def _values_col(field: str) -> str:
    return f"v\x1f{field}"


def _difference_col(prop: str) -> str:
    return f"d\x1f{prop}"


def _contribution_col(prop: str) -> str:
    return f"c\x1f{prop}"


def layers(maps: list[ColumnRule]) -> list[list[ColumnRule]]:
    """Split the list-rule mappings, in order, into groups that can be computed together (one pass, all cores).

    A group never holds two mappings of one property (the second must see the first's
    result).
    """
    layers: list[list[ColumnRule]] = []
    taken: set[str] = set()  # the properties of the last layer
    for mapping in maps:
        if not layers or mapping.property in taken:
            layers.append([mapping])
            taken = {mapping.property}
        else:
            layers[-1].append(mapping)
            taken.add(mapping.property)
    return layers


def _sums_json(state: FileMerge) -> pl.Expr:
    return pl.struct(pl.col(_contribution_col(p)).alias(p) for p in sorted(state.sum_props)).struct.json_encode()
