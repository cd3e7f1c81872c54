"""FeatureFlagSet end to end: ConfigMap, selective restarts, conflicts, bad input."""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from flagops.models.flagset import WorkloadKind
from flagops.reconcile.flagset import HASH_ANNOTATION, rollout_progress, template_annotations
from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    EXAMPLE,
    apply,
    condition,
    deployment,
    deployments_settled,
    get_set,
    load_example_set,
    patch,
    replicasets,
    request_rollback,
    set_flag,
    start_watch,
    stop_watch,
    wait_condition,
    wait_phase,
    wait_ready,
)
from tests.support import Cluster, KubectlError, kubectl, kubectl_json, wait_until


def test_configmap_written_with_owner_reference(
    cluster: Cluster, namespace: str, epic21: dict[str, Any]
) -> None:
    cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "epic21-flags")
    owner = cm["metadata"]["ownerReferences"]
    assert owner == [
        {
            "apiVersion": "flagops.io/v1alpha1",
            "kind": "FeatureFlagSet",
            "name": "epic21",
            "uid": epic21["metadata"]["uid"],
            "controller": True,
        }
    ]
    data = cm["data"]
    assert data["USE_NEW_DIALOG_CONTEXT_REPO"] == "false"
    assert json.loads(data["flags.json"]) == {flag["name"]: False for flag in epic21["spec"]["flags"]}
    flagd = json.loads(data["flagd.json"])
    assert flagd["flags"]["USE_NEW_STORAGE_ADAPTER"]["defaultVariant"] == "off"
    status = epic21["status"]
    assert status["configMap"]["name"] == "epic21-flags"
    assert status["configMap"]["hash"] == cm["metadata"]["annotations"]["flagops.io/flags-hash"]
    assert {w["name"]: w["state"] for w in status["workloads"]} == {
        "api": "Ready",
        "butler": "Ready",
        "workers": "Ready",
    }
    assert status["flagCount"] == 6 and status["enabledCount"] == 0
    assert status["lastApply"]["configMapWrittenAt"]


def test_toggle_restarts_only_consuming_workloads(
    cluster: Cluster, namespace: str, epic21: dict[str, Any]
) -> None:
    before = replicasets(cluster, namespace)
    set_flag(cluster, namespace, 0, True)  # USE_NEW_DIALOG_CONTEXT_REPO -> butler only

    obj = wait_ready(cluster, namespace)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    after = replicasets(cluster, namespace)
    assert len(after["butler"] - before["butler"]) == 1, "butler consumes the flag: one new ReplicaSet"
    assert after["workers"] == before["workers"], "workers do not consume it"
    assert after["api"] == before["api"], "api does not consume it"

    cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "epic21-flags")
    assert cm["data"]["USE_NEW_DIALOG_CONTEXT_REPO"] == "true"
    assert obj["status"]["effective"]["USE_NEW_DIALOG_CONTEXT_REPO"] is True
    changed = {f["name"]: f["lastChangedAt"] for f in obj["status"]["flags"]}
    assert changed["USE_NEW_DIALOG_CONTEXT_REPO"] > changed["USE_NEW_STORAGE_ADAPTER"]
    butler = next(w for w in obj["status"]["workloads"] if w["name"] == "butler")
    assert butler["readyAt"] >= butler["restartedAt"]
    timings = obj["status"]["lastApply"]
    assert timings["rolloutsCompletedAt"] >= timings["configMapWrittenAt"]
    assert timings["rolloutSeconds"] >= 0


