"""resilient_kube.aio on a real kube-apiserver: CRUD, a watch, and 429s absorbed.

The 429 burst is ``test_throttling``'s (32 tasks of LISTs against ``tiny_apiserver``, whose
max-in-flight filter refuses every read beyond the first with ``Retry-After: 1``), sent with
asyncio tasks through the stock ``kubernetes.aio`` client and through ours.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client, watch
from kubernetes.aio.client.exceptions import ApiException

from resilient_kube.aio import ClientFactory

from ..helpers.leaks import no_unclosed_resources
from .cluster import ApiServer
from .test_throttling import CALLS_PER_THREAD, SELECTED, SELECTOR, THREADS, fill_namespace

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
]


@pytest.fixture(autouse=True)
def _closes_everything() -> Iterator[None]:
    """Each test leaves no socket, transport or session unclosed (see helpers.leaks).

    The watch test's stream, released by ``Watch.close()``, used to stay open in its TLS
    shutdown past ``asyncio.run`` in about one run in three, to be collected with a
    ResourceWarning in a later test; ``ApiClient.close()`` now ends it (aio/_pool.py).
    """
    with no_unclosed_resources():
        yield


def configmap(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"v": value},
    }


def test_crud(apiserver: ApiServer, namespace: str) -> None:
    async def main() -> None:
        async with ClientFactory(kubeconfig=apiserver.kubeconfig) as kube:
            v1 = kube.core_v1()
            created = await v1.create_namespaced_config_map(namespace, configmap("a", "1"))
            assert created.metadata.uid
            got = await v1.read_namespaced_config_map("a", namespace)
            assert got.data == {"v": "1"}
            patched = await v1.patch_namespaced_config_map("a", namespace, {"data": {"v": "2"}})
            assert patched.data == {"v": "2"}
            got.data = {"v": "3"}
            with pytest.raises(ApiException) as conflict:  # got's resourceVersion is stale
                await v1.replace_namespaced_config_map("a", namespace, got)
            assert conflict.value.status == 409
            names = [
                cm.metadata.name for cm in (await v1.list_namespaced_config_map(namespace)).items
            ]
            assert "a" in names
            await v1.delete_namespaced_config_map("a", namespace)
            with pytest.raises(ApiException) as missing:
                await v1.read_namespaced_config_map("a", namespace)
            assert missing.value.status == 404
            stats = kube.stats()
            assert stats.transport.requests == stats.transport.attempts == 7
            assert stats.transport.failures == 0

    asyncio.run(main())


def test_watch_delivers_each_change_once(apiserver: ApiServer, namespace: str) -> None:
    async def main() -> None:
        async with ClientFactory(kubeconfig=apiserver.kubeconfig, deadline=2) as kube:
            v1 = kube.core_v1()
            listed = await v1.list_namespaced_config_map(namespace)
            version = listed.metadata.resource_version
            seen: list[tuple[str, str, str | None]] = []

            async def consume() -> None:
                async with watch.Watch() as w:
                    async for event in w.stream(
                        v1.list_namespaced_config_map,
                        namespace,
                        resource_version=version,
                        timeout_seconds=30,
                    ):
                        cm = event["object"]
                        seen.append((event["type"], cm.metadata.name, (cm.data or {}).get("v")))
                        if event["type"] == "DELETED":
                            w.stop()

            consumer = asyncio.create_task(consume())
            await v1.create_namespaced_config_map(namespace, configmap("w", "1"))
            await v1.patch_namespaced_config_map("w", namespace, {"data": {"v": "2"}})
            await v1.delete_namespaced_config_map("w", namespace)
            await asyncio.wait_for(consumer, timeout=30)
            assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]

    asyncio.run(main())


@pytest.fixture(scope="module")
def aio_tiny_namespace(tiny_apiserver: ApiServer) -> str:
    return fill_namespace(tiny_apiserver)


async def burst(core: Any) -> tuple[collections.Counter[str], float]:
    """``THREADS`` tasks x ``CALLS_PER_THREAD`` selective LISTs, all started at once."""
    counts: collections.Counter[str] = collections.Counter()

    async def task(namespace: str) -> None:
        for _ in range(CALLS_PER_THREAD):
            try:
                items = (
                    await core.list_namespaced_config_map(namespace, label_selector=SELECTOR)
                ).items
                assert len(items) == SELECTED
            except ApiException as exc:
                counts["throttled" if exc.status == 429 else f"error {exc.status}"] += 1
            except aiohttp.ClientError as exc:  # the stock client's, counted and reported
                counts[f"error {exc!r}"[:200]] += 1
            else:
                counts["ok"] += 1

    started = time.monotonic()
    await asyncio.gather(*(task(core.namespace) for _ in range(THREADS)))
    return counts, time.monotonic() - started


def test_429s_are_absorbed(
    tiny_apiserver: ApiServer, aio_tiny_namespace: str, e2e_results: dict[str, Any]
) -> None:
    calls = THREADS * CALLS_PER_THREAD

    async def stock() -> tuple[collections.Counter[str], float]:
        configuration = client.Configuration()
        from kubernetes.aio import config

        await config.load_kube_config(
            config_file=str(tiny_apiserver.kubeconfig), client_configuration=configuration
        )
        async with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            core.namespace = aio_tiny_namespace
            return await burst(core)

    async def ours() -> tuple[collections.Counter[str], float, dict[str, Any]]:
        async with ClientFactory(kubeconfig=tiny_apiserver.kubeconfig) as kube:
            core = kube.core_v1()
            core.namespace = aio_tiny_namespace
            counts, seconds = await burst(core)
            stats = kube.stats()
            return (
                counts,
                seconds,
                {
                    "attempts": stats.transport.attempts,
                    "retries_by_reason": stats.retry.retries_by_reason,
                    "budget_refusals": stats.retry.budget_refusals,
                    "backoff_seconds": round(stats.retry.backoff_seconds, 2),
                },
            )

    stock_counts, stock_seconds = asyncio.run(stock())
    our_counts, our_seconds, numbers = asyncio.run(ours())
    e2e_results["aio_max_inflight_429"] = {
        "tasks": THREADS,
        "calls_per_task": CALLS_PER_THREAD,
        "stock": {**stock_counts, "seconds": round(stock_seconds, 2)},
        "resilient": {**our_counts, "seconds": round(our_seconds, 2), **numbers},
    }
    assert stock_counts["throttled"] > 0, stock_counts
    assert our_counts["ok"] == calls, (our_counts, numbers)
    retried = numbers["retries_by_reason"].get("status_429", 0)
    assert retried > 0
    assert numbers["attempts"] == calls + sum(numbers["retries_by_reason"].values())
    # The server said "Retry-After: 1": no retry went out sooner.
    assert numbers["backoff_seconds"] >= retried * 1.0 - 0.01
