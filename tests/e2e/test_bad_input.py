"""A corpus of bad FeatureFlagSets and RollbackRequests: each is refused by the API server with
a message that says what to fix, or ends in a condition that does; the operator never
crashes and never touches objects it does not own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import REPO, condition, deployments_settled, get_set
from tests.support import Cluster, KubectlError, kubectl, kubectl_json, wait_until

Spec = dict[str, Any]


def flag(name: str = "A", **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra}


def http_check(**extra: Any) -> dict[str, Any]:
    return {"name": "c", "http": {"url": "http://x/"}, **extra}


# (id, kind, spec, a substring of the API server's refusal)
REFUSED: list[tuple[str, str, Spec, str]] = [
    ("duplicate-names", "FeatureFlagSet", {"flags": [flag(), flag()]}, "flag names must be unique"),
    ("lowercase-name", "FeatureFlagSet", {"flags": [flag("lower")]}, "should match '^[A-Z][A-Z0-9_]*$'"),
    ("name-starts-with-digit", "FeatureFlagSet", {"flags": [flag("1FLAG")]}, "should match"),
    ("name-too-long", "FeatureFlagSet", {"flags": [flag("A" * 64)]}, "may not be more than 63"),
    ("requires-itself", "FeatureFlagSet", {"flags": [flag(requires=["A"])]}, "flag A requires itself"),
    (
        "requires-unknown",
        "FeatureFlagSet",
        {"flags": [flag(requires=["B"])]},
        "requires must name flags of this set",
    ),
    (
        "workload-kind-pod",
        "FeatureFlagSet",
        {"flags": [flag(workloads=[{"kind": "Pod", "name": "x"}])]},
        'Unsupported value: "Pod"',
    ),
    (
        "workload-name-invalid",
        "FeatureFlagSet",
        {"flags": [flag(workloads=[{"name": "Bad_Name"}])]},
        "should match",
    ),
    (
        "workload-without-name",
        "FeatureFlagSet",
        {"flags": [flag(workloads=[{"kind": "Deployment"}])]},
        "Required value",
    ),
    ("max-parallel-zero", "FeatureFlagSet", {"rollout": {"maxParallel": 0}}, "greater than or equal to 1"),
    (
        "strategy-unknown",
        "FeatureFlagSet",
        {"rollout": {"strategy": "Sometimes"}},
        'Unsupported value: "Sometimes"',
    ),
    ("timeout-zero", "FeatureFlagSet", {"rollout": {"timeoutSeconds": 0}}, "greater than or equal to 1"),
    ("flags-not-a-list", "FeatureFlagSet", {"flags": "A,B"}, "must be of type array"),
    ("enabled-not-a-bool", "FeatureFlagSet", {"flags": [flag(enabled="yes")]}, "must be of type boolean"),
    (
        "too-many-flags",
        "FeatureFlagSet",
        {"flags": [flag(f"F{i}") for i in range(129)]},
        "must have at most 128",
    ),
    ("configmap-name-invalid", "FeatureFlagSet", {"configMap": "Bad/Name"}, "should match"),
    ("window-negative", "FeatureFlagSet", {"approval": {"windowSeconds": -1}}, "greater than or equal to 0"),
    (
        "check-two-kinds",
        "FeatureFlagSet",
        {"flags": [flag(checks=[http_check(job={"template": {}})])]},
        "exactly one of http, job, invariant, prometheus",
    ),
    ("check-no-kind", "FeatureFlagSet", {"flags": [flag(checks=[{"name": "c"}])]}, "exactly one of"),
    (
        "check-url-not-http",
        "FeatureFlagSet",
        {"flags": [flag(checks=[{"name": "c", "http": {"url": "ftp://x"}}])]},
        "should match '^https?://'",
    ),
    (
        "threshold-not-a-number",
        "FeatureFlagSet",
        {
            "flags": [
                flag(
                    checks=[
                        {
                            "name": "c",
                            "prometheus": {
                                "server": "http://p:9090",
                                "query": "up",
                                "comparison": "LessThan",
                                "threshold": "abc",
                            },
                        }
                    ]
                )
            ]
        },
        "should match",
    ),
    (
        "trigger-for-negative",
        "FeatureFlagSet",
        {
            "flags": [
                flag(
                    triggers=[
                        {
                            "name": "t",
                            "prometheus": {"server": "http://p:9090", "query": "up"},
                            "threshold": "1",
                            "forSeconds": -5,
                        }
                    ]
                )
            ]
        },
        "greater than or equal to 0",
    ),
    (
        "description-too-long",
        "FeatureFlagSet",
        {"flags": [flag(description="x" * 4097)]},
        "may not be more than 4096",
    ),
    (
        "rollback-flags-and-all",
        "RollbackRequest",
        {"flagSet": "s", "flags": ["A"], "all": True},
        "name the flags to roll back in flags, set all: true, or name a revision in toRevision",
    ),
    ("rollback-neither", "RollbackRequest", {"flagSet": "s"}, "name the flags to roll back"),
    (
        "rollback-dryrun-and-drill",
        "RollbackRequest",
        {"flagSet": "s", "all": True, "dryRun": True, "drill": True},
        "dryRun and drill exclude each other",
    ),
    ("rollback-bad-flag-name", "RollbackRequest", {"flagSet": "s", "flags": ["lower"]}, "should match"),
    (
        "rollback-bad-detected-at",
        "RollbackRequest",
        {"flagSet": "s", "all": True, "detectedAt": "yesterday"},
        "detectedAt",
    ),
    ("rollback-no-flagset", "RollbackRequest", {"all": True}, "spec.flagSet: Required value"),
]


@pytest.fixture(scope="module")
def corpus_namespace(cluster: Cluster, crds: None) -> Iterator[str]:
    name = "bad-input-corpus"
    kubectl(cluster.kubeconfig, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(cluster.kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize(("kind", "spec", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_by_the_api_server(
    cluster: Cluster, corpus_namespace: str, kind: str, spec: Spec, message: str
) -> None:
    body = {"apiVersion": "flagops.io/v1alpha1", "kind": kind, "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(KubectlError) as err:
        kubectl(cluster.kubeconfig, "-n", corpus_namespace, "apply", "-f", "-", stdin=json.dumps(body))
    assert message in err.value.stderr


def flagset(name: str, spec: Spec) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": name},
        "spec": spec,
    }


HUGE = {"flags": [flag(f"FLAG_{i}", description="d" * 4000, rollbackImpact="r" * 3000) for i in range(100)]}

# (name, spec, condition type, status, reason, a substring of the message)
ACCEPTED: list[tuple[str, Spec, str, str, str, str]] = [
    (
        "cycle",
        {"flags": [flag("A", enabled=True, requires=["B"]), flag("B", enabled=True, requires=["A"])]},
        "Degraded",
        "True",
        "DependencyCycle",
        "dependency cycle",
    ),
    (
        "missing-workload",
        {"flags": [flag(workloads=[{"name": "nowhere"}])]},
        "Degraded",
        "True",
        "WorkloadMissing",
        "Deployment nowhere not found",
    ),
    (
        "foreign-configmap",
        {"configMap": "unrelated", "flags": [flag()]},
        "Degraded",
        "True",
        "ConfigMapConflict",
        "never overwrites it",
    ),
    (
        "prerequisite-off",
        {"flags": [flag("BASE"), flag("CHILD", enabled=True, requires=["BASE"])]},
        "Degraded",
        "True",
        "PrerequisiteDisabled",
        "enable BASE first",
    ),
    (
        "unicode",
        {"flags": [flag(description="Ünïcødé ✓ 🚀 диалог", owner="équipe-β")]},
        "Ready",
        "True",
        "Applied",
        "served from ConfigMap unicode",
    ),
    ("empty", {}, "Ready", "True", "Applied", "0 of 0 flags enabled"),
    ("huge", HUGE, "Ready", "True", "Applied", "0 of 100 flags enabled"),
]


def test_accepted_but_wrong_ends_in_a_condition_and_nothing_else_is_touched(
    cluster: Cluster, corpus_namespace: str, tmp_path: Path
) -> None:
    ns = corpus_namespace
    kubectl(cluster.kubeconfig, "-n", ns, "create", "configmap", "unrelated", "--from-literal=keep=me")
    kubectl(cluster.kubeconfig, "-n", ns, "apply", "-f", str(REPO / "examples/epic21/workloads.yaml"))
    # Their controllers' own status updates first: what must stay is what flagops could touch.
    wait_until("deployments settled", lambda: deployments_settled(cluster, ns))
    bystanders = {
        kind: kubectl_json(cluster.kubeconfig, "-n", ns, "get", kind, name)["metadata"]["resourceVersion"]
        for kind, name in (("configmap", "unrelated"), ("deployment", "butler"), ("deployment", "api"))
    }
    op = OperatorProcess(
        cluster.kubeconfig, ns, tmp_path / "operator.log", metrics_port=devcluster.free_port()
    )
    op.start()
    try:
        for name, spec, *_ in ACCEPTED:
            kubectl(
                cluster.kubeconfig,
                "-n",
                ns,
                "apply",
                "--server-side",
                "-f",
                "-",
                stdin=json.dumps(flagset(name, spec)),
            )
        for kind, spec in (
            ("unknown-set", {"flagSet": "nope", "all": True}),
            ("unknown-flag", {"flagSet": "unicode", "flags": ["NOPE"]}),
        ):
            kubectl(
                cluster.kubeconfig,
                "-n",
                ns,
                "apply",
                "-f",
                "-",
                stdin=json.dumps(
                    {
                        "apiVersion": "flagops.io/v1alpha1",
                        "kind": "RollbackRequest",
                        "metadata": {"name": kind},
                        "spec": spec,
                    }
                ),
            )

        for name, _, type_, status, reason, message in ACCEPTED:

            def probe(name: str = name, type_: str = type_) -> dict[str, Any] | None:
                obj = get_set(cluster, ns, name)
                current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
                return condition(obj, type_) if current else None

            cond = wait_until(
                f"{name}: {type_}", lambda p=probe, r=reason: (c := p()) and c["reason"] == r and c
            )
            assert (cond["status"], cond["reason"]) == (status, reason), name
            assert message in cond["message"], (name, cond["message"])

        for name, reason, message in (
            ("unknown-set", "FlagSetNotFound", "FeatureFlagSet nope not found"),
            ("unknown-flag", "UnknownFlag", "NOPE is not a flag"),
        ):

            def failed(name: str = name) -> dict[str, Any] | None:
                obj = kubectl_json(cluster.kubeconfig, "-n", ns, "get", "rollbackrequest", name)
                return obj if obj.get("status", {}).get("phase") == "Failed" else None

            obj = wait_until(f"{name} to fail", failed)
            assert message in obj["status"]["message"]
            assert condition(obj, "Succeeded")["reason"] == reason  # type: ignore[index]

        assert op.proc is not None and op.proc.poll() is None, "the operator is still running"
    finally:
        op.stop()
    log = op.log.read_text()
    assert "Traceback" not in log, op.tail()
    after = {
        kind: kubectl_json(cluster.kubeconfig, "-n", ns, "get", kind, name)["metadata"]["resourceVersion"]
        for kind, name in (("configmap", "unrelated"), ("deployment", "butler"), ("deployment", "api"))
    }
    # No set names butler or api here: flagops must not have patched them.
    assert after == bystanders
    assert kubectl_json(cluster.kubeconfig, "-n", ns, "get", "configmap", "unrelated")["data"] == {
        "keep": "me"
    }
