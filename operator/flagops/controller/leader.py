"""Leader election with a coordination.k8s.io Lease, as client-go's leaderelection does.

Only the holder of the Lease watches and acts; a second operator waits. The holder renews
the Lease every `renew` seconds; if it cannot for `duration` seconds it stops acting (its
process exits, and Kubernetes restarts it as a candidate). A graceful exit releases the
Lease at once, so the other candidate takes over within one retry period.

Why a Lease and not kopf's peering: peering pauses equal-priority operators (both freeze),
has no fencing, and needs cluster-wide KopfPeering objects; a Lease is the Kubernetes
convention, needs one namespaced object, and its expiry bounds a crashed leader's reign.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
from typing import Any, Final

from flagops import kube

logger = logging.getLogger(__name__)

LEASES: Final = kube.Resource("coordination.k8s.io", "v1", "leases")
_MICRO: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


class LeadershipLost(Exception):
    """The Lease could not be renewed in time, or another candidate holds it."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _parse(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.strptime(value, _MICRO).replace(tzinfo=datetime.UTC)


def own_identity() -> str:
    """This process among the operator's replicas: its pod's name (POD_NAME, from the chart) and
    pid. Not the host name alone: pods on the host network all have the node's."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"


def overdue(lease: dict[str, Any], now: datetime.datetime | None = None) -> float:
    """Seconds since the Lease's holder should have renewed it (negative: not yet due)."""
    spec = lease.get("spec") or {}
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    if renewed is None:
        return float("inf")
    return ((now or _now()) - renewed).total_seconds() - float(spec.get("leaseDurationSeconds") or 0)


def expired(lease: dict[str, Any], now: datetime.datetime | None = None) -> bool:
    """Whether the Lease's holder has not renewed it within its duration."""
    return overdue(lease, now) > 0


class LeaderElector:
    def __init__(
        self,
        client: kube.Kube,
        namespace: str,
        *,
        name: str = "flagops",
        identity: str | None = None,
        duration: float = 15.0,
        renew: float = 2.0,
    ) -> None:
        self._kube = client
        self._namespace = namespace
        self._name = name
        self.identity = identity or own_identity()
        self._duration = duration
        self._renew = renew
        self._last_renewal = 0.0

    async def acquire(self) -> None:
        """Wait until this candidate holds the Lease."""
        announced = False
        while not await self._try():
            if not announced:
                logger.info("waiting for leadership (Lease %s/%s)", self._namespace, self._name)
                announced = True
            await asyncio.sleep(self._renew)
        logger.info(
            "became the leader (Lease %s/%s, identity %s)", self._namespace, self._name, self.identity
        )

    async def hold(self) -> None:
        """Renew until the Lease is lost; then raise LeadershipLost. Runs until cancelled."""
        loop = asyncio.get_running_loop()
        self._last_renewal = loop.time()
        while True:
            await asyncio.sleep(self._renew)
            try:
                held = await self._try()
            except kube.ApiError as err:
                logger.warning("could not renew the Lease: %s", err)
                held = True  # not lost yet: the deadline below decides
            else:
                if not held:
                    raise LeadershipLost(f"Lease {self._namespace}/{self._name} is held by another operator")
                self._last_renewal = loop.time()
            if loop.time() - self._last_renewal > self._duration:
                raise LeadershipLost(
                    f"Lease {self._namespace}/{self._name} not renewed for {self._duration:.0f}s"
                )

    async def release(self) -> None:
        """Give the Lease up (graceful exit), so that another candidate need not wait it out."""
        try:
            lease = await self._kube.get(LEASES.path(self._namespace, self._name))
            if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            await self._kube.request("PUT", LEASES.path(self._namespace, self._name), body=lease)
        except kube.ApiError as err:
            logger.warning("could not release the Lease: %s", err)

    @property
    def name(self) -> str:
        return self._name

    async def _try(self) -> bool:
        """Acquire or renew; True when this candidate holds the Lease afterwards."""
        return await self.claim(await self._kube.get(LEASES.path(self._namespace, self._name)))

    async def claim(self, lease: dict[str, Any] | None) -> bool:
        """Acquire or renew the Lease as last read (None: it does not exist); True when this
        candidate holds it afterwards. The write carries the read's resourceVersion, so a read
        from a LIST is as safe as a GET: a newer holder makes it fail with a conflict."""
        path = LEASES.path(self._namespace, self._name)
        now = _now()
        stamp = now.strftime(_MICRO)
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self._duration),
            "renewTime": stamp,
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": {**spec, "acquireTime": stamp, "leaseTransitions": 0},
            }
            try:
                await self._kube.create(LEASES.path(self._namespace), body)
            except kube.ApiError as err:
                if err.conflict:
                    return False  # another candidate created it first
                raise
            return True
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity") or ""
        if holder and holder != self.identity and not expired(lease, now):
            return False
        if holder != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = {**current, **spec}
        try:
            # PUT with the resourceVersion read above: of two candidates, one wins, one gets 409.
            await self._kube.request("PUT", path, body=lease)
        except kube.ApiError as err:
            if err.conflict:
                return False
            raise
        return True
