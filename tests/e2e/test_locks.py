"""A lock that cannot be lost: it lives on the RollbackRequest, and what flagops owns is kept true.

Each test takes the lock (a rollback of the dialog flag that Succeeded and holds it), then
loses what Kubernetes treats as a cache, or edits what flagops owns, and checks that the flag
is still served at its safe value and the set shows the lock again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    REPO,
    apply,
    condition,
    deploy_dialog_enabled,
    deployments_settled,
    get_rollback,
    get_set,
    patch,
    replicasets,
    request_rollback,
    served,
    wait_phase,
    wait_terminal,
)
from tests.support import Cluster, Endpoint, kubectl, kubectl_json, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"
CONFIGMAP = "epic21-flags"


def events(cluster: Cluster, namespace: str, reason: str) -> int:
    """How many Events of this reason the namespace has."""
    found = kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "get",
        "events",
        f"--field-selector=reason={reason}",
        "-o",
        "name",
    )
    return len(found.stdout.split())


def hold_the_dialog_flag(cluster: Cluster, namespace: str, **spec: Any) -> dict[str, Any]:
    deploy_dialog_enabled(cluster, namespace)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    request_rollback(cluster, namespace, "rb", flags=[DIALOG], **spec)
    done = wait_phase(cluster, namespace, "rb", "Succeeded")
    assert served(cluster, namespace, DIALOG) == "false"
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    return done


def lock_shown(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    obj = get_set(cluster, namespace)
    overrides = obj.get("status", {}).get("overrides") or []
    held = [(o["flag"], o["value"], o["heldBy"]) for o in overrides] == [(DIALOG, False, "rb")]
    return obj if held else None


def served_now(cluster: Cluster, namespace: str) -> str | None:
    """The dialog flag's value in the ConfigMap, or None while there is no ConfigMap."""
    cm = kubectl(
        cluster.kubeconfig, "-n", namespace, "get", "configmap", CONFIGMAP, "-o", "json", check=False
    )
    return json.loads(cm.stdout)["data"][DIALOG] if cm.returncode == 0 else None  # type: ignore[no-any-return]


def assert_still_held(cluster: Cluster, namespace: str, butler_sets: set[str]) -> None:
    """Within 5 s the set shows the lock again; the flag is served at its safe value, and butler
    was never restarted (so it never ran with the flag on)."""
    wait_until("the set to show the lock again", lambda: lock_shown(cluster, namespace), timeout=5)
    assert served_now(cluster, namespace) == "false"
    assert replicasets(cluster, namespace)["butler"] == butler_sets


