"""Run goals in their fixed order, isolate failures, and record the run in history.

Order: import-groups, then import-profiles, then export-profiles; within a kind by `order:`
then goal file name. A failed goal does not stop the goals after it; the run's worst
outcome decides the exit code.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sftp_connector import history
from sftp_connector.config import models
from sftp_connector.config.load import Config
from sftp_connector.errors import ConfigError, GoalError, StoreError
from sftp_connector.goals import exports, imports, locks
from sftp_connector.goals.context import Progress, RunContext
from sftp_connector.private import private_dir
from sftp_connector.results import GoalResult, RunResult, Trigger
from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)

Goal = models.ImportProfiles | models.ImportGroups | models.ExportProfiles


def ordered(config: Config, names: Sequence[str] = ()) -> list[Goal]:
    """Given the configuration and optional goal names, return the goals to run, in run order.

    Disabled goals are left out unless named. Raise ConfigError for an unknown name.
    """
    chosen = [config.goal(name) for name in names] if names else [g for g in config.goals if g.enabled]
    rank = {kind: i for i, kind in enumerate(models.GOAL_KINDS)}
    return sorted(chosen, key=lambda g: (rank[g.kind], g.order, config.goal_files[g.name].name))


def new_run_id() -> str:
    """Return a run id that sorts by time: 20261122T131500-3f9a1c."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def run(
    config: Config,
    store: Store,
    *,
    names: Sequence[str] = (),
    dry_run: bool = False,
    force: bool = False,
    trigger: Trigger = "cli",
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Given the configuration and store, run the chosen goals now and return the recorded result.

    Raise ConfigError if a named goal does not exist.
    """
    goals = ordered(config, names)
    private_dir(config.state_dir)  # rejects, locks and decrypted files live here
    result = RunResult(run=new_run_id(), trigger=trigger,
                       started_at=time.time(), dry_run=dry_run)
    ctx = RunContext(config=config, store=store, run=result.run, dry_run=dry_run, force=force,
                     stop=stop or threading.Event(), progress=progress)
    history.begin(store, result)
    try:
        for goal in goals:
            if ctx.stop.is_set():
                result.status = "interrupted"
                break
            result.goals.append(_locked_run(ctx, goal))
    finally:
        ctx.close()
        _finish(store, result, ctx)
    return result


def _locked_run(ctx: RunContext, goal: Goal) -> GoalResult:
    """Run the goal holding its lock; a store that cannot lock it fails the goal, not the run."""
    try:
        with locks.goal_lock(ctx.store, ctx.config.state_dir, goal.name) as held:
            return _run_goal(ctx, goal) if held else _held_elsewhere(goal)
    except StoreError as exc:
        now = time.time()
        return GoalResult(goal.name, goal.kind, started_at=now, finished_at=now).fail(
            str(exc.located(goal=goal.name)))


def _held_elsewhere(goal: Goal) -> GoalResult:
    """Another replica (or run) is running this goal: skip it, it runs there."""
    logger.info("goal %s: skipped, another run holds its lock", goal.name)
    now = time.time()
    return GoalResult(goal.name, goal.kind, "skipped", "another run of this goal is in progress (lock held)",
                      started_at=now, finished_at=now)


def _run_goal(ctx: RunContext, goal: Goal) -> GoalResult:
    """Run one goal; an unexpected error fails the goal (with its trace in the log), not the run."""
    logger.info("goal %s (%s): start", goal.name, goal.kind)
    try:
        outcome = exports.run(ctx, goal) if isinstance(goal, models.ExportProfiles) else imports.run(ctx, goal)
    except ConfigError:
        raise
    except GoalError as exc:
        logger.error("%s", exc)
        outcome = GoalResult(goal.name, goal.kind, "failed", str(exc.located(goal=goal.name)))
    except Exception as exc:
        logger.exception("goal %s: unexpected error", goal.name)
        outcome = GoalResult(goal.name, goal.kind, "failed", f"goal {goal.name}: internal error: {exc!r}")
    outcome.finished_at = outcome.finished_at or time.time()
    outcome.started_at = outcome.started_at or outcome.finished_at
    logger.info("goal %s: %s (%d created, %d updated)", goal.name, outcome.status,
                outcome.profiles_created, outcome.profiles_updated)
    return outcome


def _finish(store: Store, result: RunResult, ctx: RunContext) -> None:
    if ctx.stop.is_set():
        result.status = "interrupted"
    elif any(g.status == "failed" for g in result.goals):
        result.status = "failed"
    elif result.goals and all(g.status == "skipped" for g in result.goals):
        result.status = "skipped"
    result.finished_at = time.time()
    try:
        history.finish(store, result)
    except StoreError as exc:
        logger.error("could not record run %s in history: %s", result.run, exc)
        result.status = "failed"
