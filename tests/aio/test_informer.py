"""``resilient_kube.aio.SharedInformer`` on the fake server: sync, faults, relist difference.

The asyncio twin of tests/integration/test_informer.py. Handlers record every call; the tests
wait for a known count of calls (bounded) and compare the whole sequence, so an event delivered
twice, skipped or out of order fails them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.aio import client

from resilient_kube.aio import ApiClient, ClientFactory, SharedInformer
from resilient_kube.testing import (
    EndWatch,
    FakeApiServer,
    ResetWatch,
    SilentWatch,
    StatusFault,
    TruncatedBody,
)
from tests.helpers.clock import FakeClock

from .conftest import aio_configuration
from .watching import Call, Recorder, create, modify, no_wait, run_with_api


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=60) as fake:
        yield fake


def informer_on(core: client.CoreV1Api, **kwargs: Any) -> SharedInformer:
    kwargs.setdefault("sleep", no_wait)
    kwargs.setdefault("rng", random.Random(5))
    return SharedInformer(core.list_namespaced_config_map, namespace="default", **kwargs)


async def server_state(core: client.CoreV1Api) -> dict[str, tuple[str, str]]:
    items = (await core.list_namespaced_config_map("default")).items
    return {
        f"default/{o.metadata.name}": (o.metadata.uid, o.metadata.resource_version) for o in items
    }


def cache_state(informer: SharedInformer) -> dict[str, tuple[str, str]]:
    return {
        key: (o.metadata.uid, o.metadata.resource_version)
        for key in informer.cache.list_keys()
        if (o := informer.cache.get_by_key(key)) is not None
    }


def test_lists_in_pages_then_syncs(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        expected = [await create(core, f"c{i}") for i in range(5)]
        informer = informer_on(core, page_size=2)
        recorder = Recorder(informer)
        assert not informer.has_synced()
        assert not await informer.wait_for_sync(0.01)  # not started: the timeout answers
        async with informer:
            assert await informer.wait_for_sync(10)
            assert informer.has_synced()
            assert await recorder.wait_for(5) == expected
            assert server.request_count("list") == 3  # 2 + 2 + 1
            assert cache_state(informer) == await server_state(core)
            later = [await create(core, "late"), await modify(core, "c0", "1")]
            assert await recorder.wait_for(7) == expected + later
        assert not recorder.errors
        assert api.stats().watch.relists == 1

    run_with_api(server, test)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(ResetWatch(after_events=2), "reset", id="reset"),
        pytest.param(EndWatch(after_events=1), "ended", id="early-end"),
        pytest.param(TruncatedBody(), "truncated", id="truncated"),
        pytest.param(SilentWatch(after_events=1), "idle", id="silence"),
    ],
)
def test_watch_faults_lose_nothing(server: FakeApiServer, fault: Any, reason: str) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        first = [await create(core, "a")]
        informer = informer_on(core)
        recorder = Recorder(informer)
        server.inject(fault, verb="watch")  # the informer's first watch gets it
        async with informer:
            assert await recorder.wait_for(1) == first
            # Written before the watch opens or while it is open: all arrive, once, in order.
            later = [
                await create(core, "b"),
                await modify(core, "a", "1"),
                await create(core, "c"),
                await modify(core, "b", "2"),
            ]
            assert await recorder.wait_for(5) == first + later
            assert cache_state(informer) == await server_state(core)
        assert recorder.calls == first + later
        assert reason in api.stats().watch.restarts_by_reason

    run_with_api(server, test)


def test_expired_watch_relists_and_delivers_only_the_difference(server: FakeApiServer) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        initial = [await create(core, name) for name in ("gone", "changed", "replaced", "same")]
        old_gone = await core.read_namespaced_config_map("gone", "default")
        old_replaced = await core.read_namespaced_config_map("replaced", "default")
        expected_after: list[Call] = []

        async def while_disconnected(seconds: float) -> None:
            # The informer's first backoff wait: the stream is down. Change the world, then
            # compact so that resuming from the old version gets 410.
            if expected_after:
                return
            await core.delete_namespaced_config_map("gone", "default")
            await core.delete_namespaced_config_map("replaced", "default")
            replaced = await create(core, "replaced")  # same name, new uid
            changed = await modify(core, "changed", "x")
            added = await create(core, "new")
            server.compact()
            expected_after.extend(
                [
                    ("DELETED", "gone", old_gone.metadata.resource_version),
                    ("DELETED", "replaced", old_replaced.metadata.resource_version),
                    changed,
                    replaced,
                    added,
                ]
            )

        informer = informer_on(core, sleep=while_disconnected)
        recorder = Recorder(informer)
        server.inject(ResetWatch(after_events=0), verb="watch")
        async with informer:
            calls = await recorder.wait_for(len(initial) + 5)
            assert sorted(calls[: len(initial)]) == sorted(initial)  # a list comes in name order
            # Deletions first (the old object behind a new uid too), then changes and
            # additions, nothing for "same", whose resourceVersion did not change.
            head, tail = calls[len(initial) : len(initial) + 2], calls[len(initial) + 2 :]
            assert head == expected_after[:2]
            assert sorted(tail) == sorted(expected_after[2:])
            assert cache_state(informer) == await server_state(core)
            last = await create(core, "after-relist")  # and it watches on from the new list
            assert (await recorder.wait_for(len(initial) + 6))[-1] == last
        assert len(recorder.calls) == len(initial) + 6
        assert api.stats().watch.relists == 2
        assert any(getattr(e, "status", None) == 410 for e in recorder.errors)

    run_with_api(server, test)


@pytest.mark.parametrize("code", [401, 403])
def test_unauthorized_waits_instead_of_looping(server: FakeApiServer, code: int) -> None:
    clock = FakeClock()
    waits: list[float] = []

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        thirty_seconds = asyncio.Event()

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            clock.now += seconds
            if clock.now - FakeClock.START >= 30:
                thirty_seconds.set()
                await asyncio.Event().wait()  # parked here until stop() cancels the task

        server.inject(StatusFault(code), verb="list", times=None)
        informer = informer_on(core, clock=clock, sleep=sleep)
        recorder = Recorder(informer)
        async with informer:
            async with asyncio.timeout(10):
                await thirty_seconds.wait()
        lists = server.request_count("list")
        assert 3 <= lists <= 12, lists  # 30 s of backoff from 0.8 s, no hot loop
        assert len(waits) == lists
        assert all(getattr(e, "status", None) == code for e in recorder.errors)
        assert len(recorder.errors) == lists
        assert not informer.has_synced()

    run_with_api(server, test)


def test_handler_errors_are_logged_and_do_not_stop_it(
    server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        informer = informer_on(core)

        async def broken(obj: Any) -> None:
            raise RuntimeError("handler bug")

        informer.add_event_handler("ADDED", broken)
        recorder = Recorder(informer)
        with caplog.at_level(logging.ERROR, logger="resilient_kube.aio._informer"):
            async with informer:
                expected = [await create(core, "a"), await create(core, "b")]
                assert await recorder.wait_for(2) == expected
        failures = [r for r in caplog.records if "handler" in r.getMessage()]
        assert len(failures) == 2
        assert all(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in failures)

    run_with_api(server, test)


def test_run_in_the_callers_task_until_stop(server: FakeApiServer) -> None:
    """``await run()`` instead of ``start()``: ``stop()`` from another task ends it cleanly."""

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        informer = informer_on(core)
        recorder = Recorder(informer)
        running = asyncio.create_task(informer.run())
        expected = [await create(core, "a")]
        assert await informer.wait_for_sync(10)
        assert await recorder.wait_for(1) == expected
        await informer.stop()
        async with asyncio.timeout(5):
            await running  # returns, not cancelled
        assert running.result() is None

    run_with_api(server, test, watch_idle_timeout=None)


def test_stop_is_prompt_in_a_backoff_wait(server: FakeApiServer) -> None:
    """The default wait (no ``sleep=``) ends at ``stop()``; the informer's task is gone."""

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        server.inject(StatusFault(403), verb="list", times=None)
        informer = SharedInformer(core.list_namespaced_config_map, namespace="default")
        recorder = Recorder(informer)
        task = informer.start()
        assert informer.start() is task  # started once
        async with asyncio.timeout(10):
            while not recorder.errors:
                await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            await informer.stop()
        assert task.done()
        assert server.request_count("list") == 1

    run_with_api(server, test)


