"""The controller: a work queue fed by kopf's watch events, drained by a few workers.

kopf watches (and re-lists after disconnects); its handlers only enqueue keys. Workers
run the reconcilers, which read objects fresh, so a burst of events for one object costs
one pass, and a pass that fails is retried with backoff instead of being lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flagops import kube, metrics
from flagops.controller.drills import DrillReconciler
from flagops.controller.events import EventRecorder
from flagops.controller.flagsets import FlagSetReconciler, Rollouts
from flagops.controller.index import RollbackIndex
from flagops.controller.owned import OwnedWatcher, resync
from flagops.controller.queue import WorkQueue
from flagops.controller.rollbacks import RollbackReconciler
from flagops.controller.triggers import TriggerEvaluator
from flagops.notify import Notifier
from flagops.reconcile.targets import TargetPolicy

logger = logging.getLogger(__name__)

KeyKind = Literal["FeatureFlagSet", "RollbackRequest", "RollbackDrill", "Triggers"]
# Unexpected errors (not the API server's) in a row before a pass gives up (about 15 s of backoff).
MAX_UNEXPECTED_FAILURES = 5


@dataclass(frozen=True)
class Key:
    kind: KeyKind
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass
class WorkloadIndex:
    """Which sets consume which workloads, so a workload's event wakes its sets."""

    _by_set: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)

    def update(self, namespace: str, set_name: str, spec: Any) -> None:
        refs: set[tuple[str, str]] = set()
        flags = spec.get("flags") if isinstance(spec, dict) else None
        for flag in flags if isinstance(flags, list) else []:
            for ref in (flag.get("workloads") or []) if isinstance(flag, dict) else []:
                if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                    refs.add((str(ref.get("kind") or "Deployment"), ref["name"]))
        self._by_set[(namespace, set_name)] = refs

    def remove(self, namespace: str, set_name: str) -> None:
        self._by_set.pop((namespace, set_name), None)

    def sets_for(self, namespace: str, kind: str, name: str) -> list[str]:
        return [s for (ns, s), refs in self._by_set.items() if ns == namespace and (kind, name) in refs]

    def sets(self) -> list[tuple[str, str]]:
        """Every set seen on the watch, as (namespace, name)."""
        return list(self._by_set)


@dataclass(frozen=True)
class Settings:
    """How the controller runs (`flagops run` options)."""

    targets: TargetPolicy = field(default_factory=TargetPolicy)
    workers: int = 4
    namespaces: tuple[str, ...] = ()  # empty: all
    resync_seconds: float = 600.0  # 0: never
    max_concurrent_restarts: int | None = None  # rollouts in progress across all sets; None: no limit


