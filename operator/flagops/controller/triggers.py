"""Flag triggers: Prometheus conditions that request a rollback by themselves.

Each set with triggers is evaluated on a timer. A breach that holds for `forSeconds`
creates one RollbackRequest (reason and detectedAt filled in) and no second while one for
that flag is active; a breach that clears in time creates nothing. The state of each
trigger is in the set's status (`status.triggers`).
"""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any

from pydantic import ValidationError

from flagops import kube, metrics
from flagops.checks import ProbeError
from flagops.checks.http import Prober
from flagops.controller.events import EventRecorder
from flagops.controller.flagsets import Clock, FlagSetReconciler, parse_status, utcnow
from flagops.models.flagset import FeatureFlagSetSpec, Flag, Trigger, TriggerState, TriggerStatus
from flagops.models.rollback import Phase
from flagops.notify import Notifier
from flagops.reconcile import flagset as fs
from flagops.reconcile import locks
from flagops.reconcile import rollback as rollback_logic

logger = logging.getLogger(__name__)

OK, BREACHING, FIRED, ERROR = TriggerState.OK, TriggerState.BREACHING, TriggerState.FIRED, TriggerState.ERROR


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


class TriggerEvaluator:
    def __init__(
        self,
        client: kube.Kube,
        recorder: EventRecorder,
        flagsets: FlagSetReconciler,
        prober: Prober,
        notifier: Notifier,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._kube = client
        self._events = recorder
        self._flagsets = flagsets
        self._prober = prober
        self._notifier = notifier
        self._clock = clock

    async def evaluate(self, namespace: str, name: str) -> float | None:
        """Evaluate every trigger of the set; returns when to evaluate again (None: no triggers)."""
        body = await self._kube.get(kube.FLAGSETS.path(namespace, name))
        if body is None:
            return None
        try:
            spec = FeatureFlagSetSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None
        triggers = [(flag, trigger) for flag in spec.flags for trigger in flag.triggers]
        status = parse_status(body.get("status"))
        before = {(t.flag, t.name): t for t in status.triggers}
        after: list[TriggerStatus] = []
        for flag, trigger in triggers:
            previous = before.get((flag.name, trigger.name))
            after.append(
                await self._evaluate_one(body, flag, trigger, previous=previous, effective=status.effective)
            )
        if [t.to_api() for t in after] != [t.to_api() for t in status.triggers]:
            await self._write(namespace, name, after)
        if not triggers:
            return None
        return float(min(trigger.interval_seconds for _, trigger in triggers))

    async def _evaluate_one(
        self,
        body: dict[str, Any],
        flag: Flag,
        trigger: Trigger,
        *,
        previous: TriggerStatus | None,
        effective: dict[str, bool],
    ) -> TriggerStatus:
        namespace, set_name = body["metadata"]["namespace"], body["metadata"]["name"]
        now = self._clock()
        state = previous.state if previous else OK
        since = previous.since if previous else None
        base = {"flag": flag.name, "name": trigger.name}
        ref = trigger.prometheus.bearer_token_secret_ref
        try:
            token = await self._kube.secret_value(namespace, ref.name, ref.key) if ref else None
            values = await self._prober.query(trigger.prometheus, token)
        except (ProbeError, kube.SecretNotUsable) as err:
            # A refused target or Secret is an Error too: the trigger cannot fire until it is fixed.
            return TriggerStatus(
                **base, state=ERROR, since=since if state == ERROR else now, message=str(err)
            )
        threshold = float(trigger.threshold)
        breaching = [v for v in values if rollback_logic.compares(trigger.comparison, v, threshold)]
        shown = ", ".join(f"{v:g}" for v in values) or "empty"
        if not breaching:
            if state == OK and previous is not None:
                return previous
            return TriggerStatus(
                **base,
                state=OK,
                since=now,
                value=shown,
                message=f"{trigger.prometheus.query} = {shown}: not {trigger.comparison} {trigger.threshold}",
            )
        if state not in (BREACHING, FIRED) or since is None:
            since = now
        if state == FIRED and previous is not None and previous.rollback:
            return previous  # one request per breach; it ends when the breach clears
        held_for = (now - since).total_seconds()
        breach = (
            f"{trigger.prometheus.query} = {', '.join(f'{v:g}' for v in breaching)} "
            f"{trigger.comparison} {trigger.threshold}"
        )
        if held_for < trigger.for_seconds:
            if state == BREACHING and previous is not None:
                return previous
            return TriggerStatus(
                **base,
                state=BREACHING,
                since=since,
                value=shown,
                message=f"{breach}; fires after {trigger.for_seconds}s",
            )
        if effective.get(flag.name) == flag.safe_value:
            return TriggerStatus(
                **base,
                state=BREACHING,
                since=since,
                value=shown,
                message=f"{breach}, but {flag.name} already serves its safe value",
            )
        existing = await self._active_request(namespace, set_name, flag.name)
        if existing is not None:
            return TriggerStatus(
                **base,
                state=FIRED,
                since=since,
                value=shown,
                rollback=existing,
                message=f"{breach}; RollbackRequest {existing} already active for {flag.name}",
            )
        created = await self._request(body, flag, trigger, since=since, breach=breach, held_for=held_for)
        return TriggerStatus(
            **base,
            state=FIRED,
            since=since,
            value=shown,
            rollback=created,
            message=f"{breach} for {rollback_logic.format_duration(held_for)}: "
            f"created RollbackRequest {created}",
        )

    async def _active_request(self, namespace: str, flagset: str, flag: str) -> str | None:
        # Ask the API server, not a cache: a duplicate request is the failure to avoid.
        for body in await self._kube.list(kube.ROLLBACKS.path(namespace)):
            if active(body, flagset, flag):
                return str(body["metadata"]["name"])
        return None

    async def _request(
        self,
        body: dict[str, Any],
        flag: Flag,
        trigger: Trigger,
        *,
        since: datetime.datetime,
        breach: str,
        held_for: float,
    ) -> str:
        namespace, set_name = body["metadata"]["namespace"], body["metadata"]["name"]
        name = request_name(set_name, flag.name, since)
        detected_at = since.strftime("%Y-%m-%dT%H:%M:%SZ")
        request = {
            "apiVersion": kube.ROLLBACKS.group + "/" + kube.ROLLBACKS.version,
            "kind": "RollbackRequest",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    **fs.MANAGED_BY,
                    "flagops.io/trigger": trigger.name,
                    "flagops.io/flagset": set_name,
                },
            },
            "spec": {
                "flagSet": set_name,
                "flags": [flag.name],
                "emergency": trigger.emergency,
                "reason": f"trigger {trigger.name}: {breach} for {rollback_logic.format_duration(held_for)}"[
                    :1024
                ],
                "detectedAt": detected_at,
            },
        }
        try:
            await self._kube.create(kube.ROLLBACKS.path(namespace), request)
        except kube.ApiError as err:
            if not err.conflict:
                raise
        metrics.TRIGGER_FIRINGS.labels(namespace, set_name, flag.name).inc()
        logger.info(
            "trigger %s on %s/%s %s fired: created RollbackRequest %s",
            trigger.name,
            namespace,
            set_name,
            flag.name,
            name,
        )
        note = f"Trigger {trigger.name} fired on {flag.name} ({breach}): created RollbackRequest {name}"
        await self._events.emit(body, reason="TriggerFired", action="Trigger", note=note, warning=True)
        self._notifier.send(
            namespace,
            set_name,
            {
                "text": note,
                "kind": "TriggerFired",
                "namespace": namespace,
                "flagSet": set_name,
                "flag": flag.name,
                "trigger": trigger.name,
                "rollbackRequest": name,
                "detectedAt": detected_at,
                "message": breach,
            },
        )
        return name

    async def _write(self, namespace: str, name: str, triggers: list[TriggerStatus]) -> None:
        await self._flagsets.patch_status(
            namespace, name, lambda _: {"triggers": [t.to_api() for t in triggers]}
        )
