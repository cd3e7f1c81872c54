"""flagops driven by a real Argo CD from a git repository (hack/argocd/, flagops_dev.argocd)."""

from __future__ import annotations

import json
import subprocess
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
    get_rollback,
    get_set,
    load_example_set,
    replicasets,
    request_rollback,
    served,
    start_watch,
    stop_watch,
    wait_phase,
)
from tests.support import Cluster, kubectl, kubectl_json, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"
HOMEWORK = "USE_NEW_HOMEWORK_REVIEW_SERVICE"
CONFIGMAP = "epic21-flags"


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


def wait_synced_and_healthy(gitops: GitOps, name: str, timeout: float = 120) -> dict[str, Any]:
    """The Application, once it is Synced with the set Healthy."""

    def probe() -> dict[str, Any] | None:
        app = gitops.argocd.get(name)
        return app if synced(app) and health(app, "FeatureFlagSet", "epic21") == "Healthy" else None

    return wait_until("the Application Synced with the set Healthy", probe, timeout=timeout)


def epic21_in_git(
    work: Workspace,
    *,
    dialog: bool,
    homework: bool = False,
    slow_butler: bool = False,
    approval: dict[str, Any] | None = None,
) -> None:
    """The Epic 21 workloads and set as files in the repository (USE_NEW_DIALOG_CONTEXT_REPO and
    USE_NEW_HOMEWORK_REVIEW_SERVICE on or off; butler's pods Ready 20 s late, so a rollout can
    be seen; `approval` in place of the example's authority matrix)."""
    workloads = [d for d in yaml.safe_load_all((EXAMPLE / "workloads.yaml").read_text()) if d]
    if slow_butler:
        butler = next(d for d in workloads if d["metadata"]["name"] == "butler")
        butler["spec"]["template"]["metadata"]["annotations"] = {"kwok.flagops.io/ready-after": "20s"}
    flagset = load_example_set()
    flagset["spec"]["flags"][0]["enabled"] = dialog
    flagset["spec"]["flags"][1]["enabled"] = homework
    if approval is not None:
        flagset["spec"]["approval"] = approval
    work.write("epic21/workloads.yaml", yaml.safe_dump_all(workloads))
    work.write("epic21/flagset.yaml", yaml.safe_dump(flagset))


def epic21_application(gitops: GitOps, namespace: str, message: str, **files: Any) -> Workspace:
    """The Epic 21 files (`epic21_in_git`'s options) pushed to a repository of this test's own,
    and an Application that syncs them into `namespace` (named after it); the work tree."""
    url, work = gitops.repository(namespace)
    epic21_in_git(work, **files)
    work.push(message)
    gitops.argocd.application(namespace, url, "epic21", namespace)
    return work


def test_epic21_synced_from_git_with_health_from_health_lua(
    cluster: Cluster, gitops: GitOps, namespace: str, operator: OperatorProcess
) -> None:
    """Synced, the set Healthy by our health.lua; a flag turned on in Git: the set Progressing
    while butler rolls out, then Healthy again."""
    work = epic21_application(
        gitops, namespace, "Epic 21 flags and workloads", dialog=False, slow_butler=True
    )
    try:
        app = wait_synced_and_healthy(gitops, namespace)
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
        wait_synced_and_healthy(gitops, namespace, timeout=90)
        assert served(cluster, namespace, DIALOG) == "true"
    finally:
        gitops.argocd.delete(namespace)


def rollback_of_both(name: str) -> dict[str, Any]:
    """The plan's multi-flag rollback (21_01a and 21_01b) as a file in Git."""
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": {"flagSet": "epic21", "flags": [DIALOG, HOMEWORK], "reason": "21_01a and 21_01b errors"},
    }


def exists(cluster: Cluster, namespace: str, kind: str, name: str) -> bool:
    return kubectl(cluster.kubeconfig, "-n", namespace, "get", kind, name, check=False).returncode == 0


def wait_synced_from_git(cluster: Cluster, namespace: str, kind: str, name: str) -> None:
    wait_until(f"Argo CD to create {kind} {name}", lambda: exists(cluster, namespace, kind, name), timeout=60)


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
    epic21_application(gitops, namespace, "Epic 21 with the dialog flag on", dialog=True)
    try:
        wait_synced_and_healthy(gitops, namespace)
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
    work = epic21_application(
        gitops, namespace, "Epic 21 with 21_01a and 21_01b on", dialog=True, homework=True, slow_butler=True
    )
    name = "rollback-21-01a-b"
    try:
        wait_synced_and_healthy(gitops, namespace)
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace), timeout=90)
        request = rollback_of_both(name)
        work.write("epic21/rollback.yaml", yaml.safe_dump(request))
        work.push("Roll back 21_01a and 21_01b")
        wait_synced_from_git(cluster, namespace, "rollbackrequest", name)
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


