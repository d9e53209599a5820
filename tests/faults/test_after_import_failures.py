"""A file imports, but its `after_import` action fails (a read-only folder on the server): the run says so
(issue 18, item 6). The file's entry carries a `warning` in `run --json` and `history --json`; the summary
table, the notification and the metrics show it; the import itself stands, exactly once."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from sftp_connector import notify
from sftp_connector.health import Metrics
from tests.faults.helpers import IMPORT, OLD, customers
from tests.fixtures.connector import Deployment
from tests.hostile.helpers import cli_run, files_of


@pytest.fixture
def read_only_in(deployment: Deployment) -> Iterator[Deployment]:
    """The deployment with a file in `in/`, which the SFTP user may read but not change (0555)."""
    deployment.put("in/customers_1.csv", customers(range(3)), mtime=OLD)
    folder = deployment.remote_path("in")
    folder.chmod(0o555)
    yield deployment
    folder.chmod(0o755)


@pytest.mark.parametrize("action", ["delete", {"move_to": "archive/"}], ids=["delete", "move"])
def test_a_failed_after_import_action_is_a_warning_everywhere(read_only_in: Deployment, action: Any) -> None:
    deployment = read_only_in
    deployment.write_goal("customers", {**IMPORT, "after_import": action})
    done, run = cli_run(deployment)
    assert (done.returncode, run["status"]) == (0, "success")
    file = files_of(run)["customers_1.csv"]
    what = "delete" if action == "delete" else "move to archive/"
    assert file["status"] == "imported"
    assert file["warning"].startswith(f"after_import: could not {what} {file['path']}: "), file
    assert "permission denied" in file["warning"]

    [last] = [json.loads(line) for line in deployment.cli("history", "--json", "--limit", "1").stdout.splitlines()]
    assert last["goals"][0]["files"][0]["warning"] == file["warning"]
    shown = deployment.cli("history").stdout + deployment.cli("--log-format", "plain", "run", "--force").stdout
    assert "warning" in shown and "could not" in shown.replace("\n", " "), shown

    result = deployment.run(force=True)  # in-process: the notification and the metrics of a run like it
    [result_file] = result.goals[0].files
    assert result_file.warning and result_file.warning.startswith("after_import: could not")
    assert f"  warning: goal customers, file {result_file.path}: {result_file.warning}" in notify.body(result, "c")
    metrics = Metrics()
    metrics.record(result)
    assert metrics.registry.get_sample_value("sftp_connector_file_warnings_total", {"goal": "customers"}) == 1
    assert os.path.exists(deployment.remote_path("in/customers_1.csv"))
