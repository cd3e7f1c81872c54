"""Install and security, proven on the real API server: manifests, RBAC, Pod Security, approval."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    REPO,
    apply,
    bind,
    deploy_dialog_enabled,
    deployments_settled,
    get_set,
    role,
    served,
    set_flag,
    wait_phase,
    wait_ready,
)
from tests.support import Cluster, KubectlError, kubectl, kubectl_json, wait_until

MANIFESTS = REPO / "manifests"
SYSTEM = "flagops-system"
DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"


def helm() -> str:
    return str(devcluster.build_binaries(quiet=True)["helm"])


@pytest.fixture(scope="module")
def installed(cluster: Cluster, crds: None) -> Iterator[None]:
    """`kubectl apply -f manifests/`, as a user installs flagops; removed afterwards (but the CRDs)."""
    kubectl(cluster.kubeconfig, "apply", "-f", str(MANIFESTS / "00-namespace.yaml"))
    kubectl(cluster.kubeconfig, "apply", "-f", str(MANIFESTS))
    try:
        yield
    finally:
        kubectl(
            cluster.kubeconfig,
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            str(MANIFESTS / "10-flagops.yaml"),
            "-f",
            str(MANIFESTS / "00-namespace.yaml"),
            check=False,
        )


def serviceaccount_config(cluster: Cluster, namespace: str, name: str, path: Path) -> Path:
    return devcluster.serviceaccount_kubeconfig(cluster.kubeconfig, namespace, name, path)


def test_manifests_are_rendered_from_the_chart() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack/render-manifests.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watchNamespaces={team-a,team-b}"],
        ["--set", "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true"],
        ["--set", "allowedTargets={10.0.0.0/8,*.monitoring.svc:9090}"],
        [
            "--set",
            "hostNetwork=true,metrics.address=127.0.0.1,extraEnv[0].name=KUBERNETES_SERVICE_HOST,"
            "extraEnv[0].value=127.0.0.1",
        ],
    ],
)
def test_chart_lints_and_renders(values: list[str]) -> None:
    lint = subprocess.run(
        [helm(), "lint", "--strict", str(REPO / "charts/flagops"), *values],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = subprocess.run(
        [helm(), "template", "flagops", str(REPO / "charts/flagops"), *values],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = [line.split(": ", 1)[1] for line in rendered.splitlines() if line.startswith("kind: ")]
    assert "Deployment" in kinds
    if "watchNamespaces" in " ".join(values):
        assert "ClusterRole" not in kinds and kinds.count("Role") == 3  # 2 watched + the Lease's
        assert "--namespace=team-a" in rendered
    if "serviceMonitor" in " ".join(values):
        assert "ServiceMonitor" in kinds and "PrometheusRule" in kinds
    if "allowedTargets" in " ".join(values):
        assert "- --allowed-targets=10.0.0.0/8\n" in rendered
        assert "- --allowed-targets=*.monitoring.svc:9090\n" in rendered
    else:
        assert "--allowed-targets" not in rendered
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    probes = [container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]]
    if "hostNetwork" in " ".join(values):
        assert pod["spec"]["hostNetwork"] is True and pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
        assert "--metrics-address=127.0.0.1" in container["args"]
        assert [p.get("host") for p in probes] == ["127.0.0.1", "127.0.0.1"]
        assert {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"} in container["env"]
    else:
        assert "strategy" not in deployment["spec"]
        assert "hostNetwork" not in pod["spec"] and not any(
            "--metrics-address" in a for a in container["args"]
        )
        assert [p.get("host") for p in probes] == [None, None]
    assert kinds.count("ValidatingAdmissionPolicy") == 3  # approval, flag types, delegation


def test_server_side_dry_run_and_restricted_pod_security(cluster: Cluster, installed: None) -> None:
    out = kubectl(cluster.kubeconfig, "apply", "--dry-run=server", "-f", str(MANIFESTS)).stdout
    assert "deployment.apps/flagops" in out and "(server dry run)" in out
    ns = kubectl_json(cluster.kubeconfig, "get", "namespace", SYSTEM)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The pods were admitted by the restricted Pod Security level (kwok then runs them).
    kubectl(
        cluster.kubeconfig,
        "-n",
        SYSTEM,
        "wait",
        "deployment/flagops",
        "--for=condition=Available",
        "--timeout=90s",
        timeout=100,
    )
    pod = kubectl_json(
        cluster.kubeconfig, "-n", SYSTEM, "get", "pods", "-l", "app.kubernetes.io/name=flagops"
    )
    container = pod["items"][0]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"] and container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_shipped_rbac_has_no_wildcards(installed: None, cluster: Cluster) -> None:
    role = kubectl_json(cluster.kubeconfig, "get", "clusterrole", "flagops")
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        # Two deletes: a drill's finished runs past its historyLimit (no power over locks, which
        # patch, the holds annotation, already has), and a set's revisions past its
        # revisionHistoryLimit (ControllerRevisions, which flagops labels as its own).
        if "delete" in rule["verbs"]:
            assert (rule["apiGroups"], rule["resources"]) in (
                (["flagops.io"], ["rollbackrequests"]),
                (["apps"], ["controllerrevisions"]),
            ), rule
    secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


def test_operator_runs_the_scenario_under_its_own_serviceaccount(
    cluster: Cluster, installed: None, namespace: str, tmp_path: Path
) -> None:
    token_config = serviceaccount_config(cluster, SYSTEM, "flagops", tmp_path / "flagops.kubeconfig")
    # Leader election on, as the chart runs it: the shipped Role covers the Lease too.
    op = OperatorProcess(
        token_config,
        None,
        tmp_path / "operator.log",
        metrics_port=devcluster.free_port(),
        extra_args=("--leader-elect", f"--leader-election-namespace={SYSTEM}"),
    )
    op.start()
    try:
        kubectl(
            cluster.kubeconfig, "-n", namespace, "apply", "-f", str(REPO / "examples/epic21/workloads.yaml")
        )
        kubectl(
            cluster.kubeconfig, "-n", namespace, "apply", "-f", str(REPO / "examples/epic21/flagset.yaml")
        )
        wait_ready(cluster, namespace)
        set_flag(cluster, namespace, 0, True)
        wait_until("the flag served", lambda: served(cluster, namespace, DIALOG) == "true")
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
        # The example set's authority matrix has on-call initiate this one (see test_security.py);
        # its smoke-test Job needs the right to create Jobs.
        role(
            cluster,
            namespace,
            "oncall",
            ("get,create", "rollbackrequests.flagops.io"),
            ("create", "jobs.batch"),
        )
        for name in ("oncall-rollbackrequests", "oncall-jobs"):
            bind(cluster, namespace, name, "--group=ep21-oncall")
        kubectl(
            cluster.kubeconfig,
            "--as=carol",
            "--as-group=ep21-oncall",
            "-n",
            namespace,
            "create",
            "-f",
            str(REPO / "examples/epic21/rollback-21-01a.yaml"),
        )
        wait_phase(cluster, namespace, "rollback-21-01a", "Succeeded")
        assert served(cluster, namespace, DIALOG) == "false"
    finally:
        op.stop()
    # An RBAC denial reads 'User "system:serviceaccount:..." cannot VERB resource ...'.
    denials = [line for line in op.log.read_text().splitlines() if f"system:serviceaccount:{SYSTEM}" in line]
    assert denials == []


def test_namespaced_mode_is_confined_to_its_namespaces(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> None:
    system = f"{namespace}-op"[:63]
    other = f"{namespace}-other"[:63]
    for ns in (system, other):
        kubectl(cluster.kubeconfig, "create", "namespace", ns)
    try:
        rendered = subprocess.run(
            [
                helm(),
                "template",
                "flagops",
                str(REPO / "charts/flagops"),
                "--namespace",
                system,
                "--set",
                f"watchNamespaces={{{namespace}}}",
                "--set",
                "approvalPolicy.enabled=false",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        kubectl(cluster.kubeconfig, "apply", "-f", "-", stdin=rendered)
        token_config = serviceaccount_config(cluster, system, "flagops", tmp_path / "ns.kubeconfig")

        op = OperatorProcess(
            token_config, namespace, tmp_path / "operator.log", metrics_port=devcluster.free_port()
        )
        op.start()
        try:
            kubectl(
                cluster.kubeconfig,
                "-n",
                namespace,
                "apply",
                "-f",
                str(REPO / "examples/epic21/workloads.yaml"),
            )
            kubectl(
                cluster.kubeconfig, "-n", namespace, "apply", "-f", str(REPO / "examples/epic21/flagset.yaml")
            )
            wait_ready(cluster, namespace)
        finally:
            op.stop()
        assert f"system:serviceaccount:{system}" not in op.log.read_text(), op.tail()

        api = config.new_client_from_config(str(token_config))
        try:
            custom = client.CustomObjectsApi(api)
            with pytest.raises(ApiException) as err:
                custom.list_namespaced_custom_object("flagops.io", "v1alpha1", other, "featureflagsets")
            assert err.value.status == 403
            with pytest.raises(ApiException) as err:
                custom.list_cluster_custom_object("flagops.io", "v1alpha1", "featureflagsets")
            assert err.value.status == 403
            with pytest.raises(ApiException) as err:
                client.CoreV1Api(api).read_namespaced_config_map("kube-root-ca.crt", other)
            assert err.value.status == 403
        finally:
            api.close()
    finally:
        for ns in (system, other):
            kubectl(cluster.kubeconfig, "delete", "namespace", ns, "--wait=false", check=False)


def grant_rollback_patch(cluster: Cluster, namespace: str, *accounts: str) -> None:
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "create",
        "role",
        "approver",
        "--verb=get,patch",
        "--resource=rollbackrequests.flagops.io",
    )
    for account in accounts:
        kubectl(cluster.kubeconfig, "-n", namespace, "create", "serviceaccount", account)
        kubectl(
            cluster.kubeconfig,
            "-n",
            namespace,
            "create",
            "rolebinding",
            f"approver-{account}",
            "--role=approver",
            f"--serviceaccount={namespace}:{account}",
        )


def approve(config_path: Path, namespace: str, approved_by: str | None) -> None:
    patch: dict[str, Any] = {"spec": {"approved": True}}
    if approved_by is not None:
        patch["spec"]["approvedBy"] = approved_by
    kubectl(config_path, "-n", namespace, "patch", "rollback", "rb", "--type=merge", "-p", json.dumps(patch))


def test_only_listed_approvers_can_approve_and_are_recorded(
    cluster: Cluster, installed: None, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    lead = f"system:serviceaccount:{namespace}:lead"
    oncall = f"system:serviceaccount:{namespace}:oncall"
    grant_rollback_patch(cluster, namespace, "lead", "oncall")
    deploy_dialog_enabled(cluster, namespace, approval={"approvers": [lead], "rules": {}})
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "rb"},
        "spec": {"flagSet": "epic21", "flags": [DIALOG, "USE_NEW_STORAGE_ADAPTER"]},
    }
    apply(cluster, namespace, body)
    wait_phase(cluster, namespace, "rb", "AwaitingApproval")

    lead_config = serviceaccount_config(cluster, namespace, "lead", tmp_path / "lead")
    oncall_config = serviceaccount_config(cluster, namespace, "oncall", tmp_path / "oncall")
    with pytest.raises(KubectlError) as err:
        approve(oncall_config, namespace, oncall)
    assert f"{oncall} may not approve MultiFlag rollbacks of FeatureFlagSet epic21" in err.value.stderr
    with pytest.raises(KubectlError) as err:
        approve(lead_config, namespace, None)
    assert "approving needs spec.approvedBy set to your own user name" in err.value.stderr
    with pytest.raises(KubectlError) as err:
        approve(lead_config, namespace, oncall)  # naming someone else
    assert "approving needs spec.approvedBy" in err.value.stderr
    # Creating a request already approved is approving too.
    with pytest.raises(KubectlError):
        apply(
            cluster,
            namespace,
            {
                **body,
                "metadata": {"name": "rb2"},
                "spec": {**body["spec"], "approved": True, "approvedBy": "someone"},
            },
        )

    approve(lead_config, namespace, lead)
    done = wait_phase(cluster, namespace, "rb", "Succeeded")
    assert done["status"]["approvedBy"] == lead
    assert get_set(cluster, namespace)["status"]["overrideCount"] == 2