def test_set_pruned_and_re_added_while_a_rollback_holds_keeps_the_safe_value(
    cluster: Cluster, gitops: GitOps, namespace: str, operator: OperatorProcess
) -> None:
    """The set removed from Git (Argo CD prunes it, the garbage collector its ConfigMap) and
    added back while a rollback by hand holds the dialog flag: the re-created ConfigMap serves
    the safe value from its first version, and butler is not restarted."""
    work = epic21_application(gitops, namespace, "Epic 21 with the dialog flag on", dialog=True)
    try:
        wait_synced_and_healthy(gitops, namespace)
        request_rollback(cluster, namespace, "hold-dialog", flags=[DIALOG])
        wait_phase(cluster, namespace, "hold-dialog", "Succeeded")
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
        before = replicasets(cluster, namespace)["butler"]
        watch = start_watch(cluster, namespace, "configmap", f"--field-selector=metadata.name={CONFIGMAP}")
        try:
            work.remove("epic21/flagset.yaml")
            removed = work.push("Remove the Epic 21 flags")
            wait_until(
                "Argo CD to prune the set and the garbage collector its ConfigMap",
                lambda: (
                    synced(at_revision(gitops, namespace, removed))
                    and not exists(cluster, namespace, "ffs", "epic21")
                    and not exists(cluster, namespace, "configmap", CONFIGMAP)
                ),
                timeout=90,
            )
            epic21_in_git(work, dialog=True)
            back = work.push("The Epic 21 flags again")
            wait_until(
                "the set synced back", lambda: synced(at_revision(gitops, namespace, back)), timeout=60
            )
            wait_synced_and_healthy(gitops, namespace)
        finally:
            events = stop_watch(watch)
        kinds = [e["type"] for e in events]
        assert "DELETED" in kinds and kinds[-1] != "DELETED", kinds  # collected, then re-created
        versions = [e["object"]["data"].get(DIALOG) for e in events if e["type"] != "DELETED"]
        assert set(versions) == {"false"}, versions
        assert served(cluster, namespace, DIALOG) == "false"
        assert replicasets(cluster, namespace)["butler"] == before  # same served flags: no restart
        assert get_rollback(cluster, namespace, "hold-dialog")["status"]["locked"] is True
    finally:
        gitops.argocd.delete(namespace)


CONTROLLER = "system:serviceaccount:argocd:argocd-application-controller"
SERVER = "system:serviceaccount:argocd:argocd-server"


def offered(gitops: GitOps, app: str, kind: str, name: str, namespace: str) -> set[str]:
    """The actions Argo CD's API offers (enabled) on one resource of the Application."""
    out = gitops.argocd.cli(
        "app", "actions", "list", app, "--group=flagops.io", f"--kind={kind}",
        f"--resource-name={name}", f"--namespace={namespace}", "--out=json",
    )  # fmt: skip
    return {a["Action"] for a in json.loads(out.stdout) or [] if not a["Disabled"]}


def run_action(
    gitops: GitOps, app: str, action: str, kind: str, name: str, namespace: str
) -> subprocess.CompletedProcess[str]:
    """`argocd app actions run`, once Argo CD offers the action (it sees the resource's new
    state a moment after the API server has it)."""
    wait_until(
        f"Argo CD to offer {action} on {kind} {name}",
        lambda: action in offered(gitops, app, kind, name, namespace),
        timeout=60,
    )
    return gitops.argocd.cli(
        "app", "actions", "run", app, action, "--group=flagops.io", f"--kind={kind}",
        f"--resource-name={name}", f"--namespace={namespace}",
        check=False,
    )  # fmt: skip


