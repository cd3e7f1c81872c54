"""Carries out a FeatureFlagSet's decisions: ConfigMap, restarts, status.

Each pass reads the set fresh from the API server, decides with flagops.reconcile.flagset
and writes only what differs, so a pass is idempotent and safe to repeat after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from flagops import conditions as c
from flagops import kube, metrics
from flagops.controller.events import EventRecorder
from flagops.controller.index import RollbackIndex
from flagops.controller.owned import OwnedWatcher
from flagops.models.common import ConditionStatus
from flagops.models.flagset import (
    FeatureFlagSetSpec,
    FeatureFlagSetStatus,
    WorkloadState,
    WorkloadStatus,
)
from flagops.reconcile import flagset as logic
from flagops.reconcile import locks

logger = logging.getLogger(__name__)

# While rollouts run, look again this often even without a watch event (deadlines).
PROGRESS_RECHECK_SECONDS = 5.0

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse_status(raw: dict[str, Any] | None) -> FeatureFlagSetStatus:
    """The recorded status; a status this version cannot read counts as none, not a crash."""
    try:
        return FeatureFlagSetStatus.model_validate(raw or {})
    except ValidationError:
        logger.warning("ignoring an unreadable FeatureFlagSet status: %s", raw)
        return FeatureFlagSetStatus()


def validation_message(err: ValidationError) -> str:
    return "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)
    )


class Rollouts:
    """Rollouts in progress per set in this process: the `flagops_rollouts_in_progress` gauge
    and the `--max-concurrent-restarts` budget (None: no limit). When a set's count drops,
    the sets waiting for a slot are woken at once rather than at their next recheck."""

    def __init__(self, limit: int | None = None, wake: Callable[[str, str], None] | None = None) -> None:
        self.limit = limit
        self._wake = wake
        self._in_progress: dict[tuple[str, str], int] = {}
        self._waiting: set[tuple[str, str]] = set()

    def budget(self, namespace: str, name: str) -> logic.RestartBudget | None:
        if self.limit is None:
            return None
        elsewhere = sum(n for key, n in self._in_progress.items() if key != (namespace, name))
        return logic.RestartBudget(limit=self.limit, elsewhere=elsewhere)

    def record(self, namespace: str, name: str, workloads: list[WorkloadStatus]) -> None:
        key = (namespace, name)
        before = self._in_progress.get(key, 0)
        in_progress = sum(1 for w in workloads if w.state == WorkloadState.PROGRESSING)
        self._in_progress[key] = in_progress
        if any(w.state == WorkloadState.PENDING for w in workloads):
            self._waiting.add(key)
        else:
            self._waiting.discard(key)
        metrics.ROLLOUTS_IN_PROGRESS.set(sum(self._in_progress.values()))
        if in_progress < before:
            self._wake_waiting(key)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._waiting.discard(key)
        if self._in_progress.pop(key, 0):
            self._wake_waiting(key)
        metrics.ROLLOUTS_IN_PROGRESS.set(sum(self._in_progress.values()))

    def _wake_waiting(self, freed_by: tuple[str, str]) -> None:
        if self.limit is None or self._wake is None:
            return
        for namespace, name in sorted(self._waiting - {freed_by}):
            self._wake(namespace, name)


class FlagSetReconciler:
    def __init__(
        self,
        client: kube.Kube,
        recorder: EventRecorder,
        *,
        rollbacks: RollbackIndex,
        rollouts: Rollouts | None = None,
        owned: OwnedWatcher | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._kube = client
        self._events = recorder
        self._rollbacks = rollbacks
        self.rollouts = rollouts or Rollouts()
        self._owned = owned
        self._clock = clock
        # The set as the watch last delivered it, until a pass takes it: that pass needs no GET.
        # Safe because every write of a set's status carries the resourceVersion it was computed
        # from: a stale body fails with a conflict, and the retry reads the set fresh.
        self._delivered: dict[tuple[str, str], dict[str, Any]] = {}
        # A set's status has two writers (this reconciler and the trigger evaluator):
        # both hold the set's lock in this process; resourceVersion guards across processes.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    async def patch_status(
        self, namespace: str, name: str, change: Callable[[FeatureFlagSetStatus], dict[str, Any] | None]
    ) -> bool:
        """Let another writer (the trigger evaluator, give_up) change part of a set's status
        safely: under the set's lock, read it fresh, let `change` compute a status merge patch from its
        status (None: nothing to change), and write it guarded by the resourceVersion.
        Returns False when the set does not exist."""
        async with self.lock(namespace, name):
            body = await self._kube.get(kube.FLAGSETS.path(namespace, name))
            if body is None:
                return False
            patch = change(parse_status(body.get("status")))
            if patch:
                await self._kube.patch_status(kube.FLAGSETS, body, patch)
            return True

    async def give_up(self, namespace: str, name: str, error: str, attempts: int) -> None:
        """After repeated unexpected errors: Degraded with InternalError, saying what failed.
        The next change of the set, or the resync, tries again."""
        message = (
            f"flagops failed {attempts} times in a row on this set: {error}; what it serves is "
            "unchanged since; report the error with the operator's log"
        )
        now = self._clock()

        def degrade(current: FeatureFlagSetStatus) -> dict[str, Any]:
            conds = current.conditions
            for type_, value in ((c.READY, ConditionStatus.FALSE), (c.DEGRADED, ConditionStatus.TRUE)):
                conds = c.set_condition(
                    conds, type_, value, c.INTERNAL_ERROR, message, now=now, generation=None
                )
            return {"conditions": [cond.to_api() for cond in conds]}

        await self.patch_status(namespace, name, degrade)

    def observe(self, body: Mapping[str, Any]) -> None:
        """A watch event's set, for the next pass to read instead of a GET."""
        meta = body.get("metadata") or {}
        # managedFields are a large part of a body and a pass never reads them.
        slim = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        self._delivered[(str(meta.get("namespace")), str(meta.get("name")))] = slim

    def forget(self, namespace: str, name: str) -> None:
        self._delivered.pop((namespace, name), None)
        self.rollouts.forget(namespace, name)
        metrics.forget_flagset(namespace, name)
        lock = self._locks.get((namespace, name))
        if lock is not None and not lock.locked():
            del self._locks[(namespace, name)]

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass; returns seconds until the set wants another look, or None."""
        async with self.lock(namespace, name):
            return await self._reconcile(namespace, name)

    async def _reconcile(self, namespace: str, name: str) -> float | None:
        body = self._delivered.pop((namespace, name), None) or await self._kube.get(
            kube.FLAGSETS.path(namespace, name)
        )
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # the ConfigMap goes with it (ownerReference)
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        now = self._clock()
        previous = parse_status(body.get("status"))

        try:
            spec = FeatureFlagSetSpec.model_validate(body.get("spec") or {})
            logic.validate_windows(spec.rollout.windows)
        except ValidationError as err:
            await self._write_invalid(body, previous, validation_message(err), generation, now)
            return None
        except ValueError as err:
            await self._write_invalid(body, previous, str(err), generation, now)
            return None

        # The locks come from the requests themselves, never from this set's status.
        overrides = locks.overrides(name, spec, self._rollbacks.in_namespace(namespace))
        resolution = logic.resolve(spec, overrides)
        cm_name = spec.config_map or name
        desired = logic.desired_configmap(namespace, name, meta["uid"], cm_name, resolution.values)
        cm_hash: str | None = desired["metadata"]["annotations"][logic.HASH_ANNOTATION]
        conflict, revision = await self._apply_configmap(
            body, desired, previous, spec=spec, resolution=resolution, now=now
        )
        opens_at = None
        if conflict:
            cm_hash = None
            workloads = previous.workloads
        else:
            workloads, opens_at = await self._apply_restarts(body, spec, resolution, previous, now)

        status = logic.build_status(
            generation=generation,
            previous=previous,
            resolution=resolution,
            overrides=[o for o in overrides if o.flag in resolution.values],
            cm_name=cm_name,
            cm_hash=cm_hash,
            cm_conflict=conflict,
            workloads=workloads,
            strategy=spec.rollout.strategy,
            now=now,
            opens_at=opens_at,
            revision=revision,
        )
        await self._write_status(body, status)
        await self._announce(body, previous, status)
        self._record_metrics(namespace, name, status, resolution.on)
        if any(w.state == WorkloadState.PROGRESSING for w in workloads):
            return PROGRESS_RECHECK_SECONDS
        if opens_at is not None:  # look again when the window opens
            return max((opens_at - now).total_seconds(), 0.0) + 0.01
        if any(w.state == WorkloadState.PENDING for w in workloads):
            return PROGRESS_RECHECK_SECONDS
        return None

    def _record_metrics(
        self, namespace: str, name: str, status: FeatureFlagSetStatus, on: dict[str, bool]
    ) -> None:
        held = {o.flag for o in status.overrides}
        enabled = sum(1 for flag in status.effective if on.get(flag) and flag not in held)
        metrics.FLAGS.labels(namespace, name, "enabled").set(enabled)
        metrics.FLAGS.labels(namespace, name, "disabled").set(len(status.effective) - enabled - len(held))
        metrics.FLAGS.labels(namespace, name, "overridden").set(len(held))
        self.rollouts.record(namespace, name, status.workloads)

    async def _apply_configmap(
        self,
        body: dict[str, Any],
        desired: dict[str, Any],
        previous: FeatureFlagSetStatus,
        *,
        spec: FeatureFlagSetSpec,
        resolution: logic.Resolution,
        now: datetime.datetime,
    ) -> tuple[str | None, int | None]:
        """Create or update the set's ConfigMap, recording a revision first when the served
        values change; a conflict message if the ConfigMap is someone else's, and the revision
        now served (None: unchanged)."""
        namespace, cm_name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        path = kube.CONFIGMAPS.path(namespace, cm_name)
        known, seen = self._owned.lookup(namespace, cm_name) if self._owned else (False, None)
        if seen is not None and seen.matches(desired):
            return None, None  # as wanted, as far as the watch has told: nothing to write
        uid = body["metadata"]["uid"]
        if seen is not None and logic.owned_by({"metadata": seen.metadata}, uid):
            # This set's own, as the watch saw it: updated without reading it first.
            update = seen.update_to(desired)
            assert update is not None  # it does not match
            served = await self._update_configmap(
                body, path, update, intact=seen.intact, spec=spec, resolution=resolution, now=now
            )
            return None, served
        existing = None if known and seen is None else await self._kube.get(path)
        revision: int | None = None
        if existing is None:
            revision, existing = await self._create_configmap(
                body, desired, previous, spec=spec, resolution=resolution, now=now
            )
            if existing is None:
                return None, revision
        owned = logic.owned_by(existing, uid)
        adopting = not owned and logic.left_by_predecessor(existing, body["metadata"]["name"])
        if not owned and not adopting:
            owner = next(iter(existing["metadata"].get("ownerReferences") or []), None)
            whose = f"owned by {owner['kind']} {owner['name']}" if owner else "not created by this set"
            return (
                f"ConfigMap {cm_name} already exists and is {whose}; flagops never overwrites it. "
                "Delete or rename that ConfigMap, or set spec.configMap to a free name"
            ), None
        patch = logic.configmap_patch(existing, desired)
        if patch is not None:
            revision = await self._update_configmap(
                body,
                path,
                patch,
                intact=logic.configmap_intact(existing),
                spec=spec,
                resolution=resolution,
                now=now,
            )
        if adopting:
            await self._events.emit(
                body,
                reason="ConfigMapAdopted",
                action="Adopt",
                note=f"Adopted ConfigMap {cm_name}, written by an earlier FeatureFlagSet of this name",
            )
        return None, revision

    async def _update_configmap(
        self,
        body: dict[str, Any],
        path: str,
        patch: dict[str, Any],
        *,
        intact: bool,
        spec: FeatureFlagSetSpec,
        resolution: logic.Resolution,
        now: datetime.datetime,
    ) -> int | None:
        """Patch the ConfigMap, a revision recorded first when its data changes (revisions beyond
        the history limit deleted after, off the path of the change); the revision now served."""
        revision: int | None = None
        stale: list[str] = []
        if patch.get("data"):
            revision, stale = await self._record_revision(body, spec, resolution, now)
        try:
            updated = await self._kube.patch(path, patch)
        except kube.ApiError as err:
            if err.conflict and self._owned:
                namespace, name = body["metadata"]["namespace"], path.rsplit("/", 1)[-1]
                self._owned.forget(namespace, name)  # changed since the watch saw it
            raise
        if self._owned:
            self._owned.remember(updated)
        if patch.get("data") and not intact:
            name = updated["metadata"]["name"]
            await self._drift(body, f"ConfigMap {name} was edited by hand; put the served values back")
        await self._prune(body["metadata"]["namespace"], stale)
        return revision

    async def _prune(self, namespace: str, revisions: list[str]) -> None:
        for stale in revisions:
            with contextlib.suppress(kube.ApiError):
                await self._kube.delete(kube.CONTROLLER_REVISIONS.path(namespace, stale))

    async def _create_configmap(
        self,
        body: dict[str, Any],
        desired: dict[str, Any],
        previous: FeatureFlagSetStatus,
        *,
        spec: FeatureFlagSetSpec,
        resolution: logic.Resolution,
        now: datetime.datetime,
    ) -> tuple[int, dict[str, Any] | None]:
        """Create the ConfigMap, its revision recorded first; the revision, and the ConfigMap
        found in the way if one exists already (not flagops', so not watched; or just made)."""
        namespace, cm_name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        revision, stale = await self._record_revision(
            body, spec, resolution, now, first=previous.revision is None
        )
        try:
            created = await self._kube.create(kube.CONFIGMAPS.path(namespace), desired)
        except kube.ApiError as err:
            existing = (
                await self._kube.get(kube.CONFIGMAPS.path(namespace, cm_name)) if err.conflict else None
            )
            if existing is None:
                raise
            return revision, existing
        if self._owned:
            self._owned.remember(created)
        written = previous.config_map
        if written is not None and written.name == cm_name and written.hash:
            await self._drift(body, f"ConfigMap {cm_name} was deleted; re-created it")
        await self._prune(namespace, stale)
        return revision, None

    async def _record_revision(
        self,
        body: dict[str, Any],
        spec: FeatureFlagSetSpec,
        resolution: logic.Resolution,
        now: datetime.datetime,
        *,
        first: bool = False,
    ) -> tuple[int, list[str]]:
        """Before new values are served: a ControllerRevision for them, unless the latest stored
        one has them already (a pass cut short after recording it). Returns the revision now
        served, and the older ones beyond the set's revisionHistoryLimit, to delete once the
        values are served.

        `first`: the set has recorded no revision yet, as far as its status says; revision 1
        is created without listing first, and only if it exists already (a status wiped, a
        pass cut short, a predecessor's) are the stored ones listed."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if first:
            initial = logic.next_revision(
                namespace=namespace,
                set_name=name,
                set_uid=meta["uid"],
                latest=None,
                number=1,
                values=resolution.values,
                held={flag: o.held_by for flag, o in resolution.held.items()},
                generation=int(meta.get("generation", 0)),
                now=now,
            )
            assert initial is not None
            try:
                await self._kube.create(kube.CONTROLLER_REVISIONS.path(namespace), initial)
            except kube.ApiError as err:
                if not err.conflict:
                    raise
            else:
                return 1, []
        listed = await self._kube.list(
            kube.CONTROLLER_REVISIONS.path(namespace), label_selector=logic.revision_selector(name)
        )
        revisions = logic.stored_revisions(listed, meta["uid"])
        latest = revisions[-1] if revisions else None
        created = logic.next_revision(
            namespace=namespace,
            set_name=name,
            set_uid=meta["uid"],
            latest=latest,
            # Above every listed number: a predecessor's revisions may await garbage collection.
            number=max((int(o.get("revision") or 0) for o in listed), default=0) + 1,
            values=resolution.values,
            held={flag: o.held_by for flag, o in resolution.held.items()},
            generation=int(meta.get("generation", 0)),
            now=now,
        )
        if created is None:
            assert latest is not None
            return latest.number, []
        await self._kube.create(kube.CONTROLLER_REVISIONS.path(namespace), created)
        stale = logic.revisions_to_prune(revisions, keep=spec.revision_history_limit - 1)
        return int(created["revision"]), stale

    async def _drift(
        self,
        body: dict[str, Any],
        note: str,
        *,
        kind: str = "ConfigMap",
        reason: str = "ConfigMapDriftCorrected",
    ) -> None:
        metrics.DRIFT_CORRECTED.labels(kind).inc()
        logger.info("FeatureFlagSet %s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], note)
        await self._events.emit(body, reason=reason, action="Reconcile", note=note, warning=True)

    async def _apply_restarts(
        self,
        body: dict[str, Any],
        spec: FeatureFlagSetSpec,
        resolution: logic.Resolution,
        previous: FeatureFlagSetStatus,
        now: datetime.datetime,
    ) -> tuple[list[WorkloadStatus], datetime.datetime | None]:
        """Restart what is due; the workloads' states, and when the change window opens if
        restarts wait for it."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        targets = logic.workload_targets(spec, resolution.values)
        fetched = await asyncio.gather(
            *(self._kube.get(kube.WORKLOADS[t.kind].path(namespace, t.name)) for t in targets)
        )
        plan = logic.plan_workloads(
            targets,
            {t.key: obj for t, obj in zip(targets, fetched, strict=True)},
            previous.workloads,
            set_name=name,
            strategy=spec.rollout.strategy,
            max_parallel=spec.rollout.max_parallel,
            timeout_seconds=spec.rollout.timeout_seconds,
            now=now,
            budget=self.rollouts.budget(namespace, name),
            held=resolution.held,
            window=logic.window_state(spec.rollout.windows, now),
        )
        # Counted before the first await: another set's pass must see these slots taken.
        self.rollouts.record(namespace, name, plan.statuses)
        statuses = {(str(w.kind), w.name): w for w in plan.statuses}
        # Served values unchanged since the last pass, yet a restart is due: someone removed or
        # edited the annotation; putting it back is a correction, not a flag change.
        before = {
            (str(w.kind), w.name): w.flags_hash for w in previous.workloads if w.state == WorkloadState.READY
        }
        results = await asyncio.gather(
            *(self._restart(body, t, corrects=before.get(t.key) == t.hash) for t in plan.restart),
            return_exceptions=True,
        )
        for target, result in zip(plan.restart, results, strict=True):
            if isinstance(result, kube.ApiError) and result.not_found:
                statuses[target.key] = statuses[target.key].model_copy(
                    update={
                        "state": WorkloadState.MISSING,
                        "restarted_at": None,
                        "message": f"{target.kind} {target.name} disappeared before its restart",
                    }
                )
            elif isinstance(result, BaseException):
                raise result
        return [statuses[t.key] for t in targets], plan.opens_at

    async def _restart(self, body: dict[str, Any], target: logic.WorkloadTarget, *, corrects: bool) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        # A merge patch of two annotations carries no resourceVersion, so it cannot 409.
        await self._kube.patch(
            kube.WORKLOADS[target.kind].path(namespace, target.name), logic.restart_patch(name, target.hash)
        )
        if corrects:
            await self._drift(
                body,
                f"{target.kind} {target.name}: its {logic.HASH_ANNOTATION} annotation was removed or edited; "
                "put it back (its pods roll once more, with the same served flags)",
                kind="Workload",
                reason="WorkloadAnnotationCorrected",
            )
            return
        logger.info(
            "restarting %s %s/%s for flags %s", target.kind, namespace, target.name, ",".join(target.flags)
        )
        await self._events.emit(
            body,
            reason="RestartingWorkload",
            action="Restart",
            note=f"Restarting {target.kind} {target.name}: its flags ({', '.join(target.flags)}) changed",
        )

    async def _write_status(self, body: dict[str, Any], status: FeatureFlagSetStatus) -> None:
        new = status.to_api()
        patch = logic.merge_patch(body.get("status") or {}, new)
        if patch:
            await self._kube.patch_status(kube.FLAGSETS, body, patch)

    async def _write_invalid(
        self,
        body: dict[str, Any],
        previous: FeatureFlagSetStatus,
        message: str,
        generation: int,
        now: datetime.datetime,
    ) -> None:
        conds = previous.conditions
        for type_, value in ((c.READY, ConditionStatus.FALSE), (c.DEGRADED, ConditionStatus.TRUE)):
            conds = c.set_condition(
                conds, type_, value, c.INVALID_SPEC, message, now=now, generation=generation
            )
        conds = c.set_condition(
            conds,
            c.PROGRESSING,
            ConditionStatus.FALSE,
            c.INVALID_SPEC,
            "nothing applied until the spec is fixed",
            now=now,
            generation=generation,
        )
        invalid = previous.model_copy(update={"conditions": conds, "observed_generation": generation})
        await self._write_status(body, invalid)

    async def _announce(
        self, body: dict[str, Any], before: FeatureFlagSetStatus, after: FeatureFlagSetStatus
    ) -> None:
        """An Event when Ready or Degraded changes reason, so `kubectl describe` tells the story."""
        for type_ in (c.DEGRADED, c.READY):
            old, new = c.find(before.conditions, type_), c.find(after.conditions, type_)
            if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
                continue
            if type_ == c.READY and old is None and new.status == ConditionStatus.TRUE:
                continue  # a new set served as written is no news; an Event per set would flood
            if type_ == c.DEGRADED and new.status == ConditionStatus.TRUE:
                await self._events.emit(
                    body, reason=new.reason, note=new.message, action="Reconcile", warning=True
                )
            elif type_ == c.READY and new.status == ConditionStatus.TRUE:
                await self._events.emit(body, reason=new.reason, note=new.message, action="Reconcile")
