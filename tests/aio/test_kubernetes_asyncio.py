"""resilient_kube.aio.kubernetes_asyncio.ApiClient: the same guarantees on kubernetes_asyncio.

kubernetes_asyncio (the older, separate package) is a dev dependency only: these tests are
skipped without it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from resilient_kube import ConfigError, ConnectionReset, DeadlineExceeded
from resilient_kube.testing import FakeApiServer, ResetConnection, SilentWatch, Stall, StatusFault

from .conftest import aio_configuration, configmap
from .test_client import give_up_a_tls_watch
from .test_faults import inject_mix

kubernetes_asyncio = pytest.importorskip("kubernetes_asyncio")

from kubernetes_asyncio import client, watch  # noqa: E402

from resilient_kube.aio.kubernetes_asyncio import ApiClient  # noqa: E402


def configuration(server: FakeApiServer) -> Any:
    return aio_configuration(server, client.Configuration)


def test_crud_and_stats(server: FakeApiServer) -> None:
    async def main() -> None:
        async with ApiClient(configuration(server)) as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespaced_config_map("default", configmap("a"))
            assert (await v1.read_namespaced_config_map("a", "default")).data == {"key": "value"}
            await v1.delete_namespaced_config_map("a", "default")
            with pytest.raises(client.ApiException) as info:
                await v1.read_namespaced_config_map("a", "default")
            assert info.value.status == 404
            stats = api.stats()
            assert stats.transport.requests == stats.transport.attempts == 4
            assert stats.transport.connections_opened == 1

    asyncio.run(main())


def test_bad_tuning_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="read_timeout=-1"):
        ApiClient(client.Configuration(host="http://127.0.0.1:1"), read_timeout=-1)


def test_tls_with_the_servers_ca() -> None:
    with FakeApiServer(tls=True) as tls_server:

        async def main() -> None:
            async with ApiClient(configuration(tls_server)) as api:
                assert (await client.CoreV1Api(api).list_namespace()).items

        asyncio.run(main())


def test_a_tls_stream_given_up_is_closed_with_the_client() -> None:
    """As test_client's: the stream's connection, still ending, is aborted by close()."""
    give_up_a_tls_watch(lambda server: ApiClient(configuration(server)), client, watch)


def test_a_post_that_may_have_arrived_is_not_sent_again(server: FakeApiServer) -> None:
    server.inject(ResetConnection(), verb="create")

    async def main() -> None:
        async with ApiClient(configuration(server)) as api:
            with pytest.raises(ConnectionReset):
                await client.CoreV1Api(api).create_namespaced_config_map(
                    "default", configmap("once")
                )

    asyncio.run(main())
    assert server.request_count("create") == 1


def test_a_server_that_never_answers_meets_the_deadline(server: FakeApiServer) -> None:
    """kubernetes_asyncio gives a call no timeout at all by default."""
    server.inject(Stall(), times=None)

    async def main() -> None:
        async with ApiClient(configuration(server), deadline=1) as api:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await client.CoreV1Api(api).list_namespace()
            assert time.monotonic() - started < 1.5

    asyncio.run(main())


def test_a_silent_watch_is_cut_after_the_idle_timeout(server: FakeApiServer) -> None:
    server.inject(SilentWatch(), verb="watch")

    async def main() -> None:
        async with ApiClient(configuration(server), watch_idle_timeout=0.5) as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespaced_config_map("default", configmap("a"))
            seen = []
            async with watch.Watch() as w:
                async for event in w.stream(v1.list_namespaced_config_map, "default"):
                    seen.append((event["type"], event["object"].metadata.name))
                    w.stop()
            assert seen == [("ADDED", "a")]

    asyncio.run(main())
    assert server.request_count("watch") == 2


def test_20_percent_503_beside_stock(server: FakeApiServer) -> None:
    results = []
    for make in (client.ApiClient, ApiClient):
        server.clear_faults()
        server.reset_stats()
        inject_mix(server, [(StatusFault(503), 0.2)], 8)

        async def main(make: Any = make) -> int:
            async with make(configuration(server)) as api:
                v1 = client.CoreV1Api(api)

                async def task(number: int) -> int:
                    ok = 0
                    for _ in range(40):
                        try:
                            await v1.list_namespaced_config_map(f"ns{number}")
                        except client.ApiException:
                            continue
                        ok += 1
                    return ok

                return sum(await asyncio.gather(*(task(n) for n in range(8))))

        results.append((asyncio.run(main()), server.request_count("list")))
    (stock_ok, _), (ours_ok, ours_wire) = results
    assert stock_ok / 320 < 0.9
    assert ours_ok / 320 >= 0.999
    assert ours_wire / 320 <= 1.3
