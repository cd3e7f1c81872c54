"""Pure decisions for a RollbackRequest: the plan, the authority matrix, check evaluation,
conditions and timings. flagops.controller.rollbacks carries them out."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from flagops import conditions as c
from flagops.models.checks import (
    MAX_MEASUREMENTS,
    Check,
    Comparison,
    InvariantComparison,
    OnEmpty,
    PrometheusCheck,
)
from flagops.models.common import Condition, ConditionStatus
from flagops.models.flagset import (
    FeatureFlagSetSpec,
    FeatureFlagSetStatus,
    Override,
    RolloutStrategy,
    Scenario,
    type_error,
)
from flagops.models.rollback import (
    CheckPhase,
    CheckResult,
    Durations,
    FlagChange,
    Measurement,
    Phase,
    Plan,
    PlannedCheck,
    PlannedWorkload,
    RollbackRequestSpec,
    RollbackRequestStatus,
    Seconds,
)
from flagops.models.templates import CheckTemplateSpec
from flagops.reconcile import flagset as fs
from flagops.reconcile import templates as templating

# -- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    overrides: list[Override]  # the set's overrides once this request is applied
    checks: list[tuple[str, Check]]  # (source, check), names unique
    error: str | None = None  # what to fix when the request cannot be carried out
    error_reason: str = c.UNKNOWN_FLAG


def requested_flags(spec: RollbackRequestSpec, set_spec: FeatureFlagSetSpec) -> tuple[list[str], list[str]]:
    """(flags to roll back, names that are not flags of the set)."""
    known = [f.name for f in set_spec.flags]
    if spec.all:
        return known, []
    unknown = [name for name in spec.flags if name not in known]
    return [name for name in spec.flags if name in known], unknown


def with_overrides(
    current: Iterable[Override],
    flags: Iterable[str],
    set_spec: FeatureFlagSetSpec,
    holder: str,
    now: datetime.datetime,
    *,
    values: Mapping[str, Any] | None = None,
) -> list[Override]:
    """The set's overrides plus this request's, one per (flag, holder): idempotent. Each flag
    is held at its safe value, or at `values` (a revision's)."""
    target = values if values is not None else {f.name: f.safe for f in set_spec.flags}
    result = list(current)
    held = {(o.flag, o.held_by) for o in result}
    for name in flags:
        if (name, holder) not in held:
            result.append(Override(flag=name, value=target[name], held_by=holder, since=now))
    return result


def revision_targets(
    set_spec: FeatureFlagSetSpec, before: Mapping[str, Any], revision: Mapping[str, Any]
) -> dict[str, Any]:
    """The flags a rollback to `revision` changes, and the values it holds them at: those
    served differently now, still in the set, with a value of their current type."""
    types = {f.name: f.type for f in set_spec.flags}
    return {
        name: value
        for name, value in revision.items()
        if name in types
        and before.get(name) != value
        and type_error(name, "value", types[name], value) is None
    }


def without_overrides(current: Iterable[Override], holder: str) -> list[Override]:
    return [o for o in current if o.held_by != holder]


def plan_rollback(
    spec: RollbackRequestSpec,
    name: str,
    set_spec: FeatureFlagSetSpec,
    held: list[Override],
    now: datetime.datetime,
    *,
    revision: Mapping[str, Any] | None = None,
    templates: Mapping[templating.TemplateKey, CheckTemplateSpec | None] | None = None,
    namespace: str = "",
) -> PlanResult:
    """Everything the later phases need, frozen: flag changes, restarts, resolved checks.
    `held` are the overrides in force (flagops.reconcile.locks), this request's own included;
    `revision` the values of the revision a `toRevision` request goes back to."""
    current = without_overrides(held, name)
    before = fs.resolve(set_spec, current).values
    values = None
    if spec.to_revision is not None:
        values = revision_targets(set_spec, before, revision or {})
        flags, unknown = list(values), list[str]()
    else:
        flags, unknown = requested_flags(spec, set_spec)
    if unknown:
        return PlanResult(
            Plan(),
            [],
            [],
            error=f"{', '.join(unknown)} {'is not a flag' if len(unknown) == 1 else 'are not flags'} of "
            f"FeatureFlagSet {spec.flag_set}; fix the name and create a new request (nothing was changed)",
        )
    if not flags and spec.to_revision is None:
        return PlanResult(Plan(), [], [], error=f"FeatureFlagSet {spec.flag_set} has no flags to roll back")
    overrides = with_overrides(current, flags, set_spec, name, now, values=values)
    after = fs.resolve(set_spec, overrides).values
    changes = [
        FlagChange.model_validate(
            {"name": flag, "from": before[flag], "to": after[flag], "requested": flag in flags}
        )
        for flag in before
        if before[flag] != after[flag]
    ]
    workloads: list[PlannedWorkload] = []
    if set_spec.rollout.strategy == RolloutStrategy.RESTART:
        old = {t.key: t for t in fs.workload_targets(set_spec, before)}
        for target in fs.workload_targets(set_spec, after):
            previous = old[target.key]
            if previous.hash != target.hash:
                changed = [f for f in target.flags if before[f] != after[f]]
                workloads.append(
                    PlannedWorkload(
                        kind=target.kind,
                        name=target.name,
                        flags=changed,
                        from_hash=previous.hash,
                        to_hash=target.hash,
                    )
                )
    try:  # templates filled in before anything changes: a missing one ends the request here
        checks = [
            (
                source,
                templating.resolve(
                    check, (templates or {}).get(templating.key(check) or ("", "")), namespace
                ),
            )
            for source, check in gather_checks(spec, set_spec, flags)
        ]
    except templating.TemplateError as err:
        return PlanResult(Plan(), [], [], error=str(err), error_reason=err.reason)
    plan = Plan(
        flags=changes,
        unchanged=[f for f in flags if before[f] == after[f]],
        workloads=workloads,
        checks=[
            PlannedCheck(name=check.name, type=check.kind, source=source, spec=check.to_api())
            for source, check in checks
        ],
        holds={o.flag: o.value for o in overrides if o.held_by == name},
        rollout_timeout_seconds=set_spec.rollout.timeout_seconds,
    )
    return PlanResult(plan, overrides, checks)


def gather_checks(
    spec: RollbackRequestSpec, set_spec: FeatureFlagSetSpec, flags: list[str]
) -> list[tuple[str, Check]]:
    """The rolled-back flags' checks, then the request's; a repeated name gets a suffix."""
    found: list[tuple[str, Check]] = []
    for flag in set_spec.flags:
        if flag.name in flags:
            found += [(f"flag {flag.name}", check) for check in flag.checks]
    found += [("request", check) for check in spec.checks]
    seen: dict[str, int] = {}
    unique = []
    for source, check in found:
        seen[check.name] = seen.get(check.name, 0) + 1
        name = check.name if seen[check.name] == 1 else f"{check.name}-{seen[check.name]}"[:63]
        unique.append((source, check.model_copy(update={"name": name})))
    return unique


# -- the authority matrix --------------------------------------------------------------------


def scenario(
    spec: RollbackRequestSpec,
    set_status: FeatureFlagSetStatus,
    flags: list[str],
    window_seconds: int,
    created: datetime.datetime,
) -> tuple[Scenario, str]:
    """The authority matrix's row for a request, and why. The admission policy computes the same
    row in CEL (charts/flagops/templates/approval-policy.yaml) to check who initiates."""
    if spec.emergency:
        return Scenario.EMERGENCY, "emergency: true"
    if spec.to_revision is not None:  # as the admission policy counts it: its flags are known later
        return Scenario.MULTI_FLAG, f"to revision {spec.to_revision}"
    if spec.all or len(set(flags)) > 1:
        return Scenario.MULTI_FLAG, "all flags" if spec.all else f"{len(set(flags))} flags"
    window = f"window {format_duration(window_seconds)}"
    changed = {f.name: f.last_changed_at for f in set_status.flags}.get(flags[0])
    if changed is None:
        return Scenario.SINGLE_FLAG_LATE, f"when {flags[0]} last changed is unknown ({window})"
    age = (created - changed).total_seconds()
    row = Scenario.SINGLE_FLAG_IN_WINDOW if age <= window_seconds else Scenario.SINGLE_FLAG_LATE
    return row, f"{flags[0]} last changed {format_duration(age)} before the request ({window})"


def approval_needed(
    spec: RollbackRequestSpec,
    set_spec: FeatureFlagSetSpec,
    set_status: FeatureFlagSetStatus,
    flags: list[str],
    created: datetime.datetime,
    *,
    scheduled_by: str | None = None,
) -> tuple[Scenario, bool, str]:
    """The plan's authority matrix: (scenario, approval required, why). A drill a RollbackDrill
    scheduled was authorized when the drill was admitted (the approval policy lets only someone
    who may initiate, and approve, its scenario create it): it does not wait again."""
    row, why = scenario(spec, set_status, flags, set_spec.approval.window_seconds, created)
    if scheduled_by is not None and spec.drill:
        return (
            row,
            False,
            f"{row}: a drill scheduled by RollbackDrill {scheduled_by}, authorized when it was admitted",
        )
    rule = set_spec.approval.rules.rule(row)
    required = row.needs_approval_by_default if rule.approval_required is None else rule.approval_required
    if required:
        return row, True, f"{row}, {why}: approval needed (spec.approved: true)"
    if row == Scenario.EMERGENCY:
        return (
            row,
            False,
            f"{row}: the approval gate is skipped for an emergency rollback; it is still validated",
        )
    return row, False, f"{row}, {why}: no approval needed"


# -- checks ----------------------------------------------------------------------------------


def start_check(
    source: str, check: Check, now: datetime.datetime, *, target: str = "", expectation: str = ""
) -> CheckResult:
    """A check as validation begins: its first measurement after initialDelaySeconds."""
    return CheckResult(
        name=check.name,
        type=check.kind,
        source=source,
        target=target,
        expectation=expectation,
        phase=CheckPhase.RUNNING,
        started_at=now,
        next_at=now + datetime.timedelta(seconds=check.initial_delay_seconds),
    )


def record(
    check: Check, result: CheckResult, measurement: Measurement | None, now: datetime.datetime
) -> CheckResult:
    """Fold one measurement (None: nothing to measure yet) into the result.

    Passed after `successes` passing measurements in a row; Failed after more than
    `failure_limit` failing ones, or when the deadline passes first. An inconclusive
    measurement (passed None) counts as neither.
    """
    # A Job still running: look again soon, not a whole interval later.
    waiting_on_job = measurement is None or (check.job is not None and measurement.passed is None)
    wait = min(check.interval_seconds, 1) if waiting_on_job else check.interval_seconds
    update: dict[str, object] = {"next_at": now + datetime.timedelta(seconds=wait)}
    if measurement is not None:
        history = [*result.measurements, measurement][-MAX_MEASUREMENTS:]
        successes = result.consecutive_successes + 1 if measurement.passed else 0
        failures = result.failures + (1 if measurement.passed is False else 0)
        update |= {
            "attempts": result.attempts + 1,
            "measurements": history,
            "observed": measurement.value,
            "consecutive_successes": successes,
            "failures": failures,
            "message": measurement.message,
        }
        if measurement.refused is not None:
            update |= {
                "phase": CheckPhase.FAILED,
                "completed_at": now,
                "next_at": None,
                "reason": measurement.refused,
                "message": f"refused ({measurement.refused}): {measurement.message}",
            }
            return result.model_copy(update=update)
        if successes >= check.successes:
            update |= {
                "phase": CheckPhase.PASSED,
                "completed_at": now,
                "next_at": None,
                "message": f"passed: {measurement.message}",
            }
            return result.model_copy(update=update)
        if failures > check.failure_limit:
            update |= {
                "phase": CheckPhase.FAILED,
                "completed_at": now,
                "next_at": None,
                "message": f"failed after {failures} failed measurement(s): {measurement.message}",
            }
            return result.model_copy(update=update)
    started = result.started_at or now
    if (now - started).total_seconds() > check.deadline_seconds:
        last = f" (last: {result.measurements[-1].message})" if result.measurements else ""
        update |= {
            "phase": CheckPhase.FAILED,
            "completed_at": now,
            "next_at": None,
            "message": f"did not pass within its deadline of {format_duration(check.deadline_seconds)}{last}",
        }
    return result.model_copy(update=update)


def compares(comparison: Comparison, value: float, threshold: float) -> bool:
    match comparison:
        case Comparison.LESS_THAN:
            return value < threshold
        case Comparison.LESS_THAN_OR_EQUAL:
            return value <= threshold
        case Comparison.GREATER_THAN:
            return value > threshold
        case Comparison.GREATER_THAN_OR_EQUAL:
            return value >= threshold
    return value == threshold


# The longest value status shows of what a check observed.
MAX_VALUE = 256


def clip(text: str, limit: int = MAX_VALUE) -> str:
    """Status shows what a check extracted, never more than a line of it."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def judge_query(check: PrometheusCheck, values: list[float]) -> tuple[str, bool | None, str]:
    """(observed, passed, message) for a prometheus check's values; None when inconclusive."""
    threshold = float(check.threshold)
    if not values:
        match check.on_empty:
            case OnEmpty.PASS:
                return "empty", True, "empty result: passes (onEmpty: Pass)"
            case OnEmpty.FAIL:
                return "empty", False, "empty result: fails (onEmpty: Fail)"
        return "empty", None, "empty result: waiting (onEmpty: Wait)"
    shown = clip(", ".join(f"{v:g}" for v in values))
    ok = all(compares(check.comparison, v, threshold) for v in values)
    return shown, ok, f"{shown} {'' if ok else 'not '}{check.comparison} {check.threshold}"


def compare_invariant(comparison: InvariantComparison, baseline: str, value: str) -> tuple[bool, str]:
    if comparison == InvariantComparison.UNCHANGED:
        ok = json.loads(baseline) == json.loads(value)
        return ok, f"{value} {'==' if ok else '!='} {baseline} before the rollback"
    try:
        before, after = float(json.loads(baseline)), float(json.loads(value))
    except (TypeError, ValueError):
        return False, f"{comparison} needs numbers; read {baseline} before and {value} after"
    ok = after >= before if comparison == InvariantComparison.NOT_DECREASED else after <= before
    return ok, f"{value} after vs {baseline} before ({comparison}: {'held' if ok else 'broken'})"


# -- phases, conditions, timings -------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """12.4s, 3m05s, 1h02m: readable in a terminal column."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def timings(
    status: RollbackRequestStatus, created: datetime.datetime, detected_at: datetime.datetime | None
) -> tuple[Durations, Seconds]:
    def span(start: datetime.datetime | None, end: datetime.datetime | None) -> float | None:
        if start is None or end is None:
            return None
        return round(max((end - start).total_seconds(), 0.0), 3)

    go_ahead = status.approved_at or status.started_at
    seconds = Seconds(
        time_to_decision=span(detected_at, created),
        time_to_execute=span(go_ahead, status.rollout_completed_at),
        time_to_validate=span(status.rollout_completed_at, status.validated_at),
        time_to_restore=span(status.validated_at, status.restored_at),
        total=span(created, status.completed_at),
    )
    durations = Durations.model_validate(
        {k: format_duration(v) for k, v in seconds.model_dump().items() if v is not None}
    )
    return durations, seconds


