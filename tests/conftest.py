from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagops_dev import devcluster
from tests.support import Cluster, kubectl

E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The real control plane: our own, or the one FLAGOPS_TEST_KUBECONFIG points at."""
    binaries = devcluster.build_binaries()
    # Tests and the harness use the kubectl built with the control plane, of the same version.
    os.environ["PATH"] = f"{binaries['kubectl'].parent}{os.pathsep}{os.environ['PATH']}"
    external = os.environ.get("FLAGOPS_TEST_KUBECONFIG")
    if external:
        yield Cluster(kubeconfig=Path(external), logs=None)
        return
    plane = devcluster.ControlPlane(tmp_path_factory.mktemp("controlplane"))
    plane.start(bound_to_caller=True, binaries=binaries)
    try:
        yield Cluster(kubeconfig=plane.kubeconfig, logs=plane.logs, plane=plane)
    finally:
        plane.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:6]}"
    kubectl(cluster.kubeconfig, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(cluster.kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        logs = item.session.config.stash.get(_LOGS_KEY, None)
        if logs is not None:
            report.sections.append(("control plane", f"component logs: {logs}"))
    return report


_LOGS_KEY = pytest.StashKey[Path]()


@pytest.fixture(autouse=True)
def _remember_logs(request: pytest.FixtureRequest) -> None:
    if "cluster" in request.fixturenames:
        logs = request.getfixturevalue("cluster").logs
        if logs is not None:
            request.config.stash[_LOGS_KEY] = logs
