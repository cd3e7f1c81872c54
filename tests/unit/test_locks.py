"""Locks live on the RollbackRequests (an annotation), and a set's overrides are computed from them."""

from __future__ import annotations

import datetime
from typing import Any

from flagops.models.flagset import FeatureFlagSetSpec
from flagops.reconcile import locks

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
SET = FeatureFlagSetSpec.model_validate(
    {"flags": [{"name": "A", "enabled": True}, {"name": "B", "enabled": True, "safeValue": True}]}
)


def request(name: str, holds: str | None, **spec: Any) -> dict[str, Any]:
    annotations = {locks.HOLDS_ANNOTATION: holds} if holds is not None else {}
    return {
        "metadata": {"name": name, "annotations": annotations, "creationTimestamp": "2026-11-25T11:00:00Z"},
        "spec": {"flagSet": "s", **spec},
    }


def test_a_request_holds_what_its_annotation_says() -> None:
    held = locks.overrides("s", SET, [request("rb", locks.holds_value({"A": False}, NOW), flags=["A"])])
    assert [(o.flag, o.value, o.held_by, o.since) for o in held] == [("A", False, "rb", NOW)]


def test_requests_without_the_annotation_or_for_other_sets_hold_nothing() -> None:
    bodies = [
        request("pending", None, flags=["A"]),
        {**request("other", locks.holds_value({"A": False}, NOW)), "spec": {"flagSet": "t"}},
    ]
    assert locks.overrides("s", SET, bodies) == []


def test_a_deleting_request_holds_nothing() -> None:
    body = request("rb", locks.holds_value({"A": False}, NOW), flags=["A"])
    body["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    assert locks.overrides("s", SET, [body]) == []


def test_an_unreadable_annotation_still_holds_the_requested_flags_at_their_safe_values() -> None:
    held = locks.overrides("s", SET, [request("rb", "{edited by hand", all=True)])
    assert {(o.flag, o.value) for o in held} == {("A", False), ("B", True)}
    assert held[0].since == datetime.datetime(2026, 11, 25, 11, 0, tzinfo=datetime.UTC)


def test_flags_no_longer_in_the_set_are_ignored_and_the_order_is_stable() -> None:
    later = NOW + datetime.timedelta(minutes=1)
    bodies = [
        request("second", locks.holds_value({"A": False, "GONE": False}, later), flags=["A", "GONE"]),
        request("first", locks.holds_value({"A": False}, NOW), flags=["A"]),
    ]
    assert [(o.held_by, o.flag) for o in locks.overrides("s", SET, bodies)] == [
        ("first", "A"),
        ("second", "A"),
    ]
