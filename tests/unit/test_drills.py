"""Drill schedules (pure), and the drill reconciler against an in-memory API."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

import pytest

from flagops.controller.drills import DrillReconciler
from flagops.controller.events import EventRecorder
from flagops.models.drill import DrillRun, DrillTargets, RollbackDrillSpec
from flagops.reconcile import drills as logic
from tests.fake_kube import FakeKube

UTC = datetime.UTC
T0 = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def spec(**fields: Any) -> RollbackDrillSpec:
    return RollbackDrillSpec.model_validate(
        {"flagSet": "epic21", "flags": ["A"], "owner": "lena", "stage": "21_01a", **fields}
    )


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("30 9 * * mon-fri", T0, datetime.datetime(2026, 11, 30, 8, 30, tzinfo=UTC)),  # Friday noon -> Monday
        ("@daily", T0, datetime.datetime(2026, 11, 27, 23, 0, tzinfo=UTC)),  # midnight in Berlin
        ("0 0 1 */3 *", T0, datetime.datetime(2026, 12, 31, 23, 0, tzinfo=UTC)),  # 1 January, Berlin
        ("*/15 * * * * *", T0, T0 + datetime.timedelta(seconds=15)),
        # Day of month and day of week both restricted: either matches (cron's rule).
        ("0 12 1 * fri", T0 - datetime.timedelta(hours=2), T0 - datetime.timedelta(hours=1)),
    ],
)
def test_cron_times_in_a_time_zone(
    expression: str, after: datetime.datetime, expected: datetime.datetime
) -> None:
    assert logic.Cron.parse(expression).next_after(after, BERLIN) == expected


def test_a_wall_clock_time_that_dst_skips_does_not_run() -> None:
    # 2027-03-28 02:30 does not exist in Berlin: the next run is the day after.
    after = datetime.datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    nxt = logic.Cron.parse("30 2 * * *").next_after(after, BERLIN)
    assert nxt == datetime.datetime(2027, 3, 29, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "has 3 fields"),
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("5-1 * * * *", "runs backwards"),
        ("* * * foo *", "month: 'foo' is not a number or a name"),
        ("*/0 * * * *", "step '0' must be a positive number"),
    ],
)
def test_a_bad_cron_says_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        logic.Cron.parse(expression)


def test_missed_due_times_run_once_the_latest() -> None:
    schedule = logic.Schedule.of(spec(schedule="*/5 * * * * *"))
    assert schedule.due(T0, T0 + datetime.timedelta(seconds=17)) == T0 + datetime.timedelta(seconds=15)
    assert schedule.due(T0, T0 + datetime.timedelta(seconds=4)) is None
    # Missed for a year: still one, and found without walking the year second by second.
    assert schedule.due(T0 - datetime.timedelta(days=365), T0) == T0


def test_a_one_off_drill_is_due_once() -> None:
    schedule = logic.Schedule.of(spec(at=T0.isoformat()))
    assert schedule.due(T0 - datetime.timedelta(hours=1), T0 + datetime.timedelta(seconds=1)) == T0
    assert schedule.due(T0, T0 + datetime.timedelta(days=1)) is None
    assert schedule.next_after(T0) is None


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="not an IANA time zone"):
        logic.Schedule.of(spec(schedule="@daily", timeZone="Mars/Olympus"))


def drill_body() -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackDrill",
        "metadata": {"name": "stage-21-01a", "namespace": "team", "uid": "u-1"},
    }


def test_a_drill_request_is_named_after_its_due_time_and_owned_by_the_drill() -> None:
    request = logic.drill_request(
        drill_body(), spec(schedule="@daily", checks=[{"name": "c", "http": {"url": "http://x/"}}]), T0
    )
    meta = request["metadata"]
    assert meta["name"] == "stage-21-01a-20261127-120000"
    assert meta["labels"] == {logic.DRILL_LABEL: "u-1"}
    assert meta["annotations"] == {logic.SCHEDULED_AT: "2026-11-27T12:00:00Z"}
    assert meta["ownerReferences"][0]["kind"] == "RollbackDrill"
    assert request["spec"]["drill"] is True and request["spec"]["flags"] == ["A"]
    assert request["spec"]["checks"][0]["http"]["url"] == "http://x/"
    assert "stage 21_01a (owner lena" in request["spec"]["reason"]


def finished(seconds: dict[str, float], phase: str = "Succeeded") -> dict[str, Any]:
    return {"phase": phase, "seconds": seconds}


def test_drills_are_held_to_the_plans_targets() -> None:
    targets = DrillTargets()
    assert logic.judge(finished({"timeToExecute": 60, "timeToValidate": 30}), targets) == (
        True,
        "within targets",
    )
    within, why = logic.judge(finished({"timeToExecute": 2000}), targets)
    assert within is False and "execute 2000s > 1800s" in why
    assert logic.judge(finished({}, "Failed"), targets) == (False, "the drill ended Failed")
    assert logic.judge({"phase": "Validating"}, targets) == (None, "")


def run(name: str, minutes: int, phase: str = "Succeeded") -> DrillRun:
    return DrillRun(request=name, scheduled_at=T0 + datetime.timedelta(minutes=minutes), phase=phase)


def test_history_keeps_the_newest_and_never_deletes_one_that_holds_flags() -> None:
    runs = [run("d", 4), run("c", 3), run("b", 2), run("a", 1)]
    assert logic.expired(runs, 2, locked=set()) == ["a", "b"]
    assert logic.expired(runs, 2, locked={"a"}) == ["b"]
    assert logic.expired([run("b", 2, "Validating"), run("a", 1)], 1, set()) == ["a"]


def test_a_pass_decides_one_thing() -> None:
    schedule = logic.Schedule.of(spec(schedule="*/5 * * * * *"))
    later = T0 + datetime.timedelta(seconds=11)
    assert (
        logic.decide(spec(schedule="* * * * *", suspend=True), schedule, [], T0, later).reason == "Suspended"
    )
    busy = logic.decide(spec(schedule="* * * * *"), schedule, [run("x", 0, "Validating")], T0, later)
    assert busy.reason == "DrillRunning" and busy.start is None
    due = logic.decide(spec(schedule="* * * * *"), schedule, [], T0, later)
    assert due.start == T0 + datetime.timedelta(seconds=10)


# -- the reconciler ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime.datetime) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


def put_drill(api: FakeKube, **fields: Any) -> dict[str, Any]:
    body = {
        **drill_body(),
        "spec": {"flagSet": "epic21", "flags": ["A"], "owner": "lena", "stage": "21_01a", **fields},
    }
    body["metadata"] = {k: v for k, v in body["metadata"].items() if k != "uid"}
    return api.put("rollbackdrills", body)


def requests(api: FakeKube) -> list[dict[str, Any]]:
    return [o for (plural, _, _), o in api.objects.items() if plural == "rollbackrequests"]


async def test_a_due_drill_creates_one_request_however_often_it_is_reconciled() -> None:
    api = FakeKube()
    drill = put_drill(api, schedule="*/10 * * * * *")
    created = datetime.datetime.fromisoformat(drill["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    clock = Clock(created + datetime.timedelta(seconds=25))  # two due times passed
    reconciler = DrillReconciler(api, EventRecorder(api, instance="t"), clock=clock)  # type: ignore[arg-type]
    await reconciler.reconcile("team", "stage-21-01a")
    await reconciler.reconcile("team", "stage-21-01a")
    (request,) = requests(api)
    assert logic.scheduled_at(request) == logic.Schedule.of(spec(schedule="*/10 * * * * *")).due(
        created, clock.now
    )
    status = api.obj("rollbackdrills", "team", "stage-21-01a")["status"]  # type: ignore[index]
    assert status["lastRequest"] == request["metadata"]["name"]
    assert status["conditions"][0]["reason"] == "DrillRunning" and status["state"] == "Running"

    # A wiped status does not make the same run again.
    await api.patch(
        "/apis/flagops.io/v1alpha1/namespaces/team/rollbackdrills/stage-21-01a/status", {"status": None}
    )
    await reconciler.reconcile("team", "stage-21-01a")
    assert len(requests(api)) == 1

    # Finished: the next due time runs, and the status says how it went.
    request["status"] = {"phase": "Succeeded", "seconds": {"timeToExecute": 1.0, "timeToValidate": 2.0}}
    api.put("rollbackrequests", request)
    clock.now += datetime.timedelta(seconds=10)
    await reconciler.reconcile("team", "stage-21-01a")
    assert len(requests(api)) == 2
    runs = api.obj("rollbackdrills", "team", "stage-21-01a")["status"]["runs"]  # type: ignore[index]
    assert [r["phase"] for r in runs] == ["Pending", "Succeeded"]
    assert runs[1]["withinTargets"] is True


async def test_a_bad_schedule_is_a_condition_not_a_crash() -> None:
    api = FakeKube()
    put_drill(api, schedule="61 * * * *")
    reconciler = DrillReconciler(api, EventRecorder(api, instance="t"))  # type: ignore[arg-type]
    assert await reconciler.reconcile("team", "stage-21-01a") is None
    status = api.obj("rollbackdrills", "team", "stage-21-01a")["status"]  # type: ignore[index]
    assert status["conditions"][0]["reason"] == status["state"] == "InvalidSchedule"
    assert "minute: 61 is outside 0-59" in status["message"]
    assert requests(api) == []


def test_a_run_is_a_drills_only_when_its_label_and_owner_agree() -> None:
    request = logic.drill_request(drill_body(), spec(schedule="@daily"), T0)
    assert logic.scheduled_by(request) == "stage-21-01a"
    request["metadata"]["labels"][logic.DRILL_LABEL] = "someone-else"
    assert logic.scheduled_by(request) is None
    assert logic.scheduled_by({"metadata": {"labels": {logic.DRILL_LABEL: "u-1"}}}) is None


def test_an_at_without_an_offset_is_wall_clock_time_in_the_drills_zone() -> None:
    schedule = logic.Schedule.of(spec(at="2026-12-07T09:00:00", timeZone="Europe/Berlin"))
    assert schedule.at == datetime.datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
