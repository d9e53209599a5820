"""Segment conditions, each kind, evaluated in SQL on SQLite and on PostgreSQL over imported profiles,
groups and events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sftp_connector.config import models
from sftp_connector.errors import ConfigError
from sftp_connector.store import db, export_reads
from tests.fixtures.connector import Deployment

OLD = time.time() - 3600


def day(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%d")


PEOPLE = f"""\
key,email,newsletter,points,score,born,seen,interests,household
P1,a@x.com,yes,10,7,1990-05-01,{day(3)},books|chess,H1
P2,b@x.com,no,5,n/a,2001-01-01,{day(100)},cycling,H2
P3,c@x.com,yes,,12.5,,,,
"""
ORDERS = f"""\
order_id,email,total,at
O1,a@x.com,50,{day(10)}
O2,a@x.com,70,{day(100)}
O3,b@x.com,20,{day(5)}
R1,c@x.com,1,{day(2)}
"""


@pytest.fixture
def people(deployment: Deployment) -> dict[str, Any]:
    deployment.write_goal("people", {
        "kind": "import-profiles", "name": "people",
        "files": [{"name": "people", "directory": "in", "pattern": "people_*.csv"}], "stable_after_s": 0,
        "identifiers": [{"field": "email", "property": "email"}],
        "groups": [{"type": "household", "field": "household"}],
        "mappings": [{"field": f, "property": f} for f in ("key", "newsletter", "score", "born", "seen")]
        + [{"field": "points", "property": "points", "rule": "sum"},
           {"field": "interests", "property": "interests", "rule": "add"}],
    })
    deployment.write_goal("orders", {
        "kind": "import-profiles", "name": "orders", "order": 1,
        "files": [{"name": "orders", "directory": "in", "pattern": "orders_*.csv"}], "stable_after_s": 0,
        "identifiers": [{"field": "email", "property": "email"}], "allow_new_profiles": False,
        "processors": [{"type": "filter", "where": {"field": "order_id", "matches": "^O"}}],
        "events": [{"type": "order", "id": "order_id", "time": "at", "properties": {"total": "total"}}],
    })
    deployment.write_goal("returns", {
        "kind": "import-profiles", "name": "returns", "order": 2,
        "files": [{"name": "orders", "directory": "in", "pattern": "orders_*.csv"}], "stable_after_s": 0,
        "identifiers": [{"field": "email", "property": "email"}], "allow_new_profiles": False,
        "processors": [{"type": "filter", "where": {"field": "order_id", "matches": "^R"}}],
        "events": [{"type": "return", "id": "order_id", "time": "at"}],
    })
    deployment.update_connector({"segments": {
        "newsletter": {"property": "newsletter", "equals": "yes"},
        "active": {"event": "order", "within_days": 30},
        "engaged": {"all": [{"segment": "newsletter"}, {"segment": "active"}]},
    }})
    deployment.put("in/people_1.csv", PEOPLE, mtime=OLD)
    deployment.put("in/orders_1.csv", ORDERS, mtime=OLD)
    assert deployment.run().status == "success"
    return {p["properties"]["key"][0]: p["id"] for p in deployment.profiles()}


def members(deployment: Deployment, ids: dict[str, Any], condition: dict[str, Any]) -> list[str]:
    config = deployment.config()
    store = db.open_store(config.connector.store.url)
    try:
        found = export_reads.members(store, dict(config.connector.segments),
                                      models.Condition.model_validate(condition))
    finally:
        store.dispose()
    names = {pid: key for key, pid in ids.items()}
    return [names[pid] for pid in found]


CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("equals", {"property": "newsletter", "equals": "yes"}, ["P1", "P3"]),
    ("equals a number", {"property": "points", "equals": 10}, ["P1"]),
    ("in", {"property": "newsletter", "in": ["no", "maybe"]}, ["P2"]),
    ("not_in", {"property": "newsletter", "not_in": ["yes"]}, ["P2"]),
    ("exists", {"property": "interests", "exists": True}, ["P1", "P2"]),
    ("does not exist", {"property": "interests", "exists": False}, ["P3"]),
    ("unknown property exists", {"property": "nothing", "exists": True}, []),
    ("unknown property absent", {"property": "nothing", "exists": False}, ["P1", "P2", "P3"]),
    ("contains one value", {"property": "interests", "contains": "hes"}, ["P1"]),
    ("multi-value equals", {"property": "interests", "equals": "chess"}, ["P1"]),
    ("numeric gte", {"property": "points", "gte": 6}, ["P1"]),
    ("numeric on text skips non-numbers", {"property": "score", "lt": 10}, ["P1"]),
    ("numeric range", {"property": "score", "gt": 5, "lte": 12.5}, ["P1", "P3"]),
    ("date before", {"property": "born", "before": "2000-01-01"}, ["P1"]),
    ("date after", {"property": "born", "after": "2000-01-01"}, ["P2"]),
    ("within days", {"property": "seen", "within_days": 30}, ["P1"]),
    ("older than days", {"property": "seen", "older_than_days": 30}, ["P2"]),
    ("group", {"group": "household"}, ["P1", "P2"]),
    ("group id", {"group": "household", "id": "H1"}, ["P1"]),
    ("group in", {"group": "household", "in": ["H2", "H9"]}, ["P2"]),
    ("did", {"event": "order"}, ["P1", "P2"]),
    ("did within", {"event": "order", "within_days": 7}, ["P2"]),
    ("did since", {"event": "order", "since": day(50)}, ["P1", "P2"]),
    ("did not", {"not": {"event": "order", "within_days": 30}}, ["P3"]),
    ("count", {"event": "order", "count": True, "gte": 2}, ["P1"]),
    ("sum", {"event": "order", "sum": "total", "gt": 100}, ["P1"]),
    ("sum within", {"event": "order", "sum": "total", "within_days": 30, "gte": 20}, ["P1", "P2"]),
    ("sum equals", {"event": "order", "sum": "total", "equals": 120}, ["P1"]),
    ("another type", {"event": "return", "within_days": 30}, ["P3"]),
    ("all", {"all": [{"property": "newsletter", "equals": "yes"}, {"group": "household"}]}, ["P1"]),
    ("any", {"any": [{"event": "return"}, {"property": "points", "lt": 6}]}, ["P2", "P3"]),
    ("not", {"not": {"property": "newsletter", "equals": "yes"}}, ["P2"]),
    ("empty all", {"all": []}, ["P1", "P2", "P3"]),
    ("segment", {"segment": "engaged"}, ["P1"]),
]


def test_every_condition_kind(deployment: Deployment, people: dict[str, Any]) -> None:
    # One import, every case checked against it (each store): the mismatches are listed together.
    wrong = [(label, got, expected) for label, condition, expected in CASES
             if (got := members(deployment, people, condition)) != expected]
    assert not wrong, "\n".join(f"{label}: got {got}, expected {expected}" for label, got, expected in wrong)


def test_conditions_are_checked(deployment: Deployment) -> None:
    with pytest.raises(ValueError, match="exactly one of all, any"):
        models.Condition.model_validate({"property": "a", "group": "b", "equals": 1})
    with pytest.raises(ValueError, match="group conditions do not take gt"):
        models.Condition.model_validate({"group": "household", "gt": 1})
    with pytest.raises(ValueError, match="count or sum needs a comparison"):
        models.Condition.model_validate({"event": "order", "count": True})
    deployment.update_connector({"segments": {"a": {"segment": "b"}, "b": {"segment": "a"}, "c": {"segment": "x"}}})
    deployment.write_goal("out", {"kind": "export-profiles", "name": "out", "segment": "nope",
                                  "columns": [{"column": "id", "value": "profile_id"}]})
    with pytest.raises(ConfigError) as caught:
        deployment.config()
    problems = "\n".join(caught.value.problems)
    assert "segments.a: the segment refers to itself" in problems
    assert "segments.c: segment 'x' is not defined" in problems
    assert "goals/out.yaml: segment 'nope' is not defined" in problems
