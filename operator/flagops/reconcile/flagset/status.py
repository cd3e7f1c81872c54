"""A set's status, from what a pass decided and found."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from flagops import conditions as c
from flagops.models.common import Condition, ConditionStatus
from flagops.models.flagset import (
    ApplyTimings,
    ConfigMapStatus,
    FeatureFlagSetStatus,
    FlagStatus,
    Override,
    RolloutStrategy,
    WorkloadState,
    WorkloadStatus,
)
from flagops.reconcile.flagset.values import Resolution

# -- status --------------------------------------------------------------------------------


def flag_statuses(
    values: Mapping[str, bool], previous: Iterable[FlagStatus], now: datetime.datetime
) -> list[FlagStatus]:
    before = {f.name: f for f in previous}
    result = []
    for name, value in values.items():
        prev = before.get(name)
        changed_at = prev.last_changed_at if prev is not None and prev.value == value else now
        result.append(FlagStatus(name=name, value=value, last_changed_at=changed_at))
    return result


def apply_timings(
    previous: FeatureFlagSetStatus,
    cm_hash: str | None,
    workloads: list[WorkloadStatus],
    now: datetime.datetime,
) -> ApplyTimings:
    """Timings of the last apply: a new one starts whenever the served data changes."""
    timings = previous.last_apply or ApplyTimings()
    prev_hash = previous.config_map.hash if previous.config_map else ""
    if cm_hash and cm_hash != prev_hash:
        timings = ApplyTimings(started_at=now, config_map_written_at=now, config_map_seconds=0.0)
    settling = any(w.state in (WorkloadState.PROGRESSING, WorkloadState.PENDING) for w in workloads)
    if timings.started_at and not settling and timings.rollouts_completed_at is None and cm_hash:
        done = max(max((w.ready_at for w in workloads if w.ready_at), default=now), timings.started_at)
        seconds = round((done - timings.started_at).total_seconds(), 3)
        timings = timings.model_copy(update={"rollouts_completed_at": done, "rollout_seconds": seconds})
    return timings


def problems(
    resolution: Resolution, cm_conflict: str | None, workloads: list[WorkloadStatus]
) -> list[tuple[str, str]]:
    """What keeps the set from serving its spec, as (reason, message to act on), worst first."""
    found: list[tuple[str, str]] = []
    if cm_conflict:
        found.append((c.CONFIG_MAP_CONFLICT, cm_conflict))
    by_state = {WorkloadState.MISSING: c.WORKLOAD_MISSING, WorkloadState.CONFLICT: c.WORKLOAD_CONFLICT}
    found += [(by_state[w.state], w.message) for w in workloads if w.state in by_state]
    found += [
        (c.ROLLOUT_FAILED, f"{w.kind} {w.name}: {w.message}")
        for w in workloads
        if w.state == WorkloadState.FAILED
    ]
    if resolution.cycle:
        found.append((c.DEPENDENCY_CYCLE, resolution.blocked[resolution.cycle[0]]))
    found += [
        (c.PREREQUISITE_DISABLED, why)
        for name, why in resolution.blocked.items()
        if name not in resolution.cycle
    ]
    return found


def _progressing(
    cm_conflict: str | None,
    progressing: list[WorkloadStatus],
    strategy: RolloutStrategy,
    window_message: str | None,
) -> tuple[ConditionStatus, str, str]:
    if cm_conflict:
        return ConditionStatus.FALSE, c.CONFIG_MAP_CONFLICT, "nothing applied until the conflict is resolved"
    names = ", ".join(f"{w.kind.lower()}/{w.name}" for w in progressing)
    if window_message:
        return ConditionStatus.TRUE, c.WAITING_FOR_WINDOW, f"{names}: {window_message}"
    if progressing:
        return ConditionStatus.TRUE, c.ROLLOUT_IN_PROGRESS, f"rolling out: {names}"
    if strategy == RolloutStrategy.NONE:
        return ConditionStatus.FALSE, c.RESTARTS_DISABLED, "ConfigMap written; restarts are disabled"
    return ConditionStatus.FALSE, c.ROLLOUT_COMPLETE, "every consuming workload runs the served flags"


def set_conditions(
    previous: list[Condition],
    *,
    found: list[tuple[str, str]],
    progressing: list[WorkloadStatus],
    cm_conflict: str | None,
    strategy: RolloutStrategy,
    ready_message: str,
    overrides: list[Override],
    now: datetime.datetime,
    generation: int,
    opens_at: datetime.datetime | None = None,
) -> list[Condition]:
    """Degraded, Progressing, Ready and Overridden, from what the pass found."""
    conds = list(previous)

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = c.set_condition(conds, type_, status, reason, message, now=now, generation=generation)

    window_message = None
    if progressing and opens_at is not None and all(w.state == WorkloadState.PENDING for w in progressing):
        # Only restarts that wait for a change window are left: say when it opens.
        window_message = (
            "restarts wait for the next change window (rollout.windows), at "
            f"{opens_at.astimezone(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}; "
            "the ConfigMap already serves the new values"
        )
    if found:
        put(c.DEGRADED, ConditionStatus.TRUE, found[0][0], "; ".join(m for _, m in found))
    else:
        put(c.DEGRADED, ConditionStatus.FALSE, c.AS_EXPECTED, "all flags served as specified")
    put(c.PROGRESSING, *_progressing(cm_conflict, progressing, strategy, window_message))

    if found:
        put(c.READY, ConditionStatus.FALSE, found[0][0], found[0][1])
    elif window_message:
        put(c.READY, ConditionStatus.FALSE, c.WAITING_FOR_WINDOW, window_message)
    elif progressing:
        put(c.READY, ConditionStatus.FALSE, c.ROLLOUT_IN_PROGRESS, "waiting for workloads to roll out")
    else:
        put(c.READY, ConditionStatus.TRUE, c.APPLIED, ready_message)

    if overrides:
        held = "; ".join(
            f"{o.flag} held at {str(o.value).lower()} by RollbackRequest {o.held_by}" for o in overrides
        )
        message = (
            f"{held}. The spec's value takes effect again once the request is released (spec.release: true) "
            "or deleted"
        )
        put(c.OVERRIDDEN, ConditionStatus.TRUE, c.HELD_BY_ROLLBACK, message)
    else:
        put(c.OVERRIDDEN, ConditionStatus.FALSE, c.NO_OVERRIDES, "no flag is held by a rollback")
    return conds


def build_status(
    *,
    generation: int,
    previous: FeatureFlagSetStatus,
    resolution: Resolution,
    overrides: list[Override],
    cm_name: str,
    cm_hash: str | None,
    cm_conflict: str | None,
    workloads: list[WorkloadStatus],
    strategy: RolloutStrategy,
    now: datetime.datetime,
    opens_at: datetime.datetime | None = None,
    revision: int | None = None,
) -> FeatureFlagSetStatus:
    """The full status for what was decided (and written) in this pass; `revision` when this
    pass recorded or found the revision of new served values."""
    values = resolution.values
    timings = apply_timings(previous, cm_hash, workloads, now)
    conds = set_conditions(
        previous.conditions,
        found=problems(resolution, cm_conflict, workloads),
        progressing=[w for w in workloads if w.state in (WorkloadState.PROGRESSING, WorkloadState.PENDING)],
        cm_conflict=cm_conflict,
        strategy=strategy,
        ready_message=f"{sum(resolution.on.values())} of {len(values)} flags enabled, "
        f"served from ConfigMap {cm_name}",
        overrides=overrides,
        now=now,
        generation=generation,
        opens_at=opens_at,
    )
    prev_hash = previous.config_map.hash if previous.config_map else ""
    return FeatureFlagSetStatus(
        observed_generation=generation,
        conditions=conds,
        effective=dict(values),
        overrides=overrides,
        config_map=ConfigMapStatus(name=cm_name, hash=cm_hash or prev_hash),
        workloads=workloads,
        flags=flag_statuses(values, previous.flags, now),
        last_apply=timings if timings.started_at else None,
        triggers=previous.triggers,  # written by the trigger evaluator
        flag_count=len(values),
        enabled_count=sum(resolution.on.values()),
        revision=revision if revision is not None else previous.revision,
        override_count=len(overrides),
    )


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch from `old` to `new` (None values delete keys); {} if equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = (
                merge_patch(old[key], value)
                if isinstance(value, dict) and isinstance(old[key], dict)
                else value
            )
    return patch
