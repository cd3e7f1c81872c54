"""RollbackDrill reconciler: at each due time, one drill RollbackRequest; the outcome in status.

The runs are read from the requests the drill created (labelled with its uid, annotated with
the due time), so what has run survives a wiped status; the request's name comes from the due
time, so a run is never created twice.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from pydantic import ValidationError

from flagops import conditions as c
from flagops import kube
from flagops.controller.events import EventRecorder
from flagops.controller.flagsets import utcnow, validation_message
from flagops.controller.rollbacks import created
from flagops.models.drill import DrillRun, RollbackDrillSpec, RollbackDrillStatus
from flagops.reconcile import drills as logic
from flagops.reconcile.flagset.status import merge_patch
from flagops.reconcile.locks import held_annotation

logger = logging.getLogger(__name__)

# A long wait is cut short now and then: a clock that jumped, or an edit the watch missed.
MAX_WAIT_SECONDS = 300.0


class DrillReconciler:
    def __init__(self, client: kube.Kube, recorder: EventRecorder, *, clock: Any = utcnow) -> None:
        self._kube = client
        self._events = recorder
        self._clock = clock

    async def reconcile(self, namespace: str, name: str) -> float | None:
        body = await self._kube.get(kube.DRILLS.path(namespace, name))
        if body is None:
            return None
        now = self._clock()
        generation = int(body["metadata"].get("generation", 0))
        status = _status(body)
        try:
            spec = RollbackDrillSpec.model_validate(body.get("spec") or {})
            schedule = logic.Schedule.of(spec)
        except ValidationError as err:
            await self._invalid(body, status, validation_message(err), generation, now)
            return None
        except ValueError as err:
            await self._invalid(body, status, f"schedule: {err}", generation, now)
            return None

        requests = await self._requests(body)
        runs = logic.runs(requests, spec.targets)
        decision = logic.decide(spec, schedule, runs, created(body), now)
        if decision.start is not None:
            started = await self._start(body, spec, decision.start)
            # The new run joins the list as created; only a run another pass made means listing again.
            requests = [*requests, started] if started is not None else await self._requests(body)
            runs = logic.runs(requests, spec.targets)
        runs = await self._expire(body, spec, runs, requests)
        new = logic.drill_status(
            status,
            spec=spec,
            schedule=schedule,
            decision=decision,
            current=runs,
            created=created(body),
            now=now,
            generation=generation,
        )
        patch = merge_patch(body.get("status") or {}, new.to_api())
        if patch:
            await self._kube.patch_status(kube.DRILLS, body, patch)
        if decision.start is not None or decision.reason == c.DRILL_RUNNING:
            return MAX_WAIT_SECONDS  # the request's changes wake the drill sooner
        if new.next_run_at is None:
            return None
        wait: float = (new.next_run_at - self._clock()).total_seconds()
        return min(max(wait, 0.0), MAX_WAIT_SECONDS)

    async def _requests(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Its runs: labelled with its uid and owned by it (a label alone could be anyone's)."""
        selector = f"{logic.DRILL_LABEL}={body['metadata']['uid']}"
        listed = await self._kube.list(
            kube.ROLLBACKS.path(body["metadata"]["namespace"]), label_selector=selector
        )
        return [r for r in listed if logic.scheduled_by(r) == body["metadata"]["name"]]

    async def _start(
        self, body: dict[str, Any], spec: RollbackDrillSpec, due: datetime.datetime
    ) -> dict[str, Any] | None:
        """The run for `due`, as created; None when an earlier pass created it already."""
        request = logic.drill_request(body, spec, due)
        name = request["metadata"]["name"]
        try:
            created_run = await self._kube.create(kube.ROLLBACKS.path(body["metadata"]["namespace"]), request)
        except kube.ApiError as err:
            if not err.conflict:
                raise
            return None  # the same run, not a new one
        logger.info(
            "RollbackDrill %s/%s started %s", body["metadata"]["namespace"], body["metadata"]["name"], name
        )
        note = f"drill {name} started for {logic.when(due)}"
        await self._events.emit(body, reason="DrillStarted", action="Drill", note=note)
        return created_run

    async def _expire(
        self,
        body: dict[str, Any],
        spec: RollbackDrillSpec,
        runs: list[DrillRun],
        requests: list[dict[str, Any]],
    ) -> list[DrillRun]:
        """Delete finished runs beyond historyLimit (never one that holds flags)."""
        locked = {
            r["metadata"]["name"]
            for r in requests
            if held_annotation(r) is not None or (r.get("status") or {}).get("locked")
        }
        expired = logic.expired(runs, spec.history_limit, locked)
        for name in expired:
            await self._kube.delete(kube.ROLLBACKS.path(body["metadata"]["namespace"], name))
        return [run for run in runs if run.request not in expired]

    async def _invalid(
        self,
        body: dict[str, Any],
        status: RollbackDrillStatus,
        message: str,
        generation: int,
        now: datetime.datetime,
    ) -> None:
        new = logic.invalid_status(status, message, now, generation)
        patch = merge_patch(body.get("status") or {}, new.to_api())
        if patch:
            await self._kube.patch_status(kube.DRILLS, body, patch)
        if status.message != message:
            await self._events.emit(
                body, reason=c.INVALID_SCHEDULE, action="Schedule", note=message, warning=True
            )


def _status(body: dict[str, Any]) -> RollbackDrillStatus:
    try:
        return RollbackDrillStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return RollbackDrillStatus()
