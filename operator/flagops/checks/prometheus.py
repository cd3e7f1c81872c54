"""Prometheus probes: the `prometheus` check and flag triggers run an instant query."""

from __future__ import annotations

import math

import aiohttp

from flagops.checks import ProbeError
from flagops.models.checks import PrometheusQuery


async def query(
    session: aiohttp.ClientSession, spec: PrometheusQuery, token: str | None = None
) -> list[float]:
    """The values of an instant query: one per series (a scalar is one value); [] when empty."""
    url = spec.server.rstrip("/") + "/api/v1/query"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(
            url,
            params={"query": spec.query},
            headers=headers,
            allow_redirects=False,  # a redirect would take the token to a host nobody checked
            timeout=aiohttp.ClientTimeout(total=spec.timeout_seconds),
        ) as resp:
            body = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as err:
        raise ProbeError(
            f"Prometheus at {spec.server} did not answer: {type(err).__name__} {err}".strip()
        ) from err
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise ProbeError(f"Prometheus rejected the query: {str(error or 'no error given')[:200]}")
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        return [float(result[1])]
    if data.get("resultType") == "vector":
        return [float(series["value"][1]) for series in result or []]
    raise ProbeError(f"the query returned a {data.get('resultType')}, not an instant vector or scalar")


def finite(values: list[float]) -> list[float]:
    """NaN (0/0 in a ratio with no traffic) says nothing: treat it as no data."""
    return [v for v in values if not math.isnan(v)]
