"""Helpers for the asyncio watch and informer tests: a known history, a recorder, bounded waits.

Each test drives its coroutine with ``asyncio.run`` (see conftest.py); nothing sleeps to let
things settle: the tests wait for a known count of events, each wait bounded.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes.aio import client

from resilient_kube.aio import ApiClient, SharedInformer, Watch
from resilient_kube.testing import FakeApiServer

from .conftest import aio_configuration

__all__ = [
    "Call",
    "Ceiling",
    "Recorder",
    "collect",
    "create",
    "history",
    "modify",
    "new_watch",
    "no_wait",
    "run_with_api",
    "version",
]

Call = tuple[str, str, str]


def run_with_api(
    server: FakeApiServer,
    test: Callable[[ApiClient, client.CoreV1Api], Awaitable[None]],
    **tuning: Any,
) -> None:
    """Run ``test(api, core)`` in a fresh loop on a client that is closed after it.

    ``watch_idle_timeout`` is 0.5 s unless given: a silent stream is cut quickly.
    """
    tuning.setdefault("watch_idle_timeout", 0.5)

    async def main() -> None:
        async with ApiClient(aio_configuration(server), **tuning) as api:
            await test(api, client.CoreV1Api(api))

    asyncio.run(main())


async def no_wait(seconds: float) -> None:
    """A backoff wait that returns at once."""


class Ceiling(random.Random):
    """Draws the top of every jitter interval, so that a wait reads back as its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def create(core: client.CoreV1Api, name: str) -> Call:
    obj = await core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    return ("ADDED", name, obj.metadata.resource_version)


async def modify(core: client.CoreV1Api, name: str, value: str) -> Call:
    obj = await core.patch_namespaced_config_map(name, "default", {"data": {"v": value}})
    return ("MODIFIED", name, obj.metadata.resource_version)


async def version(core: client.CoreV1Api) -> str:
    listed = await core.list_namespaced_config_map("default")
    return str(listed.metadata.resource_version)


async def history(core: client.CoreV1Api, count: int = 12) -> tuple[str, list[Call]]:
    """Write ``count`` changes to ConfigMaps; return the version before them and the events."""
    start = await version(core)
    expected: list[Call] = []
    for i in range(count):
        name = f"cm{i // 3}"
        step = i % 3
        if step == 0:
            expected.append(await create(core, name))
        elif step == 1:
            expected.append(await modify(core, name, str(i)))
        else:
            await core.delete_namespaced_config_map(name, "default")
            expected.append(("DELETED", name, await version(core)))
    return start, expected


def new_watch(waits: list[float] | None = None, **kwargs: Any) -> Watch:
    """A watch whose backoff waits are recorded, not slept."""
    record = waits if waits is not None else []

    async def sleep(seconds: float) -> None:
        record.append(seconds)

    kwargs.setdefault("rng", random.Random(3))
    return Watch(sleep=sleep, **kwargs)


async def collect(
    watch: Watch, core: client.CoreV1Api, count: int, *, timeout: float = 20, **kwargs: Any
) -> list[Call]:
    """Watch ConfigMaps until ``count`` events arrived (at most ``timeout`` seconds)."""
    seen: list[Call] = []
    async with asyncio.timeout(timeout), watch:
        async for event in watch.stream(core.list_namespaced_config_map, "default", **kwargs):
            raw = event["raw_object"]["metadata"]
            seen.append((event["type"], raw["name"], raw["resourceVersion"]))
            if len(seen) == count:
                watch.stop()
    return seen


class Recorder:
    """Records handler calls as ``(type, name, resourceVersion)``; waits for a count of them.

    ADDED and DELETED are coroutine handlers, MODIFIED a plain one: the informer takes both.
    """

    def __init__(self, informer: SharedInformer) -> None:
        self.calls: list[Call] = []
        self.errors: list[BaseException] = []
        self._changed = asyncio.Event()
        informer.add_event_handler("ADDED", self._async_handler("ADDED"))
        informer.add_event_handler("DELETED", self._async_handler("DELETED"))
        informer.add_event_handler("MODIFIED", self._sync_handler("MODIFIED"))
        informer.add_event_handler("ERROR", self.errors.append)

    def _sync_handler(self, kind: str) -> Callable[[Any], None]:
        def handle(obj: Any) -> None:
            self.calls.append((kind, obj.metadata.name, obj.metadata.resource_version))
            self._changed.set()

        return handle

    def _async_handler(self, kind: str) -> Callable[[Any], Awaitable[None]]:
        record = self._sync_handler(kind)

        async def handle(obj: Any) -> None:
            record(obj)

        return handle

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Call]:
        async with asyncio.timeout(timeout):
            while len(self.calls) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.calls)