def test_resync_replays_the_cache_to_modified_handlers(server: FakeApiServer) -> None:
    """``resync_period=1``: the watch asks for 1 s, then the cache is replayed, not listed again."""

    async def test(api: ApiClient, core: client.CoreV1Api) -> None:
        expected = [await create(core, "a"), await create(core, "b")]
        informer = informer_on(core, resync_period=1)
        recorder = Recorder(informer)
        async with informer:
            assert await recorder.wait_for(2) == expected
            replayed = (await recorder.wait_for(4))[2:]
        assert sorted(replayed) == [("MODIFIED", name, rv) for _, name, rv in expected]
        assert server.request_count("list") == 1
        assert server.request_count("watch") >= 1

    run_with_api(server, test, watch_idle_timeout=5)


def test_factory_builds_informers(server: FakeApiServer) -> None:
    async def main() -> None:
        async with ClientFactory(aio_configuration(server)) as kube:
            informer = kube.informer(kube.core_v1().list_namespaced_config_map, namespace="default")
            named = kube.informer("list_namespaced_config_map", namespace="default")
            assert isinstance(named, SharedInformer)
            recorder = Recorder(informer)
            async with informer:
                assert await informer.wait_for_sync(10)
                expected = [await create(kube.core_v1(), "x")]
                assert await recorder.wait_for(1) == expected
            assert kube.stats().watch.relists == 1

    asyncio.run(main())
