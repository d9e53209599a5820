"""How fast the console's pages answer with a large store: 1M profiles and 10,000 runs in the history.

A store is filled in-process (profiles through the merge, as an import writes them, with an
order event for one profile in ten; runs through history, as the runner records them), then
the real console app is served by uvicorn on 127.0.0.1 and each page is fetched over HTTP,
`--repeat` times after one warm-up. The baseline, measured in the same run, is the console's
`/healthz` (the same server, middleware and store round trip, no page): each page prints its
median and 95th percentile and its ratio to that baseline. Pages that list the SFTP server or
decrypt a file (files detected, preview) depend on the server and the file, not on the store,
and are not timed here.

    python -m benchmarks.console [--profiles 1000000] [--runs 10000] [--store sqlite|postgresql] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import sqlalchemy as sa
import yaml

from sftp_connector import history, merge
from sftp_connector.config import load, models
from sftp_connector.console import server
from sftp_connector.results import Counts, FileResult, GoalResult, RunResult
from sftp_connector.store import db, queries
from sftp_connector.store import models as tables
from sftp_connector.store.db import Store
from tests.fixtures.browser import free_port

BATCH = 100_000
TARGET_MS = 200
GOAL = {
    "kind": "import-profiles", "name": "customers",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*.csv"}],
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": "first_name", "property": "first_name"}, {"field": "city", "property": "city"},
                 {"field": "points", "property": "points", "rule": "sum"}],
    "events": [{"type": "order", "id": "order_id", "time": "at", "properties": {"total": "points"}}],
}


def deployment(folder: Path, url: str, goals: int) -> load.Config:
    """A connector.yaml and `goals` goals (customers, then more like it): the timed pages never contact the
    server."""
    (folder / "goals").mkdir(parents=True)
    (folder / "connector.yaml").write_text(yaml.safe_dump({
        "name": "bench", "store": {"url": url}, "pgp": {"enabled": False},
        "sftp": {"host": "127.0.0.1", "port": 2222, "username": "bench", "auth": {"method": "password",
                                                                                   "password": "unused"},
                 "host_key_fingerprint": "SHA256:" + "A" * 43},
    }))
    (folder / "goals" / "customers.yaml").write_text(yaml.safe_dump(GOAL))
    for i in range(2, goals + 1):
        (folder / "goals" / f"goal{i}.yaml").write_text(yaml.safe_dump({
            **GOAL, "name": f"goal{i}", "events": [],
            "files": [{"name": "customers", "directory": f"in{i}", "pattern": "customers_*.csv"}]}))
    return load.load(folder / "connector.yaml")


def fill_profiles(store: Store, config: load.Config, count: int) -> None:
    """Merge `count` profiles (and an order event for one in ten) as the goal's imports would."""
    goal = config.goal("customers")
    assert isinstance(goal, models.ImportProfiles)
    settings = merge.context(goal, label="customers_1.csv", digest="d", indexed=frozenset({"email"}),
                             privacy=models.Privacy())
    with store.transaction() as conn, merge.Pipeline(store, conn) as pipeline:
        file_id = queries.save_imported_file(conn, _record())
        state = None
        for start in range(0, count, BATCH):
            ids = range(start, min(start + BATCH, count))
            frame = pl.DataFrame({"email": [f"c{i}@example.com" for i in ids],
                                  "first_name": [f"Name{i % 5000}" for i in ids],
                                  "city": [f"City{i % 300}" for i in ids],
                                  "points": [str(i % 100) for i in ids]}).with_columns(_row=pl.int_range(pl.len()) + 2)
            if state is None:
                state = merge.start(store, conn, settings, frame.columns, file_id=file_id, now=time.time())
            pipeline.apply(frame, state)
        pipeline.flush()
    with store.transaction() as conn:
        events = [{"type": "order", "event_id": f"O{i}", "profile_id": i + 1, "time": "2026-11-01T10:00:00Z",
                   "properties": '{"total": "5"}', "nested": "{}", "goal": "customers",
                   "updated_at": time.time()}
                  for i in range(0, count, 10)]
        conn.execute(sa.insert(tables.table_of(tables.Event)), events)