def test_operator_restart_restarts_nothing(
    cluster: Cluster, namespace: str, epic21: dict[str, Any], operator: OperatorProcess
) -> None:
    before = replicasets(cluster, namespace)
    generations = {
        d["metadata"]["name"]: d["metadata"]["generation"]
        for d in kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployments")["items"]
    }
    operator.restart()

    # A change that touches no served value: once the new operator has observed it,
    # it has reconciled the set, and must not have patched any workload.
    reword = {"op": "replace", "path": "/spec/flags/0/description", "value": "reworded"}
    patch(cluster, namespace, "featureflagset", "epic21", [reword])
    wait_ready(cluster, namespace)
    after = {
        d["metadata"]["name"]: d["metadata"]["generation"]
        for d in kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployments")["items"]
    }
    assert after == generations
    assert replicasets(cluster, namespace) == before
    assert "restarting Deployment" not in operator.log.read_text().split("----- start #2 -----")[1]


def test_foreign_configmap_left_intact(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "create",
        "configmap",
        "shared-config",
        "--from-literal=USE_NEW_STORAGE_ADAPTER=keep-me",
        "--from-literal=other=value",
    )
    original = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "shared-config")

    flagset = load_example_set()
    flagset["spec"]["configMap"] = "shared-config"
    apply(cluster, namespace, flagset)
    cond = wait_condition(cluster, namespace, "Degraded", "True", "ConfigMapConflict")
    assert "shared-config already exists" in cond["message"] and "spec.configMap" in cond["message"]
    ready = condition(get_set(cluster, namespace), "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "ConfigMapConflict"

    now = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "shared-config")
    assert now["metadata"]["resourceVersion"] == original["metadata"]["resourceVersion"]
    assert now == original

    # Pointing the set at a free name resolves the conflict (the workloads are still missing here).
    flagset["spec"]["configMap"] = "epic21-flags"
    apply(cluster, namespace, flagset)
    wait_condition(cluster, namespace, "Degraded", "True", "WorkloadMissing")
    kubectl(cluster.kubeconfig, "-n", namespace, "get", "configmap", "epic21-flags")


def test_deleting_the_set_removes_its_configmap(
    cluster: Cluster, namespace: str, epic21: dict[str, Any]
) -> None:
    kubectl(cluster.kubeconfig, "-n", namespace, "delete", "featureflagset", "epic21")

    def gone() -> bool:
        result = kubectl(cluster.kubeconfig, "-n", namespace, "get", "configmap", "epic21-flags", check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    wait_until("the ConfigMap to be garbage-collected", gone)


def test_prerequisite_disabled_is_not_applied(
    cluster: Cluster, namespace: str, epic21: dict[str, Any]
) -> None:
    set_flag(cluster, namespace, 4, True)  # STORAGE_ENFORCE_CHECKSUM requires USE_NEW_STORAGE_ADAPTER
    cond = wait_condition(cluster, namespace, "Degraded", "True", "PrerequisiteDisabled")
    assert "STORAGE_ENFORCE_CHECKSUM is enabled but requires USE_NEW_STORAGE_ADAPTER" in cond["message"]
    cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "epic21-flags")
    assert cm["data"]["STORAGE_ENFORCE_CHECKSUM"] == "false"

    set_flag(cluster, namespace, 2, True)  # enable the prerequisite: now both are served
    obj = wait_ready(cluster, namespace)
    assert obj["status"]["effective"]["STORAGE_ENFORCE_CHECKSUM"] is True
    assert obj["status"]["effective"]["USE_NEW_STORAGE_ADAPTER"] is True


def test_strategy_none_writes_configmap_and_restarts_nothing(
    cluster: Cluster, namespace: str, epic21: dict[str, Any]
) -> None:
    before = replicasets(cluster, namespace)
    flagset = copy.deepcopy(load_example_set())
    flagset["spec"]["rollout"]["strategy"] = "None"
    flagset["spec"]["flags"][0]["enabled"] = True
    apply(cluster, namespace, flagset)

    def served() -> bool:
        cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "epic21-flags")
        return bool(cm["data"]["USE_NEW_DIALOG_CONTEXT_REPO"] == "true")

    wait_until("the flag to be served", served)
    obj = wait_ready(cluster, namespace)
    progressing = condition(obj, "Progressing")
    assert progressing is not None and progressing["reason"] == "RestartsDisabled"
    assert replicasets(cluster, namespace) == before


