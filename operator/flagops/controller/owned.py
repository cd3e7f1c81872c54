"""Keeps what flagops owns true: its ConfigMaps are watched, and every set is resynced.

The ConfigMaps are watched server-side by label (`app.kubernetes.io/managed-by=flagops`), so
no other ConfigMap's body is ever read. An edited or deleted one wakes its set, whose pass
puts it back. A periodic resync of every set heals whatever an event missed.

The watch also keeps a fingerprint of each ConfigMap (`Seen`): a pass that finds its
ConfigMap as it wants it, or absent, needs no GET. Only the fingerprint, not the body: a
pass that changes a ConfigMap reads it fresh first, and 10,000 bodies would cost more memory
than the GETs they save.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flagops import kube
from flagops.reconcile import flagset as fs

logger = logging.getLogger(__name__)

SELECTOR = ",".join(f"{k}={v}" for k, v in fs.MANAGED_BY.items())
RETRY_SECONDS = 2.0

# (namespace, set name) -> None: put a set on the queue.
EnqueueSet = Callable[[str, str], None]


@dataclass(frozen=True)
class Seen:
    """What a pass needs to know about a ConfigMap without reading it: its metadata flagops
    compares, and a digest of its data."""

    resource_version: str
    metadata: dict[str, Any]
    data_digest: str
    keys: frozenset[str]  # of its data
    intact: bool  # its data is what its hash annotation says flagops wrote

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Seen:
        meta = obj.get("metadata") or {}
        return cls(
            resource_version=str(meta.get("resourceVersion") or ""),
            metadata={k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta},
            data_digest=fs.sha256(obj.get("data") or {}),
            keys=frozenset(obj.get("data") or {}),
            intact=fs.configmap_intact(obj),
        )

    def update_to(self, desired: Mapping[str, Any]) -> dict[str, Any] | None:
        """A merge patch taking the ConfigMap as seen to `desired`, guarded by the resourceVersion
        seen (a ConfigMap changed since fails with a conflict): every desired value, the keys no
        longer desired removed. None if nothing differs."""
        data = desired["data"]
        unchanged = self.data_digest == fs.sha256(data)
        old = {"metadata": self.metadata, "data": data if unchanged else dict.fromkeys(self.keys)}
        patch = fs.configmap_patch(old, desired)
        if patch is None:
            return None
        patch.setdefault("metadata", {})["resourceVersion"] = self.resource_version
        return patch

    def matches(self, desired: Mapping[str, Any]) -> bool:
        """Whether writing `desired` would change nothing (fs.configmap_patch finds no change)."""
        if self.data_digest != fs.sha256(desired["data"]):
            return False
        return fs.configmap_patch({"metadata": self.metadata, "data": desired["data"]}, desired) is None


class OwnedWatcher:
    def __init__(self, client: kube.Kube, enqueue_set: EnqueueSet, namespaces: Sequence[str]) -> None:
        self._kube = client
        self._enqueue_set = enqueue_set
        self._paths = kube.CONFIGMAPS.paths(namespaces)
        # Watched namespace (None: all) -> its path; a path is in _listed once its LIST is in.
        self._scopes: dict[str | None, str] = (
            dict(zip(namespaces, self._paths, strict=True)) if namespaces else {None: self._paths[0]}
        )
        self._listed: set[str] = set()
        self._seen_by_path: dict[str, dict[tuple[str, str], Seen]] = {path: {} for path in self._paths}

    def lookup(self, namespace: str, name: str) -> tuple[bool, Seen | None]:
        """(known, what was seen): known is False until the namespace's LIST is in; then a
        None means no ConfigMap of flagops' by that name exists, as far as the watch has told."""
        path = self._scopes.get(namespace) or self._scopes.get(None)
        if path is None or path not in self._listed:
            return False, None
        return True, self._seen_by_path[path].get((namespace, name))

    def remember(self, obj: Mapping[str, Any]) -> None:
        """A ConfigMap as flagops' own write left it (ahead of the watch event)."""
        meta = obj.get("metadata") or {}
        path = self._scopes.get(meta.get("namespace")) or self._scopes.get(None)
        if path is not None:
            self._store(path, obj)

    def forget(self, namespace: str, name: str) -> None:
        """What was seen is stale (a write guarded by it conflicted): the next pass reads afresh."""
        path = self._scopes.get(namespace) or self._scopes.get(None)
        if path is not None:
            self._seen_by_path[path].pop((namespace, name), None)

    def _store(self, path: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        cached = self._seen_by_path[path].get(key)
        seen = Seen.of(obj)
        if cached is None or kube.newer(seen.resource_version, cached.resource_version):
            self._seen_by_path[path][key] = seen

    async def run(self) -> None:
        await asyncio.gather(*(self._watch(path) for path in self._paths))

    async def relist(self, path: str) -> str:
        """What exists now (reconciled by the sets' own first passes); the version to watch from."""
        items, version = await self._kube.list_versioned(path, label_selector=SELECTOR)
        self._seen_by_path[path] = {}
        for item in items:
            self._store(path, item)
        self._listed.add(path)
        return version

    async def _watch(self, path: str) -> None:
        version = ""
        while True:
            try:
                if not version:
                    version = await self.relist(path)
                async for kind, obj in self._kube.watch(
                    path, label_selector=SELECTOR, resource_version=version
                ):
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind == "DELETED":
                        meta = obj.get("metadata", {})
                        self._seen_by_path[path].pop(
                            (str(meta.get("namespace")), str(meta.get("name"))), None
                        )
                    elif kind in ("ADDED", "MODIFIED"):
                        self._store(path, obj)
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
