"""The merge against a plain row-by-row reference: random files whose rows revisit a few profiles, every rule,
consent, `sum` differences on re-import, on SQLite and PostgreSQL (hypothesis).

The reference applies each row on its own with the pure rules of `rules.py`, as the SPEC's
table reads; the merge applies a batch's rows of one profile together. Both must agree on
every profile's properties and on the counts.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftp_connector import merge, rules
from sftp_connector.config import connector, models
from sftp_connector.store import db, queries
from sftp_connector.store import models as tables
from tests.fixtures.postgres import new_database

FIELDS = ["id", "a", "b", "c", "n", "m"]
LIST_RULES = ["set", "set_if_empty", "set_or_clear", "add"]
OBJECTIVE = "news"


@dataclass
class Reference:
    """The store as the SPEC's table reads: rows applied one at a time, in file order."""

    goal: models.ImportProfiles
    objectives: set[str]
    profiles: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    records: dict[tuple[str, str, int], tuple[tuple[str, ...], dict[str, Decimal | None]]] = field(
        default_factory=dict)

    def import_file(self, path: str, rows: list[dict[str, str]]) -> Counter[str]:
        counts: Counter[str] = Counter()
        seen: Counter[str] = Counter()
        for row in rows:
            counts["rows_read"] += 1
            ident = row["id"]
            if not ident:
                counts["rows_rejected"] += 1
                continue
            seen[ident] += 1
            key = (path, ident, seen[ident])
            content = tuple(row[f] for f in self.used)  # a row's hash covers the fields the goal uses
            previous = self.records.get(key)
            if previous is not None and previous[0] == content:
                counts["rows_unchanged"] += 1
                continue
            state = copy.deepcopy(self.profiles.get(ident, {"crm_id": [ident]}))
            contributions = self._apply(row, state, previous[1] if previous else {}, counts)
            if self.objectives and not self.objectives & set(state.get("consent", [])):
                counts["no_consent"] += 1
                continue
            counts["rows_applied"] += 1
            self.profiles[ident] = state
            self.records[key] = (content, contributions)
        return counts

    @property
    def used(self) -> list[str]:
        return ["id", *dict.fromkeys(m.field for m in self.goal.mappings)]

    def _apply(self, row: dict[str, str], state: dict[str, list[Any]], before: dict[str, Decimal | None],
               counts: Counter[str]) -> dict[str, Decimal | None]:
        amounts: dict[str, Decimal | None] = {}
        for mapping in self.goal.mappings:
            cell = row[mapping.field]
            if mapping.rule != "sum":
                state[mapping.property] = rules.RULES[mapping.rule](state.get(mapping.property, []),
                                                                    rules.split(cell, "|"))
                continue
            amounts.setdefault(mapping.property, None)
            if cell == "":
                continue
            try:
                amount = rules.parse_amount(cell)
            except ValueError:
                counts["cells_rejected"] += 1
                continue
            amounts[mapping.property] = (amounts[mapping.property] or Decimal(0)) + amount
        contributions = {}
        for prop, amount in amounts.items():
            was = before.get(prop)
            if amount is not None:
                state[prop] = rules.sum_(state.get(prop, []), [amount - (was or Decimal(0))])
            contributions[prop] = amount if amount is not None else was
        return contributions

    def snapshot(self) -> dict[str, dict[str, list[Any]]]:
        return {ident: _normal(props) for ident, props in self.profiles.items()}


