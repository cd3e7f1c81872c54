"""flagops driven by a real Argo CD from a git repository (hack/argocd/, flagops_dev.argocd)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flagops_dev.argocd import ArgoCD, GitServer, Workspace
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    EXAMPLE,
    condition,
    deployments_settled,
    get_set,
    load_example_set,
    replicasets,
    request_rollback,
    served,
    wait_phase,
)
from tests.support import Cluster, kubectl, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"
HOMEWORK = "USE_NEW_HOMEWORK_REVIEW_SERVICE"


@dataclass
class GitOps:
    argocd: ArgoCD
    git: GitServer
    root: Path

    def repository(self, name: str) -> tuple[str, Workspace]:
        """A new repository on the git server, and a working clone of it."""
        url = self.git.repository(name)
        return url, Workspace(self.root / "work" / name, self.git.root / f"{name}.git")


@pytest.fixture(scope="module")
def gitops(cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOps]:
    root = tmp_path_factory.mktemp("gitops")
    git = GitServer(root / "git")
    git.start()
    argocd = ArgoCD(root / "argocd", cluster.kubeconfig)
    try:
        argocd.start()
        yield GitOps(argocd, git, root)
    finally:
        argocd.stop()
        git.stop()


def resource(app: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    for entry in app.get("status", {}).get("resources", []):
        if entry["kind"] == kind and entry["name"] == name:
            return entry  # type: ignore[no-any-return]
    return None


def health(app: dict[str, Any], kind: str, name: str) -> str | None:
    entry = resource(app, kind, name)
    return entry.get("health", {}).get("status") if entry else None


def synced(app: dict[str, Any]) -> bool:
    return bool(app.get("status", {}).get("sync", {}).get("status") == "Synced")


def epic21_in_git(
    work: Workspace, *, dialog: bool, homework: bool = False, slow_butler: bool = False
) -> None:
    """The Epic 21 workloads and set as files in the repository (USE_NEW_DIALOG_CONTEXT_REPO and
    USE_NEW_HOMEWORK_REVIEW_SERVICE on or off; butler's pods Ready 20 s late, so a rollout can
    be seen)."""
    workloads = [d for d in yaml.safe_load_all((EXAMPLE / "workloads.yaml").read_text()) if d]
    if slow_butler:
        butler = next(d for d in workloads if d["metadata"]["name"] == "butler")
        butler["spec"]["template"]["metadata"]["annotations"] = {"kwok.flagops.io/ready-after": "20s"}
    flagset = load_example_set()
    flagset["spec"]["flags"][0]["enabled"] = dialog
    flagset["spec"]["flags"][1]["enabled"] = homework
    work.write("epic21/workloads.yaml", yaml.safe_dump_all(workloads))
    work.write("epic21/flagset.yaml", yaml.safe_dump(flagset))


def test_epic21_synced_from_git_with_health_from_health_lua(
    cluster: Cluster, gitops: GitOps, namespace: str, operator: OperatorProcess
) -> None:
    """Synced, the set Healthy by our health.lua; a flag turned on in Git: the set Progressing
    while butler rolls out, then Healthy again."""
    url, work = gitops.repository(namespace)
    epic21_in_git(work, dialog=False, slow_butler=True)
    work.push("Epic 21 flags and workloads")
    gitops.argocd.application(namespace, url, "epic21", namespace)
    try:

        def synced_and_healthy() -> dict[str, Any] | None:
            app = gitops.argocd.get(namespace)
            return app if synced(app) and health(app, "FeatureFlagSet", "epic21") == "Healthy" else None

        app = wait_until("the Application Synced with the set Healthy", synced_and_healthy, timeout=120)
        entry = resource(app, "FeatureFlagSet", "epic21")
        # health.lua's own message: Argo CD ran our script, not a default check.
        ready = condition(get_set(cluster, namespace), "Ready")
        assert entry is not None and ready is not None and entry["health"]["message"] == ready["message"]

        epic21_in_git(work, dialog=True, slow_butler=True)
        revision = work.push("21_01a: dialog on")
        wait_until(
            "the set Progressing while butler rolls out",
            lambda: (
                health(at_revision(gitops, namespace, revision), "FeatureFlagSet", "epic21") == "Progressing"
            ),
            timeout=60,
        )
        wait_until("the set Healthy again", synced_and_healthy, timeout=90)
        assert served(cluster, namespace, DIALOG) == "true"
    finally:
        gitops.argocd.delete(namespace)


def at_revision(gitops: GitOps, name: str, revision: str) -> dict[str, Any]:
    """The Application, once it has synced `revision` (else an empty dict)."""
    app = gitops.argocd.get(name)
    return app if app.get("status", {}).get("sync", {}).get("revision") == revision else {}


def reconciled_after(gitops: GitOps, name: str, moment: str) -> dict[str, Any] | None:
    """The Application once Argo CD has compared it with the cluster after `moment` (RFC 3339)."""
    app = gitops.argocd.get(name)
    return app if app.get("status", {}).get("reconciledAt", "") > moment else None


def test_rollback_by_hand_holds_a_flag_git_says_is_on_without_drift(
    cluster: Cluster, gitops: GitOps, namespace: str, operator: OperatorProcess
) -> None:
    """What flagops writes (ConfigMap, pod-template annotations, status) is no drift: the
    Application stays Synced, and self-heal and flagops do not restart butler in turns."""
    url, work = gitops.repository(namespace)
    epic21_in_git(work, dialog=True)
    work.push("Epic 21 with the dialog flag on")
    gitops.argocd.application(namespace, url, "epic21", namespace)
    try:
        wait_until(
            "the Application Synced and Healthy",
            lambda: (
                synced(app := gitops.argocd.get(namespace))
                and health(app, "FeatureFlagSet", "epic21") == "Healthy"
            ),
            timeout=120,
        )
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
        before = replicasets(cluster, namespace)["butler"]

        request_rollback(cluster, namespace, "hold-dialog", flags=[DIALOG])
        done = wait_phase(cluster, namespace, "hold-dialog", "Succeeded")
        assert served(cluster, namespace, DIALOG) == "false"
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
        after = replicasets(cluster, namespace)["butler"]
        assert len(after - before) == 1  # one restart, by the rollback

        # Two comparisons by Argo CD after the rollback ended, each Synced and Healthy.
        first = wait_until(
            "Argo CD compared after the rollback",
            lambda: reconciled_after(gitops, namespace, done["status"]["completedAt"]),
            timeout=60,
        )
        second = wait_until(
            "and once more",
            lambda: reconciled_after(gitops, namespace, first["status"]["reconciledAt"]),
            timeout=60,
        )
        for app in (first, second):
            assert synced(app), app["status"]["sync"]
            assert health(app, "Deployment", "butler") == "Healthy"
        assert replicasets(cluster, namespace)["butler"] == after  # no restart loop
        assert served(cluster, namespace, DIALOG) == "false"
        assert get_set(cluster, namespace)["spec"]["flags"][0]["enabled"] is True  # Git's word, untouched
    finally:
        gitops.argocd.delete(namespace)


def test_rollback_committed_to_git_and_its_health_in_the_application(
    cluster: Cluster, gitops: GitOps, namespace: str, operator: OperatorProcess
) -> None:
    """A two-flag rollback (the plan's multi-flag row: approval needed) committed to git: the
    Application shows it Suspended while it awaits approval; the approval committed to git
    lets it run (Progressing) and hold (Healthy); the Application stays Synced throughout."""
    url, work = gitops.repository(namespace)
    epic21_in_git(work, dialog=True, homework=True, slow_butler=True)
    work.push("Epic 21 with 21_01a and 21_01b on")
    gitops.argocd.application(namespace, url, "epic21", namespace)
    name = "rollback-21-01a-b"
    try:
        wait_until(
            "the Application Synced and the set Healthy",
            lambda: (
                synced(app := gitops.argocd.get(namespace))
                and health(app, "FeatureFlagSet", "epic21") == "Healthy"
            ),
            timeout=120,
        )
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace), timeout=90)
        request: dict[str, Any] = {
            "apiVersion": "flagops.io/v1alpha1",
            "kind": "RollbackRequest",
            "metadata": {"name": name},
            "spec": {"flagSet": "epic21", "flags": [DIALOG, HOMEWORK], "reason": "21_01a and 21_01b errors"},
        }
        work.write("epic21/rollback.yaml", yaml.safe_dump(request))
        work.push("Roll back 21_01a and 21_01b")
        wait_until(
            "Argo CD to create the request",
            lambda: (
                kubectl(
                    cluster.kubeconfig, "-n", namespace, "get", "rollbackrequest", name, check=False
                ).returncode
                == 0
            ),
            timeout=60,
        )
        wait_phase(cluster, namespace, name, "AwaitingApproval")
        wait_until(
            "the request Suspended in the Application",
            lambda: health(gitops.argocd.get(namespace), "RollbackRequest", name) == "Suspended",
            timeout=60,
        )

        request["spec"].update(approved=True, approvedBy="olga")
        work.write("epic21/rollback.yaml", yaml.safe_dump(request))
        work.push("Approve the rollback of 21_01a and 21_01b")
        wait_until(
            "the request Progressing in the Application while butler rolls out",
            lambda: health(gitops.argocd.get(namespace), "RollbackRequest", name) == "Progressing",
            timeout=60,
        )
        done = wait_phase(cluster, namespace, name, "Succeeded", timeout=120)
        assert (
            served(cluster, namespace, DIALOG) == "false" and served(cluster, namespace, HOMEWORK) == "false"
        )

        def healthy_after_completion() -> dict[str, Any] | None:
            app = reconciled_after(gitops, namespace, done["status"]["completedAt"])
            return app if app and health(app, "RollbackRequest", name) == "Healthy" else None

        app = wait_until("the request Healthy in the Application", healthy_after_completion, timeout=60)
        # What flagops wrote on the request (status, the lock annotation) is no drift.
        assert synced(app), app["status"]["sync"]
    finally:
        gitops.argocd.delete(namespace)
