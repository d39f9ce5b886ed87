"""Name resolution inside the connect timeout and the deadline (issue #22 item 7).

The DNS stub (``FakeDnsServer``, UDP on 127.0.0.1) answers 1.5 s late. Before the fix the lookup
ran before the dial's clock started and took its full time whatever the attempt had left: 1.5 s
with ``connect_timeout=0.3``, and 2.1 s for a call with ``deadline=1``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from resilient_kube import ApiClient, ConnectTimeout, DeadlineExceeded, TimeoutException
from resilient_kube._dns import DnsCache, LookupTimeout
from resilient_kube.testing import FakeApiServer, FakeDnsServer
from tests.helpers.clock import FakeClock
from tests.helpers.loopback import Relay

HOST = "api.kube.test"
SLOW = 1.5


@pytest.fixture
def stub() -> Iterator[FakeDnsServer]:
    with FakeDnsServer({HOST: ["127.0.0.1"]}, ttl=60) as server:
        yield server


def make_cache(stub: FakeDnsServer, clock: FakeClock | None = None) -> DnsCache:
    return DnsCache(
        nameservers=[stub.nameserver],
        timeout=8.0,
        clock=clock or time.monotonic,
        hosts_file="/nonexistent",
    )


def test_a_lookup_waits_only_for_its_callers_time_and_the_answer_is_kept(
    stub: FakeDnsServer,
) -> None:
    stub.delay = SLOW
    cache = make_cache(stub)
    try:
        started = time.monotonic()
        with pytest.raises(LookupTimeout, match=r"did not finish within 0\.3 s"):
            cache.resolve(HOST, timeout=0.3)
        assert time.monotonic() - started < SLOW  # did not wait for the answer
        # The lookup went on in the background: the next caller joins it (no second query)
        # and gets its answer.
        assert cache.resolve(HOST) == ["127.0.0.1"]
        assert stub.queries_for("A") == 1
        assert cache.stats().failures == 0
    finally:
        cache.close()


def test_an_expired_answer_is_served_when_the_callers_time_runs_out(
    stub: FakeDnsServer,
) -> None:
    clock = FakeClock()
    cache = make_cache(stub, clock)
    try:
        assert cache.resolve(HOST) == ["127.0.0.1"]
        stub.set(HOST, "127.0.0.2")
        stub.delay = SLOW
        clock.now += 120  # the answer (TTL 60) expired; the resolver is slow
        started = time.monotonic()
        assert cache.resolve(HOST, timeout=0.3) == ["127.0.0.1"]  # RFC 8767 §5
        assert time.monotonic() - started < SLOW
        assert cache.stats().stale_served == 1
        assert cache.resolve(HOST) == ["127.0.0.2"]  # joins the lookup, which then answers
    finally:
        cache.close()


def test_a_closed_cache_looks_up_within_the_callers_time_and_caches_no_failure(
    stub: FakeDnsServer,
) -> None:
    cache = make_cache(stub)
    cache.close()  # no background pool: the caller looks up itself
    stub.delay = SLOW
    started = time.monotonic()
    with pytest.raises(LookupTimeout):
        cache.resolve(HOST, timeout=0.3)
    assert time.monotonic() - started < SLOW
    stub.delay = 0.0
    # Running out of the caller's time said nothing about the resolver: no failure cached.
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert cache.stats().failures == 0


def configuration(server: FakeApiServer) -> client.Configuration:
    """The server's configuration with its address replaced by the stub's name for it.

    One call by address first: kubernetes 37 builds each API method's validators on its first
    call (a second or more here), which must not count as time spent on DNS.
    """
    with ApiClient(server.configuration()) as warm:
        client.CoreV1Api(warm).list_namespace()
    server.reset_stats()
    config = server.configuration()
    config.host = f"http://{HOST}:{server.port}"
    return config


def test_connect_timeout_bounds_the_lookup(server: FakeApiServer, stub: FakeDnsServer) -> None:
    """``connect_timeout=0.3`` and a 1.5 s resolver: a connect timeout after about 0.3 s.

    A ``ConnectTimeout``, not a ``NameResolutionError``: the resolver has not failed (its answer
    comes later and is kept for the next attempt); the attempt's connect time ran out while the
    name was being looked up, and nothing was sent, so every verb may be retried.
    """
    stub.delay = SLOW
    with ApiClient(
        configuration(server),
        connect_timeout=0.3,
        max_attempts=1,
        dns_nameservers=[stub.nameserver],
        dns_timeout=8,
    ) as api_client:
        started = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            client.CoreV1Api(api_client).list_namespace()
        assert time.monotonic() - started < SLOW
    assert f"Resolving {HOST} timed out. (connect timeout=0.3)" in str(info.value)
    assert server.stats().requests == 0


def test_a_retry_uses_the_answer_the_first_attempt_started(
    server: FakeApiServer, stub: FakeDnsServer
) -> None:
    stub.delay = 1.0
    with ApiClient(
        configuration(server), connect_timeout=0.3, dns_nameservers=[stub.nameserver]
    ) as api_client:
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": "made"}})
        retries = api_client.stats().retry.retries_by_reason
    assert retries.get("connect_timeout", 0) >= 1
    assert stub.queries_for("A") == 1  # one lookup, shared by every attempt


def test_deadline_bounds_the_lookup(server: FakeApiServer, stub: FakeDnsServer) -> None:
    """``deadline=1`` and a 1.5 s resolver (``dns_timeout=8``): the call ends after about 1 s."""
    stub.delay = SLOW
    with ApiClient(
        configuration(server), deadline=1, dns_nameservers=[stub.nameserver], dns_timeout=8
    ) as api_client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=f"Resolving {HOST} timed out"):
            client.CoreV1Api(api_client).list_namespace()
        assert time.monotonic() - started < SLOW


def test_the_tls_handshake_gets_only_what_the_lookup_left(
    server: FakeApiServer, stub: FakeDnsServer, relays: list[Relay]
) -> None:
    """DNS 0.8 s, then a server that never answers the TLS handshake, ``connect_timeout=1``.

    The socket kept the full connect timeout for the handshake: 0.8 + 1 s. Now the lookup, the
    TCP connect and the handshake share one second.
    """
    stub.delay = 0.8

    def never_answer(conn: socket.socket) -> None:
        while conn.recv(65536):
            pass

    relay = Relay(never_answer)
    relays.append(relay)
    config = configuration(server)
    config.host = f"https://{HOST}:{relay.port}"
    with ApiClient(
        config, connect_timeout=1, max_attempts=1, dns_nameservers=[stub.nameserver]
    ) as api_client:
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            client.CoreV1Api(api_client).list_namespace()
        assert time.monotonic() - started < 1.5
