"""Two `run` commands started at once on the same configuration: the goal's lock (a PostgreSQL advisory
lock, or a lock file in state/locks for SQLite) lets one import while the other reports the goal skipped;
never both. The runs overlap for sure: the one that took the lock is held in its download by a proxy until
the other has finished."""

from __future__ import annotations

import json
from typing import Any

from tests.faults.helpers import (
    IMPORT,
    OLD,
    Cli,
    customers,
    direct,
    expected_points,
    files_of,
    points,
    runs,
    snapshot,
    through,
    until,
)
from tests.fixtures.connector import Deployment
from tests.fixtures.proxy import CuttingProxy
from tests.fixtures.sshd import SshServer


def outcome(cli: Cli) -> dict[str, Any]:
    """The run as `run --json` printed it."""
    return json.loads(cli.stdout.strip().splitlines()[-1])


def test_two_runs_started_together_import_the_file_once(deployment: Deployment, sshd: SshServer) -> None:
    deployment.write_goal("customers", IMPORT)
    seed = customers(range(3))
    deployment.put("in/customers_1.csv", seed, mtime=OLD)
    assert deployment.run().status == "success"
    new = customers(range(1, 1201), pad=512)
    deployment.put_encrypted("in/customers_2.csv.gpg", new, mtime=OLD, compress=False)  # ~650 kB
    before = snapshot(deployment)

    with CuttingProxy(sshd.host, sshd.port, stall_down_after=128 * 1024) as proxy:
        through(deployment, sshd, proxy)
        with Cli(deployment, "run", "--json") as one, Cli(deployment, "run", "--json") as two:
            assert until(lambda: one.proc.poll() is not None or two.proc.poll() is not None, 30)
            loser, winner = (one, two) if one.proc.poll() is not None else (two, one)
            # The loser finished while the winner holds the goal (it may not have reached the stall yet: wait).
            assert winner.proc.poll() is None
            assert until(lambda: proxy.stalled.is_set(), 30) and winner.proc.poll() is None
            assert snapshot(deployment) == before
            proxy.release()
            # The loser ran nothing (its one goal's lock was held): exit 3, status skipped, for wrappers.
            assert (winner.wait(), loser.wait()) == (0, 3), (winner.stderr, loser.stderr)

    assert outcome(loser)["status"] == "skipped"
    [skipped] = outcome(loser)["goals"]
    assert (skipped["status"], skipped["files"]) == ("skipped", [])
    assert "lock held" in skipped["error"]
    [imported] = outcome(winner)["goals"]
    assert [f["status"] for f in imported["files"]] == ["skipped_unchanged", "imported"]
    assert imported["files"][1]["rows_applied"] == 1200
    assert points(deployment) == expected_points(seed, new)  # C1, C2: once per file, not twice
    path = f"{deployment.remote.remote}/in/customers_2.csv.gpg"
    imports = [f for run in runs(deployment) for f in files_of(run) if f["path"] == path and f["status"] == "imported"]
    assert len(imports) == 1
    direct(deployment, sshd)
    assert [f.status for f in deployment.run().goals[0].files] == ["skipped_unchanged"] * 2
    assert points(deployment) == expected_points(seed, new)
