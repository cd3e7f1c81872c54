"""Property-based: whatever the generated CRD schema admits, flagops parses it or reports it as
a condition, and its pure decisions never raise (hypothesis, from the CRD's own schema)."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from flagops import crdgen
from flagops.controller.flagsets import validation_message
from flagops.models.flagset import FeatureFlagSetSpec, FeatureFlagSetStatus
from flagops.models.rollback import RollbackRequestSpec
from flagops.reconcile import flagset as logic
from flagops.reconcile import rollback as rollback_logic

NOW = datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC)


def strategy(node: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values a structural (OpenAPI v3) schema admits. CEL rules are left out on purpose, so
    the properties also cover objects that break them."""
    if "enum" in node:
        values: st.SearchStrategy[Any] = st.sampled_from(node["enum"])
    elif node.get("type") == "object" and "properties" in node:
        required = set(node.get("required", []))
        fields = {name: strategy(sub, depth + 1) for name, sub in node["properties"].items()}
        values = st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
    elif node.get("type") == "object" and "additionalProperties" in node:
        values = st.dictionaries(
            st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True),
            strategy(node["additionalProperties"], depth + 1),
            max_size=3,
        )
    elif node.get("type") == "object":
        values = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)
    elif node.get("type") == "array":
        values = st.lists(strategy(node["items"], depth + 1), max_size=min(node.get("maxItems", 3), 3))
    elif node.get("type") == "string":
        if node.get("format") == "date-time":
            values = st.datetimes(timezones=st.just(datetime.UTC)).map(lambda d: d.isoformat())
        elif "pattern" in node:
            values = st.from_regex(node["pattern"], fullmatch=True).filter(
                lambda v: node.get("minLength", 0) <= len(v) <= node.get("maxLength", 10**6)
            )
        else:
            values = st.text(min_size=node.get("minLength", 0), max_size=min(node.get("maxLength", 20), 20))
    elif node.get("type") == "integer":
        values = st.integers(min_value=node.get("minimum", -(2**31)), max_value=node.get("maximum", 2**31))
    elif node.get("type") == "boolean":
        values = st.booleans()
    else:
        values = st.none()
    return st.none() | values if node.get("nullable") else values


def spec_strategy(kind: crdgen.Kind) -> st.SearchStrategy[Any]:
    return strategy(
        crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    )


FLAGSET_SPECS = spec_strategy(crdgen.FEATURE_FLAG_SET)
ROLLBACK_SPECS = spec_strategy(crdgen.ROLLBACK_REQUEST)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(raw=FLAGSET_SPECS)
def test_schema_valid_flagsets_parse_and_reconcile_without_raising(raw: dict[str, Any]) -> None:
    try:
        spec = FeatureFlagSetSpec.model_validate(raw)
    except ValidationError as err:  # reported as InvalidSpec, with a message that names the field
        message = validation_message(err)
        assert message.startswith("spec."), message
        return
    resolution = logic.resolve(spec)
    assert set(resolution.values) == {f.name for f in spec.flags}
    cm = logic.desired_configmap("ns", "set", "uid", "set", resolution.values)
    assert set(cm["data"]) >= {"flags.json", "flagd.json"}
    targets = logic.workload_targets(spec, resolution.values)
    plan = logic.plan_workloads(
        targets,
        {t.key: None for t in targets},
        [],
        set_name="set",
        strategy=spec.rollout.strategy,
        max_parallel=spec.rollout.max_parallel,
        timeout_seconds=spec.rollout.timeout_seconds,
        now=NOW,
    )
    status = logic.build_status(
        generation=1,
        previous=FeatureFlagSetStatus(),
        resolution=resolution,
        overrides=[],
        cm_name="set",
        cm_hash=logic.sha256(cm["data"]),
        cm_conflict=None,
        workloads=plan.statuses,
        strategy=spec.rollout.strategy,
        now=NOW,
    )
    # What the operator writes must be what the status schema admits (it parses back).
    assert FeatureFlagSetStatus.model_validate(status.to_api()) == status


@SETTINGS
@given(raw_set=FLAGSET_SPECS, raw_request=ROLLBACK_SPECS)
def test_schema_valid_rollbacks_plan_without_raising(
    raw_set: dict[str, Any], raw_request: dict[str, Any]
) -> None:
    try:
        set_spec = FeatureFlagSetSpec.model_validate(raw_set)
        spec = RollbackRequestSpec.model_validate(raw_request)
    except ValidationError:
        return
    result = rollback_logic.plan_rollback(spec, "rb", set_spec, [], NOW)
    if result.error is None:
        flags, _ = rollback_logic.requested_flags(spec, set_spec)
        rollback_logic.approval_needed(spec, set_spec, FeatureFlagSetStatus(), flags, NOW)
        # toRevision with no revision found changes nothing (the reconciler ends it RevisionNotFound).
        assert {o.flag for o in result.overrides} == (set() if spec.to_revision is not None else set(flags))
    else:
        assert "create a new request" in result.error or "no flags" in result.error


@given(st.dictionaries(st.text(max_size=10), st.booleans(), max_size=5))
def test_hash_is_stable_under_reordering(values: dict[str, bool]) -> None:
    reordered = dict(reversed(list(values.items())))
    assert logic.sha256(values) == logic.sha256(reordered)


def test_the_generator_reaches_valid_sets_with_workloads_and_checks() -> None:
    """Guards against a vacuous property: the strategy does produce rich, valid specs."""

    def rich(raw: dict[str, Any]) -> bool:
        try:
            spec = FeatureFlagSetSpec.model_validate(raw)
        except ValidationError:
            return False
        return len(spec.flags) >= 2 and any(f.workloads and f.checks for f in spec.flags)

    assert rich(find(FLAGSET_SPECS, rich, settings=settings(max_examples=2000, deadline=None)))
