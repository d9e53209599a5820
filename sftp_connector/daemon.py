"""`sftp-connector daemon`: run the goals on the schedule until SIGTERM or SIGINT.

Each run reloads the goals (edits take effect at the next run; a broken edit is logged and
the last good configuration runs), executes them in category order, records history,
feeds the metrics and sends notifications. A run never overlaps the previous one, and a
run missed while the daemon was down runs once on start-up. On a signal the file in hand
is rolled back (it is imported next run), the run is recorded as interrupted, and the
process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sftp_connector import entry, health, logs, notify, schedule
from sftp_connector.config import load
from sftp_connector.console import server as console_server
from sftp_connector.console.jobs import Runs
from sftp_connector.errors import ConfigError, GoalError
from sftp_connector.goals import runner
from sftp_connector.store import db, runs

logger = logging.getLogger(__name__)

STOP_GRACE_S = 60.0  # how long a signalled daemon waits for the file in hand before giving up on it


@dataclass
class Daemon:
    """The daemon's state between runs: the last good configuration, the store, the metrics."""

    config_path: Path
    config: load.Config
    store: db.Store
    stop: threading.Event = field(default_factory=threading.Event)
    metrics: health.Metrics = field(default_factory=health.Metrics)
    running: threading.Lock = field(default_factory=threading.Lock)
    last_result: dict[str, Any] = field(default_factory=dict)
    scheduler: schedule.Scheduler | None = None
    console_runs: Runs | None = None
    """The console's runs, when it is served here: it shows the scheduled runs as they go."""

    def run_once(self) -> None:
        """One scheduled run: reload the configuration, run every enabled goal, record and notify."""
        if self.stop.is_set() or not self.running.acquire(blocking=False):
            return
        live = self.console_runs.follow_scheduled() if self.console_runs is not None else None
        try:
            self._reload()
            result = runner.run(self.config, self.store, trigger="schedule", stop=self.stop,
                                progress=live.note if live else None)
            if live is not None:
                live.result = result
            self.metrics.record(result)
            self.last_result = {"run": result.run, "status": result.status, "finished_at": result.finished_at}
            notify.notify(self.config.connector.notifications, result, connector_name=self.config.connector.name)
        except GoalError as exc:  # the store is down: say so, and try again at the next run
            logger.error("the run could not be made: %s", exc)
            if live is not None:
                live.error = str(exc)
        except Exception as exc:  # a run must never kill the daemon: the next one may succeed
            logger.exception("the run failed unexpectedly; the daemon goes on")
            if live is not None:
                live.error = f"internal error: {exc!r}"
        finally:
            self.running.release()

    def _reload(self) -> None:
        try:
            self.config = load.load(self.config_path)
            logs.add_secrets(self.config.secrets())
        except ConfigError as exc:
            logger.error("configuration is invalid, running the last good one: %s", exc)

    def health(self) -> dict[str, Any]:
        """Healthy while the scheduler runs and the store answers."""
        state: dict[str, Any] = {"scheduler": self.scheduler is not None and self.scheduler.running,
                                 **self.last_result}
        state["store"] = runs.answers(self.store)
        next_run = self.scheduler.next_run_at() if self.scheduler else None
        state["next_run"] = _iso(next_run) if next_run else None
        state["ok"] = bool(state["scheduler"] and state["store"])
        return state


def main(config_path: Path, *, health_host: str, health_port: int | None, console_host: str = "127.0.0.1",
         console_port: int | None = None) -> int:
    """Given connector.yaml, run the daemon until a signal; return the exit code (0 after a clean stop).

    Raise ConfigError if the configuration is invalid or has no schedule.
    """
    config = load.load(config_path)
    if config.connector.schedule is None:
        raise ConfigError("connector.yaml: the daemon needs a schedule: (every_minutes, times_per_day, …)")
    store = db.open_store(config.connector.store.url, lock_timeout_s=config.connector.store.lock_timeout_s)
    daemon = Daemon(config_path, config, store)
    _on_signals(daemon.stop)
    if entry.EARLY:  # a signal while the command started: stop before the first run
        logger.info("received %s while starting", signal.Signals(entry.EARLY[0]).name)
        daemon.stop.set()
    if console_port is not None:
        console_server.check_bind(console_host, config)
    server = health.serve(health_host, health_port, daemon.metrics, daemon.health) if health_port is not None \
        else None
    console = None
    if console_port is not None:
        shown = console_server.build(lambda: daemon.config, store, daemon.stop, daemon_health=daemon.health,
                                     metrics=lambda: health.exposition(daemon.metrics))
        daemon.console_runs = shown.runs
        console = console_server.serve_in_thread(shown, console_host, console_port)
    daemon.scheduler = schedule.Scheduler(schedule.trigger(config.connector.schedule), daemon.run_once,
                                          last_run_at=_last_scheduled_run(store))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # its per-job INFO lines say nothing ours do not
    daemon.scheduler.start()
    logger.info("daemon started (schedule: %s)", _describe(config.connector.schedule))
    try:
        daemon.stop.wait()
        logger.info("stopping: %s", "the run in hand stops at its next file or batch; the file in hand is rolled "
                    "back and imported next run" if daemon.running.locked() else "no run in progress")
    finally:
        daemon.scheduler.shutdown(wait=False)
        # The run in hand sees the stop flag between files and batches; wait for it, but not forever.
        if daemon.running.acquire(timeout=STOP_GRACE_S):
            daemon.running.release()
        else:
            logger.warning("the run in hand did not stop within %.0fs; exiting anyway (its file's transaction is "
                           "not committed: the file is imported next run)", STOP_GRACE_S)
            # Its threads may be stuck in a database or server call that no flag reaches, and the interpreter
            # would wait for them at exit: leave now, as a SIGKILL would, which every import survives.
            logging.shutdown()
            os._exit(0)
        if server is not None:
            server.shutdown()
        if console is not None:
            console.should_exit = True
        store.dispose()
    logger.info("daemon stopped")
    return 0


def _on_signals(stop: threading.Event) -> None:
    def handle(number: int, _frame: Any) -> None:
        logger.info("received %s", signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _last_scheduled_run(store: db.Store) -> datetime | None:
    """When the last scheduled run started (a run due since then runs once on start-up), or None if the daemon
    never ran (its first start runs at once)."""
    with store.connection() as conn:
        started = runs.last_started(conn, "schedule")
    return None if started is None else datetime.fromtimestamp(started, UTC)


def _describe(settings: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.model_dump(exclude_none=True).items())


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "never"

