"""The post-incident record: everything the plan's lessons-learned file asks for."""

from __future__ import annotations

from flagops import report
from tests.unit.test_plugin import ROLLBACK

REVIEW = {
    "rootCause": "the new dialog repository's cache was cold",
    "wentWell": ["the trigger fired within 5 s"],
    "couldImprove": ["warm the cache before enabling"],
    "actionItems": [{"description": "add a cache warm-up job", "owner": "ep21-team", "due": "2026-12-15"}],
    "authors": ["lena"],
}


def test_the_report_has_the_timeline_the_targets_the_checks_and_the_review() -> None:
    obj = {**ROLLBACK, "spec": {**ROLLBACK["spec"], "review": REVIEW}}
    obj["status"] = {**ROLLBACK["status"], "seconds": {"timeToExecute": 4.0, "timeToValidate": 1000.0}}
    event = {
        "reason": "RollbackSucceeded",
        "type": "Normal",
        "note": "done",
        "eventTime": "2026-11-27T12:00:09Z",
    }
    text = report.render(obj, [event])
    for expected in (
        "# Incident record: INC-1",
        "| Outcome | **Succeeded**: rolled back A |",
        "| Flags applied | 2026-11-27 12:00:02 UTC | 1.0s |",
        "| Validated | 2026-11-27 12:00:09 UTC | 4.0s |",
        "| Time to execute (go-ahead to restarts done) | 4.0s | < 30m00s | met |",
        "| Time to validate (restarts done to checks passed) | 16m40s | < 15m00s | **missed** |",
        "- `A`: true → false",
        "- Deployment/butler (A)",
        "### health (http, request): Passed",
        "| 2026-11-27 12:00:08 UTC | pass | 200 | ok |",
        "| 2026-11-27 12:00:09 UTC | Normal | RollbackSucceeded | done |",
        "### Root cause\n\nthe new dialog repository's cache was cold",
        "- the trigger fired within 5 s",
        "| add a cache warm-up job | ep21-team | 2026-12-15 | no |",
        "Review by lena.",
    ):
        assert expected in text, expected


def test_a_report_without_a_review_says_how_to_add_one() -> None:
    assert "Not written yet" in report.render(ROLLBACK)
