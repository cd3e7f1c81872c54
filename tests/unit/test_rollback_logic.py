"""RollbackRequest decisions as pure functions: plan, authority matrix, checks, timings."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from flagops import conditions as c
from flagops.models.checks import Check, Comparison, InvariantComparison
from flagops.models.flagset import FeatureFlagSetSpec, FeatureFlagSetStatus, FlagStatus, Override, Scenario
from flagops.models.rollback import (
    CheckPhase,
    CheckResult,
    Measurement,
    Phase,
    RollbackRequestSpec,
    RollbackRequestStatus,
)
from flagops.reconcile import locks, triggers
from flagops.reconcile import rollback as logic

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
SET = FeatureFlagSetSpec.model_validate(
    {
        "flags": [
            {
                "name": "A",
                "enabled": True,
                "workloads": [{"name": "a"}],
                "checks": [{"name": "a-health", "http": {"url": "http://a/healthz"}}],
            },
            {"name": "B", "enabled": True, "workloads": [{"name": "b"}]},
            {"name": "C", "enabled": True, "requires": ["A"], "workloads": [{"name": "c"}]},
            {"name": "D", "enabled": False, "safeValue": False},
        ],
    }
)


def request(**spec: Any) -> RollbackRequestSpec:
    return RollbackRequestSpec.model_validate({"flagSet": "s", **spec})


def set_status(
    changed: dict[str, datetime.datetime] | None = None, overrides: list[Override] | None = None
) -> FeatureFlagSetStatus:
    return FeatureFlagSetStatus(
        flags=[FlagStatus(name=n, value=True, last_changed_at=t) for n, t in (changed or {}).items()],
        overrides=overrides or [],
    )


# -- plan ------------------------------------------------------------------------------------


def test_plan_includes_dependents_and_only_the_workloads_that_change() -> None:
    result = logic.plan_rollback(request(flags=["A"]), "rb", SET, [], NOW)
    assert result.error is None
    changes = {f.name: (f.from_, f.to, f.requested) for f in result.plan.flags}
    assert changes == {"A": (True, False, True), "C": (True, False, False)}
    assert [w.name for w in result.plan.workloads] == ["a", "c"]
    assert all(w.from_hash != w.to_hash for w in result.plan.workloads)
    assert [(ch.name, ch.source) for ch in result.plan.checks] == [("a-health", "flag A")]
    assert [(o.flag, o.held_by, o.value) for o in result.overrides] == [("A", "rb", False)]
    # Frozen: the resolved checks, the flags held and the rollout timeout travel with the plan.
    assert result.plan.checks[0].spec == SET.flags[0].checks[0].to_api()
    assert result.plan.holds == {"A": False}
    assert result.plan.rollout_timeout_seconds == 600


def test_plan_for_all_flags() -> None:
    result = logic.plan_rollback(request(all=True), "rb", SET, [], NOW)
    assert {o.flag for o in result.overrides} == {"A", "B", "C", "D"}
    assert {f.name for f in result.plan.flags} == {"A", "B", "C"}
    assert result.plan.unchanged == ["D"]


def test_unknown_flags_are_an_error_and_nothing_is_planned() -> None:
    result = logic.plan_rollback(request(flags=["A", "NOPE"]), "rb", SET, [], NOW)
    assert result.error is not None and "NOPE is not a flag of FeatureFlagSet s" in result.error
    assert result.overrides == []


def test_flag_already_held_by_another_request_changes_nothing() -> None:
    held = Override(flag="A", value=False, held_by="first", since=NOW)
    result = logic.plan_rollback(request(flags=["A"]), "second", SET, [held], NOW)
    assert result.plan.flags == [] and result.plan.workloads == []
    assert result.plan.unchanged == ["A"]
    assert [(o.flag, o.held_by) for o in result.overrides] == [("A", "first"), ("A", "second")]


def test_overrides_are_added_once_per_request() -> None:
    once = logic.with_overrides([], ["A"], SET, "rb", NOW)
    assert logic.with_overrides(once, ["A"], SET, "rb", NOW) == once
    assert logic.without_overrides(once, "rb") == []


def test_check_names_from_several_sources_stay_unique() -> None:
    spec = request(flags=["A"], checks=[{"name": "a-health", "http": {"url": "http://x/"}}])
    names = [check.name for _, check in logic.gather_checks(spec, SET, ["A"])]
    assert names == ["a-health", "a-health-2"]


# -- authority matrix ------------------------------------------------------------------------


def test_single_flag_within_window_proceeds() -> None:
    status = set_status({"A": NOW - datetime.timedelta(minutes=30)})
    row, required, why = logic.approval_needed(request(flags=["A"]), SET, status, ["A"], NOW)
    assert row == Scenario.SINGLE_FLAG_IN_WINDOW
    assert not required and "no approval needed" in why


def test_single_flag_after_window_needs_approval() -> None:
    status = set_status({"A": NOW - datetime.timedelta(hours=2)})
    row, required, why = logic.approval_needed(request(flags=["A"]), SET, status, ["A"], NOW)
    assert row == Scenario.SINGLE_FLAG_LATE
    assert required and why == (
        "SingleFlagLate, A last changed 2h00m before the request (window 1h00m): "
        "approval needed (spec.approved: true)"
    )


def test_multi_flag_needs_approval_and_emergency_skips_it() -> None:
    status = set_status({"A": NOW, "B": NOW})
    assert logic.approval_needed(request(flags=["A", "B"]), SET, status, ["A", "B"], NOW)[:2] == (
        Scenario.MULTI_FLAG,
        True,
    )
    emergency = request(flags=["A", "B"], emergency=True)
    assert logic.approval_needed(emergency, SET, status, ["A", "B"], NOW)[:2] == (Scenario.EMERGENCY, False)


def test_a_repeated_flag_is_one_flag() -> None:
    status = set_status({"A": NOW})
    assert logic.approval_needed(request(flags=["A", "A"]), SET, status, ["A", "A"], NOW)[0] == (
        Scenario.SINGLE_FLAG_IN_WINDOW
    )


def test_all_is_a_multi_flag_rollback_even_of_a_one_flag_set() -> None:
    one = FeatureFlagSetSpec.model_validate({"flags": [{"name": "A"}]})
    row, required, _ = logic.approval_needed(request(all=True), one, set_status({"A": NOW}), ["A"], NOW)
    assert (row, required) == (Scenario.MULTI_FLAG, True)


def test_rules_decide_whether_a_scenario_needs_approval() -> None:
    strict = FeatureFlagSetSpec.model_validate(
        {
            **SET.to_api(),
            "approval": {
                "rules": {
                    "singleFlagInWindow": {"approvalRequired": True},
                    "multiFlag": {"approvalRequired": False, "initiators": ["group:leads"]},
                    "emergency": {"approvalRequired": True},
                }
            },
        }
    )
    status = set_status({"A": NOW, "B": NOW})
    assert logic.approval_needed(request(flags=["A"]), strict, status, ["A"], NOW)[1]
    assert not logic.approval_needed(request(flags=["A", "B"]), strict, status, ["A", "B"], NOW)[1]
    emergency = request(flags=["A"], emergency=True)
    assert logic.approval_needed(emergency, strict, status, ["A"], NOW)[1]


def test_unknown_last_change_needs_approval() -> None:
    row, required, why = logic.approval_needed(request(flags=["A"]), SET, set_status(), ["A"], NOW)
    assert row == Scenario.SINGLE_FLAG_LATE
    assert required and "unknown" in why


# -- checks ----------------------------------------------------------------------------------


def check(**extra: Any) -> Check:
    return Check.model_validate({"name": "c", "http": {"url": "http://x/"}, **extra})


def measure(passed: bool | None, value: str = "v") -> Measurement:
    return Measurement(at=NOW, value=value, passed=passed, message=f"saw {value}")


def test_check_passes_after_consecutive_successes() -> None:
    spec = check(successes=2, failureLimit=1)
    result = logic.start_check("request", spec, NOW)
    result = logic.record(spec, result, measure(True), NOW)
    assert result.phase == CheckPhase.RUNNING and result.consecutive_successes == 1
    result = logic.record(spec, result, measure(False), NOW)
    assert result.consecutive_successes == 0
    result = logic.record(spec, logic.record(spec, result, measure(True), NOW), measure(True), NOW)
    assert result.phase == CheckPhase.PASSED
    assert (result.attempts, result.failures) == (4, 1)


def test_check_fails_past_its_failure_limit() -> None:
    spec = check(failureLimit=1)
    result = logic.start_check("request", spec, NOW)
    result = logic.record(spec, result, measure(False, "503"), NOW)
    assert result.phase == CheckPhase.RUNNING
    result = logic.record(spec, result, measure(False, "503"), NOW)
    assert result.phase == CheckPhase.FAILED
    assert result.observed == "503" and result.failures == 2
    assert "failed after 2 failed measurement(s)" in result.message


def test_inconclusive_measurements_count_neither_way() -> None:
    spec = check()
    result = logic.record(spec, logic.start_check("request", spec, NOW), measure(None), NOW)
    assert (result.phase, result.failures, result.consecutive_successes) == (CheckPhase.RUNNING, 0, 0)


def test_check_fails_at_its_deadline() -> None:
    spec = check(deadlineSeconds=10)
    result = logic.start_check("request", spec, NOW)
    result = logic.record(spec, result, None, NOW + datetime.timedelta(seconds=11))
    assert result.phase == CheckPhase.FAILED and "deadline of 10.0s" in result.message


def test_measurements_keep_the_last_five() -> None:
    spec = check(failureLimit=100, successes=100)
    result = logic.start_check("request", spec, NOW)
    for i in range(8):
        result = logic.record(spec, result, measure(False, str(i)), NOW)
    assert [m.value for m in result.measurements] == ["3", "4", "5", "6", "7"]


def test_next_measurement_waits_an_interval_or_one_second_while_nothing_to_measure() -> None:
    spec = check(intervalSeconds=10, failureLimit=5)
    result = logic.start_check("request", spec, NOW)
    assert logic.record(spec, result, measure(False), NOW).next_at == NOW + datetime.timedelta(seconds=10)
    assert logic.record(spec, result, None, NOW).next_at == NOW + datetime.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("comparison", "before", "after", "ok"),
    [
        (InvariantComparison.UNCHANGED, "1042", "1042", True),
        (InvariantComparison.UNCHANGED, "1042", "1041", False),
        (InvariantComparison.NOT_DECREASED, "10", "12", True),
        (InvariantComparison.NOT_DECREASED, "10", "9", False),
        (InvariantComparison.NOT_INCREASED, "10", "9", True),
        (InvariantComparison.NOT_DECREASED, '"a"', '"b"', False),
    ],
)
def test_invariant_comparisons(comparison: InvariantComparison, before: str, after: str, ok: bool) -> None:
    assert logic.compare_invariant(comparison, before, after)[0] is ok


# -- timings and conditions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.04, "0.0s"), (12.44, "12.4s"), (185, "3m05s"), (3725, "1h02m")]
)
def test_durations_read_well(seconds: float, text: str) -> None:
    assert logic.format_duration(seconds) == text


def test_timings_from_timestamps() -> None:
    t = [NOW + datetime.timedelta(seconds=s) for s in (0, 2, 5, 20, 30)]
    status = RollbackRequestStatus(
        started_at=t[0], approved_at=t[1], rollout_completed_at=t[2], validated_at=t[3], completed_at=t[4]
    )
    durations, seconds = logic.timings(status, created=t[0], detected_at=t[0] - datetime.timedelta(minutes=4))
    assert seconds.time_to_decision == 240 and durations.time_to_decision == "4m00s"
    assert seconds.time_to_execute == 3  # from the approval, not the start
    assert seconds.time_to_validate == 15 and seconds.total == 30
    assert durations.time_to_restore is None


def test_conditions_follow_the_phase() -> None:
    status = RollbackRequestStatus(approved_at=NOW, flags_applied_at=NOW, applied=["A"])
    conds = logic.phase_conditions(status, Phase.ROLLING_OUT, c.ROLLING_OUT, "rolling", now=NOW, generation=1)
    by_type = {cond.type: cond.status for cond in conds}
    assert by_type == {
        "Approved": "True",
        "FlagsApplied": "True",
        "RolledOut": "False",
        "Validated": "False",
        "Succeeded": "Unknown",
    }
    done = status.model_copy(update={"rollout_completed_at": NOW, "validated_at": NOW})
    conds = logic.phase_conditions(done, Phase.SUCCEEDED, c.ROLLBACK_SUCCEEDED, "ok", now=NOW, generation=1)
    assert all(cond.status == "True" for cond in conds)
    failed = logic.phase_conditions(status, Phase.FAILED, c.CHECK_FAILED, "no", now=NOW, generation=1)
    assert {cd.type: (cd.status, cd.reason) for cd in failed}["Succeeded"] == ("False", "CheckFailed")


def test_check_result_done_flags() -> None:
    assert CheckResult(name="x", type="http", phase=CheckPhase.PASSED).done
    assert not CheckResult(name="x", type="http", phase=CheckPhase.RUNNING).done


# -- prometheus checks and triggers ----------------------------------------------------------


def prom_check(on_empty: str = "Wait", comparison: str = "LessThan", threshold: str = "0.01") -> Check:
    return Check.model_validate(
        {
            "name": "p",
            "prometheus": {
                "server": "http://prom:9090",
                "query": "q",
                "comparison": comparison,
                "threshold": threshold,
                "onEmpty": on_empty,
            },
        }
    )


@pytest.mark.parametrize(("values", "passed"), [([0.001], True), ([0.001, 0.5], False), ([0.01], False)])
def test_every_series_must_pass(values: list[float], passed: bool) -> None:
    check = prom_check()
    assert check.prometheus is not None
    assert logic.judge_query(check.prometheus, values)[1] is passed


@pytest.mark.parametrize(("policy", "passed"), [("Fail", False), ("Pass", True), ("Wait", None)])
def test_empty_result_follows_the_policy(policy: str, passed: bool | None) -> None:
    check = prom_check(on_empty=policy)
    assert check.prometheus is not None
    observed, verdict, message = logic.judge_query(check.prometheus, [])
    assert (observed, verdict) == ("empty", passed)
    assert f"onEmpty: {policy}" in message


def test_comparisons() -> None:
    assert logic.compares(Comparison.GREATER_THAN, 0.08, 0.05)
    assert not logic.compares(Comparison.GREATER_THAN, 0.05, 0.05)
    assert logic.compares(Comparison.GREATER_THAN_OR_EQUAL, 0.05, 0.05)
    assert logic.compares(Comparison.LESS_THAN_OR_EQUAL, 0.05, 0.05)
    assert logic.compares(Comparison.EQUAL, 1, 1)


def test_trigger_request_is_named_per_breach_and_active_requests_block_a_second() -> None:
    since = datetime.datetime(2026, 11, 25, 20, 14, 5, tzinfo=datetime.UTC)
    assert triggers.request_name("epic21", "USE_NEW_X", since) == "epic21-use-new-x-20261125-201405"
    lock = {"annotations": {locks.HOLDS_ANNOTATION: locks.holds_value({"A": False}, NOW)}}
    running = {"spec": {"flagSet": "s", "flags": ["A"]}, "status": {"phase": "Validating"}}
    held = {"metadata": lock, "spec": {"flagSet": "s", "all": True}, "status": {"phase": "Failed"}}
    released = {
        "spec": {"flagSet": "s", "flags": ["A"], "release": True},
        "status": {"phase": "Succeeded", "locked": True},
    }
    assert triggers.active(running, "s", "A")
    assert triggers.active(held, "s", "A")
    assert not triggers.active(released, "s", "A")
    assert not triggers.active(running, "s", "B")
    assert not triggers.active(running, "other", "A")
