"""The local control plane is a real Kubernetes: these tests would fail on a mock."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flagops_dev import devcluster, realnode
from tests.support import Cluster, KubectlError, kubectl, kubectl_json, wait_until

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.invalid/web:1}]
"""


def _replicasets(cluster: Cluster, namespace: str) -> set[str]:
    items = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "replicasets", "-l", "app=web")["items"]
    return {rs["metadata"]["name"] for rs in items}


def test_nodes_are_ready(cluster: Cluster) -> None:
    def ready_untainted() -> list[str]:
        nodes = kubectl_json(cluster.kubeconfig, "get", "nodes")["items"]
        return [
            n["metadata"]["name"]
            for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            # The node lifecycle controller may taint a node briefly while it registers.
            and not n["spec"].get("taints")
        ]

    ready = wait_until(
        "two Ready nodes without taints", lambda: len(ready_untainted()) >= 2 and ready_untainted()
    )
    assert len(ready) >= 2, f"expected two Ready nodes that accept ordinary pods, got {ready}"


def test_deployment_becomes_available(cluster: Cluster, namespace: str) -> None:
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=DEPLOYMENT)
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "wait",
        "deployment/web",
        "--for=condition=Available",
        "--timeout=90s",
        timeout=100,
    )
    pods = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "pods", "-l", "app=web")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 2
    assert all(p["spec"].get("nodeName") for p in running), "the scheduler placed every pod on a node"


def test_rollout_restart_creates_a_new_replicaset(cluster: Cluster, namespace: str) -> None:
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=DEPLOYMENT)
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=90s",
        timeout=100,
    )
    before = _replicasets(cluster, namespace)
    assert len(before) == 1

    kubectl(cluster.kubeconfig, "-n", namespace, "rollout", "restart", "deployment/web")
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=90s",
        timeout=100,
    )

    after = _replicasets(cluster, namespace)
    assert len(after - before) == 1, f"expected one new ReplicaSet, before={before} after={after}"
    dep = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployment", "web")
    assert dep["status"]["updatedReplicas"] == 2
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]


CEL_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.flagops.io}
spec:
  group: e2e.flagops.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              min: {type: integer}
              max: {type: integer}
            x-kubernetes-validations:
            - rule: self.min <= self.max
              message: min must not exceed max
"""


def test_cel_validation_rejects_bad_object_with_rule_message(cluster: Cluster, namespace: str) -> None:
    kubectl(cluster.kubeconfig, "apply", "-f", "-", stdin=CEL_CRD)
    kubectl(
        cluster.kubeconfig,
        "wait",
        "crd/widgets.e2e.flagops.io",
        "--for=condition=Established",
        "--timeout=60s",
    )

    def apply(lo: int, hi: int) -> None:
        widget = {
            "apiVersion": "e2e.flagops.io/v1",
            "kind": "Widget",
            "metadata": {"name": f"w-{lo}-{hi}"},
            "spec": {"min": lo, "max": hi},
        }
        kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(widget))

    # Established can precede the discovery cache by a moment: retry the good object until served.
    wait_until("the Widget kind to be served", lambda: _applies(lambda: apply(1, 2)), timeout=30)
    with pytest.raises(KubectlError) as err:
        apply(5, 1)
    assert "min must not exceed max" in err.value.stderr


def _applies(action: Callable[[], None]) -> bool:
    try:
        action()
    except KubectlError:
        return False
    return True


def test_serviceaccount_without_binding_is_forbidden(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    kubectl(cluster.kubeconfig, "-n", namespace, "create", "serviceaccount", "nobody")
    kubectl(cluster.kubeconfig, "-n", namespace, "create", "configmap", "target", "--from-literal=a=1")
    sa_config = devcluster.serviceaccount_kubeconfig(
        cluster.kubeconfig, namespace, "nobody", tmp_path / "nobody.kubeconfig"
    )

    who = kubectl_json(sa_config, "auth", "whoami")
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:nobody"

    # A bare PATCH (kubectl would GET first and fail on that instead).
    def patch() -> None:
        api = config.new_client_from_config(str(sa_config))
        try:
            client.CoreV1Api(api).patch_namespaced_config_map("target", namespace, {"data": {"a": "2"}})
        finally:
            api.close()

    with pytest.raises(ApiException) as err:
        patch()
    assert err.value.status == 403
    assert 'cannot patch resource "configmaps"' in json.loads(err.value.body)["message"]

    # With a binding the same token may patch: the 403 came from RBAC, not from a broken token.
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "create",
        "role",
        "cm-patch",
        "--verb=patch",
        "--resource=configmaps",
    )
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "create",
        "rolebinding",
        "cm-patch",
        "--role=cm-patch",
        f"--serviceaccount={namespace}:nobody",
    )
    wait_until("the RoleBinding to take effect", lambda: _succeeds(patch), timeout=30)
    data = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "target")["data"]
    assert data == {"a": "2"}


def _succeeds(action: Callable[[], None]) -> bool:
    try:
        action()
    except ApiException:
        return False
    return True


PRIVILEGED_POD = """
apiVersion: v1
kind: Pod
metadata: {name: root}
spec:
  containers:
  - name: root
    image: registry.invalid/root:1
    securityContext: {privileged: true}
