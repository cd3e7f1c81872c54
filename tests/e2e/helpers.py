"""Helpers for the e2e tests of FeatureFlagSets and RollbackRequests."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from tests.support import Cluster, kubectl, kubectl_json, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "epic21"


def load_example_set() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE / "flagset.yaml").read_text())  # type: ignore[no-any-return]


def deployment(name: str, configmap: str, *, ready_after: str | None = None) -> dict[str, Any]:
    """A Deployment that passes the restricted Pod Security Standard and reads `configmap` as its
    environment; with `ready_after`, its pods are Ready that long after they start (kwok)."""
    labels = {"app.kubernetes.io/name": name}
    annotations = {"kwok.flagops.io/ready-after": ready_after} if ready_after else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "app",
                            "image": f"registry.example.com/{name}:1",
                            "envFrom": [{"configMapRef": {"name": configmap}}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any] | list[dict[str, Any]]) -> None:
    docs = obj if isinstance(obj, list) else [obj]
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        stdin="\n---\n".join(json.dumps(d) for d in docs),
    )


def create_secret(cluster: Cluster, namespace: str, name: str, *, usable: bool = True, **data: str) -> None:
    """A Secret; `usable` adds the label with which its owner lets flagops use it."""
    labels = {"flagops.io/usable": "true"} if usable else {}
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "stringData": data,
        },
    )


def request_rollback(cluster: Cluster, namespace: str, name: str, **spec: Any) -> None:
    """Apply a RollbackRequest of the Epic 21 set, as a user would."""
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": {"flagSet": "epic21", **spec},
    }
    apply(cluster, namespace, body)


def get_set(cluster: Cluster, namespace: str, name: str = "epic21") -> dict[str, Any]:
    return kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "featureflagset", name)  # type: ignore[no-any-return]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return cond  # type: ignore[no-any-return]
    return None


def wait_ready(cluster: Cluster, namespace: str, name: str = "epic21", timeout: float = 90) -> dict[str, Any]:
    """Until the set's status describes its current generation and Ready is True."""

    def probe() -> dict[str, Any] | None:
        obj = get_set(cluster, namespace, name)
        ready = condition(obj, "Ready")
        current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and ready and ready["status"] == "True" else None

    return wait_until(f"FeatureFlagSet {name} Ready", probe, timeout=timeout)


def wait_condition(
    cluster: Cluster, namespace: str, type_: str, status: str, reason: str, name: str = "epic21"
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_set(cluster, namespace, name)
        cond = condition(obj, type_)
        current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return cond if current and cond and (cond["status"], cond["reason"]) == (status, reason) else None

    return wait_until(f"{name} {type_}={status} ({reason})", probe)


def replicasets(cluster: Cluster, namespace: str) -> dict[str, set[str]]:
    """Deployment name -> the names of its ReplicaSets."""
    result: dict[str, set[str]] = {}
    for rs in kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "replicasets")["items"]:
        owner = rs["metadata"]["ownerReferences"][0]["name"]
        result.setdefault(owner, set()).add(rs["metadata"]["name"])
    return result


def deployments_settled(cluster: Cluster, namespace: str) -> bool:
    items = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployments")["items"]
    return all(
        d["status"].get("observedGeneration") == d["metadata"]["generation"]
        and d["status"].get("updatedReplicas")
        == d["spec"]["replicas"]
        == d["status"].get("availableReplicas")
        and d["status"].get("replicas") == d["spec"]["replicas"]
        for d in items
    )


def patch(cluster: Cluster, namespace: str, kind: str, name: str, body: dict[str, Any] | list[Any]) -> None:
    """`kubectl patch` as a user types it: a merge patch, or a JSON patch (a list of operations)."""
    kind_of_patch = "json" if isinstance(body, list) else "merge"
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "patch",
        kind,
        name,
        f"--type={kind_of_patch}",
        "-p",
        json.dumps(body),
    )


