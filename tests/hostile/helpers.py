"""What every hostile-input test checks: the store before and after, the command line's outputs, local files.

`store_contents` reads every store table but the run history (which a failed run does write)
so that "nothing written" is a comparison of two snapshots. `cli_run` runs `sftp-connector
run --json` as a subprocess with plain logs and refuses any traceback in its outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from sftp_connector.store import db
from sftp_connector.store import models as _tables  # noqa: F401  (registers the tables in SQLModel.metadata)
from tests.fixtures.connector import Deployment

OLD = time.time() - 3600
"""An mtime old enough for change detection to trust it."""
HISTORY_TABLES = frozenset({"run", "goal_run", "file_run"})


def store_contents(deployment: Deployment) -> dict[str, list[dict[str, Any]]]:
    """Return every row of every store table except the run history, each table's rows sorted."""
    store = db.open_store(deployment.config().connector.store.url)
    try:
        with store.engine.connect() as conn:
            return {table.name: sorted((dict(row._mapping) for row in conn.execute(sa.select(table))), key=repr)
                    for table in SQLModel.metadata.sorted_tables if table.name not in HISTORY_TABLES}
    finally:
        store.dispose()


def assert_no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    """Given a finished command, fail if it printed a Python traceback (an expected error must not crash)."""
    for stream in (done.stdout, done.stderr):
        assert "Traceback" not in stream, stream


def cli_run(deployment: Deployment, *args: str, env: dict[str, str] | None = None,
            ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run `sftp-connector --log-format plain run --json ARGS` and return the process and the run's JSON."""
    done = deployment.cli("--log-format", "plain", "run", "--json", *args, env=env)
    assert_no_traceback(done)
    assert done.stdout.strip(), done.stderr
    return done, json.loads(done.stdout)


def files_of(run: dict[str, Any], goal: str | None = None) -> dict[str, dict[str, Any]]:
    """Given a run's JSON, return its files by name (the last path component), optionally of one goal."""
    return {f["path"].rsplit("/", 1)[-1]: f for g in run["goals"] if goal in (None, g["goal"]) for f in g["files"]}


def local_files(base: Path, *, outside: str = "state") -> set[str]:
    """Given a deployment folder, return the relative paths of its files, except those under `outside`."""
    return {str(path.relative_to(base)) for path in base.rglob("*")
            if path.is_file() and path.relative_to(base).parts[0] != outside}


def error_of(file: dict[str, Any], goal: str, remote_dir: str) -> str:
    """Given a failed file of the run JSON, check its error names the goal and the file (its remote path, or
    its name for what the CSV reader found); return the cause."""
    assert file["status"] == "failed", file
    assert file["path"].startswith(remote_dir + "/"), file["path"]
    error = file["error"]
    for shown in (file["path"], file["path"].rsplit("/", 1)[1]):
        if error.startswith(prefix := f"goal {goal}, file {shown}: "):
            return error.removeprefix(prefix)
    raise AssertionError(f"the error does not name goal {goal} and the file: {error}")


def put_raw(deployment: Deployment, relpath: bytes, data: str) -> None:
    """Write a file whose name is raw bytes (any but / and NUL) as the SFTP user."""
    path = os.fsencode(deployment.remote.local) + b"/" + relpath
    with open(path, "wb") as out:
        out.write(data.encode())
    os.chown(path, deployment.remote.user.uid, deployment.remote.user.gid)
    os.utime(path, (OLD, OLD))
