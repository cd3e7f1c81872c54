"""The trigger state machine, as pure functions: OK -> Breaching -> Fired (or Error).

A breach that holds `forSeconds` asks for a rollback, once per breach; a breach that clears
in time asks for nothing. flagops.controller.triggers measures and creates the request.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from flagops.models.flagset import Flag, Trigger, TriggerState, TriggerStatus
from flagops.models.rollback import Phase
from flagops.reconcile import locks
from flagops.reconcile.rollback import compares, format_duration


@dataclass(frozen=True)
class Evaluation:
    status: TriggerStatus
    fire: bool = False  # the breach held: request a rollback, unless one is already active
    breach: str = ""  # query, values and threshold, for the request's reason
    held_for: float = 0.0


def request_name(flagset: str, flag: str, since: datetime.datetime) -> str:
    """Deterministic per breach, so a retry after a crash finds the request it made."""
    slug = re.sub(r"[^a-z0-9]+", "-", flag.lower()).strip("-")
    return f"{flagset[:180]}-{slug[:50]}-{since:%Y%m%d-%H%M%S}".strip("-")


def active(body: dict[str, Any], flagset: str, flag: str) -> bool:
    """A request for this flag that is still running, or still holds it."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if spec.get("flagSet") != flagset or not (spec.get("all") or flag in (spec.get("flags") or [])):
        return False
    phase = status.get("phase")
    if phase is None or not Phase(phase).terminal:
        return True
    return locks.held_annotation(body) is not None


def failed(
    flag: Flag, trigger: Trigger, previous: TriggerStatus | None, error: str, now: datetime.datetime
) -> TriggerStatus:
    """The query could not run (unreachable, refused target or Secret): Error, since when."""
    since = previous.since if previous and previous.state == TriggerState.ERROR else now
    return TriggerStatus(
        flag=flag.name, name=trigger.name, state=TriggerState.ERROR, since=since, message=error
    )


def evaluate(
    flag: Flag,
    trigger: Trigger,
    previous: TriggerStatus | None,
    values: list[float],
    *,
    serving_safe_value: bool,
    now: datetime.datetime,
) -> Evaluation:
    """The next state from the query's values; `fire` when the breach has held long enough."""
    state = previous.state if previous else TriggerState.OK
    base = {"flag": flag.name, "name": trigger.name}
    breaching = [v for v in values if compares(trigger.comparison, v, float(trigger.threshold))]
    shown = ", ".join(f"{v:g}" for v in values) or "empty"
    if not breaching:
        if state == TriggerState.OK and previous is not None:
            return Evaluation(previous)
        message = f"{trigger.prometheus.query} = {shown}: not {trigger.comparison} {trigger.threshold}"
        return Evaluation(
            TriggerStatus(**base, state=TriggerState.OK, since=now, value=shown, message=message)
        )
    since = previous.since if previous and state in (TriggerState.BREACHING, TriggerState.FIRED) else None
    since = since or now
    if state == TriggerState.FIRED and previous is not None and previous.rollback:
        return Evaluation(previous)  # one request per breach; it ends when the breach clears
    held_for = (now - since).total_seconds()
    breach = (
        f"{trigger.prometheus.query} = {', '.join(f'{v:g}' for v in breaching)} "
        f"{trigger.comparison} {trigger.threshold}"
    )
    breaching_status = TriggerStatus(**base, state=TriggerState.BREACHING, since=since, value=shown)
    if held_for < trigger.for_seconds:
        if state == TriggerState.BREACHING and previous is not None:
            return Evaluation(previous)
        message = f"{breach}; fires after {trigger.for_seconds}s"
        return Evaluation(breaching_status.model_copy(update={"message": message}))
    if serving_safe_value:
        message = f"{breach}, but {flag.name} already serves its safe value"
        return Evaluation(breaching_status.model_copy(update={"message": message}))
    return Evaluation(breaching_status, fire=True, breach=breach, held_for=held_for)


def fired(evaluation: Evaluation, request: str, *, created: bool) -> TriggerStatus:
    """The state once the rollback is requested (or found already active)."""
    if created:
        held = format_duration(evaluation.held_for)
        message = f"{evaluation.breach} for {held}: created RollbackRequest {request}"
    else:
        flag = evaluation.status.flag
        message = f"{evaluation.breach}; RollbackRequest {request} already active for {flag}"
    return evaluation.status.model_copy(
        update={"state": TriggerState.FIRED, "rollback": request, "message": message}
    )
