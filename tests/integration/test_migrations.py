"""Store migrations on both databases, from the stores 0.3.4 itself made (tests/fixtures/stores, see
make_v0_3_4.py): an upgrade keeps every row of every table and the store then takes today's imports
(side tables included) and exports; a start on an un-upgraded store names the command; a store of an
unknown newer revision is refused; an upgrade SIGKILLed midway leaves the store at 0001 and upgradable;
the downgrade; the schema of revision 0001 is 0.3.4's and an upgraded store's is a new store's."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sftp_connector import loopback
from sftp_connector.config import load
from sftp_connector.errors import StoreError
from sftp_connector.goals import runner
from sftp_connector.store import db, migrate, queries
from tests.fixtures.connector import ROOT
from tests.fixtures.postgres import _bin, new_database
from tests.fixtures.stores import scenario

STORES = ROOT / "tests" / "fixtures" / "stores"
WIDE = 300  # more new properties than `profile` has room for: they go to side tables


@dataclass
class OldStore:
    """A copy of a 0.3.4 fixture store, with a deployment (connector.yaml, goals) that uses it."""

    url: str
    expected: dict[str, Any]
    dir: Path
    server_root: Path
    sqlite_file: Path | None

    @property
    def config(self) -> Path:
        return self.dir / "connector.yaml"

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sftp_connector", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=120, cwd=self.dir,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(params=["sqlite", "postgresql"])
def old(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OldStore]:
    """Yield a copy of the 0.3.4 store (SQLite file, or the dump loaded into a new PostgreSQL database) and an
    SFTP server in this process serving the scenario's folder (its files as 0.3.4 left them)."""
    if request.param == "sqlite":
        sqlite_file = tmp_path / "state" / "connector.db"
        sqlite_file.parent.mkdir(mode=0o700)
        shutil.copy(STORES / "v0_3_4.sqlite", sqlite_file)
        sqlite_file.chmod(0o600)
        url, name = f"sqlite:///{sqlite_file}", "sqlite"
    else:
        sqlite_file, url, name = None, new_database(request.getfixturevalue("postgres_server")), "pg"
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        # pg_dump 15.14 and later write \restrict lines that an older psql refuses: they guard against a dump
        # from an untrusted server, and this one is ours.
        dump = "".join(line for line in (STORES / "v0_3_4.pg.sql").read_text().splitlines(keepends=True)
                       if not line.startswith(("\\restrict", "\\unrestrict")))
        subprocess.run([_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", plain], input=dump, text=True,
                       check=True, capture_output=True, timeout=120)
    server_root = tmp_path / "server"
    for run in (1, 2, 3):
        scenario.drop(server_root, run)
    expected = json.loads((STORES / f"v0_3_4.{name}.json").read_text())
    with loopback.LoopbackServer(server_root, username="partner", password=scenario.PASSWORD) as server:
        scenario.write_deployment(tmp_path / "deploy", server.known_hosts_line(), server.host, server.port, url)
        yield OldStore(url, expected, tmp_path / "deploy", server_root, sqlite_file)


def tables_of(url: str, expected: dict[str, Any]) -> dict[str, Any]:
    """Read every table the 0.3.4 store had, only the columns it had."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {table: scenario.rows(conn, table, want["columns"]) for table, want in expected.items()}
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.revision(conn)
    finally:
        engine.dispose()


def schema(url: str) -> dict[str, Any]:
    """Every table but Alembic's: columns (property columns p_N aside), primary key, indexes, unique
    constraints, and on SQLite whether it has a rowid."""
    engine = sa.create_engine(url)
    found: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
                columns = [(c["name"], str(c["type"]), c["nullable"], c["default"])
                           for c in inspector.get_columns(table) if not re.fullmatch(r"p_\d+", c["name"])]
                indexes = sorted((i["name"], i["column_names"], i["unique"]) for i in inspector.get_indexes(table))
                uniques = sorted(u["column_names"] for u in inspector.get_unique_constraints(table))
                rowid = conn.dialect.name == "sqlite" and "WITHOUT ROWID" not in conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = ?", (table,)).scalar_one()
                found[table] = {"columns": columns, "key": inspector.get_pk_constraint(table)["constrained_columns"],
                                "indexes": indexes, "uniques": uniques, "rowid": rowid}
    finally:
        engine.dispose()
    return found


def empty_like(old: OldStore, tmp_path: Path) -> str:
    """An empty database of the same kind as the old store's."""
    if old.sqlite_file is not None:
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return new_database(old.url.rsplit("/", 1)[0])


def test_the_revisions_are_alembics() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(migrate.SCRIPTS))
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == list(migrate.REVISIONS)
    assert scripts.get_current_head() == migrate.HEAD


