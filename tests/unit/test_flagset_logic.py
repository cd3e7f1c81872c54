"""The FeatureFlagSet decisions, as pure functions: no cluster involved."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from pydantic import ValidationError

from flagops import conditions as c
from flagops.models.flagset import (
    FeatureFlagSetSpec,
    FeatureFlagSetStatus,
    Override,
    RolloutStrategy,
    WorkloadKind,
    WorkloadState,
    WorkloadStatus,
)
from flagops.reconcile import flagset as logic

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def spec(*flags: dict[str, Any], **extra: Any) -> FeatureFlagSetSpec:
    return FeatureFlagSetSpec.model_validate({"flags": list(flags), **extra})


def deployment(
    hash_: str | None = None,
    *,
    claimed: str | None = "s",
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    updated: int = 2,
    available: int = 2,
    total: int = 2,
    deadline: bool = False,
) -> dict[str, Any]:
    annotations = {}
    if hash_ is not None:
        annotations[logic.HASH_ANNOTATION] = hash_
    if claimed is not None:
        annotations[logic.SET_ANNOTATION] = claimed
    conditions = (
        [{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]
        if deadline
        else []
    )
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations}}},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "replicas": total,
            "conditions": conditions,
        },
    }


# -- hashing ---------------------------------------------------------------------------------


def test_hash_ignores_key_order_and_whitespace() -> None:
    a = {"B": True, "A": False}
    b = json.loads('{ "A" : false,\n  "B": true }')
    assert logic.sha256(a) == logic.sha256(b)
    assert logic.canonical_json(a) == '{"A":false,"B":true}'


def test_hash_changes_with_any_value() -> None:
    assert logic.sha256({"A": False}) != logic.sha256({"A": True})
    assert logic.sha256({"A": False}) != logic.sha256({"A": False, "B": False})


def test_workload_hash_covers_only_the_flags_it_consumes() -> None:
    s = spec({"name": "A", "workloads": [{"name": "one"}]}, {"name": "B", "workloads": [{"name": "two"}]})
    before = {t.name: t.hash for t in logic.workload_targets(s, {"A": False, "B": False})}
    after = {t.name: t.hash for t in logic.workload_targets(s, {"A": False, "B": True})}
    assert before["one"] == after["one"]
    assert before["two"] != after["two"]


def test_workload_consuming_several_flags_is_one_target() -> None:
    s = spec(
        {"name": "A", "workloads": [{"name": "w"}]},
        {"name": "B", "workloads": [{"name": "w"}]},
        {"name": "C", "workloads": [{"kind": "StatefulSet", "name": "w"}]},
    )
    targets = logic.workload_targets(s, {"A": True, "B": False, "C": False})
    assert [(t.kind, t.name, t.flags) for t in targets] == [
        (WorkloadKind.DEPLOYMENT, "w", ("A", "B")),
        (WorkloadKind.STATEFUL_SET, "w", ("C",)),
    ]


# -- served values ---------------------------------------------------------------------------


def test_spec_values_are_served() -> None:
    r = logic.resolve(spec({"name": "A", "enabled": True}, {"name": "B"}))
    assert r.values == {"A": True, "B": False}
    assert r.blocked == {}


def test_enabled_flag_with_disabled_prerequisite_is_not_served() -> None:
    r = logic.resolve(spec({"name": "BASE"}, {"name": "CHILD", "enabled": True, "requires": ["BASE"]}))
    assert r.values == {"BASE": False, "CHILD": False}
    assert r.blocked["CHILD"] == "CHILD is enabled but requires BASE, which is disabled; enable BASE first"


def test_prerequisites_apply_transitively() -> None:
    r = logic.resolve(
        spec(
            {"name": "A"},
            {"name": "B", "enabled": True, "requires": ["A"]},
            {"name": "C", "enabled": True, "requires": ["B"]},
        )
    )
    assert r.values == {"A": False, "B": False, "C": False}
    assert set(r.blocked) == {"B", "C"}


def test_dependency_cycle_serves_false_and_names_the_cycle() -> None:
    r = logic.resolve(
        spec(
            {"name": "A", "enabled": True, "requires": ["B"]},
            {"name": "B", "enabled": True, "requires": ["A"]},
            {"name": "C", "enabled": True},
        )
    )
    assert r.values == {"A": False, "B": False, "C": True}
    assert set(r.cycle) == {"A", "B"}
    assert "dependency cycle" in r.blocked["A"]


def test_override_replaces_the_spec_value() -> None:
    held = Override(flag="A", value=False, held_by="rb-1", since=NOW)
    r = logic.resolve(
        spec({"name": "A", "enabled": True}, {"name": "B", "enabled": True, "requires": ["A"]}), [held]
    )
    assert r.values == {"A": False, "B": False}
    assert r.held == {"A": held}


def test_override_of_unknown_flag_is_ignored() -> None:
    r = logic.resolve(
        spec({"name": "A", "enabled": True}), [Override(flag="GONE", value=False, held_by="rb", since=NOW)]
    )
    assert r.values == {"A": True} and r.held == {}


# -- ConfigMap -------------------------------------------------------------------------------


def test_configmap_has_env_keys_flags_json_and_flagd_json() -> None:
    cm = logic.desired_configmap("ns", "s", "uid-1", "s-flags", {"B": True, "A": False})
    data = cm["data"]
    assert data["A"] == "false" and data["B"] == "true"
    assert json.loads(data["flags.json"]) == {"A": False, "B": True}
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "flagops.io/v1alpha1",
            "kind": "FeatureFlagSet",
            "name": "s",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert cm["metadata"]["annotations"][logic.HASH_ANNOTATION] == logic.sha256(data)


def test_flagd_document_follows_the_flag_definition_shape() -> None:
    doc = json.loads(logic.configmap_data({"A": True, "B": False})["flagd.json"])
    assert doc["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    for name, expected in (("A", "on"), ("B", "off")):
        flag = doc["flags"][name]
        assert set(flag) == {"state", "variants", "defaultVariant"}
        assert flag["state"] in ("ENABLED", "DISABLED")
        assert flag["variants"] == {"on": True, "off": False}
        assert flag["defaultVariant"] == expected and flag["defaultVariant"] in flag["variants"]


def test_configmap_patch_removes_dropped_flags_and_is_none_when_equal() -> None:
    old = logic.desired_configmap("ns", "s", "u", "cm", {"A": True, "GONE": False})
    new = logic.desired_configmap("ns", "s", "u", "cm", {"A": True})
    patch = logic.configmap_patch(old, new)
    assert patch is not None and patch["data"]["GONE"] is None
    assert logic.configmap_patch(new, new) is None


def test_ownership_is_by_controller_uid() -> None:
    cm = logic.desired_configmap("ns", "s", "uid-1", "cm", {})
    assert logic.owned_by(cm, "uid-1")
    assert not logic.owned_by(cm, "uid-2")
    assert not logic.owned_by({"metadata": {}}, "uid-1")


# -- restarts --------------------------------------------------------------------------------


def plan(
    s: FeatureFlagSetSpec,
    values: dict[str, bool],
    observed: dict[tuple[str, str], Any],
    previous: list[WorkloadStatus] | None = None,
    **kwargs: Any,
) -> logic.WorkloadPlan:
    targets = logic.workload_targets(s, values)
    options = {
        "set_name": "s",
        "strategy": RolloutStrategy.RESTART,
        "max_parallel": 1,
        "timeout_seconds": 600,
        "now": NOW,
        **kwargs,
    }
    return logic.plan_workloads(targets, observed, previous or [], **options)


ONE = spec({"name": "A", "workloads": [{"name": "one"}]})


def test_unchanged_hash_means_no_restart() -> None:
    target = logic.workload_targets(ONE, {"A": False})[0]
    result = plan(ONE, {"A": False}, {("Deployment", "one"): deployment(target.hash)})
    assert result.restart == []
    assert result.statuses[0].state == WorkloadState.READY


def test_changed_hash_restarts_and_reports_progressing() -> None:
    result = plan(ONE, {"A": True}, {("Deployment", "one"): deployment("old")})
    assert [t.name for t in result.restart] == ["one"]
    assert result.statuses[0].state == WorkloadState.PROGRESSING
    assert result.statuses[0].restarted_at == NOW


def test_at_most_max_parallel_restart_at_once() -> None:
    s = spec({"name": "A", "workloads": [{"name": n} for n in ("a", "b", "c")]})
    observed = {("Deployment", n): deployment("old") for n in ("a", "b", "c")}
    result = plan(s, {"A": True}, observed, max_parallel=2)
    assert [t.name for t in result.restart] == ["a", "b"]
    assert [w.state for w in result.statuses] == [
        WorkloadState.PROGRESSING,
        WorkloadState.PROGRESSING,
        WorkloadState.PENDING,
    ]
    assert "maxParallel=2" in result.statuses[2].message


def test_the_cluster_budget_counts_rollouts_elsewhere() -> None:
    s = spec({"name": "A", "workloads": [{"name": n} for n in ("a", "b", "c")]})
    observed = {("Deployment", n): deployment("old") for n in ("a", "b", "c")}
    result = plan(s, {"A": True}, observed, max_parallel=3, budget=logic.RestartBudget(limit=3, elsewhere=2))
    assert [t.name for t in result.restart] == ["a"]
    assert [w.state for w in result.statuses][1:] == [WorkloadState.PENDING, WorkloadState.PENDING]
    assert "--max-concurrent-restarts=3; 2 rollouts in progress in other FeatureFlagSets" in (
        result.statuses[1].message
    )
    full = plan(s, {"A": True}, observed, max_parallel=3, budget=logic.RestartBudget(limit=2, elsewhere=2))
    assert full.restart == []


def test_a_held_flag_restarts_past_the_budget_but_not_past_max_parallel() -> None:
    s = spec(
        {"name": "A", "workloads": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
        {"name": "B", "workloads": [{"name": "d"}]},
    )
    observed = {("Deployment", n): deployment("old") for n in "abcd"}
    budget = logic.RestartBudget(limit=1, elsewhere=1)
    result = plan(s, {"A": False, "B": True}, observed, max_parallel=2, budget=budget, held=["A"])
    assert [t.name for t in result.restart] == ["a", "b"]  # a rollback never queues behind the budget
    assert "maxParallel=2" in result.statuses[2].message
    assert result.statuses[3].state == WorkloadState.PENDING


def test_rollouts_in_flight_hold_their_slots() -> None:
    s = spec({"name": "A", "workloads": [{"name": "a"}, {"name": "b"}]})
    target_a = logic.workload_targets(s, {"A": True})[0]
    observed = {
        ("Deployment", "a"): deployment(target_a.hash, updated=1),
        ("Deployment", "b"): deployment("old"),
    }
    result = plan(s, {"A": True}, observed)
    assert result.restart == []
    assert [w.state for w in result.statuses] == [WorkloadState.PROGRESSING, WorkloadState.PENDING]


def test_missing_workload_is_reported_with_what_to_do() -> None:
    result = plan(ONE, {"A": True}, {("Deployment", "one"): None})
    assert result.restart == []
    assert result.statuses[0].state == WorkloadState.MISSING
    assert "remove it from the workloads of A" in result.statuses[0].message


def test_workload_claimed_by_another_set_is_not_touched() -> None:
    result = plan(ONE, {"A": True}, {("Deployment", "one"): deployment("old", claimed="other")})
    assert result.restart == []
    assert result.statuses[0].state == WorkloadState.CONFLICT


def test_strategy_none_never_restarts() -> None:
    result = plan(ONE, {"A": True}, {("Deployment", "one"): deployment("old")}, strategy=RolloutStrategy.NONE)
    assert result.restart == []


def test_rollout_past_its_timeout_fails() -> None:
    target = logic.workload_targets(ONE, {"A": True})[0]
    prev = [
        WorkloadStatus(
            kind=WorkloadKind.DEPLOYMENT,
            name="one",
            flags_hash=target.hash,
            state=WorkloadState.PROGRESSING,
            restarted_at=NOW - datetime.timedelta(seconds=601),
        )
    ]
    result = plan(ONE, {"A": True}, {("Deployment", "one"): deployment(target.hash, updated=1)}, prev)
    assert result.statuses[0].state == WorkloadState.FAILED
    assert "not complete after 600s" in result.statuses[0].message


def test_progress_deadline_exceeded_fails() -> None:
    target = logic.workload_targets(ONE, {"A": True})[0]
    result = plan(
        ONE, {"A": True}, {("Deployment", "one"): deployment(target.hash, updated=1, deadline=True)}
    )
    assert result.statuses[0].state == WorkloadState.FAILED
    assert "progress deadline exceeded" in result.statuses[0].message


@pytest.mark.parametrize(
    ("obj", "done"),
    [
        (deployment(observed=1), False),
        (deployment(updated=1), False),
        (deployment(total=3), False),
        (deployment(available=1), False),
        (deployment(), True),
    ],
    ids=["not-observed", "not-updated", "old-pods-left", "not-available", "complete"],
)
def test_deployment_rollout_progress(obj: dict[str, Any], done: bool) -> None:
    assert logic.rollout_progress(WorkloadKind.DEPLOYMENT, obj).done is done


def test_statefulset_and_daemonset_rollout_progress() -> None:
    sts = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": 2,
            "currentRevision": "a",
            "updateRevision": "b",
        },
    }
    assert not logic.rollout_progress(WorkloadKind.STATEFUL_SET, sts).done
    sts["status"]["currentRevision"] = "b"
    assert logic.rollout_progress(WorkloadKind.STATEFUL_SET, sts).done
    ds = {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 2,
            "updatedNumberScheduled": 1,
            "numberAvailable": 2,
        },
    }
    assert not logic.rollout_progress(WorkloadKind.DAEMON_SET, ds).done
    ds["status"]["updatedNumberScheduled"] = 2
    assert logic.rollout_progress(WorkloadKind.DAEMON_SET, ds).done


# -- status ----------------------------------------------------------------------------------


def status_for(
    s: FeatureFlagSetSpec,
    previous: FeatureFlagSetStatus | None = None,
    *,
    conflict: str | None = None,
    workloads: list[WorkloadStatus] | None = None,
    now: datetime.datetime = NOW,
    overrides: list[Override] | None = None,
) -> FeatureFlagSetStatus:
    resolution = logic.resolve(s, overrides or [])
    data = logic.configmap_data(resolution.values)
    return logic.build_status(
        generation=3,
        previous=previous or FeatureFlagSetStatus(),
        resolution=resolution,
        overrides=overrides or [],
        cm_name="cm",
        cm_hash=None if conflict else logic.sha256(data),
        cm_conflict=conflict,
        workloads=workloads or [],
        strategy=RolloutStrategy.RESTART,
        now=now,
    )


def test_ready_status_counts_and_conditions() -> None:
    st = status_for(spec({"name": "A", "enabled": True}, {"name": "B"}))
    assert (st.flag_count, st.enabled_count, st.override_count) == (2, 1, 0)
    assert c.is_true(st.conditions, c.READY)
    assert not c.is_true(st.conditions, c.DEGRADED)
    assert all(cond.observed_generation == 3 for cond in st.conditions)


def test_conflict_makes_the_set_degraded_and_not_ready() -> None:
    st = status_for(spec({"name": "A"}), conflict="ConfigMap cm is someone else's")
    ready, degraded = c.find(st.conditions, c.READY), c.find(st.conditions, c.DEGRADED)
    assert ready is not None and ready.reason == c.CONFIG_MAP_CONFLICT and ready.status == "False"
    assert degraded is not None and degraded.status == "True"


def test_last_changed_at_moves_only_for_changed_flags() -> None:
    first = status_for(spec({"name": "A"}, {"name": "B"}))
    later = NOW + datetime.timedelta(minutes=5)
    second = status_for(spec({"name": "A", "enabled": True}, {"name": "B"}), first, now=later)
    changed = {f.name: f.last_changed_at for f in second.flags}
    assert changed == {"A": later, "B": NOW}


def test_transition_time_kept_while_condition_status_holds() -> None:
    first = status_for(spec({"name": "A"}))
    second = status_for(spec({"name": "A"}), first, now=NOW + datetime.timedelta(minutes=1))
    ready = c.find(second.conditions, c.READY)
    assert ready is not None and ready.last_transition_time == NOW


def test_overrides_are_announced_with_their_holder() -> None:
    held = Override(flag="A", value=False, held_by="rollback-a", since=NOW)
    st = status_for(spec({"name": "A", "enabled": True}), overrides=[held])
    overridden = c.find(st.conditions, c.OVERRIDDEN)
    assert overridden is not None and overridden.status == "True"
    assert "A held at false by RollbackRequest rollback-a" in overridden.message
    assert st.effective == {"A": False}


def test_apply_timings_complete_when_rollouts_are_done() -> None:
    ready = WorkloadStatus(
        kind=WorkloadKind.DEPLOYMENT,
        name="w",
        state=WorkloadState.READY,
        restarted_at=NOW,
        ready_at=NOW + datetime.timedelta(seconds=4),
    )
    st = status_for(spec({"name": "A"}), workloads=[ready])
    assert st.last_apply is not None
    assert st.last_apply.config_map_written_at == NOW
    assert st.last_apply.rollout_seconds == 4.0


def test_merge_patch_nulls_removed_keys_and_is_empty_when_equal() -> None:
    assert logic.merge_patch({"a": 1, "m": {"x": 1, "y": 2}}, {"a": 1, "m": {"x": 1}}) == {"m": {"y": None}}
    assert logic.merge_patch({"l": [1]}, {"l": [1]}) == {}
    assert logic.merge_patch({}, {"l": [1, 2]}) == {"l": [1, 2]}


def test_a_configmap_left_by_an_earlier_set_of_the_same_name_is_adopted_and_no_other() -> None:
    cm = logic.desired_configmap("ns", "s", "old-uid", "flags", {"A": True})
    assert logic.left_by_predecessor(cm, "s")
    orphaned = {**cm, "metadata": {**cm["metadata"], "ownerReferences": []}}
    assert logic.left_by_predecessor(orphaned, "s")
    assert not logic.left_by_predecessor(cm, "other-set")
    stranger = {**cm, "metadata": {**cm["metadata"], "labels": {}}}
    assert not logic.left_by_predecessor(stranger, "s")
    shared = logic.desired_configmap("ns", "s", "old-uid", "flags", {"A": True})
    shared["metadata"]["ownerReferences"].append({"kind": "Deployment", "name": "x", "uid": "u"})
    assert not logic.left_by_predecessor(shared, "s")
    # Adoption replaces the owner: the patch carries the new set's reference.
    patch = logic.configmap_patch(cm, logic.desired_configmap("ns", "s", "new-uid", "flags", {"A": True}))
    assert patch == {
        "metadata": {"ownerReferences": [logic.owner_reference("FeatureFlagSet", "s", "new-uid")]}
    }


def test_a_configmap_is_intact_while_its_data_matches_its_hash() -> None:
    cm = logic.desired_configmap("ns", "s", "uid", "flags", {"A": True})
    assert logic.configmap_intact(cm)
    edited = {**cm, "data": {**cm["data"], "A": "false"}}
    assert not logic.configmap_intact(edited)


TYPED = spec(
    {"name": "ON", "enabled": True},
    {"name": "URL", "type": "string", "value": "https://v2", "safeValue": "https://v1", "requires": ["ON"]},
    {"name": "LIMIT", "type": "integer", "value": 500, "safeValue": 100},
    {"name": "RATIO", "type": "number", "value": 0.25, "safeValue": 0},
    {"name": "LAYOUT", "type": "object", "value": {"columns": 3}, "safeValue": {"columns": 1}},
)


def test_typed_flags_serve_their_value_in_every_form() -> None:
    resolution = logic.resolve(TYPED)
    assert resolution.values == {
        "ON": True,
        "URL": "https://v2",
        "LIMIT": 500,
        "RATIO": 0.25,
        "LAYOUT": {"columns": 3},
    }
    data = logic.configmap_data(resolution.values)
    assert [data[n] for n in ("ON", "URL", "LIMIT", "RATIO", "LAYOUT")] == [
        "true",
        "https://v2",
        "500",
        "0.25",
        '{"columns":3}',
    ]
    assert json.loads(data["flags.json"]) == resolution.values
    flagd = json.loads(data["flagd.json"])["flags"]
    assert flagd["LAYOUT"] == {
        "state": "ENABLED",
        "variants": {"served": {"columns": 3}},
        "defaultVariant": "served",
    }
    assert flagd["ON"]["defaultVariant"] == "on"


def test_a_typed_flag_serves_its_safe_value_when_held_or_when_a_prerequisite_is_off() -> None:
    held = Override(flag="LIMIT", value=100, held_by="rb", since=NOW)
    assert logic.resolve(TYPED, [held]).values["LIMIT"] == 100
    off = Override(flag="ON", value=False, held_by="rb", since=NOW)
    resolution = logic.resolve(TYPED, [off])
    assert resolution.values["URL"] == "https://v1"
    assert "URL serves its safeValue meanwhile" in resolution.blocked["URL"]
    assert resolution.on == {"ON": False, "URL": False, "LIMIT": True, "RATIO": True, "LAYOUT": True}


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ({"type": "integer", "value": "500", "safeValue": 1}, "its value must be an integer"),
        ({"type": "integer", "value": True, "safeValue": 1}, "its value must be an integer"),
        ({"type": "string", "value": "x"}, "it needs a safeValue"),
        ({"type": "number", "value": 1, "safeValue": "0"}, "its safeValue must be a number"),
        ({"type": "object", "value": [1], "safeValue": {}}, "its value must be an object"),
        ({"value": True}, "is a boolean: set enabled, not value"),
        ({"safeValue": "off"}, "its safeValue must be a boolean"),
    ],
)
def test_a_value_not_of_its_flags_type_is_refused_with_what_to_fix(
    flag: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec({"name": "F", **flag})