def test_wiping_the_sets_status_changes_nothing_that_is_served(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    hold_the_dialog_flag(cluster, namespace)
    before = replicasets(cluster, namespace)["butler"]

    def wipe(kind: str, name: str, status: str) -> None:
        kubectl(
            cluster.kubeconfig,
            "-n",
            namespace,
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        )

    wipe("ffs", "epic21", '{"status":{"overrides":null,"effective":null}}')
    assert_still_held(cluster, namespace, before)
    # The request's own status can go too: its metadata still holds the lock.
    wipe("rollback", "rb", '{"status":null}')
    wipe("ffs", "epic21", '{"status":{"overrides":null}}')
    assert_still_held(cluster, namespace, before)


def test_a_set_deleted_and_re_applied_adopts_its_configmap_and_keeps_the_lock(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    hold_the_dialog_flag(cluster, namespace)
    before = replicasets(cluster, namespace)["butler"]
    manifest = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "ffs", "epic21")
    # Orphaned rather than collected, so that the new set finds its predecessor's ConfigMap
    # every time (the garbage collector may also be slower than the re-sync, as in the report).
    kubectl(cluster.kubeconfig, "-n", namespace, "delete", "ffs", "epic21", "--cascade=orphan", "--wait=true")
    orphan = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", CONFIGMAP)
    assert not orphan["metadata"].get("ownerReferences")
    # What a GitOps prune and re-sync does: the same set, a new object.
    apply(
        cluster,
        namespace,
        {k: manifest[k] for k in ("apiVersion", "kind", "spec")} | {"metadata": {"name": "epic21"}},
    )
    assert_still_held(cluster, namespace, before)
    obj = get_set(cluster, namespace)
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "True", ready
    cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", CONFIGMAP)
    assert [ref["uid"] for ref in cm["metadata"]["ownerReferences"]] == [obj["metadata"]["uid"]]
    wait_until(
        "an Event saying the ConfigMap was adopted", lambda: events(cluster, namespace, "ConfigMapAdopted")
    )


def test_a_restore_without_status_keeps_the_lock(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> None:
    """A backup restored into the namespace (objects re-created, no status), operator stopped
    meanwhile as during a restore of the operator itself."""
    op = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log", devcluster.free_port())
    op.start()
    op.wait_started()
    try:
        hold_the_dialog_flag(cluster, namespace)
        before = replicasets(cluster, namespace)["butler"]
        backup = [
            kubectl_json(
                cluster.kubeconfig, "-n", namespace, "get", kind, "epic21" if kind == "ffs" else "rb"
            )
            for kind in ("ffs", "rollback")
        ]
    finally:
        op.stop()
    kubectl(cluster.kubeconfig, "-n", namespace, "delete", "rollback", "rb", "--wait=true")
    # Orphaned rather than collected, so that the new set finds its predecessor's ConfigMap
    # every time (the garbage collector may also be slower than the re-sync, as in the report).
    kubectl(cluster.kubeconfig, "-n", namespace, "delete", "ffs", "epic21", "--cascade=orphan", "--wait=true")
    orphan = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", CONFIGMAP)
    assert not orphan["metadata"].get("ownerReferences")
    restored = [
        {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {
                "name": obj["metadata"]["name"],
                "annotations": obj["metadata"].get("annotations", {}),
            },
            "spec": obj["spec"],
        }
        for obj in backup
    ]
    apply(cluster, namespace, restored)
    op.start()
    try:
        op.wait_started()
        assert_still_held(cluster, namespace, before)
    finally:
        op.stop()


def test_an_edited_or_deleted_configmap_is_put_back_within_two_seconds(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    hold_the_dialog_flag(cluster, namespace)

    def drift_events() -> int:
        return events(cluster, namespace, "ConfigMapDriftCorrected")

    patch(cluster, namespace, "configmap", CONFIGMAP, {"data": {DIALOG: "true"}})
    wait_until("the edit undone", lambda: served(cluster, namespace, DIALOG) == "false", timeout=2)
    wait_until("a drift Event", lambda: drift_events() >= 1, timeout=5)

    kubectl(cluster.kubeconfig, "-n", namespace, "delete", "configmap", CONFIGMAP)

    def recreated() -> bool:
        result = kubectl(cluster.kubeconfig, "-n", namespace, "get", "configmap", CONFIGMAP, check=False)
        return result.returncode == 0 and served(cluster, namespace, DIALOG) == "false"

    wait_until("the ConfigMap re-created", recreated, timeout=2)
    wait_until("a second drift Event", lambda: drift_events() >= 2, timeout=5)


def test_a_removed_restart_annotation_is_put_back(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    hold_the_dialog_flag(cluster, namespace)

    def annotation() -> str | None:
        butler = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployment", "butler")
        return (butler["spec"]["template"]["metadata"].get("annotations") or {}).get("flagops.io/flags-hash")

    held_hash = annotation()
    assert held_hash
    remove = {"op": "remove", "path": "/spec/template/metadata/annotations/flagops.io~1flags-hash"}
    patch(cluster, namespace, "deployment", "butler", [remove])
    wait_until("the annotation put back", lambda: annotation() == held_hash, timeout=5)
    wait_until(
        "an Event says so", lambda: events(cluster, namespace, "WorkloadAnnotationCorrected"), timeout=5
    )
    assert served(cluster, namespace, DIALOG) == "false"


def test_a_check_removed_from_the_set_mid_validation_does_not_change_the_rollback(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    slow = {
        "name": "health",
        "intervalSeconds": 1,
        "successes": 4,
        "http": {"url": f"{endpoint.url}/healthz"},
    }
    flagset = json.loads(json.dumps(deploy_dialog_enabled(cluster, namespace)))
    set_body = {k: flagset[k] for k in ("apiVersion", "kind", "spec")} | {"metadata": {"name": "epic21"}}
    set_body["spec"]["flags"][0]["checks"] = [slow]
    apply(cluster, namespace, set_body)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    request_rollback(cluster, namespace, "rb", flags=[DIALOG])
    wait_phase(cluster, namespace, "rb", "Validating")
    del set_body["spec"]["flags"][0]["checks"]
    apply(cluster, namespace, set_body)
    status = wait_terminal(cluster, namespace, "rb")
    assert status["phase"] == "Succeeded", status["message"]
    assert [(ch["name"], ch["phase"], ch["consecutiveSuccesses"]) for ch in status["checks"]] == [
        ("health", "Passed", 4)
    ]


def test_a_pass_that_keeps_failing_ends_the_request_with_internal_error(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    op = OperatorProcess(
        cluster.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        devcluster.free_port(),
        extra_env={"PYTHONPATH": str(REPO / "tests/e2e/faults")},
    )
    op.start()
    try:
        op.wait_started()
        deploy_dialog_enabled(cluster, namespace)
        boom = {"name": "boom", "http": {"url": f"{endpoint.url}/healthz"}}
        request_rollback(cluster, namespace, "rb", flags=[DIALOG], checks=[boom])
        status = wait_terminal(cluster, namespace, "rb", timeout=90)
    finally:
        op.stop()
    assert status["phase"] == "Failed"
    assert condition({"status": status}, "Succeeded")["reason"] == "InternalError"  # type: ignore[index]
    assert "failed 5 times in a row" in status["message"]
    assert "injected fault while recording a measurement of check boom" in status["message"]
    assert f"{DIALOG} stay held at the safe value" in status["message"]
    assert "flagops.io/holds" in get_rollback(cluster, namespace, "rb")["metadata"]["annotations"]


@pytest.mark.parametrize("field", ["flags", "requires"])
def test_duplicates_are_refused_by_the_api_server(
    cluster: Cluster, crds: None, namespace: str, field: str
) -> None:
    if field == "flags":
        body = {
            "apiVersion": "flagops.io/v1alpha1",
            "kind": "RollbackRequest",
            "metadata": {"name": "twice"},
            "spec": {"flagSet": "epic21", "flags": [DIALOG, DIALOG]},
        }
    else:
        body = {
            "apiVersion": "flagops.io/v1alpha1",
            "kind": "FeatureFlagSet",
            "metadata": {"name": "twice"},
            "spec": {"flags": [{"name": "A"}, {"name": "B", "requires": ["A", "A"]}]},
        }
    result = kubectl(
        cluster.kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(body), check=False
    )
    assert result.returncode != 0
    assert "Duplicate value" in result.stderr, result.stderr
