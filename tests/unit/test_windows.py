"""Change windows (rollout.windows): when restarts caused by spec edits may start."""

from __future__ import annotations

import datetime

import pytest

from flagops.models.flagset import ChangeWindow, FeatureFlagSetSpec, RolloutStrategy, WorkloadState
from flagops.reconcile import flagset as logic

UTC = datetime.UTC


def window(start: str, end: str, **extra: object) -> ChangeWindow:
    return ChangeWindow.model_validate({"start": start, "end": end, **extra})


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).astimezone(UTC)


def test_no_windows_means_always_open() -> None:
    assert logic.window_state([], at("2026-11-28T03:00:00+00:00")).open


def test_inside_and_outside_a_daily_window() -> None:
    office = [window("09:00", "17:00")]
    assert logic.window_state(office, at("2026-11-27T09:00:00+00:00")).open  # the start is inside
    assert not logic.window_state(office, at("2026-11-27T17:00:00+00:00")).open  # the end is not
    closed = logic.window_state(office, at("2026-11-27T20:00:00+00:00"))
    assert not closed.open and closed.opens_at == at("2026-11-28T09:00:00+00:00")


def test_days_and_time_zone() -> None:
    weekdays = [window("09:00", "17:00", days=["Monday", "Tuesday"], timeZone="Europe/Berlin")]
    friday_noon = at("2026-11-27T11:00:00+00:00")  # 12:00 in Berlin, a Friday
    state = logic.window_state(weekdays, friday_noon)
    assert not state.open and state.opens_at == at("2026-11-30T09:00:00+01:00")  # Monday, Berlin time


def test_a_window_past_midnight_belongs_to_the_day_it_opens() -> None:
    night = [window("22:00", "02:00", days=["Friday"])]
    assert logic.window_state(night, at("2026-11-28T01:30:00+00:00")).open  # Saturday 01:30
    assert not logic.window_state(night, at("2026-11-29T01:30:00+00:00")).open  # Sunday 01:30


def test_wall_clock_times_follow_daylight_saving_time() -> None:
    morning = [window("09:00", "10:00", timeZone="Europe/Berlin")]
    # The last Sunday of March 2026 Berlin moves from UTC+1 to UTC+2.
    before = logic.window_state(morning, at("2026-03-28T10:00:00+00:00"))
    assert before.opens_at == at("2026-03-29T07:00:00+00:00")  # 09:00 CEST


def test_seconds_are_allowed_for_short_windows() -> None:
    short = [window("12:00:05", "12:00:15")]
    assert logic.window_state(short, at("2026-11-28T12:00:10+00:00")).open
    assert logic.window_state(short, at("2026-11-28T12:00:00+00:00")).opens_at == at(
        "2026-11-28T12:00:05+00:00"
    )


def test_an_unknown_time_zone_says_what_to_fix() -> None:
    with pytest.raises(ValueError, match="timeZone 'Mars/Olympus' is not an IANA time zone"):
        logic.validate_windows([window("09:00", "17:00", timeZone="Mars/Olympus")])


def test_restarts_wait_for_the_window_but_a_rollback_does_not() -> None:
    s = FeatureFlagSetSpec.model_validate(
        {
            "flags": [
                {"name": "A", "workloads": [{"name": "a"}]},
                {"name": "B", "enabled": True, "workloads": [{"name": "b"}]},
            ]
        }
    )
    values = {"A": False, "B": True}
    targets = logic.workload_targets(s, values)
    observed = {
        ("Deployment", n): {"spec": {"template": {"metadata": {"annotations": {}}}}, "metadata": {}}
        for n in "ab"
    }
    opens = at("2026-11-28T09:00:00+00:00")
    result = logic.plan_workloads(
        targets,
        observed,
        [],
        set_name="s",
        strategy=RolloutStrategy.RESTART,
        max_parallel=2,
        timeout_seconds=600,
        now=at("2026-11-28T03:00:00+00:00"),
        held=["A"],
        window=logic.WindowState(open=False, opens_at=opens),
    )
    assert [t.name for t in result.restart] == ["a"]  # A is held by a rollback
    assert result.statuses[1].state == WorkloadState.PENDING
    assert result.statuses[1].message == (
        "waiting for a change window (rollout.windows): the next opens at 2026-11-28T09:00:00Z"
    )
    assert result.opens_at == opens
