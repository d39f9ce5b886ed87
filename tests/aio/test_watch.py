"""``resilient_kube.aio.Watch`` on the fake server: every fault is ridden over with exact delivery.

The asyncio twin of tests/integration/test_watch_resume.py: each test writes a known history,
watches it from a known version through a fault, and checks that every event after that
version arrives once, in order. Backoff waits are recorded, not slept (``sleep=``).
"""

from __future__ import annotations

import asyncio
import pickle
import random
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.aio.client.exceptions
import kubernetes.aio.watch
import kubernetes.client
import pytest
from kubernetes.aio import client

import resilient_kube
from resilient_kube import BackoffPolicy
from resilient_kube.aio import ApiClient, ClientFactory, ResourceExpired, Watch
from resilient_kube.testing import (
    EndWatch,
    FakeApiServer,
    ResetConnection,
    ResetWatch,
    SilentWatch,
    StatusFault,
    TruncatedBody,
)
from tests.helpers.clock import FakeClock

from .conftest import aio_configuration
from .watching import (
    Call,
    Ceiling,
    collect,
    create,
    history,
    new_watch,
    no_wait,
    run_with_api,
    version,
)

AioApiException = kubernetes.aio.client.exceptions.ApiException


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=60) as fake:
        yield fake


@pytest.mark.parametrize(
    ("faults", "reasons"),
    [
        pytest.param([ResetWatch(after_events=4)], {"reset": 1}, id="reset-after-4"),
        pytest.param(
            [ResetWatch(after_events=1), ResetWatch(after_events=0), ResetWatch(after_events=5)],
            {"reset": 3},
            id="resets-in-a-row",
        ),
        pytest.param([EndWatch(after_events=3)], {"ended": 1}, id="early-end"),
        pytest.param([TruncatedBody()], {"truncated": 1}, id="truncated-chunk"),
        pytest.param([SilentWatch(after_events=2)], {"idle": 1}, id="silence"),
    ],
)
def test_breaks_resume_with_exact_delivery(
    server: FakeApiServer, faults: list[Any], reasons: dict[str, int]
) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, expected = await history(core)
        for fault in faults:
            server.inject(fault, verb="watch")
        waits: list[float] = []
        seen = await collect(new_watch(waits), core, len(expected), resource_version=start)
        assert seen == expected
        stats = api.stats().watch
        assert stats.restarts_by_reason == reasons
        assert stats.events == len(expected)
        assert server.request_count("watch") == 1 + sum(reasons.values())
        # Full jitter below client-go's ceilings: 0.8 s, then doubling.
        assert len(waits) == sum(reasons.values())
        assert all(0 <= w <= 0.8 * 2**i for i, w in enumerate(waits))

    run_with_api(server, test)


