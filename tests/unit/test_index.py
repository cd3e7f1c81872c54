"""The index of RollbackRequests the set passes read their locks from."""

from __future__ import annotations

from typing import Any

from flagops.controller.index import RollbackIndex
from flagops.reconcile import locks
from tests.fake_kube import FakeKube


def request(name: str, version: str, holds: str | None = None) -> dict[str, Any]:
    annotations = {locks.HOLDS_ANNOTATION: holds} if holds else {}
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": version, "annotations": annotations},
        "spec": {"flagSet": "s", "flags": ["A"]},
        "status": {"phase": "Succeeded", "checks": [{"name": "big"}]},
    }


def test_the_newer_version_wins_and_status_is_kept_small() -> None:
    index = RollbackIndex()
    index.upsert(request("rb", "7", holds="x"))
    assert index.upsert(request("rb", "5")) is not None  # an older event arriving late
    [body] = index.in_namespace("ns")
    assert locks.held_annotation(body) == "x"
    assert "checks" not in body["status"]


async def test_priming_lists_everything_and_drops_what_was_deleted_unseen() -> None:
    api = FakeKube()
    api.put("rollbackrequests", request("kept", "1"))
    index = RollbackIndex()
    index.upsert(request("gone", "1", holds="x"))  # deleted while the watch was down
    await index.prime(api, [])  # type: ignore[arg-type]
    assert sorted(body["metadata"]["name"] for body in index.in_namespace("ns")) == ["kept"]


async def test_priming_keeps_what_was_written_after_the_list() -> None:
    api = FakeKube()
    index = RollbackIndex()
    index.upsert(request("new", "999999", holds="x"))  # a write the list could not have seen
    await index.prime(api, [])  # type: ignore[arg-type]
    assert [body["metadata"]["name"] for body in index.in_namespace("ns")] == ["new"]