def test_revision_0001_is_the_schema_0_3_4_made_and_an_upgraded_store_has_a_new_stores(
    old: OldStore, tmp_path: Path
) -> None:
    baseline = empty_like(old, tmp_path)
    engine = sa.create_engine(baseline)
    with engine.begin() as conn:
        migrate.run(conn, "upgrade", "0001")
    engine.dispose()
    assert schema(baseline) == schema(old.url)

    store = db.open_store(old.url, for_upgrade=True)
    migrate.upgrade(store)
    store.dispose()
    fresh = db.open_store(empty_like(old, tmp_path / "fresh"))
    assert schema(old.url) == schema(fresh.engine.url.render_as_string(hide_password=False))
    fresh.dispose()


def test_a_0_3_4_store_upgrades_with_every_row_intact_and_then_works(old: OldStore) -> None:
    assert tables_of(old.url, old.expected) == old.expected
    for command in ("run", "daemon"):
        refused = old.cli(command)
        assert refused.returncode == 1
        assert f"run `sftp-connector store upgrade --config {old.config}` to upgrade it" in refused.stderr
        assert f"is at revision 0001 and this sftp-connector needs {migrate.HEAD}" in refused.stderr

    done = old.cli("store", "upgrade")
    assert done.returncode == 0, done.stderr
    assert f"upgraded the store from revision 0001 to {migrate.HEAD}" in done.stdout
    if old.sqlite_file is not None:
        backup = old.sqlite_file.with_name("connector.db.bak-0001")
        assert f"copied the store to {backup}" in done.stdout
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        assert revision_of(f"sqlite:///{backup}") == "0001"
        assert tables_of(f"sqlite:///{backup}", old.expected) == old.expected
    assert revision_of(old.url) == migrate.HEAD
    assert tables_of(old.url, old.expected) == upgraded(old.expected)
    _assert_catalogs(old.url)

    again = old.cli("store", "upgrade")
    assert (again.returncode, again.stdout.strip()) == (0, f"the store is already at revision {migrate.HEAD}")
    _works_with_todays_code(old)


def upgraded(expected: dict[str, Any]) -> dict[str, Any]:
    """The 0.3.4 store's rows as an upgrade leaves them: the same, but meta's schema_version 5 (0.3.x refuses it)."""
    return {**expected, "meta": {"columns": ["key", "value"], "rows": [["schema_version", "5"]]}}


