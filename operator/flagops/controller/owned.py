"""Keeps what flagops owns true: its ConfigMaps are watched, and every set is resynced.

The ConfigMaps are watched server-side by label (`app.kubernetes.io/managed-by=flagops`), so
no other ConfigMap's body is ever read. An edited or deleted one wakes its set, whose pass
puts it back. A periodic resync of every set heals whatever an event missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from flagops import kube
from flagops.reconcile import flagset as fs

logger = logging.getLogger(__name__)

SELECTOR = ",".join(f"{k}={v}" for k, v in fs.MANAGED_BY.items())
RETRY_SECONDS = 2.0

# (namespace, set name) -> None: put a set on the queue.
EnqueueSet = Callable[[str, str], None]


class OwnedWatcher:
    def __init__(self, client: kube.Kube, enqueue_set: EnqueueSet, namespaces: Sequence[str]) -> None:
        self._kube = client
        self._enqueue_set = enqueue_set
        self._paths = kube.CONFIGMAPS.paths(namespaces)

    async def run(self) -> None:
        await asyncio.gather(*(self._watch(path) for path in self._paths))

    async def _watch(self, path: str) -> None:
        version = ""
        while True:
            try:
                if not version:
                    # What exists now is reconciled by the sets' own first passes.
                    _, version = await self._kube.list_versioned(path, label_selector=SELECTOR)
                async for kind, obj in self._kube.watch(
                    path, label_selector=SELECTOR, resource_version=version
                ):
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    self._seen(kind, obj)
            except kube.ApiError as err:
                if err.status == 410:  # too old to resume from: list again
                    version = ""
                    continue
                logger.warning(
                    "watching flagops' ConfigMaps (%s): %s; retrying in %.0fs", path, err, RETRY_SECONDS
                )
                await asyncio.sleep(RETRY_SECONDS)

    def _seen(self, kind: str, obj: kube.Body) -> None:
        meta = obj.get("metadata", {})
        owner = (meta.get("labels") or {}).get(fs.SET_ANNOTATION)
        if not owner or kind not in ("MODIFIED", "DELETED"):
            return
        # flagops' own writes keep data and hash together; anything else is drift.
        if kind == "DELETED" or not fs.configmap_intact(obj):
            logger.info(
                "ConfigMap %s/%s %s by someone else: reconciling set %s",
                meta.get("namespace"),
                meta.get("name"),
                kind.lower(),
                owner,
            )
            self._enqueue_set(str(meta.get("namespace")), str(owner))


async def resync(
    every: float,
    sets: Callable[[], Iterable[tuple[str, str]]],
    enqueue_set: EnqueueSet,
    *,
    refresh: Callable[[], Awaitable[None]],
) -> None:
    """Every `every` seconds, `refresh` (the RollbackRequests listed again), then every known set
    gets a pass."""
    while True:
        await asyncio.sleep(every)
        await refresh()
        known = list(sets())
        logger.debug("resync: %d set(s)", len(known))
        for namespace, name in known:
            enqueue_set(namespace, name)
