"""Any number of properties, on both stores: a 5,000-column file under bulk_mapping imports (in under 1 GiB) and
reads back whole, ordinary goals still add properties after it, 10,000 properties live in one store; segments,
exports, erasure, overwrite, sums, re-imports and groups reach properties kept in side tables; where new
properties go; an export wider than one query fails alone, naming goal, file and limit."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from typing import Any

import sqlalchemy as sa

from sftp_connector.store import db, queries
from tests.fixtures.connector import ROOT, Deployment

OLD = time.time() - 3600
GIB = 1 << 30


def wide_file(columns: int, rows: int, *, deleted: dict[int, str] | None = None) -> str:
    """An email column, then `columns - 1` columns c0001…; cell (row r, column c) holds v{r}_{c}."""
    names = [f"c{c:04d}" for c in range(1, columns)]
    lines = [",".join(["email", *names, *(["deleted"] if deleted is not None else [])])]
    for r in range(rows):
        extra = [(deleted or {}).get(r, "")] if deleted is not None else []
        lines.append(",".join([f"p{r}@x.com", *(f"v{r}_{c}" for c in range(1, columns)), *extra]))
    return "\n".join(lines) + "\n"


def wide_goal(name: str, pattern: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "import-profiles", "name": name, "stable_after_s": 0,
            "files": [{"name": name, "directory": "in", "pattern": pattern}],
            "identifiers": [{"field": "email", "property": "email"}], "bulk_mapping": {"rule": "set"}, **extra}


ORDINARY = {
    "kind": "import-profiles", "name": "loyalty", "order": 5, "stable_after_s": 0,
    "files": [{"name": "loyalty", "directory": "in", "pattern": "loyalty.csv"}],
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": "tier", "property": "tier"}, {"field": "points", "property": "points", "rule": "sum"}],
}
LOYALTY = "email,tier,points\np0@x.com,gold,10\np1@x.com,silver,5\nnew@x.com,bronze,1\n"


def run_ok(deployment: Deployment, *names: str, **options: Any) -> Any:
    result = deployment.run(*names, **options)
    assert result.status == "success", [(g.goal, g.error) for g in result.goals]
    return result


def dumped(deployment: Deployment) -> list[dict[str, Any]]:
    done = deployment.cli("profiles", "dump", timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def side_rows(deployment: Deployment, pid: int) -> int:
    """How many rows of profile side tables the profile has."""
    store = db.open_store(deployment.store_url)
    try:
        with store.engine.connect() as conn:
            tables = [t for t in sa.inspect(conn).get_table_names() if t.startswith("profile_x")]
            assert tables, "no side tables: the test's file is too narrow"
            return sum(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t} WHERE id = {int(pid)}").scalar_one()
                       for t in tables)
    finally:
        store.dispose()


def test_a_5000_column_file_imports_whole_in_under_a_gib_and_ordinary_goals_still_add_properties(
    deployment: Deployment,
) -> None:
    deployment.write_goal("wide", wide_goal("wide", "wide.csv"))
    deployment.put("in/wide.csv", wide_file(5000, 2), mtime=OLD)
    peak = _peak_of_cli_run(deployment)
    print(f"the 5,000-column import peaked at {peak / 2**20:.0f} MiB")  # shown with -s

    profiles = {p["properties"]["email"][0]: p["properties"] for p in dumped(deployment)}
    assert set(profiles) == {"p0@x.com", "p1@x.com"}
    for r in range(2):
        expected = {"email": [f"p{r}@x.com"], **{f"c{c:04d}": [f"v{r}_{c}"] for c in range(1, 5000)}}
        assert profiles[f"p{r}@x.com"] == expected

    deployment.write_goal("loyalty", ORDINARY)
    deployment.put("in/loyalty.csv", LOYALTY, mtime=OLD)
    run_ok(deployment, "loyalty")
    after = {p["email"][0]: p for p in deployment.properties()}
    assert after["p0@x.com"]["tier"] == ["gold"] and after["p0@x.com"]["points"] == [10]
    assert after["p0@x.com"]["c4999"] == ["v0_4999"]
    assert after["new@x.com"] == {"email": ["new@x.com"], "tier": ["bronze"], "points": [1]}
    assert peak < GIB, f"the 5,000-column import peaked at {peak / 2**20:.0f} MiB"


def _peak_of_cli_run(deployment: Deployment) -> int:
    """Run `sftp-connector run` as a subprocess and return its peak resident memory (bytes, from wait4)."""
    proc = subprocess.Popen([sys.executable, "-m", "sftp_connector", "--config", str(deployment.config_path), "run"],
                            cwd=deployment.dir, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, errors.decode()[-3000:]
    return usage.ru_maxrss * 1024


def test_ten_thousand_properties_in_one_store(deployment: Deployment) -> None:
    # One 5,000-column file under two goals with different prefixes: 9,998 properties, then an ordinary goal.
    deployment.write_goal("a", wide_goal("a", "wide.csv", prefix="a_"))
    deployment.write_goal("b", wide_goal("b", "wide.csv", prefix="b_", order=1))
    deployment.write_goal("loyalty", ORDINARY)
    deployment.put("in/wide.csv", wide_file(5000, 2), mtime=OLD)
    deployment.put("in/loyalty.csv", LOYALTY, mtime=OLD)
    run_ok(deployment)
    profiles = {p["email"][0]: p for p in deployment.properties()}
    assert len(profiles["p1@x.com"]) == 1 + 2 * 4999 + 2  # email, a_…, b_…, tier, points
    assert profiles["p1@x.com"]["a_c0001"] == ["v1_1"] and profiles["p1@x.com"]["b_c4999"] == ["v1_4999"]
    assert profiles["p1@x.com"]["tier"] == ["silver"]
    store = db.open_store(deployment.store_url)
    try:
        with store.engine.connect() as conn:
            assert len(queries.all_property_columns(conn)) >= 10_000
    finally:
        store.dispose()


SEGMENTS = {"late": {"property": "c0590", "equals": "v1_590"},
            "has_late": {"all": [{"property": "c0599", "exists": True}, {"not": {"property": "c0300", "equals": "x"}}]}}


def test_a_segment_on_a_side_table_property_exports_the_right_profiles(deployment: Deployment) -> None:
    deployment.write_goal("wide", wide_goal("wide", "wide.csv"))
    deployment.put("in/wide.csv", wide_file(600, 3), mtime=OLD)
    deployment.update_connector({"segments": SEGMENTS})
    deployment.write_goal("out", {
        "kind": "export-profiles", "name": "out", "segment": "late", "directory": "out", "encrypt": False,
        "filename": "late.csv", "columns": [{"column": "email", "property": "email"},
                                            {"column": "late", "property": "c0590"},
                                            {"column": "main", "property": "c0002"}]})
    deployment.remote_path("out").mkdir(exist_ok=True)
    deployment.remote_path("out").chmod(0o777)
    run_ok(deployment)
    rows = list(csv.reader(io.StringIO(deployment.remote_path("out/late.csv").read_text())))
    assert rows == [["email", "late", "main"], ["p1@x.com", "v1_590", "v1_2"]]
    assert side_rows(deployment, 1) >= 1


def test_an_erasure_removes_side_table_values(deployment: Deployment) -> None:
    deployment.write_goal("wide", wide_goal("wide", "wide*.csv", delete_when={"field": "deleted", "equals": "true"}))
    deployment.put("in/wide1.csv", wide_file(600, 3, deleted={}), mtime=OLD)
    run_ok(deployment)
    ids = {p["properties"]["email"][0]: p["id"] for p in deployment.profiles()}
    assert side_rows(deployment, ids["p1@x.com"]) >= 1
    deployment.put("in/wide2.csv", wide_file(600, 2, deleted={1: "true"}), mtime=OLD)
    result = run_ok(deployment)
    assert result.goals[0].files[-1].counts.erased == 1
    assert side_rows(deployment, ids["p1@x.com"]) == 0
    assert {p["email"][0] for p in deployment.properties()} == {"p0@x.com", "p2@x.com"}


def test_an_overwrite_clears_side_table_properties(deployment: Deployment) -> None:
    deployment.write_goal("wide", wide_goal("wide", "wide.csv", write_mode="overwrite", max_clear_ratio=1.0))
    deployment.put("in/wide.csv", wide_file(600, 3), mtime=OLD)
    run_ok(deployment)
    deployment.put("in/wide.csv", wide_file(600, 1), mtime=OLD + 60)
    run_ok(deployment)
    profiles = {p["email"][0]: p for p in deployment.properties()}
    assert profiles["p0@x.com"]["c0599"] == ["v0_599"]
    assert profiles["p1@x.com"] == {"email": ["p1@x.com"]}
    assert profiles["p2@x.com"] == {"email": ["p2@x.com"]}


def test_a_side_table_property_is_updated_in_place_on_reimport(deployment: Deployment) -> None:
    rows = 40
    deployment.write_goal("wide", wide_goal("wide", "wide.csv"))
    deployment.put("in/wide.csv", wide_file(400, rows), mtime=OLD)
    run_ok(deployment)
    edited = wide_file(400, rows).replace("v3_399", "changed").replace("v4_2,", "also,")
    deployment.put("in/wide.csv", edited, mtime=OLD + 60)
    run_ok(deployment)
    profiles = {p["email"][0]: p for p in deployment.properties()}
    assert profiles["p3@x.com"]["c0399"] == ["changed"] and profiles["p4@x.com"]["c0002"] == ["also"]
    assert profiles["p5@x.com"]["c0399"] == ["v5_399"]


def test_an_export_of_more_columns_than_a_query_returns_fails_clearly_and_alone(deployment: Deployment) -> None:
    deployment.write_goal("loyalty", ORDINARY)
    deployment.put("in/loyalty.csv", LOYALTY, mtime=OLD)
    deployment.write_goal("out", {
        "kind": "export-profiles", "name": "out", "directory": "out", "encrypt": False, "filename": "all.csv",
        "columns": [{"column": "email", "property": "email"},
                    *({"column": f"c{n}", "property": f"c{n:04d}"} for n in range(1, 1601))]})
    result = deployment.run()
    errors = {g.goal: g.error for g in result.goals}
    assert errors["loyalty"] is None
    assert "goal out, file all.csv: the export reads 1601 properties" in errors["out"]
    assert "1,600" in errors["out"]
    assert not deployment.remote_path("out").exists() or not list(deployment.remote_path("out").iterdir())


def test_new_properties_go_together_to_the_main_table_while_it_has_room_then_to_side_tables(store_url: str) -> None:
    store = db.open_store(store_url)
    try:
        with store.transaction() as conn:
            def add(prefix: str, count: int) -> set[str]:
                columns = queries.property_columns(store, conn, [f"{prefix}{n}" for n in range(count)])
                routes = queries.table_routes(conn, queries.PROFILES, columns.values())
                return {table for table, names in routes.items() if names}

            assert add("a", 13) == {"profile"}
            assert add("wide", 600) == {"profile_x1", "profile_x2", "profile_x3"}  # 250, 250, 100
            assert add("b", 13) == {"profile"}  # a wide file never fills the main table
            assert add("c", 150) == {"profile"}  # 176 columns
            assert add("d", 100) == {"profile_x3"}  # no room for all in profile (74 left), in x3 (150 left)
            assert add("e", 74) == {"profile"}
            assert add("f", 60) == {"profile_x4"}  # room for neither in profile (0) nor in x3 (50): a new table
            widths = dict(conn.exec_driver_sql("SELECT tbl, COUNT(*) FROM property_column GROUP BY tbl").all())
            assert widths == {"profile": 250, "profile_x1": 250, "profile_x2": 250, "profile_x3": 200,
                              "profile_x4": 60}
    finally:
        store.dispose()


def test_groups_keep_side_table_properties_too(deployment: Deployment) -> None:
    deployment.write_goal("firms", {
        "kind": "import-groups", "name": "firms", "group_type": "firm", "stable_after_s": 0,
        "files": [{"name": "firms", "directory": "in", "pattern": "firms.csv"}],
        "identifier": {"field": "email"}, "bulk_mapping": {"rule": "set"}})
    deployment.put("in/firms.csv", wide_file(400, 2), mtime=OLD)
    run_ok(deployment)
    deployment.put("in/firms.csv", wide_file(400, 2).replace("v1_399", "moved"), mtime=OLD + 60)
    run_ok(deployment)
    groups = {g["id"]: g["properties"] for g in deployment.read("groups")}
    assert groups["p0@x.com"] == {f"c{c:04d}": [f"v0_{c}"] for c in range(1, 400)}
    assert groups["p1@x.com"]["c0399"] == ["moved"] and groups["p1@x.com"]["c0001"] == ["v1_1"]


def with_points(text: str, points: list[str]) -> str:
    """The wide file with a points column (header first, then one cell per row)."""
    lines = text.splitlines()
    return "\n".join(f"{line},{cell}" for line, cell in zip(lines, ["points", *points], strict=True)) + "\n"


def test_a_sum_in_a_side_table_adds_the_difference_and_an_overwrite_withdraws_it(deployment: Deployment) -> None:
    deployment.write_goal("wide", wide_goal("wide", "wide.csv", write_mode="overwrite", max_clear_ratio=1.0,
                                            mappings=[{"field": "points", "property": "points", "rule": "sum"}]))
    deployment.put("in/wide.csv", with_points(wide_file(600, 3), ["10", "20", "30"]), mtime=OLD)
    run_ok(deployment)
    deployment.put("in/wide.csv", with_points(wide_file(600, 2), ["15", "20"]), mtime=OLD + 60)
    run_ok(deployment)
    profiles = {p["email"][0]: p for p in deployment.properties()}
    assert profiles["p0@x.com"]["points"] == [15] and profiles["p1@x.com"]["points"] == [20]
    assert profiles["p2@x.com"] == {"email": ["p2@x.com"], "points": [0]}  # withdrawn, side properties cleared
    store = db.open_store(deployment.store_url)
    try:
        with store.engine.connect() as conn:
            assert queries.property_expressions(conn)["points"].startswith("(SELECT")  # in a side table
    finally:
        store.dispose()


def test_a_file_whose_profiles_are_all_new_beside_side_table_profiles(deployment: Deployment) -> None:
    deployment.write_goal("wide", wide_goal("wide", "wide*.csv"))
    deployment.put("in/wide1.csv", wide_file(600, 2), mtime=OLD)
    run_ok(deployment)
    deployment.put("in/wide2.csv", wide_file(600, 1).replace("p0@x.com", "new@x.com"), mtime=OLD)
    run_ok(deployment)  # every lookup of the batch finds nothing, its columns all in side tables
    profiles = {p["email"][0]: p for p in deployment.properties()}
    assert set(profiles) == {"p0@x.com", "p1@x.com", "new@x.com"}
    assert profiles["new@x.com"]["c0599"] == ["v0_599"]