"""


def test_pod_security_admission_rejects_privileged_pod(cluster: Cluster, namespace: str) -> None:
    kubectl(
        cluster.kubeconfig, "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    with pytest.raises(KubectlError) as err:
        kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=PRIVILEGED_POD)
    assert 'violates PodSecurity "restricted:latest"' in err.value.stderr
    assert "privileged" in err.value.stderr


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_cli_up_is_idempotent_and_down_leaves_nothing_behind(cluster: Cluster) -> None:
    # Short: containerd's sockets live under it, and a unix socket's path has 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="flagops-up-"))
    node = realnode.RealNode(devcluster.ControlPlane(workdir))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flagops_dev.devcluster", *args, "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env=os.environ,
        )

    first = cli("up")
    assert first.stdout.strip() == f"export KUBECONFIG={workdir / 'kubeconfig'}"
    state = json.loads((workdir / "state.json").read_text())
    kubeconfig = workdir / "kubeconfig"
    try:
        assert set(state["pids"]) == {*devcluster.COMPONENTS, "containerd", "kubelet"}
        second = cli("up")
        assert "already running" in second.stderr
        assert json.loads((workdir / "state.json").read_text())["pids"] == state["pids"]
        nodes = {n["metadata"]["name"] for n in kubectl_json(kubeconfig, "get", "nodes")["items"]}
        assert nodes == {*devcluster.NODE_NAMES, realnode.NODE_NAME}
        # A real container: its shim, mounts and cgroups are what `down` must clean up.
        kubectl(kubeconfig, "apply", "-f", "-", stdin=REAL_POD)
        kubectl(kubeconfig, "wait", "pod/sleeper", "--for=condition=Ready", "--timeout=90s", timeout=100)
        assert node.cgroups() and mounts_under(workdir) and shims(node)
    finally:
        cli("down")

    assert not (workdir / "state.json").exists()
    alive = [name for name, pid in state["pids"].items() if devcluster.pid_alive(pid)]
    assert alive == [], f"processes left behind: {alive}"
    assert shims(node) == [], "containerd shims left behind"
    listening = [name for name, port in state["ports"].items() if name != "etcd-peer" and _listening(port)]
    assert listening == [], f"ports still listening: {listening}"
    assert mounts_under(workdir) == [], "mounts left behind"
    assert node.cgroups() == [], "cgroups left behind"
    shutil.rmtree(workdir)


REAL_POD = f"""
apiVersion: v1
kind: Pod
metadata: {{name: sleeper, namespace: default}}
spec:
  hostNetwork: true
  nodeSelector: {{type: real}}
  tolerations: [{{key: {devcluster.REAL_NODE_TAINT}, operator: Exists}}]
  containers:
  - name: sleeper
    image: {realnode.BUTLER_IMAGE}
    imagePullPolicy: Never
    args: [--flags-from=env, --address=127.0.0.1, --port={devcluster.free_port()}]
"""


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(prefix)]


def shims(node: realnode.RealNode) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline and str(node.socket).encode() in cmdline:
                found.append(int(proc.name))
    return [pid for pid in found if devcluster.pid_alive(pid)]
