"""`schedule:` → an APScheduler 3 trigger, a preview of its fire times, and the daemon's one-job scheduler.

The rules, each pinned by tests/unit/test_schedule.py:

- Calendar forms (times_per_day, days_of_week, days_of_month, weekday_of_month, or `at` alone = daily) are
  wall-clock times in `schedule.timezone`, with Vixie cron's DST rules for fixed-time jobs: a time that a
  spring-forward skips runs at the moment the clocks jump (02:30 on 2026-03-29 in Europe/Amsterdam runs at
  03:00 CEST), a time that a fall-back repeats runs once, the first time. A day a month lacks (31 in April)
  is skipped, as cron does.
- times_per_day N: N wall-clock times a day, 1440/N minutes apart (rounded down to the minute), from `at`.
- every_minutes N: an interval in absolute time, so "every 60 minutes" is 60 real minutes apart also across a
  DST change. Runs are phased on `at` of the start-up day: every 15 minutes runs at :00, :15, :30, :45, not
  at start-up + 15 minutes, so previews are reproducible and a restart does not shift the schedule.
- `at` defaults to 00:00. No form and no `at` is no schedule: `trigger` raises ValueError.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sftp_connector.config import models

logger = logging.getLogger(__name__)

_TICK = timedelta(microseconds=1)
_WEEK_POSITIONS = {"first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "last": "last"}
_JOB_ID = "run"


# ── triggers ────────────────────────────────────────────────────────────────────────


def trigger(schedule: models.Schedule, now: datetime | None = None) -> BaseTrigger:
    """Given a schedule and the start-up time (default: now), return its trigger. Raise ValueError if the schedule
    names no time ("no schedule"), an empty list or an unknown timezone."""
    zone = _zone(schedule.timezone)
    at = time.fromisoformat(schedule.at) if schedule.at else time(0, 0)
    if schedule.every_minutes is not None:
        return _every(schedule.every_minutes, at, zone, now or datetime.now(zone))
    if schedule.times_per_day is not None:
        return _times_per_day(schedule.times_per_day, at, zone)
    if schedule.days_of_week is not None:
        return _wall_clock(at, zone, day_of_week=_listed("days_of_week", schedule.days_of_week))
    if schedule.days_of_month is not None:
        return _wall_clock(at, zone, day=_listed("days_of_month", schedule.days_of_month))
    if schedule.weekday_of_month is not None:
        nth = schedule.weekday_of_month
        return _wall_clock(at, zone, day=f"{_WEEK_POSITIONS[nth.week]} {nth.day}")
    if schedule.at is not None:
        return _wall_clock(at, zone)
    raise ValueError("no schedule")


def next_fire_times(schedule: models.Schedule, after: datetime, count: int) -> list[datetime]:
    """Given a schedule, an aware instant and a count, return the next `count` fire times strictly after that
    instant, in the schedule's timezone. Raise ValueError if `after` is naive or the schedule is not one."""
    if after.tzinfo is None:
        raise ValueError("after must be a timezone-aware datetime")
    rule, zone = trigger(schedule, now=after), _zone(schedule.timezone)
    times: list[datetime] = []
    fire = rule.get_next_fire_time(None, after.astimezone(UTC) + _TICK)
    while fire is not None and len(times) < count:
        times.append(fire.astimezone(zone))
        fire = rule.get_next_fire_time(fire, fire)
    return times


def upcoming(schedule: models.Schedule | None, count: int = 5) -> list[str] | None:
    """Given connector.yaml's schedule, return its next `count` run times as an operator reads them, in its
    timezone ("2026-12-05 02:00 Sat UTC"), or None if it sets no times (a timezone alone): runs only by hand."""
    if schedule is None or not schedule.model_fields_set - {"timezone"}:
        return None
    return [f"{moment:%Y-%m-%d %H:%M %a %Z}" for moment in next_fire_times(schedule, datetime.now(UTC), count)]


_DAYS = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday",
         "sat": "Saturday", "sun": "Sunday"}


