"""Where the console listens: on its own (`sftp-connector console`) or in a thread of the daemon.

Uvicorn serves the application. Standalone, the console rereads the configuration when its
files change (a broken edit is logged and the last good configuration stays), as the daemon
does before each run; inside the daemon it shows the daemon's own configuration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from sftp_connector.config import load
from sftp_connector.console import auth
from sftp_connector.console.app import Console, make_app
from sftp_connector.console.jobs import Runs
from sftp_connector.errors import ConfigError
from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8470
STOP_GRACE_S = 60.0


@dataclass
class ConfigSource:
    """The configuration, reread when connector.yaml or a goal file changes; the last good one on an error."""

    path: Path
    config: load.Config
    _stamp: tuple[float, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._stamp = self._stamps()

    def __call__(self) -> load.Config:
        with self._lock:
            stamp = self._stamps()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.config = load.load(self.path)
                except ConfigError as exc:
                    logger.error("configuration is invalid, the console shows the last good one: %s", exc)
            return self.config

    def _stamps(self) -> tuple[float, ...]:
        files = [self.path, *sorted((self.path.parent / "goals").glob("*.y*ml"))]
        return (*(p.stat().st_mtime_ns for p in files if p.exists()), len(files))


def build(config: Callable[[], load.Config], store: Store, stop: threading.Event, **daemon: Any) -> Console:
    """Given where the configuration comes from, the store and the stop event, return the console's state."""
    hours = config().connector.console.session_hours
    return Console(config=config, store=store, runs=Runs(config, store, stop),
                   sessions=auth.Sessions(hours * 3600), **daemon)


def check_bind(host: str, config: load.Config) -> None:
    """Raise ConfigError if the console must not listen on host (not loopback, and no users)."""
    problem = auth.bind_problem(host, list(config.connector.console.users))
    if problem:
        raise ConfigError(problem)


def _server(console: Console, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(make_app(console), host=host, port=port, log_level="warning",
                                         access_log=False, lifespan="off", server_header=False,
                                         proxy_headers=True, forwarded_allow_ips="127.0.0.1"))


def serve_forever(console: Console, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; then stop a run started here (its file in hand is rolled back)."""
    server = _server(console, host, port)
    logger.info("console on %s", _url(host, port))
    server.run()
    console.runs.stop.set()
    _wait_for_run(console)


def serve_in_thread(console: Console, host: str, port: int) -> uvicorn.Server:
    """Start serving in a daemon thread; return the server (set should_exit to stop it). Raise ConfigError if
    it cannot listen there."""
    server = _server(console, host, port)
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        raise ConfigError(f"--console-port: the console cannot listen on {host}:{port} (the port is taken, or the "
                          "address is not one of this machine's)")
    logger.info("console on %s", _url(host, port))
    return server


def _url(host: str, port: int) -> str:
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


def _wait_for_run(console: Console) -> None:
    deadline = time.monotonic() + STOP_GRACE_S
    live = console.runs.last
    while live is not None and live.result is None and live.error is None and time.monotonic() < deadline:
        time.sleep(0.1)
