"""resilient_kube.aio.ApiClient on the fake server: drop-in use, retries, timeouts, streams."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client, watch
from kubernetes.aio.client.exceptions import ApiException

from resilient_kube import (
    ConfigError,
    ConnectionReset,
    ConnectTimeout,
    DeadlineExceeded,
    EventSink,
    NameResolutionError,
    RateLimitTimeout,
    ReadTimeout,
    ResponseTooLarge,
    Settings,
    TLSError,
)
from resilient_kube.aio import ApiClient, ClientFactory
from resilient_kube.testing import (
    CloseConnection,
    Delay,
    FakeApiServer,
    FakeDnsServer,
    FullAcceptQueueListener,
    ResetConnection,
    SilentWatch,
    Stall,
    StatusFault,
    TruncatedBody,
)

from ..helpers.clock import FakeClock
from ..helpers.leaks import no_unclosed_resources
from ..integration.test_tls_and_proxy import _ForwardProxy
from .conftest import aio_configuration, configmap

CM = "/api/v1/namespaces/default/configmaps"


def test_crud_through_the_generated_api(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    async def main() -> None:
        async with ApiClient(configuration) as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespaced_config_map("default", configmap("a", app="x"))
            got = await v1.read_namespaced_config_map("a", "default")
            assert got.data == {"key": "value"}
            await v1.patch_namespaced_config_map("a", "default", {"data": {"key": "new"}})
            listed = await v1.list_namespaced_config_map("default", label_selector="app=x")
            assert [cm.data for cm in listed.items] == [{"key": "new"}]
            await v1.delete_namespaced_config_map("a", "default")
            with pytest.raises(ApiException) as info:
                await v1.read_namespaced_config_map("a", "default")
            assert info.value.status == 404
            stats = api.stats()
            assert stats.transport.requests == stats.transport.attempts == 6
            assert stats.transport.failures == 0
            assert stats.transport.connections_opened == 1
            assert stats.transport.connections_reused == 5

    asyncio.run(main())


def test_raw_response_replays_the_buffered_body(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    async def main() -> None:
        async with ApiClient(configuration) as api:
            v1 = client.CoreV1Api(api)
            raw = await v1.list_namespace_without_preload_content()
            assert raw.status == 200
            streamed = await raw.content.read()
            assert json.loads(streamed)["kind"] == "NamespaceList"
            assert await raw.read() == streamed

    asyncio.run(main())


@pytest.mark.parametrize(
    ("tuning", "named"),
    [
        ({"read_timeout": -1}, "read_timeout=-1"),
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"qps": True}, "qps=True"),
        ({"read_timout": 3}, "read_timout"),
    ],
)
def test_bad_tuning_is_a_config_error(tuning: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ApiClient(client.Configuration(host="http://127.0.0.1:1"), **tuning)
    with pytest.raises(ConfigError, match=named):
        ClientFactory(client.Configuration(host="http://127.0.0.1:1"), **tuning)


def test_settings_and_keywords_combine(configuration: client.Configuration) -> None:
    api = ApiClient(configuration, settings=Settings(read_timeout=3), deadline=7)
    assert (api.settings.read_timeout, api.settings.deadline) == (3.0, 7.0)


def test_503_is_retried_and_the_answer_returned(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    server.inject(StatusFault(503), verb="list", times=2)

    async def main() -> None:
        async with ApiClient(configuration, backoff_base=0.01) as api:
            items = (await client.CoreV1Api(api).list_namespace()).items
            assert items
            assert api.stats().retry.retries_by_reason == {"status_503": 2}

    asyncio.run(main())
    assert server.request_count("list") == 3


def test_official_retry_layers_are_off(server: FakeApiServer) -> None:
    """``retries=3`` turns on aiohttp-retry in the stock client, which re-sends a PUT's 503;
    ours never stacks on the policy, which does not repeat a write the server may have done."""
    configuration = aio_configuration(server)
    configuration.retries = 3
    server.inject(StatusFault(503), verb="update", times=None)

    async def main() -> None:
        async with ApiClient(configuration, backoff_base=0.01) as api:
            with pytest.raises(ApiException) as info:
                await client.CoreV1Api(api).replace_namespaced_config_map(
                    "cm", "default", configmap("cm")
                )
            assert info.value.status == 503

    asyncio.run(main())
    assert server.request_count("update") == 1
    assert configuration.retries == 3  # the caller's configuration is left as it was


@pytest.mark.parametrize("fault", [ResetConnection(), CloseConnection(), TruncatedBody()])
def test_a_post_that_may_have_arrived_is_not_sent_again(
    server: FakeApiServer, configuration: client.Configuration, fault: Any
) -> None:
    server.inject(fault, verb="create")

    async def main() -> None:
        async with ApiClient(configuration, backoff_base=0.01) as api:
            with pytest.raises(ConnectionReset) as info:
                await client.CoreV1Api(api).create_namespaced_config_map(
                    "default", configmap("once")
                )
            assert info.value.attempts == 1

    asyncio.run(main())
    assert server.request_count("create") == 1


@pytest.mark.parametrize("fault", [ResetConnection(), CloseConnection(), TruncatedBody()])
def test_a_read_is_retried_after_a_broken_connection(
    server: FakeApiServer, configuration: client.Configuration, fault: Any
) -> None:
    server.inject(fault, verb="list")

    async def main() -> None:
        async with ApiClient(configuration, backoff_base=0.01) as api:
            assert (await client.CoreV1Api(api).list_namespace()).items
            assert sum(api.stats().retry.retries_by_reason.values()) == 1

    asyncio.run(main())
    assert server.request_count("list") == 2


def test_a_429_is_retried_for_a_post_after_its_retry_after(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    server.inject(StatusFault(429, retry_after=1), verb="create")

    rates: list[tuple[str, float]] = []

    class Rates(EventSink):
        def rate_changed(self, host: str, qps: float) -> None:
            rates.append((host, qps))

    async def main() -> None:
        async with ApiClient(configuration, backoff_base=0.01) as api:
            api.subscribe(Rates())
            started = time.monotonic()
            await client.CoreV1Api(api).create_namespaced_config_map("default", configmap("a"))
            assert time.monotonic() - started >= 1.0  # never earlier than asked
            limiter = api.stats().limiter
            assert limiter is not None
            assert limiter.throttled == 1

    asyncio.run(main())
    assert server.request_count("create") == 2
    # The limiter halved its rate (default qps 50) and said so, for this server.
    assert rates[0] == (f"127.0.0.1:{server.port}", 25.0)


@pytest.mark.parametrize("verb", ["GET", "POST"])
def test_a_server_that_never_answers_meets_the_deadline(
    server: FakeApiServer, configuration: client.Configuration, verb: str
) -> None:
    server.inject(Stall(), times=None)
    deadline = 1.0

    async def main() -> None:
        async with ApiClient(configuration, deadline=deadline, read_timeout=30) as api:
            v1 = client.CoreV1Api(api)
            call = (
                v1.list_namespace()
                if verb == "GET"
                else v1.create_namespaced_config_map("default", configmap("a"))
            )
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await call
            assert time.monotonic() - started < deadline + 0.5

    asyncio.run(main())


def test_read_timeout_per_attempt_then_success(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    server.inject(Delay(2), verb="list")

    async def main() -> None:
        async with ApiClient(configuration, read_timeout=0.3, backoff_base=0.01) as api:
            assert (await client.CoreV1Api(api).list_namespace()).items
            assert api.stats().retry.retries_by_reason == {"read_timeout": 1}

    asyncio.run(main())


def test_read_timeout_error_for_a_post(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    server.inject(Delay(2), verb="create")

    async def main() -> None:
        async with ApiClient(configuration, read_timeout=0.3) as api:
            with pytest.raises(ReadTimeout):
                await client.CoreV1Api(api).create_namespaced_config_map("default", configmap("a"))

    asyncio.run(main())
    assert server.request_count("create") == 1


def test_request_timeout_number_is_the_call_deadline(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    server.inject(Stall(), times=None)

    async def main() -> None:
        async with ApiClient(configuration, deadline=None, read_timeout=None) as api:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await client.CoreV1Api(api).list_namespace(_request_timeout=0.5)
            assert time.monotonic() - started < 1.0

    asyncio.run(main())


def test_connect_timeout() -> None:
    async def main(url: str) -> None:
        configuration = client.Configuration(host=url)
        async with ApiClient(configuration, connect_timeout=0.2, deadline=None) as api:
            with pytest.raises(ConnectTimeout) as info:
                await client.CoreV1Api(api).list_namespace()
            assert info.value.attempts == 5  # connect failures are repeated for every verb

    with FullAcceptQueueListener() as listener:
        asyncio.run(main(listener.url))


def test_too_large_a_body(server: FakeApiServer, configuration: client.Configuration) -> None:
    async def main() -> None:
        async with ApiClient(configuration, max_response_bytes=100) as api:
            with pytest.raises(ResponseTooLarge):
                await client.CoreV1Api(api).list_namespace()

    asyncio.run(main())
    assert server.request_count("list") == 1


def test_a_silent_watch_is_cut_after_the_idle_timeout(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    """The stock Watch re-opens a stream its read timeout cut: every event arrives once."""
    server.inject(SilentWatch(), verb="watch")
    idle = 0.5

    async def main() -> None:
        async with ApiClient(configuration, watch_idle_timeout=idle) as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespaced_config_map("default", configmap("a"))
            started = time.monotonic()
            seen: list[tuple[str, str]] = []
            async with watch.Watch() as w:
                async for event in w.stream(v1.list_namespaced_config_map, "default"):
                    seen.append((event["type"], event["object"].metadata.name))
                    w.stop()
            assert seen == [("ADDED", "a")]
            assert idle <= time.monotonic() - started < idle + 2.0

    asyncio.run(main())
    assert server.request_count("watch") == 2


def test_a_stream_outlives_the_deadline(server: FakeApiServer) -> None:
    """No deadline and no total timeout on a watch: it ends when the server ends it."""

    async def main() -> None:
        configuration = aio_configuration(server)
        async with ApiClient(configuration, deadline=0.3, watch_idle_timeout=5) as api:
            v1 = client.CoreV1Api(api)
            started = time.monotonic()
            async with watch.Watch() as w:
                lines = [
                    event
                    async for event in w.stream(
                        v1.list_namespaced_config_map, "default", timeout_seconds=1
                    )
                ]
            assert time.monotonic() - started >= 0.9
            assert lines == []

    asyncio.run(main())
    assert server.request_count("watch") == 1


def test_the_dns_cache_resolves_the_api_server_name(server: FakeApiServer) -> None:
    with FakeDnsServer() as dns:
        dns.set("api.example.test", "127.0.0.1")

        async def main() -> None:
            configuration = aio_configuration(server)
            configuration.host = f"http://api.example.test:{server.port}"
            async with ApiClient(configuration, dns_nameservers=[dns.nameserver]) as api:
                assert (await client.CoreV1Api(api).list_namespace()).items
                stats = api.stats().dns
                assert stats is not None
                assert stats.misses == 1

        asyncio.run(main())
        assert dns.queries >= 1


def test_a_name_that_does_not_resolve(server: FakeApiServer) -> None:
    with FakeDnsServer() as dns:

        async def main() -> None:
            configuration = client.Configuration(host="http://missing.example.test:1")
            async with ApiClient(
                configuration, dns_nameservers=[dns.nameserver], backoff_base=0.01
            ) as api:
                with pytest.raises(NameResolutionError) as info:
                    await client.CoreV1Api(api).list_namespace()
                assert info.value.host == "missing.example.test"

        asyncio.run(main())


def test_client_factory_loads_a_kubeconfig(server: FakeApiServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "kubeconfig")

    async def main() -> None:
        async with ClientFactory(kubeconfig=path, read_timeout=7) as kube:
            assert kube.settings.read_timeout == 7.0
            assert kube.core_v1() is kube.core_v1()
            names = [ns.metadata.name for ns in (await kube.core_v1().list_namespace()).items]
            assert "default" in names
            assert kube.stats().transport.requests == 1

    asyncio.run(main())


def test_client_factory_refuses_two_sources(configuration: client.Configuration) -> None:
    with pytest.raises(ConfigError, match="one source"):
        ClientFactory(configuration, kubeconfig="x")


class _Ended(EventSink):
    def __init__(self) -> None:
        self.ended: list[tuple[str, int, str | None, str | None]] = []

    def call_ended(  # noqa: PLR0917  the EventSink signature
        self,
        method: str,
        host: str,
        attempts: int,
        seconds: float,
        stop: str | None,
        error: str | None,
    ) -> None:
        self.ended.append((method, attempts, stop, error))


def test_a_cancelled_call_gives_its_connection_up(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    server.inject(Stall())
    sink = _Ended()

    async def main() -> None:
        async with ApiClient(configuration) as api:
            api.subscribe(sink)
            v1 = client.CoreV1Api(api)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(v1.list_namespace(), timeout=0.3)
            assert (await v1.list_namespace()).items  # the client is still usable
            assert api.stats().transport.connections_opened == 2

    asyncio.run(main())
    assert sink.ended == [("GET", 0, None, "CancelledError"), ("GET", 1, None, None)]


def test_a_certificate_that_does_not_verify_is_not_retried() -> None:
    with FakeApiServer(tls=True) as tls_server:
        configuration = aio_configuration(tls_server)
        configuration.ssl_ca_cert = None  # the system's CAs do not know the server's

        async def main() -> None:
            async with ApiClient(configuration) as api:
                with pytest.raises(TLSError) as info:
                    await client.CoreV1Api(api).list_namespace()
                assert info.value.attempts == 1

        asyncio.run(main())


def test_tls_with_the_servers_ca(server: FakeApiServer) -> None:
    with FakeApiServer(tls=True) as tls_server:

        async def main() -> None:
            async with ApiClient(aio_configuration(tls_server)) as api:
                assert (await client.CoreV1Api(api).list_namespace()).items

        asyncio.run(main())


def give_up_a_tls_watch(
    make_api: Callable[[FakeApiServer], Any], client_module: Any, watch_module: Any
) -> None:
    """Stop a watch of a TLS server that never answers a close, close the client, end the loop;
    fail if anything is left unclosed.

    ``Watch.close()`` releases a stream not read to its end: aiohttp closes that connection,
    which on TLS starts a shutdown handshake the server may not answer at once (a real one is
    busy ending the watch; this one never reads again), and forgets it. ``ApiClient.close()``
    used to return with it still open, and when the loop ended right after, its socket was
    collected unclosed (the e2e aio module's flaky ResourceWarning). The pool now aborts it.
    """
    with FakeApiServer(tls=True) as tls_server:
        tls_server.inject(SilentWatch(after_events=1), verb="watch")

        async def main() -> None:
            async with make_api(tls_server) as api:
                v1 = client_module.CoreV1Api(api)
                async with watch_module.Watch() as w:
                    async for _ in w.stream(v1.list_namespace, timeout_seconds=30):
                        w.stop()

        with no_unclosed_resources():
            asyncio.run(main())


def test_a_tls_stream_given_up_is_closed_with_the_client() -> None:
    give_up_a_tls_watch(lambda server: ApiClient(aio_configuration(server)), client, watch)


def test_a_close_cancelled_midway_leaves_nothing_open() -> None:
    """Cancelled while the pooled connection ends, close() still aborts the stream's."""
    with FakeApiServer(tls=True) as tls_server:
        tls_server.inject(SilentWatch(after_events=1), verb="watch")

        async def main() -> None:
            api = ApiClient(aio_configuration(tls_server))
            v1 = client.CoreV1Api(api)
            async with watch.Watch() as w:
                async for _ in w.stream(v1.list_namespace, timeout_seconds=30):
                    w.stop()
            assert (await v1.list_namespace()).items  # a second connection, pooled
            closing = asyncio.create_task(api.close())
            await asyncio.sleep(0)  # closing waits for the pooled connection's end
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            assert api.stats().transport.connections_opened == 2

        with no_unclosed_resources():
            asyncio.run(main())


def test_the_environments_proxy_is_used_like_the_stock_clients(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stock session reads HTTP_PROXY per request (trust_env); ours once, when built."""
    proxy = _ForwardProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")

        async def main() -> None:
            for make in (client.ApiClient, ApiClient):
                async with make(aio_configuration(server)) as api:
                    assert (await client.CoreV1Api(api).list_namespace()).items

        asyncio.run(main())
        assert proxy.forwarded == [f"{server.url}/api/v1/namespaces"] * 2

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        asyncio.run(main())
        assert len(proxy.forwarded) == 2  # bypassed by both
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)


def test_streams_skip_the_limiter(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    """With the one token spent, a LIST would wait 100 s; a watch opens at once."""

    async def main() -> None:
        async with ApiClient(configuration, qps=0.01, burst=1, deadline=1) as api:
            v1 = client.CoreV1Api(api)
            await v1.list_namespace()
            with pytest.raises(RateLimitTimeout):
                await v1.list_namespace()
            async with watch.Watch() as w:
                events = [e["type"] async for e in w.stream(v1.list_namespace, timeout_seconds=1)]
            assert events == ["ADDED"] * 4
            limiter = api.stats().limiter
            assert limiter is not None
            assert limiter.admitted == 1

    asyncio.run(main())
    assert server.request_count("watch") == 1


def test_request_timeout_pair_replaces_connect_and_read(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    server.inject(Delay(2), verb="list")

    async def main() -> None:
        async with ApiClient(configuration, read_timeout=30, backoff_base=0.01) as api:
            v1 = client.CoreV1Api(api)
            assert (await v1.list_namespace(_request_timeout=(5, 0.3))).items
            assert api.stats().retry.retries_by_reason == {"read_timeout": 1}

    asyncio.run(main())


def test_client_factory_dynamic_client(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    async def main() -> None:
        async with ClientFactory(configuration) as kube:
            dyn = await kube.dynamic()
            assert await kube.dynamic() is dyn
            configmaps = await dyn.resources.get(api_version="v1", kind="ConfigMap")
            await dyn.create(configmaps, body=configmap("d"), namespace="default")
            got = await dyn.get(configmaps, name="d", namespace="default")
            assert got.to_dict()["data"] == {"key": "value"}
            assert kube.stats().transport.failures == 0

    asyncio.run(main())


def test_a_closed_client_refuses_calls_instead_of_opening_a_session(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    async def main() -> None:
        api = ApiClient(configuration)
        v1 = client.CoreV1Api(api)
        await v1.list_namespace()
        await api.close()
        with pytest.raises(RuntimeError, match="Session is closed"):
            await v1.list_namespace()
        assert api.rest_client.pool_manager.session is None  # nothing opened to leak

    asyncio.run(main())


def test_traffic_follows_an_answer_change() -> None:
    """A pooled connection whose address left the DNS answer is retired, not reused."""
    clock = FakeClock()
    name = "api.example.test"
    with (
        FakeDnsServer(ttl=2) as dns,
        FakeApiServer() as old,
        FakeApiServer(host="127.0.0.2", port=old.port) as new,
    ):
        dns.set(name, "127.0.0.1")

        async def main() -> None:
            configuration = aio_configuration(old)
            configuration.host = f"http://{name}:{old.port}"
            async with ApiClient(
                configuration, dns_nameservers=[dns.nameserver], dns_min_ttl=1, clock=clock
            ) as api:
                v1 = client.CoreV1Api(api)
                await v1.list_namespace()
                dns.set(name, "127.0.0.2")
                clock.now += 3  # the answer is due for its refresh
                stats = api.stats().dns
                assert stats is not None
                looked_up = stats.lookup_seconds
                await v1.list_namespace()  # still the pooled connection; starts the refresh
                async with asyncio.timeout(5):  # the refresh runs in a thread
                    while (current := api.stats().dns) is not None and (
                        current.lookup_seconds == looked_up
                    ):
                        await asyncio.sleep(0.01)
                await v1.list_namespace()  # the old address left the answer: a new connection
                transport = api.stats().transport
                assert (transport.connections_retired, transport.connections_opened) == (1, 2)

        asyncio.run(main())
        assert (old.request_count(), new.request_count()) == (2, 1)


def test_an_address_that_refused_is_tried_last_next_time() -> None:
    """As the sync dialer does: the DNS cache learns which of a name's addresses failed."""
    name = "api.example.test"
    with (
        FakeApiServer(host="127.0.0.2") as server,
        FakeDnsServer() as dns,
        socket.socket() as refusing,
    ):
        refusing.bind(("127.0.0.1", server.port))  # bound, never listening: connects are refused
        dns.set(name, "127.0.0.1", "127.0.0.2")

        async def main() -> None:
            configuration = aio_configuration(server)
            configuration.host = f"http://{name}:{server.port}"
            async with ApiClient(configuration, dns_nameservers=[dns.nameserver]) as api:
                cache = api._rk.dns
                assert cache is not None
                assert cache.resolve(name) == ["127.0.0.1", "127.0.0.2"]
                await client.CoreV1Api(api).list_namespace()
                assert cache.resolve(name) == ["127.0.0.2", "127.0.0.1"]

        asyncio.run(main())
        assert server.request_count("list") == 1
