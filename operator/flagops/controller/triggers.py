"""Flag triggers: Prometheus conditions that request a rollback by themselves.

Each set with triggers is evaluated on a timer. A breach that holds for `forSeconds`
creates one RollbackRequest (reason and detectedAt filled in) and no second while one for
that flag is active; a breach that clears in time creates nothing. The state of each
trigger is in the set's status (`status.triggers`).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from flagops import kube, metrics
from flagops.checks import ProbeError, probes
from flagops.checks.http import Prober
from flagops.controller.events import EventRecorder
from flagops.controller.flagsets import Clock, FlagSetReconciler, parse_status, utcnow
from flagops.models.flagset import FeatureFlagSetSpec, Flag, Trigger, TriggerStatus
from flagops.notify import Notifier
from flagops.reconcile import flagset as fs
from flagops.reconcile import rollback as rollback_logic
from flagops.reconcile import triggers as logic

logger = logging.getLogger(__name__)


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
        effective: dict[str, Any],
    ) -> TriggerStatus:
        namespace, set_name = body["metadata"]["namespace"], body["metadata"]["name"]
        now = self._clock()
        try:
            values = await probes.prometheus_values(self._kube, self._prober, namespace, trigger.prometheus)
        except (ProbeError, kube.SecretNotUsable) as err:
            # A refused target or Secret is an Error too: the trigger cannot fire until it is fixed.
            return logic.failed(flag, trigger, previous, str(err), now)
        evaluation = logic.evaluate(
            flag,
            trigger,
            previous,
            values,
            serving_safe_value=effective.get(flag.name) == flag.safe,
            now=now,
        )
        if not evaluation.fire:
            return evaluation.status
        existing = await self._active_request(namespace, set_name, flag.name)
        if existing is not None:
            return logic.fired(evaluation, existing, created=False)
        created = await self._request(body, flag, trigger, evaluation)
        return logic.fired(evaluation, created, created=True)

    async def _active_request(self, namespace: str, flagset: str, flag: str) -> str | None:
        # Ask the API server, not a cache: a duplicate request is the failure to avoid.
        for body in await self._kube.list(kube.ROLLBACKS.path(namespace)):
            if logic.active(body, flagset, flag):
                return str(body["metadata"]["name"])
        return None

    async def _request(
        self, body: dict[str, Any], flag: Flag, trigger: Trigger, evaluation: logic.Evaluation
    ) -> str:
        namespace, set_name = body["metadata"]["namespace"], body["metadata"]["name"]
        since = evaluation.status.since or self._clock()
        breach, held_for = evaluation.breach, evaluation.held_for
        name = logic.request_name(set_name, flag.name, since)
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
