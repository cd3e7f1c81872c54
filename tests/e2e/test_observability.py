"""Automatic rollback against a real Prometheus: triggers, prometheus checks, metrics, webhooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    REPO,
    apply,
    create_secret,
    deploy_dialog_enabled,
    deployments_settled,
    get_set,
    load_example_set,
    served,
    set_flag,
    wait_phase,
    wait_ready,
)
from tests.support import Cluster, Endpoint, kubectl, kubectl_json, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"
SIM = REPO / "examples" / "butler-sim" / "butler_sim.py"


def error_ratio(namespace: str) -> str:
    return (
        f'sum(rate(butler_dialog_requests_total{{outcome="error",ns="{namespace}"}}[5s])) / '
        f'sum(rate(butler_dialog_requests_total{{ns="{namespace}"}}[5s]))'
    )


def query(prometheus: devcluster.Prometheus, promql: str) -> list[float]:
    url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    return [float(r["value"][1]) for r in body["data"]["result"]]


@pytest.fixture
def butler(
    cluster: Cluster, namespace: str, prometheus: devcluster.Prometheus, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The simulated Butler service, watching this namespace's epic21-flags, scraped by Prometheus."""
    port = devcluster.free_port()
    log = (tmp_path / "butler.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SIM),
            "--namespace",
            namespace,
            "--configmap",
            "epic21-flags",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        preexec_fn=devcluster.die_with_parent,  # noqa: PLW1509
    )
    prometheus.add_target(namespace, f"127.0.0.1:{port}", {"ns": namespace})
    try:
        wait_until(
            "Prometheus to scrape the service",
            lambda: query(prometheus, f'up{{ns="{namespace}"}} == 1') != [],
        )
        yield proc
    finally:
        prometheus.remove_target(namespace)
        proc.terminate()
        proc.wait(10)
        log.close()


def flagset_with_trigger(
    namespace: str, prometheus: devcluster.Prometheus, *, for_seconds: int, webhook: bool = True
) -> dict[str, Any]:
    flagset = load_example_set()
    dialog = flagset["spec"]["flags"][0]
    dialog["triggers"] = [
        {
            "name": "dialog-errors",
            "prometheus": {"server": prometheus.url, "query": error_ratio(namespace)},
            "comparison": "GreaterThan",
            "threshold": "0.05",
            "forSeconds": for_seconds,
            "intervalSeconds": 1,
        }
    ]
    dialog["checks"] = [
        {
            "name": "dialog-error-ratio",
            "initialDelaySeconds": 2,
            "intervalSeconds": 1,
            "successes": 2,
            "failureLimit": 10,
            "deadlineSeconds": 90,
            "prometheus": {
                "server": prometheus.url,
                "query": error_ratio(namespace),
                "comparison": "LessThan",
                "threshold": "0.01",
                "onEmpty": "Wait",
            },
        }
    ]
    if webhook:
        flagset["spec"]["notifications"] = {
            "webhook": {"urlSecretRef": {"name": "ops-webhook", "key": "url"}}
        }
    return flagset


def scrape(operator: OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text: str, line_start: str, default: float | None = None) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    if default is not None:
        return default
    raise AssertionError(f"{line_start} not in the scrape")


