"""Several API servers behind one client, on loopback (issue 20)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client, watch

from resilient_kube import ApiClient, TLSError
from resilient_kube.testing import FakeApiServer, ResetConnection, StatusFault


@pytest.fixture
def servers() -> Iterator[list[FakeApiServer]]:
    started = [FakeApiServer().start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        threading.Event().wait(0.01)
    return False


def endpoints_client(servers: list[FakeApiServer], **tuning: Any) -> ApiClient:
    # The configured host is the first server; its identity (credentials) goes to all three.
    return ApiClient(
        servers[0].configuration(), endpoints=[server.url for server in servers], **tuning
    )


def test_calls_spread_over_every_endpoint(servers: list[FakeApiServer]) -> None:
    api_client = endpoints_client(servers)
    v1 = client.CoreV1Api(api_client)
    for _ in range(9):
        v1.list_namespace()
    assert [server.request_count("list") for server in servers] == [3, 3, 3]
    assert [e.attempts for e in api_client.stats().endpoints] == [3, 3, 3]
    api_client.close()


def test_a_retry_goes_to_another_endpoint(servers: list[FakeApiServer]) -> None:
    api_client = endpoints_client(servers, backoff_base=0.001)
    v1 = client.CoreV1Api(api_client)
    for server in servers[:2]:  # (the health checks' /readyz is a "get" too: not these)
        server.inject(ResetConnection(), verb="get", path="/namespaces/", times=1)
    # The first two servers reset the GET: the call fails on one, retries on the other, which
    # also resets, and gets its answer from the third: never twice on the same server.
    with pytest.raises(client.ApiException):  # the namespace does not exist: a 404 answer
        v1.read_namespace("nowhere")
    assert [server.request_count("get", path="/namespaces/") for server in servers] == [1, 1, 1]
    api_client.close()


def test_a_dead_endpoint_costs_no_call_and_is_ejected_then_readmitted(
    servers: list[FakeApiServer],
) -> None:
    api_client = endpoints_client(servers, health_interval=0.1, health_timeout=0.5)
    v1 = client.CoreV1Api(api_client)
    servers[1].stop()
    failures = 0
    with ThreadPoolExecutor(8) as pool:
        for outcome in pool.map(lambda _: v1.list_namespace(), range(200)):
            failures += outcome is None
    assert failures == 0
    assert api_client.stats().transport.failures == 0
    assert wait_for(lambda: api_client.stats().endpoints[1].state == "ejected", 5)
    assert api_client.stats().endpoints[1].ejections >= 1
    api_client.close()


def test_a_watch_moves_off_an_ejected_endpoint(servers: list[FakeApiServer]) -> None:
    api_client = endpoints_client(servers, health_interval=0.1, health_timeout=0.5)
    v1 = client.CoreV1Api(api_client)
    stream = watch.Watch().stream(
        v1.list_namespaced_config_map, "default", timeout_seconds=30, _request_timeout=60
    )
    carrier: list[FakeApiServer] = []

    def on_watch() -> bool:
        carrier[:] = [server for server in servers if server.request_count("watch")]
        return bool(carrier)

    ended: list[BaseException | None] = []

    def read() -> None:
        try:
            next(stream, None)
            ended.append(None)
        except Exception as exc:  # the stock Watch does not resume: the cut reaches it
            ended.append(exc)

    opened = threading.Thread(target=read, daemon=True)
    opened.start()
    assert wait_for(on_watch, 5)
    # The carrier stays up, but its /readyz fails from now on: ejected, and its stream is cut.
    carrier[0].inject(StatusFault(500), path="^/readyz$", times=None)
    opened.join(timeout=10)
    assert not opened.is_alive()  # the stream ended instead of hanging on a dead server
    assert len(ended) == 1  # (resilient_kube.Watch re-opens it on a healthy endpoint)
    api_client.close()


def test_tls_verifies_the_configured_name_on_every_endpoint() -> None:
    with FakeApiServer(tls=True) as server:
        good = server.configuration()
        good.host = f"https://localhost:{server.port}"  # in the certificate
        api_client = ApiClient(good, endpoints=[f"https://127.0.0.1:{server.port}"])
        client.CoreV1Api(api_client).list_namespace()
        api_client.close()
        bad = server.configuration()
        bad.host = f"https://kubernetes.invalid:{server.port}"  # never resolved, not in the cert
        api_client = ApiClient(bad, endpoints=[f"https://127.0.0.1:{server.port}"], max_attempts=1)
        with pytest.raises(TLSError):
            client.CoreV1Api(api_client).list_namespace()
        api_client.close()
