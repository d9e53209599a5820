"""schedule: fire times for every form at fixed instants (DST included), and the one-job scheduler's guarantees."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from sftp_connector import schedule
from sftp_connector.config import models

AMS = ZoneInfo("Europe/Amsterdam")  # 2026: spring forward 03-29 02:00 → 03:00, fall back 10-25 03:00 → 02:00


def fires(after: datetime, count: int, **form: Any) -> list[str]:
    """The next `count` fire times of a schedule after `after`, as ISO strings (unambiguous across DST)."""
    return [t.isoformat() for t in schedule.next_fire_times(models.Schedule(**form), after, count)]


# ── calendar forms ──────────────────────────────────────────────────────────────────


def test_at_alone_runs_daily() -> None:
    assert fires(datetime(2026, 11, 20, 12, tzinfo=UTC), 2, at="02:00") == [
        "2026-11-21T02:00:00+00:00", "2026-11-22T02:00:00+00:00"]


def test_fire_times_are_strictly_after_the_instant() -> None:
    assert fires(datetime(2026, 11, 21, 2, 0, tzinfo=UTC), 1, at="02:00") == ["2026-11-22T02:00:00+00:00"]


def test_days_of_week_at_time_in_the_schedule_timezone() -> None:
    after = datetime(2026, 11, 18, tzinfo=AMS)  # a Wednesday
    assert fires(after, 4, timezone="Europe/Amsterdam", days_of_week=["mon", "thu"], at="02:00") == [
        "2026-11-19T02:00:00+01:00", "2026-11-23T02:00:00+01:00",
        "2026-11-26T02:00:00+01:00", "2026-11-30T02:00:00+01:00"]


def test_days_of_month_default_to_midnight() -> None:
    assert fires(datetime(2026, 1, 10, tzinfo=UTC), 3, days_of_month=[1, 15]) == [
        "2026-01-15T00:00:00+00:00", "2026-02-01T00:00:00+00:00", "2026-02-15T00:00:00+00:00"]


def test_day_31_skips_the_months_without_one_as_cron_does() -> None:
    assert fires(datetime(2026, 1, 1, tzinfo=UTC), 5, days_of_month=[31], at="06:00") == [
        "2026-01-31T06:00:00+00:00", "2026-03-31T06:00:00+00:00", "2026-05-31T06:00:00+00:00",
        "2026-07-31T06:00:00+00:00", "2026-08-31T06:00:00+00:00"]


def test_first_monday_of_the_month() -> None:
    assert fires(datetime(2026, 1, 1, tzinfo=UTC), 4, weekday_of_month={"week": "first", "day": "mon"},
                 at="07:15") == ["2026-01-05T07:15:00+00:00", "2026-02-02T07:15:00+00:00",
                                 "2026-03-02T07:15:00+00:00", "2026-04-06T07:15:00+00:00"]


def test_last_friday_of_the_month() -> None:
    assert fires(datetime(2026, 1, 1, tzinfo=UTC), 3, weekday_of_month={"week": "last", "day": "fri"}) == [
        "2026-01-30T00:00:00+00:00", "2026-02-27T00:00:00+00:00", "2026-03-27T00:00:00+00:00"]


def test_times_per_day_evenly_spaced_from_at() -> None:
    assert fires(datetime(2026, 11, 20, tzinfo=UTC), 5, times_per_day=4, at="01:30") == [
        "2026-11-20T01:30:00+00:00", "2026-11-20T07:30:00+00:00", "2026-11-20T13:30:00+00:00",
        "2026-11-20T19:30:00+00:00", "2026-11-21T01:30:00+00:00"]


def test_times_per_day_that_do_not_divide_the_day_are_rounded_down_to_the_minute() -> None:
    # 1440 / 7 = 205.7 minutes: the i-th run is at floor(i * 1440 / 7) minutes past `at`
    assert fires(datetime(2026, 11, 19, 23, 59, tzinfo=UTC), 8, times_per_day=7) == [
        "2026-11-20T00:00:00+00:00", "2026-11-20T03:25:00+00:00", "2026-11-20T06:51:00+00:00",
        "2026-11-20T10:17:00+00:00", "2026-11-20T13:42:00+00:00", "2026-11-20T17:08:00+00:00",
        "2026-11-20T20:34:00+00:00", "2026-11-21T00:00:00+00:00"]


# ── DST, Europe/Amsterdam 2026 ──────────────────────────────────────────────────────


def test_daily_time_skipped_by_spring_forward_runs_when_the_clocks_jump() -> None:
    # Vixie cron: "If time has moved forward, those jobs that would have run in the interval that has been
    # skipped will be run immediately" — 02:30 does not exist on 03-29, so the run is at 03:00 CEST, once.
    assert fires(datetime(2026, 3, 28, 12, tzinfo=AMS), 3, timezone="Europe/Amsterdam", at="02:30") == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_daily_time_repeated_by_fall_back_runs_once() -> None:
    # Vixie cron: "if time has moved backward, care is taken to avoid running jobs twice" — the first 02:30 only.
    assert fires(datetime(2026, 10, 24, 12, tzinfo=AMS), 2, timezone="Europe/Amsterdam", at="02:30") == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_last_sunday_of_march_lands_on_the_spring_forward_day() -> None:
    assert fires(datetime(2026, 3, 1, tzinfo=AMS), 2, timezone="Europe/Amsterdam", at="02:30",
                 weekday_of_month={"week": "last", "day": "sun"}) == [
        "2026-03-29T03:00:00+02:00", "2026-04-26T02:30:00+02:00"]


def test_times_per_day_keep_wall_clock_times_across_fall_back() -> None:
    assert fires(datetime(2026, 10, 25, 1, 10, tzinfo=AMS), 5, timezone="Europe/Amsterdam", times_per_day=48) == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T03:30:00+01:00"]


def test_times_per_day_collapse_skipped_times_into_the_jump() -> None:
    assert fires(datetime(2026, 3, 29, 0, 30, tzinfo=AMS), 3, timezone="Europe/Amsterdam", times_per_day=24) == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]


def test_every_60_minutes_is_60_real_minutes_across_fall_back() -> None:
    form = models.Schedule(timezone="Europe/Amsterdam", every_minutes=60)
    times = schedule.next_fire_times(form, datetime(2026, 10, 25, 0, 30, tzinfo=AMS), 5)
    assert [t.isoformat() for t in times] == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00"]
    assert {b.timestamp() - a.timestamp() for a, b in pairwise(times)} == {3600}


def test_every_60_minutes_is_60_real_minutes_across_spring_forward() -> None:
    assert fires(datetime(2026, 3, 29, 0, 30, tzinfo=AMS), 3, timezone="Europe/Amsterdam", every_minutes=60) == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]


# ── every_minutes alignment ─────────────────────────────────────────────────────────


def test_every_minutes_is_phased_on_midnight_not_on_start_up() -> None:
    assert fires(datetime(2026, 11, 18, 10, 7, tzinfo=UTC), 3, every_minutes=15) == [
        "2026-11-18T10:15:00+00:00", "2026-11-18T10:30:00+00:00", "2026-11-18T10:45:00+00:00"]


def test_every_minutes_is_phased_on_at_also_before_at() -> None:
    assert fires(datetime(2026, 11, 18, 7, 0, tzinfo=UTC), 3, every_minutes=90, at="08:00") == [
        "2026-11-18T08:00:00+00:00", "2026-11-18T09:30:00+00:00", "2026-11-18T11:00:00+00:00"]


# ── refusals ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("form", "message"), [
    ({}, "no schedule"),
    ({"timezone": "Europe/Atlantis", "at": "02:00"}, "unknown timezone 'Europe/Atlantis'"),
    ({"days_of_week": []}, "schedule.days_of_week is empty"),
])
def test_trigger_refuses(form: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule.trigger(models.Schedule(**form))


def test_next_fire_times_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_fire_times(models.Schedule(at="02:00"), datetime(2026, 1, 1), 1)


# ── missed runs ─────────────────────────────────────────────────────────────────────

NOW = datetime(2026, 11, 20, 10, 20, tzinfo=UTC)
HOURLY = schedule.trigger(models.Schedule(every_minutes=60), now=NOW)


def test_missed_run_is_the_latest_fire_time_since_the_last_run() -> None:
    assert schedule.missed_run_at(HOURLY, NOW - timedelta(days=2), NOW) == datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_no_missed_run_when_the_last_run_is_after_the_latest_fire_time() -> None:
    assert schedule.missed_run_at(HOURLY, datetime(2026, 11, 20, 10, 5, tzinfo=UTC), NOW) is None


def test_a_run_exactly_at_the_fire_time_is_not_missed_and_naive_means_utc() -> None:
    assert schedule.missed_run_at(HOURLY, datetime(2026, 11, 20, 10, 0), NOW) is None


def test_missed_monthly_run_found_far_back() -> None:
    monthly = schedule.trigger(models.Schedule(days_of_month=[31]))
    missed = schedule.missed_run_at(monthly, datetime(2026, 7, 1, tzinfo=UTC), NOW)
    assert missed == datetime(2026, 10, 31, tzinfo=UTC)


# ── the scheduler (real threads, short waits) ───────────────────────────────────────


def test_missed_while_down_runs_exactly_once_on_start(caplog: pytest.LogCaptureFixture) -> None:
    # hourly, phased 30 minutes from now: no regular fire time can fall inside this test
    now = datetime.now(UTC)
    at = (now + timedelta(minutes=30)).strftime("%H:%M")
    rule = schedule.trigger(models.Schedule(every_minutes=60, at=at), now=now)
    runs: list[float] = []
    done = threading.Event()

    def run_now() -> None:
        runs.append(time.monotonic())
        done.set()

    scheduler = schedule.Scheduler(rule, run_now, last_run_at=now - timedelta(days=2))
    with caplog.at_level(logging.INFO, logger="sftp_connector.schedule"):
        scheduler.start()
        try:
            assert done.wait(2)
            time.sleep(0.2)
            next_run = scheduler.next_run_at()
        finally:
            scheduler.shutdown(wait=True)
    assert len(runs) == 1
    assert next_run is not None and now + timedelta(minutes=28) < next_run < now + timedelta(minutes=31)
    assert f"next run at {next_run.isoformat(timespec='seconds')}" in caplog.messages


def test_no_immediate_run_when_nothing_was_missed() -> None:
    now = datetime.now(UTC)
    at = (now + timedelta(minutes=30)).strftime("%H:%M")
    runs: list[int] = []
    scheduler = schedule.Scheduler(schedule.trigger(models.Schedule(every_minutes=60, at=at), now=now),
                                   lambda: runs.append(1), last_run_at=now - timedelta(minutes=5))
    scheduler.start()
    try:
        time.sleep(0.1)
        next_run = scheduler.next_run_at()
    finally:
        scheduler.shutdown(wait=True)
    assert runs == []
    assert next_run is not None and next_run > now
    assert scheduler.next_run_at() is None


def test_a_slow_run_never_overlaps_the_next(caplog: pytest.LogCaptureFixture) -> None:
    active, peak, finished = 0, 0, []
    lock, enough = threading.Lock(), threading.Event()

    def slow_run() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.15)  # three times the interval
        with lock:
            active -= 1
            finished.append(1)
            if len(finished) >= 3:
                enough.set()

    scheduler = schedule.Scheduler(IntervalTrigger(seconds=0.05, timezone=UTC), slow_run)
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        scheduler.start()
        try:
            assert enough.wait(2)
        finally:
            scheduler.shutdown(wait=True)
    assert peak == 1
    assert any("maximum number of running instances reached" in m for m in caplog.messages)  # fired while busy


def test_a_failing_run_is_logged_and_the_schedule_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    again = threading.Event()

    def failing_run() -> None:
        calls.append(1)
        if len(calls) >= 2:
            again.set()
        raise RuntimeError("boom")

    scheduler = schedule.Scheduler(IntervalTrigger(seconds=0.1, timezone=UTC), failing_run)
    with caplog.at_level(logging.INFO, logger="sftp_connector.schedule"):
        scheduler.start()
        try:
            assert again.wait(2)
        finally:
            scheduler.shutdown(wait=True)
    assert "scheduled run failed" in caplog.messages


@pytest.mark.parametrize(("given", "words"), [
    ({"at": "02:00", "timezone": "Europe/Amsterdam"}, "every day at 02:00 (Europe/Amsterdam)"),
    ({"every_minutes": 15}, "every 15 minutes, counted from 00:00 (UTC)"),
    ({"every_minutes": 0.5, "at": "00:10"}, "every 30 seconds, counted from 00:10 (UTC)"),
    ({"every_minutes": 90}, "every 90 minutes, counted from 00:00 (UTC)"),
    ({"times_per_day": 4, "at": "06:00"}, "4 times a day, 360 minutes apart from 06:00 (UTC)"),
    ({"days_of_week": ["mon", "fri"], "at": "07:30"}, "at 07:30 on Monday and Friday (UTC)"),
    ({"days_of_month": [1, 15, 31]}, "at 00:00 on day 1, 15 and 31 of each month (not in months without it) (UTC)"),
    ({"weekday_of_month": {"week": "last", "day": "sun"}, "at": "23:00"},
     "at 23:00 on the last Sunday of each month (UTC)"),
])
def test_schedule_in_words(given: dict[str, Any], words: str) -> None:
    assert schedule.in_words(models.Schedule.model_validate(given)) == words


def test_first_start_says_so_and_a_stopped_scheduler_names_no_next_run(caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(UTC)
    at = (now + timedelta(minutes=30)).strftime("%H:%M")
    done, release = threading.Event(), threading.Event()
    scheduler: schedule.Scheduler

    def run_now() -> None:
        done.set()
        release.wait(5)  # the daemon is stopped while this run is in hand

    scheduler = schedule.Scheduler(schedule.trigger(models.Schedule(every_minutes=60, at=at), now=now), run_now,
                                   last_run_at=None)
    with caplog.at_level(logging.INFO, logger="sftp_connector.schedule"):
        scheduler.start()
        assert done.wait(2)
        scheduler.shutdown(wait=False)
        release.set()
        time.sleep(0.3)
    assert "first start: running now, then on the schedule" in caplog.messages
    assert not [m for m in caplog.messages if "while the daemon was down" in m or "never" in m], caplog.messages
