"""flagops lends no privilege: Secrets, Jobs and network reach are used on someone's behalf only
within what that someone may do, and the authority matrix decides who initiates and approves.

Each test acts as a user with only the rights it names: a ServiceAccount's token, or a user of
the plan's roles (groups) through impersonation, so the API server's own RBAC answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flagops_dev import devcluster
from tests.e2e.conftest import OperatorProcess
from tests.e2e.helpers import (
    apply,
    bind,
    condition,
    create_secret,
    deploy_dialog_enabled,
    get_set,
    patch,
    role,
    wait_phase,
    wait_terminal,
)
from tests.support import Cluster, Endpoint, KubectlError, kubectl, wait_until

DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"
STORAGE = "USE_NEW_STORAGE_ADAPTER"
HOMEWORK = "USE_NEW_HOMEWORK_REVIEW_SERVICE"
PASSWORD = "hunter2-db-password"


def wait_refused(config: Path, namespace: str, obj: dict[str, Any], phrase: str, *extra: str) -> str:
    """Until a server-side dry run of `obj` is refused with `phrase` (a fresh admission policy takes
    a moment to act); the refusal message. Never creates anything."""

    def refusal() -> str | None:
        result = kubectl(
            config, *extra, "-n", namespace, "apply", "--dry-run=server", "-f", "-",
            stdin=json.dumps(obj), check=False,
        )  # fmt: skip
        return result.stderr if phrase in result.stderr else None

    return wait_until(f"a refusal saying {phrase!r}", refusal, timeout=30)


def refused(config: Path, namespace: str, obj: dict[str, Any], *extra: str) -> str:
    """Apply as `config`'s user; the API server's refusal message."""
    with pytest.raises(KubectlError) as err:
        kubectl(config, *extra, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(obj))
    return err.value.stderr


def admitted(config: Path, namespace: str, obj: dict[str, Any], *extra: str) -> None:
    kubectl(config, *extra, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(obj))


def rollback(name: str, *, flags: tuple[str, ...] = (DIALOG,), **spec: Any) -> dict[str, Any]:
    named = {} if spec.get("all") else {"flags": list(flags)}
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": {"flagSet": "epic21", **named, **spec},
    }


def flagset(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": name},
        "spec": {"flags": [{"name": "PAY_V2", "enabled": True}], **spec},
    }


def token_query(server: str, secret: str = "db-creds") -> dict[str, Any]:
    """A Prometheus query that sends a Secret's `password` as its bearer token."""
    return {"server": server, "query": "up", "bearerTokenSecretRef": {"name": secret, "key": "password"}}


def token_check(server: str) -> dict[str, Any]:
    return {
        "name": "errors",
        "prometheus": {**token_query(server), "comparison": "GreaterThan", "threshold": "0"},
    }


def token_trigger(server: str, secret: str = "db-creds") -> dict[str, Any]:
    return {"name": "t", "prometheus": token_query(server, secret), "threshold": "0", "intervalSeconds": 1}


def job_check(service_account: str | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [{"name": "smoke", "image": "smoke:1"}]}
    if service_account:
        pod["serviceAccountName"] = service_account
    return {"name": "smoke", "job": {"template": {"template": {"spec": pod}}}}


def flag_editor(cluster: Cluster, namespace: str, account: str, tmp_path: Path) -> Path:
    """A ServiceAccount that may create and edit FeatureFlagSets and RollbackRequests, nothing else."""
    kubectl(cluster.kubeconfig, "-n", namespace, "create", "serviceaccount", account)
    role(
        cluster,
        namespace,
        "editor",
        ("get,list,watch,create,patch,update", "featureflagsets.flagops.io"),
        ("get,list,watch,create,patch,update", "rollbackrequests.flagops.io"),
    )
    for resource in ("featureflagsets", "rollbackrequests"):
        bind(cluster, namespace, f"editor-{resource}", f"--serviceaccount={namespace}:{account}")
    return devcluster.serviceaccount_kubeconfig(cluster.kubeconfig, namespace, account, tmp_path / account)


def wait_delegation_enforced(cluster: Cluster, namespace: str) -> None:
    """The policy is active once it refuses what it must (a fresh policy takes a moment)."""
    many = flagset(
        "probe",
        flags=[{"name": f"F{i}", "triggers": [token_trigger("http://p", f"s{i}")]} for i in range(9)],
    )
    wait_refused(cluster.kubeconfig, namespace, many, "at most 8 at a time")


# -- Secrets ---------------------------------------------------------------------------------


