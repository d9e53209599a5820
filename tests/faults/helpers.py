"""What the fault tests share: goals and data, the store's contents as one comparable value, the command
line as a watched subprocess, and switches for the real services (stop and restart an sshd or a
PostgreSQL server, route the connector through a CuttingProxy)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from sftp_connector import history
from sftp_connector.store import db, export_reads, queries
from tests.fixtures.connector import ROOT, Deployment, write_connector
from tests.fixtures.gpg import PgpKeys
from tests.fixtures.postgres import _as_postgres, _bin
from tests.fixtures.proxy import CuttingProxy
from tests.fixtures.sshd import SSHD, SftpDir, SshServer

OLD = time.time() - 3600
"""An mtime old enough that a file counts as stable and skippable by listing."""
WAIT_S = 60.0
"""The longest any wait in these tests may take."""

IMPORT: dict[str, Any] = {
    "kind": "import-profiles", "name": "customers",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*"}],
    "stable_after_s": 0,
    "identifiers": [{"field": "id", "property": "crm_id"}],
    "mappings": [{"field": "name", "property": "name"}, {"field": "points", "property": "points", "rule": "sum"},
                 {"field": "pad", "property": "pad"}],
}
EXPORT: dict[str, Any] = {
    "kind": "export-profiles", "name": "newsletter", "directory": "out", "filename": "newsletter_{run}.csv",
    "columns": [{"column": "crm_id", "property": "crm_id"}, {"column": "points", "property": "points"},
                {"column": "pad", "property": "pad"}],
}


# ── data ─────────────────────────────────────────────────────────────────────────────


def customers(ids: range, *, pad: int = 0, seed: int = 0, constant_pad: bool = False) -> str:
    """Given customer numbers, return a customers CSV (id, name, points, pad); `pad` hex characters per row,
    random (incompressible: the encrypted file is as large) unless constant_pad."""
    rng = random.Random(seed)
    lines = ["id,name,points,pad"]
    for i in ids:
        filler = "x" * pad if constant_pad else rng.randbytes(pad // 2).hex()
        lines.append(f"C{i},Name {i},{i % 7 + 1},{filler}")
    return "\n".join(lines) + "\n"


def expected_points(*texts: str) -> dict[str, int]:
    """Given the CSV texts of files at different paths, return each customer's points, each file counted once."""
    points: dict[str, int] = {}
    for text in texts:
        for row in csv.DictReader(io.StringIO(text)):
            points[row["id"]] = points.get(row["id"], 0) + int(row["points"])
    return points


def points(deployment: Deployment) -> dict[str, int]:
    """Return every stored profile's points by crm_id."""
    return {p["crm_id"][0]: p["points"][0] for p in deployment.properties()}


# ── the store as one value ─────────────────────────────────────────────────────────────


def snapshot(deployment: Deployment) -> dict[str, Any]:
    """Return what a fault must leave untouched: every profile (with timestamps), the import records of the
    customers goal, and the newsletter export's watermark."""
    store = db.open_store(deployment.config().connector.store.url)
    try:
        with store.engine.connect() as conn:
            return {
                "profiles": list(queries.iter_profiles(conn)),
                "imported": {path: (r.sha256, r.size) for path, r in queries.imported_files(conn, "customers").items()},
                "watermark": export_reads.watermark(conn, "newsletter"),
            }
    finally:
        store.dispose()


def runs(deployment: Deployment) -> list[dict[str, Any]]:
    """Return the run history, newest first, as `history --json` prints it."""
    store = db.open_store(deployment.config().connector.store.url)
    try:
        return [run.as_json() for run in history.recent(store, limit=50)]
    finally:
        store.dispose()


def files_of(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for goal in run["goals"] for f in goal["files"]]


def leftovers(deployment: Deployment) -> list[Path]:
    """Return every file and folder under the state folder's tmp/."""
    root = deployment.config().state_dir / "tmp"
    return sorted(root.rglob("*")) if root.exists() else []


def remote_names(deployment: Deployment, folder: str = "out") -> list[str]:
    """Return the names in a server folder, hidden (partial) ones included."""
    path = deployment.remote_path(folder)
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def decrypted(deployment: Deployment, name: str, folder: str = "out") -> list[list[str]]:
    """Given an exported file's name, decrypt it as the partner and return its CSV records."""
    plain = deployment.dir / "partner-view.csv"
    deployment.keys.gpg_decrypt_as_partner(deployment.remote_path(f"{folder}/{name}"), plain)
    try:
        return list(csv.reader(io.StringIO(plain.read_text(), newline="")))
    finally:
        plain.unlink()


# ── wiring ────────────────────────────────────────────────────────────────────────────


