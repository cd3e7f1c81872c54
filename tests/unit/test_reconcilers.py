"""The reconcilers, pass by pass, against an in-memory API (tests/fake_kube.py).

The e2e tests prove the same behaviour on a real control plane; here each write can be made
the last one a process does before it dies, which a real cluster cannot do on demand.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

import pytest

from flagops import kube
from flagops.controller.events import EventRecorder
from flagops.controller.flagsets import FlagSetReconciler, Rollouts
from flagops.controller.index import RollbackIndex
from flagops.controller.owned import OwnedWatcher
from flagops.controller.rollbacks import RollbackReconciler
from flagops.notify import Notifier
from flagops.reconcile import locks
from flagops.reconcile.flagset import HASH_ANNOTATION, Revision
from flagops.reconcile.targets import TargetPolicy
from tests.fake_kube import Crash, FakeKube

NS = "team"
DIALOG = "USE_NEW_DIALOG_CONTEXT_REPO"


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": name}}, "spec": {}}},
    }


def flagset(checks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": "epic21", "namespace": NS},
        "spec": {
            "configMap": "epic21-flags",
            "flags": [
                {"name": DIALOG, "enabled": True, "workloads": [{"name": "butler"}], "checks": checks or []},
                {"name": "USE_NEW_STORAGE_ADAPTER", "enabled": False, "workloads": [{"name": "api"}]},
            ],
        },
    }


def rollback(name: str = "rb", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"flagSet": "epic21", "flags": [DIALOG], **spec},
    }


class Operator:
    """One operator process: its reconcilers and their in-memory state (lost in a crash)."""

    def __init__(self, api: FakeKube) -> None:
        self.now = datetime.datetime.now(datetime.UTC)
        self.index = RollbackIndex()
        events = EventRecorder(api, instance="test")  # type: ignore[arg-type]
        self.flagsets = FlagSetReconciler(api, events, rollbacks=self.index, clock=self.clock)  # type: ignore[arg-type]
        self.rollbacks = RollbackReconciler(
            api,  # type: ignore[arg-type]
            events,
            enqueue_set=lambda namespace, name: None,
            notifier=Notifier(api),  # type: ignore[arg-type]
            targets=TargetPolicy(),
            index=self.index,
            clock=self.clock,
        )

    def clock(self) -> datetime.datetime:
        return self.now

    async def settle(self, api: FakeKube, *, passes: int = 30) -> None:
        """Run set and request passes, a second apart, until the request ends. Like a starting
        operator, it lists the requests first (there is no watch here to report new ones)."""
        await self.index.prime(api, [])  # type: ignore[arg-type]
        for _ in range(passes):
            self.now += datetime.timedelta(seconds=1)
            await self.flagsets.reconcile(NS, "epic21")
            for (plural, _, name), _obj in list(api.objects.items()):
                if plural == "rollbackrequests":
                    await self.rollbacks.reconcile(NS, name)
            request = api.obj("rollbackrequests", NS, "rb")
            phase = (request or {}).get("status", {}).get("phase")
            if request is None or phase in ("Succeeded", "Failed", "Aborted", "Planned"):
                await self.flagsets.reconcile(NS, "epic21")
                return


def served(api: FakeKube) -> str:
    return str(api.obj("configmaps", NS, "epic21-flags")["data"][DIALOG])  # type: ignore[index]


def restarts(api: FakeKube, deployment: str) -> int:
    return sum(1 for p in api.patches_of("deployments", deployment) if "template" in p.get("spec", {}))


def butler_restarts(api: FakeKube) -> int:
    return restarts(api, "butler")


@pytest.fixture
async def deployed() -> FakeKube:
    """Stage 21_01a deployed: the flag on, butler restarted once to take it."""
    api = FakeKube()
    for name in ("butler", "api"):
        api.put("deployments", deployment(name))
    api.put("featureflagsets", flagset())
    await Operator(api).settle(api)
    assert served(api) == "true"
    return api


async def test_a_rollback_runs_to_succeeded_and_holds_the_flag_on_the_request(deployed: FakeKube) -> None:
    api, before = deployed, butler_restarts(deployed)
    api.put("rollbackrequests", rollback())
    await Operator(api).settle(api)
    request = api.obj("rollbackrequests", NS, "rb")
    assert request is not None and request["status"]["phase"] == "Succeeded"
    assert served(api) == "false"
    assert butler_restarts(api) == before + 1
    assert locks.held_annotation(request) is not None


async def test_a_wiped_set_status_changes_nothing_that_is_served(deployed: FakeKube) -> None:
    api = deployed
    api.put("rollbackrequests", rollback())
    operator = Operator(api)
    await operator.settle(api)
    restarts = butler_restarts(api)
    await api.patch(
        "/apis/flagops.io/v1alpha1/namespaces/team/featureflagsets/epic21/status", {"status": None}
    )
    await operator.flagsets.reconcile(NS, "epic21")
    assert served(api) == "false" and butler_restarts(api) == restarts
    status = api.obj("featureflagsets", NS, "epic21")["status"]  # type: ignore[index]
    assert [(o["flag"], o["heldBy"]) for o in status["overrides"]] == [(DIALOG, "rb")]


async def test_a_check_removed_from_the_set_does_not_change_a_running_rollback(deployed: FakeKube) -> None:
    api = deployed
    check = {"name": "ready", "intervalSeconds": 1, "job": {"template": {"template": {"spec": {}}}}}
    await api.patch(
        "/apis/flagops.io/v1alpha1/namespaces/team/featureflagsets/epic21", {"spec": flagset([check])["spec"]}
    )
    api.put("rollbackrequests", rollback())
    operator = Operator(api)
    await operator.settle(api, passes=4)
    assert api.obj("rollbackrequests", NS, "rb")["status"]["phase"] == "Validating"  # type: ignore[index]
    await api.patch(
        "/apis/flagops.io/v1alpha1/namespaces/team/featureflagsets/epic21", {"spec": flagset()["spec"]}
    )
    job = api.obj("jobs", NS, "rb-ready")
    assert job is not None
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    await operator.settle(api)
    status = api.obj("rollbackrequests", NS, "rb")["status"]  # type: ignore[index]
    assert status["phase"] == "Succeeded", status["message"]
    assert [c["phase"] for c in status["checks"]] == ["Passed"]


@pytest.mark.parametrize("crash_at", range(1, 18))  # every write of the rollback (17)
async def test_a_crash_after_any_write_resumes_to_the_same_end_without_a_second_restart(
    deployed: FakeKube, crash_at: int
) -> None:
    api, before = deployed, butler_restarts(deployed)
    api.put("rollbackrequests", rollback())
    api.crash_after(crash_at)
    with contextlib.suppress(Crash):
        await Operator(api).settle(api)
    await Operator(api).settle(api)  # a new process: nothing survives but what the API holds
    request = api.obj("rollbackrequests", NS, "rb")
    assert request is not None and request["status"]["phase"] == "Succeeded", request.get("status")
    assert served(api) == "false"
    assert butler_restarts(api) == before + 1
    butler = api.obj("deployments", NS, "butler")
    held_hash = butler["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]  # type: ignore[index]
    assert held_hash == request["status"]["plan"]["workloads"][0]["toHash"]


async def test_a_removed_restart_annotation_is_put_back_and_said_so(deployed: FakeKube) -> None:
    api, operator = deployed, Operator(deployed)
    await operator.flagsets.reconcile(NS, "epic21")  # butler's rollout seen complete
    states = {w["name"]: w["state"] for w in api.obj("featureflagsets", NS, "epic21")["status"]["workloads"]}  # type: ignore[index]
    assert states["butler"] == "Ready"
    butler = api.obj("deployments", NS, "butler")
    assert butler is not None
    served_hash = butler["spec"]["template"]["metadata"]["annotations"].pop(HASH_ANNOTATION)
    await operator.flagsets.reconcile(NS, "epic21")
    butler = api.obj("deployments", NS, "butler")
    assert butler["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION] == served_hash  # type: ignore[index]
    reasons = [o["reason"] for (plural, _, _), o in api.objects.items() if plural == "events"]
    assert "WorkloadAnnotationCorrected" in reasons
    assert served(api) == "true"


class RecordingNotifier(Notifier):
    """Records what would be sent, per receiver."""

    def __init__(self, api: FakeKube) -> None:
        super().__init__(api)  # type: ignore[arg-type]
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(
        self, namespace: str, flagset: str, message: dict[str, Any], *, receiver: str = "webhook"
    ) -> None:  # type: ignore[override]
        self.sent.append((receiver, message))


def escalating_set(api: FakeKube, checks: list[dict[str, Any]] | None = None) -> None:
    for name in ("butler", "api"):
        api.put("deployments", deployment(name))
    body = flagset(checks=checks)
    body["spec"]["notifications"] = {
        "escalation": {"urlSecretRef": {"name": "pager", "key": "url"}, "afterSeconds": 30}
    }
    api.put("featureflagsets", body)


def escalations(notifier: RecordingNotifier) -> list[dict[str, Any]]:
    return [message for receiver, message in notifier.sent if receiver == "escalation"]


async def test_a_rollback_that_overruns_escalates_once_and_the_record_survives_a_wiped_status() -> None:
    api = FakeKube()
    escalating_set(api)
    operator = Operator(api)
    await operator.settle(api)
    notifier = RecordingNotifier(api)
    operator.rollbacks._notifier = notifier
    # Two flags: the set's matrix wants an approval nobody gives.
    api.put("rollbackrequests", rollback(flags=[DIALOG, "USE_NEW_STORAGE_ADAPTER"]))
    await operator.settle(api, passes=5)
    assert api.obj("rollbackrequests", NS, "rb")["status"]["phase"] == "AwaitingApproval"  # type: ignore[index]
    assert escalations(notifier) == []

    operator.now += datetime.timedelta(seconds=60)
    again = await operator.rollbacks.reconcile(NS, "rb")
    await operator.rollbacks.reconcile(NS, "rb")
    (sent,) = escalations(notifier)
    assert (sent["kind"], sent["why"], sent["phase"]) == ("Escalation", "Overdue", "AwaitingApproval")
    assert "has not succeeded after 1m" in sent["text"] and "approval" in sent["waitingFor"]
    request = api.obj("rollbackrequests", NS, "rb")
    assert request is not None and request["status"]["escalation"] == sent["text"]
    assert again is None  # nothing more to wake up for: the approval arrives as an event

    path = f"/apis/flagops.io/v1alpha1/namespaces/{NS}/rollbackrequests/rb/status"
    await api.patch(path, {"status": {"escalatedAt": None, "escalation": None}})
    await operator.rollbacks.reconcile(NS, "rb")
    assert len(escalations(notifier)) == 1


async def test_a_waiting_rollback_wakes_up_when_its_escalation_is_due() -> None:
    api = FakeKube()
    escalating_set(api)
    operator = Operator(api)
    await operator.settle(api)
    api.put("rollbackrequests", rollback(flags=[DIALOG, "USE_NEW_STORAGE_ADAPTER"]))
    await operator.rollbacks.reconcile(NS, "rb")
    wait = await operator.rollbacks.reconcile(NS, "rb")
    assert wait is not None and 0 < wait <= 30


async def test_a_failed_rollback_escalates_at_once() -> None:
    api = FakeKube()
    # The check's target is loopback, which the default target policy refuses: Failed.
    escalating_set(api, checks=[{"name": "health", "http": {"url": "http://127.0.0.1:9/healthz"}}])
    operator = Operator(api)
    await operator.settle(api)
    notifier = RecordingNotifier(api)
    operator.rollbacks._notifier = notifier
    api.put("rollbackrequests", rollback())
    await operator.settle(api)
    assert api.obj("rollbackrequests", NS, "rb")["status"]["phase"] == "Failed"  # type: ignore[index]
    await operator.rollbacks.reconcile(NS, "rb")
    await operator.rollbacks.reconcile(NS, "rb")
    (sent,) = escalations(notifier)
    assert sent["why"] == "Failed" and "failed after" in sent["text"]


def small_set(name: str, *, enabled: bool) -> dict[str, Any]:
    """A set of one flag read by the Deployment of the same name."""
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"flags": [{"name": "F", "enabled": enabled, "workloads": [{"name": name}]}]},
    }


async def test_the_restart_budget_holds_a_second_set_until_the_first_rollout_ends() -> None:
    api = FakeKube()
    woken: list[tuple[str, str]] = []
    events = EventRecorder(api, instance="test")  # type: ignore[arg-type]
    rollouts = Rollouts(1, wake=lambda namespace, name: woken.append((namespace, name)))
    sets = FlagSetReconciler(api, events, rollbacks=RollbackIndex(), rollouts=rollouts)  # type: ignore[arg-type]
    for name in ("a", "b"):
        api.put("deployments", deployment(name))
        api.put("featureflagsets", small_set(name, enabled=False))
        await sets.reconcile(NS, name)  # the first ConfigMap and restart of each: settled at once
    api.complete_rollouts = False
    for name in ("a", "b"):
        api.put("featureflagsets", small_set(name, enabled=True))
    before = restarts(api, "b")

    await sets.reconcile(NS, "a")
    await sets.reconcile(NS, "b")
    workload_b = api.obj("featureflagsets", NS, "b")["status"]["workloads"][0]  # type: ignore[index]
    assert workload_b["state"] == "Pending"
    assert "--max-concurrent-restarts=1; 1 rollouts in progress" in workload_b["message"]
    assert restarts(api, "b") == before

    api.complete_rollouts = True
    deployment_a = api.obj("deployments", NS, "a")
    api.put("deployments", deployment_a)  # type: ignore[arg-type]  # its controller finishes the rollout
    await sets.reconcile(NS, "a")
    assert woken == [(NS, "b")]  # at once, not at b's next recheck
    await sets.reconcile(NS, "b")
    assert restarts(api, "b") == before + 1


async def test_outside_its_change_window_a_set_writes_its_configmap_and_restarts_when_it_opens() -> None:
    api = FakeKube()
    now = datetime.datetime(2026, 11, 28, 3, 0, tzinfo=datetime.UTC)
    sets = FlagSetReconciler(
        api,  # type: ignore[arg-type]
        EventRecorder(api, instance="test"),  # type: ignore[arg-type]
        rollbacks=RollbackIndex(),
        clock=lambda: now,
    )
    api.put("deployments", deployment("a"))
    api.put("featureflagsets", small_set("a", enabled=False))
    await sets.reconcile(NS, "a")  # before the window was set: the first restart happens at once
    windowed = small_set("a", enabled=True)
    windowed["spec"]["rollout"] = {"windows": [{"start": "09:00", "end": "10:00"}]}
    api.put("featureflagsets", windowed)
    before = restarts(api, "a")

    again = await sets.reconcile(NS, "a")
    assert api.obj("configmaps", NS, "a")["data"]["F"] == "true"  # type: ignore[index]
    assert restarts(api, "a") == before
    conditions = {c["type"]: c for c in api.obj("featureflagsets", NS, "a")["status"]["conditions"]}  # type: ignore[index]
    assert conditions["Progressing"]["reason"] == "WaitingForWindow"
    assert "at 2026-11-28T09:00:00Z" in conditions["Progressing"]["message"]
    assert again is not None and 6 * 3600 <= again < 6 * 3600 + 1  # woken when it opens

    now = datetime.datetime(2026, 11, 28, 9, 0, tzinfo=datetime.UTC)
    await sets.reconcile(NS, "a")
    assert restarts(api, "a") == before + 1


def edit_set(api: FakeKube, **changes: Any) -> None:
    """An edit of the stored set (same object, uid kept): `changes` maps a flag index or a spec
    field to what to merge in."""
    obj = api.obj("featureflagsets", NS, "epic21")
    assert obj is not None
    for key, value in changes.items():
        if key.startswith("flag"):
            obj["spec"]["flags"][int(key[4:])].update(value)
        else:
            obj["spec"][key] = value
    api.put("featureflagsets", obj)


def revisions(api: FakeKube, set_name: str = "epic21") -> list[tuple[int, str, dict[str, Any]]]:
    found = [o for (plural, _, _), o in api.objects.items() if plural == "controllerrevisions"]
    parsed = [Revision.parse(o) for o in found if o["metadata"]["labels"]["flagops.io/flagset"] == set_name]
    return sorted((r.number, r.cause, r.values) for r in parsed if r is not None)


async def test_every_change_of_the_served_values_is_a_revision_with_its_cause(deployed: FakeKube) -> None:
    api = deployed
    assert revisions(api) == [(1, "created", {DIALOG: True, "USE_NEW_STORAGE_ADAPTER": False})]
    edit_set(api, flag1={"enabled": True})
    op = Operator(api)
    await op.flagsets.reconcile(NS, "epic21")
    await op.flagsets.reconcile(NS, "epic21")  # a second pass records nothing new
    assert [r[:2] for r in revisions(api)] == [(1, "created"), (2, "spec edit (generation 1)")]

    api.put("rollbackrequests", rollback())
    await op.settle(api)
    assert revisions(api)[-1] == (3, "rollback rb", {DIALOG: False, "USE_NEW_STORAGE_ADAPTER": True})
    request = api.obj("rollbackrequests", NS, "rb")
    assert request is not None
    request["spec"]["release"] = True
    op.rollbacks.observe(api.put("rollbackrequests", request))  # as its watch event would
    await op.settle(api)
    assert revisions(api)[-1][:2] == (4, "release rb")
    assert api.obj("featureflagsets", NS, "epic21")["status"]["revision"] == 4  # type: ignore[index]


async def test_revisions_beyond_the_history_limit_are_deleted(deployed: FakeKube) -> None:
    api, op = deployed, Operator(deployed)
    for enabled in (True, False, True, False):
        edit_set(api, revisionHistoryLimit=2, flag1={"enabled": enabled})
        await op.flagsets.reconcile(NS, "epic21")
    assert [r[0] for r in revisions(api)] == [4, 5]


async def test_a_rollback_to_a_revision_holds_that_revisions_values(deployed: FakeKube) -> None:
    api, op = deployed, Operator(deployed)
    edit_set(api, flag0={"enabled": False}, flag1={"enabled": True})
    await op.flagsets.reconcile(NS, "epic21")  # revision 2: both flags flipped
    api.put("rollbackrequests", rollback(flags=[], toRevision=1, approved=True, approvedBy="olga"))
    await op.settle(api)
    request = api.obj("rollbackrequests", NS, "rb")
    assert request is not None and request["status"]["phase"] == "Succeeded"
    plan = request["status"]["plan"]
    assert plan["scenario"] == "MultiFlag"
    assert {c["name"]: (c["from"], c["to"]) for c in plan["flags"]} == {
        DIALOG: (False, True),
        "USE_NEW_STORAGE_ADAPTER": (True, False),
    }
    assert plan["holds"] == {DIALOG: True, "USE_NEW_STORAGE_ADAPTER": False}
    assert served(api) == "true"


async def test_a_rollback_to_a_revision_that_is_not_kept_fails_before_changing_anything(
    deployed: FakeKube,
) -> None:
    api, before = deployed, served(deployed)
    api.put("rollbackrequests", rollback(flags=[], toRevision=7, approved=True, approvedBy="olga"))
    await Operator(api).settle(api)
    request = api.obj("rollbackrequests", NS, "rb")
    assert request is not None and request["status"]["phase"] == "Failed"
    succeeded = next(c for c in request["status"]["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "RevisionNotFound"
    message = request["status"]["message"]
    assert "has no revision 7" in message and "nothing was changed" in message
    assert served(api) == before and locks.held_annotation(request) is None


def watched_set(api: FakeKube) -> tuple[FlagSetReconciler, OwnedWatcher]:
    """A set reconciler fed by watches, as in the operator: the sets' events and the ConfigMaps'."""
    owned = OwnedWatcher(api, lambda namespace, name: None, [NS])  # type: ignore[arg-type]
    events = EventRecorder(api, instance="test")  # type: ignore[arg-type]
    sets = FlagSetReconciler(api, events, rollbacks=RollbackIndex(), owned=owned)  # type: ignore[arg-type]
    return sets, owned


def verbs(api: FakeKube, plural: str) -> list[str]:
    """The reads and writes of `plural` since the last clear, in order."""
    reads = [verb for verb, path in api.reads if f"/{plural}" in path]
    writes = [verb for verb, path, _ in api.writes if f"/{plural}" in path]
    return reads + writes


async def test_a_new_set_from_the_watch_costs_three_writes_and_no_read() -> None:
    api = FakeKube()
    sets, owned = watched_set(api)
    await owned.relist(kube.CONFIGMAPS.paths([NS])[0])
    body = small_set("a", enabled=True)
    body["spec"]["flags"][0]["workloads"] = []  # no restart, so no RestartingWorkload Event
    sets.observe(api.put("featureflagsets", body))
    api.reads.clear()

    await sets.reconcile(NS, "a")
    assert verbs(api, "featureflagsets") == ["PATCH"]  # its status; the body came from the watch
    assert verbs(api, "configmaps") == ["POST"]  # known absent: created without a GET
    assert verbs(api, "controllerrevisions") == ["POST"]  # revision 1, without listing first
    assert verbs(api, "events") == []  # a new set served as written is no news
    assert api.obj("featureflagsets", NS, "a")["status"]["revision"] == 1  # type: ignore[index]

    # Its own status write comes back on the watch: a pass that finds everything as wanted.
    api.reads.clear()
    api.writes.clear()
    sets.observe(api.obj("featureflagsets", NS, "a"))  # type: ignore[arg-type]
    await sets.reconcile(NS, "a")
    assert api.reads == []
    assert api.writes == []


async def test_a_stale_body_from_the_watch_costs_a_conflict_and_the_retry_reads_fresh() -> None:
    api = FakeKube()
    api.put("deployments", deployment("a"))
    sets, owned = watched_set(api)
    await owned.relist(kube.CONFIGMAPS.paths([NS])[0])
    stale = api.put("featureflagsets", small_set("a", enabled=False))
    api.put("featureflagsets", small_set("a", enabled=True))  # edited before the pass ran
    sets.observe(stale)
    with pytest.raises(kube.ApiError) as raised:
        await sets.reconcile(NS, "a")
    assert raised.value.conflict
    await sets.reconcile(NS, "a")  # the queue's retry
    assert api.obj("configmaps", NS, "a")["data"]["F"] == "true"  # type: ignore[index]
    assert api.obj("featureflagsets", NS, "a")["status"]["effective"] == {"F": True}  # type: ignore[index]


async def test_a_revision_1_left_behind_is_found_by_listing_and_numbered_above() -> None:
    api = FakeKube()
    api.put("deployments", deployment("a"))
    sets, owned = watched_set(api)
    await owned.relist(kube.CONFIGMAPS.paths([NS])[0])
    leftover = {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {"name": "a-r1", "namespace": NS, "labels": {"flagops.io/flagset": "a"}},
        "revision": 1,
        "data": {},
    }
    api.put("controllerrevisions", leftover)  # a predecessor's, awaiting garbage collection
    sets.observe(api.put("featureflagsets", small_set("a", enabled=True)))
    await sets.reconcile(NS, "a")
    assert api.obj("featureflagsets", NS, "a")["status"]["revision"] == 2  # type: ignore[index]
    assert api.obj("controllerrevisions", NS, "a-r2") is not None


def turn_off(api: FakeKube) -> dict[str, Any]:
    """Set a's flag F turned off, as an edit of its spec; the set as stored."""
    current: Any = api.obj("featureflagsets", NS, "a")
    current["spec"]["flags"][0]["enabled"] = False
    return api.put("featureflagsets", current)


