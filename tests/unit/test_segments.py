"""store/segments: conditions compiled to one WHERE expression, evaluated by SQLite in memory over hand-made
profiles (a cell is its values as JSON array text)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from sftp_connector.config import models
from sftp_connector.errors import ConfigError
from sftp_connector.store import segments
from sftp_connector.store.dialect import dialect_for

PROFILES = {
    1: {"newsletter": ["yes"], "email": ["a@x.com"], "points": ["120"], "city": ["Amsterdam", "Utrecht"],
        "joined": ["2026-11-20"]},
    2: {"newsletter": ["no"], "email": ["b@x.com"], "points": ["7"], "city": ["Brussel"]},
    3: {"newsletter": ["yes"], "points": ["x"], "joined": ["2020-01-01T10:00:00Z"]},
}
COLUMNS = {"newsletter": "p.c1", "email": "p.c2", "points": "p.c3", "city": "p.c4", "joined": "p.c5"}
NOW = datetime(2026, 12, 4, tzinfo=UTC)


def members(condition: dict[str, Any], named: dict[str, Any] | None = None) -> list[int]:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE profile (id INTEGER PRIMARY KEY, "
                             + ", ".join(f"c{i} TEXT" for i in range(1, 6)) + ")")
        for pid, props in PROFILES.items():
            cells = [json.dumps(props[p]) if p in props else None for p in COLUMNS]
            conn.exec_driver_sql("INSERT INTO profile VALUES (?, ?, ?, ?, ?, ?)", (pid, *cells))
        sql = segments.Sql(dialect=dialect_for(engine), columns=COLUMNS, now=NOW,
                           segments={k: models.Condition.model_validate(v) for k, v in (named or {}).items()})
        where = segments.condition(sql, models.Condition.model_validate(condition))
        rows = conn.execute(sa.text(f"SELECT id FROM profile p WHERE {where} ORDER BY id"), sql.params).all()
    return [row[0] for row in rows]


@pytest.mark.parametrize(("condition", "expected"), [
    ({"property": "newsletter", "equals": "yes"}, [1, 3]),
    ({"property": "email", "exists": True}, [1, 2]),
    ({"property": "email", "exists": False}, [3]),
    ({"property": "city", "equals": "Utrecht"}, [1]),  # any one value of the property
    ({"property": "city", "in": ["Brussel", "Gent"]}, [2]),
    ({"property": "city", "contains": "ter"}, [1]),
    ({"property": "points", "gt": 100}, [1]),  # numbers compare as numbers: "7" < 100 < "120"
    ({"property": "points", "lte": 7}, [2]),  # "x" is no number
    ({"property": "joined", "within_days": 30}, [1]),
    ({"property": "joined", "before": "2021-01-01"}, [3]),
    ({"property": "unknown", "exists": True}, []),
    ({"all": [{"property": "newsletter", "equals": "yes"}, {"property": "email", "exists": True}]}, [1]),
    ({"any": [{"property": "points", "gt": 100}, {"property": "city", "equals": "Brussel"}]}, [1, 2]),
    ({"not": {"property": "newsletter", "equals": "yes"}}, [2]),
    ({"all": []}, [1, 2, 3]),
    ({"any": []}, []),
])
def test_conditions_select_the_profiles_they_describe(condition: dict[str, Any], expected: list[int]) -> None:
    assert members(condition) == expected


def test_named_segments_nest_and_a_cycle_is_refused() -> None:
    named = {"mailable": {"property": "email", "exists": True},
             "newsletter": {"all": [{"segment": "mailable"}, {"property": "newsletter", "equals": "yes"}]}}
    assert members({"segment": "newsletter"}, named) == [1]
    with pytest.raises(ConfigError, match="refers to itself"):
        members({"segment": "a"}, {"a": {"segment": "b"}, "b": {"segment": "a"}})
    with pytest.raises(ConfigError, match="is not defined"):
        members({"segment": "nope"})