def through(deployment: Deployment, sshd: SshServer, proxy: CuttingProxy) -> None:
    """Route the connector through the proxy; its port differs from known_hosts, so pin the host key instead.
    A long timeout: a test may hold a transfer for seconds before it acts."""
    deployment.update_connector({"sftp": {"port": proxy.port, "known_hosts": None,
                                          "host_key_fingerprint": sshd.fingerprint, "timeout_s": 30}})


def direct(deployment: Deployment, sshd: SshServer) -> None:
    """Route the connector straight to the sshd again (the host key stays pinned)."""
    deployment.update_connector({"sftp": {"port": sshd.port}})


def exporting(deployment: Deployment) -> None:
    """Make the partner the export recipient and write the newsletter export goal."""
    target = deployment.dir / "keys" / "partner.public.asc"
    target.write_bytes(deployment.keys.partner_public.read_bytes())
    deployment.update_connector({"pgp": {"encrypt": {"recipients": ["keys/partner.public.asc"]}}})
    deployment.write_goal("newsletter", EXPORT)


@contextlib.contextmanager
def deployment_on(base: Path, server: SshServer, keys: PgpKeys, store_url: str, folder: str) -> Iterator[Deployment]:
    """Given a server and a store of the test's own (the `deployment` fixture uses the session's), yield a
    Deployment in base with a fresh server folder; stop its gpg-agent after. TEST_PGP_PASSPHRASE must be set."""
    user = server.users["sftpc-key"]
    local = user.mkdir(folder)
    remote = SftpDir(user, local, user.remote(folder))
    base.mkdir(parents=True)
    write_connector(base, server, remote, keys, store_url)
    try:
        yield Deployment(base, remote, keys, store_url)
    finally:
        home = Path((base / "gnupg-home").read_text())
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, timeout=10)
        shutil.rmtree(home, ignore_errors=True)


# ── the command line, watched ───────────────────────────────────────────────────────────


class Cli:
    """`sftp-connector run …` as a subprocess whose output lines are collected as they come."""

    def __init__(self, deployment: Deployment, *args: str, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        command = [sys.executable, "-m", "sftp_connector", "--config", str(deployment.config_path),
                   "--log-format", "plain", *args]
        self.proc = subprocess.Popen(command, cwd=deployment.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", preexec_fn=preexec_fn,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [threading.Thread(target=_collect, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def wait(self, timeout: float = WAIT_S) -> int:
        """Wait for the process to end (killing it after timeout) and for its output; return its exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for reader in self._readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        """SIGKILL the process now (as the OOM killer or a power cut would) and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def logged(self, text: str, timeout: float = WAIT_S) -> bool:
        """Wait until a stderr line contains text; return False if the process ends or time runs out first."""
        return until(lambda: any(text in line for line in list(self.err)) or self.proc.poll() is not None,
                     timeout) and any(text in line for line in list(self.err))

    def __enter__(self) -> Cli:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def _collect(stream: io.TextIOBase, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def until(condition: Callable[[], bool], timeout: float = WAIT_S, step: float = 0.05) -> bool:
    """Poll condition until it holds (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# ── an sshd of the test's own: stop it as a crash would, start it again ─────────────────


class SshdSwitch:
    """Given a running_sshd() server: `stop()` kills its listener and every session (the network drops),
    `start()` starts it again on the same port with the same keys; `close()` stops what start() started."""

    def __init__(self, server: SshServer) -> None:
        self.server = server
        self.base = server.log.parent
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        listener = int((self.base / "sshd.pid").read_text())
        for pid in [listener, *descendants(listener)]:  # gather first: the orphans would move to init
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
            self.proc = None
        assert until(lambda: not answers(self.server.port), 10), "sshd still answers after the kill"

    def start(self) -> None:
        with (self.base / "sshd-restarted.log").open("ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.base / "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        assert until(lambda: answers(self.server.port), 10), "the restarted sshd does not answer"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def answers(port: int) -> bool:
    """Return True if an SSH server greets on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as sock:
            sock.settimeout(2)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Given a process id, return the ids of its children, grandchildren… (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


# ── a PostgreSQL server of the test's own: stop it, start it again ───────────────────────


@dataclass(frozen=True, slots=True)
class PostgresSwitch:
    """Given a running_postgres() server URL: stop it (fast: sessions end, transactions roll back) and start it
    again with the options it was started with."""

    data: Path
    options: str

    @classmethod
    def of(cls, server_url: str) -> PostgresSwitch:
        plain = server_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain + "/postgres", autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        data = Path(row[0])
        args = shlex.split((data / "postmaster.opts").read_text())[1:]
        at = args.index("-D")
        return cls(data, shlex.join(args[:at] + args[at + 2:]))

    def stop(self) -> None:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"]),
                       check=True, capture_output=True, timeout=WAIT_S)

    def start(self) -> None:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-o", self.options, "-l",
                                     str(self.data.parent / "log"), "-w", "-t", "30", "start"]),
                       check=True, capture_output=True, timeout=WAIT_S)
