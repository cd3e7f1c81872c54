"""Pure decisions for a FeatureFlagSet: served values, the ConfigMap, which workloads restart.

Nothing here does I/O: every function takes models and observed objects (plain dicts as the
API server returns them) and returns what should be, so the whole policy is unit-tested
without a cluster. flagops.controller.flagsets carries the decisions out.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from flagops import conditions as c
from flagops.models.common import API_VERSION, Condition, ConditionStatus
from flagops.models.common import GROUP as API_GROUP
from flagops.models.flagset import (
    ApplyTimings,
    ConfigMapStatus,
    FeatureFlagSetSpec,
    FeatureFlagSetStatus,
    FlagStatus,
    Override,
    RolloutStrategy,
    WorkloadKind,
    WorkloadState,
    WorkloadStatus,
)

HASH_ANNOTATION: Final = "flagops.io/flags-hash"
SET_ANNOTATION: Final = "flagops.io/flagset"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "flagops"}
FLAGS_JSON: Final = "flags.json"
FLAGD_JSON: Final = "flagd.json"
FLAGD_SCHEMA: Final = "https://flagd.dev/schema/v0/flags.json"


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, so a hash never depends on layout."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


# -- served values -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """What each flag serves, and why some enabled flags do not."""

    values: dict[str, bool]
    blocked: dict[str, str] = field(default_factory=dict)  # flag -> what to fix
    cycle: tuple[str, ...] = ()
    held: dict[str, Override] = field(default_factory=dict)  # flag -> the override in force


def resolve(spec: FeatureFlagSetSpec, overrides: Iterable[Override] = ()) -> Resolution:
    """Spec values, with overrides in force, then prerequisites applied transitively.

    A flag serves True only when it is on and every flag it requires serves True. A flag in
    a dependency cycle serves False: there is no order in which to enable it safely.
    """
    wanted = {flag.name: flag.enabled for flag in spec.flags}
    held = {o.flag: o for o in overrides if o.flag in wanted}
    for name, override in held.items():
        wanted[name] = override.value
    requires = {flag.name: [r for r in flag.requires if r in wanted] for flag in spec.flags}

    served: dict[str, bool] = {}
    blocked: dict[str, str] = {}
    cycle: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> bool:
        if name in served:
            return served[name]
        if name in visiting:
            loop = visiting[visiting.index(name) :]
            cycle.extend(n for n in loop if n not in cycle)
            return False
        visiting.append(name)
        value = wanted[name]
        for prerequisite in requires[name]:
            ok = visit(prerequisite)
            if value and not ok and name not in blocked:
                blocked[name] = (
                    f"{name} is enabled but requires {prerequisite}, which is disabled; "
                    f"enable {prerequisite} first"
                )
            value = value and ok
        visiting.pop()
        served[name] = value
        return value

    for name in wanted:
        visit(name)
    for name in cycle:
        served[name] = False
        blocked[name] = (
            f"{name} is part of a dependency cycle ({' -> '.join([*cycle, cycle[0]])}); "
            "remove one of the requires"
        )
    return Resolution(values=served, blocked=blocked, cycle=tuple(cycle), held=held)


# -- the ConfigMap -------------------------------------------------------------------------


def flagd_document(values: Mapping[str, bool]) -> dict[str, Any]:
    """The OpenFeature flagd flag-definition format: every flag a boolean with on/off variants."""
    return {
        "$schema": FLAGD_SCHEMA,
        "flags": {
            name: {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "on" if value else "off",
            }
            for name, value in sorted(values.items())
        },
    }


def configmap_data(values: Mapping[str, bool]) -> dict[str, str]:
    data = {name: "true" if value else "false" for name, value in sorted(values.items())}
    data[FLAGS_JSON] = json.dumps(dict(sorted(values.items())), indent=2) + "\n"
    data[FLAGD_JSON] = json.dumps(flagd_document(values), indent=2) + "\n"
    return data


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid, "controller": True}


def desired_configmap(
    namespace: str, set_name: str, set_uid: str, cm_name: str, values: Mapping[str, bool]
) -> dict[str, Any]:
    data = configmap_data(values)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": cm_name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, SET_ANNOTATION: set_name},
            "annotations": {HASH_ANNOTATION: sha256(data)},
            "ownerReferences": [owner_reference("FeatureFlagSet", set_name, set_uid)],
        },
        "data": data,
    }


def configmap_intact(obj: Mapping[str, Any]) -> bool:
    """Whether a ConfigMap's data is still what flagops wrote (its hash annotation says what)."""
    written = (obj.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    return written == sha256(obj.get("data") or {})


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def left_by_predecessor(obj: Mapping[str, Any], set_name: str) -> bool:
    """A ConfigMap flagops wrote for an earlier set of this name (deleted and re-applied, as a
    GitOps prune and re-sync does; or orphaned by its deletion): this set's to adopt, not a
    stranger's. Names are unique in a namespace, so an owner of this name and another uid no
    longer exists."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in MANAGED_BY.items()) or labels.get(SET_ANNOTATION) != set_name:
        return False
    refs = meta.get("ownerReferences") or []
    return all(
        ref.get("kind") == "FeatureFlagSet"
        and str(ref.get("apiVersion", "")).startswith(f"{API_GROUP}/")
        and ref.get("name") == set_name
        for ref in refs
    )


def configmap_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch taking `existing` to `desired` in what flagops owns, or None if equal."""
    patch: dict[str, Any] = {}
    old_data = existing.get("data") or {}
    data_patch: dict[str, Any] = {k: v for k, v in desired["data"].items() if old_data.get(k) != v}
    data_patch.update({k: None for k in old_data if k not in desired["data"]})
    if data_patch:
        patch["data"] = data_patch
    meta: dict[str, Any] = {}
    for part in ("labels", "annotations"):
        have = existing.get("metadata", {}).get(part) or {}
        wanted = desired["metadata"][part]
        changed = {k: v for k, v in wanted.items() if have.get(k) != v}
        if changed:
            meta[part] = changed
    refs = desired["metadata"]["ownerReferences"]
    if (existing.get("metadata", {}).get("ownerReferences") or []) != refs:
        meta["ownerReferences"] = refs  # adoption: a merge patch replaces the whole list
    if meta:
        patch["metadata"] = meta
    return patch or None


# -- workloads -----------------------------------------------------------------------------


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
) -> WorkloadPlan:
    """Decide, per workload, whether to restart it now and what state it is in.

    A workload restarts when its pod-template hash differs from the target's: an unchanged
    hash means no patch, so an operator restart never restarts anything. At most
    `max_parallel` workloads roll out at once; the rest wait as Pending.
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

    restart: list[WorkloadTarget] = []
    for target in needs_restart:
        if in_flight < max_parallel:
            in_flight += 1
            restart.append(target)
            statuses[target.key] = _workload_status(
                target,
                state=WorkloadState.PROGRESSING,
                message="restart requested",
                restarted_at=now,
            )
        else:
            statuses[target.key] = _workload_status(
                target,
                state=WorkloadState.PENDING,
                message=f"waiting for a restart slot (rollout.maxParallel={max_parallel})",
            )
    return WorkloadPlan(statuses=[statuses[t.key] for t in targets], restart=restart)


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
) -> list[Condition]:
    """Degraded, Progressing, Ready and Overridden, from what the pass found."""
    conds = list(previous)

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = c.set_condition(conds, type_, status, reason, message, now=now, generation=generation)

    if found:
        put(c.DEGRADED, ConditionStatus.TRUE, found[0][0], "; ".join(m for _, m in found))
    else:
        put(c.DEGRADED, ConditionStatus.FALSE, c.AS_EXPECTED, "all flags served as specified")

    if cm_conflict:
        put(
            c.PROGRESSING,
            ConditionStatus.FALSE,
            c.CONFIG_MAP_CONFLICT,
            "nothing applied until the conflict is resolved",
        )
    elif progressing:
        names = ", ".join(f"{w.kind.lower()}/{w.name}" for w in progressing)
        put(c.PROGRESSING, ConditionStatus.TRUE, c.ROLLOUT_IN_PROGRESS, f"rolling out: {names}")
    elif strategy == RolloutStrategy.NONE:
        put(
            c.PROGRESSING,
            ConditionStatus.FALSE,
            c.RESTARTS_DISABLED,
            "ConfigMap written; restarts are disabled",
        )
    else:
        put(
            c.PROGRESSING,
            ConditionStatus.FALSE,
            c.ROLLOUT_COMPLETE,
            "every consuming workload runs the served flags",
        )

    if found:
        put(c.READY, ConditionStatus.FALSE, found[0][0], found[0][1])
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
) -> FeatureFlagSetStatus:
    """The full status for what was decided (and written) in this pass."""
    values = resolution.values
    timings = apply_timings(previous, cm_hash, workloads, now)
    conds = set_conditions(
        previous.conditions,
        found=problems(resolution, cm_conflict, workloads),
        progressing=[w for w in workloads if w.state in (WorkloadState.PROGRESSING, WorkloadState.PENDING)],
        cm_conflict=cm_conflict,
        strategy=strategy,
        ready_message=f"{sum(values.values())} of {len(values)} flags enabled, "
        f"served from ConfigMap {cm_name}",
        overrides=overrides,
        now=now,
        generation=generation,
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
        enabled_count=sum(values.values()),
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