def test_failed_reopens_back_off_then_resume(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, expected = await history(core)
        server.inject(ResetWatch(after_events=2), verb="watch")
        # The re-open fails: 503 five times (one call of the driver), then a reset five times.
        server.inject(StatusFault(503), verb="watch", times=5)
        server.inject(ResetConnection(), verb="watch", times=5)
        waits: list[float] = []
        seen = await collect(new_watch(waits), core, len(expected), resource_version=start)
        assert seen == expected
        assert api.stats().watch.restarts_by_reason == {"reset": 2, "status_503": 1}
        assert len(waits) == 3

    run_with_api(server, test)


def test_backoff_grows_with_full_jitter(server: FakeApiServer) -> None:
    """Six breaks in a row on a clock that does not move: the ceiling doubles from 0.8 s to 25.6 s."""
    clock = FakeClock()

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, expected = await history(core, 6)
        for _ in range(6):
            server.inject(ResetWatch(after_events=0), verb="watch")
        waits: list[float] = []
        watch = new_watch(waits, rng=random.Random(11), clock=clock)
        assert await collect(watch, core, len(expected), resource_version=start) == expected

        # The same draws from the same seed: timeoutSeconds of the first request, then per
        # break the jitter, uniform(0, ceiling), and the next request's timeoutSeconds.
        mirror = random.Random(11)
        mirror.randint(300, 600)
        draws = []
        for step in range(6):
            draws.append(mirror.uniform(0, min(30.0, 0.8 * 2**step)))
            mirror.randint(300, 600)
        assert waits == draws
        assert len(set(waits)) == 6
        assert api.stats().watch.restarts_by_reason == {"reset": 6}

    run_with_api(server, test)


def test_backoff_starts_over_after_a_healthy_stretch(server: FakeApiServer) -> None:
    clock = FakeClock()
    policy = BackoffPolicy(base=0.8, cap=30, reset_after=120)

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, expected = await history(core, 6)
        server.inject(ResetWatch(after_events=1), verb="watch")
        server.inject(ResetWatch(after_events=1), verb="watch")
        server.inject(ResetWatch(after_events=1), verb="watch")
        waits: list[float] = []

        seen: list[Call] = []
        watch = new_watch(waits, rng=Ceiling(1), clock=clock, backoff=policy)
        async with asyncio.timeout(20), watch:
            async for event in watch.stream(
                core.list_namespaced_config_map, "default", resource_version=start
            ):
                meta = event["raw_object"]["metadata"]
                seen.append((event["type"], meta["name"], meta["resourceVersion"]))
                if len(seen) == 2:
                    clock.now += 121  # two healthy minutes between the first and second break
                if len(seen) == len(expected):
                    watch.stop()
        assert seen == expected
        # Each stream breaks after one event: 0.8 s; after two healthy minutes 0.8 s again,
        # then the doubling goes on.
        assert waits == [0.8, 0.8, 1.6]

    run_with_api(server, test)


class _OnBookmark(resilient_kube.EventSink):
    """Runs ``action`` once, in the watch's task, when the first bookmark arrives."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.done = False

    def watch_event(self, kind: str) -> None:
        if kind == "BOOKMARK" and not self.done:
            self.done = True
            self.action()


def test_bookmarks_move_the_resume_point_and_stay_hidden() -> None:
    with FakeApiServer(bookmark_interval=0.05) as server:
        # The sync client writes from inside the event sink (no await there); the server
        # runs in its own thread.
        sync_api = resilient_kube.ApiClient(server.configuration())
        sync_core = kubernetes.client.CoreV1Api(sync_api)
        later: list[Call] = []

        def compact_and_write() -> None:
            # Resuming from the last ConfigMap event would now get 410; from the bookmark's
            # version (the newest) it works.
            server.compact()
            obj = sync_core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
            later.append(("ADDED", "x", obj.metadata.resource_version))

        async def test(api: ApiClient, core: client.CoreV1Api) -> None:
            start, expected = await history(core, 3)
            await client.CoreV1Api(api).create_namespaced_secret(
                "default", {"metadata": {"name": "s"}}
            )  # the resourceVersion moves on
            api.subscribe(_OnBookmark(compact_and_write))
            # Three events and one bookmark, then the stream is reset.
            server.inject(ResetWatch(after_events=4), verb="watch")
            seen = await collect(new_watch(), core, 4, resource_version=start)
            assert seen == expected + later
            stats = api.stats().watch
            assert stats.bookmarks >= 1
            assert stats.events == 4 + stats.bookmarks
            assert stats.restarts_by_reason == {"reset": 1}

        try:
            run_with_api(server, test, watch_idle_timeout=5)
        finally:
            sync_api.close()


def test_bookmarks_are_yielded_when_asked() -> None:
    with FakeApiServer(bookmark_interval=0.05) as server:

        async def test(api: ApiClient, core: client.CoreV1Api) -> None:
            kinds = []
            async with asyncio.timeout(10), new_watch() as watch:
                async for event in watch.stream(
                    core.list_namespaced_config_map,
                    "default",
                    allow_watch_bookmarks=True,
                    resource_version=await version(core),
                ):
                    kinds.append(event["type"])
                    if len(kinds) == 2:
                        watch.stop()
            assert kinds == ["BOOKMARK", "BOOKMARK"]
            assert watch.resource_version == await version(core)

        run_with_api(server, test)


def test_expired_version_raises_at_once(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, _ = await history(core, 3)
        server.compact()
        with pytest.raises(ResourceExpired) as info:
            await collect(new_watch(), core, 10, resource_version=start)
        assert info.value.status == 410
        # Caught by code written for kubernetes.aio, and by code written for resilient_kube.
        assert isinstance(info.value, AioApiException)
        assert isinstance(info.value, resilient_kube.ResourceExpired)
        assert server.request_count("watch") == 1  # no pointless second try

    run_with_api(server, test)


def test_expired_on_resume_raises(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, expected = await history(core, 6)
        server.inject(ResetWatch(after_events=2), verb="watch")
        seen: list[Call] = []

        async def consume() -> None:
            async with asyncio.timeout(20), new_watch() as watch:
                async for event in watch.stream(
                    core.list_namespaced_config_map, "default", resource_version=start
                ):
                    meta = event["raw_object"]["metadata"]
                    seen.append((event["type"], meta["name"], meta["resourceVersion"]))
                    if len(seen) == 2:
                        server.compact()

        with pytest.raises(ResourceExpired):
            await consume()
        assert seen == expected[:2]
        assert server.request_count("watch") == 2

    run_with_api(server, test)


@pytest.mark.parametrize("code", [401, 403])
def test_unauthorized_is_raised_not_looped(server: FakeApiServer, code: int) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, _ = await history(core, 3)
        server.inject(ResetWatch(after_events=1), verb="watch")
        server.inject(StatusFault(code), verb="watch", times=None)
        with pytest.raises(AioApiException) as info:
            await collect(new_watch(), core, 10, resource_version=start)
        assert info.value.status == code
        assert not isinstance(info.value, ResourceExpired)
        assert server.request_count("watch") == 2
        assert api.stats().watch.restarts_by_reason == {"reset": 1}

    run_with_api(server, test)


def test_first_request_failure_is_raised(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        server.inject(StatusFault(404), verb="watch")
        with pytest.raises(AioApiException) as info:
            await collect(new_watch(), core, 1, resource_version="1")
        assert info.value.status == 404
        assert server.request_count("watch") == 1

    run_with_api(server, test)


def test_caller_timeout_ends_the_stream(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, expected = await history(core, 3)
        server.inject(ResetWatch(after_events=1), verb="watch")
        seen = await collect(new_watch(), core, 100, resource_version=start, timeout_seconds=3)
        assert seen == expected
        # One reset; the re-open asked for what was left of the caller's 3 s and ran to its
        # end, and the stream ended there.
        assert server.request_count("watch") == 2
        assert api.stats().watch.restarts_by_reason == {"reset": 1}

    run_with_api(server, test, watch_idle_timeout=30)


def test_stop_from_another_task_wakes_a_quiet_stream(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        watch = Watch()
        start = await version(core)

        async def consume() -> None:
            async for _ in watch.stream(
                core.list_namespaced_config_map, "default", resource_version=start
            ):
                pass  # Defensive: nothing is written

        task = asyncio.create_task(consume())
        async with asyncio.timeout(10):
            while server.request_count("watch") < 1:
                await asyncio.sleep(0.01)
        watch.stop()
        async with asyncio.timeout(5):
            await task
        await watch.close()

    run_with_api(server, test, watch_idle_timeout=None)


def test_stop_ends_a_backoff_wait(server: FakeApiServer) -> None:
    """The default wait (no ``sleep=``) is one that ``stop()`` ends: no 30 s sleep to sit out."""

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, _ = await history(core, 3)
        server.inject(ResetWatch(after_events=0), verb="watch")
        watch = Watch(backoff=BackoffPolicy(base=30, cap=30), rng=Ceiling(1))
        restarts: list[float] = []

        class Restarts(resilient_kube.EventSink):
            def watch_restart(self, reason: str, wait: float) -> None:
                restarts.append(wait)

        api.subscribe(Restarts())

        async def consume() -> None:
            async for _ in watch.stream(
                core.list_namespaced_config_map, "default", resource_version=start
            ):
                pass  # Defensive: the stream is reset before its first event

        task = asyncio.create_task(consume())
        async with asyncio.timeout(10):
            while not restarts:
                await asyncio.sleep(0.01)
        assert restarts == [30.0]
        watch.stop()
        async with asyncio.timeout(5):
            await task
        assert server.request_count("watch") == 1

    run_with_api(server, test)


def test_stock_client_is_served_too(server: FakeApiServer) -> None:
    """On a stock ``kubernetes.aio`` ApiClient the watch resumes too (no stats to report to)."""

    async def main() -> None:
        async with client.ApiClient(aio_configuration(server)) as api:
            core = client.CoreV1Api(api)
            start, expected = await history(core, 6)
            server.inject(ResetWatch(after_events=2), verb="watch")
            seen = await collect(new_watch(), core, len(expected), resource_version=start)
            assert seen == expected

    asyncio.run(main())


def test_factory_hands_out_the_resilient_watch(server: FakeApiServer) -> None:
    async def main() -> None:
        async with ClientFactory(aio_configuration(server)) as kube:
            watch = kube.watch()
            assert isinstance(watch, Watch)
            assert isinstance(watch, kubernetes.aio.watch.Watch)
            core = kube.core_v1()
            start, expected = await history(core, 3)
            server.inject(ResetWatch(after_events=1), verb="watch")
            watch._sleep = no_wait  # the factory's watch keeps real waits otherwise
            assert await collect(watch, core, len(expected), resource_version=start) == expected
            assert kube.stats().watch.restarts == 1

    asyncio.run(main())


def test_deserialize_false_gives_plain_dicts(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start, expected = await history(core, 3)
        server.inject(ResetWatch(after_events=1), verb="watch")
        seen = []
        async with asyncio.timeout(20), new_watch() as watch:
            async for event in watch.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=start,
                deserialize=False,
            ):
                meta = event["object"]["metadata"]
                seen.append((event["type"], meta["name"], meta["resourceVersion"]))
                if len(seen) == len(expected):
                    watch.stop()
        assert seen == expected

    run_with_api(server, test)


def test_an_object_larger_than_aiohttps_line_buffer_arrives(server: FakeApiServer) -> None:
    """A 300 KB ConfigMap: the stock Watch's readline() refuses a line past 128 KiB."""

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        start = await version(core)
        big = "x" * 300_000
        obj = await core.create_namespaced_config_map(
            "default", {"metadata": {"name": "big"}, "data": {"blob": big}}
        )
        small = await create(core, "small")
        seen: list[Any] = []
        async with asyncio.timeout(20), new_watch() as watch:
            async for event in watch.stream(
                core.list_namespaced_config_map, "default", resource_version=start
            ):
                seen.append(event["object"])
                if len(seen) == 2:
                    watch.stop()
        assert seen[0].data["blob"] == big
        assert seen[0].metadata.resource_version == obj.metadata.resource_version
        assert seen[1].metadata.resource_version == small[2]

    run_with_api(server, test)


def test_follow_log_streams_stay_the_stock_lines() -> None:
    """``follow=True`` goes to the stock reader: lines as they come, no resume logic."""
    body = b"first line\nsecond line\n"
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(65536):
                pass  # Defensive: the request arrives in one read on loopback
            chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n" + chunked
            )

    thread = threading.Thread(target=serve)
    thread.start()

    async def main() -> list[str]:
        configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
        async with ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            async with asyncio.timeout(10), Watch() as watch:
                lines = [
                    line
                    async for line in watch.stream(
                        core.read_namespaced_pod_log, "pod", "default", follow=True
                    )
                ]
            assert api.stats().watch.restarts == 0
            return lines

    try:
        assert asyncio.run(main()) == ["first line\n", "second line\n"]
    finally:
        thread.join(5)
        listener.close()


def test_resource_expired_pickles_as_itself() -> None:
    error = ResourceExpired("Expired: too old resource version", body='{"code": 410}')
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ResourceExpired
    assert (copy.status, copy.reason, copy.body) == (410, error.reason, error.body)
