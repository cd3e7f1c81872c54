"""RollbackRequest end to end: every path of the lifecycle, on the real control plane."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    apply,
    condition,
    deploy_dialog_enabled,
    deployments_settled,
    get_rollback,
    get_set,
    load_example_set,
    patch,
    patch_rollback,
    replicasets,
    request_rollback,
    served,
    set_flag,
    wait_phase,
    wait_ready,
)
from tests.support import Cluster, Endpoint, kubectl, kubectl_json, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"  # flag 0, consumed by butler
STORAGE = "USE_NEW_STORAGE_ADAPTER"  # flag 2, consumed by api


@pytest.fixture
def dialog_enabled(cluster: Cluster, namespace: str, epic21: dict[str, Any]) -> dict[str, Any]:
    """Stage 21_01a deployed: the dialog flag on, its rollout done."""
    set_flag(cluster, namespace, 0, True)
    obj = wait_until(
        "the flag to be served",
        lambda: (o := wait_ready(cluster, namespace))["status"]["effective"][DIALOG] and o,
    )
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    return obj


def events_for(cluster: Cluster, namespace: str, name: str) -> list[str]:
    items = kubectl_json(
        cluster.kubeconfig,
        "-n",
        namespace,
        "get",
        "events.events.k8s.io",
        "--field-selector",
        f"regarding.name={name}",
    )["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e["eventTime"])]


def http_check(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "http": {"url": url, **extra}, "intervalSeconds": 1}


def generations(cluster: Cluster, namespace: str) -> dict[str, int]:
    items = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployments")["items"]
    return {d["metadata"]["name"]: d["metadata"]["generation"] for d in items}


def test_rollback_applies_restarts_validates_and_times(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any], endpoint: Endpoint
) -> None:
    before = generations(cluster, namespace)
    request_rollback(
        cluster,
        namespace,
        "rb-21-01a",
        flags=[DIALOG],
        reason="dialog context errors > 5%",
        incident="INC-2025-11-042",
        detectedAt="2020-01-01T00:00:00Z",
        checks=[
            http_check("healthz", f"{endpoint.url}/healthz", jsonPath="$.status", expectedValue="ok"),
            {
                "name": "dialog-count",
                "intervalSeconds": 1,
                "invariant": {"http": {"url": f"{endpoint.url}/dialogs/count", "jsonPath": "$.count"}},
            },
        ],
    )
    kubectl(
        cluster.kubeconfig,
        "-n",
        namespace,
        "wait",
        "rollback/rb-21-01a",
        "--for=condition=Succeeded",
        "--timeout=90s",
        timeout=100,
    )
    obj = get_rollback(cluster, namespace, "rb-21-01a")
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    assert status["plan"]["flags"] == [{"name": DIALOG, "from": True, "to": False, "requested": True}]
    assert [(w["kind"], w["name"]) for w in status["plan"]["workloads"]] == [("Deployment", "butler")]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Approved": "True",
        "FlagsApplied": "True",
        "RolledOut": "True",
        "Validated": "True",
        "Succeeded": "True",
    }

    checks = {c["name"]: c for c in status["checks"]}
    assert checks["healthz"]["phase"] == "Passed"
    assert checks["healthz"]["target"] == f"GET {endpoint.url}/healthz"
    assert checks["healthz"]["observed"] == '"ok"'
    assert checks["dialog-count"]["baseline"] == "1042" and checks["dialog-count"]["observed"] == "1042"
    assert endpoint.hits.count("/dialogs/count") >= 2, "read before the flip and after"

    for stamp in (
        "startedAt",
        "approvedAt",
        "flagsAppliedAt",
        "rolloutCompletedAt",
        "validatedAt",
        "completedAt",
    ):
        assert status[stamp], stamp
    assert (
        status["startedAt"]
        <= status["flagsAppliedAt"]
        <= status["rolloutCompletedAt"]
        <= status["validatedAt"]
    )
    seconds = status["seconds"]
    assert seconds["timeToDecision"] > 0  # detectedAt lies in the past
    assert 0 <= seconds["timeToExecute"] <= seconds["total"]
    assert status["durations"]["timeToValidate"].endswith("s")

    # The rollback went through the set's status, never its spec (GitOps sees no drift).
    flagset = get_set(cluster, namespace)
    assert flagset["spec"]["flags"][0]["enabled"] is True
    assert flagset["status"]["overrides"][0]["heldBy"] == "rb-21-01a"
    assert served(cluster, namespace, DIALOG) == "false"
    # One restart of butler only (back to its earlier template: the Deployment reuses that ReplicaSet).
    assert generations(cluster, namespace) == {**before, "butler": before["butler"] + 1}
    assert events_for(cluster, namespace, "rb-21-01a") == [
        "ApplyingOverrides",
        "RollingOut",
        "Validating",
        "RollbackSucceeded",
    ]

    table = kubectl(cluster.kubeconfig, "-n", namespace, "get", "rollbacks").stdout.splitlines()
    assert table[0].split() == ["NAME", "FLAGSET", "PHASE", "FLAGS", "EXECUTE", "VALIDATE", "AGE"]
    assert table[1].split()[:4] == ["rb-21-01a", "epic21", "Succeeded", DIALOG]


def test_lock_holds_until_release(cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]) -> None:
    request_rollback(cluster, namespace, "rb", flags=[DIALOG])
    wait_phase(cluster, namespace, "rb", "Succeeded")

    # Re-enabling it in the spec (a new generation) does not take effect while the lock holds.
    set_flag(cluster, namespace, 0, False)
    set_flag(cluster, namespace, 0, True)
    obj = wait_ready(cluster, namespace)
    assert served(cluster, namespace, DIALOG) == "false"
    overridden = condition(obj, "Overridden")
    assert overridden is not None and overridden["status"] == "True"
    assert f"{DIALOG} held at false by RollbackRequest rb" in overridden["message"]

    patch_rollback(cluster, namespace, "rb", release=True)
    wait_until("the flag to follow the spec again", lambda: served(cluster, namespace, DIALOG) == "true")
    # The request says it is released before the set serves the flag again.
    released = get_rollback(cluster, namespace, "rb")
    assert released["status"]["locked"] is False and "Released" in released["status"]["message"]
    assert "flagops.io/holds" not in released["metadata"].get("annotations", {})
    wait_until(
        "the set's status to show no lock",
        lambda: get_set(cluster, namespace)["status"].get("overrides", []) == [],
    )


def test_deleting_the_request_lifts_the_lock(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    request_rollback(cluster, namespace, "rb", flags=[DIALOG])
    wait_phase(cluster, namespace, "rb", "Succeeded")
    assert served(cluster, namespace, DIALOG) == "false"
    kubectl(cluster.kubeconfig, "-n", namespace, "delete", "rollback", "rb")
    wait_until("the flag to follow the spec again", lambda: served(cluster, namespace, DIALOG) == "true")


def test_multi_flag_rollback_waits_for_approval(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    set_flag(cluster, namespace, 2, True)
    wait_until("storage flag served", lambda: served(cluster, namespace, STORAGE) == "true")
    request_rollback(cluster, namespace, "rb", flags=[DIALOG, STORAGE])
    waiting = wait_phase(cluster, namespace, "rb", "AwaitingApproval")
    approved = condition(waiting, "Approved")
    assert approved is not None and approved["status"] == "False" and approved["reason"] == "AwaitingApproval"
    assert waiting["status"]["message"] == "MultiFlag, 2 flags: approval needed (spec.approved: true)"
    assert served(cluster, namespace, DIALOG) == "true", "nothing changes before approval"

    patch_rollback(cluster, namespace, "rb", approved=True, approvedBy="flagops-admin")
    done = wait_phase(cluster, namespace, "rb", "Succeeded")
    assert done["status"]["approvedAt"] > done["status"]["startedAt"]
    assert served(cluster, namespace, DIALOG) == "false" and served(cluster, namespace, STORAGE) == "false"


def test_single_flag_outside_the_window_needs_approval(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    deploy_dialog_enabled(cluster, namespace, approval={"windowSeconds": 0})
    request_rollback(cluster, namespace, "rb", flags=[DIALOG])
    waiting = wait_phase(cluster, namespace, "rb", "AwaitingApproval")
    assert "SingleFlagLate, USE_NEW_DIALOG_CONTEXT_REPO last changed" in waiting["status"]["message"]
    assert "(window 0.0s): approval needed" in waiting["status"]["message"]


def test_emergency_rollback_of_all_flags_skips_approval(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    request_rollback(cluster, namespace, "emergency", all=True, emergency=True, incident="INC-1")
    done = wait_phase(cluster, namespace, "emergency", "Succeeded")
    assert done["status"]["plan"]["approvalRequired"] is False
    assert "emergency" in done["status"]["plan"]["approvalReason"]
    assert set(done["status"]["applied"]) == {f["name"] for f in load_example_set()["spec"]["flags"]}
    assert [f["name"] for f in done["status"]["plan"]["flags"]] == [DIALOG]
    assert get_set(cluster, namespace)["status"]["overrideCount"] == 6


def test_dry_run_writes_the_plan_and_changes_nothing(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    before = replicasets(cluster, namespace)
    request_rollback(cluster, namespace, "plan", flags=[DIALOG], dryRun=True)
    planned = wait_phase(cluster, namespace, "plan", "Planned")
    assert planned["status"]["plan"]["flags"][0]["name"] == DIALOG
    assert planned["status"]["plan"]["workloads"][0]["name"] == "butler"
    assert "nothing was changed" in planned["status"]["message"]
    assert served(cluster, namespace, DIALOG) == "true"
    assert get_set(cluster, namespace)["status"].get("overrides", []) == []
    assert replicasets(cluster, namespace) == before


def test_drill_rolls_back_validates_then_restores(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any], endpoint: Endpoint
) -> None:
    request_rollback(
        cluster,
        namespace,
        "drill",
        flags=[DIALOG],
        drill=True,
        checks=[http_check("healthz", f"{endpoint.url}/healthz")],
    )
    done = wait_phase(cluster, namespace, "drill", "Succeeded")
    status = done["status"]
    assert status["validatedAt"] <= status["restoredAt"] <= status["completedAt"]
    assert status["seconds"]["timeToRestore"] >= 0
    assert status["locked"] is False
    assert "restored" in status["message"]
    assert served(cluster, namespace, DIALOG) == "true"
    assert get_set(cluster, namespace)["status"].get("overrides", []) == []
    assert "Restoring" in events_for(cluster, namespace, "drill")
    butler = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "deployment", "butler")
    original = next(w for w in status["plan"]["workloads"] if w["name"] == "butler")["fromHash"]
    assert butler["spec"]["template"]["metadata"]["annotations"]["flagops.io/flags-hash"] == original


def job_check(name: str, outcome: str | None = None) -> dict[str, Any]:
    annotations = {"kwok.flagops.io/outcome": outcome} if outcome else {}
    return {
        "name": name,
        "deadlineSeconds": 120,
        "job": {
            "template": {
                "template": {
                    "metadata": {"annotations": annotations},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "smoke", "image": "registry.invalid/smoke:1"}],
                    },
                }
            }
        },
    }


def test_abort_keeps_what_was_applied(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    request_rollback(cluster, namespace, "rb", flags=[DIALOG], checks=[job_check("smoke", outcome="hang")])
    wait_phase(cluster, namespace, "rb", "Validating")
    patch_rollback(cluster, namespace, "rb", abort=True)
    aborted = wait_phase(cluster, namespace, "rb", "Aborted")
    assert f"{DIALOG} already applied and held" in aborted["status"]["message"]
    succeeded = condition(aborted, "Succeeded")
    assert succeeded is not None and succeeded["status"] == "False" and succeeded["reason"] == "Aborted"
    assert served(cluster, namespace, DIALOG) == "false"


def test_failing_http_check_fails_the_request(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any], endpoint: Endpoint
) -> None:
    endpoint.routes["/healthz"] = (503, {"status": "degraded"})
    request_rollback(
        cluster,
        namespace,
        "rb",
        flags=[DIALOG],
        checks=[{**http_check("healthz", f"{endpoint.url}/healthz"), "failureLimit": 1}],
    )
    failed = wait_phase(cluster, namespace, "rb", "Failed")
    check = failed["status"]["checks"][0]
    assert check["phase"] == "Failed" and check["attempts"] == 2 and check["observed"] == "503"
    assert [m["value"] for m in check["measurements"]] == ["503", "503"]
    assert "check healthz failed" in failed["status"]["message"]
    assert "status 503, expected 200" in failed["status"]["message"]
    reason = condition(failed, "Succeeded")
    assert reason is not None and reason["reason"] == "CheckFailed"
    assert served(cluster, namespace, DIALOG) == "false", "a failed validation does not re-enable the flag"


def test_failing_job_check_fails_the_request(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    request_rollback(cluster, namespace, "rb", flags=[DIALOG], checks=[job_check("smoke", outcome="failed")])
    failed = wait_phase(cluster, namespace, "rb", "Failed")
    assert "Job rb-smoke failed" in failed["status"]["message"]
    assert failed["status"]["checks"][0]["target"] == f"Job {namespace}/rb-smoke"


def test_passing_job_check(cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]) -> None:
    request_rollback(cluster, namespace, "rb", flags=[DIALOG], checks=[job_check("smoke")])
    done = wait_phase(cluster, namespace, "rb", "Succeeded")
    assert "completed" in done["status"]["checks"][0]["message"]
    job = kubectl_json(cluster.kubeconfig, "-n", namespace, "get", "job", "rb-smoke")
    assert job["metadata"]["ownerReferences"][0]["name"] == "rb"


def test_unknown_flag_fails_and_changes_nothing(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    request_rollback(cluster, namespace, "rb", flags=["NO_SUCH_FLAG"])
    failed = wait_phase(cluster, namespace, "rb", "Failed")
    assert "NO_SUCH_FLAG is not a flag of FeatureFlagSet epic21" in failed["status"]["message"]
    assert "nothing was changed" in failed["status"]["message"]
    assert get_set(cluster, namespace)["status"].get("overrides", []) == []


def test_unknown_flagset_fails(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "rb"},
        "spec": {"flagSet": "nope", "flags": [DIALOG]},
    }
    apply(cluster, namespace, body)
    failed = wait_phase(cluster, namespace, "rb", "Failed")
    assert "FeatureFlagSet nope not found" in failed["status"]["message"]
    reason = condition(failed, "Succeeded")
    assert reason is not None and reason["reason"] == "FlagSetNotFound"


def test_second_request_for_an_overridden_flag_needs_no_restart(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    request_rollback(cluster, namespace, "first", flags=[DIALOG])
    wait_phase(cluster, namespace, "first", "Succeeded")
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    before = replicasets(cluster, namespace)
    request_rollback(cluster, namespace, "second", flags=[DIALOG])
    second = wait_phase(cluster, namespace, "second", "Succeeded")
    assert second["status"]["plan"]["flags"] == [] and second["status"]["plan"]["unchanged"] == [DIALOG]
    assert "already at the safe value" in second["status"]["message"]
    assert replicasets(cluster, namespace) == before

    # Both hold the flag now: releasing one keeps it rolled back.
    kubectl(cluster.kubeconfig, "-n", namespace, "delete", "rollback", "first")
    wait_until(
        "the first holder to be dropped",
        lambda: [o["heldBy"] for o in get_set(cluster, namespace)["status"]["overrides"]] == ["second"],
    )
    assert served(cluster, namespace, DIALOG) == "false"


def test_rollout_that_misses_its_deadline_fails(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    deploy_dialog_enabled(cluster, namespace, rollout={"timeoutSeconds": 5})
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    # New butler pods can never schedule: its rollout cannot finish.
    unschedulable = {"spec": {"template": {"spec": {"nodeSelector": {"no-such": "node"}}}}}
    patch(cluster, namespace, "deployment", "butler", unschedulable)
    request_rollback(cluster, namespace, "rb", flags=[DIALOG])
    failed = wait_phase(cluster, namespace, "rb", "Failed", timeout=60)
    assert "restarts not complete within rollout.timeoutSeconds=5" in failed["status"]["message"]
    assert "deployment/butler" in failed["status"]["message"]
    reason = condition(failed, "Succeeded")
    assert reason is not None and reason["reason"] == "RolloutTimeout"


@pytest.mark.parametrize(
    "example", ["rollback-21-01a.yaml", "rollback-21-01c.yaml", "emergency.yaml", "checktemplates.yaml"]
)
def test_example_rollbacks_are_accepted(cluster: Cluster, crds: None, namespace: str, example: str) -> None:
    out = kubectl(
        cluster.kubeconfig, "-n", namespace, "apply", "--dry-run=server", "-f", f"examples/epic21/{example}"
    ).stdout
    assert "(server dry run)" in out


def test_example_stage_rollback_runs_to_success(
    cluster: Cluster, namespace: str, dialog_enabled: dict[str, Any]
) -> None:
    kubectl(cluster.kubeconfig, "-n", namespace, "apply", "-f", "examples/epic21/rollback-21-01a.yaml")
    done = wait_phase(cluster, namespace, "rollback-21-01a", "Succeeded")
    assert done["status"]["checks"][0]["target"] == f"Job {namespace}/rollback-21-01a-dialog-smoke"
    assert served(cluster, namespace, DIALOG) == "false"


def stored_revisions(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items = kubectl_json(
        cluster.kubeconfig, "-n", namespace, "get", "controllerrevisions", "-l", "flagops.io/flagset=epic21"
    )["items"]
    return sorted(items, key=lambda r: r["revision"])


def test_undo_to_a_revision_two_changes_back(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """Each change of the served values is a ControllerRevision saying what changed and why; a
    RollbackRequest with toRevision serves a revision's values again, with the plan's diff,
    approval (two flags: MultiFlag), a lock and timings like any rollback."""
    obj = deploy_dialog_enabled(cluster, namespace)  # revision 1
    first = obj["status"]["revision"]
    set_flag(cluster, namespace, 2, True)  # USE_NEW_STORAGE_ADAPTER on
    wait_until(
        "a second revision",
        lambda: get_set(cluster, namespace).get("status", {}).get("revision") == first + 1,
    )
    set_flag(cluster, namespace, 0, False)  # and the dialog flag off again
    wait_until(
        "a third revision", lambda: get_set(cluster, namespace).get("status", {}).get("revision") == first + 2
    )
    wait_ready(cluster, namespace)
    wait_until("deployments settled", lambda: deployments_settled(cluster, namespace))
    revisions = stored_revisions(cluster, namespace)
    assert [r["revision"] for r in revisions] == [first, first + 1, first + 2]
    assert all(r["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"] for r in revisions)
    notes = [r["metadata"]["annotations"] for r in revisions]
    assert json.loads(notes[1]["flagops.io/changed"]) == {
        "USE_NEW_STORAGE_ADAPTER": {"from": False, "to": True}
    }
    assert notes[2]["flagops.io/cause"].startswith("spec edit")

    request_rollback(cluster, namespace, "undo", toRevision=first, reason="back to how it was")
    waiting = wait_phase(cluster, namespace, "undo", "AwaitingApproval")
    plan = waiting["status"]["plan"]
    assert plan["scenario"] == "MultiFlag"
    assert {c["name"]: (c["from"], c["to"]) for c in plan["flags"]} == {
        "USE_NEW_DIALOG_CONTEXT_REPO": (False, True),
        "USE_NEW_STORAGE_ADAPTER": (True, False),
    }
    patch_rollback(cluster, namespace, "undo", approved=True, approvedBy="olga")
    done = wait_phase(cluster, namespace, "undo", "Succeeded")
    assert done["status"]["flagsSummary"] == f"revision {first}"
    assert done["status"]["durations"]["total"]
    assert served(cluster, namespace, "USE_NEW_DIALOG_CONTEXT_REPO") == "true"
    assert served(cluster, namespace, "USE_NEW_STORAGE_ADAPTER") == "false"
    assert (
        stored_revisions(cluster, namespace)[-1]["metadata"]["annotations"]["flagops.io/cause"]
        == "rollback undo"
    )

    # Held like any rollback: an edit of the spec does not change what is served.
    set_flag(cluster, namespace, 0, False)
    wait_ready(cluster, namespace)
    assert served(cluster, namespace, "USE_NEW_DIALOG_CONTEXT_REPO") == "true"

    # A revision that is not kept: refused before anything changes.
    request_rollback(cluster, namespace, "too-far", toRevision=99, emergency=True)
    failed = wait_phase(cluster, namespace, "too-far", "Failed")
    assert condition(failed, "Succeeded")["reason"] == "RevisionNotFound"  # type: ignore[index]
    assert "has no revision 99" in failed["status"]["message"]
    assert not failed["metadata"].get("annotations", {}).get("flagops.io/holds")


def test_a_check_template_is_resolved_into_the_plan_and_a_missing_one_refused_before_changes(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    """A ClusterCheckTemplate with an argument, used by the dialog flag: the request's plan holds
    the filled-in check, which runs against a real HTTP endpoint; a CheckTemplate that does not
    exist ends a request Failed/CheckTemplateNotFound with nothing changed."""
    template = f"healthz-{namespace}"[:63]
    kubectl(
        cluster.kubeconfig,
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "flagops.io/v1alpha1",
                "kind": "ClusterCheckTemplate",
                "metadata": {"name": template},
                "spec": {
                    "args": [{"name": "base"}, {"name": "path", "default": "/healthz"}],
                    "check": {"http": {"url": "{{args.base}}{{args.path}}"}, "intervalSeconds": 1},
                },
            }
        ),
    )
    try:
        uses = {"name": "healthy", "templateRef": {"kind": "ClusterCheckTemplate", "name": template}}
        deploy_dialog_enabled(cluster, namespace)
        flagset = load_example_set()
        flagset["spec"]["flags"][0]["enabled"] = True
        flagset["spec"]["flags"][0]["checks"] = [{**uses, "args": {"base": endpoint.url}}]
        flagset["spec"]["flags"][1]["checks"] = [
            {"name": "missing", "templateRef": {"name": "no-such-template"}}
        ]
        apply(cluster, namespace, flagset)
        wait_ready(cluster, namespace)

        request_rollback(cluster, namespace, "templated", flags=["USE_NEW_DIALOG_CONTEXT_REPO"])
        done = wait_phase(cluster, namespace, "templated", "Succeeded")
        planned = done["status"]["plan"]["checks"][0]
        assert (planned["name"], planned["type"]) == ("healthy", "http")
        assert planned["spec"]["http"]["url"] == f"{endpoint.url}/healthz"
        assert "templateRef" not in planned["spec"]
        assert done["status"]["checks"][0]["phase"] == "Passed"

        before = served(cluster, namespace, "USE_NEW_HOMEWORK_REVIEW_SERVICE")
        request_rollback(
            cluster, namespace, "untemplated", flags=["USE_NEW_HOMEWORK_REVIEW_SERVICE"], emergency=True
        )
        failed = wait_phase(cluster, namespace, "untemplated", "Failed")
        assert condition(failed, "Succeeded")["reason"] == "CheckTemplateNotFound"  # type: ignore[index]
        assert (
            f"check missing: CheckTemplate no-such-template not found in namespace {namespace}"
            in failed["status"]["message"]
        )
        assert served(cluster, namespace, "USE_NEW_HOMEWORK_REVIEW_SERVICE") == before
        assert not failed["metadata"].get("annotations", {}).get("flagops.io/holds")
    finally:
        kubectl(cluster.kubeconfig, "delete", "clusterchecktemplate", template, "--ignore-not-found")
