"""Split timeouts, the whole-call deadline, watches, keepalive and the pool (issue: drop-in core)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
from kubernetes import client, watch

from resilient_kube import (
    ApiClient,
    ConnectTimeout,
    DeadlineExceeded,
    ReadTimeout,
    TimeoutException,
)
from resilient_kube._policy import WATCH_READ_MARGIN
from resilient_kube.testing import Delay, FakeApiServer, FullAcceptQueueListener, SilentWatch, Stall
from tests.helpers.clock import FakeClock
from tests.helpers.loopback import Relay, elapsed, raw_server

from .conftest import configmap


def stock_hangs(call: Callable[[], object], seconds: float) -> bool:
    """Run ``call`` in a thread; True if it is still blocked after ``seconds``."""
    done = threading.Event()

    def run() -> None:
        try:
            call()
        except Exception:
            pass
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return not done.wait(seconds)


def test_silent_server_fails_within_the_deadline_while_stock_hangs(server: FakeApiServer) -> None:
    server.inject(Stall(), verb="get", times=None)
    stock = client.CoreV1Api(client.ApiClient(server.configuration()))
    assert stock_hangs(lambda: stock.read_namespace("default"), 4.0)

    api_client = ApiClient(server.configuration(), read_timeout=1, deadline=3)
    took, error = elapsed(lambda: client.CoreV1Api(api_client).read_namespace("default"))
    assert isinstance(error, DeadlineExceeded)
    assert took < 3.5
    assert error.attempts >= 2  # read timeouts of a GET are retried
    assert server.request_count("get") == 1 + error.attempts
    api_client.close()


def test_full_accept_queue_fails_within_the_deadline_while_stock_hangs() -> None:
    with FullAcceptQueueListener() as listener:
        configuration = client.Configuration(host=listener.url)
        stock = client.CoreV1Api(client.ApiClient(configuration))
        assert stock_hangs(lambda: stock.read_namespace("default"), 4.0)

        api_client = ApiClient(configuration, connect_timeout=1, deadline=3)
        took, error = elapsed(lambda: client.CoreV1Api(api_client).read_namespace("default"))
        assert isinstance(error, (DeadlineExceeded, ConnectTimeout))
        assert 2.5 < took < 3.5
        api_client.close()


def test_connect_timeout_is_named_as_such() -> None:
    with FullAcceptQueueListener() as listener:
        api_client = ApiClient(
            client.Configuration(host=listener.url), connect_timeout=0.3, max_attempts=2
        )
        took, error = elapsed(lambda: client.CoreV1Api(api_client).read_namespace("default"))
        assert isinstance(error, ConnectTimeout)
        assert "connect timeout" in str(error)
        assert error.attempts == 2
        assert took < 1.5
        api_client.close()


def test_read_timeout_is_named_and_counted(server: FakeApiServer) -> None:
    server.inject(Delay(5), verb="get", times=None)
    api_client = ApiClient(server.configuration(), read_timeout=0.3, max_attempts=3)
    took, error = elapsed(lambda: client.CoreV1Api(api_client).read_namespace("default"))
    assert isinstance(error, ReadTimeout)
    assert "read timeout" in str(error)
    assert server.request_count("get") == 3
    assert api_client.stats().retry.retries_by_reason == {"read_timeout": 2}
    assert took < 3.0
    api_client.close()


def test_request_timeout_pair_replaces_connect_and_read(server: FakeApiServer) -> None:
    server.inject(Delay(2), verb="get", times=1)
    api_client = ApiClient(server.configuration(), read_timeout=10)
    v1 = client.CoreV1Api(api_client)
    # A 0.5 s read timeout fails the delayed first attempt; the retry succeeds.
    took, error = elapsed(lambda: v1.read_namespace("default", _request_timeout=(1, 0.5)))
    assert error is None
    assert server.request_count("get") == 2
    assert took < 2.0
    api_client.close()


def test_request_timeout_number_never_stretches_the_deadline(server: FakeApiServer) -> None:
    server.inject(Stall(), verb="get", times=None)
    api_client = ApiClient(server.configuration(), read_timeout=30, deadline=60)
    took, error = elapsed(
        lambda: client.CoreV1Api(api_client).read_namespace("default", _request_timeout=1.5)
    )
    assert isinstance(error, TimeoutException)
    assert took < 1.5 + 0.05
    api_client.close()


def test_deadline_is_never_overrun_by_more_than_50ms(server: FakeApiServer) -> None:
    api_client = ApiClient(server.configuration(), read_timeout=0.4, deadline=1.0)
    v1 = client.CoreV1Api(api_client)
    v1.read_namespace("default")  # warm up: kubernetes 37 builds its validators on first use
    server.inject(Delay(10), verb="get", times=None)
    took, error = elapsed(lambda: v1.read_namespace("default"))
    assert isinstance(error, DeadlineExceeded)
    assert took <= 1.05
    api_client.close()


@pytest.mark.parametrize(
    ("timeout_seconds", "expected"), [(5, 5 + WATCH_READ_MARGIN), (None, None)]
)
def test_watch_read_timeout_follows_timeout_seconds(
    server: FakeApiServer, timeout_seconds: int | None, expected: float | None
) -> None:
    api_client = ApiClient(server.configuration(), read_timeout=0.3, deadline=0.5)
    v1 = client.CoreV1Api(api_client)
    server.inject(SilentWatch(), verb="watch", times=1)
    response = v1.list_namespaced_config_map(
        "default", watch=True, timeout_seconds=timeout_seconds, _preload_content=False
    )
    # The socket waits timeoutSeconds + margin (or, without timeoutSeconds, until keepalive
    # finds a dead peer): never read_timeout, and no deadline.
    assert response.connection.sock.gettimeout() == expected
    response.release_conn()
    api_client.close()


def test_request_timeout_number_on_a_watch_bounds_each_wait_not_the_stream(
    server: FakeApiServer,
) -> None:
    api_client = ApiClient(server.configuration(), read_timeout=0.3, deadline=0.5)
    v1 = client.CoreV1Api(api_client)
    start = time.monotonic()
    events = list(
        watch.Watch().stream(
            v1.list_namespaced_config_map, "default", timeout_seconds=2, _request_timeout=5
        )
    )
    assert events == []
    assert time.monotonic() - start >= 1.9  # ended by timeoutSeconds, not by read_timeout
    api_client.close()


def test_healthy_watch_outlives_read_timeout_and_deadline(server: FakeApiServer) -> None:
    api_client = ApiClient(server.configuration(), read_timeout=0.3, deadline=0.5)
    v1 = client.CoreV1Api(api_client)
    v1.create_namespaced_config_map("default", configmap("w2"))
    start = time.monotonic()
    names = [
        event["object"].metadata.name
        for event in watch.Watch().stream(
            v1.list_namespaced_config_map, "default", timeout_seconds=2
        )
    ]
    assert names == ["w2"]
    assert time.monotonic() - start >= 1.9  # ended by the server's timeoutSeconds, not by us
    api_client.close()


def test_sockets_get_keepalive_and_user_timeout(server: FakeApiServer) -> None:
    api_client = ApiClient(server.configuration(), keepalive_idle=7, tcp_user_timeout=9)
    client.CoreV1Api(api_client).list_namespace()
    pool = api_client.rest_client.pool_manager.connection_from_url(server.url)
    conn = pool.pool.queue[-1]
    sock = conn.sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 9000
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    api_client.close()


def test_idle_connections_are_discarded_before_reuse(server: FakeApiServer) -> None:
    clock = FakeClock()
    api_client = ApiClient(server.configuration(), pool_idle_timeout=30, clock=clock)
    v1 = client.CoreV1Api(api_client)
    v1.list_namespace()
    clock.now += 29
    v1.list_namespace()  # reused: idle 29 s
    clock.now += 31
    v1.list_namespace()  # idle 31 s: closed and replaced
    stats = api_client.stats().transport
    assert (stats.connections_opened, stats.connections_reused, stats.connections_expired) == (
        2,
        1,
        1,
    )
    assert server.stats().connections == 2
    api_client.close()


def test_32_threads_open_at_most_32_connections_without_pool_warnings(
    server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    api_client = ApiClient(server.configuration(), qps=None)
    v1 = client.CoreV1Api(api_client)
    barrier = threading.Barrier(32)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(10)
            for _ in range(25):
                v1.list_namespace()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert server.stats().connections <= 32
    assert api_client.stats().transport.connections_opened <= 32
    assert "Connection pool is full" not in caplog.text
    api_client.close()


# --- the watchdog: ordinary calls' sockets block, and a thread ends an attempt that overran ---


def test_connected_sockets_of_ordinary_calls_block(server: FakeApiServer) -> None:
    # No socket timeout, so no poll() before every send and recv: the watchdog keeps the time.
    api_client = ApiClient(server.configuration())
    client.CoreV1Api(api_client).list_namespace()
    pool_manager = api_client.rest_client.pool_manager
    (pool,) = pool_manager.manager.pools._container.values()
    connection = pool.pool.queue[-1]
    assert connection.sock is not None
    assert connection.sock.gettimeout() is None
    api_client.close()


def test_a_stalled_answer_over_tls_times_out(fake_api_server_tls: FakeApiServer) -> None:
    fake_api_server_tls.inject(Stall(), verb="get", times=None)
    api_client = ApiClient(fake_api_server_tls.configuration(), read_timeout=0.5, max_attempts=2)
    v1 = client.CoreV1Api(api_client)
    took, error = elapsed(lambda: v1.read_namespace("default"))
    assert isinstance(error, ReadTimeout)
    assert error.attempts == 2
    assert 1.0 <= took < 2.5
    fake_api_server_tls.clear_faults()
    # The shut-down connections were not pooled: the next call simply works.
    assert v1.read_namespace("default").metadata.name == "default"
    api_client.close()


def test_a_body_that_stops_halfway_times_out(relays: list[Relay]) -> None:
    """Headers and half the body arrive, then nothing: the body has its own read time."""
    url = raw_server(
        relays,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"kind": "Namespace"',
    )
    api_client = ApiClient(client.Configuration(host=url), read_timeout=0.5, max_attempts=1)
    took, error = elapsed(lambda: client.CoreV1Api(api_client).read_namespace("default"))
    assert isinstance(error, ReadTimeout)
    assert "read timeout" in str(error)
    assert 0.5 <= took < 1.5
    api_client.close()


def test_a_create_that_timed_out_is_not_sent_again(server: FakeApiServer) -> None:
    server.inject(Stall(), verb="create", times=None)
    api_client = ApiClient(server.configuration(), read_timeout=0.5, max_attempts=3)
    took, error = elapsed(
        lambda: client.CoreV1Api(api_client).create_namespaced_config_map(
            "default", configmap("once")
        )
    )
    assert isinstance(error, ReadTimeout)
    assert server.request_count("create") == 1
    assert took < 1.5
    api_client.close()


def test_a_body_that_keeps_coming_outlives_read_timeout(relays: list[Relay]) -> None:
    """read_timeout limits silence: a slow body whose bytes keep coming is not cut off."""
    body = b'{"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "slow"}}'

    def trickle(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for index in range(len(body)):  # about 1.4 s in all, never 0.5 s of silence
            if relay.stop.wait(0.02):
                return
            conn.sendall(body[index : index + 1])

    relay = Relay(trickle)
    relays.append(relay)
    api_client = ApiClient(
        client.Configuration(host=f"http://127.0.0.1:{relay.port}"),
        read_timeout=0.5,
        max_attempts=1,
    )
    took, error = elapsed(lambda: client.CoreV1Api(api_client).read_namespace("slow"))
    assert error is None
    assert took > 1.0  # longer than read_timeout, twice over
    api_client.close()
