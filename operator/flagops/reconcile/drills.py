"""Drill schedules: when a RollbackDrill is due, and what it has run so far. Pure.

What a drill has run is read from the RollbackRequests it created (each carries the due time
it ran for, and its name is derived from it), never from the drill's status: a wiped status,
a re-applied drill or an operator restart neither repeats nor skips a run, and a second
create of the same run is refused by the API server as a duplicate name.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from flagops import conditions as c
from flagops.models.common import ConditionStatus
from flagops.models.drill import DrillRun, DrillTargets, RollbackDrillSpec, RollbackDrillStatus
from flagops.reconcile.flagset.configmap import owner_reference

DRILL_LABEL: Final = "flagops.io/drill-uid"
SCHEDULED_AT: Final = "flagops.io/scheduled-at"
TERMINAL: Final = ("Succeeded", "Failed", "Aborted", "Planned")
_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS: Final = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES: Final = {
    "month": {m: i for i, m in enumerate(_MONTHS, 1)},
    "day of week": {d: i for i, d in enumerate(_WEEKDAYS)},
}
# A schedule that never matches (e.g. 30 February) is found out within this many days.
_HORIZON_DAYS: Final = 366 * 5


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    names = _NAMES.get(name, {})
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        else:
            start, _, end = body.partition("-")
            first, last = (_value(v, name, names, low, high) for v in (start, end or start))
            if step_text and not end:
                last = high
            if first > last:
                raise ValueError(f"{name}: range {body!r} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, name: str, names: Mapping[str, int], low: int, high: int) -> int:
    value = names.get(text.lower()) if not text.isdigit() else int(text)
    if value is None:
        raise ValueError(
            f"{name}: {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else "")
        )
    if name == "day of week" and value == 7:
        value = 0  # Sunday, either way
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is outside {low}-{high}")
    return value


@dataclass(frozen=True)
class Cron:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Five fields, six with seconds first, or a macro; ValueError says what is wrong."""
        fields = _MACROS.get(text.strip(), text).split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ValueError(
                f"{text!r} has {len(fields)} fields: give 5 (minute hour day month weekday) or 6"
            )
        second, minute, hour, day, month, weekday = fields
        return cls(
            seconds=_field(second, "second", 0, 59),
            minutes=_field(minute, "minute", 0, 59),
            hours=_field(hour, "hour", 0, 23),
            days=_field(day, "day of month", 1, 31),
            months=_field(month, "month", 1, 12),
            weekdays=_field(weekday, "day of week", 0, 7),
            any_day=day == "*",
            any_weekday=weekday == "*",
        )

    def _day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        in_days, in_weekdays = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        # Cron's rule: with both restricted, either one matches.
        if not self.any_day and not self.any_weekday:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def times(self, after: datetime.datetime, zone: datetime.tzinfo) -> Iterable[datetime.datetime]:
        """Every matching time strictly after `after`, in order, as aware UTC datetimes. Wall-clock
        times a DST change skips do not run; repeated ones run once."""
        local = after.astimezone(zone)
        day = local.date()
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        for second in sorted(self.seconds):
                            wall = datetime.datetime.combine(day, datetime.time(hour, minute, second))
                            moment = wall.replace(tzinfo=zone)
                            if moment.astimezone(datetime.UTC).astimezone(zone).replace(tzinfo=None) != wall:
                                continue  # skipped by a DST change
                            utc = moment.astimezone(datetime.UTC)
                            if utc > after:
                                yield utc
            day += datetime.timedelta(days=1)

    def next_after(self, after: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime | None:
        return next(iter(self.times(after, zone)), None)


@dataclass(frozen=True)
class Schedule:
    cron: Cron | None
    at: datetime.datetime | None
    zone: datetime.tzinfo

    @classmethod
    def of(cls, spec: RollbackDrillSpec) -> Schedule:
        try:
            zone: datetime.tzinfo = zoneinfo.ZoneInfo(spec.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(
                f"timeZone {spec.time_zone!r} is not an IANA time zone (e.g. Europe/Berlin)"
            ) from err
        cron = Cron.parse(spec.schedule) if spec.schedule else None
        at = spec.at
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=zone)  # a wall-clock time in the drill's time zone
        return cls(cron=cron, at=at, zone=zone)

    def next_after(self, after: datetime.datetime) -> datetime.datetime | None:
        if self.cron is not None:
            return self.cron.next_after(after, self.zone)
        return self.at if self.at is not None and self.at > after else None

    def due(self, after: datetime.datetime, now: datetime.datetime) -> datetime.datetime | None:
        """The latest due time in (after, now]: one run however many were missed."""
        if self.cron is None:
            return self.at if self.at is not None and after < self.at <= now else None
        # Only the latest due time matters: look back an hour first, further only if need be, so
        # a dense schedule missed for long is not walked from its start.
        for hours in (1, 24, 32 * 24, 366 * 24, _HORIZON_DAYS * 24):
            start = max(after, now - datetime.timedelta(hours=hours))
            latest = None
            for moment in self.cron.times(start, self.zone):
                if moment > now:
                    break
                latest = moment
            if latest is not None or start == after:
                return latest
        return None


def scheduled_by(request: Mapping[str, Any]) -> str | None:
    """The RollbackDrill that created this request: its label and its controller owner agree."""
    meta = request.get("metadata") or {}
    uid = (meta.get("labels") or {}).get(DRILL_LABEL)
    for owner in meta.get("ownerReferences") or []:
        if uid and owner.get("kind") == "RollbackDrill" and owner.get("uid") == uid:
            return str(owner.get("name"))
    return None


def request_name(drill: str, slot: datetime.datetime) -> str:
    """Derived from the due time: a second create of the same run is a duplicate."""
    suffix = slot.astimezone(datetime.UTC).strftime("-%Y%m%d-%H%M%S")
    return drill[: 253 - len(suffix)].rstrip("-.") + suffix


def scheduled_at(request: Mapping[str, Any]) -> datetime.datetime | None:
    raw = (request.get("metadata", {}).get("annotations") or {}).get(SCHEDULED_AT)
    try:
        return datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None


def drill_request(
    drill: Mapping[str, Any], spec: RollbackDrillSpec, slot: datetime.datetime
) -> dict[str, Any]:
    meta = drill["metadata"]
    body: dict[str, Any] = {"flagSet": spec.flag_set, "drill": True}
    if spec.all:
        body["all"] = True
    else:
        body["flags"] = list(spec.flags)
    if spec.emergency:
        body["emergency"] = True
    if spec.checks:
        body["checks"] = [check.to_api() for check in spec.checks]
    reason = f"scheduled drill of stage {spec.stage} (owner {spec.owner}, RollbackDrill {meta['name']})"
    body["reason"] = (f"{spec.reason}; " if spec.reason else "") + reason
    body["reason"] = body["reason"][:1024]
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {
            "name": request_name(meta["name"], slot),
            "namespace": meta["namespace"],
            "labels": {DRILL_LABEL: meta["uid"]},
            "annotations": {SCHEDULED_AT: slot.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "ownerReferences": [owner_reference("RollbackDrill", meta["name"], meta["uid"])],
        },
        "spec": body,
    }


def judge(status: Mapping[str, Any], targets: DrillTargets) -> tuple[bool | None, str]:
    """A finished drill against the plan's targets: (within them, why)."""
    phase = status.get("phase")
    if phase not in TERMINAL:
        return None, ""
    if phase != "Succeeded":
        return False, f"the drill ended {phase}"
    seconds = status.get("seconds") or {}
    missed = [
        f"{label} {seconds[key]:.0f}s > {limit}s"
        for label, key, limit in (
            ("decision", "timeToDecision", targets.decision_seconds),
            ("execute", "timeToExecute", targets.execute_seconds),
            ("validate", "timeToValidate", targets.validate_seconds),
        )
        if seconds.get(key) is not None and seconds[key] > limit
    ]
    if missed:
        return False, "missed targets: " + ", ".join(missed)
    return True, "within targets"


def runs(requests: Iterable[Mapping[str, Any]], targets: DrillTargets) -> list[DrillRun]:
    """The drill's runs, newest first."""
    found = []
    for request in requests:
        slot = scheduled_at(request)
        if slot is None:
            continue
        status = request.get("status") or {}
        seconds = status.get("seconds") or {}
        within, message = judge(status, targets)
        found.append(
            DrillRun(
                request=request["metadata"]["name"],
                scheduled_at=slot,
                phase=status.get("phase") or "Pending",
                completed_at=status.get("completedAt"),
                decision_seconds=seconds.get("timeToDecision"),
                execute_seconds=seconds.get("timeToExecute"),
                validate_seconds=seconds.get("timeToValidate"),
                within_targets=within,
                message=message or status.get("message", ""),
            )
        )
    return sorted(found, key=lambda run: run.scheduled_at, reverse=True)


def result(run: DrillRun) -> str:
    """The last run in one word, for the table: its phase, or MissedTargets."""
    if run.phase == "Succeeded" and run.within_targets is False:
        return "MissedTargets"
    return run.phase


def expired(all_runs: list[DrillRun], limit: int, locked: set[str]) -> list[str]:
    """Finished runs beyond the history limit (oldest first), never one that still holds flags."""
    finished = [run for run in all_runs if run.phase in TERMINAL and run.request not in locked]
    keep = {run.request for run in all_runs[:limit]}
    return [run.request for run in reversed(finished) if run.request not in keep]


@dataclass(frozen=True)
class Decision:
    """What a pass does: start a run for `start` (a due time), or nothing; and why."""

    reason: str
    message: str
    start: datetime.datetime | None = None


def decide(
    spec: RollbackDrillSpec,
    schedule: Schedule,
    past: list[DrillRun],
    created: datetime.datetime,
    now: datetime.datetime,
) -> Decision:
    if spec.suspend:
        return Decision(c.SUSPENDED, "suspend: true; no drill runs until it is false")
    active = [run for run in past if run.phase not in TERMINAL]
    if active:
        return Decision(c.DRILL_RUNNING, f"drill {active[0].request} is {active[0].phase}")
    last = max((run.scheduled_at for run in past), default=created)
    due = schedule.due(last, now)
    if due is not None:
        return Decision(c.DRILL_RUNNING, f"drill started for {when(due)}", start=due)
    return Decision(c.DRILL_DUE, "")


def drill_status(
    old: RollbackDrillStatus,
    *,
    spec: RollbackDrillSpec,
    schedule: Schedule,
    decision: Decision,
    current: list[DrillRun],
    created: datetime.datetime,
    now: datetime.datetime,
    generation: int,
) -> RollbackDrillStatus:
    """The status a pass writes: next and last run, the runs kept, and the Scheduled condition."""
    last = current[0] if current else None
    next_at = None if spec.suspend else schedule.next_after(max(now, last.scheduled_at if last else created))
    reason, message = decision.reason, decision.message
    if reason == c.DRILL_DUE:
        if next_at is None:
            reason = c.NO_MORE_RUNS
            message = (
                "the one-off drill has run" if spec.at and last else "the schedule has no further due time"
            )
        else:
            message = f"next drill {when(next_at)}"
    scheduled = ConditionStatus.TRUE if reason in (c.DRILL_DUE, c.DRILL_RUNNING) else ConditionStatus.FALSE
    if spec.suspend:
        state = "Suspended"
    elif reason == c.DRILL_RUNNING:
        state = "Running"
    else:
        state = result(last) if last else "Scheduled"
    return old.model_copy(
        update={
            "observed_generation": generation,
            "state": state,
            "next_run_at": next_at,
            "last_run_at": last.scheduled_at if last else None,
            "last_request": last.request if last else None,
            "last_result": result(last) if last else None,
            "runs": current[: spec.history_limit],
            "message": message,
            "conditions": c.set_condition(
                old.conditions, c.SCHEDULED, scheduled, reason, message, now=now, generation=generation
            ),
        }
    )


def invalid_status(
    old: RollbackDrillStatus, message: str, now: datetime.datetime, generation: int
) -> RollbackDrillStatus:
    conditions = c.set_condition(
        old.conditions,
        c.SCHEDULED,
        ConditionStatus.FALSE,
        c.INVALID_SCHEDULE,
        message,
        now=now,
        generation=generation,
    )
    return old.model_copy(
        update={
            "observed_generation": generation,
            "message": message,
            "conditions": conditions,
            "next_run_at": None,
            "state": c.INVALID_SCHEDULE,
        }
    )


def when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
