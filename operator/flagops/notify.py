"""Notifications, as JSON: rollback phase changes and trigger firings to the webhook,
escalations to the escalation receiver.

Delivery never blocks or fails a rollback: each message is sent by a background task
with a bounded timeout and a few retries with backoff; what cannot be delivered is
counted (flagops_notifications_total{result="failed"}) and logged without the URL,
which often carries a token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Literal

import aiohttp
from pydantic import ValidationError

from flagops import kube, metrics
from flagops.models.flagset import FeatureFlagSetSpec

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 200
# The set's two receivers: webhook for every phase change, escalation for one page per rollback.
Receiver = Literal["webhook", "escalation"]


class Notifier:
    def __init__(self, client: kube.Kube, *, backoff: tuple[float, ...] = (1.0, 2.0, 4.0)) -> None:
        self._kube = client
        self._backoff = backoff
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def send(
        self, namespace: str, flagset: str, message: dict[str, Any], *, receiver: Receiver = "webhook"
    ) -> None:
        """Queue a message for one of the set's receivers, if it has it; returns at once."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            metrics.NOTIFICATIONS.labels("dropped").inc()
            logger.warning(
                "dropping a notification for %s/%s: %d still in flight", namespace, flagset, len(self._tasks)
            )
            return
        task = asyncio.create_task(
            self._deliver(namespace, flagset, message, receiver), name="flagops-notify"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float = 2.0) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(
        self, namespace: str, flagset: str, message: dict[str, Any], receiver: Receiver
    ) -> None:
        try:
            target = await self._target(namespace, flagset, receiver)
        except kube.ApiError as err:
            metrics.NOTIFICATIONS.labels("failed").inc()
            logger.warning("notification for %s/%s not sent: %s", namespace, flagset, err)
            return
        if target is None:
            return
        url, timeout = target
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for attempt, delay in enumerate((*self._backoff, None), start=1):
            try:
                async with self._session.post(
                    url, json=message, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as resp:
                    if resp.status < 300:
                        metrics.NOTIFICATIONS.labels("sent").inc()
                        return
                    problem = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError) as err:
                problem = type(err).__name__
            if delay is None:
                break
            logger.info(
                "%s of %s/%s: attempt %d failed (%s); retrying in %.0fs",
                receiver,
                namespace,
                flagset,
                attempt,
                problem,
                delay,
            )
            await asyncio.sleep(delay)
        metrics.NOTIFICATIONS.labels("failed").inc()
        logger.warning(
            "%s of %s/%s: giving up after %d attempts (%s)", receiver, namespace, flagset, attempt, problem
        )

    async def _target(self, namespace: str, flagset: str, receiver: Receiver) -> tuple[str, int] | None:
        body = await self._kube.get(kube.FLAGSETS.path(namespace, flagset))
        if body is None:
            return None
        try:
            spec = FeatureFlagSetSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None
        target = spec.notifications.webhook if receiver == "webhook" else spec.notifications.escalation
        if target is None:
            return None
        ref = target.url_secret_ref
        try:
            url = await self._kube.secret_value(namespace, ref.name, ref.key)
        except kube.SecretNotUsable as err:
            metrics.NOTIFICATIONS.labels("failed").inc()
            logger.warning("%s of %s/%s not sent: %s", receiver, namespace, flagset, err)
            return None
        return url.strip(), target.timeout_seconds
