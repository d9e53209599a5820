"""Two ways to lay out any number of properties, measured bare (no connector code): property columns spread
over side tables of bounded width, against one JSON document per profile.

100,000 profiles of 13 properties (JSON array text per value, as the store keeps them): a first load, a
merge load that changes 3 properties of 10% of the profiles, a read of every profile's 13 properties by id,
and a segment (`p7 equals`) evaluated in SQL; then the same read in a store whose profiles hold 5,000
properties more (the documents grow, the columns stay where they are).

    python -m benchmarks.store_layout sqlite:///tmp/layout.db
    python -m benchmarks.store_layout postgresql://user@host/db
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

N, PROPS, WIDE = 100_000, 13, 5_000


def value(r: int, c: int) -> str:
    return json.dumps([f"v{r}_{c}"])


def timed(label: str, work: Callable[[], Any]) -> None:
    start = time.perf_counter()
    work()
    print(f"{label:<52} {time.perf_counter() - start:7.2f} s", flush=True)


class Layout:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine, self.sqlite = engine, engine.dialect.name == "sqlite"

    def copy(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows as the connector does: executemany on SQLite, COPY on PostgreSQL."""
        if self.sqlite:
            self.run(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
            return
        with self.engine.begin() as conn, conn.connection.driver_connection.cursor().copy(
                f"COPY {table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def run(self, sql: str, rows: list[tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]]:
        with self.engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()
            sql = sql if self.sqlite else sql.replace("?", "%s")
            if rows is None:
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description else []
            cursor.executemany(sql, rows)
            return []


class Columns(Layout):
    """profile (id, p_0 … p_12); wide properties in profile_x1 … of 250 columns each."""

    def create(self, wide: int = 0) -> None:
        self.run("DROP TABLE IF EXISTS profile")
        cols = ", ".join(f"p_{c} TEXT" for c in range(PROPS))
        self.run(f"CREATE TABLE profile (id BIGINT PRIMARY KEY, {cols})")
        for t in range(wide // 250):
            self.run(f"DROP TABLE IF EXISTS profile_x{t}")
            self.run(f"CREATE TABLE profile_x{t} (id BIGINT PRIMARY KEY, "
                     + ", ".join(f"q_{t}_{c} TEXT" for c in range(250)) + ")")

    def rows(self, wide: int = 0) -> list[list[tuple[Any, ...]]]:
        """The rows to load, per table (made before the clock starts)."""
        tables = [[(r, *(value(r, c) for c in range(PROPS))) for r in range(N)]]
        return tables + [[(r, *(value(r, c) for c in range(250))) for r in range(0, N, 100)]
                         for _ in range(wide // 250)]

    def load(self, rows: list[list[tuple[Any, ...]]]) -> None:
        self.copy("profile", rows[0])
        for t, side in enumerate(rows[1:]):
            self.copy(f"profile_x{t}", side)

    def merge(self, changed: list[int]) -> None:
        self.run("UPDATE profile SET p_1 = ?, p_5 = ?, p_9 = ? WHERE id = ?",
                 [(value(r, 101), value(r, 105), value(r, 109), r) for r in changed])

    def read(self) -> None:
        self.run("SELECT id, " + ", ".join(f"p_{c}" for c in range(PROPS)) + " FROM profile")

    def segment(self) -> int:
        test = ("EXISTS (SELECT 1 FROM json_each(p_7) j WHERE j.value = 'v500_7')" if self.sqlite else
                "EXISTS (SELECT 1 FROM json_array_elements_text(p_7::json) j(v) WHERE j.v = 'v500_7')")
        return len(self.run(f"SELECT id FROM profile WHERE p_7 IS NOT NULL AND {test}"))


class Documents(Layout):
    """profile (id, doc): one JSON object per profile, property → values."""

    def create(self, wide: int = 0) -> None:
        self.run("DROP TABLE IF EXISTS profile")
        self.run(f"CREATE TABLE profile (id BIGINT PRIMARY KEY, doc {'TEXT' if self.sqlite else 'JSONB'})")

    def rows(self, wide: int = 0) -> list[list[tuple[Any, ...]]]:
        def doc(r: int) -> str:
            props = {f"p_{c}": [f"v{r}_{c}"] for c in range(PROPS)}
            if wide and r % 100 == 0:
                props.update({f"q_{c}": [f"v{r}_{c}"] for c in range(wide)})
            return json.dumps(props)
        return [[(r, doc(r)) for r in range(N)]]

    def load(self, rows: list[list[tuple[Any, ...]]]) -> None:
        self.copy("profile", rows[0])

    def merge(self, changed: list[int]) -> None:
        # Read the documents, change three properties, write them back whole (what a merge would do).
        wanted = ",".join(map(str, changed))
        rows = self.run(f"SELECT id, doc FROM profile WHERE id IN ({wanted})")
        out = []
        for pid, doc in rows:
            props = json.loads(doc) if isinstance(doc, str) else doc
            props.update({"p_1": [f"v{pid}_101"], "p_5": [f"v{pid}_105"], "p_9": [f"v{pid}_109"]})
            out.append((json.dumps(props), pid))
        self.run("UPDATE profile SET doc = ? WHERE id = ?", out)

    def read(self) -> None:
        picks = ", ".join(f"json_extract(doc, '$.p_{c}')" if self.sqlite else f"doc ->> 'p_{c}'" for c in range(PROPS))
        self.run(f"SELECT id, {picks} FROM profile")

    def segment(self) -> int:
        test = ("EXISTS (SELECT 1 FROM json_each(doc, '$.p_7') j WHERE j.value = 'v500_7')" if self.sqlite
                else "doc -> 'p_7' @> '[\"v500_7\"]'")
        return len(self.run(f"SELECT id FROM profile WHERE {test}"))


def main(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    changed = random.Random(1).sample(range(N), N // 10)
    for layout in (Columns(engine), Documents(engine)):
        name = type(layout).__name__.lower()
        layout.create()
        rows = layout.rows()
        timed(f"{name}: first load, {N:,} x {PROPS}", lambda layout=layout, rows=rows: layout.load(rows))
        timed(f"{name}: merge load, 10% changed (3 properties)", lambda layout=layout: layout.merge(changed))
        timed(f"{name}: read 13 properties of every profile", layout.read)
        timed(f"{name}: segment p_7 equals", layout.segment)
        layout.create(WIDE)
        layout.load(layout.rows(WIDE))
        timed(f"{name}: read 13 properties, 1% of profiles +{WIDE:,}", layout.read)
        timed(f"{name}: merge load, 1% of profiles +{WIDE:,}", lambda layout=layout: layout.merge(changed))
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