def test_a_secret_its_author_cannot_read_is_refused_at_admission(
    cluster: Cluster, namespace: str, policies: None, endpoint: Endpoint, tmp_path: Path
) -> None:
    create_secret(cluster, namespace, "db-creds", password=PASSWORD)
    oncall = flag_editor(cluster, namespace, "oncall", tmp_path)
    can_i = kubectl(oncall, "-n", namespace, "auth", "can-i", "get", "secrets", check=False)
    assert can_i.stdout.strip() == "no"
    wait_delegation_enforced(cluster, namespace)

    # The attempt of the report: a check that sends the password as a bearer token.
    message = refused(oncall, namespace, rollback("exfil", checks=[token_check(endpoint.url)]))
    assert f"system:serviceaccount:{namespace}:oncall may not get Secret db-creds" in message
    assert "RollbackRequest would have flagops send it" in message
    # The same through a trigger, and through a webhook.
    trigger = token_trigger(endpoint.url)
    message = refused(oncall, namespace, flagset("via-trigger", flags=[{"name": "X", "triggers": [trigger]}]))
    assert "may not get Secret db-creds" in message and "FeatureFlagSet" in message
    webhook = {"webhook": {"urlSecretRef": {"name": "db-creds", "key": "password"}}}
    assert "may not get Secret db-creds" in refused(
        oncall, namespace, flagset("via-hook", notifications=webhook)
    )

    # Given read access to that one Secret, the same request is admitted: the rule is the right.
    role(cluster, namespace, "reader", ("get", "secrets"))
    only_db_creds = {"op": "add", "path": "/rules/0/resourceNames", "value": ["db-creds"]}
    patch(cluster, namespace, "role", "reader-secrets", [only_db_creds])
    bind(cluster, namespace, "reader-secrets", f"--serviceaccount={namespace}:oncall")
    wait_until(
        "read access granted",
        lambda: (
            kubectl(
                oncall, "-n", namespace, "auth", "can-i", "get", "secret/db-creds", check=False
            ).stdout.strip()
            == "yes"
        ),
    )
    admitted(oncall, namespace, rollback("dry", checks=[token_check(endpoint.url)], dryRun=True))


def test_an_unchanged_reference_needs_no_secret_access_but_a_new_destination_does(
    cluster: Cluster, namespace: str, policies: None, endpoint: Endpoint, tmp_path: Path
) -> None:
    create_secret(cluster, namespace, "db-creds", password=PASSWORD)
    oncall = flag_editor(cluster, namespace, "oncall", tmp_path)
    wait_delegation_enforced(cluster, namespace)
    guarded = flagset(
        "guarded", flags=[{"name": "PAY_V2", "enabled": True, "checks": [token_check(endpoint.url)]}]
    )
    admitted(cluster.kubeconfig, namespace, guarded)  # the admin may read db-creds

    def replace(path: str, value: Any) -> None:
        patch = json.dumps([{"op": "replace", "path": path, "value": value}])
        kubectl(oncall, "-n", namespace, "patch", "ffs", "guarded", "--type=json", "-p", patch)

    # On-call flips the flag: the reference is unchanged, so no Secret access is needed.
    replace("/spec/flags/0/enabled", False)
    # Pointing the same Secret at another server is a new use of it.
    with pytest.raises(KubectlError) as err:
        replace("/spec/flags/0/checks/0/prometheus/server", "http://127.0.0.1:9/")
    assert "may not get Secret db-creds" in err.value.stderr


