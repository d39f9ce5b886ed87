"""The DNS cache in the client's connection path, against dnsmasq on loopback (issue: DNS cache)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import urllib3
from kubernetes import client

from resilient_kube import ApiClient, DnsStats, TLSError
from resilient_kube.testing import FakeApiServer
from tests.helpers.clock import FakeClock
from tests.helpers.dnsmasq import Dnsmasq, dnsmasq_available

pytestmark = pytest.mark.skipif(not dnsmasq_available(), reason="needs dnsmasq (dnsmasq-base)")

NAME = "api.kube.test"
TTL = 2


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` with a bound; for work another thread finishes."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        tick.wait(0.01)
    return condition()


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, ttl=TTL)
    server.set_hosts({NAME: ["127.0.0.1"]}, wait=False)
    with server:
        yield server


def dns_stats(api_client: ApiClient) -> DnsStats:
    stats = api_client.stats().dns
    assert stats is not None
    return stats


def named_configuration(server: FakeApiServer, scheme: str = "http") -> client.Configuration:
    configuration = server.configuration()
    configuration.host = f"{scheme}://{NAME}:{server.port}"
    return configuration


def test_tls_to_a_name_served_by_the_test_dns_server(dnsmasq: Dnsmasq) -> None:
    with FakeApiServer(tls=True, tls_names=[NAME]) as server:
        api_client = ApiClient(
            named_configuration(server, "https"), dns_nameservers=[dnsmasq.nameserver]
        )
        v1 = client.CoreV1Api(api_client)
        before = dnsmasq.queries()
        for _ in range(3):
            v1.list_namespace()
        assert dns_stats(api_client).misses == 1  # one lookup for the first connection
        assert dnsmasq.queries() - before == 2  # A and AAAA, once each
        api_client.close()


def test_tls_still_verifies_the_name_not_the_address(dnsmasq: Dnsmasq) -> None:
    # The certificate names only 127.0.0.1 and localhost: connecting by api.kube.test must fail.
    with FakeApiServer(tls=True) as server:
        api_client = ApiClient(
            named_configuration(server, "https"),
            dns_nameservers=[dnsmasq.nameserver],
            max_attempts=2,
        )
        with pytest.raises(TLSError) as caught:
            client.CoreV1Api(api_client).list_namespace()
        assert "certificate" in str(caught.value).lower()
        assert caught.value.attempts == 1  # a certificate that does not verify is not retried
        # Code written for the stock client (urllib3 retries on) catches MaxRetryError.
        assert isinstance(caught.value, urllib3.exceptions.MaxRetryError)
        assert isinstance(caught.value.reason, urllib3.exceptions.SSLError)
        assert server.stats().requests == 0
        api_client.close()


def test_traffic_follows_an_answer_change(dnsmasq: Dnsmasq) -> None:
    clock = FakeClock()
    with FakeApiServer() as old, FakeApiServer(host="127.0.0.2", port=old.port) as new:
        api_client = ApiClient(
            named_configuration(old),
            dns_nameservers=[dnsmasq.nameserver],
            dns_min_ttl=1,
            clock=clock,
        )
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()
        assert old.request_count() == 1
        dnsmasq.set_hosts({NAME: ["127.0.0.2"]})
        clock.now += TTL + 1  # the answer is due for its refresh
        looked_up = dns_stats(api_client).lookup_seconds
        v1.list_namespace()  # still on the pooled connection; starts the refresh
        # The refresh runs in the background; its answer is stored with its timing.
        assert wait_until(lambda: dns_stats(api_client).lookup_seconds > looked_up)
        v1.list_namespace()  # the old address left the answer: retired, reconnected
        assert new.request_count() == 1
        assert api_client.stats().transport.connections_retired == 1
        api_client.close()


def test_calls_keep_working_on_stale_answers_when_dns_is_down(dnsmasq: Dnsmasq) -> None:
    clock = FakeClock()
    with FakeApiServer() as server:
        api_client = ApiClient(
            named_configuration(server),
            dns_nameservers=[dnsmasq.nameserver],
            dns_timeout=0.5,
            pool_idle_timeout=None,
            clock=clock,
        )
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()
        dnsmasq.stop()
        clock.now += 3600  # long expired
        api_client.rest_client.pool_manager.clear()  # force a new connection, so a resolve
        for _ in range(3):
            v1.list_namespace()
        stats = api_client.stats().dns
        assert stats is not None
        assert stats.stale_served >= 1
        assert server.request_count() == 4
        api_client.close()


def test_dns_cache_off_uses_the_system_resolver(dnsmasq: Dnsmasq) -> None:
    with FakeApiServer() as server:
        api_client = ApiClient(server.configuration(), dns_cache=False)
        client.CoreV1Api(api_client).list_namespace()
        assert api_client.stats().dns is None
        api_client.close()