async def test_an_edit_updates_the_configmap_as_the_watch_saw_it_without_reading_it() -> None:
    api = FakeKube()
    sets, owned = watched_set(api)
    await owned.relist(kube.CONFIGMAPS.paths([NS])[0])
    body = small_set("a", enabled=True)
    body["spec"]["flags"][0]["workloads"] = []
    sets.observe(api.put("featureflagsets", body))
    await sets.reconcile(NS, "a")
    api.reads.clear()
    api.writes.clear()

    sets.observe(turn_off(api))
    await sets.reconcile(NS, "a")
    assert verbs(api, "configmaps") == ["PATCH"]
    assert verbs(api, "controllerrevisions") == ["LIST", "POST"]
    assert api.obj("configmaps", NS, "a")["data"]["F"] == "false"  # type: ignore[index]
    assert api.obj("featureflagsets", NS, "a")["status"]["revision"] == 2  # type: ignore[index]


async def test_a_configmap_changed_since_the_watch_saw_it_is_read_afresh_on_the_retry() -> None:
    api = FakeKube()
    sets, owned = watched_set(api)
    await owned.relist(kube.CONFIGMAPS.paths([NS])[0])
    body = small_set("a", enabled=True)
    body["spec"]["flags"][0]["workloads"] = []
    sets.observe(api.put("featureflagsets", body))
    await sets.reconcile(NS, "a")
    edited: Any = api.obj("configmaps", NS, "a")
    edited["data"]["F"] = "maybe"
    api.put("configmaps", edited)  # by hand, and the watch has not told yet
    sets.observe(turn_off(api))

    with pytest.raises(kube.ApiError) as raised:
        await sets.reconcile(NS, "a")
    assert raised.value.conflict, "the write carried the resourceVersion seen, not a blind overwrite"
    await sets.reconcile(NS, "a")  # the queue's retry: the ConfigMap read afresh
    assert api.obj("configmaps", NS, "a")["data"]["F"] == "false"  # type: ignore[index]
