"""DNS faults in real time against the dnspython stub on 127.0.0.1: delay, dropped queries, SERVFAIL.

These run on the real monotonic clock to check that lookups are bounded by ``timeout`` and that a
cached or stale answer never waits on a slow or dead resolver.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from resilient_kube._dns import DnsCache
from resilient_kube.testing import FakeDnsServer
from tests.helpers.clock import FakeClock

HOST = "api.kube.test"


@pytest.fixture
def stub() -> Iterator[FakeDnsServer]:
    with FakeDnsServer({HOST: ["127.0.0.1"]}, ttl=60) as server:
        yield server


def make_cache(
    stub: FakeDnsServer, *, timeout: float, clock: Callable[[], float] = time.monotonic
) -> DnsCache:
    return DnsCache(
        nameservers=[stub.nameserver], timeout=timeout, clock=clock, hosts_file="/nonexistent"
    )


def test_slow_resolver_within_timeout_answers(stub: FakeDnsServer) -> None:
    stub.delay = 0.3
    cache = make_cache(stub, timeout=2.0)
    try:
        started = time.monotonic()
        assert cache.resolve(HOST) == ["127.0.0.1"]
        elapsed = time.monotonic() - started
        # A and AAAA in parallel: one delay, not two.
        assert 0.3 <= elapsed < 0.55
        assert cache.stats().lookup_seconds >= 0.6
        started = time.monotonic()
        cache.resolve(HOST)
        assert time.monotonic() - started < 0.01  # cached: the delay is gone
    finally:
        cache.close()


def test_dropped_queries_fail_within_the_timeout(stub: FakeDnsServer) -> None:
    stub.drop = True
    cache = make_cache(stub, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(socket.gaierror) as info:
            cache.resolve(HOST)
        elapsed = time.monotonic() - started
        assert info.value.errno == socket.EAI_AGAIN
        assert 0.45 <= elapsed < 1.0
        assert cache.stats().failures == 2
        # Negative caching: the next call fails at once instead of waiting again.
        started = time.monotonic()
        with pytest.raises(socket.gaierror):
            cache.resolve(HOST)
        assert time.monotonic() - started < 0.05
    finally:
        cache.close()


@pytest.mark.parametrize("fault", ["drop", "delay", "servfail"])
def test_stale_answer_survives_resolver_faults(stub: FakeDnsServer, fault: str) -> None:
    clock = FakeClock()
    cache = make_cache(stub, timeout=0.4, clock=clock)
    try:
        assert cache.resolve(HOST) == ["127.0.0.1"]
        if fault == "drop":
            stub.drop = True
        elif fault == "delay":
            stub.delay = 1.0  # longer than the timeout
        else:
            stub.servfail = True
        clock.now += 61
        started = time.monotonic()
        assert cache.resolve(HOST) == ["127.0.0.1"]  # the first failure waits at most `timeout`
        assert time.monotonic() - started < 0.8
        started = time.monotonic()
        for _ in range(100):
            assert cache.resolve(HOST) == ["127.0.0.1"]
        assert time.monotonic() - started < 0.05  # then stale answers come without waiting
        stats = cache.stats()
        assert stats.stale_served == 101
        assert stats.failures == 2
    finally:
        cache.close()


def test_servfail_fails_fast(stub: FakeDnsServer) -> None:
    stub.servfail = True
    cache = make_cache(stub, timeout=2.0)
    try:
        started = time.monotonic()
        with pytest.raises(socket.gaierror) as info:
            cache.resolve(HOST)
        assert info.value.errno == socket.EAI_AGAIN
        assert time.monotonic() - started < 0.5
    finally:
        cache.close()


def test_second_nameserver_answers_when_the_first_is_dead(stub: FakeDnsServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))  # bound, never read: queries to it are silently lost
        cache = DnsCache(
            nameservers=[f"127.0.0.1:{dead.getsockname()[1]}", stub.nameserver],
            timeout=1.0,
            hosts_file="/nonexistent",
        )
        try:
            assert cache.resolve(HOST) == ["127.0.0.1"]
            assert cache.stats().queries >= 3
        finally:
            cache.close()