def test_flagops_sends_nothing_from_a_secret_that_has_not_opted_in(
    cluster: Cluster, namespace: str, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    """No admission policy here: the opt-in label alone keeps the Secret's value home."""
    endpoint.routes["/api/v1/query?query=up"] = (
        200,
        {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
        },
    )
    create_secret(cluster, namespace, "db-creds", usable=False, password=PASSWORD)
    deploy_dialog_enabled(cluster, namespace)
    apply(cluster, namespace, rollback("rb", checks=[token_check(endpoint.url)]))
    done = {"status": wait_terminal(cluster, namespace, "rb")}
    assert done["status"]["phase"] == "Failed"
    assert condition(done, "Succeeded")["reason"] == "SecretNotUsable"  # type: ignore[index]
    check = done["status"]["checks"][0]
    assert check["reason"] == "SecretNotUsable"
    assert "has not opted in to use by flagops" in check["message"]
    assert "flagops.io/usable=true" in check["message"]
    assert endpoint.hits == [] and endpoint.authorizations == []
    events = kubectl(cluster.kubeconfig, "-n", namespace, "get", "events", "-o", "json").stdout
    assert (
        PASSWORD not in json.dumps(done)
        and PASSWORD not in events
        and PASSWORD not in operator.log.read_text()
    )

    # A trigger reading the same Secret is in Error and fetches nothing either.
    trigger = token_trigger(endpoint.url)
    apply(cluster, namespace, flagset("triggered", flags=[{"name": "X", "triggers": [trigger]}]))

    def trigger_state() -> dict[str, Any] | None:
        states = get_set(cluster, namespace, "triggered").get("status", {}).get("triggers") or []
        return states[0] if states and states[0]["state"] == "Error" else None

    assert "has not opted in" in wait_until("the trigger in Error", trigger_state)["message"]
    assert endpoint.hits == []

    # Once the Secret's owner opts in, the token is sent (the same request shape, so the test can fail).
    create_secret(cluster, namespace, "db-creds", password=PASSWORD)
    wait_until("the token sent", lambda: endpoint.authorizations)
    assert endpoint.authorizations[0] == f"Bearer {PASSWORD}"


# -- Jobs ------------------------------------------------------------------------------------


def test_job_checks_need_the_right_to_create_jobs_and_to_act_as_their_serviceaccount(
    cluster: Cluster, namespace: str, policies: None, tmp_path: Path
) -> None:
    oncall = flag_editor(cluster, namespace, "oncall", tmp_path)
    wait_delegation_enforced(cluster, namespace)
    message = refused(oncall, namespace, rollback("smoke", checks=[job_check()], dryRun=True))
    assert f"system:serviceaccount:{namespace}:oncall may not create Jobs in namespace {namespace}" in message

    role(cluster, namespace, "runner", ("create", "jobs.batch"))
    bind(cluster, namespace, "runner-jobs", f"--serviceaccount={namespace}:oncall")
    wait_until(
        "the right to create Jobs",
        lambda: (
            kubectl(oncall, "-n", namespace, "auth", "can-i", "create", "jobs", check=False).stdout.strip()
            == "yes"
        ),
    )
    message = refused(oncall, namespace, rollback("as-deployer", checks=[job_check("deployer")], dryRun=True))
    assert "runs its pod as ServiceAccount deployer" in message
    admitted(oncall, namespace, rollback("smoke", checks=[job_check()], dryRun=True))
    admitted(oncall, namespace, rollback("as-default", checks=[job_check("default")], dryRun=True))


# -- where checks connect -------------------------------------------------------------------


def test_a_check_may_reach_only_the_allowed_targets(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> None:
    allowed, other = Endpoint(), Endpoint()
    for server in (allowed, other):
        server.routes["/healthz"] = (200, {"status": "ok"})
    op = OperatorProcess(
        cluster.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        metrics_port=devcluster.free_port(),
        extra_args=(f"--allowed-targets={allowed.url.removeprefix('http://')}",),
    )
    op.start()
    try:
        deploy_dialog_enabled(cluster, namespace)
        health = {"name": "health", "http": {"url": f"{allowed.url}/healthz"}}
        apply(cluster, namespace, rollback("first", checks=[health]))
        assert wait_terminal(cluster, namespace, "first")["phase"] == "Succeeded"
        assert allowed.hits == ["/healthz"]

        # The second holds the same flag (no restart) and aims its check at the other listener.
        health = {"name": "health", "http": {"url": f"{other.url}/healthz"}}
        apply(cluster, namespace, rollback("second", checks=[health]))
        done = {"status": wait_terminal(cluster, namespace, "second")}
    finally:
        op.stop()
        allowed.close()
        other.close()
    assert done["status"]["phase"] == "Failed"
    assert condition(done, "Succeeded")["reason"] == "TargetNotAllowed"  # type: ignore[index]
    check = done["status"]["checks"][0]
    assert check["reason"] == "TargetNotAllowed" and "is not in --allowed-targets" in check["message"]
    assert other.hits == []


# -- the authority matrix --------------------------------------------------------------------


def as_user(name: str, group: str) -> tuple[str, ...]:
    return (f"--as={name}", f"--as-group={group}")


def test_the_plans_authority_matrix_decides_who_initiates_and_who_approves(
    cluster: Cluster, namespace: str, policies: None, operator: OperatorProcess
) -> None:
    role(cluster, namespace, "responder", ("get,list,watch,create,patch", "rollbackrequests.flagops.io"))
    for group in ("ep21-oncall", "ep21-tech-lead", "operations-managers", "developers"):
        bind(cluster, namespace, "responder-rollbackrequests", f"--group={group}")
    deploy_dialog_enabled(cluster, namespace)  # the example set carries the plan's matrix
    wait_delegation_enforced(cluster, namespace)
    admin = cluster.kubeconfig

    # Someone who may create RollbackRequests, but is no initiator of an emergency rollback.
    emergency = rollback("emergency", all=True, emergency=True)
    message = wait_refused(admin, namespace, emergency, "may not initiate", *as_user("dev", "developers"))
    assert "dev may not initiate Emergency rollbacks of FeatureFlagSet epic21" in message
    assert "initiators: group:ep21-oncall, group:ep21-tech-lead" in message

    # A multi-flag rollback: on-call may not initiate it; the tech lead may.
    multi = rollback("multi", flags=(DIALOG, STORAGE))
    assert "carol may not initiate MultiFlag rollbacks" in refused(
        admin, namespace, multi, *as_user("carol", "ep21-oncall")
    )
    admitted(admin, namespace, multi, *as_user("lena", "ep21-tech-lead"))
    assert (
        wait_phase(cluster, namespace, "multi", "AwaitingApproval")["status"]["plan"]["scenario"]
        == "MultiFlag"
    )

    def approve(user: str, group: str) -> None:
        patch = {"spec": {"approved": True, "approvedBy": user}}
        kubectl(
            admin,
            *as_user(user, group),
            "-n",
            namespace,
            "patch",
            "rollback",
            "multi",
            "--type=merge",
            "-p",
            json.dumps(patch),
        )

    with pytest.raises(KubectlError) as err:
        approve("carol", "ep21-oncall")
    assert "carol may not approve MultiFlag rollbacks of FeatureFlagSet epic21" in err.value.stderr
    assert "approvers: group:operations-managers" in err.value.stderr
    approve("olga", "operations-managers")
    done = wait_phase(cluster, namespace, "multi", "Succeeded")
    assert done["status"]["approvedBy"] == "olga"

    assert get_set(cluster, namespace)["status"]["overrideCount"] == 2

    # On-call rolls back one flag within the hour of its last change: no approval.
    admitted(admin, namespace, rollback("single", flags=(HOMEWORK,)), *as_user("carol", "ep21-oncall"))
    single = wait_phase(cluster, namespace, "single", "Succeeded")
    assert single["status"]["plan"]["scenario"] == "SingleFlagInWindow"
    assert single["status"].get("approvedBy") is None


def test_a_drill_runs_only_what_its_author_may_run_and_an_escalation_url_is_a_secret_use(
    cluster: Cluster,
    namespace: str,
    policies: None,
    operator: OperatorProcess,
    endpoint: Endpoint,
    tmp_path: Path,
) -> None:
    create_secret(cluster, namespace, "db-creds", password=PASSWORD)
    role(
        cluster,
        namespace,
        "driller",
        ("get,list,watch,create,patch", "rollbackdrills.flagops.io"),
        ("get,list,watch,create,patch", "rollbackrequests.flagops.io"),
    )
    for group in ("developers", "ep21-tech-lead"):
        for resource in ("rollbackdrills", "rollbackrequests"):
            bind(cluster, namespace, f"driller-{resource}", f"--group={group}")
    deploy_dialog_enabled(cluster, namespace)
    wait_delegation_enforced(cluster, namespace)
    admin = cluster.kubeconfig

    def drill(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "flagops.io/v1alpha1",
            "kind": "RollbackDrill",
            "metadata": {"name": name},
            "spec": {
                "flagSet": "epic21",
                "all": True,
                "owner": "lena",
                "stage": "all",
                "schedule": "@weekly",
                **spec,
            },
        }

    # flagops would initiate each drill: its author must be an initiator of that scenario.
    message = wait_refused(
        admin, namespace, drill("weekly"), "may not initiate", *as_user("dev", "developers")
    )
    assert "dev may not initiate MultiFlag rollbacks of FeatureFlagSet epic21" in message
    assert "which this RollbackDrill would run in its name" in message
    # Its runs do not wait for approval, so its author must also be an approver of the scenario.
    lena = ("--as=lena", "--as-group=ep21-tech-lead", "--as-group=operations-managers")
    message = refused(admin, namespace, drill("weekly", suspend=True), *as_user("lena", "ep21-tech-lead"))
    assert "lena may not approve MultiFlag rollbacks of FeatureFlagSet epic21" in message
    assert "the drills of this RollbackDrill run without waiting for approval" in message
    admitted(admin, namespace, drill("weekly", suspend=True), *lena)
    # Nobody else can pass a request off as a drill's run.
    forged = rollback("forged", drill=True)
    forged["metadata"]["labels"] = {"flagops.io/drill-uid": "x"}
    message = refused(admin, namespace, forged, *as_user("lena", "ep21-tech-lead"))  # an initiator
    assert "the label flagops.io/drill-uid is set by flagops" in message

    # A drill's checks are Secret uses like a request's (lena as both initiator and approver, so
    # only the delegation policy has a reason to refuse).
    message = refused(admin, namespace, drill("exfil", checks=[token_check(endpoint.url)]), *lena)
    assert (
        "lena may not get Secret db-creds" in message
        and "RollbackDrill would have flagops send it" in message
    )

    # So is an escalation receiver's URL.
    oncall = flag_editor(cluster, namespace, "oncall", tmp_path)
    escalation = {"escalation": {"urlSecretRef": {"name": "db-creds", "key": "password"}}}
    assert "may not get Secret db-creds" in refused(
        oncall, namespace, flagset("paging", notifications=escalation)
    )
