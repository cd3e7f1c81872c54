"""The rest of the plan on the real control plane: drill schedules, escalation, and the
post-incident review and report."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flagops.reconcile.drills import DRILL_LABEL, SCHEDULED_AT, Cron
from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    apply,
    create_secret,
    deploy_dialog_enabled,
    get_rollback,
    patch,
    patch_rollback,
    request_rollback,
    served,
    wait_phase,
)
from tests.e2e.test_observability import metric, scrape
from tests.e2e.test_plugin import flagops
from tests.support import Cluster, Endpoint, KubectlError, kubectl, kubectl_json, wait_until

DIALOG, STORAGE = "USE_NEW_DIALOG_CONTEXT_REPO", "USE_NEW_STORAGE_ADAPTER"
UTC = datetime.UTC


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def parse(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def drill(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackDrill",
        "metadata": {"name": name},
        "spec": {"flagSet": "epic21", "flags": [DIALOG], "owner": "lena", "stage": "21_01a", **spec},
    }


def get_drill(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "rollbackdrill", name)  # type: ignore[no-any-return]


def drill_requests(cluster: Cluster, namespace: str, uid: str) -> list[dict[str, Any]]:
    listed = kubectl_json(
        cluster.kubeconfig, "-n", namespace, "get", "rollbackrequests", "-l", f"{DRILL_LABEL}={uid}"
    )
    return sorted(listed["items"], key=lambda r: r["metadata"]["creationTimestamp"])


def test_a_drill_due_in_seconds_runs_restores_and_is_recorded(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    deploy_dialog_enabled(cluster, namespace)
    due = (now() + datetime.timedelta(seconds=5)).replace(microsecond=0)
    health = {"name": "health", "http": {"url": f"{endpoint.url}/healthz"}, "intervalSeconds": 1}
    # Two flags: a MultiFlag rollback, which the set's matrix has wait for approval; a drill's run
    # was authorized when the drill was admitted, and does not wait.
    at = due.isoformat().replace("+00:00", "Z")
    apply(cluster, namespace, drill("stage-21-01a", flags=[DIALOG, STORAGE], at=at, checks=[health]))

    def recorded() -> dict[str, Any] | None:
        status = get_drill(cluster, namespace, "stage-21-01a").get("status", {})
        return status if status.get("lastResult") == "Succeeded" else None

    status = wait_until("the drill recorded as Succeeded", recorded, timeout=120)
    name = f"stage-21-01a-{due:%Y%m%d-%H%M%S}"
    assert status["lastRequest"] == name
    assert parse(status["lastRunAt"]) == due
    (run,) = status["runs"]
    assert run["withinTargets"] is True and run["message"] == "within targets"
    assert status["conditions"][0]["reason"] == "NoMoreRuns"
    request = get_rollback(cluster, namespace, name)
    assert request["spec"]["drill"] is True
    assert request["metadata"]["ownerReferences"][0]["kind"] == "RollbackDrill"
    assert request["metadata"]["annotations"][SCHEDULED_AT] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert request["status"]["restoredAt"]
    assert request["status"]["plan"]["scenario"] == "MultiFlag"
    assert "a drill scheduled by RollbackDrill stage-21-01a" in request["status"]["plan"]["approvalReason"]
    assert served(cluster, namespace, DIALOG) == "true"  # a drill puts the value back

    table = kubectl(cluster.kubeconfig, "-n", namespace, "get", "drills").stdout.splitlines()
    assert table[0].split() == ["NAME", "STAGE", "FLAGSET", "OWNER", "NEXT", "LAST", "STATUS"]
    assert table[1].split()[:4] == ["stage-21-01a", "21_01a", "epic21", "lena"]
    assert table[1].split()[-1] == "Succeeded"


def test_an_operator_down_across_two_due_times_runs_the_drill_once_on_start_up(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> None:
    op = OperatorProcess(
        cluster.kubeconfig, namespace, tmp_path / "operator.log", metrics_port=devcluster.free_port()
    )
    op.start()
    try:
        op.wait_started()
        deploy_dialog_enabled(cluster, namespace)
    finally:
        op.stop()

    every = "*/10 * * * * *"
    apply(cluster, namespace, drill("nightly", schedule=every))
    created = parse(get_drill(cluster, namespace, "nightly")["metadata"]["creationTimestamp"])
    cron = Cron.parse(every)
    first = cron.next_after(created, UTC)
    assert first is not None
    second = cron.next_after(first, UTC)
    assert second is not None
    wait_until(
        "two due times passed with no operator",
        lambda: now() > second + datetime.timedelta(seconds=1),
        timeout=40,
    )
    assert get_drill(cluster, namespace, "nightly").get("status") is None  # nobody ran it

    op.start()
    try:
        op.wait_started()
        uid = get_drill(cluster, namespace, "nightly")["metadata"]["uid"]
        catch_up = wait_until(
            "the catch-up drill", lambda: drill_requests(cluster, namespace, uid)[:1], timeout=60
        )[0]
        patch(cluster, namespace, "rollbackdrill", "nightly", {"spec": {"suspend": True}})
        wait_phase(cluster, namespace, catch_up["metadata"]["name"], "Succeeded", timeout=120)
    finally:
        op.stop()
    slot = parse(catch_up["metadata"]["annotations"][SCHEDULED_AT])
    assert second <= slot <= parse(catch_up["metadata"]["creationTimestamp"])
    # One run for the due times missed while it was down (first, second, ...), not one per due time.
    runs_so_far = [
        r
        for r in drill_requests(cluster, namespace, uid)
        if parse(r["metadata"]["annotations"][SCHEDULED_AT]) <= slot
    ]
    assert [r["metadata"]["name"] for r in runs_so_far] == [catch_up["metadata"]["name"]]


def test_a_rollback_held_past_after_seconds_escalates_once(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    pager = Endpoint()
    try:
        create_secret(cluster, namespace, "pager", url=f"{pager.url}/page")
        deploy_dialog_enabled(
            cluster,
            namespace,
            notifications={
                "escalation": {"urlSecretRef": {"name": "pager", "key": "url"}, "afterSeconds": 3}
            },
        )
        endpoint.routes["/ready"] = (503, {"status": "starting"})
        check = {
            "name": "ready",
            "http": {"url": f"{endpoint.url}/ready"},
            "intervalSeconds": 1,
            "failureLimit": 100,
        }
        request_rollback(cluster, namespace, "slow", flags=[DIALOG], checks=[check], incident="INC-9")
        wait_until("the escalation delivered", lambda: pager.posts, timeout=60)
        assert get_rollback(cluster, namespace, "slow")["status"]["phase"] == "Validating"
        endpoint.routes["/ready"] = (200, {"status": "ok"})
        done = wait_phase(cluster, namespace, "slow", "Succeeded")
        text = scrape(operator)
    finally:
        pager.close()
    ((path, message),) = pager.posts
    assert path == "/page"
    assert (message["kind"], message["why"], message["phase"], message["incident"]) == (
        "Escalation",
        "Overdue",
        "Validating",
        "INC-9",
    )
    assert (
        f"RollbackRequest {namespace}/slow" in message["text"]
        and "has not succeeded after" in message["text"]
    )
    assert "ready" in message["waitingFor"]
    assert done["status"]["escalation"] == message["text"]
    assert done["metadata"]["annotations"]["flagops.io/escalated-at"]
    events = kubectl_json(
        cluster.kubeconfig, "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=slow"
    )
    assert [e["reason"] for e in events["items"]].count("Escalated") == 1
    assert metric(text, 'flagops_escalations_total{why="Overdue"}') >= 1


REVIEW = {
    "rootCause": "the dialog repository's cache was cold after the switch",
    "wentWell": ["the trigger requested the rollback within seconds"],
    "couldImprove": ["warm the cache before enabling the flag"],
    "actionItems": [{"description": "add a cache warm-up job", "owner": "ep21-team", "due": "2026-12-15"}],
    "authors": ["lena"],
}


def test_a_review_is_accepted_after_the_end_only_and_the_report_has_the_whole_record(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    deploy_dialog_enabled(cluster, namespace)
    # Waiting for approval: not ended, so no review yet.
    request_rollback(cluster, namespace, "waiting", flags=[DIALOG, STORAGE])
    wait_phase(cluster, namespace, "waiting", "AwaitingApproval")
    with pytest.raises(KubectlError) as err:
        patch_rollback(cluster, namespace, "waiting", review=REVIEW)
    assert "spec.review can be written once the request has ended" in err.value.stderr
    patch_rollback(cluster, namespace, "waiting", abort=True)
    wait_phase(cluster, namespace, "waiting", "Aborted")

    health = {"name": "health", "http": {"url": f"{endpoint.url}/healthz"}, "intervalSeconds": 1}
    request_rollback(
        cluster,
        namespace,
        "rb",
        flags=[DIALOG],
        checks=[health],
        incident="INC-2026-11-042",
        reason="dialog errors",
    )
    wait_phase(cluster, namespace, "rb", "Succeeded")
    patch_rollback(cluster, namespace, "rb", review=REVIEW)
    with pytest.raises(KubectlError) as err:
        patch_rollback(cluster, namespace, "rb", reason="edited")
    assert "reason is immutable" in err.value.stderr

    def observed() -> dict[str, Any] | None:
        obj = get_rollback(cluster, namespace, "rb")
        return obj if obj["status"].get("observedGeneration") == obj["metadata"]["generation"] else None

    reviewed = wait_until("the review observed", observed)
    assert reviewed["spec"]["review"]["rootCause"] == REVIEW["rootCause"]
    assert reviewed["status"]["phase"] == "Succeeded"

    by_cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "flagops.cli",
            "report",
            "rb",
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert by_cli.returncode == 0, by_cli.stderr
    by_plugin = flagops(cluster, "-n", namespace, "report", "rb")
    assert by_plugin.returncode == 0, by_plugin.stderr
    assert by_plugin.stdout == by_cli.stdout
    record = by_cli.stdout
    for expected in (
        "# Incident record: INC-2026-11-042",
        "| Outcome | **Succeeded**:",
        "## Timeline",
        "| Flags applied |",
        "| Validated |",
        "## Durations against the plan's targets",
        "| met |",
        f"- `{DIALOG}`: true → false",
        "### health (http, request): Passed",
        "RollbackSucceeded",
        "### Root cause\n\nthe dialog repository's cache was cold after the switch",
        "| add a cache warm-up job | ep21-team | 2026-12-15 | no |",
    ):
        assert expected in record, expected