def emergency_request(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    items = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests")["items"]
    return next((r for r in items if r["metadata"]["name"].startswith("epic21-emergency-")), None)


def test_resource_actions_run_through_argocd_under_the_approval_policy(
    cluster: Cluster, gitops: GitOps, namespace: str, operator: OperatorProcess, policies: None
) -> None:
    """approve, release, abort and emergency-rollback through Argo CD's API (the argocd CLI),
    with the chart's approval policy installed: Argo CD's ServiceAccount approves where the
    approvers list it, and is refused with the policy's message where they do not."""
    trusted = {
        "multiFlag": {"initiators": [CONTROLLER], "approvers": [SERVER]},  # Git initiates, Argo CD approves
        "emergency": {"initiators": [SERVER]},
    }
    work = epic21_application(
        gitops,
        namespace,
        "Epic 21 with 21_01a and 21_01b on; Argo CD approves multi-flag rollbacks",
        dialog=True,
        homework=True,
        approval={"rules": trusted},
    )
    app = namespace
    try:
        wait_synced_and_healthy(gitops, namespace)
        work.write("epic21/rollback.yaml", yaml.safe_dump(rollback_of_both("both")))
        work.push("Roll back 21_01a and 21_01b")
        wait_synced_from_git(cluster, namespace, "rollbackrequest", "both")
        wait_phase(cluster, namespace, "both", "AwaitingApproval")
        wait_until(
            "approve and abort offered, nothing else",
            lambda: offered(gitops, app, "RollbackRequest", "both", namespace) == {"approve", "abort"},
            timeout=60,
        )

        done = run_action(gitops, app, "approve", "RollbackRequest", "both", namespace)
        assert done.returncode == 0, done.stderr
        request = wait_phase(cluster, namespace, "both", "Succeeded", timeout=120)
        assert request["spec"]["approvedBy"] == SERVER
        assert served(cluster, namespace, DIALOG) == served(cluster, namespace, HOMEWORK) == "false"

        done = run_action(gitops, app, "release", "RollbackRequest", "both", namespace)
        assert done.returncode == 0, done.stderr
        wait_until("Git's values served again", lambda: served(cluster, namespace, DIALOG) == "true")
        assert served(cluster, namespace, HOMEWORK) == "true"

        # Argo CD's ServiceAccount no longer among the approvers: refused by the policy.
        epic21_in_git(
            work,
            dialog=True,
            homework=True,
            approval={"rules": trusted | {"multiFlag": {"initiators": [CONTROLLER], "approvers": ["olga"]}}},
        )
        work.write("epic21/rollback-2.yaml", yaml.safe_dump(rollback_of_both("again")))
        work.push("Only olga approves multi-flag rollbacks; roll back 21_01a and 21_01b again")
        wait_synced_from_git(cluster, namespace, "rollbackrequest", "again")
        wait_phase(cluster, namespace, "again", "AwaitingApproval")
        refused = run_action(gitops, app, "approve", "RollbackRequest", "again", namespace)
        assert refused.returncode != 0
        assert f"{SERVER} may not approve MultiFlag rollbacks of FeatureFlagSet epic21 (approvers: olga)" in (
            refused.stderr
        ), refused.stderr
        assert not get_rollback(cluster, namespace, "again")["spec"].get("approved")

        done = run_action(gitops, app, "abort", "RollbackRequest", "again", namespace)
        assert done.returncode == 0, done.stderr
        wait_phase(cluster, namespace, "again", "Aborted")
        assert served(cluster, namespace, DIALOG) == "true"

        done = run_action(gitops, app, "emergency-rollback", "FeatureFlagSet", "epic21", namespace)
        assert done.returncode == 0, done.stderr
        created = wait_until(
            "the emergency rollback Argo CD created",
            lambda: emergency_request(cluster, namespace),
            timeout=30,
        )
        assert created["spec"]["all"] is True and created["spec"]["emergency"] is True
        assert not created["metadata"].get("ownerReferences")  # a prune never deletes the lock
        done_at = wait_phase(cluster, namespace, created["metadata"]["name"], "Succeeded", timeout=120)
        assert served(cluster, namespace, DIALOG) == served(cluster, namespace, HOMEWORK) == "false"
        # Compared after all of it: what the actions wrote on Git's requests is no drift, and
        # the request Argo CD created is not Git's.
        compared = wait_until(
            "Argo CD to compare after the emergency rollback",
            lambda: reconciled_after(gitops, app, done_at["status"]["completedAt"]),
            timeout=60,
        )
        assert synced(compared), compared["status"]["sync"]
        assert resource(compared, "RollbackRequest", created["metadata"]["name"]) is None
    finally:
        gitops.argocd.delete(namespace)
