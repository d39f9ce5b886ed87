"""A child made by a real ``os.fork()`` after the parent used a client: everything still works.

gunicorn with ``preload_app``, celery's prefork pool and ``multiprocessing`` with ``fork`` all
fork a process that may have used a client. Each test uses the client in the parent, forks with
some state in flight (a lock held by another thread, an idle DNS worker, a pooled connection),
runs calls in the child against loopback servers that live in the parent, and checks what the
child reports through a pipe and what the servers saw.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from resilient_kube import ApiClient, ClientFactory
from resilient_kube._dns import DnsCache
from resilient_kube.testing import FakeApiServer, FakeDnsServer, Stall, StatusFault
from tests.helpers.clock import FakeClock
from tests.helpers.forking import held, in_child

# Python 3.12+ warns when a process with threads forks; forking one is what these tests do.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

NAME = "api.kube.test"
DNS_TIMEOUT = 5.0


def test_child_dns_lookup_after_expiry_neither_waits_nor_skips_aaaa(tmp_path: Path) -> None:
    """Issue #22 item 1: the parent's idle DNS worker does not exist in the child.

    Before the fix, the child handed the AAAA query to the parent's pool, which never ran it:
    every lookup after the answer expired waited ``timeout + 1`` s, and AAAA was never asked
    again (its in-flight slot was never freed).
    """
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    clock = FakeClock()
    with FakeDnsServer({NAME: ["127.0.0.1", "::1"]}, ttl=30) as stub:
        cache = DnsCache(
            nameservers=[stub.nameserver],
            timeout=DNS_TIMEOUT,
            clock=clock,
            hosts_file=str(hosts),
        )
        try:
            assert cache.resolve(NAME) == ["::1", "127.0.0.1"]  # AAAA went to the worker pool
            assert (stub.queries_for("A"), stub.queries_for("AAAA")) == (1, 1)

            def child() -> dict[str, Any]:
                rounds = []
                for _ in range(2):
                    clock.now += 60  # past the TTL: both record types are looked up again
                    started = time.monotonic()
                    addresses = cache.resolve(NAME)
                    rounds.append({"addresses": addresses, "seconds": time.monotonic() - started})
                return {"rounds": rounds}

            result = in_child(child)
        finally:
            cache.close()
        for lookup in result["rounds"]:
            assert lookup["addresses"] == ["::1", "127.0.0.1"]
            # The stub answers in about a millisecond; the broken child waited timeout + 1 s.
            assert lookup["seconds"] < DNS_TIMEOUT
        # Both rounds asked for both types: AAAA was not left behind in a dead worker.
        assert (stub.queries_for("A"), stub.queries_for("AAAA")) == (3, 3)


def test_child_works_while_a_parent_thread_held_every_lock(server: FakeApiServer) -> None:
    """Locks held by another parent thread at the fork stay held in the child: reset them.

    The DNS cache (and its hosts file), the limiter, the retry budget, the counters (a retry
    takes their lock) and the event fan-out are each locked by a parent thread while it forks.
    The child resolves a name, takes a limiter token, gets a 503 and retries.
    """
    with FakeDnsServer({NAME: ["127.0.0.1"]}) as stub:
        configuration = server.configuration()
        configuration.host = f"http://{NAME}:{server.port}"
        with ApiClient(
            configuration, dns_nameservers=[stub.nameserver], backoff_base=0.01
        ) as api_client:
            core = client.CoreV1Api(api_client)
            core.list_namespace()
            server.inject(StatusFault(503, retry_after=0), verb="list", times=1)
            dns = api_client._dns
            assert dns is not None
            assert api_client._limiter is not None
            locks = (
                dns._lock,
                dns._hosts._lock,
                api_client._limiter._lock,
                api_client._budget._lock,
                api_client._counters._lock,
                api_client.events._lock,
            )

            def child() -> dict[str, Any]:
                names = [ns.metadata.name for ns in core.list_namespace().items]
                stats = api_client.stats()
                assert stats.limiter is not None
                api_client.subscribe(api_client.events.sinks[0])  # takes the fan-out's lock
                return {
                    "names": names,
                    "retries": stats.retry.retries_by_reason,
                    "admitted": stats.limiter.admitted,
                }

            with held(*locks):
                result = in_child(child)
    assert "default" in result["names"]
    assert result["retries"] == {"status_503": 1}
    assert result["admitted"] == 3  # the parent's call, then the child's two attempts


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_child_opens_its_own_connection_and_leaves_the_parents_alone(tls: bool) -> None:
    """The child must not send on the parent's pooled connection, nor end it (no close_notify)."""
    with FakeApiServer(tls=tls) as server, ApiClient(server.configuration()) as api_client:
        core = client.CoreV1Api(api_client)
        core.list_namespace()
        assert server.stats().connections == 1

        def child() -> dict[str, Any]:
            core.list_namespace()
            core.list_namespace()
            transport = api_client.stats().transport
            return {"opened": transport.connections_opened, "reused": transport.connections_reused}

        result = in_child(child)
        # The child's own connection: one opened (the parent's count was 1), then reused.
        assert result == {"opened": 2, "reused": 1}
        assert server.stats().connections == 2
        before = api_client.stats().transport
        core.list_namespace()  # the parent's pooled connection still works as it was
        after = api_client.stats().transport
        assert server.stats().connections == 2
        assert after.connections_reused == before.connections_reused + 1
        assert after.connections_opened == before.connections_opened == 1


def test_child_watchdog_keeps_time(server: FakeApiServer) -> None:
    """The watchdog thread does not survive a fork: the child's attempts still time out."""
    with ApiClient(server.configuration(), read_timeout=0.3, backoff_base=0.01) as api_client:
        core = client.CoreV1Api(api_client)
        core.list_namespace()  # the parent's watchdog thread runs
        server.inject(Stall(), verb="list", times=1)

        def child() -> dict[str, Any]:
            names = [ns.metadata.name for ns in core.list_namespace().items]
            return {"names": names, "retries": api_client.stats().retry.retries_by_reason}

        result = in_child(child)
    # The stalled attempt was cut by the child's own watchdog and the GET sent again.
    assert "default" in result["names"]
    assert result["retries"] == {"read_timeout": 1}


def test_child_async_req_gets_its_own_thread_pool(server: FakeApiServer) -> None:
    """``async_req=True`` uses the official client's thread pool, whose workers stay behind."""
    with ApiClient(server.configuration()) as api_client:
        core = client.CoreV1Api(api_client)
        core.list_namespace(async_req=True).get(timeout=10)

        def child() -> list[str]:
            result = core.list_namespace(async_req=True).get(timeout=10)
            return [ns.metadata.name for ns in result.items]

        assert "default" in in_child(child)


def test_child_factory_lock_held_at_fork(server: FakeApiServer) -> None:
    """``ClientFactory`` holds its lock while it builds API objects (discovery, for dynamic)."""
    with ClientFactory(server.configuration()) as factory:
        with held(factory._lock):
            names = in_child(
                lambda: [ns.metadata.name for ns in factory.core_v1().list_namespace().items]
            )
        assert "default" in names