class Controller:
    def __init__(self, client: kube.Kube, settings: Settings) -> None:
        self.kube = client
        self.settings = settings
        self.queue: WorkQueue[Key] = WorkQueue()
        self.events = EventRecorder(client)
        self.notifier = Notifier(client)
        self.rollback_index = RollbackIndex()
        self.owned = OwnedWatcher(client, self.enqueue_set, settings.namespaces)
        self.flagsets = FlagSetReconciler(
            client,
            self.events,
            rollbacks=self.rollback_index,
            rollouts=Rollouts(settings.max_concurrent_restarts, wake=self.enqueue_set),
            owned=self.owned,
        )
        self.rollbacks = RollbackReconciler(
            client,
            self.events,
            enqueue_set=self.enqueue_set,
            notifier=self.notifier,
            targets=settings.targets,
            index=self.rollback_index,
        )
        self.drills = DrillReconciler(client, self.events)
        self.triggers = TriggerEvaluator(
            client, self.events, self.flagsets, self.rollbacks.prober, self.notifier
        )
        self.workloads = WorkloadIndex()
        # With shards, whether this replica acts on a namespace now (see controller/shards.py).
        self.owns: Callable[[str], bool] = lambda _namespace: True
        # Every object on the watches, acted on here or not: a shard taken over gets a pass
        # for each of its objects without listing them again.
        self._known: set[Key] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def track(self, key: Key, *, deleted: bool = False) -> None:
        """An object's watch event (its own key): remembered for a shard takeover."""
        if deleted:
            self._known.discard(key)
        else:
            self._known.add(key)

    def enqueue(self, key: Key) -> None:
        if self.owns(key.namespace):
            self.queue.add(key)

    def ensure(self, key: Key) -> None:
        if self.owns(key.namespace):
            self.queue.ensure(key)

    def enqueue_set(self, namespace: str, name: str) -> None:
        self.enqueue(Key("FeatureFlagSet", namespace, name))

    def enqueue_where(self, in_scope: Callable[[str], bool]) -> None:
        """A pass for every known object in the namespaces `in_scope` accepts (a shard taken)."""
        for key in list(self._known):
            if not in_scope(key.namespace):
                continue
            if key.kind == "Triggers":
                self.ensure(key)
            else:
                self.enqueue(key)

    async def drain(self, in_scope: Callable[[str], bool]) -> None:
        """Until no pass runs in the namespaces `in_scope` accepts (a shard given up; new passes
        there are no longer started, see `owns`)."""
        while any(in_scope(key.namespace) for key in self.queue.processing):
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        # No set is reconciled before its locks are known.
        await self._list_rollbacks()
        self._tasks = [
            asyncio.create_task(self._worker(i), name=f"flagops-worker-{i}")
            for i in range(self.settings.workers)
        ]
        self._tasks.append(asyncio.create_task(self.owned.run(), name="flagops-owned-configmaps"))
        if self.settings.resync_seconds > 0:
            self._tasks.append(
                asyncio.create_task(
                    resync(
                        self.settings.resync_seconds,
                        self.workloads.sets,
                        self.enqueue_set,
                        refresh=self._list_rollbacks,
                    ),
                    name="flagops-resync",
                )
            )
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def _list_rollbacks(self) -> None:
        await self.rollback_index.prime(self.kube, self.settings.namespaces)

    async def stop(self) -> None:
        """Cancel the workers; a reconcile in flight is cut short and redone after a restart."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.queue.close()
        await self.events.flush()
        await self.rollbacks.close()
        await self.notifier.close()

    async def _worker(self, number: int) -> None:
        while True:
            key = await self.queue.get()
            if not self.owns(key.namespace):  # queued before its shard went to another replica
                self.queue.done(key)
                continue
            started = time.monotonic()
            try:
                again = await self._reconcile(key)
            except kube.ApiError as err:
                metrics.RECONCILE_ERRORS.labels(key.kind).inc()
                delay = self.queue.failed(key)
                level = logging.INFO if err.conflict else logging.WARNING
                logger.log(level, "%s: %s; retrying in %.1fs", key, err, delay)
            except Exception as err:
                metrics.RECONCILE_ERRORS.labels(key.kind).inc()
                if self.queue.failures(key) + 1 >= MAX_UNEXPECTED_FAILURES:
                    logger.exception(
                        "%s: reconcile failed %d times in a row; giving up", key, MAX_UNEXPECTED_FAILURES
                    )
                    self.queue.succeeded(key)
                    await self._give_up(key, err)
                else:
                    delay = self.queue.failed(key)
                    logger.exception("%s: reconcile failed; retrying in %.1fs", key, delay)
            else:
                self.queue.succeeded(key)
                if again is not None:
                    self.queue.add_after(key, again)
            finally:
                metrics.RECONCILES.labels(key.kind).inc()
                metrics.RECONCILE_SECONDS.labels(key.kind).observe(time.monotonic() - started)
                self.queue.done(key)
                logger.debug("%s reconciled by worker %d in %.3fs", key, number, time.monotonic() - started)

    async def _give_up(self, key: Key, err: Exception) -> None:
        """Never a silent retry loop: the object says what failed, and a metric counts it."""
        metrics.INTERNAL_ERRORS.labels(key.kind).inc()
        what = f"{type(err).__name__}: {err}"[:500]
        try:
            match key.kind:
                case "FeatureFlagSet":
                    await self.flagsets.give_up(key.namespace, key.name, what, MAX_UNEXPECTED_FAILURES)
                case "RollbackRequest":
                    await self.rollbacks.give_up(key.namespace, key.name, what, MAX_UNEXPECTED_FAILURES)
        except Exception:
            logger.exception("%s: could not record the internal error", key)

    async def _reconcile(self, key: Key) -> float | None:
        match key.kind:
            case "FeatureFlagSet":
                return await self.flagsets.reconcile(key.namespace, key.name)
            case "RollbackRequest":
                return await self.rollbacks.reconcile(key.namespace, key.name)
            case "RollbackDrill":
                return await self.drills.reconcile(key.namespace, key.name)
            case "Triggers":
                return await self.triggers.evaluate(key.namespace, key.name)
        raise AssertionError(key)
