"""A run killed with SIGKILL in the middle of a large file leaves nothing of it; the next run imports it once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.fixtures.connector import ROOT, Deployment

ROWS = 150_000

GOAL = """\
kind: import-profiles
name: big
files: [{name: big, directory: in, pattern: "big_*.csv.gpg"}]
stable_after_s: 0
identifiers: [{field: id, property: crm_id}]
mappings:
  - {field: name, property: name, rule: set}
  - {field: points, property: points, rule: sum}
"""


def big_csv() -> str:
    return "id,name,points\n" + "".join(f"C{i},Name {i},{i % 7}\n" for i in range(ROWS))


def test_sigkill_during_the_store_write_leaves_nothing(deployment: Deployment) -> None:
    deployment.write_goal("big", GOAL)
    deployment.put_encrypted("in/big_1.csv.gpg", big_csv(), mtime=time.time() - 3600)
    process = subprocess.Popen(
        [sys.executable, "-m", "sftp_connector", "--config", str(deployment.config_path), "-v",
         "--log-format", "plain", "run"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=deployment.dir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    for line in process.stderr:
        if "in one transaction" in line:
            break
        assert time.monotonic() < deadline, "the run never reached the merge"
    time.sleep(0.3)  # inside the merge of 150,000 rows (it takes about two seconds, commit included)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert deployment.profiles() == []
    result = deployment.run()
    assert result.status == "success"
    file = result.goals[0].files[0]
    assert (file.status, file.counts.rows_applied) == ("imported", ROWS)
    profiles = deployment.properties()
    assert len(profiles) == ROWS
    assert sum(p.get("points", [0])[0] for p in profiles) == sum(i % 7 for i in range(ROWS))
    again = deployment.run(force=True)
    assert again.goals[0].files[0].counts.rows_unchanged == ROWS
    assert len(deployment.properties()) == ROWS
