"""The store's dialect on both databases: the goal lock, and the SQL pieces segments are compiled from,
evaluated by the real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sftp_connector.errors import ConfigError, StoreError
from sftp_connector.store import dialect, queries
from sftp_connector.store.db import Store, open_store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.dispose()


def test_the_dialect_is_the_store_s_database(store: Store, store_url: str) -> None:
    expected = dialect.SqliteDialect if store_url.startswith("sqlite") else dialect.PostgresDialect
    assert type(store.dialect) is expected
    assert store.dialect.name == store.engine.dialect.name


def test_a_database_other_than_the_two_is_refused() -> None:
    engine = sa.create_mock_engine("mysql://", lambda *_args, **_kwargs: None)
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL, not mysql"):
        dialect.dialect_for(engine)  # type: ignore[arg-type]


def test_a_goal_lock_is_held_once_until_released(store: Store, tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    with store.dialect.goal_lock(store.engine, "customers", locks) as first:
        with store.dialect.goal_lock(store.engine, "customers", locks) as second:
            assert (first, second) == (True, False)
        with store.dialect.goal_lock(store.engine, "orders", locks) as other:
            assert other  # each goal has a lock of its own
    with store.dialect.goal_lock(store.engine, "customers", locks) as again:
        assert again


def test_a_goal_lock_on_an_unreachable_postgresql_fails_naming_the_goal() -> None:
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with pytest.raises(StoreError, match="cannot take the goal's lock") as caught, \
            dialect.PostgresDialect().goal_lock(engine, "customers", Path("/nonexistent")):
        pass
    assert caught.value.goal == "customers"


def _one(store: Store, expression: str, params: dict[str, Any]) -> Any:
    with store.connection() as conn:
        return queries.fetch(conn, f"SELECT {expression}", params)[0][0]


def _elements(store: Store, pick: str, cell: str) -> list[Any]:
    """Given an expression of `j.value` and JSON array text, return it for each element."""
    d = store.dialect
    with store.connection() as conn:
        return [row[0] for row in queries.fetch(
            conn, f"SELECT {pick} FROM {d.json_elements(d.placeholder('cell'))}", {"cell": cell})]


def test_elements_of_a_cell_as_text_and_as_numbers(store: Store) -> None:
    cell = '["10", " 2.5 ", "n/a", "1e3", "", "-4"]'
    d = store.dialect
    assert _elements(store, d.element_text("j.value"), cell) == ["10", " 2.5 ", "n/a", "1e3", "", "-4"]
    assert _elements(store, d.element_number("j.value"), cell) == [10.0, 2.5, None, 1000.0, None, -4.0]


def test_contains_and_a_json_field_as_a_number(store: Store) -> None:
    d = store.dialect
    params: dict[str, Any] = {}

    def bind(value: Any) -> str:
        params[f"b{len(params)}"] = value
        return d.placeholder(f"b{len(params) - 1}")

    text, needle = bind("books|chess"), bind("hes")
    assert _one(store, f"CASE WHEN {d.contains(text, needle)} THEN 1 ELSE 0 END", params) == 1
    document = bind('{"total": " 12.5", "note": "n/a", "gross.total eur": "3"}')
    assert _one(store, d.json_field_number(document, "total", bind), params) == 12.5
    assert _one(store, d.json_field_number(document, "note", bind), params) is None
    assert _one(store, d.json_field_number(document, "missing", bind), params) is None
    assert _one(store, d.json_field_number(document, "gross.total eur", bind), params) == 3.0