def phase_seconds(status: RollbackRequestStatus) -> dict[str, float]:
    """Time spent in each phase that has both ends recorded."""
    spans = {
        "AwaitingApproval": (status.started_at, status.approved_at),
        "Applying": (status.approved_at, status.flags_applied_at),
        "RollingOut": (status.flags_applied_at, status.rollout_completed_at),
        "Validating": (status.rollout_completed_at, status.validated_at),
        "Restoring": (status.validated_at, status.restored_at),
    }
    return {
        phase: max((end - start).total_seconds(), 0.0)
        for phase, (start, end) in spans.items()
        if start is not None and end is not None
    }


def phase_conditions(
    status: RollbackRequestStatus,
    phase: Phase,
    reason: str,
    message: str,
    *,
    now: datetime.datetime,
    generation: int,
) -> list[Condition]:
    """Conditions that follow from the timestamps reached, plus the summary Succeeded."""
    conds = list(status.conditions)

    def put(type_: str, ok: bool | None, why: str, text: str) -> None:
        nonlocal conds
        value = (
            ConditionStatus.UNKNOWN if ok is None else ConditionStatus.TRUE if ok else ConditionStatus.FALSE
        )
        conds = c.set_condition(conds, type_, value, why, text, now=now, generation=generation)

    if phase == Phase.PLANNED:
        put(c.SUCCEEDED, False, "DryRun", "dry run: plan written, nothing changed")
        return conds
    approval_pending = phase == Phase.AWAITING_APPROVAL
    put(
        c.APPROVED,
        status.approved_at is not None if not approval_pending else False,
        "Approved" if status.approved_at else "AwaitingApproval" if approval_pending else "NotYet",
        (status.plan.approval_reason if status.plan else "") or "not evaluated yet",
    )
    put(
        c.FLAGS_APPLIED,
        status.flags_applied_at is not None,
        "OverridesApplied" if status.flags_applied_at else "NotApplied",
        f"held: {', '.join(status.applied)}" if status.applied else "no override applied",
    )
    put(
        c.ROLLED_OUT,
        status.rollout_completed_at is not None,
        "RolloutComplete" if status.rollout_completed_at else "NotRolledOut",
        f"{len(status.workloads)} workload(s) rolled out"
        if status.rollout_completed_at
        else "restarts not complete",
    )
    put(
        c.VALIDATED,
        status.validated_at is not None,
        "ChecksPassed" if status.validated_at else "NotValidated",
        f"{len(status.checks)} check(s) passed" if status.validated_at else "checks not passed",
    )
    if phase == Phase.SUCCEEDED:
        put(c.SUCCEEDED, True, reason, message)
    elif phase.terminal:
        put(c.SUCCEEDED, False, reason, message)
    else:
        put(c.SUCCEEDED, None, reason, message)
    return conds