def _record() -> tables.ImportedFile:
    return tables.ImportedFile(goal="customers", path="/in/customers_1.csv", size=1, mtime=1, sha256="x",
                               config_digest="d", listed_at=1.0, imported_at=1.0, run="bench")


def fill_runs(store: Store, config: load.Config, count: int) -> str:
    """Record `count` runs of every goal (one file each, one run in twenty failed); return the newest run's id."""
    start = time.time() - count * 60
    run = ""
    for i in range(count):
        run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(start + i * 60))}-{i % 0xFFFFFF:06x}"
        failed = i % 20 == 0
        result = RunResult(run=run, trigger="schedule", started_at=start + i * 60, finished_at=start + i * 60 + 5,
                           status="failed" if failed else "success")
        result.goals += [GoalResult(
            goal.name, "import-profiles", "failed" if failed else "success", "boom" if failed else None,
            started_at=start + i * 60, finished_at=start + i * 60 + 5, profiles_updated=100,
            last_profiles=["1", "2", "3", "4", "5"], unique_profiles_exchanged=1000,
            files=[FileResult(f"/in/customers_{i}.csv", "failed" if failed else "imported", "x" * 64,
                              Counts(rows_read=1000, rows_applied=100, rows_unchanged=900))])
            for goal in config.goals]
        history.begin(store, result)
        history.finish(store, result)
    return run


@contextmanager
def served(config: load.Config, store: Store) -> Iterator[str]:
    console = server.build(lambda: config, store, threading.Event())
    port = free_port()
    running = server.serve_in_thread(console, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True


def timed(url: str, repeat: int) -> list[float]:
    urllib.request.urlopen(url).read()  # warm-up
    found = []
    for _ in range(repeat):
        started = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            response.read()
            assert response.status == 200, url
        found.append((time.perf_counter() - started) * 1000)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--goals", type=int, default=20, help="goals in the configuration, each in every run")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="console-bench-") as folder, _store_url(args.store, folder) as url:
        config = deployment(Path(folder) / "deploy", url, args.goals)
        store = db.open_store(url)
        began = time.perf_counter()
        fill_profiles(store, config, args.profiles)
        newest = fill_runs(store, config, args.runs)
        print(f"store: {args.profiles:,} profiles, {args.runs:,} runs of {args.goals} goals ({args.store}), filled in "
              f"{time.perf_counter() - began:.0f} s", flush=True)
        pages = {"/healthz (baseline)": "/healthz", "overview": "/", "goals": "/goals", "run history": "/history",
                 "run history, page 100": "/history?page=100", "one run": f"/history/{newest}",
                 "profile by identifier": "/profiles?q=c777777%40example.com".replace(
                     "777777", str(args.profiles * 7 // 9)),
                 "profile by id": f"/profiles?q={args.profiles // 2}", "run now": "/run"}
        with served(config, store) as base:
            results = {name: timed(base + path, args.repeat) for name, path in pages.items()}
        store.dispose()
    baseline = statistics.median(results["/healthz (baseline)"])
    print(f"| page | median ms | p95 ms | ratio to /healthz | under {TARGET_MS} ms |")
    print("|---|---:|---:|---:|---|")
    for name, times in results.items():
        median, p95 = statistics.median(times), sorted(times)[int(len(times) * 0.95) - 1]
        print(f"| {name} | {median:.1f} | {p95:.1f} | {median / baseline:.1f}x | "
              f"{'yes' if p95 < TARGET_MS else 'NO'} |")


@contextmanager
def _store_url(kind: str, folder: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder}/store.db"
        return
    from tests.fixtures.postgres import new_database, running_postgres

    with running_postgres() as postgres:
        yield new_database(postgres)


if __name__ == "__main__":
    main()
