"""Faults survived: the operator SIGKILLed in every phase of a rollback finishes it after a
restart, restarting each workload once, with timings that stay consistent."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    REPO,
    apply,
    create_secret,
    deploy_dialog_enabled,
    deployments_settled,
    get_rollback,
    patch,
    patch_rollback,
    served,
    set_flag,
    wait_ready,
    wait_terminal,
)
from tests.support import Cluster, Endpoint, kubectl, kubectl_json, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"
SLOW = "4s"  # how long a new butler pod takes to turn Ready


def butler_generation(cluster: Cluster, namespace: str) -> int:
    return int(
        kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployment", "butler")["metadata"][
            "generation"
        ]
    )


def slow_butler(cluster: Cluster, namespace: str) -> None:
    """New butler pods take SLOW to be Ready, so a rollout can be caught in progress."""
    slow = {"spec": {"template": {"metadata": {"annotations": {"kwok.flagops.io/ready-after": SLOW}}}}}
    patch(cluster, namespace, "deployment", "butler", slow)


def wait_phase_reached(cluster: Cluster, namespace: str, phase: str) -> None:
    wait_until(
        f"phase {phase}",
        lambda: get_rollback(cluster, namespace, "rb").get("status", {}).get("phase") == phase,
    )


@pytest.mark.parametrize("phase", ["Applying", "RollingOut", "Validating", "Restoring"])
def test_sigkill_in_every_phase_resumes_without_repeating(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint, phase: str
) -> None:
    deploy_dialog_enabled(cluster, namespace)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    if phase in ("RollingOut", "Restoring"):
        slow_butler(cluster, namespace)
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace), timeout=60)
    if phase == "Applying":
        endpoint.delays["/count"] = 4  # the baseline read holds the request in Applying
    if phase == "Validating":
        endpoint.routes["/healthz"] = (503, {"status": "starting"})
    before = butler_generation(cluster, namespace)

    checks = [
        {
            "name": "health",
            "intervalSeconds": 1,
            "failureLimit": 100,
            "deadlineSeconds": 120,
            "http": {"url": f"{endpoint.url}/healthz"},
        },
        {
            "name": "count",
            "intervalSeconds": 1,
            "invariant": {
                "http": {"url": f"{endpoint.url}/count", "jsonPath": "$.count", "timeoutSeconds": 10}
            },
        },
    ]
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "rb"},
        "spec": {"flagSet": "epic21", "flags": [DIALOG], "drill": phase == "Restoring", "checks": checks},
    }
    apply(cluster, namespace, body)
    wait_phase_reached(cluster, namespace, phase)
    operator.stop(signal.SIGKILL)
    endpoint.delays.clear()
    endpoint.routes["/healthz"] = (200, {"status": "ok"})
    operator.start()

    status = wait_terminal(cluster, namespace, "rb", timeout=120)
    assert status["phase"] == "Succeeded", status["message"]
    # Each workload restarted once for the rollback (and once more to restore, in a drill).
    expected = before + (2 if phase == "Restoring" else 1)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace), timeout=60)
    assert butler_generation(cluster, namespace) == expected
    assert served(cluster, namespace, DIALOG) == ("true" if phase == "Restoring" else "false")
    # Timings kept from before the crash, in order, none negative.
    stamps = [
        status[k]
        for k in (
            "startedAt",
            "approvedAt",
            "flagsAppliedAt",
            "rolloutCompletedAt",
            "validatedAt",
            "completedAt",
        )
    ]
    assert stamps == sorted(stamps)
    assert all(value >= 0 for value in status["seconds"].values())
    assert status["seconds"]["total"] >= status["seconds"]["timeToExecute"]
    events = kubectl_json(
        cluster.kubeconfig,
        "-n",
        namespace,
        "get",
        "events.events.k8s.io",
        "--field-selector",
        "regarding.name=rb",
    )["items"]
    reasons = [e["reason"] for e in events]
    assert reasons.count("RollbackSucceeded" if phase != "Restoring" else "DrillSucceeded") == 1


def rollback_with(
    cluster: Cluster,
    namespace: str,
    checks: list[dict[str, Any]],
    notifications: dict[str, Any] | None = None,
) -> dict[str, Any]:
    deploy_dialog_enabled(cluster, namespace, **({"notifications": notifications} if notifications else {}))
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "rb"},
        "spec": {"flagSet": "epic21", "flags": [DIALOG], "checks": checks},
    }
    apply(cluster, namespace, body)

    return wait_terminal(cluster, namespace, "rb", timeout=60)


def test_prometheus_down_fails_the_check_in_bounded_time(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    from flagops_dev.devcluster import free_port  # noqa: PLC0415

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    status = rollback_with(
        cluster,
        namespace,
        [
            {
                "name": "errors",
                "intervalSeconds": 1,
                "failureLimit": 2,
                "prometheus": {
                    "server": down,
                    "query": "up",
                    "comparison": "LessThan",
                    "threshold": "1",
                    "timeoutSeconds": 2,
                },
            }
        ],
    )
    assert status["phase"] == "Failed"
    assert f"Prometheus at {down} did not answer" in status["message"]
    assert status["checks"][0]["attempts"] == 3


def test_job_that_never_finishes_fails_at_the_deadline(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    status = rollback_with(
        cluster,
        namespace,
        [
            {
                "name": "smoke",
                "deadlineSeconds": 5,
                "job": {
                    "template": {
                        "template": {
                            "metadata": {"annotations": {"kwok.flagops.io/outcome": "hang"}},
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "s", "image": "registry.invalid/s:1"}],
                            },
                        }
                    }
                },
            }
        ],
    )
    assert status["phase"] == "Failed"
    assert "did not pass within its deadline of 5.0s" in status["message"]
    assert "running" in status["message"]


def test_hanging_receiver_never_delays_a_rollback(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    endpoint.delays["/hook"] = 30  # answers far later than the webhook's timeout
    create_secret(cluster, namespace, "hook", url=f"{endpoint.url}/hook")
    status = rollback_with(
        cluster,
        namespace,
        [],
        notifications={"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}, "timeoutSeconds": 1}},
    )
    assert status["phase"] == "Succeeded"
    assert status["seconds"]["total"] < 5, "the rollback did not wait for the receiver"


def test_two_operators_one_leader_no_double_restarts(
    cluster: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    election = ("--leader-elect", f"--leader-election-namespace={namespace}")
    first = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "first.log", extra_args=election)
    second = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "second.log", extra_args=election)
    first.start()
    wait_until("the first to lead", lambda: "became the leader" in first.log.read_text())
    second.start()
    try:
        wait_until("the second to wait", lambda: "waiting for leadership" in second.log.read_text())
        kubectl(
            cluster.kubeconfig, "-n", namespace, "apply", "-f", str(REPO / "examples/epic21/workloads.yaml")
        )
        kubectl(
            cluster.kubeconfig, "-n", namespace, "apply", "-f", str(REPO / "examples/epic21/flagset.yaml")
        )
        wait_ready(cluster, namespace)
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
        before = butler_generation(cluster, namespace)

        # The leader leaves; the standby takes over and carries the next change alone.
        assert first.stop() == 0
        wait_until("the second to lead", lambda: "became the leader" in second.log.read_text(), timeout=30)
        set_flag(cluster, namespace, 0, True)
        wait_until("the flag served", lambda: served(cluster, namespace, DIALOG) == "true")
        wait_ready(cluster, namespace)
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
        assert butler_generation(cluster, namespace) == before + 1
        assert "restarting Deployment" not in second.log.read_text().split("became the leader")[0]
        lease = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "lease", "flagops")
        assert lease["spec"]["holderIdentity"].endswith(f"_{second.proc.pid}")  # type: ignore[union-attr]
    finally:
        first.stop()
        second.stop()


def test_api_server_restart_during_a_rollout(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    if cluster.plane is None:
        pytest.skip("needs the project's own control plane (FLAGOPS_TEST_KUBECONFIG points elsewhere)")
    deploy_dialog_enabled(cluster, namespace)
    slow_butler(cluster, namespace)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace), timeout=60)
    before = butler_generation(cluster, namespace)
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "rb"},
        "spec": {"flagSet": "epic21", "flags": [DIALOG]},
    }
    apply(cluster, namespace, body)
    wait_phase_reached(cluster, namespace, "RollingOut")
    cluster.plane.restart("kube-apiserver")

    status = wait_terminal(cluster, namespace, "rb", timeout=120)
    assert status["phase"] == "Succeeded", status["message"]
    assert butler_generation(cluster, namespace) == before + 1
    # The watches came back: a change made after the restart is still picked up.
    patch_rollback(cluster, namespace, "rb", release=True)
    wait_until("the release to be handled", lambda: served(cluster, namespace, DIALOG) == "true", timeout=60)
