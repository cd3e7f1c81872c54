"""The RollbackRequests as the watch delivered them: where every set pass reads its locks.

Primed by one LIST before any worker runs (so no pass ever sees "no locks" because the
watch has not caught up yet), kept current by the watch's events and by flagops' own writes,
and listed again at every resync, which also drops a request whose deletion an interrupted
watch never reported. A lock therefore costs a set pass no API request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from flagops import kube

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


def _version(body: dict[str, Any]) -> int:
    raw = str(body.get("metadata", {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else -1


def slim(body: dict[str, Any]) -> dict[str, Any]:
    """What the locks and the repeat-rollback metric need of a request, not its whole status."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    keep = ("name", "namespace", "annotations", "resourceVersion", "creationTimestamp", "deletionTimestamp")
    return {
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": dict(body.get("spec") or {}),
        "status": {
            "phase": status.get("phase"),
            "applied": status.get("applied") or [],
            "plan": {"flags": (status.get("plan") or {}).get("flags") or []},
        },
    }


class RollbackIndex:
    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}

    def upsert(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Keep the newer of what is known and `body`; returns what was known before."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        before = self._bodies.get(key)
        if before is None or _version(body) >= _version(before) or _version(body) < 0:
            self._bodies[key] = slim(body)
        return before

    def remove(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._bodies.pop((namespace, name), None)

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return [body for (ns, _), body in self._bodies.items() if ns == namespace]

    def items(self) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        return list(self._bodies.items())

    async def prime(self, client: kube.Kube, namespaces: Sequence[str]) -> None:
        """LIST every request (of the watched namespaces), replacing what is known; retried until
        it succeeds, since no set may be reconciled without its locks."""
        paths = kube.ROLLBACKS.paths(namespaces)
        while True:
            try:
                listed = [await client.list_versioned(path) for path in paths]
                break
            except kube.ApiError as err:
                logger.warning("listing RollbackRequests: %s; retrying in %.0fs", err, RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)
        scope = set(namespaces)
        seen: set[tuple[str, str]] = set()
        newest = max((int(v) for _, v in listed if v.isdigit()), default=-1)
        for items, _ in listed:
            for body in items:
                self.upsert(body)
                seen.add((body["metadata"]["namespace"], body["metadata"]["name"]))
        for key, body in list(self._bodies.items()):
            in_scope = not scope or key[0] in scope
            # Absent from the list and not written since: deleted while no event said so.
            if in_scope and key not in seen and _version(body) <= newest:
                del self._bodies[key]
