"""One probe per kind of check, behind one protocol (as Argo Rollouts' metric providers).

A rollback asks a probe three things: what it measures and expects (for status), a value
before the flip (only invariants need one), and a measurement after the restarts. A Job
check also starts its Job when validation begins. The measurement policy (interval,
successes, failure limit, deadline) is the same for every kind and lives in
flagops.reconcile.rollback.record. A new kind of check is a probe here and a field in the
models, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from flagops import kube
from flagops.checks import http as http_probe
from flagops.checks import job as job_probe
from flagops.models.checks import Check, PrometheusQuery
from flagops.models.rollback import CheckResult
from flagops.reconcile import rollback as logic

# (observed value, passed or None when inconclusive, message)
Reading = tuple[str, bool | None, str]


@dataclass(frozen=True)
class Context:
    """What a probe may use: the API, the guarded HTTP client, the request it measures for."""

    kube: kube.Kube
    prober: http_probe.Prober
    request: dict[str, Any]

    @property
    def namespace(self) -> str:
        return str(self.request["metadata"]["namespace"])


async def prometheus_values(
    client: kube.Kube, prober: http_probe.Prober, namespace: str, spec: PrometheusQuery
) -> list[float]:
    """An instant query, with the bearer token of its Secret (which must have opted in):
    what both a prometheus check and a trigger measure."""
    ref = spec.bearer_token_secret_ref
    token = await client.secret_value(namespace, ref.name, ref.key) if ref else None
    return await prober.query(spec, token)


class Probe(Protocol):
    def describe(self, check: Check) -> tuple[str, str]:
        """(what is measured, what counts as passing), for status."""

    async def baseline(self, ctx: Context, check: Check) -> str | None:
        """A value read before anything changes (ProbeError if unreadable), or None."""

    async def start(self, ctx: Context, check: Check) -> str | None:
        """Begin, when validation starts; a more precise target for status, or None."""

    async def measure(self, ctx: Context, check: Check, result: CheckResult) -> Reading:
        """One measurement; raises ProbeError, Refused or kube.SecretNotUsable when it cannot."""


class _Passive:
    """Most probes need no baseline and nothing started."""

    async def baseline(self, ctx: Context, check: Check) -> str | None:
        return None

    async def start(self, ctx: Context, check: Check) -> str | None:
        return None


class HttpProbe(_Passive):
    def describe(self, check: Check) -> tuple[str, str]:
        assert check.http is not None
        spec = check.http
        expect = f"status {spec.expected_status}"
        if spec.json_path:
            expect += (
                f", {spec.json_path} == {spec.expected_value}"
                if spec.expected_value
                else f", {spec.json_path} present"
            )
        return f"GET {spec.url}", expect

    async def measure(self, ctx: Context, check: Check, result: CheckResult) -> Reading:
        assert check.http is not None
        return await ctx.prober.measure(check.http)


class InvariantProbe(_Passive):
    def describe(self, check: Check) -> tuple[str, str]:
        assert check.invariant is not None
        source = check.invariant.http
        return f"GET {source.url} {source.json_path or ''}".strip(), str(check.invariant.comparison)

    async def baseline(self, ctx: Context, check: Check) -> str | None:
        assert check.invariant is not None
        return await ctx.prober.read_value(check.invariant.http)

    async def measure(self, ctx: Context, check: Check, result: CheckResult) -> Reading:
        assert check.invariant is not None
        value = await ctx.prober.read_value(check.invariant.http)
        ok, message = logic.compare_invariant(check.invariant.comparison, result.baseline or "null", value)
        return value, ok, message


class PrometheusProbe(_Passive):
    def describe(self, check: Check) -> tuple[str, str]:
        assert check.prometheus is not None
        prom = check.prometheus
        return (
            f"{prom.server} {prom.query}",
            f"every value {prom.comparison} {prom.threshold}; empty result: {prom.on_empty}",
        )

    async def measure(self, ctx: Context, check: Check, result: CheckResult) -> Reading:
        assert check.prometheus is not None
        values = await prometheus_values(ctx.kube, ctx.prober, ctx.namespace, check.prometheus)
        return logic.judge_query(check.prometheus, values)


class JobProbe(_Passive):
    def describe(self, check: Check) -> tuple[str, str]:
        return "Job", "Job completes"

    async def start(self, ctx: Context, check: Check) -> str | None:
        assert check.job is not None
        manifest = job_probe.job_manifest(ctx.request, check.name, check.job.template, check.deadline_seconds)
        await job_probe.ensure(ctx.kube, manifest)
        return f"Job {manifest['metadata']['namespace']}/{manifest['metadata']['name']}"

    async def measure(self, ctx: Context, check: Check, result: CheckResult) -> Reading:
        name = job_probe.job_name(ctx.request["metadata"]["name"], check.name)
        # Still running: an inconclusive measurement; the deadline still applies.
        return await job_probe.measure(ctx.kube, ctx.namespace, name)


PROBES: dict[str, Probe] = {
    "http": HttpProbe(),
    "invariant": InvariantProbe(),
    "prometheus": PrometheusProbe(),
    "job": JobProbe(),
}


def probe(check: Check) -> Probe:
    return PROBES[check.kind]