def set_flag(cluster: Cluster, namespace: str, index: int, enabled: bool, name: str = "epic21") -> None:
    patch(
        cluster,
        namespace,
        "featureflagset",
        name,
        [{"op": "replace", "path": f"/spec/flags/{index}/enabled", "value": enabled}],
    )


def get_rollback(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequest", name)  # type: ignore[no-any-return]


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phase: str, timeout: float = 90
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_rollback(cluster, namespace, name)
        return obj if obj.get("status", {}).get("phase") == phase else None

    try:
        return wait_until(f"rollback {name} in phase {phase}", probe, timeout=timeout)
    except AssertionError as err:
        status = get_rollback(cluster, namespace, name).get("status", {})
        raise AssertionError(f"{err}\nphase={status.get('phase')} message={status.get('message')}") from None


def served(cluster: Cluster, namespace: str, flag: str) -> str:
    cm = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "configmap", "epic21-flags")
    return str(cm["data"][flag])


def wait_terminal(cluster: Cluster, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    """The request's status once it has Succeeded or Failed."""

    def probe() -> dict[str, Any] | None:
        status = get_rollback(cluster, namespace, name).get("status", {})
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    return wait_until(f"rollback {name} to end", probe, timeout=timeout)


def patch_rollback(cluster: Cluster, namespace: str, name: str, **spec: Any) -> None:
    """Set control fields (approved, abort, release, review) as a user would."""
    patch(cluster, namespace, "rollback", name, {"spec": spec})


def deploy_dialog_enabled(cluster: Cluster, namespace: str, **spec: Any) -> dict[str, Any]:
    """Stage 21_01a deployed: the example workloads and set with USE_NEW_DIALOG_CONTEXT_REPO on,
    `spec` merged into the set's spec (one level deep); returns the set once Ready."""
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", str(EXAMPLE / "workloads.yaml"))
    flagset = load_example_set()
    flagset["spec"]["flags"][0]["enabled"] = True
    for key, value in spec.items():
        current = flagset["spec"].get(key)
        flagset["spec"][key] = {**current, **value} if isinstance(current, dict) else value
    apply(cluster, namespace, flagset)
    return wait_ready(cluster, namespace)


def role(cluster: Cluster, namespace: str, name: str, *rules: tuple[str, str]) -> None:
    """A Role of (verbs, resource) rules."""
    for verbs, resource in rules:
        kubectl(
            cluster.kubeconfig,
            "-n",
            namespace,
            "create",
            "role",
            f"{name}-{resource.split('.')[0].replace('/', '-')}",
            f"--verb={verbs}",
            f"--resource={resource}",
        )


def bind(cluster: Cluster, namespace: str, role_name: str, subject: str) -> None:
    """Bind a Role to one --serviceaccount=NS:NAME or --group=NAME."""
    suffix = re.sub(r"[^a-z0-9]+", "-", subject.split("=", 1)[1].lower()).strip("-")
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "create",
        "rolebinding",
        f"{role_name}-{suffix}"[:63],
        f"--role={role_name}",
        subject,
    )


@dataclass
class Watch:
    proc: subprocess.Popen[bytes]
    output: IO[bytes]


def start_watch(cluster: Cluster, namespace: str, resource: str, *args: str) -> Watch:
    """`kubectl get --watch`: every version of the objects from now on, in the order the API
    server sends them (one stream, so one order across objects). Written to a file as they
    come: a pipe nobody reads would fill and stall the watch."""
    argv = ["kubectl", f"--kubeconfig={cluster.kubeconfig}", f"--namespace={namespace}", "get", resource]
    output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_watch
    proc = subprocess.Popen(
        [*argv, *args, "--watch", "--output-watch-events", "--output=json"], stdout=output
    )
    return Watch(proc, output)


def stop_watch(watch: Watch) -> list[dict[str, Any]]:
    """The watch events seen so far ({"type": ..., "object": ...}), in order."""
    watch.proc.terminate()
    watch.proc.wait(10)
    watch.output.seek(0)
    text = watch.output.read().decode()
    watch.output.close()
    decoder, events, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        try:
            event, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            break  # the last event, cut short by the terminate
        events.append(event)
    return events
