"""On the real node: the operator from its image, installed by Helm, and consumers that really
restart. What kwok cannot show: a container's process, its user and root filesystem, and a
new process reading the flag's new value from its environment."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from flagops_dev import devcluster, realnode
from tests.e2e.helpers import (
    EXAMPLE,
    REPO,
    apply,
    get_set,
    patch,
    patch_rollback,
    served,
    set_flag,
    wait_phase,
    wait_ready,
)
from tests.e2e.test_observability import error_ratio, flagset_with_trigger, query
from tests.support import Cluster, kubectl, kubectl_json, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"
BUTLER = REPO / "examples" / "butler-sim" / "deployment.yaml"


def running_pod(cluster: Cluster, namespace: str, selector: str) -> dict[str, Any] | None:
    """The one Ready pod of the selector, once no other (terminating) pod is left."""
    pods = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "pods", "-l", selector)["items"]
    if len(pods) != 1 or pods[0]["metadata"].get("deletionTimestamp"):
        return None
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pods[0].get("status", {}).get("conditions", [])
    )
    return pods[0] if ready else None


def process_of(pod: dict[str, Any]) -> realnode.Process:
    container_id = pod["status"]["containerStatuses"][0]["containerID"]
    return wait_until(
        f"the process of {container_id}", lambda: realnode.container_process(container_id), timeout=10
    )


@dataclass(frozen=True)
class Installed:
    namespace: str
    metrics_port: int
    helm: list[str]  # helm with the kubeconfig and namespace


@pytest.fixture(scope="module")
def installed(
    cluster: Cluster, crds: None, real_node: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """`helm install` of charts/flagops with the local image onto the real node, watching only its
    own namespace (no cluster-wide object, so it cannot meet the other tests' operators)."""
    namespace = f"flagops-real-{uuid.uuid4().hex[:6]}"
    kubectl(cluster.kubeconfig, "create", "namespace", namespace)
    port = devcluster.free_port()
    values = realnode.chart_values(cluster.kubeconfig, metrics_port=port)
    values.update(
        watchNamespaces=[namespace],
        approvalPolicy={"enabled": False},
        delegationPolicy={"enabled": False},
    )
    values_file = tmp_path_factory.mktemp("helm") / "values.json"
    values_file.write_text(json.dumps(values))
    helm = str(devcluster.build_binaries(quiet=True)["helm"])
    install = [helm, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace]
    chart = str(REPO / "charts/flagops")
    done = subprocess.run(
        [*install, "install", "flagops", chart, "-f", str(values_file), "--wait", "--timeout=120s"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pods = kubectl(cluster.kubeconfig, "-n", namespace, "describe", "pods", check=False).stdout
        logs = kubectl(cluster.kubeconfig, "-n", namespace, "logs", "deploy/flagops", check=False)
        pytest.fail(f"helm install: {done.stderr}\n{pods}\n{logs.stdout}{logs.stderr}")
    try:
        yield Installed(namespace, port, install)
    finally:
        subprocess.run([*install, "uninstall", "flagops", "--wait"], check=False)
        kubectl(cluster.kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)


def test_operator_runs_from_its_image_as_installed_by_helm(cluster: Cluster, installed: Installed) -> None:
    ns = installed.namespace
    pod = wait_until(
        "the operator pod Ready", lambda: running_pod(cluster, ns, "app.kubernetes.io/name=flagops")
    )
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    assert pod["spec"]["containers"][0]["image"] == realnode.operator_image()
    process = process_of(pod)
    # What the chart asks for, as the kernel enforces it on the real process.
    assert process.uid == 65532
    assert process.root_read_only
    with urllib.request.urlopen(f"http://127.0.0.1:{installed.metrics_port}/readyz", timeout=5) as resp:
        assert resp.status == 200
    lease = kubectl_json(cluster.kubeconfig, "-n", ns, "get", "lease", "flagops")
    assert lease["spec"]["holderIdentity"].startswith(pod["metadata"]["name"] + "_")
    # Through the API server and the kubelet's own API.
    logs = kubectl(cluster.kubeconfig, "-n", ns, "logs", pod["metadata"]["name"]).stdout
    assert "became the leader" in logs


def test_epic21_story_restarts_real_processes(
    cluster: Cluster, installed: Installed, prometheus: devcluster.Prometheus
) -> None:
    """Flag on: a new Butler process sees it and fails 8% of requests; the trigger rolls it back;
    a new process sees the safe value and the error ratio falls; the lock holds the flag against
    the spec; the release hands the flag back to the spec."""
    ns = installed.namespace
    port = devcluster.free_port()
    butler = yaml.safe_load(BUTLER.read_text())
    container = butler["spec"]["template"]["spec"]["containers"][0]
    container["args"] = ["--address=127.0.0.1", f"--port={port}"]
    container["readinessProbe"]["httpGet"]["port"] = port
    workloads = [d for d in yaml.safe_load_all((EXAMPLE / "workloads.yaml").read_text()) if d]
    apply(cluster, ns, [d for d in workloads if d["metadata"]["name"] != "butler"] + [butler])
    prometheus.add_target(ns, f"127.0.0.1:{port}", {"ns": ns})
    try:
        apply(cluster, ns, flagset_with_trigger(ns, prometheus, for_seconds=3, webhook=False))
        wait_ready(cluster, ns)
        selector = "app.kubernetes.io/name=butler"
        first = process_of(wait_until("butler Ready", lambda: running_pod(cluster, ns, selector)))
        assert first.environ[DIALOG] == "false"

        set_flag(cluster, ns, 0, True)

        def restarted(after: realnode.Process, value: str) -> realnode.Process | None:
            pod = running_pod(cluster, ns, selector)
            if pod is None:
                return None
            now = process_of(pod)
            return now if now.pid != after.pid and now.environ[DIALOG] == value else None

        enabled = wait_until("a new butler process with the flag on", lambda: restarted(first, "true"))
        assert not first.alive()
        wait_until(
            "the error ratio above 5%", lambda: [v for v in query(prometheus, error_ratio(ns)) if v > 0.05]
        )

        rollback = wait_until("the trigger's RollbackRequest", lambda: trigger_rollback(cluster, ns))
        done = wait_phase(cluster, ns, rollback, "Succeeded", timeout=150)
        assert [c["phase"] for c in done["status"]["checks"]] == ["Passed"]
        safe = wait_until("a new butler process with the safe value", lambda: restarted(enabled, "false"))
        assert not enabled.alive()
        assert served(cluster, ns, DIALOG) == "false"
        assert [v for v in query(prometheus, error_ratio(ns)) if v < 0.01]

        # The lock: the spec still says on, and an edit of the set (a sync from Git, say)
        # changes nothing: the flag stays at its safe value and the process keeps running.
        wait_until("the lock shown on the set", lambda: held(cluster, ns, rollback))
        edit = [{"op": "replace", "path": "/spec/flags/0/description", "value": "edited while held"}]
        patch(cluster, ns, "featureflagset", "epic21", edit)
        wait_until("the set observed the edit", lambda: observed(cluster, ns))
        assert served(cluster, ns, DIALOG) == "false"
        assert safe.alive()

        patch_rollback(cluster, ns, rollback, release=True)
        wait_until("a new butler process with the flag on again", lambda: restarted(safe, "true"))
        assert served(cluster, ns, DIALOG) == "true"
    finally:
        prometheus.remove_target(ns)


def trigger_rollback(cluster: Cluster, namespace: str) -> str | None:
    items = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests")["items"]
    return items[0]["metadata"]["name"] if items else None


def held(cluster: Cluster, namespace: str, rollback: str) -> bool:
    overrides = get_set(cluster, namespace).get("status", {}).get("overrides") or []
    return [(o["flag"], o["heldBy"]) for o in overrides] == [(DIALOG, rollback)]


def observed(cluster: Cluster, namespace: str) -> bool:
    obj = get_set(cluster, namespace)
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])


def test_helm_upgrade_rolls_the_operator_and_the_lease_follows(
    cluster: Cluster, installed: Installed
) -> None:
    """A changed pod template rolls: the new pod starts as a Ready standby, the old one stops and
    releases the Lease, the new one takes it."""
    ns = installed.namespace
    selector = "app.kubernetes.io/name=flagops"
    old = wait_until("the operator pod Ready", lambda: running_pod(cluster, ns, selector))
    old_process = process_of(old)
    upgrade = [*installed.helm, "upgrade", "flagops", str(REPO / "charts/flagops"), "--reuse-values"]
    subprocess.run([*upgrade, "--set", "podAnnotations.rolled=yes", "--wait", "--timeout=120s"], check=True)

    def new_leader() -> dict[str, Any] | None:
        pod = running_pod(cluster, ns, selector)
        if pod is None or pod["metadata"]["name"] == old["metadata"]["name"]:
            return None
        lease = kubectl_json(cluster.kubeconfig, "-n", ns, "get", "lease", "flagops")
        return (
            pod if lease["spec"].get("holderIdentity", "").startswith(pod["metadata"]["name"] + "_") else None
        )

    new = wait_until("the new pod holding the Lease", new_leader)
    assert new["metadata"]["annotations"]["rolled"] == "yes"
    assert not old_process.alive()
    logs = kubectl(cluster.kubeconfig, "-n", ns, "logs", new["metadata"]["name"]).stdout
    assert "became the leader" in logs