def in_words(schedule: models.Schedule) -> str:
    """Given a schedule, return it as an operator reads it, with its timezone: "every day at 02:00 (UTC)"."""
    at = schedule.at or "00:00"
    if schedule.every_minutes is not None:
        minutes = schedule.every_minutes
        every = f"every {minutes * 60:g} seconds" if minutes < 1 else f"every {minutes:g} minutes"
        words = f"{every}, counted from {at}"
    elif schedule.times_per_day is not None:
        words = f"{schedule.times_per_day} times a day, {1440 // schedule.times_per_day} minutes apart from {at}"
    elif schedule.days_of_week is not None:
        words = f"at {at} on {_and([_DAYS[d] for d in schedule.days_of_week])}"
    elif schedule.days_of_month is not None:
        days = _and([str(d) for d in schedule.days_of_month])
        late = " (not in months without it)" if max(schedule.days_of_month, default=0) > 28 else ""
        words = f"at {at} on day {days} of each month{late}"
    elif schedule.weekday_of_month is not None:
        nth = schedule.weekday_of_month
        words = f"at {at} on the {nth.week} {_DAYS[nth.day]} of each month"
    else:
        words = f"every day at {at}"
    return f"{words} ({schedule.timezone})"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def missed_run_at(rule: BaseTrigger, last_run_at: datetime, now: datetime) -> datetime | None:
    """Given a trigger, the last run (naive = UTC) and now, return a fire time in (last_run_at, now], the latest or
    close to it, or None if no fire time passed."""
    last = last_run_at if last_run_at.tzinfo else last_run_at.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    # Look back from now in doubling spans rather than from last_run_at forwards: APScheduler walks every fire
    # time from the job's next_run_time to now, which for every_minutes: 1 and a week's downtime is 10,000 steps.
    span = timedelta(hours=1)
    while True:
        since = max(last, now - span)
        fire = rule.get_next_fire_time(None, since.astimezone(UTC) + _TICK)
        if fire is not None and fire <= now:
            return fire
        if since == last:
            return None
        span *= 2


