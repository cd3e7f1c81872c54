"""Flags of every type: served as env, flags.json and flagd.json (read back with the real
OpenFeature SDK and flagd provider), rolled back by hand and by triggers, refused when mistyped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from openfeature import api as openfeature
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    apply,
    condition,
    deployment,
    get_rollback,
    get_set,
    patch_rollback,
    request_rollback,
    wait_phase,
    wait_ready,
)
from tests.support import Cluster, kubectl, kubectl_json, wait_until

VALUES: dict[str, tuple[str, Any, Any]] = {  # flag -> (type, value, safeValue)
    "NEW_CHECKOUT": ("boolean", True, False),
    "PAYMENTS_URL": ("string", "https://payments-v2.example", "https://payments.example"),
    "RATE_LIMIT": ("integer", 500, 100),
    "SAMPLE_RATIO": ("number", 0.25, 0.05),
    "CHECKOUT_LAYOUT": ("object", {"columns": 3, "theme": "dark"}, {"columns": 1}),
}
ENV = {  # the environment form each value takes in the ConfigMap
    True: "true",
    False: "false",
    "https://payments-v2.example": "https://payments-v2.example",
    "https://payments.example": "https://payments.example",
    500: "500",
    100: "100",
    0.25: "0.25",
    0.05: "0.05",
}


def typed_set(triggers: dict[str, str] | None = None) -> dict[str, Any]:
    """Every type of flag, read by one Deployment; `triggers` maps a flag to a PromQL query
    that fires a rollback of it when above 0.5."""
    flags = []
    for name, (type_, value, safe) in VALUES.items():
        flag: dict[str, Any] = {
            "name": name,
            "type": type_,
            "safeValue": safe,
            "workloads": [{"name": "checkout"}],
        }
        flag.update({"enabled": value} if type_ == "boolean" else {"value": value})
        if triggers and name in triggers:
            flag["triggers"] = [
                {
                    "name": "breach",
                    "prometheus": triggers[name],
                    "threshold": "0.5",
                    "forSeconds": 0,
                    "intervalSeconds": 1,
                }
            ]
        flags.append(flag)
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": "shop"},
        "spec": {"configMap": "shop-flags", "rollout": {"maxParallel": 1}, "flags": flags},
    }


def configmap(cluster: Cluster, namespace: str) -> dict[str, str]:
    return kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "shop-flags")["data"]  # type: ignore[no-any-return]


def evaluated_by_openfeature(flagd_json: str, tmp_path: Path) -> dict[str, Any]:
    """Every flag, evaluated by the OpenFeature SDK with the flagd provider reading the file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "flagd.json"
    source.write_text(flagd_json)
    # Evaluations before the provider has read the file return the defaults: wait for it.
    openfeature.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(source))
    )
    try:
        client = openfeature.get_client()
        return {
            "NEW_CHECKOUT": client.get_boolean_value("NEW_CHECKOUT", not VALUES["NEW_CHECKOUT"][1]),
            "PAYMENTS_URL": client.get_string_value("PAYMENTS_URL", ""),
            "RATE_LIMIT": client.get_integer_value("RATE_LIMIT", -1),
            "SAMPLE_RATIO": client.get_float_value("SAMPLE_RATIO", -1.0),
            "CHECKOUT_LAYOUT": client.get_object_value("CHECKOUT_LAYOUT", {}),
        }
    finally:
        openfeature.shutdown()


def assert_served(cluster: Cluster, namespace: str, expected: dict[str, Any], tmp_path: Path) -> None:
    """The ConfigMap serves `expected` in all three forms, and the set's status says so."""
    data = configmap(cluster, namespace)
    for name, value in expected.items():
        env = (
            json.dumps(value, sort_keys=True, separators=(",", ":"))
            if isinstance(value, dict)
            else ENV[value]
        )
        assert data[name] == env, (name, data[name])
    assert json.loads(data["flags.json"]) == expected
    assert evaluated_by_openfeature(data["flagd.json"], tmp_path) == expected
    assert get_set(cluster, namespace, "shop")["status"]["effective"] == expected


