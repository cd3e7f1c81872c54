"""HTTP probes: the `http` check, and the value an `invariant` check reads."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import aiohttp

from flagops.checks import ProbeError, prometheus
from flagops.checks.guard import Guard
from flagops.models.checks import HttpCheck, PrometheusQuery
from flagops.reconcile.rollback import MAX_VALUE, clip
from flagops.reconcile.targets import TargetPolicy

_PATH_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]")
_MISSING = object()


def extract(document: Any, path: str) -> Any:
    """The value at a JSON path of the form $.a.b[0].c; raises KeyError when absent."""
    value = document
    for key, index in _PATH_STEP.findall(path):
        if key:
            if not isinstance(value, dict) or key not in value:
                raise KeyError(path)
            value = value[key]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                raise KeyError(path)
            value = value[int(index)]
    return value


def same_value(observed: Any, expected: str) -> bool:
    """expected is JSON text where it parses (3, true, "x"), else a bare string (ok)."""
    try:
        wanted = json.loads(expected)
    except ValueError:
        wanted = expected
    return bool(observed == wanted or (isinstance(observed, str) and observed == expected))


async def fetch(session: aiohttp.ClientSession, check: HttpCheck) -> tuple[int, Any]:
    """(status, JSON body or None)."""
    timeout = aiohttp.ClientTimeout(total=check.timeout_seconds)
    try:
        async with session.get(check.url, timeout=timeout, allow_redirects=False) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            return resp.status, body
    except (TimeoutError, aiohttp.ClientError) as err:
        raise ProbeError(f"GET {check.url} failed: {type(err).__name__}: {err}".rstrip(": ")) from err


def fingerprint(text: str) -> str:
    """What an invariant keeps of a whole answer or a long value: its digest, as JSON text."""
    return json.dumps("sha256:" + hashlib.sha256(text.encode()).hexdigest())


async def measure(session: aiohttp.ClientSession, check: HttpCheck) -> tuple[str, bool, str]:
    """(observed value, passed, message) of one GET."""
    try:
        status, body = await fetch(session, check)
    except ProbeError as err:
        return "", False, str(err)
    if status != check.expected_status:
        return str(status), False, f"status {status}, expected {check.expected_status}"
    if not check.json_path:
        return str(status), True, f"status {status}"
    if body is None:
        return str(status), False, f"status {status} but the body is not JSON; cannot read {check.json_path}"
    try:
        value = extract(body, check.json_path)
    except KeyError:
        return str(status), False, f"{check.json_path} not found in the answer"
    shown = clip(json.dumps(value))
    if check.expected_value is None:
        return shown, True, f"{check.json_path} = {shown}"
    ok = same_value(value, check.expected_value)
    return shown, ok, f"{check.json_path} = {shown}, expected {check.expected_value}"


async def read_value(session: aiohttp.ClientSession, check: HttpCheck) -> str:
    """The JSON text of the value at json_path; a fingerprint of the whole answer without one, or of
    a value too long to show. ProbeError if unreadable."""
    status, body = await fetch(session, check)
    if status != check.expected_status:
        raise ProbeError(f"GET {check.url}: status {status}, expected {check.expected_status}")
    if body is None:
        raise ProbeError(f"GET {check.url}: the answer is not JSON")
    try:
        text = json.dumps(extract(body, check.json_path) if check.json_path else body, sort_keys=True)
    except KeyError as err:
        raise ProbeError(f"{check.json_path} not found in the answer of {check.url}") from err
    return text if check.json_path and len(text) <= MAX_VALUE else fingerprint(text)


class Prober:
    """One HTTP client for every http, invariant and prometheus probe of the operator; each
    request first passes the target policy (Refused with TargetNotAllowed otherwise)."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._guard = Guard(policy)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._guard.session()
        return self._session

    async def measure(self, check: HttpCheck) -> tuple[str, bool, str]:
        await self._guard.check(check.url)
        return await measure(self._client(), check)

    async def read_value(self, check: HttpCheck) -> str:
        await self._guard.check(check.url)
        return await read_value(self._client(), check)

    async def query(self, spec: PrometheusQuery, token: str | None = None) -> list[float]:
        """An instant Prometheus query; NaN values (no traffic) are dropped."""
        await self._guard.check(spec.server)
        return prometheus.finite(await prometheus.query(self._client(), spec, token))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
