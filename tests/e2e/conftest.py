"""Fixtures that run the flagops operator against the real control plane."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flagops_dev import devcluster, realnode
from tests.e2e.helpers import EXAMPLE, REPO, deployments_settled, wait_ready
from tests.support import Cluster, Endpoint, kubectl, kubectl_json, wait_until


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    """flagops' CRDs installed from crds/ (what `kubectl apply -f crds/` does for a user)."""
    kubectl(cluster.kubeconfig, "apply", "-f", str(REPO / "crds"))
    kubectl(
        cluster.kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=flagops",
    )


POLICY_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


@pytest.fixture
def policies(cluster: Cluster, crds: None) -> Iterator[None]:
    """The chart's admission policies, exactly as manifests/ installs them."""
    docs = yaml.safe_load_all((REPO / "manifests/10-flagops.yaml").read_text())
    manifest = "\n---\n".join(json.dumps(d) for d in docs if d and d["kind"] in POLICY_KINDS)
    kubectl(cluster.kubeconfig, "apply", "-f", "-", stdin=manifest)
    try:
        yield
    finally:
        kubectl(cluster.kubeconfig, "delete", "--ignore-not-found", "-f", "-", stdin=manifest, check=False)


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> str:
    """The real node (kubelet + containerd, realnode.py) beside the kwok ones; its name.
    Started with our cluster on first use; `make cluster` starts it with the cluster."""
    if cluster.plane is not None and not cluster.plane.node_ready(realnode.NODE_NAME):
        cluster.plane.start_real_node()
    node = kubectl_json(cluster.kubeconfig, "get", "node", realnode.NODE_NAME)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    return realnode.NODE_NAME


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devcluster.Prometheus]:
    """A real Prometheus server on loopback, scraping every second."""
    server = devcluster.Prometheus(tmp_path_factory.mktemp("prometheus"))
    server.start(bound_to_caller=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A real HTTP endpoint on loopback: healthz and counters for checks, a sink for webhooks."""
    server = Endpoint()
    server.routes["/healthz"] = (200, {"status": "ok"})
    server.routes["/count"] = (200, {"count": 7})
    server.routes["/dialogs/count"] = (200, {"count": 1042})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def receiver(endpoint: Endpoint) -> Endpoint:
    """The same server, in its role of webhook receiver."""
    return endpoint


class OperatorProcess:
    """`flagops run` as a separate process, as it runs in a cluster: it can be killed and restarted."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str | None,
        log: Path,
        metrics_port: int = 0,
        extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.extra_args = extra_args
        self.extra_env = extra_env or {}
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log = log
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"----- start #{self.starts} -----\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flagops.cli",
                    "run",
                    *(["--namespace", self.namespace] if self.namespace else []),
                    "--metrics-address",
                    "127.0.0.1",
                    "--metrics-port",
                    str(self.metrics_port),
                    "--verbose",
                    *self.extra_args,
                    # The tests' endpoints and Prometheus listen on loopback, refused by default.
                    *(
                        []
                        if any(a.startswith("--allowed-targets") for a in self.extra_args)
                        else ["--allowed-targets=127.0.0.0/8"]
                    ),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.extra_env},
                preexec_fn=devcluster.die_with_parent,  # noqa: PLW1509 - no threads at this point
            )

    def wait_started(self, timeout: float = 30) -> None:
        """Until it watches: a SIGTERM before then would find Python's default handler."""
        wait_until(
            "the operator started",
            lambda: "flagops operator started" in self.log.read_text(errors="replace"),
            timeout=timeout,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def operator(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """A flagops operator watching only this test's namespace."""
    op = OperatorProcess(
        cluster.kubeconfig, namespace, tmp_path / "operator.log", metrics_port=devcluster.free_port()
    )
    op.start()
    try:
        op.wait_started()
        yield op
    finally:
        code = op.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n--- operator log ({op.log}) ---\n{op.tail()}")
        assert code in (0, None), f"operator exited with {code} on SIGTERM:\n{op.tail()}"


@pytest.fixture
def epic21(cluster: Cluster, namespace: str, operator: OperatorProcess) -> dict[str, Any]:
    """The Epic 21 example applied, its rollouts complete and the set Ready."""
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", str(EXAMPLE / "workloads.yaml"))
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", str(EXAMPLE / "flagset.yaml"))
    obj = wait_ready(cluster, namespace)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    return obj


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report