def test_flags_of_every_type_are_served_rolled_back_and_released(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    apply(cluster, namespace, [deployment("checkout", "shop-flags"), typed_set()])
    wait_ready(cluster, namespace, "shop")
    values = {name: value for name, (_, value, _) in VALUES.items()}
    safe = {name: safe for name, (_, _, safe) in VALUES.items()}
    assert_served(cluster, namespace, values, tmp_path / "before")

    request_rollback(cluster, namespace, "all-safe", flagSet="shop", all=True, emergency=True)
    done = wait_phase(cluster, namespace, "all-safe", "Succeeded")
    changes = {c["name"]: (c["from"], c["to"]) for c in done["status"]["plan"]["flags"]}
    assert changes == {name: (values[name], safe[name]) for name in VALUES}
    assert done["status"]["plan"]["holds"] == safe
    wait_ready(cluster, namespace, "shop")
    assert_served(cluster, namespace, safe, tmp_path / "held")

    patch_rollback(cluster, namespace, "all-safe", release=True)
    wait_until(
        "the spec's values served again",
        lambda: json.loads(configmap(cluster, namespace)["flags.json"]) == values,
    )
    wait_ready(cluster, namespace, "shop")
    assert_served(cluster, namespace, values, tmp_path / "released")
    assert get_rollback(cluster, namespace, "all-safe")["status"]["locked"] is False


def test_triggers_roll_back_flags_of_every_type(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    prometheus: devcluster.Prometheus,
    tmp_path: Path,
) -> None:
    """A trigger on each typed flag whose query breaches at once (vector(1) > 0.5): each fires
    one rollback, and each flag ends at its safe value."""
    breaching = {"server": prometheus.url, "query": "vector(1)"}
    typed = [name for name, (type_, _, _) in VALUES.items() if type_ != "boolean"]
    apply(cluster, namespace, [deployment("checkout", "shop-flags"), typed_set()])
    wait_ready(cluster, namespace, "shop")  # served, each flag's change recorded: then the triggers
    apply(cluster, namespace, typed_set(dict.fromkeys(typed, breaching)))

    def rolled_back() -> dict[str, str] | None:
        items = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests")["items"]
        done = {
            r["spec"]["flags"][0]: r["metadata"]["name"]
            for r in items
            if r.get("status", {}).get("phase") == "Succeeded"
        }
        return done if sorted(done) == sorted(typed) else None

    requests = wait_until("a rollback of each typed flag, Succeeded", rolled_back, timeout=120)
    assert len(kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests")["items"]) == len(
        typed
    )
    wait_ready(cluster, namespace, "shop")
    expected = {name: (safe if name in typed else value) for name, (_, value, safe) in VALUES.items()}
    assert_served(cluster, namespace, expected, tmp_path)
    for flag, request in requests.items():
        assert get_rollback(cluster, namespace, request)["spec"]["reason"].startswith("trigger breach"), flag


def test_a_mistyped_flag_is_refused_by_the_api_server_and_by_flagops(
    cluster: Cluster, namespace: str, operator: OperatorProcess, policies: None
) -> None:
    """The chart's flag-type policy refuses a value not of its flag's type, naming the flag; with
    the policy gone, flagops refuses it itself (InvalidSpec) and serves nothing new."""
    flagset = typed_set()
    flagset["spec"]["flags"][2]["value"] = "500"  # RATE_LIMIT is an integer
    manifest = json.dumps(flagset)

    def apply_once() -> subprocess.CompletedProcess[str]:
        return kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=manifest, check=False)

    # A new policy takes a moment to reach the API server's admission chain.
    refused = wait_until(
        "the flag-type policy in force", lambda: (out := apply_once()).returncode and out.stderr
    )
    assert "flag RATE_LIMIT is of type integer: give it a value and a safeValue, both an integer" in refused
    kubectl(cluster.kubeconfig, "delete", "validatingadmissionpolicybinding", "flagops-flag-types")
    wait_until("admitted without the policy", lambda: apply_once().returncode == 0)

    def invalid() -> dict[str, Any] | None:
        ready = condition(get_set(cluster, namespace, "shop"), "Ready")
        return ready if ready and ready["reason"] == "InvalidSpec" else None

    ready = wait_until("the set InvalidSpec", invalid)
    assert "flag RATE_LIMIT is of type integer: its value must be an integer" in ready["message"]
    assert (
        kubectl(cluster.kubeconfig, "-n", namespace, "get", "configmap", "shop-flags", check=False).returncode
        != 0
    )
