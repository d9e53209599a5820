"""The daemon as operators run it: a subprocess on a short schedule against the real sshd, its
health endpoint and metrics, SIGTERM mid-file, and two replicas sharing one store."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sftp_connector import history
from sftp_connector.store import db
from tests.fixtures.connector import ROOT, Deployment

OLD = time.time() - 3600
GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv"}]
stable_after_s: 0
identifiers: [{field: email, property: email}]
mappings: [{field: name, property: name}]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A daemon subprocess whose JSON log lines are collected as they come."""

    def __init__(self, deployment: Deployment, port: int | None) -> None:
        self.port = port
        args = [sys.executable, "-m", "sftp_connector", "--config", str(deployment.config_path),
                "--log-format", "json", "daemon"] + (["--health-port", str(port)] if port else [])
        self.proc = subprocess.Popen(args, cwd=deployment.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@contextmanager
def daemon(deployment: Deployment, port: int | None = None) -> Iterator[Running]:
    running = Running(deployment, port)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(10)


def wait(predicate: Callable[[], Any], timeout: float = 60, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def runs(deployment: Deployment) -> list[dict[str, Any]]:
    store = db.open_store(deployment.store_url)
    try:
        return [run.as_json() for run in history.recent(store, limit=500)]
    finally:
        store.dispose()


def test_daemon_runs_on_schedule_serves_metrics_and_stops_cleanly(deployment: Deployment) -> None:
    deployment.update_connector({"schedule": {"every_minutes": 0.02}})  # every 1.2 s
    deployment.write_goal("customers", GOAL)
    deployment.put("in/customers_1.csv", "email,name\na@x.com,Ada\n", mtime=OLD)
    port = free_port()
    with daemon(deployment, port) as running:
        wait(lambda: len([r for r in runs(deployment) if r["status"] == "success"]) >= 3, what="three runs")
        code, body = running.get("/healthz")
        assert code == 200 and json.loads(body)["ok"] is True and json.loads(body)["next_run"]
        code, metrics = running.get("/metrics")
        assert code == 200
        assert 'sftp_connector_runs_total{status="success",trigger="schedule"}' in metrics
        assert 'sftp_connector_goal_last_success_timestamp_seconds{goal="customers"}' in metrics
        assert 'sftp_connector_rows_total{goal="customers",outcome="read"} 1.0' in metrics
        assert running.get("/nothing")[0] == 404
        assert running.logged("next run at")
        assert running.stop() == 0
    assert deployment.properties() == [{"email": ["a@x.com"], "name": ["Ada"]}]
    assert all(r["trigger"] == "schedule" for r in runs(deployment))
    assert running.logged("daemon stopped")


def test_sigterm_mid_file_rolls_it_back_and_exits_0(deployment: Deployment) -> None:
    deployment.update_connector({"schedule": {"every_minutes": 60}})
    deployment.write_goal("customers", GOAL)
    rows = "".join(f"c{i}@x.com,N{i}\n" for i in range(300_000))
    deployment.put("in/customers_1.csv", "email,name\n" + rows, mtime=OLD)
    with daemon(deployment) as running:  # never ran before: it runs once on start-up
        wait(lambda: running.logged("goal customers (import-profiles): start"), what="the goal to start")
        assert running.logged("first start: running now, then on the schedule")
        time.sleep(1.0)
        started = time.monotonic()
        assert running.stop(timeout=90) == 0
        assert time.monotonic() - started < 60
    assert running.logged("stopping: the run in hand stops at its next file or batch")
    assert not running.logged("while the daemon was down") and not running.logged("never (the schedule has ended)")
    with daemon(deployment) as idle:  # it ran before, nothing is due: it waits, and stops idle
        wait(lambda: idle.logged("next run at"), what="the next run's time")
        assert idle.stop() == 0
    assert idle.logged("stopping: no run in progress")
    [last] = runs(deployment)[:1]
    assert last["status"] == "interrupted", last
    assert deployment.profiles() == []
    assert deployment.run().status == "success"  # the file is imported whole next time
    assert len(deployment.profiles()) == 300_000


def test_two_replicas_never_run_a_goal_at_once(deployment: Deployment) -> None:
    deployment.update_connector({"schedule": {"every_minutes": 0.02}})
    # A stability wait makes each run of the goal take over a second, as new files keep arriving (only new or
    # changed files are waited for): the replicas' runs collide.
    deployment.write_goal("customers", GOAL.replace("stable_after_s: 0", "stable_after_s: 1"))
    deployment.put("in/customers_1.csv", "email,name\na@x.com,Ada\n", mtime=OLD)
    done = threading.Event()

    def partner() -> None:
        for n in itertools.count(2):
            if done.wait(0.3):
                return
            deployment.put(f"in/customers_{n}.csv", "email,name\na@x.com,Ada\n", mtime=OLD)

    dropping = threading.Thread(target=partner, daemon=True)
    dropping.start()
    try:
        with daemon(deployment) as first, daemon(deployment) as second:
            wait(lambda: sum(g["status"] == "skipped" for r in runs(deployment) for g in r["goals"]) >= 2
                 and sum(g["status"] == "success" for r in runs(deployment) for g in r["goals"]) >= 3,
                 timeout=90, what="runs on both replicas, some skipped")
            assert first.stop() == 0 and second.stop() == 0
    finally:
        done.set()
        dropping.join()
    store = db.open_store(deployment.store_url)
    try:
        with store.engine.connect() as conn:
            spans = conn.exec_driver_sql("SELECT started_at, finished_at FROM goal_run WHERE goal = 'customers' "
                                         "AND status != 'skipped' ORDER BY started_at").all()
    finally:
        store.dispose()
    assert len(spans) >= 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two runs of one goal overlapped"
    assert deployment.properties() == [{"email": ["a@x.com"], "name": ["Ada"]}]


def test_a_failing_run_emails_and_posts_to_real_servers(deployment: Deployment) -> None:
    from aiosmtpd.controller import Controller

    from tests.integration.test_notify import Mailbox

    posts: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        deployment.update_connector({"notifications": {
            "email": {"to": ["ops@example.com"], "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            "webhook": {"url": f"http://127.0.0.1:{hook.server_address[1]}/hook", "when": "always"}}})
        deployment.write_goal("customers", GOAL.replace("field: name", "field: nom"))
        deployment.put("in/customers_1.csv", "email,name\na@x.com,Ada\n", mtime=OLD)
        done = deployment.cli("run")
        assert done.returncode == 1
    finally:
        smtp.stop()
        hook.shutdown()
    [message] = mailbox.messages
    assert "failed" in message["Subject"]
    body = message.get_content()
    assert "customers" in body and "customers_1.csv" in body and "nom not in the file" in body
    [post] = posts
    assert post["run"]["status"] == "failed" and "failed" in post["text"]
