"""Shards: replicas split the namespaces between them, each shard behind its own Lease.

With `--shards N`, every namespace hashes to one of N shards (reconcile/shards.py). Each
replica announces itself with a member Lease (`flagops-member-...`); from the live members
every replica computes the same balanced assignment, takes the shards assigned to it when
their Lease (`flagops-shard-I`) is free or expired, and gives up a shard no longer its own
only once its passes in that shard have ended. So a new replica gets its share within a few
renewals, and a dead one's shards move when its Leases expire (`duration`), without a
restart. A replica acts on a namespace only while it holds the shard's Lease; one that cannot
renew a Lease it holds within the duration stops (its process exits, as with the single
Lease), before any other replica may take the shard over.

Argo CD's application-controller shards the same way in spirit (a stable hash, a replica per
shard); its heartbeats live in a ConfigMap, ours in Leases, which carry the expiry and the
compare-and-swap that make a takeover safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from flagops import kube, metrics
from flagops.controller.leader import LEASES, LeaderElector, LeadershipLost, expired, overdue
from flagops.reconcile.shards import assign, shard_of

logger = logging.getLogger(__name__)

MEMBER_PREFIX: Final = "flagops-member-"
SHARD_PREFIX: Final = "flagops-shard-"
# A member Lease left by a replica that died is deleted once it has been expired this long.
STALE_MEMBER_SECONDS: Final = 600.0


class Shards:
    """This replica's view of the shards; `owns` answers whether it may act on a namespace."""

    def __init__(
        self,
        client: kube.Kube,
        namespace: str,
        count: int,
        *,
        identity: str,
        acquired: Callable[[int], None],
        drain: Callable[[int], Coroutine[Any, Any, None]],
        duration: float = 15.0,
        renew: float = 2.0,
    ) -> None:
        self.count = count
        self.identity = identity
        self._kube = client
        self._namespace = namespace
        self._acquired = acquired
        self._drain = drain
        self._duration = duration
        self._renew = renew
        member = f"{MEMBER_PREFIX}{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
        self._member = self._lease(member)
        self._shards = [self._lease(f"{SHARD_PREFIX}{i}") for i in range(count)]
        self.owned: set[int] = set()
        # Shards being given up: no new work is taken, the Lease is kept until the passes end.
        self._leaving: dict[int, asyncio.Task[None]] = {}
        self._renewed: dict[int, float] = {}

    def _lease(self, name: str) -> LeaderElector:
        return LeaderElector(
            self._kube,
            self._namespace,
            name=name,
            identity=self.identity,
            duration=self._duration,
            renew=self._renew,
        )

    def shard(self, namespace: str) -> int:
        return shard_of(namespace, self.count)

    def owns(self, namespace: str) -> bool:
        return shard_of(namespace, self.count) in self.owned

    async def run(self) -> None:
        """Announce, take and renew shards every `renew` seconds until cancelled; raises
        LeadershipLost when a held shard could not be renewed in time or was taken."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._round()
            except kube.ApiError as err:
                logger.warning("could not renew the shard Leases: %s", err)
            for shard in self.owned | set(self._leaving):
                if loop.time() - self._renewed[shard] > self._duration:
                    raise LeadershipLost(
                        f"Lease {self._namespace}/{SHARD_PREFIX}{shard} not renewed for {self._duration:.0f}s"
                    )
            await asyncio.sleep(self._renew)

    async def _round(self) -> None:
        # One LIST per round reads every Lease; each write carries what it read (claim()).
        leases = {
            lease["metadata"]["name"]: lease
            for lease in await self._kube.list(LEASES.path(self._namespace))
            if str(lease.get("metadata", {}).get("name", "")).startswith((MEMBER_PREFIX, SHARD_PREFIX))
        }
        await self._member.claim(leases.get(self._member.name))
        members = {self.identity} | {
            str(lease["spec"]["holderIdentity"])
            for name, lease in leases.items()
            if name.startswith(MEMBER_PREFIX)
            and (lease.get("spec") or {}).get("holderIdentity")
            and not expired(lease)
        }
        mine = {shard for shard, member in assign(self.count, members).items() if member == self.identity}
        for shard in sorted(self.owned - mine):
            self.owned.discard(shard)  # from now on, no new pass starts in it
            metrics.SHARDS_HELD.set(len(self.owned))
            self._leaving[shard] = asyncio.create_task(
                self._drain(shard), name=f"flagops-drain-shard-{shard}"
            )
        now = asyncio.get_running_loop().time()
        for shard, elector in enumerate(self._shards):
            leaving = self._leaving.get(shard)
            if leaving is not None and leaving.done():
                del self._leaving[shard]
                await elector.release()
                logger.info("gave shard %d up to another replica", shard)
            elif shard in self.owned or leaving is not None:
                try:
                    held = await elector.claim(leases.get(elector.name))
                except kube.ApiError as err:
                    logger.warning("could not renew shard %d: %s", shard, err)
                    continue  # the deadline in run() decides
                if not held:
                    raise LeadershipLost(f"Lease {self._namespace}/{elector.name} is held by another replica")
                self._renewed[shard] = now
            elif shard in mine and await self._take(shard, elector, leases.get(elector.name)):
                self._renewed[shard] = now
                self.owned.add(shard)
                metrics.SHARDS_HELD.set(len(self.owned))
                logger.info(
                    "took shard %d of %d (Lease %s/%s)", shard, self.count, self._namespace, elector.name
                )
                self._acquired(shard)
        await self._forget_stale_members(leases)

    async def _take(self, shard: int, elector: LeaderElector, lease: dict[str, Any] | None) -> bool:
        try:
            return await elector.claim(lease)
        except kube.ApiError as err:
            logger.warning("could not take shard %d: %s", shard, err)
            return False

    async def _forget_stale_members(self, leases: dict[str, dict[str, Any]]) -> None:
        for name, lease in leases.items():
            if not name.startswith(MEMBER_PREFIX) or name == self._member.name:
                continue
            if overdue(lease) > STALE_MEMBER_SECONDS:
                try:
                    await self._kube.delete(LEASES.path(self._namespace, name))
                except kube.ApiError as err:
                    logger.debug("could not delete the stale member Lease %s: %s", name, err)

    async def release(self) -> None:
        """Graceful exit: free every shard at once (the others need not wait for expiry), and
        leave the membership."""
        for task in self._leaving.values():
            task.cancel()
        for shard in sorted(self.owned | set(self._leaving)):
            await self._shards[shard].release()
        self.owned.clear()
        self._leaving.clear()
        metrics.SHARDS_HELD.set(0)
        try:
            await self._kube.delete(LEASES.path(self._namespace, self._member.name))
        except kube.ApiError as err:
            logger.warning("could not delete the member Lease: %s", err)
