"""Shards: the pure assignment, and three replicas' Lease rounds against an in-memory API."""

from __future__ import annotations

import asyncio
import datetime
from collections import Counter
from typing import Any

import pytest

from flagops.controller.leader import LeadershipLost
from flagops.controller.shards import MEMBER_PREFIX, SHARD_PREFIX, Shards
from flagops.reconcile.shards import assign, shard_of
from tests.fake_kube import FakeKube

NS = "flagops-system"


def test_a_namespace_always_hashes_to_the_same_shard() -> None:
    # Fixed values: a change to the hash would move every namespace to another replica.
    assert [shard_of(ns, 3) for ns in ("default", "payments", "checkout", "team-a", "team-b")] == [
        1,
        0,
        2,
        0,
        2,
    ]
    spread = Counter(shard_of(f"team-{i}", 3) for i in range(300))
    assert set(spread) == {0, 1, 2}
    assert min(spread.values()) > 70, spread


@pytest.mark.parametrize(("shards", "members"), [(3, 3), (3, 2), (3, 1), (8, 3), (3, 5)])
def test_assignment_is_balanced(shards: int, members: int) -> None:
    owners = assign(shards, [f"replica-{i}" for i in range(members)])
    assert sorted(owners) == list(range(shards))
    load = Counter(owners.values())
    assert max(load.values()) <= -(-shards // members)
    assert len(load) == min(shards, members), "every replica gets a shard while there are enough"


def test_assignment_is_the_same_in_every_replica_and_stable_when_one_joins() -> None:
    before = assign(12, ["a", "b", "c"])
    assert assign(12, ["c", "a", "b"]) == before
    after = assign(12, ["a", "b", "c", "d"])
    moved = [shard for shard in before if before[shard] != after[shard]]
    assert all(after[shard] == "d" for shard in moved), "shards move only to the new replica"
    assert len(moved) == 3


def test_no_members_no_assignment() -> None:
    assert assign(3, []) == {}


class Replica:
    """One replica's Shards with what its controller saw: taken shards and drains."""

    def __init__(self, api: FakeKube, identity: str) -> None:
        self.taken: list[int] = []
        self.drained: list[int] = []
        self.busy: set[int] = set()  # shards with a pass in flight: drain waits for them
        self.shards = Shards(
            api,  # type: ignore[arg-type]
            NS,
            3,
            identity=identity,
            acquired=self.taken.append,
            drain=self._drain,
        )

    async def _drain(self, shard: int) -> None:
        while shard in self.busy:
            await asyncio.sleep(0.001)
        self.drained.append(shard)

    async def round(self) -> None:
        await self.shards._round()
        await asyncio.sleep(0)  # let a finished drain's task report done


def holders(api: FakeKube) -> dict[int, str]:
    leases = {name: obj for (plural, _, name), obj in api.objects.items() if plural == "leases"}
    return {
        int(name.removeprefix(SHARD_PREFIX)): lease["spec"]["holderIdentity"]
        for name, lease in leases.items()
        if name.startswith(SHARD_PREFIX) and lease["spec"]["holderIdentity"]
    }


def assert_one_actor_per_shard(replicas: list[Replica]) -> None:
    acting = Counter(shard for r in replicas for shard in r.shards.owned)
    assert all(count == 1 for count in acting.values()), acting


def age(api: FakeKube, name: str, seconds: float) -> None:
    """As if the Lease's holder had last renewed it `seconds` ago."""
    lease: Any = api.obj("leases", NS, name)
    stamp = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    lease["spec"]["renewTime"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def converge(replicas: list[Replica], rounds: int = 4) -> None:
    for _ in range(rounds):
        for replica in replicas:
            await replica.round()
            assert_one_actor_per_shard(replicas)


async def test_three_replicas_take_one_shard_each_and_never_two_at_once() -> None:
    api = FakeKube()
    first, second, third = (Replica(api, name) for name in ("a_1", "b_2", "c_3"))
    await first.round()
    assert first.shards.owned == {0, 1, 2}, "alone, it takes every shard"
    await converge([first, second, third])
    assert sorted(len(r.shards.owned) for r in (first, second, third)) == [1, 1, 1]
    assert holders(api) == {s: r.shards.identity for r in (first, second, third) for s in r.shards.owned}
    assert sorted(first.drained) == sorted({0, 1, 2} - first.shards.owned), "given up only once drained"


async def test_a_shard_is_released_only_after_its_passes_end() -> None:
    api = FakeKube()
    first, second = Replica(api, "a_1"), Replica(api, "b_2")
    await first.round()
    first.busy = {0, 1, 2}
    await converge([first, second])
    leaving = {0, 1, 2} - first.shards.owned
    assert leaving and not first.drained
    assert all(holders(api)[shard] == "a_1" for shard in leaving), "kept while a pass runs"
    assert not second.shards.owned & leaving
    first.busy = set()
    await converge([first, second])
    assert first.shards.owned | second.shards.owned == {0, 1, 2}
    assert second.shards.owned == leaving


async def test_a_dead_replicas_shards_are_taken_when_its_leases_expire() -> None:
    api = FakeKube()
    replicas = [Replica(api, name) for name in ("a_1", "b_2", "c_3")]
    await converge(replicas)
    dead = replicas.pop(0)
    orphaned = set(dead.shards.owned)
    await converge(replicas, rounds=2)
    assert not any(r.shards.owned & orphaned for r in replicas), "not before its Leases expire"
    member = next(
        n
        for (p, _, n) in api.objects
        if p == "leases"
        and n.startswith(MEMBER_PREFIX)
        and api.objects[(p, NS, n)]["spec"]["holderIdentity"] == "a_1"
    )
    for name in [member, *(f"{SHARD_PREFIX}{s}" for s in orphaned)]:
        age(api, name, 16)
    await converge(replicas, rounds=2)
    assert replicas[0].shards.owned | replicas[1].shards.owned == {0, 1, 2}
    assert orphaned <= set(replicas[0].taken + replicas[1].taken)


async def test_a_replica_whose_shard_was_taken_stops() -> None:
    api = FakeKube()
    first = Replica(api, "a_1")
    await first.round()
    lease: Any = api.obj("leases", NS, f"{SHARD_PREFIX}0")
    lease["spec"]["holderIdentity"] = "intruder"
    with pytest.raises(LeadershipLost):
        await first.round()


async def test_graceful_exit_frees_the_shards_and_leaves_the_membership() -> None:
    api = FakeKube()
    first, second = Replica(api, "a_1"), Replica(api, "b_2")
    await converge([first, second])
    await first.shards.release()
    assert set(holders(api).values()) == {"b_2"}
    await converge([second], rounds=1)
    assert second.shards.owned == {0, 1, 2}, "taken at the next round, without waiting for expiry"