def _assert_catalogs(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = {t for (t,) in conn.exec_driver_sql("SELECT DISTINCT tbl FROM property_column")}
        group_tables = {t for (t,) in conn.exec_driver_sql("SELECT DISTINCT tbl FROM group_property_column")}
    engine.dispose()
    assert (tables, group_tables) == ({"profile"}, {"group_entity"})


def _run(old: OldStore, *names: str, force: bool = False) -> Any:
    config = load.load(old.config)
    store = db.open_store(config.connector.store.url)
    try:
        result = runner.run(config, store, names=names, force=force)
    finally:
        store.dispose()
    assert result.status == "success", [(g.goal, g.error) for g in result.goals]
    return result


def _works_with_todays_code(old: OldStore) -> None:
    """Today's imports meet 0.3.4's records: a changed row of a file imported before adds only its
    difference; a wide file's properties go to side tables; exports read them, from the old watermark."""
    (old.server_root / "in/customers/customers_003.csv").unlink()  # the file that failed in 0.3.4's run 3
    customers = old.server_root / "in/customers/customers_002.csv"
    customers.write_text(customers.read_text().replace("Robert,+31 6 5555 1234,,,5,", "Robert,+31 6 5555 1234,,,7,"))
    result = _run(old, "customers")
    (file,) = [f for f in result.goals[0].files if f.path.endswith("customers_002.csv")]
    # Bob's row applied again (its points were 5, now 7); Ada's and Gus's unchanged; Eve's erasure request: no profile.
    assert (file.status, file.counts.rows_read, file.counts.rows_applied, file.counts.rows_unchanged) == \
        ("imported", 4, 1, 2)

    header = ",".join(["email", *(f"c{n:03d}" for n in range(WIDE))])
    rows = [",".join([email, *(f"{email[0]}{n}" for n in range(WIDE))]) for email in ("ada@example.com",
                                                                                        "gus@example.com")]
    (old.server_root / "in/wide").mkdir()
    (old.server_root / "in/wide/wide.csv").write_text("\n".join([header, *rows]) + "\n")
    (old.dir / "goals/wide.yaml").write_text(
        'kind: import-profiles\nname: wide\norder: 9\nfiles: [{name: wide, directory: in/wide, pattern: "*.csv"}]\n'
        "stable_after_s: 0\nidentifiers: [{field: email, property: email}]\nbulk_mapping: {rule: set}\n")
    (old.dir / "goals/wide_out.yaml").write_text(
        'kind: export-profiles\nname: wide_out\ndirectory: out\nfilename: "wide_{run}.csv"\n'
        "columns: [{column: email, property: email}, {column: last, property: c299}, "
        "{column: points, property: loyalty_points}]\n")
    _run(old, "wide", "newsletter", "wide_out")

    profiles = {p["properties"]["email"][0]: p for p in _profiles(old.url)}
    assert set(profiles) == {"ada@example.com", "bob@example.com", "cleo@example.com", "dan@example.com",
                             "fay@example.com", "gus@example.com"}
    ada = profiles["ada@example.com"]["properties"]
    assert (ada["loyalty_points"], ada["total_spent"], ada["tier"]) == ([150], [51.5], ["platinum"])
    assert (ada["c000"], ada["c299"], ada["survey_q3"]) == (["a0"], ["a299"], ["blue"])
    assert profiles["bob@example.com"]["properties"]["loyalty_points"] == [47]
    assert profiles["ada@example.com"]["groups"] == {"household": ["H1"]}
    assert _side_tables(old.url) == {"profile_x1", "profile_x2"}

    assert sorted(row[1] for row in _exported(old, "newsletter_")[1:]) == ["ada@example.com", "bob@example.com",
                                                                           "gus@example.com"]
    assert sorted(_exported(old, "wide_")[1:]) == [
        ["ada@example.com", "a299", "150"], ["bob@example.com", "", "47"], ["cleo@example.com", "", "75"],
        ["dan@example.com", "", ""], ["fay@example.com", "", "2.5"], ["gus@example.com", "g299", "60"]]
    store = db.open_store(old.url)
    with pytest.raises(StoreError, match=r"cannot go back to revision 0001: 300 properties of property_column live "
                                         r"in side tables"):
        migrate.downgrade(store, "0001")
    store.dispose()
    assert revision_of(old.url) == migrate.HEAD


def _profiles(url: str) -> list[dict[str, Any]]:
    store = db.open_store(url)
    try:
        with store.engine.connect() as conn:
            return list(queries.iter_profiles(conn))
    finally:
        store.dispose()


def _side_tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = {t for t in sa.inspect(conn).get_table_names() if re.fullmatch(r"\w+_x\d+", t)}
    engine.dispose()
    return tables


def _exported(old: OldStore, prefix: str) -> list[list[str]]:
    """The rows of the newest export file whose name starts with prefix."""
    files = sorted((old.server_root / "out").glob(prefix + "*"), key=lambda p: p.stat().st_mtime)
    return list(csv.reader(io.StringIO(files[-1].read_text())))


def test_an_upgrade_killed_midway_leaves_the_store_at_0001_and_upgradable(old: OldStore) -> None:
    killed = old.cli("store", "upgrade", env={"SFTP_CONNECTOR_FAILPOINTS": "mid-upgrade"})
    assert killed.returncode == -9, killed.stderr
    assert revision_of(old.url) == "0001"
    assert tables_of(old.url, old.expected) == old.expected
    assert "tbl" not in {c[0] for c in schema(old.url)["property_column"]["columns"]}
    if old.sqlite_file is not None:
        assert (old.sqlite_file.parent / "connector.db.bak-0001").exists()

    done = old.cli("store", "upgrade")
    assert done.returncode == 0, done.stderr
    assert revision_of(old.url) == migrate.HEAD
    assert tables_of(old.url, old.expected) == upgraded(old.expected)


def test_a_store_of_an_unknown_newer_revision_is_refused(old: OldStore) -> None:
    store = db.open_store(old.url, for_upgrade=True)
    migrate.upgrade(store)
    with store.transaction() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    store.dispose()
    with pytest.raises(StoreError, match=r"is at revision 0099, newer than this sftp-connector knows \(its newest is "
                                         rf"{migrate.HEAD}\): a newer sftp-connector upgraded it"):
        db.open_store(old.url)
    for command in (["history"], ["store", "upgrade"]):
        refused = old.cli(*command)
        assert refused.returncode == 1
        assert "is at revision 0099, newer than this sftp-connector knows" in refused.stderr


def test_a_downgrade_to_0001_gives_back_0_3_4s_schema_and_rows(old: OldStore) -> None:
    before = schema(old.url)
    store = db.open_store(old.url, for_upgrade=True)
    migrate.upgrade(store)
    assert migrate.downgrade(store, "0001") == migrate.Upgrade(migrate.HEAD, "0001")
    store.dispose()
    assert revision_of(old.url) == "0001"
    assert schema(old.url) == before
    assert tables_of(old.url, old.expected) == old.expected
