"""`sftp-connector run` stopped by SIGTERM or SIGINT stops as the daemon does (issue 18, item 5): the file in
hand is rolled back, its decrypted copy removed, the run recorded `interrupted`, and the command exits
128 + the signal's number (143, 130); also when the signal comes while the command is still starting.
The next run imports the file exactly once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.helpers import OLD, Cli, customers, leftovers, runs, snapshot, until
from tests.fixtures.connector import ROOT, Deployment

GOAL: dict[str, Any] = {
    "kind": "import-profiles", "name": "customers",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*"}], "stable_after_s": 0,
    "identifiers": [{"field": "id", "property": "crm_id"}],
    "mappings": [{"field": "name", "property": "name"}, {"field": "points", "property": "points", "rule": "sum"}],
}


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_merge_rolls_the_file_back_and_records_the_run_interrupted(
    deployment: Deployment, slow_plugin: Path, monkeypatch: pytest.MonkeyPatch, number: signal.Signals
) -> None:
    monkeypatch.syspath_prepend(str(slow_plugin))  # this process reads the goal too
    notes = deployment.dir / "batches.notes"
    deployment.write_goal("customers", {**GOAL, "processors": [{"type": "slow_batches", "seconds": 1,
                                                                "to": str(notes)}]})
    text = customers(range(1, 300_001))  # three batches of 100,000
    deployment.put_encrypted("in/customers_1.csv.gpg", text, mtime=OLD)
    before = snapshot(deployment)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(slow_plugin)])}

    with Cli(deployment, "run", env=env) as cli:
        assert until(lambda: notes.exists() and notes.read_text().strip() != "", 60), cli.stderr
        cli.proc.send_signal(number)
        code = cli.wait()

    assert code == 128 + number, cli.stderr
    assert "Traceback" not in cli.stderr, cli.stderr
    assert f"received {number.name}" in cli.stderr
    [last, *_] = runs(deployment)
    assert last["status"] == "interrupted", last
    assert snapshot(deployment) == before
    assert leftovers(deployment) == []  # the download and its decrypted copy are gone

    deployment.write_goal("customers", GOAL)
    again = deployment.run()
    assert again.status == "success", again
    assert again.goals[0].files[0].counts.rows_applied == 300_000


def test_a_signal_while_starting_records_an_interrupted_run(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL)
    deployment.put("in/customers_1.csv", customers(range(3)), mtime=OLD)
    with Cli(deployment, "run") as cli:
        time.sleep(0.3)  # the interpreter is up, the command still importing its modules
        cli.proc.send_signal(signal.SIGTERM)
        code = cli.wait()
    assert code == 128 + signal.SIGTERM, cli.stderr
    assert "Traceback" not in cli.stderr
    [last] = runs(deployment)
    assert (last["status"], last["goals"]) == ("interrupted", [])
    assert deployment.profiles() == []
