"""The operator's own metrics, and the HTTP server for /metrics, /healthz and /readyz.

The only module that imports prometheus_client. Label sets are bounded: phases, outcomes
and kinds are enums; namespace/flagset/flag labels only name objects that exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY: Final = CollectorRegistry(auto_describe=True)

# Seconds, from sub-second steps to an hour: rollbacks are seconds to minutes.
_BUCKETS: Final = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

ROLLBACKS: Final = Counter(
    "flagops_rollbacks_total",
    "RollbackRequests that reached a terminal phase.",
    ["outcome"],
    registry=REGISTRY,
)
PHASE_SECONDS: Final = Histogram(
    "flagops_rollback_phase_duration_seconds",
    "Time a RollbackRequest spent in a phase.",
    ["phase"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
TIME_TO: Final = Histogram(
    "flagops_rollback_duration_seconds",
    "Rollback timings: decision (detected to requested), execute, validate, total.",
    ["stage"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
REPEAT_ROLLBACKS: Final = Counter(
    "flagops_repeat_rollbacks_total",
    "Rollbacks of a flag that had been rolled back before.",
    ["namespace", "flagset", "flag"],
    registry=REGISTRY,
)
DRIFT_CORRECTED: Final = Counter(
    "flagops_drift_corrections_total",
    "Objects flagops owns that someone else edited or deleted, put back.",
    ["kind"],
    registry=REGISTRY,
)
INTERNAL_ERRORS: Final = Counter(
    "flagops_internal_errors_total",
    "Objects given up on after repeated unexpected errors in their passes (Failed or Degraded).",
    ["kind"],
    registry=REGISTRY,
)
FLAGS: Final = Gauge(
    "flagops_flags",
    "Flags of a FeatureFlagSet by served state.",
    ["namespace", "flagset", "state"],
    registry=REGISTRY,
)
RECONCILES: Final = Counter(
    "flagops_reconciles_total",
    "Reconcile passes.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_ERRORS: Final = Counter(
    "flagops_reconcile_errors_total",
    "Reconcile passes that failed and were retried.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_SECONDS: Final = Histogram(
    "flagops_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
ROLLOUTS_IN_PROGRESS: Final = Gauge(
    "flagops_rollouts_in_progress",
    "Workload restarts started by flagops and not yet complete.",
    registry=REGISTRY,
)
SHARDS_HELD: Final = Gauge(
    "flagops_shards_held",
    "Shards this replica holds the Lease of and acts on (with --shards).",
    registry=REGISTRY,
)
TRIGGER_FIRINGS: Final = Counter(
    "flagops_trigger_firings_total",
    "Triggers that created a RollbackRequest.",
    ["namespace", "flagset", "flag"],
    registry=REGISTRY,
)
API_REQUESTS: Final = Counter(
    "flagops_api_requests_total",
    "Requests flagops sent to the API server (kopf's watches aside).",
    ["method", "resource"],
    registry=REGISTRY,
)
NOTIFICATIONS: Final = Counter(
    "flagops_notifications_total",
    "Webhook and escalation notifications by result (sent, failed, dropped).",
    ["result"],
    registry=REGISTRY,
)
ESCALATIONS: Final = Counter(
    "flagops_escalations_total",
    "Rollbacks escalated to the escalation receiver, by why (Failed, Overdue).",
    ["why"],
    registry=REGISTRY,
)


def forget_flagset(namespace: str, flagset: str) -> None:
    for state in ("enabled", "disabled", "overridden"):
        with contextlib.suppress(KeyError):
            FLAGS.remove(namespace, flagset, state)


async def serve(
    address: str, port: int, *, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> web.AppRunner:
    """/metrics (Prometheus text), /healthz (liveness) and /readyz (readiness)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Callable[[], bool]) -> Callable[[web.Request], object]:
        async def handler(_: web.Request) -> web.Response:
            ok = check()
            return web.Response(status=200 if ok else 503, text="ok\n" if ok else "not ok\n")

        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", probe(healthy))  # type: ignore[arg-type]
    app.router.add_get("/readyz", probe(ready))  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    return runner
