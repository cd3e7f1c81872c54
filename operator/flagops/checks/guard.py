"""Enforces flagops.reconcile.targets on every connection a probe opens.

A URL is checked before each request (with a clear reason when refused), and the HTTP
session's resolver checks again whatever it resolves, so a name that resolves to one
address at check time and another at connect time (DNS rebinding) is still refused.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from flagops import conditions as c
from flagops.checks import ProbeError, Refused
from flagops.reconcile.targets import TargetPolicy, address


def host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ProbeError(f"{url} names no host")
    try:
        port = parts.port
    except ValueError as err:
        raise ProbeError(f"{url}: {err}") from err
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[str]:
    if address(host) is not None:
        return [host.strip("[]")]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ProbeError(f"cannot resolve {host}: {err}") from err
    return sorted({str(info[4][0]) for info in infos})


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        why = self._policy.decide(host, port, [r["host"] for r in results])
        if why is not None:
            raise OSError(why)
        return results

    async def close(self) -> None:
        await self._inner.close()


class Guard:
    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy

    async def check(self, url: str) -> None:
        """Raises Refused (TargetNotAllowed) when the URL's host may not be reached."""
        host, port = host_port(url)
        why = self.policy.decide(host, port, await resolve(host, port))
        if why is not None:
            raise Refused(c.TARGET_NOT_ALLOWED, why)

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=GuardedResolver(self.policy)))
