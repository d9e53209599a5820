"""A 13-column import into a store with 20 properties against one with 10,000 more (issue 17's 1.2x target).

200,000 rows (an identifier and 12 `set` mappings) are merged in-process in batches of
100,000, a first load and then the same rows with 10% of the cells changed. Scenarios:
`20` (7 other properties), `after` (10,000 more properties made before the goal's, as ten
1,000-column files would make them), `before` (the goal's properties first, then 10,000).
Prints wall and CPU seconds (all threads).

    python -m benchmarks.wide_store sqlite:////tmp/wide.db 20            (one scenario, a new SQLite file)
    python -m benchmarks.wide_store pg 20,after,before 3                 (a throwaway PostgreSQL server)
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import polars as pl

from sftp_connector import merge
from sftp_connector.config import models
from sftp_connector.store import db, queries
from sftp_connector.store.db import Store

ROWS, BATCH = 200_000, 100_000
GOAL = models.ImportProfiles.model_validate({
    "kind": "import-profiles", "name": "g", "files": [{"name": "w", "directory": "in", "pattern": "w.csv"}],
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": f"f{i}", "property": f"prop{i}"} for i in range(12)]})


def rows(seed: int, changed: float) -> pl.DataFrame:
    pick = random.Random(seed)
    data = {"email": [f"c{r}@x.com" for r in range(ROWS)]}
    for i in range(12):
        data[f"f{i}"] = [f"v{r}_{i}" + ("x" if pick.random() < changed else "") for r in range(ROWS)]
    return pl.DataFrame(data).with_columns(_row=pl.int_range(pl.len()) + 2)


def merged(store: Store, frame: pl.DataFrame) -> tuple[float, float]:
    """Merge the rows as the file `w` of goal `g`; return (wall, CPU) seconds."""
    ctx = merge.context(GOAL, label="w.csv", digest="d", indexed=frozenset({"email"}), privacy=models.Privacy())
    wall, cpu = time.perf_counter(), time.process_time()
    with store.transaction() as conn, merge.Pipeline(store, conn) as pipeline:
        conn.exec_driver_sql("INSERT INTO imported_file (goal, path, size, mtime, sha256, config_digest, listed_at, "
                             "imported_at, run) VALUES ('g', 'w', 1, 1, 'x', 'd', 1, 1, 'r') ON CONFLICT DO NOTHING")
        file_id = conn.exec_driver_sql("SELECT id FROM imported_file WHERE path = 'w'").scalar_one()
        state = merge.start(store, conn, ctx, frame.columns, file_id=file_id, now=time.time())
        for start in range(0, frame.height, BATCH):
            pipeline.apply(frame.slice(start, BATCH), state)
        pipeline.flush()
    return time.perf_counter() - wall, time.process_time() - cpu


def scenario(url: str, name: str) -> None:
    store = db.open_store(url)
    goal = ["email", *(f"prop{i}" for i in range(12))]
    with store.transaction() as conn:
        queries.property_columns(store, conn, [f"other{i}" for i in range(7)] + (goal if name == "before" else []))
        for k in range(10 if name != "20" else 0):
            queries.property_columns(store, conn, [f"wide{k}_{i}" for i in range(1000)])
    first, again = merged(store, rows(1, 0.0)), merged(store, rows(2, 0.1))
    print(f"{name:7} {store.engine.dialect.name:10} first {first[0]:6.2f} s (cpu {first[1]:6.2f})   "
          f"merge, 10% changed {again[0]:6.2f} s (cpu {again[1]:6.2f})", flush=True)
    store.dispose()


def main(argv: list[str]) -> None:
    if argv[0] != "pg":
        Path(argv[0].removeprefix("sqlite:///")).unlink(missing_ok=True)
        scenario(argv[0], argv[1])
        return
    from tests.fixtures.postgres import new_database, running_postgres

    with running_postgres() as server:
        for _ in range(int(argv[2])):
            for name in argv[1].split(","):
                scenario(new_database(server), name)


if __name__ == "__main__":
    main(sys.argv[1:])
