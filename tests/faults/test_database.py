"""The store fails under a running import: PostgreSQL stopped in the middle of a run, and SQLite locked by
another writer. The file fails with a store error naming goal, file and cause, the exit code is 1 and there
is no trace on stderr; nothing of the file is written; once the database is back (or the lock released) the
next run imports the file exactly once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.faults.helpers import (
    EXPORT,
    IMPORT,
    OLD,
    Cli,
    PostgresSwitch,
    customers,
    deployment_on,
    direct,
    expected_points,
    files_of,
    leftovers,
    points,
    runs,
    snapshot,
    through,
)
from tests.fixtures.connector import Deployment
from tests.fixtures.gpg import PgpKeys
from tests.fixtures.postgres import new_database, running_postgres
from tests.fixtures.proxy import CuttingProxy
from tests.fixtures.sshd import SshServer


def seeded(deployment: Deployment) -> tuple[str, str]:
    """Import a first small file; drop a second, ~650 kB encrypted, for the faulty run; return both texts."""
    deployment.write_goal("customers", IMPORT)
    seed = customers(range(3))
    deployment.put("in/customers_1.csv", seed, mtime=OLD)
    assert deployment.run().status == "success"
    new = customers(range(1, 1201), pad=512)
    deployment.put_encrypted("in/customers_2.csv.gpg", new, mtime=OLD, compress=False)
    return seed, new


def test_postgresql_stopped_in_the_middle_of_a_store_write_fails_the_file_cleanly_and_the_next_run_is_exactly_once(
    sshd: SshServer, pgp_keys: PgpKeys, passphrase: str, tmp_path: Path
) -> None:
    with running_postgres() as server_url:
        switch = PostgresSwitch.of(server_url)
        store_url = new_database(server_url)
        with deployment_on(tmp_path / "deploy", sshd, pgp_keys, store_url, tmp_path.name) as deployment:
            seed, new = seeded(deployment)
            before = snapshot(deployment)
            host, port = store_url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
            # The connection that writes the file's rows is held half-way while the server stops.
            with CuttingProxy(host, int(port), stall_after=256 * 1024) as proxy:
                deployment.update_connector({"store": {"url": store_url.replace(f":{port}/", f":{proxy.port}/")}})
                with Cli(deployment, "-v", "run") as cli:
                    assert proxy.stalled.wait(30), cli.stderr
                    assert cli.logged("in one transaction", 5)  # held in the file's transaction
                    switch.stop()
                    proxy.release()
                    code = cli.wait()
            switch.start()
            deployment.update_connector({"store": {"url": store_url}})

            assert code == 1, cli.stderr
            path = f"{deployment.remote.remote}/in/customers_2.csv.gpg"
            assert f"goal customers, file {path}: database error, nothing was written: " in cli.stderr
            assert snapshot(deployment) == before
            assert leftovers(deployment) == []
            again = deployment.run()
            assert again.status == "success", again
            assert [f.status for f in again.goals[0].files] == ["skipped_unchanged", "imported"]
            assert points(deployment) == expected_points(seed, new)
            assert [f.status for f in deployment.run().goals[0].files] == ["skipped_unchanged"] * 2
            assert "Traceback" not in cli.stderr, cli.stderr


def test_sqlite_locked_by_another_writer_fails_the_file_cleanly_and_it_imports_after_release(
    sshd: SshServer, pgp_keys: PgpKeys, passphrase: str, tmp_path: Path
) -> None:
    store = tmp_path / "store" / "connector.db"
    with deployment_on(tmp_path / "deploy", sshd, pgp_keys, f"sqlite:///{store}", tmp_path.name) as deployment:
        deployment.update_connector({"store": {"lock_timeout_s": 1}})
        seed, new = seeded(deployment)
        before = snapshot(deployment)
        other = sqlite3.connect(store, isolation_level=None)
        try:
            with CuttingProxy(sshd.host, sshd.port, stall_down_after=128 * 1024) as proxy:
                through(deployment, sshd, proxy)
                with Cli(deployment, "run") as cli:
                    assert proxy.stalled.wait(30), cli.stderr
                    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
                    proxy.release()
                    assert cli.logged("database is locked"), cli.stderr
                    other.execute("ROLLBACK")  # released: the run can record its history
                    code = cli.wait()
        finally:
            other.close()

        assert code == 1, cli.stderr
        assert "Traceback" not in cli.stderr
        path = f"{deployment.remote.remote}/in/customers_2.csv.gpg"
        error = f"goal customers, file {path}: database error, nothing was written: database is locked"
        assert error in cli.stderr
        [_, failed] = files_of(runs(deployment)[0])
        assert (failed["status"], failed["error"]) == ("failed", error)
        assert snapshot(deployment) == before
        assert leftovers(deployment) == []
        direct(deployment, sshd)
        again = deployment.run()
        assert [f.status for f in again.goals[0].files] == ["skipped_unchanged", "imported"]
        assert points(deployment) == expected_points(seed, new)


def test_postgresql_connection_lost_while_an_export_reads_profiles_is_a_store_error(
    sshd: SshServer, pgp_keys: PgpKeys, passphrase: str, tmp_path: Path
) -> None:
    with running_postgres() as server_url:
        store_url = new_database(server_url)
        with deployment_on(tmp_path / "deploy", sshd, pgp_keys, store_url, tmp_path.name) as deployment:
            deployment.write_goal("customers", IMPORT)
            deployment.put("in/customers_1.csv", customers(range(20_000), pad=96), mtime=OLD)  # ~2.5 MB to read
            assert deployment.run().status == "success"
            deployment.write_goal("newsletter", EXPORT)
            host, port = store_url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
            # The connection is cut once 512 kB came from the server: in the middle of the export's pages.
            with CuttingProxy(host, int(port), cut_down_after=512 * 1024) as proxy:
                deployment.update_connector({"store": {"url": store_url.replace(f":{port}/", f":{proxy.port}/")}})
                done = deployment.cli("run", "newsletter")
            deployment.update_connector({"store": {"url": store_url}})
            assert proxy.cuts >= 1
            assert done.returncode == 1, done.stderr
            assert "goal newsletter: database error: " in done.stderr, done.stderr
            assert "internal error" not in done.stderr and "Traceback" not in done.stderr
            out = deployment.remote.local / "out"
            assert not out.exists() or not any(out.iterdir())  # nothing uploaded
            assert deployment.run("newsletter").status == "success"  # retried on the next run
