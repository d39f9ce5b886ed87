"""The client-side limiter and the DNS cache in front of the real server.

The server is reached by name: dnsmasq on 127.0.0.1 answers ``api.kube.test`` with 127.0.0.1
(the serving certificate carries that name), and ``dns_nameservers`` points the client at it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import resilient_kube

from ..helpers.dnsmasq import Dnsmasq
from .cluster import DNS_NAME, ApiServer

pytestmark = [pytest.mark.e2e, pytest.mark.dnsmasq]


@pytest.fixture
def named_kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    return apiserver.write_kubeconfig(
        tmp_path / "named.kubeconfig", server=f"https://{DNS_NAME}:{apiserver.port}"
    )


def test_dns_cache_resolves_through_dnsmasq(dnsmasq: Dnsmasq, named_kubeconfig: Path) -> None:
    logged_before = dnsmasq.queries()
    with resilient_kube.ClientFactory(
        kubeconfig=named_kubeconfig, dns_nameservers=[dnsmasq.nameserver]
    ) as kube:
        core = kube.core_v1()
        assert core.list_namespace().items  # the first connection asks dnsmasq
        first = kube.stats().dns
        # Eight threads make the pool open more connections; each one resolves the name again.
        with ThreadPoolExecutor(8) as pool:
            for namespaces in pool.map(lambda _: core.list_namespace(), range(40)):
                assert namespaces.items
        stats = kube.stats()

    assert first is not None
    assert (first.misses, first.hits) == (1, 0)
    assert stats.transport.failures == 0
    assert stats.dns is not None
    assert stats.dns.failures == 0
    # Every new connection resolved the name; after the first, the cache answered (the TTL
    # is 5 s; a refresh ahead of expiry would add a query but no miss).
    opened = stats.transport.connections_opened
    assert opened > 1
    assert stats.dns.hits + stats.dns.misses == opened
    assert stats.dns.hits >= opened - 2
    # dnsmasq saw exactly what the cache sent (A and AAAA), far less than one per connection.
    logged = dnsmasq.queries() - logged_before
    assert logged == stats.dns.queries <= 4


def test_unknown_name_is_a_name_resolution_error(
    apiserver: ApiServer, dnsmasq: Dnsmasq, tmp_path: Path
) -> None:
    missing = "missing.kube.test"
    kubeconfig = apiserver.write_kubeconfig(
        tmp_path / "missing.kubeconfig", server=f"https://{missing}:{apiserver.port}"
    )
    logged_before = dnsmasq.queries()
    start = time.monotonic()
    with resilient_kube.ClientFactory(
        kubeconfig=kubeconfig, dns_nameservers=[dnsmasq.nameserver]
    ) as kube:
        with pytest.raises(resilient_kube.errors.NameResolutionError) as excinfo:
            kube.core_v1().list_namespace()
        stats = kube.stats()
    assert excinfo.value.host == missing
    assert stats.transport.connections_opened == 0
    assert stats.dns is not None
    assert stats.dns.failures >= 1
    assert dnsmasq.queries() - logged_before == stats.dns.queries >= 1
    assert time.monotonic() - start < 10


def test_limiter_paces_calls(dnsmasq: Dnsmasq, named_kubeconfig: Path) -> None:
    qps, burst, calls = 10.0, 5, 25
    with resilient_kube.ClientFactory(
        kubeconfig=named_kubeconfig,
        dns_nameservers=[dnsmasq.nameserver],
        qps=qps,
        burst=burst,
    ) as kube:
        core = kube.core_v1()
        start = time.monotonic()
        for _ in range(calls):
            core.list_namespace()
        elapsed = time.monotonic() - start
        stats = kube.stats()

    # The bucket starts full: `burst` calls go at once, the rest at `qps` per second.
    expected = (calls - burst) / qps
    assert expected - 0.05 <= elapsed < expected + 3.0
    assert stats.limiter is not None
    assert stats.limiter.admitted == calls
    assert stats.limiter.waited >= calls - burst - 1
    assert stats.limiter.wait_seconds == pytest.approx(expected, abs=0.5)
    assert stats.limiter.throttled == 0
