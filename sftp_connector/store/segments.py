"""Segments as SQL: a condition tree from connector.yaml becomes one WHERE expression over
`profile p`, evaluated by the database (SQLite or PostgreSQL, through the store's dialect),
never by loading profiles. (The conditions are checked when the configuration loads: see
config/load.py.)

A property's cell is its values as JSON array text, so a property condition is an EXISTS
over the array's elements: it holds when one value satisfies every operator given. Text
compares as text; numeric operators read values that look like numbers; date operators
compare the value's leading `YYYY-MM-DD`. Group conditions read `profile_group`, event
conditions `event` (did it within N days, or the count / sum of it compares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sftp_connector.config import models
from sftp_connector.errors import ConfigError
from sftp_connector.store.dialect import Dialect


@dataclass(slots=True)
class Sql:
    """Compiles conditions for one database; collects the bound parameters as it goes."""

    dialect: Dialect
    columns: dict[str, str]
    """Property → SQL expression of its cell over `profile p` (a property without one has no values yet)."""
    segments: dict[str, models.Condition]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    params: dict[str, Any] = field(default_factory=dict)
    _stack: list[str] = field(default_factory=list)

    def param(self, value: Any) -> str:
        """Given a value, bind it and return its placeholder."""
        name = f"s{len(self.params)}"
        self.params[name] = value
        return self.dialect.placeholder(name)

    def segment(self, name: str) -> str:
        """Given a segment name, return its WHERE expression. Raise ConfigError if unknown or circular."""
        if name not in self.segments:
            raise ConfigError(f"segment {name!r} is not defined in connector.yaml (segments: "
                              f"{', '.join(self.segments) or 'none'})")
        if name in self._stack:
            raise ConfigError(f"segment {name!r} refers to itself: {' → '.join([*self._stack, name])}")
        self._stack.append(name)
        try:
            return condition(self, self.segments[name])
        finally:
            self._stack.pop()

    def cutoff(self, days: float) -> str:
        """The ISO date-time `days` before now."""
        return cutoff(days, self.now)


def cutoff(days: float, now: datetime | None = None) -> str:
    """The ISO date-time `days` before now (or before the given time)."""
    return ((now or datetime.now(UTC)) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(sql: Sql, cond: models.Condition) -> str:
    """Given a condition, return its SQL expression (true or false, never null)."""
    if cond.all is not None:
        return "(" + " AND ".join(condition(sql, c) for c in cond.all) + ")" if cond.all else "(1=1)"
    if cond.any is not None:
        return "(" + " OR ".join(condition(sql, c) for c in cond.any) + ")" if cond.any else "(1=0)"
    if cond.not_ is not None:
        return f"(NOT {condition(sql, cond.not_)})"
    if cond.segment is not None:
        return sql.segment(cond.segment)
    if cond.group is not None:
        return _group(sql, cond)
    if cond.event is not None:
        return _event(sql, cond)
    return _property(sql, cond)


def _property(sql: Sql, cond: models.Condition) -> str:
    assert cond.property is not None
    cell = sql.columns.get(cond.property)
    tests = _value_tests(sql, cond, "j.value")
    if cond.exists is not None and not tests:
        held = f"({cell} IS NOT NULL)" if cell else "(1=0)"
        return held if cond.exists else f"(NOT {held})"
    if cell is None:
        return "(1=0)" if cond.exists is not False else "(1=1)"
    found = f"EXISTS (SELECT 1 FROM {sql.dialect.json_elements(cell)} WHERE {' AND '.join(tests)})"
    return f"({cell} IS NULL OR NOT {found})" if cond.exists is False else f"({cell} IS NOT NULL AND {found})"


def _value_tests(sql: Sql, cond: models.Condition, value: str) -> list[str]:
    """The tests one value must pass: text, numeric and date operators."""
    text = sql.dialect.element_text(value)
    tests = []
    if cond.equals is not None:
        tests.append(f"{text} = {sql.param(_text(cond.equals))}")
    if cond.in_ is not None:
        tests.append(f"{text} IN ({', '.join(sql.param(_text(v)) for v in cond.in_)})" if cond.in_ else "1=0")
    if cond.not_in:
        tests.append(f"{text} NOT IN ({', '.join(sql.param(_text(v)) for v in cond.not_in)})")
    if cond.contains is not None:
        tests.append(sql.dialect.contains(text, sql.param(cond.contains)))
    tests += [f"{sql.dialect.element_number(value)} {op} {sql.param(bound)}" for op, bound in _comparisons(cond)]
    day = f"substr({text}, 1, 10)"
    dates = [("<", cond.before), (">", cond.after),
             (">=", sql.cutoff(cond.within_days)[:10] if cond.within_days is not None else None),
             ("<", sql.cutoff(cond.older_than_days)[:10] if cond.older_than_days is not None else None)]
    tests += [f"{day} {op} {sql.param(bound[:10])}" for op, bound in dates if bound is not None]
    return tests


def _comparisons(cond: models.Condition) -> list[tuple[str, float]]:
    pairs = [(">", cond.gt), (">=", cond.gte), ("<", cond.lt), ("<=", cond.lte)]
    return [(op, float(bound)) for op, bound in pairs if bound is not None]


def _text(value: str | int | float) -> str:
    """A YAML scalar as the text a stored value would be (42 and 42.0 are the number 42)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _group(sql: Sql, cond: models.Condition) -> str:
    tests = ["g.profile_id = p.id", f"g.type = {sql.param(cond.group)}"]
    if cond.id is not None:
        tests.append(f"g.key = {sql.param(cond.id)}")
    if cond.in_ is not None:
        tests.append(f"g.key IN ({', '.join(sql.param(_text(v)) for v in cond.in_)})" if cond.in_ else "1=0")
    return f"EXISTS (SELECT 1 FROM profile_group g WHERE {' AND '.join(tests)})"


def _event(sql: Sql, cond: models.Condition) -> str:
    tests = ["e.profile_id = p.id", f"e.type = {sql.param(cond.event)}"]
    if cond.within_days is not None:
        tests.append(f"e.time >= {sql.param(sql.cutoff(cond.within_days))}")
    if cond.since is not None:
        tests.append(f"e.time >= {sql.param(cond.since)}")
    where = " AND ".join(tests)
    if not cond.count and cond.sum is None:
        return f"EXISTS (SELECT 1 FROM event e WHERE {where})"
    measure = "COUNT(*)" if cond.count else \
        f"COALESCE(SUM({sql.dialect.json_field_number('e.properties', cond.sum or '', sql.param)}), 0)"
    bounds = _comparisons(cond) + ([("=", float(cond.equals))] if cond.equals is not None else [])
    value = f"(SELECT {measure} FROM event e WHERE {where})"
    return "(" + " AND ".join(f"{value} {op} {sql.param(bound)}" for op, bound in bounds) + ")"