def test_missing_workload_reported_then_resolved(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", str(EXAMPLE / "flagset.yaml"))
    cond = wait_condition(cluster, namespace, "Degraded", "True", "WorkloadMissing")
    assert "Deployment api not found" in cond["message"]
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", str(EXAMPLE / "workloads.yaml"))
    wait_ready(cluster, namespace)


INVALID = [
    ({"flags": [{"name": "A"}, {"name": "A"}]}, "flag names must be unique within a set"),
    ({"flags": [{"name": "A", "requires": ["A"]}]}, "flag A requires itself"),
    ({"flags": [{"name": "A", "requires": ["B"]}]}, "requires must name flags of this set"),
    ({"flags": [{"name": "lower_case"}]}, "should match '^[A-Z][A-Z0-9_]*$'"),
    ({"flags": [{"name": "A", "workloads": [{"kind": "Pod", "name": "x"}]}]}, 'Unsupported value: "Pod"'),
    ({"flags": [], "rollout": {"maxParallel": 0}}, "should be greater than or equal to 1"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_set_rejected_with_rule_message(
    cluster: Cluster, crds: None, namespace: str, spec: dict[str, Any], message: str
) -> None:
    obj = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    with pytest.raises(KubectlError) as err:
        apply(cluster, namespace, obj)
    assert message in err.value.stderr


def test_kubectl_get_ffs_columns(
    cluster: Cluster, namespace: str, epic21: dict[str, Any], tmp_path: Path
) -> None:
    out = kubectl(cluster.kubeconfig, "-n", namespace, "get", "ffs").stdout.splitlines()
    assert out[0].split() == ["NAME", "FLAGS", "ENABLED", "OVERRIDES", "READY", "AGE"]
    assert out[1].split()[:5] == ["epic21", "6", "0", "0", "True"]
    assert kubectl(cluster.kubeconfig, "-n", namespace, "get", "flagops").stdout.count("epic21") == 1


def one_flag_set(name: str, *, enabled: bool) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": name},
        "spec": {
            "rollout": {"maxParallel": 5},
            "flags": [
                {
                    "name": "NEW_CHECKOUT",
                    "enabled": enabled,
                    "workloads": [{"kind": "Deployment", "name": name}],
                }
            ],
        },
    }


def most_rolling_at_once(events: list[dict[str, Any]], started: dict[str, str]) -> int:
    """Over the API server's sequence of Deployment versions: the most Deployments at any one
    time whose template carries a new flags hash and whose rollout (as flagops judges it, the
    `kubectl rollout status` tests) has not finished."""
    rolling: set[str] = set()
    most = 0
    for event in events:
        obj = event["object"]
        name = obj["metadata"]["name"]
        restarted = template_annotations(obj).get(HASH_ANNOTATION) != started.get(name)
        if restarted and not rollout_progress(WorkloadKind.DEPLOYMENT, obj).done:
            rolling.add(name)
        else:
            rolling.discard(name)
        most = max(most, len(rolling))
    return most


def test_the_restart_budget_is_never_exceeded_across_sets(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> None:
    """--max-concurrent-restarts=2 and a flag turned on in five sets at once, each read by its
    own Deployment: the five roll out in waves, never more than two at a time, and all finish."""
    names = [f"shop-{i}" for i in range(5)]
    op = OperatorProcess(
        cluster.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        devcluster.free_port(),
        extra_args=("--max-concurrent-restarts=2",),
    )
    op.start()
    try:
        op.wait_started()
        apply(
            cluster,
            namespace,
            [deployment(n, n, ready_after="3s") for n in names]
            + [one_flag_set(n, enabled=False) for n in names],
        )
        for name in names:
            wait_ready(cluster, namespace, name)
        wait_until("deployments settled", lambda: deployments_settled(cluster, namespace), timeout=120)
        started = {
            d["metadata"]["name"]: template_annotations(d).get(HASH_ANNOTATION)
            for d in kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployments")["items"]
        }
        watch = start_watch(cluster, namespace, "deployments")
        try:
            apply(cluster, namespace, [one_flag_set(n, enabled=True) for n in names])

            def waiting_for_the_budget() -> str | None:
                sets = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "ffs")["items"]
                workloads = [w for s in sets for w in s.get("status", {}).get("workloads", [])]
                return next(
                    (w["message"] for w in workloads if "--max-concurrent-restarts=2" in w["message"]), None
                )

            waiting = wait_until("a set waiting for the budget", waiting_for_the_budget, timeout=60)
            assert "rollouts in progress in other FeatureFlagSets" in waiting

            def all_rolled_out() -> bool:
                deployments = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployments")["items"]
                return len(deployments) == len(names) and all(
                    template_annotations(d).get(HASH_ANNOTATION) != started[d["metadata"]["name"]]
                    and rollout_progress(WorkloadKind.DEPLOYMENT, d).done
                    for d in deployments
                )

            wait_until("all five rolled out with the flag on", all_rolled_out, timeout=180)
        finally:
            events = stop_watch(watch)
        assert most_rolling_at_once(events, started) == 2  # in waves of two: the budget, and all of it
        for name in names:
            cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", name)
            assert cm["data"]["NEW_CHECKOUT"] == "true"
    finally:
        op.stop()


def test_restarts_wait_for_the_change_window_and_a_rollback_does_not(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """A flag turned on outside the set's change window: the ConfigMap serves it at once, the
    restart waits (Progressing/WaitingForWindow, saying when) and happens when the window (a
    few seconds long) opens; a rollback outside any window restarts at once."""
    apply(
        cluster,
        namespace,
        [deployment("shop", "shop", ready_after="3s"), one_flag_set("shop", enabled=False)],
    )
    wait_ready(cluster, namespace, "shop")
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    opens = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=15)).replace(microsecond=0)
    closes = opens + datetime.timedelta(seconds=10)
    flagset = one_flag_set("shop", enabled=True)
    flagset["spec"]["rollout"]["windows"] = [{"start": f"{opens:%H:%M:%S}", "end": f"{closes:%H:%M:%S}"}]
    before = replicasets(cluster, namespace)["shop"]
    apply(cluster, namespace, flagset)

    waiting = wait_condition(cluster, namespace, "Progressing", "True", "WaitingForWindow", name="shop")
    assert f"at {opens:%Y-%m-%dT%H:%M:%SZ}" in waiting["message"]
    cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "shop")
    assert cm["data"]["NEW_CHECKOUT"] == "true"  # served before the window
    assert replicasets(cluster, namespace)["shop"] == before  # not restarted

    ready = wait_ready(cluster, namespace, "shop", timeout=60)
    restarted_at = datetime.datetime.fromisoformat(ready["status"]["workloads"][0]["restartedAt"])
    assert restarted_at >= opens, restarted_at
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    assert len(replicasets(cluster, namespace)["shop"] - before) == 1

    # The next window hours away: a rollback restarts at once all the same.
    later = opens + datetime.timedelta(hours=3)
    flagset["spec"]["rollout"]["windows"] = [
        {"start": f"{later:%H:%M}", "end": f"{later + datetime.timedelta(hours=1):%H:%M}"}
    ]
    apply(cluster, namespace, flagset)
    wait_ready(cluster, namespace, "shop")
    generation = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployment", "shop")["metadata"][
        "generation"
    ]
    request_rollback(cluster, namespace, "shop-off", flagSet="shop", flags=["NEW_CHECKOUT"])
    wait_phase(cluster, namespace, "shop-off", "Succeeded")
    shop = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployment", "shop")
    assert shop["metadata"]["generation"] == generation + 1  # restarted, with the window hours away
