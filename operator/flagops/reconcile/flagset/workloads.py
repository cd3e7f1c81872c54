"""Which consuming workloads restart, and how far their rollouts are."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flagops.models.flagset import (
    FeatureFlagSetSpec,
    RolloutStrategy,
    WorkloadKind,
    WorkloadState,
    WorkloadStatus,
)
from flagops.reconcile.flagset.common import (
    HASH_ANNOTATION,
    SET_ANNOTATION,
    sha256,
)
from flagops.reconcile.flagset.windows import WindowState

# -- workloads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartBudget:
    """`--max-concurrent-restarts`: at most `limit` rollouts in progress across all sets;
    `elsewhere` are in progress in other sets now."""

    limit: int
    elsewhere: int


@dataclass(frozen=True)
class WorkloadTarget:
    kind: WorkloadKind
    name: str
    flags: tuple[str, ...]
    hash: str

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.kind), self.name)


def workload_targets(spec: FeatureFlagSetSpec, values: Mapping[str, bool]) -> list[WorkloadTarget]:
    """Each consuming workload with the hash over the served values of the flags it reads."""
    consumed: dict[tuple[str, str], set[str]] = {}
    for flag in spec.flags:
        for ref in flag.workloads:
            consumed.setdefault((str(ref.kind), ref.name), set()).add(flag.name)
    return [
        WorkloadTarget(
            kind=WorkloadKind(kind),
            name=name,
            flags=tuple(sorted(flags)),
            hash=sha256({flag: values[flag] for flag in flags}),
        )
        for (kind, name), flags in sorted(consumed.items())
    ]


def template_annotations(workload: Mapping[str, Any]) -> dict[str, str]:
    template = workload.get("spec", {}).get("template", {})
    return dict(template.get("metadata", {}).get("annotations") or {})


def restart_patch(set_name: str, flags_hash: str) -> dict[str, Any]:
    annotations = {HASH_ANNOTATION: flags_hash, SET_ANNOTATION: set_name}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


@dataclass(frozen=True)
class Rollout:
    done: bool
    failed: bool
    message: str


def rollout_progress(kind: WorkloadKind, workload: Mapping[str, Any]) -> Rollout:
    """Whether the workload's controller finished rolling out its current template (the
    same tests as `kubectl rollout status`)."""
    spec, status = workload.get("spec", {}), workload.get("status") or {}
    generation = workload.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return Rollout(False, False, "waiting for the controller to observe the change")
    if kind == WorkloadKind.DEPLOYMENT:
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return Rollout(False, True, f"progress deadline exceeded: {cond.get('message', '')}")
        want = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        if updated < want:
            return Rollout(False, False, f"{updated} of {want} replicas updated")
        if status.get("replicas", 0) > updated:
            return Rollout(
                False, False, f"{status.get('replicas', 0) - updated} old replicas pending termination"
            )
        if status.get("availableReplicas", 0) < updated:
            return Rollout(
                False, False, f"{status.get('availableReplicas', 0)} of {updated} updated replicas available"
            )
        return Rollout(True, False, f"{updated} of {want} replicas updated and available")
    if kind == WorkloadKind.STATEFUL_SET:
        want = spec.get("replicas", 1)
        if status.get("readyReplicas", 0) < want:
            return Rollout(False, False, f"{status.get('readyReplicas', 0)} of {want} replicas ready")
        if status.get("updateRevision") != status.get("currentRevision"):
            return Rollout(False, False, f"{status.get('updatedReplicas', 0)} of {want} replicas updated")
        return Rollout(True, False, f"{want} of {want} replicas updated and ready")
    desired = status.get("desiredNumberScheduled", 0)
    updated = status.get("updatedNumberScheduled", 0)
    if updated < desired:
        return Rollout(False, False, f"{updated} of {desired} pods updated")
    if status.get("numberAvailable", 0) < desired:
        return Rollout(
            False, False, f"{status.get('numberAvailable', 0)} of {desired} updated pods available"
        )
    return Rollout(True, False, f"{desired} of {desired} pods updated and available")


def _workload_status(
    target: WorkloadTarget,
    *,
    state: WorkloadState,
    message: str,
    restarted_at: datetime.datetime | None = None,
    ready_at: datetime.datetime | None = None,
) -> WorkloadStatus:
    return WorkloadStatus(
        kind=target.kind,
        name=target.name,
        flags=list(target.flags),
        flags_hash=target.hash,
        state=state,
        message=message,
        restarted_at=restarted_at,
        ready_at=ready_at,
    )


@dataclass(frozen=True)
class WorkloadPlan:
    statuses: list[WorkloadStatus]
    restart: list[WorkloadTarget]  # patch these now
    opens_at: datetime.datetime | None = None  # restarts wait for the change window opening then


def plan_workloads(
    targets: list[WorkloadTarget],
    observed: Mapping[tuple[str, str], Mapping[str, Any] | None],
    previous: Iterable[WorkloadStatus],
    *,
    set_name: str,
    strategy: RolloutStrategy,
    max_parallel: int,
    timeout_seconds: int,
    now: datetime.datetime,
    budget: RestartBudget | None = None,
    held: Iterable[str] = (),
    window: WindowState | None = None,
) -> WorkloadPlan:
    """Decide, per workload, whether to restart it now and what state it is in.

    A workload restarts when its pod-template hash differs from the target's: an unchanged
    hash means no patch, so an operator restart never restarts anything. At most
    `max_parallel` workloads of the set roll out at once, and, with a `budget`, at most
    `budget.limit` across all sets; the rest wait as Pending. A workload that reads a flag a
    rollback holds (`held`) is not held back by the budget: a rollback never queues behind
    ordinary changes, though its rollouts count against the budget. Nor does it wait for a
    change `window`, outside which other restarts wait.
    """
    before = {(str(w.kind), w.name): w for w in previous}
    statuses: dict[tuple[str, str], WorkloadStatus] = {}
    needs_restart: list[WorkloadTarget] = []
    in_flight = 0

    for target in targets:
        prev = before.get(target.key)
        obj = observed.get(target.key)
        if obj is None:
            statuses[target.key] = _workload_status(
                target,
                state=WorkloadState.MISSING,
                message=f"{target.kind} {target.name} not found in this namespace; create it, or remove it "
                f"from the workloads of {', '.join(target.flags)}",
            )
            continue
        annotations = template_annotations(obj)
        claimed_by = annotations.get(SET_ANNOTATION)
        if claimed_by and claimed_by != set_name:
            statuses[target.key] = _workload_status(
                target,
                state=WorkloadState.CONFLICT,
                message=f"{target.kind} {target.name} already takes its flags from FeatureFlagSet "
                f"{claimed_by}; a workload can follow one set only: move these flags to that set "
                "or drop the workload here",
            )
            continue
        if strategy == RolloutStrategy.NONE:
            statuses[target.key] = _workload_status(
                target, state=WorkloadState.READY, message="rollout.strategy is None: not restarted"
            )
            continue
        if annotations.get(HASH_ANNOTATION) != target.hash:
            needs_restart.append(target)
            continue
        restarted_at = prev.restarted_at if prev and prev.flags_hash == target.hash else None
        progress = rollout_progress(target.kind, obj)
        if progress.done:
            ready_at = prev.ready_at if prev and prev.flags_hash == target.hash and prev.ready_at else now
            statuses[target.key] = _workload_status(
                target,
                state=WorkloadState.READY,
                message=progress.message,
                restarted_at=restarted_at,
                ready_at=ready_at,
            )
        elif progress.failed or (
            restarted_at is not None and (now - restarted_at).total_seconds() > timeout_seconds
        ):
            reason = (
                progress.message
                if progress.failed
                else f"rollout not complete after {timeout_seconds}s ({progress.message})"
            )
            statuses[target.key] = _workload_status(
                target,
                state=WorkloadState.FAILED,
                restarted_at=restarted_at,
                message=f"{reason}; check the workload's pods and events",
            )
        else:
            in_flight += 1
            statuses[target.key] = _workload_status(
                target,
                state=WorkloadState.PROGRESSING,
                message=progress.message,
                restarted_at=restarted_at,
            )

    held = frozenset(held)
    restart: list[WorkloadTarget] = []
    opens_at = None
    for target in needs_restart:
        urgent = not held.isdisjoint(target.flags)
        if window is not None and not window.open and not urgent:
            opens_at = window.opens_at
        waiting = _why_waiting(urgent, in_flight, max_parallel, budget, window)
        if waiting is None:
            in_flight += 1
            restart.append(target)
            statuses[target.key] = _workload_status(
                target, state=WorkloadState.PROGRESSING, message="restart requested", restarted_at=now
            )
        else:
            statuses[target.key] = _workload_status(target, state=WorkloadState.PENDING, message=waiting)
    return WorkloadPlan(statuses=[statuses[t.key] for t in targets], restart=restart, opens_at=opens_at)


def _why_waiting(
    urgent: bool, in_flight: int, max_parallel: int, budget: RestartBudget | None, window: WindowState | None
) -> str | None:
    """Why a restart that is due cannot start now (None: it can). A rollback's (`urgent`)
    waits only for its set's maxParallel."""
    if window is not None and not window.open and not urgent:
        when = f"the next opens at {_iso(window.opens_at)}" if window.opens_at else "none opens within a week"
        return f"waiting for a change window (rollout.windows): {when}"
    if in_flight >= max_parallel:
        return f"waiting for a restart slot (rollout.maxParallel={max_parallel})"
    if budget is not None and not urgent and budget.elsewhere + in_flight >= budget.limit:
        return (
            f"waiting for a restart slot (--max-concurrent-restarts={budget.limit}; "
            f"{budget.elsewhere} rollouts in progress in other FeatureFlagSets)"
        )
    return None


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