def _zone(name: str) -> ZoneInfo:
    """Given an IANA timezone name, return the zone. Raise ValueError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"schedule.timezone: unknown timezone {name!r}") from exc


def _listed(key: str, values: Sequence[str | int]) -> str:
    """Given a schedule list, return it as a cron field. Raise ValueError if it is empty."""
    if not values:
        raise ValueError(f"schedule.{key} is empty")
    return ",".join(str(value) for value in values)


def _every(minutes: float, at: time, zone: ZoneInfo, now: datetime) -> IntervalTrigger:
    """Every `minutes` real minutes, phased on `at` of the day of `now`, from a start at or before `now`."""
    step = timedelta(minutes=minutes)
    start = datetime.combine(now.astimezone(zone).date(), at, tzinfo=zone).astimezone(UTC)
    ahead = start - now.astimezone(UTC)
    if ahead > timedelta(0):
        # Move back in whole steps (in UTC, not wall-clock time) so the run due just after now is not skipped.
        start -= step * math.ceil(ahead / step)
    return IntervalTrigger(minutes=minutes, start_date=start.astimezone(zone), timezone=zone)


def _times_per_day(count: int, at: time, zone: ZoneInfo) -> BaseTrigger:
    """`count` wall-clock times a day from `at`: one cron per distinct minute, so each time is exact."""
    first = at.hour * 60 + at.minute
    slots = sorted({(first + i * 1440 // count) % 1440 for i in range(count)})
    hours_by_minute: dict[int, list[int]] = {}
    for slot in slots:
        hours_by_minute.setdefault(slot % 60, []).append(slot // 60)
    crons = [_wall_clock(time(0, minute), zone, hour=",".join(map(str, hours)))
             for minute, hours in sorted(hours_by_minute.items())]
    return crons[0] if len(crons) == 1 else OrTrigger(crons)


def _wall_clock(at: time, zone: ZoneInfo, **fields: str) -> WallClockTrigger:
    """A cron at `at` (its hour unless `fields` give one) on the days `fields` select."""
    fields.setdefault("hour", str(at.hour))
    return WallClockTrigger(CronTrigger(minute=at.minute, timezone=zone, **fields))


class WallClockTrigger(BaseTrigger):
    """A CronTrigger with Vixie cron's DST rules for fixed-time jobs: a wall-clock time skipped by a spring-forward
    fires when the clocks jump; a time repeated by a fall-back fires once, at its first occurrence. (CronTrigger
    alone fires a skipped 02:30 at 03:30 and a repeated 02:30 twice.)"""

    __slots__ = ("cron",)

    def __init__(self, cron: CronTrigger) -> None:
        self.cron = cron

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        fire = self.cron.get_next_fire_time(previous_fire_time, now)
        while fire is not None and _repeated(fire):
            fire = self.cron.get_next_fire_time(fire, fire)
        return _clock_jump(fire) if fire is not None and _skipped(fire) else fire

    def __str__(self) -> str:
        return f"wall-clock {self.cron}"

    def __repr__(self) -> str:
        return f"<WallClockTrigger {self.cron!r}>"


def _repeated(moment: datetime) -> bool:
    """Whether a wall-clock time is the second occurrence of a time a fall-back repeats."""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def _skipped(moment: datetime) -> bool:
    """Whether a wall-clock time was skipped by a spring-forward (it does not exist in its timezone)."""
    return moment.astimezone(UTC).astimezone(moment.tzinfo).replace(tzinfo=None) != moment.replace(tzinfo=None)


def _clock_jump(skipped: datetime) -> datetime:
    """Given a wall-clock time a spring-forward skipped, return the instant the clocks jumped over it."""
    wall = skipped.replace(tzinfo=None)
    # Read with the later offset the time is an instant before the jump, with the earlier offset one after it
    # (PEP 495); bisect the seconds between them for the first whose wall-clock time is past `wall`.
    before, after = int(skipped.replace(fold=1).timestamp()), math.ceil(skipped.replace(fold=0).timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, skipped.tzinfo).replace(tzinfo=None) > wall:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, skipped.tzinfo)


# ── the daemon's scheduler ──────────────────────────────────────────────────────────


class Scheduler:
    """Run one callable on a trigger in a background thread, so the daemon's main thread stays free to wait on a
    threading.Event and handle signals. Never two runs at once (max_instances=1: a fire time that comes while a run
    is busy is skipped, APScheduler logs a warning); fire times missed while the process was stalled are coalesced
    into one late run (misfire_grace_time=None: however late). A run missed while the daemon was down is detected
    from `last_run_at` (when the last run finished, or started if it never finished; naive = UTC) and run once at
    start, then the schedule continues on its own phase; a daemon that never ran (`last_run_at` None) runs at
    once on its first start."""

    def __init__(self, trigger: BaseTrigger, run_now: Callable[[], object], *,
                 last_run_at: datetime | None = None) -> None:
        self._trigger = trigger
        self._run_now = run_now
        self._last_run_at = last_run_at
        self._scheduler = BackgroundScheduler(timezone=UTC)

    def start(self) -> None:
        """Start the schedule; on a first start, or if a fire time passed since last_run_at, run once at once."""
        now = datetime.now(UTC)
        first = self._last_run_at is None
        missed = now if first else missed_run_at(self._trigger, self._last_run_at, now)  # type: ignore[arg-type]
        # A past next_run_time makes the job due at once; APScheduler coalesces the fire times up to now into one
        # run and computes the next from the trigger, so the schedule keeps its phase.
        when = {} if missed is None else {"next_run_time": missed}
        self._scheduler.add_job(self._run, self._trigger, id=_JOB_ID, name="run", max_instances=1, coalesce=True,
                                misfire_grace_time=None, **when)
        self._scheduler.start()
        if first:
            logger.info("first start: running now, then on the schedule")
        elif missed is not None:
            logger.info("a run was due at %s while the daemon was down: running it now", _iso(missed))
        else:
            self._log_next()

    def shutdown(self, wait: bool) -> None:
        """Stop scheduling; with `wait`, return only after the current run finished. Idempotent."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is alive (what /healthz reports)."""
        return bool(self._scheduler.running)

    def next_run_at(self) -> datetime | None:
        """Return the next scheduled run, or None if the scheduler is not running or the trigger is exhausted."""
        job = self._scheduler.get_job(_JOB_ID) if self._scheduler.running else None
        return job.next_run_time if job is not None else None

    def _run(self) -> None:
        """One scheduled run: failures are logged, never stop the schedule."""
        try:
            self._run_now()
        except Exception:
            logger.exception("scheduled run failed")
        finally:
            self._log_next()

    def _log_next(self) -> None:
        if not self._scheduler.running:  # stopped (the daemon is stopping): there is no next run to name
            return
        next_run = self.next_run_at()
        logger.info("next run at %s", _iso(next_run) if next_run else "never (the schedule has ended)")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
