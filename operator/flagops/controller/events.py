"""Kubernetes Events about flagops' objects (what `kubectl describe` shows under Events).

Posting an Event is best effort: a failure is logged and never fails a reconcile.
Messages must never carry secrets: callers pass names and reasons, not URLs or tokens.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import time
from typing import Any, Final

from flagops import kube

logger = logging.getLogger(__name__)

REPORTING_CONTROLLER: Final = "flagops.io/operator"
NOTE_MAX: Final = 1024


class EventRecorder:
    def __init__(self, client: kube.Kube, *, instance: str | None = None) -> None:
        self._kube = client
        self._instance = instance or socket.gethostname()
        self._posting: set[asyncio.Task[None]] = set()

    def post(
        self, obj: dict[str, Any], *, reason: str, note: str, action: str, warning: bool = False
    ) -> None:
        """emit(), without the caller waiting for the API server (a phase's pass goes on at once);
        `flush` waits for what is still being posted."""
        task = asyncio.create_task(self.emit(obj, reason=reason, note=note, action=action, warning=warning))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def flush(self) -> None:
        await asyncio.gather(*self._posting, return_exceptions=True)

    async def emit(
        self, obj: dict[str, Any], *, reason: str, note: str, action: str, warning: bool = False
    ) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = datetime.datetime.now(datetime.UTC)
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # kubectl's naming: <object>.<unique hex>; generateName would end in "." (invalid).
            "metadata": {"name": f"{meta.get('name', 'flagops')}.{time.time_ns():x}", "namespace": namespace},
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._instance[:128],
            "action": action,
            "reason": reason,
            "note": note[:NOTE_MAX],
            "type": "Warning" if warning else "Normal",
            "regarding": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        try:
            await self._kube.create(kube.EVENTS.path(namespace), event)
        except kube.ApiError as err:
            logger.warning("could not post Event %s for %s/%s: %s", reason, namespace, meta.get("name"), err)
