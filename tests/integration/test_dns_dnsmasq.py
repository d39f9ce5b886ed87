"""The DNS cache against a real dnsmasq on 127.0.0.1: TTLs, a changed answer and an outage.

Time in the cache is a fake clock, so the record TTL dnsmasq sends (``--local-ttl``) is what decides
expiry, without waiting for it in real time. Answers change by renaming a file into ``--hostsdir``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilient_kube._dns import DnsCache
from tests.helpers.clock import FakeClock
from tests.helpers.dnsmasq import DNSMASQ, Dnsmasq, dnsmasq_available

pytestmark = [
    pytest.mark.dnsmasq,
    pytest.mark.skipif(not dnsmasq_available(), reason=f"dnsmasq not installed at {DNSMASQ}"),
]

HOST = "api.kube.test"
TTL = 7


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, ttl=TTL)
    server.set_hosts({HOST: ["127.0.0.1"]}, wait=False)
    with server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(dnsmasq: Dnsmasq, clock: FakeClock) -> Iterator[DnsCache]:
    dns_cache = DnsCache(
        nameservers=[dnsmasq.nameserver],
        min_ttl=1.0,
        timeout=1.0,
        clock=clock,
        hosts_file="/nonexistent",
    )
    yield dns_cache
    dns_cache.close()


def test_record_ttl_is_honoured(cache: DnsCache, clock: FakeClock) -> None:
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert cache.stats().queries == 2  # A, and AAAA (NODATA)
    clock.set(TTL * 0.8)  # below the refresh point: a hit
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert cache.stats().queries == 2
    cache.close()  # keep background refresh out of the count below
    clock.set(TTL)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    stats = cache.stats()
    # dnsmasq's NODATA carries no SOA: AAAA is cached 300 s (dnspython's default), A for 7 s.
    assert (stats.queries, stats.hits, stats.misses) == (3, 1, 2)


def test_address_change_retires_the_old_address(
    cache: DnsCache, clock: FakeClock, dnsmasq: Dnsmasq
) -> None:
    assert cache.resolve(HOST) == ["127.0.0.1"]
    dnsmasq.set_hosts({HOST: ["127.0.0.9", "::1"]})
    clock.set(1)  # still within the TTL: the cached answer stands
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert cache.is_current(HOST, "127.0.0.1")
    clock.set(TTL)
    assert cache.resolve(HOST) == ["127.0.0.9"]  # AAAA's NODATA is still cached
    assert not cache.is_current(HOST, "127.0.0.1")
    assert cache.is_current(HOST, "127.0.0.9")


def test_outage_keeps_answering_stale(cache: DnsCache, clock: FakeClock, dnsmasq: Dnsmasq) -> None:
    assert cache.resolve(HOST) == ["127.0.0.1"]
    dnsmasq.kill()
    clock.set(TTL + 1)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    stats = cache.stats()
    assert stats.stale_served == 1
    assert stats.failures == 1  # A; AAAA's NODATA had not expired
    clock.set(3600)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert cache.is_current(HOST, "127.0.0.1")


def test_unknown_name_is_nxdomain(cache: DnsCache) -> None:
    with pytest.raises(socket.gaierror) as info:
        cache.resolve("missing.kube.test")
    assert info.value.errno == socket.EAI_NONAME


def test_queries_seen_by_dnsmasq_match_the_cache_count(
    dnsmasq: Dnsmasq, cache: DnsCache, clock: FakeClock
) -> None:
    before = dnsmasq.queries()
    for _ in range(1000):
        cache.resolve(HOST)
    assert cache.stats().queries == 2
    assert dnsmasq.wait_for_queries(before + 2)
    assert dnsmasq.queries() - before == 2