# -- escalation ------------------------------------------------------------------------------

ESCALATED_ANNOTATION: Final = "flagops.io/escalated-at"


def escalation_due(
    spec: RollbackRequestSpec,
    status: RollbackRequestStatus,
    created: datetime.datetime,
    escalated: bool,
    now: datetime.datetime,
) -> tuple[str | None, float | None]:
    """(why to escalate now, or None; seconds until it would be due, or None). Once per request,
    never for a drill or a dry run: a Failed rollback at once, one still short of Succeeded after
    the set's escalation.afterSeconds."""
    after = status.plan.escalation_after_seconds if status.plan else None
    if escalated or after is None or spec.drill or spec.dry_run:
        return None, None
    if status.phase == Phase.FAILED:
        return "Failed", None
    if status.phase is not None and status.phase.terminal:
        return None, None
    left = after - (now - created).total_seconds()
    return ("Overdue", None) if left <= 0 else (None, left)


def escalation_text(namespace: str, name: str, status: RollbackRequestStatus, ran: float) -> str:
    phase = status.phase or Phase.PENDING
    flags = status.flags_summary or "its flags"
    if phase == Phase.FAILED:
        return (
            f"ESCALATION: RollbackRequest {namespace}/{name} ({flags}) failed after {format_duration(ran)}: "
            f"{status.message}"
        )
    return (
        f"ESCALATION: RollbackRequest {namespace}/{name} ({flags}) has not succeeded after "
        f"{format_duration(ran)}; it is {phase}: {status.message}"
    )
