"""``resilient_kube.aio.SharedInformer`` on a real kube-apiserver: sync, then a create and a delete.

The informer syncs a namespace's ConfigMaps (paginated list, then a watch from the list's
version); a ConfigMap created and deleted afterwards reaches the handlers exactly once each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from resilient_kube.aio import ClientFactory

from ..helpers.leaks import no_unclosed_resources
from .cluster import ApiServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
]


@pytest.fixture(autouse=True)
def _closes_everything() -> Iterator[None]:
    """The informer's stream, given up by ``stop()``, is closed with the client (aio/_pool.py)."""
    with no_unclosed_resources():
        yield


def test_informer_sees_a_create_and_a_delete_once(apiserver: ApiServer, namespace: str) -> None:
    async def main() -> None:
        async with ClientFactory(kubeconfig=apiserver.kubeconfig) as kube:
            v1 = kube.core_v1()
            for i in range(3):
                body = {"metadata": {"name": f"before-{i}"}, "data": {"i": str(i)}}
                await v1.create_namespaced_config_map(namespace, body)
            calls: list[tuple[str, str]] = []
            changed = asyncio.Event()

            def record(kind: str) -> Any:
                async def handle(obj: Any) -> None:
                    calls.append((kind, obj.metadata.name))
                    changed.set()

                return handle

            async def wait_for(count: int) -> list[tuple[str, str]]:
                async with asyncio.timeout(30):
                    while len(calls) < count:
                        changed.clear()
                        await changed.wait()
                return list(calls)

            informer = kube.informer(
                v1.list_namespaced_config_map, namespace=namespace, page_size=2
            )
            for kind in ("ADDED", "MODIFIED", "DELETED"):
                informer.add_event_handler(kind, record(kind))
            async with informer:
                assert await informer.wait_for_sync(30)
                listed = await wait_for(3)
                # kube-root-ca.crt is published into every namespace by the controller manager,
                # which this cluster does not run: the list is exactly ours.
                assert sorted(listed) == [("ADDED", f"before-{i}") for i in range(3)]
                await v1.create_namespaced_config_map(namespace, {"metadata": {"name": "new"}})
                assert (await wait_for(4))[3:] == [("ADDED", "new")]
                assert informer.cache.get_by_key(f"{namespace}/new") is not None
                await v1.delete_namespaced_config_map("new", namespace)
                assert (await wait_for(5))[3:] == [("ADDED", "new"), ("DELETED", "new")]
                assert informer.cache.get_by_key(f"{namespace}/new") is None
                # Nothing more comes: let the stream deliver anything pending, bounded.
                await asyncio.sleep(0.5)
            assert len(calls) == 5
            assert kube.stats().watch.relists == 1

    asyncio.run(main())
