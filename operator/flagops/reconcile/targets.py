"""Where checks and triggers may connect: a pure decision on a host, a port and its addresses.

Whoever writes a check or a trigger chooses the URL, and flagops fetches it from inside the
cluster and reports what it saw: without limits that is a way to read cloud metadata,
the API server or internal services through flagops. So:
- the Kubernetes API server (as the operator reaches it) is never a target;
- link-local (cloud metadata), loopback (the operator's own pod) and unspecified addresses
  are refused unless an allowed entry names them by address or network;
- with `--allowed-targets`, only the hosts and networks listed are targets.
Every address a host name resolves to must pass, so a name cannot smuggle in an address
that an address would not be allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SPECIAL = (
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address (cloud metadata lives there)"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    (ipaddress.ip_network("127.0.0.0/8"), "a loopback address (the operator's own pod)"),
    (ipaddress.ip_network("::1/128"), "a loopback address (the operator's own pod)"),
    (ipaddress.ip_network("0.0.0.0/32"), "the unspecified address"),
    (ipaddress.ip_network("::/128"), "the unspecified address"),
)


def address(text: str) -> Address | None:
    """An IP address (IPv4-mapped IPv6 as IPv4), or None for a host name."""
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def special(ip: Address) -> str | None:
    """Why an address is refused by default, or None."""
    for network, why in _SPECIAL:
        if ip.version == network.version and ip in network:
            return why
    return None


@dataclass(frozen=True)
class AllowedTarget:
    """One entry of --allowed-targets: a network or a host pattern, and optionally a port."""

    text: str
    network: Network | None = None
    host: str | None = None  # lower case; "*.example.org" matches any name below example.org
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> AllowedTarget:
        text = entry.strip()
        where, port = _split_port(text)
        if not where:
            raise ValueError(f"--allowed-targets entry {entry!r} names no host or network")
        try:
            return cls(text, network=ipaddress.ip_network(where.strip("[]"), strict=False), port=port)
        except ValueError:
            pass
        pattern = where.lower().rstrip(".")
        labels = pattern.removeprefix("*.").split(".")
        if "*" in pattern.removeprefix("*.") or not all(_is_label(label) for label in labels):
            raise ValueError(
                f"--allowed-targets entry {entry!r} is neither an address, a network (10.0.0.0/8) "
                "nor a host name (prometheus.monitoring.svc, *.monitoring.svc), with an optional :PORT"
            )
        return cls(text, host=pattern, port=port)

    def covers_port(self, port: int) -> bool:
        return self.port is None or self.port == port

    def covers_address(self, ip: Address) -> bool:
        return self.network is not None and ip.version == self.network.version and ip in self.network

    def covers_host(self, host: str) -> bool:
        if self.host is None:
            return False
        name = host.lower().rstrip(".")
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return name == self.host


def _split_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # [::1]:9090, [fd00::/8]
        inside, _, rest = text[1:].partition("]")
        return inside, _port(text, rest.removeprefix(":")) if rest else None
    if text.count(":") == 1:
        where, _, port = text.partition(":")
        return where, _port(text, port)
    return text, None  # a name, an IPv4 network, or a bare IPv6 address or network


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"--allowed-targets entry {entry!r}: {text!r} is not a port (1-65535)")
    return int(text)


def _is_label(label: str) -> bool:
    return 0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()


@dataclass(frozen=True)
class TargetPolicy:
    allowed: tuple[AllowedTarget, ...] = ()  # empty: any target that is not refused by default
    api_server: tuple[str, int] | None = None  # (host, port) as the operator reaches it
    api_server_addresses: frozenset[str] = frozenset()

    @classmethod
    def parse(
        cls,
        entries: Iterable[str],
        api_server: tuple[str, int] | None = None,
        api_server_addresses: Iterable[str] = (),
    ) -> TargetPolicy:
        """From --allowed-targets values (each may hold several, comma-separated)."""
        parsed = tuple(
            AllowedTarget.parse(part) for entry in entries for part in entry.split(",") if part.strip()
        )
        addresses = frozenset(str(ip) for text in api_server_addresses if (ip := address(text)))
        return cls(parsed, api_server, addresses)

    def decide(self, host: str, port: int, addresses: Sequence[str]) -> str | None:
        """None when host:port (resolved to addresses) may be reached; otherwise why not."""
        target = f"{host}:{port}"
        ips = [ip for text in addresses if (ip := address(text)) is not None]
        if self._is_api_server(host, port, ips):
            return f"{target} is the Kubernetes API server, which checks may never query"
        if not ips:
            return f"{target}: no address to check"
        matching = [rule for rule in self.allowed if rule.covers_port(port)]
        by_host = any(rule.covers_host(host) for rule in matching)
        for ip in ips:
            by_address = any(rule.covers_address(ip) for rule in matching)
            if self.allowed and not (by_host or by_address):
                listed = ", ".join(rule.text for rule in self.allowed)
                return f"{target} ({ip}) is not in --allowed-targets ({listed})"
            why = special(ip)
            if why is not None and not by_address:
                return (
                    f"{target} resolves to {ip}, {why}; refused unless --allowed-targets names that "
                    "address or its network"
                )
        return None

    def _is_api_server(self, host: str, port: int, ips: list[Address]) -> bool:
        if self.api_server is None or port != self.api_server[1]:
            return False
        return host.lower() == self.api_server[0].lower() or any(
            str(ip) in self.api_server_addresses for ip in ips
        )
