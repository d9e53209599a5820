"""The daemon's health endpoint: `/healthz` for probes and Prometheus `/metrics`.

Metrics are fed from each finished run's result (runs, goal runs, files, rows, durations,
the last success per goal). `/healthz` answers 200 while the scheduler is alive and the
store answers, 503 otherwise, with a small JSON body saying which.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sftp_connector.results import RunResult

logger = logging.getLogger(__name__)


class Metrics:
    """The daemon's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("sftp_connector_runs", "Runs, by trigger and status.", ["trigger", "status"], registry=r)
        self.goal_runs = Counter("sftp_connector_goal_runs", "Goal runs, by goal and status.", ["goal", "status"],
                                 registry=r)
        self.files = Counter("sftp_connector_files", "Files handled, by goal and status.", ["goal", "status"],
                             registry=r)
        self.rows = Counter("sftp_connector_rows", "Rows, by goal and what happened to them.", ["goal", "outcome"],
                            registry=r)
        self.duration = Histogram("sftp_connector_run_duration_seconds", "How long runs take.", registry=r,
                                  buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")))
        self.goal_duration = Gauge("sftp_connector_goal_duration_seconds", "How long each goal's last run took.",
                                   ["goal"], registry=r)
        self.last_success = Gauge("sftp_connector_goal_last_success_timestamp_seconds",
                                  "When each goal last finished successfully (UTC epoch).", ["goal"], registry=r)
        self.last_run = Gauge("sftp_connector_last_run_timestamp_seconds", "When the last run finished.", registry=r)
        self.failures = Counter("sftp_connector_goal_failures", "Failed goal runs, by goal.", ["goal"], registry=r)
        self.warnings = Counter("sftp_connector_file_warnings", "Files whose after_import or on_error action "
                                "failed, by goal.", ["goal"], registry=r)

    def record(self, result: RunResult) -> None:
        """Given a finished run, add it to the metrics."""
        self.runs.labels(result.trigger, result.status).inc()
        if result.finished_at:
            self.duration.observe(max(result.finished_at - result.started_at, 0.0))
            self.last_run.set(result.finished_at)
        for goal in result.goals:
            self.goal_runs.labels(goal.goal, goal.status).inc()
            self.goal_duration.labels(goal.goal).set(max(goal.finished_at - goal.started_at, 0.0))
            if goal.status == "success":
                self.last_success.labels(goal.goal).set(goal.finished_at)
            elif goal.status == "failed":
                self.failures.labels(goal.goal).inc()
            for file in goal.files:
                self.files.labels(goal.goal, file.status).inc()
                if file.warning:
                    self.warnings.labels(goal.goal).inc()
                counts = file.counts
                for outcome, value in (("read", counts.rows_read), ("applied", counts.rows_applied),
                                       ("unchanged", counts.rows_unchanged), ("filtered", counts.rows_filtered),
                                       ("rejected", counts.rows_rejected), ("exported", file.rows_exported)):
                    if value:
                        self.rows.labels(goal.goal, outcome).inc(value)


def exposition(metrics: Metrics) -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, with its content type (the console serves them too)."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


def serve(host: str, port: int, metrics: Metrics, health: Callable[[], dict[str, Any]]) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread and return the server (call shutdown() to stop it).

    `health` returns a dict with `ok: bool` and whatever explains it.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                body, kind = exposition(metrics)
                self._reply(200, kind, body)
            elif self.path.split("?")[0] == "/healthz":
                state = health()
                self._reply(200 if state.get("ok") else 503, "application/json", json.dumps(state).encode())
            else:
                self._reply(404, "text/plain", b"not found\n")

        def _reply(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("health endpoint: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    logger.info("health endpoint on http://%s:%d (/healthz, /metrics)", host, server.server_address[1])
    return server
