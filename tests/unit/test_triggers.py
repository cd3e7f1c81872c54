"""The trigger state machine: OK -> Breaching -> Fired once per breach; Error when it cannot measure."""

from __future__ import annotations

import datetime

from flagops.models.flagset import Flag, Trigger, TriggerState
from flagops.reconcile import triggers

T0 = datetime.datetime(2026, 11, 25, 20, 0, tzinfo=datetime.UTC)
FLAG = Flag.model_validate({"name": "DIALOG", "enabled": True})
TRIGGER = Trigger.model_validate(
    {
        "name": "errors",
        "prometheus": {"server": "http://p", "query": "ratio"},
        "threshold": "0.05",
        "forSeconds": 5,
    }
)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_a_breach_fires_once_it_has_held_for_seconds_and_only_once() -> None:
    first = triggers.evaluate(FLAG, TRIGGER, None, [0.08], serving_safe_value=False, now=at(0))
    assert first.status.state == TriggerState.BREACHING and not first.fire
    assert first.status.message == "ratio = 0.08 GreaterThan 0.05; fires after 5s"
    later = triggers.evaluate(FLAG, TRIGGER, first.status, [0.09], serving_safe_value=False, now=at(5))
    assert later.fire and later.held_for == 5.0 and later.status.since == at(0)
    done = triggers.fired(later, "rb-1", created=True)
    assert done.state == TriggerState.FIRED and done.rollback == "rb-1"
    assert done.message == "ratio = 0.09 GreaterThan 0.05 for 5.0s: created RollbackRequest rb-1"
    again = triggers.evaluate(FLAG, TRIGGER, done, [0.2], serving_safe_value=False, now=at(30))
    assert not again.fire and again.status == done


def test_a_breach_that_clears_in_time_fires_nothing() -> None:
    breaching = triggers.evaluate(FLAG, TRIGGER, None, [0.08], serving_safe_value=False, now=at(0))
    cleared = triggers.evaluate(FLAG, TRIGGER, breaching.status, [0.01], serving_safe_value=False, now=at(3))
    assert cleared.status.state == TriggerState.OK and not cleared.fire
    anew = triggers.evaluate(FLAG, TRIGGER, cleared.status, [0.08], serving_safe_value=False, now=at(4))
    assert anew.status.since == at(4) and not anew.fire


def test_no_request_while_the_flag_already_serves_its_safe_value() -> None:
    held = triggers.evaluate(FLAG, TRIGGER, None, [0.08], serving_safe_value=True, now=at(0))
    later = triggers.evaluate(FLAG, TRIGGER, held.status, [0.08], serving_safe_value=True, now=at(10))
    assert not later.fire and "already serves its safe value" in later.status.message


def test_an_error_keeps_its_since_until_it_clears() -> None:
    first = triggers.failed(FLAG, TRIGGER, None, "Prometheus at http://p did not answer", at(0))
    second = triggers.failed(FLAG, TRIGGER, first, "Prometheus at http://p did not answer", at(9))
    assert second.state == TriggerState.ERROR and second.since == at(0)
    recovered = triggers.evaluate(FLAG, TRIGGER, second, [0.0], serving_safe_value=False, now=at(10))
    assert recovered.status.state == TriggerState.OK


def test_an_active_request_found_instead_of_creating_one() -> None:
    breaching = triggers.evaluate(FLAG, TRIGGER, None, [0.08], serving_safe_value=False, now=at(0))
    ready = triggers.evaluate(FLAG, TRIGGER, breaching.status, [0.08], serving_safe_value=False, now=at(6))
    status = triggers.fired(ready, "manual", created=False)
    assert (
        status.rollback == "manual" and "RollbackRequest manual already active for DIALOG" in status.message
    )
