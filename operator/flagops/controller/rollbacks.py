"""Carries a RollbackRequest through its phases.

Each pass does one step and records it in status before the next step starts, so a
restarted operator resumes where the last one stopped: the plan is written before
anything changes, overrides are added idempotently (one per flag and request), restarts
follow from hashes (never repeated), and check counters live in status.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from flagops import conditions as c
from flagops import kube, metrics
from flagops.checks import ProbeError, Refused, probes
from flagops.checks import http as http_probe
from flagops.controller.events import EventRecorder
from flagops.controller.flagsets import parse_status, utcnow, validation_message
from flagops.controller.index import RollbackIndex
from flagops.models.checks import Check, TemplateKind
from flagops.models.flagset import FeatureFlagSetSpec, FeatureFlagSetStatus, RolloutStrategy, WorkloadState
from flagops.models.rollback import (
    CheckPhase,
    CheckResult,
    Measurement,
    Phase,
    Plan,
    PlannedCheck,
    PlannedWorkload,
    RollbackRequestSpec,
    RollbackRequestStatus,
    WorkloadResult,
)
from flagops.models.templates import CheckTemplateSpec
from flagops.notify import Notifier
from flagops.reconcile import drills, locks
from flagops.reconcile import flagset as fs
from flagops.reconcile import rollback as logic
from flagops.reconcile import templates as templating
from flagops.reconcile.targets import TargetPolicy

logger = logging.getLogger(__name__)

# While restarts run, look again this often even without a watch event (deadlines).
ROLLOUT_RECHECK_SECONDS = 2.0

Clock = Callable[[], datetime.datetime]


def _escalated(body: dict[str, Any]) -> bool:
    return bool((body["metadata"].get("annotations") or {}).get(logic.ESCALATED_ANNOTATION))


def created(body: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


class Failure(Exception):
    """Ends the request in Failed with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RollbackReconciler:
    def __init__(
        self,
        client: kube.Kube,
        recorder: EventRecorder,
        *,
        enqueue_set: Callable[[str, str], None],
        notifier: Notifier,
        targets: TargetPolicy,
        index: RollbackIndex,
        clock: Clock = utcnow,
    ) -> None:
        self._kube = client
        self.index = index
        self._notifier = notifier
        self._events = recorder
        self._enqueue_set = enqueue_set
        self._clock = clock
        self.prober = http_probe.Prober(targets)
        # Workloads a request waits on: (namespace, kind, name) -> request names.
        self.waiting: dict[tuple[str, str, str], set[str]] = {}
        # The newest body known for a request (its watch event, or this process's own status
        # write), until a pass takes it: a phase's pass follows the last at once, without a GET.
        # Safe as every status write carries the resourceVersion it was computed from.
        self._latest: dict[tuple[str, str], dict[str, Any]] = {}

    def observe(self, body: dict[str, Any]) -> None:
        """A request as the watch delivered it (or as written here)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        known = self._latest.get(key)
        if known is None or kube.newer(
            str(meta.get("resourceVersion") or ""), str(known["metadata"].get("resourceVersion") or "")
        ):
            self._latest[key] = body

    async def close(self) -> None:
        await self.prober.close()

    # -- the pass ------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> float | None:
        body = self._latest.pop((namespace, name), None) or await self._kube.get(
            kube.ROLLBACKS.path(namespace, name)
        )
        if body is None:
            self._unwait(namespace, name)
            return None
        try:
            spec = RollbackRequestSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            status = self._status(body)
            if status.phase and status.phase.terminal:
                return None
            return await self._finish(
                body,
                status,
                Phase.FAILED,
                "InvalidSpec",
                validation_message(err),
            )
        status = self._status(body)
        phase = status.phase or Phase.PENDING
        why, left = logic.escalation_due(spec, status, created(body), _escalated(body), self._clock())
        if why is not None:
            body = await self._escalate(body, status, why)
            status = self._status(body)
        if phase.terminal:
            generation = int(body["metadata"].get("generation", 0))
            observed = status.model_copy(update={"observed_generation": generation})
            if spec.release and (status.locked or locks.held_annotation(body) is not None):
                await self._release(body, spec, observed)
            elif status.observed_generation != generation:
                await self._write(body, observed)  # a review added, or release on an unlocked request
            self._unwait(namespace, name)
            return None
        if spec.abort:
            return await self._abort(body, spec, status, phase)
        step = {
            Phase.PENDING: self._start,
            Phase.AWAITING_APPROVAL: self._await_approval,
            Phase.APPLYING: self._apply,
            Phase.ROLLING_OUT: self._roll_out,
            Phase.VALIDATING: self._validate,
            Phase.RESTORING: self._restore,
        }[phase]
        try:
            again = await step(body, spec, status)
        except Failure as failure:
            return await self._finish(body, status, Phase.FAILED, failure.reason, failure.message)
        if left is None:
            return again
        return left if again is None else min(again, left)  # wake up when the escalation is due

    async def give_up(self, namespace: str, name: str, error: str, attempts: int) -> None:
        """After repeated unexpected errors: Failed with InternalError, saying what failed."""
        body = await self._kube.get(kube.ROLLBACKS.path(namespace, name))
        if body is None:
            return
        status = self._status(body)
        if status.phase and status.phase.terminal:
            return
        held = f"{', '.join(status.applied)} stay held at the safe value (release or delete the request)"
        message = (
            f"flagops failed {attempts} times in a row on this request and stopped: {error}. "
            + (held if status.applied or locks.held_annotation(body) else "nothing was changed")
            + "; create a new request to retry, and report the error with the operator's log"
        )
        await self._finish(body, status, Phase.FAILED, c.INTERNAL_ERROR, message)

    # -- phases --------------------------------------------------------------------------

    async def _start(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus
    ) -> float | None:
        now = self._clock()
        set_spec, set_status = await self._flagset(body, spec)
        held = locks.overrides(
            spec.flag_set, set_spec, self.index.in_namespace(body["metadata"]["namespace"])
        )
        revision = await self._revision(body, spec) if spec.to_revision is not None else None
        namespace = body["metadata"]["namespace"]
        result = logic.plan_rollback(
            spec,
            body["metadata"]["name"],
            set_spec,
            held,
            now,
            revision=revision,
            templates=await self._templates(
                namespace, [*spec.checks, *(k for f in set_spec.flags for k in f.checks)]
            ),
            namespace=namespace,
        )
        if result.error:
            raise Failure(result.error_reason, result.error)
        flags = (
            [change.name for change in result.plan.flags if change.requested]
            if spec.to_revision is not None
            else logic.requested_flags(spec, set_spec)[0]
        )
        scenario, required, why = logic.approval_needed(
            spec, set_spec, set_status, flags, created(body), scheduled_by=drills.scheduled_by(body)
        )
        escalation = set_spec.notifications.escalation
        plan = result.plan.model_copy(
            update={
                "scenario": scenario,
                "approval_required": required,
                "approval_reason": why,
                "escalation_after_seconds": escalation.after_seconds if escalation else None,
            }
        )
        summary = (
            "all"
            if spec.all
            else f"revision {spec.to_revision}"
            if spec.to_revision is not None
            else ",".join(flags)
            if len(flags) <= 3
            else f"{len(flags)} flags"
        )
        status = status.model_copy(update={"plan": plan, "started_at": now, "flags_summary": summary})
        if spec.dry_run:
            message = (
                f"dry run: {len(plan.flags)} flag(s) would change, {len(plan.workloads)} workload(s) "
                f"restart, {len(plan.checks)} check(s) run; nothing was changed"
            )
            return await self._finish(body, status, Phase.PLANNED, c.DRY_RUN, message)
        if required and not spec.approved:
            return await self._save(body, status, Phase.AWAITING_APPROVAL, c.AWAITING_APPROVAL, why)
        status = status.model_copy(
            update={"approved_at": now, "approved_by": spec.approved_by if spec.approved else None}
        )
        return await self._save(
            body, status, Phase.APPLYING, c.APPLYING_OVERRIDES, self._applying_message(status)
        )

    async def _await_approval(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus
    ) -> float | None:
        if not spec.approved:
            return None  # the approval arrives as a spec change, which wakes us
        status = status.model_copy(update={"approved_at": self._clock(), "approved_by": spec.approved_by})
        return await self._save(
            body, status, Phase.APPLYING, c.APPLYING_OVERRIDES, self._applying_message(status)
        )

    def _applying_message(self, status: RollbackRequestStatus) -> str:
        plan = status.plan
        assert plan is not None
        if not plan.flags:
            return f"{', '.join(plan.unchanged)} already at the safe value: holding it, no restart needed"
        return "applying: " + ", ".join(
            f"{f.name} {str(f.from_).lower()} -> {str(f.to).lower()}" for f in plan.flags
        )

    async def _apply(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus
    ) -> float | None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        plan = self._plan(status)
        now = self._clock()
        # Invariants are read before anything changes; if one cannot be read, nothing changes.
        results = {r.name: r for r in status.checks}
        for planned in plan.checks:
            if planned.name in results:
                continue
            check = self._check(planned)
            try:
                baseline = await probes.probe(check).baseline(self._context(body), check)
            except Refused as err:
                raise Failure(err.reason, f"check {check.name}: {err}; nothing was changed") from err
            except ProbeError as err:
                raise Failure(
                    c.BASELINE_UNAVAILABLE,
                    f"check {check.name}: could not read the value before the rollback ({err}); "
                    "nothing was changed",
                ) from err
            results[planned.name] = CheckResult(
                name=check.name, type=check.kind, source=planned.source, baseline=baseline
            )
        status = status.model_copy(update={"checks": [results[p.name] for p in plan.checks]})

        if await self._kube.get(kube.FLAGSETS.path(namespace, spec.flag_set)) is None:
            raise Failure(
                c.FLAG_SET_NOT_FOUND, f"FeatureFlagSet {spec.flag_set} was deleted; nothing applied"
            )
        # The lock goes on the request itself (metadata survives a status wipe or a restore)
        # before the set serves it; the set reads it from there.
        if locks.held_annotation(body) is None:
            body = await self._set_holds(body, locks.holds_value(plan.holds, now))
        self._enqueue_set(namespace, spec.flag_set)
        applied = list(plan.holds)
        status = status.model_copy(update={"applied": applied, "locked": True, "flags_applied_at": now})
        self._wait(namespace, name, plan.workloads)
        message = (
            f"restarting {len(plan.workloads)} workload(s): "
            + ", ".join(f"{w.kind.lower()}/{w.name}" for w in plan.workloads)
            if plan.workloads
            else "no workload restarts for this change"
        )
        return await self._save(body, status, Phase.ROLLING_OUT, c.ROLLING_OUT, message)

    async def _roll_out(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus
    ) -> float | None:
        plan = self._plan(status)
        done, results = await self._rollout_state(body, plan.workloads, to_new=True, status=status)
        status = status.model_copy(update={"workloads": results})
        if not done:
            self._check_rollout_deadline(status, status.flags_applied_at, plan.rollout_timeout_seconds)
            await self._save(body, status, Phase.ROLLING_OUT, c.ROLLING_OUT, self._progress_message(results))
            return ROLLOUT_RECHECK_SECONDS
        now = self._clock()
        self._unwait(body["metadata"]["namespace"], body["metadata"]["name"])
        planned = {p.name: p for p in plan.checks}
        started = []
        for result in status.checks:
            check = self._check(planned[result.name])
            probe = probes.probe(check)
            described, expectation = probe.describe(check)
            target = await probe.start(self._context(body), check) or described
            begun = logic.start_check(result.source, check, now, target=target, expectation=expectation)
            started.append(begun.model_copy(update={"baseline": result.baseline}))
        status = status.model_copy(update={"rollout_completed_at": now, "checks": started})
        message = f"validating: {len(started)} check(s)" if started else "no checks to run"
        return await self._save(body, status, Phase.VALIDATING, c.VALIDATING, message)

    async def _validate(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus
    ) -> float | None:
        checks = {p.name: self._check(p) for p in self._plan(status).checks}
        now = self._clock()
        due = [r for r in status.checks if not r.done and (r.next_at is None or r.next_at <= now)]
        measured = await asyncio.gather(*(self._measure(body, checks[r.name], r) for r in due))
        updated = {r.name: r for r in status.checks}
        for result, measurement in zip(due, measured, strict=True):
            updated[result.name] = logic.record(checks[result.name], result, measurement, self._clock())
        results = [updated[r.name] for r in status.checks]
        status = status.model_copy(update={"checks": results})

        failed = [r for r in results if r.phase == CheckPhase.FAILED]
        if failed:
            detail = "; ".join(f"check {r.name} failed: {r.message}" for r in failed)
            # Refused checks (a target or Secret not allowed) name that reason; anything else fails checks.
            reasons = {r.reason or c.CHECK_FAILED for r in failed}
            return await self._finish(
                body,
                status,
                Phase.FAILED,
                reasons.pop() if len(reasons) == 1 else c.CHECK_FAILED,
                f"{detail}. The flags stay rolled back; investigate before release",
            )
        if all(r.phase == CheckPhase.PASSED for r in results):
            now = self._clock()
            status = status.model_copy(update={"validated_at": now})
            if spec.drill:
                body = await self._remove_overrides(body, spec)
                self._wait(
                    body["metadata"]["namespace"],
                    body["metadata"]["name"],
                    status.plan.workloads if status.plan else [],
                )
                return await self._save(
                    body,
                    status,
                    Phase.RESTORING,
                    c.RESTORING,
                    "drill: validated; restoring the previous values",
                )
            return await self._finish(
                body, status, Phase.SUCCEEDED, c.ROLLBACK_SUCCEEDED, self._success_message(status)
            )
        pending = [r.next_at for r in results if not r.done and r.next_at is not None]
        await self._save(body, status, Phase.VALIDATING, c.VALIDATING, self._checks_message(results))
        if not pending:
            return 1.0
        return max(min((at - self._clock()).total_seconds() for at in pending), 0.05)

    async def _restore(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus
    ) -> float | None:
        plan = self._plan(status)
        if status.locked or locks.held_annotation(body) is not None:
            body = await self._remove_overrides(body, spec)
        done, results = await self._rollout_state(body, plan.workloads, to_new=False, status=status)
        status = status.model_copy(update={"locked": False, "applied": []})
        if not done:
            self._check_rollout_deadline(status, status.validated_at, plan.rollout_timeout_seconds)
            await self._save(
                body, status, Phase.RESTORING, c.RESTORING, "drill: " + self._progress_message(results)
            )
            return ROLLOUT_RECHECK_SECONDS
        self._unwait(body["metadata"]["namespace"], body["metadata"]["name"])
        status = status.model_copy(update={"restored_at": self._clock()})
        return await self._finish(
            body,
            status,
            Phase.SUCCEEDED,
            c.DRILL_SUCCEEDED,
            "drill succeeded: " + self._success_message(status) + "; previous values restored",
        )

    async def _abort(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus, phase: Phase
    ) -> float | None:
        self._unwait(body["metadata"]["namespace"], body["metadata"]["name"])
        if status.applied:
            message = (
                f"aborted during {phase}: {', '.join(status.applied)} already applied and held at the "
                "safe value; set release: true (or delete the request) to lift it"
            )
        else:
            message = f"aborted during {phase}: nothing was changed"
        return await self._finish(body, status, Phase.ABORTED, c.ABORTED, message)

    async def _release(
        self, body: dict[str, Any], spec: RollbackRequestSpec, status: RollbackRequestStatus
    ) -> None:
        released = ", ".join(status.applied) or "its flags"
        status = status.model_copy(update={"locked": False, "applied": []})
        message = f"{status.message}. Released: {released} follow the FeatureFlagSet's spec again"
        # The request says so first; then the lock goes, and the set follows.
        body = await self._write(body, status.model_copy(update={"message": message}))
        await self._remove_overrides(body, spec)
        await self._events.emit(
            body,
            reason="Released",
            action="Release",
            note=f"Lock released: {released} follow the FeatureFlagSet's spec again",
        )

    # -- helpers -------------------------------------------------------------------------

    async def _escalate(
        self, body: dict[str, Any], status: RollbackRequestStatus, why: str
    ) -> dict[str, Any]:
        """Once per request: the annotation first (what survives a wiped status), then status, an
        Event, the metric and the escalation receiver."""
        meta, spec = body["metadata"], body.get("spec") or {}
        now = self._clock()
        text = logic.escalation_text(
            meta["namespace"], meta["name"], status, (now - created(body)).total_seconds()
        )
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = await self._kube.patch(
            kube.ROLLBACKS.path(meta["namespace"], meta["name"]),
            {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": {logic.ESCALATED_ANNOTATION: stamp},
                }
            },
        )
        self.index.upsert(body)
        body = await self._write(body, status.model_copy(update={"escalated_at": now, "escalation": text}))
        metrics.ESCALATIONS.labels(why).inc()
        await self._events.emit(body, reason=c.ESCALATED, action="Escalate", note=text, warning=True)
        self._notifier.send(
            meta["namespace"],
            str(spec.get("flagSet")),
            {
                "text": text,
                "kind": "Escalation",
                "namespace": meta["namespace"],
                "rollbackRequest": meta["name"],
                "flagSet": spec.get("flagSet"),
                "phase": str(status.phase or Phase.PENDING),
                "why": why,
                "runningSeconds": round((now - created(body)).total_seconds(), 1),
                "waitingFor": status.message,
                "incident": spec.get("incident", ""),
                "reason": spec.get("reason", ""),
                "emergency": bool(spec.get("emergency")),
            },
            receiver="escalation",
        )
        logger.warning("RollbackRequest %s/%s escalated: %s", meta["namespace"], meta["name"], text)
        return body

    async def _flagset(
        self, body: dict[str, Any], spec: RollbackRequestSpec
    ) -> tuple[FeatureFlagSetSpec, FeatureFlagSetStatus]:
        namespace = body["metadata"]["namespace"]
        set_body = await self._kube.get(kube.FLAGSETS.path(namespace, spec.flag_set))
        if set_body is None:
            raise Failure(
                c.FLAG_SET_NOT_FOUND,
                f"FeatureFlagSet {spec.flag_set} not found in namespace {namespace}; fix spec.flagSet "
                "in a new request (nothing was changed by this one)",
            )
        try:
            set_spec = FeatureFlagSetSpec.model_validate(set_body.get("spec") or {})
        except ValidationError as err:
            raise Failure(
                c.FLAG_SET_INVALID, f"FeatureFlagSet {spec.flag_set} is invalid: {validation_message(err)}"
            ) from err
        return set_spec, parse_status(set_body.get("status"))

    async def _templates(
        self, namespace: str, checks: list[Check]
    ) -> dict[templating.TemplateKey, CheckTemplateSpec | None]:
        """The templates these checks name, as stored now (None: not found or unreadable)."""
        found: dict[templating.TemplateKey, CheckTemplateSpec | None] = {}
        for check in checks:
            key = templating.key(check)
            if key is None or key in found:
                continue
            kind, name = key
            path = (
                kube.CHECK_TEMPLATES.path(namespace, name)
                if kind == TemplateKind.CHECK_TEMPLATE
                else kube.CLUSTER_CHECK_TEMPLATES.path(None, name)
            )
            obj = await self._kube.get(path)
            try:
                found[key] = CheckTemplateSpec.model_validate(obj["spec"]) if obj else None
            except ValidationError:
                found[key] = None
        return found

    async def _revision(self, body: dict[str, Any], spec: RollbackRequestSpec) -> dict[str, Any]:
        """The served values of the set's revision `toRevision`, from its ControllerRevision
        (only one this very set owns: a predecessor's of the same name does not count)."""
        namespace, number = body["metadata"]["namespace"], int(spec.to_revision or 0)
        set_body = await self._kube.get(kube.FLAGSETS.path(namespace, spec.flag_set))
        name = fs.revision_name(spec.flag_set, number)
        obj = await self._kube.get(kube.CONTROLLER_REVISIONS.path(namespace, name))
        found = fs.stored_revisions([obj] if obj else [], (set_body or {}).get("metadata", {}).get("uid", ""))
        if not found or found[0].number != number:
            raise Failure(
                c.REVISION_NOT_FOUND,
                f"FeatureFlagSet {spec.flag_set} has no revision {number} (its revisions are the "
                f"ControllerRevisions labelled {fs.revision_selector(spec.flag_set)}, the newest "
                "spec.revisionHistoryLimit kept); name one of them in a new request (nothing was changed)",
            )
        return found[0].values

    async def _remove_overrides(self, body: dict[str, Any], spec: RollbackRequestSpec) -> dict[str, Any]:
        if locks.held_annotation(body) is not None:
            body = await self._set_holds(body, None)
        self._enqueue_set(body["metadata"]["namespace"], spec.flag_set)
        return body

    async def _set_holds(self, body: dict[str, Any], value: str | None) -> dict[str, Any]:
        """Write (or, with None, remove) the lock annotation; returns the object as written."""
        meta = body["metadata"]
        written = await self._kube.patch(
            kube.ROLLBACKS.path(meta["namespace"], meta["name"]),
            {"metadata": {"annotations": {locks.HOLDS_ANNOTATION: value}}},
        )
        self.index.upsert(written)  # the set's next pass sees it, whatever the watch's delay
        return written

    def _plan(self, status: RollbackRequestStatus) -> Plan:
        if status.plan is None:
            raise Failure(c.INTERNAL_ERROR, "the request has no plan in its status; create a new request")
        return status.plan

    def _check(self, planned: PlannedCheck) -> Check:
        if planned.spec is None:
            raise Failure(
                c.INTERNAL_ERROR,
                f"check {planned.name} was planned without its spec (an older flagops); create a new request",
            )
        return Check.model_validate(planned.spec)

    async def _current_hashes(self, body: dict[str, Any], *, holding: bool) -> dict[tuple[str, str], str]:
        """The hash each workload of the set is to carry now, with every lock in force. Other
        requests may hold other flags the same workloads read (two triggers firing together),
        so the planned hash is not the only one that serves this request's values; the current
        one does, once this request's own lock is seen in force (`holding`), or seen gone
        (restoring). Otherwise {}: only the planned hash counts."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        set_name = (body.get("spec") or {}).get("flagSet", "")
        set_body = await self._kube.get(kube.FLAGSETS.path(namespace, set_name))
        try:
            set_spec = FeatureFlagSetSpec.model_validate((set_body or {}).get("spec") or {})
        except ValidationError:
            return {}
        if set_body is None or set_spec.rollout.strategy != RolloutStrategy.RESTART:
            return {}
        overrides = locks.overrides(set_name, set_spec, self.index.in_namespace(namespace))
        if any(o.held_by == name for o in overrides) != holding:
            return {}
        values = fs.resolve(set_spec, overrides).values
        return {t.key: t.hash for t in fs.workload_targets(set_spec, values)}

    async def _rollout_state(
        self,
        body: dict[str, Any],
        workloads: list[PlannedWorkload],
        *,
        to_new: bool,
        status: RollbackRequestStatus,
    ) -> tuple[bool, list[WorkloadResult]]:
        namespace = body["metadata"]["namespace"]
        before = {(str(w.kind), w.name): w for w in status.workloads}
        objs = await asyncio.gather(
            *(self._kube.get(kube.WORKLOADS[w.kind].path(namespace, w.name)) for w in workloads)
        )
        planned_hashes = [w.to_hash if to_new else w.from_hash for w in workloads]
        # Only a workload off its planned hash needs the set read, to see whether it carries the
        # hash with every lock in force; usually each is on it, or still on the old one.
        off_plan = any(
            obj is not None and fs.template_annotations(obj).get(fs.HASH_ANNOTATION) != want
            for obj, want in zip(objs, planned_hashes, strict=True)
        )
        current = await self._current_hashes(body, holding=to_new) if off_plan else {}
        results, done = [], True
        for planned, obj in zip(workloads, objs, strict=True):
            prev = before.get((str(planned.kind), planned.name))
            key = (str(planned.kind), planned.name)
            want = {planned.to_hash if to_new else planned.from_hash, current.get(key)}
            if obj is None:
                results.append(
                    WorkloadResult(
                        kind=planned.kind,
                        name=planned.name,
                        state=WorkloadState.MISSING,
                        message="deleted during the rollback; nothing to restart",
                    )
                )
                continue
            if fs.template_annotations(obj).get(fs.HASH_ANNOTATION) not in want:
                done = False
                results.append(
                    WorkloadResult(
                        kind=planned.kind,
                        name=planned.name,
                        state=WorkloadState.PENDING,
                        message="waiting for flagops to restart it",
                    )
                )
                continue
            progress = fs.rollout_progress(planned.kind, obj)
            if progress.failed:
                raise Failure(
                    c.ROLLOUT_FAILED,
                    f"{planned.kind} {planned.name}: {progress.message}; check its pods and events",
                )
            if progress.done:
                ready_at = (
                    prev.ready_at
                    if prev and prev.state == WorkloadState.READY and prev.ready_at
                    else self._clock()
                )
                results.append(
                    WorkloadResult(
                        kind=planned.kind,
                        name=planned.name,
                        state=WorkloadState.READY,
                        message=progress.message,
                        ready_at=ready_at,
                    )
                )
            else:
                done = False
                results.append(
                    WorkloadResult(
                        kind=planned.kind,
                        name=planned.name,
                        state=WorkloadState.PROGRESSING,
                        message=progress.message,
                    )
                )
        return done, results

    def _check_rollout_deadline(
        self, status: RollbackRequestStatus, since: datetime.datetime | None, timeout: int
    ) -> None:
        if since is not None and (self._clock() - since).total_seconds() > timeout:
            late = [
                f"{w.kind.lower()}/{w.name} ({w.message})"
                for w in status.workloads
                if w.state != WorkloadState.READY
            ]
            raise Failure(
                c.ROLLOUT_TIMEOUT,
                f"restarts not complete within rollout.timeoutSeconds={timeout}: "
                f"{', '.join(late)}; check their pods and events",
            )

    async def _measure(self, body: dict[str, Any], check: Check, result: CheckResult) -> Measurement:
        now = self._clock()
        try:
            value, passed, message = await probes.probe(check).measure(self._context(body), check, result)
        except kube.SecretNotUsable as err:
            return Measurement(at=now, passed=False, message=str(err), refused=c.SECRET_NOT_USABLE)
        except Refused as err:
            return Measurement(at=now, passed=False, message=str(err), refused=err.reason)
        except ProbeError as err:
            return Measurement(at=now, passed=False, message=str(err))
        return Measurement(at=now, value=value, passed=passed, message=message)

    def _context(self, body: dict[str, Any]) -> probes.Context:
        return probes.Context(kube=self._kube, prober=self.prober, request=body)

    def _progress_message(self, results: list[WorkloadResult]) -> str:
        waiting = [
            f"{r.kind.lower()}/{r.name}: {r.message}" for r in results if r.state != WorkloadState.READY
        ]
        return "rolling out: " + "; ".join(waiting) if waiting else "restarts complete"

    def _checks_message(self, results: list[CheckResult]) -> str:
        passed = sum(r.phase == CheckPhase.PASSED for r in results)
        running = [f"{r.name} ({r.message or 'waiting'})" for r in results if not r.done]
        return f"validating: {passed}/{len(results)} passed; waiting on " + ", ".join(running)

    def _success_message(self, status: RollbackRequestStatus) -> str:
        plan = status.plan
        flags = ", ".join(f.name for f in plan.flags) if plan and plan.flags else "no flag change"
        if plan and not plan.flags and plan.unchanged:
            return (
                f"{', '.join(plan.unchanged)} already at the safe value (held by another request); "
                "no restart needed; held until release"
            )
        return f"rolled back {flags}; {len(status.checks)} check(s) passed; held until release"

    def _status(self, body: dict[str, Any]) -> RollbackRequestStatus:
        try:
            return RollbackRequestStatus.model_validate(body.get("status") or {})
        except ValidationError:
            logger.warning("ignoring an unreadable RollbackRequest status: %s", body.get("status"))
            return RollbackRequestStatus()

    async def _finish(
        self,
        body: dict[str, Any],
        status: RollbackRequestStatus,
        phase: Phase,
        reason: str,
        message: str,
    ) -> float | None:
        status = status.model_copy(update={"completed_at": self._clock()})
        self._unwait(body["metadata"]["namespace"], body["metadata"]["name"])
        return await self._save(body, status, phase, reason, message)

    async def _save(
        self, body: dict[str, Any], status: RollbackRequestStatus, phase: Phase, reason: str, message: str
    ) -> float | None:
        """Write the phase (and derived conditions and timings); an Event when the phase changes."""
        now = self._clock()
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        detected = (body.get("spec") or {}).get("detectedAt")
        detected_at = datetime.datetime.fromisoformat(detected.replace("Z", "+00:00")) if detected else None
        durations, seconds = logic.timings(status, created(body), detected_at)
        previous_phase = status.phase
        status = status.model_copy(
            update={
                "phase": phase,
                "message": message,
                "observed_generation": generation,
                "durations": durations,
                "seconds": seconds,
            }
        )
        status = status.model_copy(
            update={
                "conditions": logic.phase_conditions(
                    status, phase, reason, message, now=now, generation=generation
                )
            }
        )
        await self._write(body, status)
        if previous_phase != phase:
            self._record_phase_change(body, status, previous_phase)
            warning = phase in (Phase.FAILED, Phase.ABORTED)
            self._events.post(body, reason=reason, action=str(phase), note=message, warning=warning)
            logger.info(
                "RollbackRequest %s/%s: %s -> %s: %s",
                meta["namespace"],
                meta["name"],
                previous_phase or "new",
                phase,
                message,
            )
        return None if phase.terminal or phase == Phase.AWAITING_APPROVAL else 0.0

    def _record_phase_change(
        self, body: dict[str, Any], status: RollbackRequestStatus, previous: str | None
    ) -> None:
        """Metrics and the webhook, once per phase change (after the status write)."""
        meta, spec = body["metadata"], body.get("spec") or {}
        phase = status.phase or Phase.PENDING
        if phase.terminal:
            metrics.ROLLBACKS.labels(str(phase)).inc()
            for stage, value in status.seconds.model_dump(by_alias=False).items():
                if value is not None:
                    metrics.TIME_TO.labels(stage.removeprefix("time_to_")).observe(value)
            for name, value in logic.phase_seconds(status).items():
                metrics.PHASE_SECONDS.labels(name).observe(value)
            if phase == Phase.SUCCEEDED:
                for flag in self._repeated(
                    meta["namespace"], meta["name"], spec.get("flagSet"), status.applied
                ):
                    metrics.REPEAT_ROLLBACKS.labels(meta["namespace"], spec.get("flagSet"), flag).inc()
        flags = [f.name for f in status.plan.flags] if status.plan else []
        self._notifier.send(
            meta["namespace"],
            str(spec.get("flagSet")),
            {
                "text": f"RollbackRequest {meta['namespace']}/{meta['name']} "
                f"({status.flags_summary or 'flags'}): {previous or 'new'} -> {phase}. {status.message}",
                "kind": "RollbackPhaseChanged",
                "namespace": meta["namespace"],
                "rollbackRequest": meta["name"],
                "flagSet": spec.get("flagSet"),
                "phase": str(phase),
                "previousPhase": previous,
                "flags": flags,
                "incident": spec.get("incident", ""),
                "reason": spec.get("reason", ""),
                "emergency": bool(spec.get("emergency")),
                "message": status.message,
                "durations": status.durations.to_api(),
            },
        )

    def _repeated(self, namespace: str, name: str, flagset: Any, flags: list[str]) -> list[str]:
        """Flags of this request that an earlier, succeeded request of the same set rolled back."""
        earlier: set[str] = set()
        for (ns, other), body in self.index.items():
            spec, status = body.get("spec") or {}, body.get("status") or {}
            if (
                ns == namespace
                and other != name
                and spec.get("flagSet") == flagset
                and status.get("phase") == Phase.SUCCEEDED
            ):
                earlier.update(f.get("name") for f in (status.get("plan") or {}).get("flags", []))
                earlier.update(status.get("applied") or [])
        return [flag for flag in flags if flag in earlier]

    async def _write(self, body: dict[str, Any], status: RollbackRequestStatus) -> dict[str, Any]:
        """The one status write (resourceVersion-guarded); returns the object as written."""
        patch = fs.merge_patch(body.get("status") or {}, status.to_api())
        if not patch:
            return body
        written = await self._kube.patch_status(kube.ROLLBACKS, body, patch)
        self.index.upsert(written)
        self.observe(written)
        return written

    def _wait(self, namespace: str, name: str, workloads: list[PlannedWorkload]) -> None:
        for w in workloads:
            self.waiting.setdefault((namespace, str(w.kind), w.name), set()).add(name)

    def forget(self, namespace: str, name: str) -> None:
        """The request is gone."""
        self._latest.pop((namespace, name), None)
        self._unwait(namespace, name)

    def _unwait(self, namespace: str, name: str) -> None:
        for key in [k for k, names in self.waiting.items() if k[0] == namespace and name in names]:
            self.waiting[key].discard(name)
            if not self.waiting[key]:
                del self.waiting[key]