def test_trigger_fires_rollback_validated_by_prometheus(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    prometheus: devcluster.Prometheus,
    butler: subprocess.Popen[bytes],
    receiver: Endpoint,
) -> None:
    secret_url = f"{receiver.url}/hooks/T0KEN-s3cret"
    create_secret(cluster, namespace, "ops-webhook", url=secret_url)
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", str(REPO / "examples/epic21/workloads.yaml"))
    apply(cluster, namespace, flagset_with_trigger(namespace, prometheus, for_seconds=3))
    wait_ready(cluster, namespace)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))

    # Stage 21_01a goes out with a bug: 8% of dialog requests fail.
    set_flag(cluster, namespace, 0, True)
    wait_until(
        "the error ratio to rise above 5%",
        lambda: any(v > 0.05 for v in query(prometheus, error_ratio(namespace))),
        timeout=60,
    )

    def created() -> str | None:
        items = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests")["items"]
        return items[0]["metadata"]["name"] if items else None

    name = wait_until("the trigger to create a RollbackRequest", created, timeout=60)
    done = wait_phase(cluster, namespace, name, "Succeeded", timeout=120)
    status, spec = done["status"], done["spec"]
    assert spec["flags"] == [DIALOG] and spec["detectedAt"]
    assert "trigger dialog-errors" in spec["reason"]
    for duration in ("timeToDecision", "timeToExecute", "timeToValidate", "total"):
        assert status["durations"][duration], duration
    assert status["seconds"]["timeToDecision"] >= 3, "the breach had to hold forSeconds=3"
    check = status["checks"][0]
    assert check["type"] == "prometheus" and check["phase"] == "Passed"
    assert check["target"] == f"{prometheus.url} {error_ratio(namespace)}"
    assert check["consecutiveSuccesses"] == 2
    assert all(float(m["value"]) < 0.01 for m in check["measurements"][-2:])
    assert served(cluster, namespace, DIALOG) == "false"
    wait_until(
        "the error ratio to fall", lambda: all(v < 0.01 for v in query(prometheus, error_ratio(namespace)))
    )

    # Exactly one request for the breach, and the trigger says which.
    assert len(kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests")["items"]) == 1
    trigger = get_set(cluster, namespace)["status"]["triggers"][0]
    assert trigger["rollback"] == name or trigger["state"] == "OK"

    # The webhook got the firing and every phase; the URL (with its token) leaked nowhere.
    def phases() -> list[str]:
        return [body["phase"] for _, body in receiver.posts if body.get("kind") == "RollbackPhaseChanged"]

    wait_until("every phase notified", lambda: phases()[-1:] == ["Succeeded"])
    assert phases() == ["Applying", "RollingOut", "Validating", "Succeeded"]
    fired = [body for _, body in receiver.posts if body.get("kind") == "TriggerFired"]
    assert len(fired) == 1 and fired[0]["rollbackRequest"] == name and fired[0]["text"]
    assert all(path == "/hooks/T0KEN-s3cret" for path, _ in receiver.posts)
    assert "T0KEN-s3cret" not in operator.log.read_text()
    events = kubectl(cluster.kubeconfig, "-n", namespace, "get", "events", "-o", "json").stdout
    assert "T0KEN-s3cret" not in events and "TriggerFired" in events

    text = scrape(operator)
    assert metric(text, 'flagops_rollbacks_total{outcome="Succeeded"}') == 1
    assert (
        metric(
            text, f'flagops_trigger_firings_total{{flag="{DIALOG}",flagset="epic21",namespace="{namespace}"}}'
        )
        == 1
    )
    assert metric(text, 'flagops_rollback_duration_seconds_count{stage="validate"}') == 1
    assert metric(text, 'flagops_notifications_total{result="sent"}') >= 5
    assert metric(text, f'flagops_flags{{flagset="epic21",namespace="{namespace}",state="overridden"}}') == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/healthz", timeout=5) as resp:
        assert resp.status == 200


def test_breach_that_clears_in_time_creates_nothing(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    prometheus: devcluster.Prometheus,
    butler: subprocess.Popen[bytes],
) -> None:
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", str(REPO / "examples/epic21/workloads.yaml"))
    apply(cluster, namespace, flagset_with_trigger(namespace, prometheus, for_seconds=45, webhook=False))
    wait_ready(cluster, namespace)

    def trigger_state() -> str | None:
        triggers = get_set(cluster, namespace).get("status", {}).get("triggers") or []
        return triggers[0]["state"] if triggers else None

    wait_until("the trigger to be evaluated", lambda: trigger_state() == "OK")
    set_flag(cluster, namespace, 0, True)
    wait_until("the breach to be seen", lambda: trigger_state() == "Breaching", timeout=60)
    set_flag(cluster, namespace, 0, False)  # fixed forward before forSeconds ran out
    wait_until("the breach to clear", lambda: trigger_state() == "OK", timeout=60)
    assert kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests")["items"] == []


@pytest.mark.parametrize(
    ("on_empty", "phase", "message"),
    [
        ("Fail", "Failed", "empty result: fails"),
        ("Pass", "Succeeded", "passed: empty result"),
        ("Wait", "Failed", "did not pass within its deadline"),
    ],
)
def test_empty_query_result_follows_the_policy(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    prometheus: devcluster.Prometheus,
    on_empty: str,
    phase: str,
    message: str,
) -> None:
    deploy_dialog_enabled(cluster, namespace)
    check = {
        "name": "empty",
        "intervalSeconds": 1,
        "deadlineSeconds": 4,
        "prometheus": {
            "server": prometheus.url,
            "query": 'no_such_metric{job="none"}',
            "comparison": "LessThan",
            "threshold": "1",
            "onEmpty": on_empty,
        },
    }
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "rb"},
        "spec": {"flagSet": "epic21", "flags": [DIALOG], "checks": [check]},
    }
    apply(cluster, namespace, body)
    done = wait_phase(cluster, namespace, "rb", phase)
    result = done["status"]["checks"][0]
    assert message in result["message"]
    assert result["observed"] == "empty" or on_empty == "Wait"
    assert result["target"] == f'{prometheus.url} no_such_metric{{job="none"}}'


def test_failing_webhook_never_blocks_a_rollback(
    cluster: Cluster, namespace: str, operator: OperatorProcess, receiver: Endpoint
) -> None:
    receiver.routes["/hook"] = (500, {"error": "receiver down"})
    create_secret(cluster, namespace, "ops-webhook", url=f"{receiver.url}/hook")
    deploy_dialog_enabled(
        cluster,
        namespace,
        notifications={
            "webhook": {"urlSecretRef": {"name": "ops-webhook", "key": "url"}, "timeoutSeconds": 1}
        },
    )
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "rb"},
        "spec": {"flagSet": "epic21", "flags": [DIALOG]},
    }
    apply(cluster, namespace, body)
    done = wait_phase(cluster, namespace, "rb", "Succeeded")
    # The rollback did not wait for the retries (1 + 2 + 4 s per message).
    assert done["status"]["seconds"]["total"] < 7
    wait_until(
        "the failures to be counted",
        lambda: metric(scrape(operator), 'flagops_notifications_total{result="failed"}', 0) >= 1,
        timeout=30,
    )
    assert len(receiver.posts) >= 4, "each message was tried again"