def _normal(props: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Drop empty properties; sums as floats rounded to 6 places (the store keeps 9)."""
    return {p: [round(float(v), 6) for v in values] if p.startswith("s") else values
            for p, values in props.items() if values}


class Merged:
    """The real merge, in process, over a real store: each file in its own transaction, in small batches."""

    def __init__(self, url: str, goal: models.ImportProfiles, objectives: list[str]) -> None:
        self.store = db.open_store(url)
        self.goal = goal
        self.privacy = connector.Privacy(objectives=objectives, consent_property="consent")

    def import_file(self, path: str, rows: list[dict[str, str]], batch: int) -> Counter[str]:
        frame = pl.DataFrame(rows, schema=dict.fromkeys(FIELDS, pl.String), orient="row") \
            .with_columns(_row=pl.int_range(2, len(rows) + 2, dtype=pl.Int64))
        now = time.time()
        with self.store.transaction() as conn, merge.Pipeline(self.store, conn) as pipeline:
            file_id = queries.save_imported_file(conn, tables.ImportedFile(
                goal=self.goal.name, path=path, size=0, mtime=0, sha256="", config_digest="d", listed_at=now,
                imported_at=now, run="r"))
            ctx = merge.context(self.goal, label=path, digest="d", indexed=frozenset({"crm_id"}),
                                privacy=self.privacy)
            state = merge.start(self.store, conn, ctx, frame.columns, file_id=file_id, now=now)
            for start in range(0, frame.height, batch):
                pipeline.apply(frame.slice(start, batch), state)
            pipeline.flush()
            merge.finish(conn, [state])
        counts = Counter({k: getattr(state.counts, k) for k in (
            "rows_applied", "rows_unchanged", "rows_rejected", "cells_rejected", "no_consent")})
        counts["rows_read"] = len(rows)
        return +counts

    def snapshot(self) -> dict[str, dict[str, list[Any]]]:
        with self.store.connection() as conn:
            profiles = list(queries.iter_profiles(conn))
        return {p["properties"]["crm_id"][0]: _normal(p["properties"]) for p in profiles}


cells = st.lists(st.sampled_from(["x", "y", "z", OBJECTIVE]), max_size=3).map("|".join)
amounts = st.sampled_from(["", "1", "2.5", "-1", "10", "x"])
rows = st.lists(st.fixed_dictionaries({
    "id": st.sampled_from(["", "A", "A", "A", "B", "B", "C", "D"]), "a": cells, "b": cells, "c": cells,
    "n": amounts, "m": amounts,
}), min_size=1, max_size=30)
list_mappings = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["p1", "p2", "consent"]),
                                   st.sampled_from(LIST_RULES)), min_size=1, max_size=5)
sum_mappings = st.lists(st.tuples(st.sampled_from(["n", "m"]), st.sampled_from(["s1", "s2"])), max_size=3)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    maps = [{"field": f, "property": p, "rule": r} for f, p, r in draw(list_mappings)]
    maps += [{"field": f, "property": p, "rule": "sum"} for f, p in draw(sum_mappings)]
    order = draw(st.permutations(range(len(maps))))
    first, second = draw(rows), draw(rows)
    edited = [dict(row, **draw(st.fixed_dictionaries({"a": cells, "n": amounts}))) if draw(st.booleans()) else row
              for row in second]
    return {"mappings": [maps[i] for i in order], "objectives": draw(st.sampled_from([[], [OBJECTIVE]])),
            "files": [("daily_1.csv", first), ("daily_2.csv", second), ("daily_2.csv", edited)],
            "batch": draw(st.sampled_from([4, 9, 100]))}


def goal_of(mappings: list[dict[str, str]]) -> models.ImportProfiles:
    return models.ImportProfiles.model_validate({
        "kind": "import-profiles", "name": "g", "files": [{"name": "f", "pattern": "*.csv"}],
        "identifiers": [{"field": "id", "property": "crm_id"}], "mappings": mappings})


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_merge_matches_applying_rows_one_at_a_time(kind: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("postgres_server") if kind == "postgresql" else None

    @settings(max_examples=40 if kind == "sqlite" else 20, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scenarios())
    def check(scenario: dict[str, Any]) -> None:
        goal = goal_of(scenario["mappings"])
        reference = Reference(goal, set(scenario["objectives"]))
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'store.db'}" if server is None else new_database(server)
            merged = Merged(url, goal, scenario["objectives"])
            try:
                for path, file_rows in scenario["files"]:
                    expected = +reference.import_file(path, file_rows)
                    assert merged.import_file(path, file_rows, scenario["batch"]) == expected, path
                    assert merged.snapshot() == reference.snapshot(), path
            finally:
                merged.store.dispose()

    check()


def test_a_sum_property_cannot_take_another_rule() -> None:
    goal = goal_of([{"field": "n", "property": "s1", "rule": "sum"}, {"field": "a", "property": "s1", "rule": "set"}])
    with pytest.raises(Exception, match="s1"):
        merge.mappings(goal, FIELDS)
