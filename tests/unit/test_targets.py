"""Where checks may connect: the decision on host, port and resolved addresses (no traffic sent)."""

from __future__ import annotations

import pytest

from flagops.reconcile.targets import AllowedTarget, TargetPolicy

API = ("10.96.0.1", 443)


def default() -> TargetPolicy:
    return TargetPolicy.parse([], api_server=API, api_server_addresses=["10.96.0.1"])


@pytest.mark.parametrize(
    ("host", "addresses", "why"),
    [
        ("169.254.169.254", ["169.254.169.254"], "link-local"),
        ("metadata.google.internal", ["169.254.169.254"], "link-local"),
        ("[fe80::1]", ["fe80::1"], "link-local"),
        ("::ffff:169.254.169.254", ["::ffff:169.254.169.254"], "link-local"),
        ("127.0.0.1", ["127.0.0.1"], "loopback"),
        ("localhost", ["127.0.0.1", "::1"], "loopback"),
        ("0.0.0.0", ["0.0.0.0"], "unspecified"),
    ],
)
def test_metadata_loopback_and_unspecified_addresses_are_refused_by_default(
    host: str, addresses: list[str], why: str
) -> None:
    refusal = default().decide(host, 80, addresses)
    assert refusal is not None and why in refusal and "--allowed-targets" in refusal


def test_the_api_server_is_refused_by_name_or_address_even_when_allowed() -> None:
    policy = TargetPolicy.parse(["10.0.0.0/8"], api_server=API, api_server_addresses=["10.96.0.1"])
    for host in ("10.96.0.1", "kubernetes.default.svc"):
        refusal = policy.decide(host, 443, ["10.96.0.1"])
        assert refusal is not None and "Kubernetes API server" in refusal
    assert policy.decide("10.96.0.1", 8080, ["10.96.0.1"]) is None  # another port of that host


def test_ordinary_cluster_addresses_pass_by_default() -> None:
    assert default().decide("prometheus.monitoring.svc", 9090, ["10.0.12.7"]) is None
    assert default().decide("api.example.org", 443, ["203.0.113.9"]) is None


def test_a_name_with_any_refused_address_is_refused() -> None:
    refusal = default().decide("rebind.example.org", 80, ["203.0.113.9", "169.254.169.254"])
    assert refusal is not None and "169.254.169.254" in refusal


def test_an_allow_list_admits_only_what_it_names() -> None:
    policy = TargetPolicy.parse(["*.monitoring.svc:9090,10.1.0.0/16", "butler.epic21.svc"])
    assert policy.decide("prometheus.monitoring.svc", 9090, ["10.0.12.7"]) is None
    assert policy.decide("butler.epic21.svc", 8080, ["10.0.3.3"]) is None
    assert policy.decide("anything", 80, ["10.1.2.3"]) is None
    refused = policy.decide("prometheus.monitoring.svc", 9091, ["10.0.12.7"])
    assert refused is not None and "not in --allowed-targets" in refused
    assert policy.decide("evil.example.org", 80, ["203.0.113.9"]) is not None
    # A host pattern never admits a refused-by-default address the name resolves to.
    assert policy.decide("x.monitoring.svc", 9090, ["169.254.169.254"]) is not None


def test_loopback_is_allowed_only_when_named_by_address_and_port() -> None:
    policy = TargetPolicy.parse(["127.0.0.1:8080"])
    assert policy.decide("127.0.0.1", 8080, ["127.0.0.1"]) is None
    refused = policy.decide("127.0.0.1", 8081, ["127.0.0.1"])
    assert refused is not None and "not in --allowed-targets (127.0.0.1:8080)" in refused
    # Allowed by name is not enough for a loopback address: only by address or network.
    refused = TargetPolicy.parse(["localhost"]).decide("localhost", 80, ["127.0.0.1"])
    assert refused is not None and "loopback" in refused
    assert TargetPolicy.parse(["[::1]:9090"]).decide("::1", 9090, ["::1"]) is None


@pytest.mark.parametrize("entry", ["", ":80", "host:http", "10.0.0.0/8:99999", "bad host", "a.*.b"])
def test_bad_entries_say_what_is_wrong(entry: str) -> None:
    with pytest.raises(ValueError, match="--allowed-targets entry"):
        AllowedTarget.parse(entry)


def test_no_address_is_no_target() -> None:
    refusal = default().decide("nowhere", 80, [])
    assert refusal is not None and "no address" in refusal
