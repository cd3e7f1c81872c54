"""Which shard a namespace belongs to, and which replica holds which shard.

Both are pure and deterministic, so every replica computes the same answer from the same
inputs, and a namespace stays in its shard across restarts and versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _hash(text: str) -> int:
    # Not Python's hash(): it is salted per process, and every replica must agree.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shard_of(namespace: str, shards: int) -> int:
    """The shard (0 to shards - 1) that acts on everything in `namespace`. A namespace, not a
    set: a set, its RollbackRequests, drills and workloads always live in one namespace, so
    one replica sees all of a rollback."""
    return _hash(namespace) % shards


def assign(shards: int, members: Iterable[str]) -> dict[int, str]:
    """Shard -> member. Balanced: no member gets more than ceil(shards / members). Stable: each
    shard goes to the member ranked first for it (rendezvous hashing) that still has room, so a
    member joining or leaving moves few shards, not most of them as a modulo would."""
    pool = sorted(set(members))
    if not pool:
        return {}
    room = -(-shards // len(pool))
    load = dict.fromkeys(pool, 0)
    owners: dict[int, str] = {}
    for shard in range(shards):
        for member in sorted(pool, key=lambda m: _hash(f"{shard}/{m}"), reverse=True):
            if load[member] < room:
                owners[shard] = member
                load[member] += 1
                break
    return owners
