""""Run now" from the console: the same runner as `sftp-connector run`, in a thread, its progress kept for the page.

One console run at a time in this process (a second click while one runs says so). The
daemon's scheduled runs and other processes are not blocked by this: each goal takes its
lock as on any run, and a goal whose lock is held elsewhere is skipped there and shown so.
The run's stop event is the process's own: a signal to the daemon stops it too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sftp_connector import notify
from sftp_connector.config.load import Config
from sftp_connector.goals import runner
from sftp_connector.results import RunResult
from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Live:
    """A console run as the page shows it while it goes and once it ended."""

    user: str
    goals: list[str]
    dry_run: bool
    started_at: float
    progress: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    """By what is being done (`customers_1.csv rows merged`): (done, total, unit)."""
    result: RunResult | None = None
    error: str | None = None

    def note(self, what: str, done: int, total: int, unit: str) -> None:
        """The runner's progress callback (goals.context.Progress)."""
        self.progress[what] = (done, total, unit)

    def as_json(self) -> dict[str, Any]:
        return {
            "user": self.user, "goals": self.goals, "dry_run": self.dry_run, "started_at": self.started_at,
            "running": self.result is None and self.error is None,
            "progress": [{"what": k, "done": d, "total": t, "unit": u} for k, (d, t, u) in self.progress.items()],
            "run": self.result.run if self.result else None,
            "status": self.result.status if self.result else ("failed" if self.error else "running"),
            "error": self.error,
            "outcomes": [{"goal": g.goal, "status": g.status, "error": g.error} for g in self.result.goals]
            if self.result else [],
        }


@dataclass
class Runs:
    """Starts console runs and keeps the last one's state; inside the daemon, also follows its scheduled runs."""

    config: Callable[[], Config]
    store: Store
    stop: threading.Event
    last: Live | None = None
    scheduled: Live | None = None
    """The daemon's last scheduled run, followed as it goes (None outside the daemon)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, user: str, goals: list[str], *, dry_run: bool) -> Live | None:
        """Start a run of the goals (all enabled goals if none) in a thread; None if one is still running."""
        with self._lock:
            if self.last is not None and self.last.result is None and self.last.error is None:
                return None
            live = self.last = Live(user, goals, dry_run, time.time())
        threading.Thread(target=self._run, args=(live,), name="console-run", daemon=True).start()
        return live

    def follow_scheduled(self) -> Live:
        """Start following a scheduled run of the daemon: give its runner the returned Live's `note`."""
        self.scheduled = Live("schedule", [], False, time.time())
        return self.scheduled

    def _run(self, live: Live) -> None:
        config = self.config()
        try:
            live.result = runner.run(config, self.store, names=live.goals, dry_run=live.dry_run, trigger="cli",
                                     progress=live.note, stop=self.stop)
            notify.notify(config.connector.notifications, live.result, connector_name=config.connector.name)
        except Exception as exc:  # a configuration or store failure: the page says why, the console goes on
            logger.error("console run failed: %s", exc)
            live.error = str(exc)
