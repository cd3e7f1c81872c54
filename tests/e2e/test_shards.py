"""Shards: three replicas split the namespaces; one is SIGKILLed in the middle of rollbacks it
owns, and another replica finishes them, restarting each workload once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagops.reconcile.shards import shard_of
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    apply,
    deploy_dialog_enabled,
    deployments_settled,
    get_rollback,
    patch,
    wait_terminal,
)
from tests.e2e.test_faults import DIALOG, butler_generation
from tests.support import Cluster, kubectl, kubectl_json, wait_until

SHARDS = 3


def shard_namespaces(per_shard: dict[int, int]) -> dict[int, list[str]]:
    """Fresh namespace names, `per_shard[i]` of them hashing to shard i."""
    run = uuid.uuid4().hex[:6]
    names: dict[int, list[str]] = {shard: [] for shard in per_shard}
    for i in range(1000):
        name = f"shards-{run}-{i}"
        shard = shard_of(name, SHARDS)
        if len(names[shard]) < per_shard[shard]:
            names[shard].append(name)
        if all(len(names[s]) == n for s, n in per_shard.items()):
            return names
    raise AssertionError("the hash never filled every shard")


@pytest.fixture
def namespaces(cluster: Cluster) -> Iterator[tuple[str, dict[int, list[str]]]]:
    """A namespace for the Leases, and two namespaces in shard 0, one in shards 1 and 2."""
    by_shard = shard_namespaces({0: 2, 1: 1, 2: 1})
    leases = f"shards-leases-{uuid.uuid4().hex[:6]}"
    created = [leases, *(ns for names in by_shard.values() for ns in names)]
    for name in created:
        kubectl(cluster.kubeconfig, "create", "namespace", name)
    try:
        yield leases, by_shard
    finally:
        for name in created:
            kubectl(cluster.kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


def holders(cluster: Cluster, lease_namespace: str) -> dict[int, str]:
    leases = kubectl_json(cluster.kubeconfig, "-n", lease_namespace, "get", "leases")["items"]
    return {
        int(lease["metadata"]["name"].removeprefix("flagops-shard-")): lease["spec"].get("holderIdentity")
        or ""
        for lease in leases
        if lease["metadata"]["name"].startswith("flagops-shard-")
    }


def test_a_killed_replicas_rollbacks_are_finished_by_another(
    cluster: Cluster, crds: None, namespaces: tuple[str, dict[int, list[str]]], tmp_path: Path
) -> None:
    lease_namespace, by_shard = namespaces
    watched = [ns for names in by_shard.values() for ns in names]
    args = (
        *(f"--namespace={ns}" for ns in watched[1:]),
        f"--shards={SHARDS}",
        f"--leader-election-namespace={lease_namespace}",
    )
    replicas = [
        OperatorProcess(cluster.kubeconfig, watched[0], tmp_path / f"replica-{i}.log", extra_args=args)
        for i in range(3)
    ]
    for replica in replicas:
        replica.start()
    try:

        def one_each() -> dict[int, str] | None:
            held = {shard: holder for shard, holder in holders(cluster, lease_namespace).items() if holder}
            return held if len(held) == SHARDS and len(set(held.values())) == SHARDS else None

        spread = wait_until("each replica holding one shard", one_each, timeout=60)
        pids = {replica.proc.pid: replica for replica in replicas if replica.proc}
        owner = {shard: pids[int(holder.rsplit("_", 1)[1])] for shard, holder in spread.items()}
        victim = owner[0]

        slow = {"spec": {"template": {"metadata": {"annotations": {"kwok.flagops.io/ready-after": "8s"}}}}}
        for ns in watched:
            deploy_dialog_enabled(cluster, ns)
            patch(cluster, ns, "deployment", "butler", slow)
        for ns in watched:
            wait_until(
                f"deployments settled in {ns}", lambda ns=ns: deployments_settled(cluster, ns), timeout=90
            )
        before = {ns: butler_generation(cluster, ns) for ns in watched}

        body = {
            "apiVersion": "flagops.io/v1alpha1",
            "kind": "RollbackRequest",
            "metadata": {"name": "rb"},
            "spec": {"flagSet": "epic21", "flags": [DIALOG], "emergency": True},
        }
        for ns in watched:
            apply(cluster, ns, body)
        for ns in by_shard[0]:
            wait_until(
                f"the rollback in {ns} rolling out",
                lambda ns=ns: get_rollback(cluster, ns, "rb").get("status", {}).get("phase") == "RollingOut",
            )
        victim.kill()

        for ns in watched:
            status = wait_terminal(cluster, ns, "rb", timeout=120)
            assert status["phase"] == "Succeeded", (ns, status.get("message"))
            assert butler_generation(cluster, ns) == before[ns] + 1, (
                f"butler in {ns} restarted more than once"
            )
        heir = holders(cluster, lease_namespace)[0]
        survivors = {f"_{r.proc.pid}": r for r in replicas if r is not victim and r.proc}
        assert any(heir.endswith(pid) for pid in survivors), f"shard 0 held by {heir!r}, not a survivor"
        heir_log = next(r for pid, r in survivors.items() if heir.endswith(pid)).log.read_text()
        assert f"took shard 0 of {SHARDS}" in heir_log
        victim_log = victim.log.read_text()
        for ns in by_shard[0]:
            finished = f"RollbackRequest {ns}/rb: RollingOut -> Validating"
            assert finished in heir_log.split(f"took shard 0 of {SHARDS}")[-1], (
                f"{ns}: not finished by the heir"
            )
            assert finished not in victim_log, f"{ns}: finished before the kill"
        # Shards 1 and 2 never moved: their rollbacks were finished by the replica that started them.
        assert {s: h for s, h in holders(cluster, lease_namespace).items() if s != 0} == {
            s: h for s, h in spread.items() if s != 0
        }
    finally:
        for replica in replicas:
            replica.stop()
