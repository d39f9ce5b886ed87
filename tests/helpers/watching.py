"""Set-up shared by the watch and informer tests on the fake server.

The fixtures ``server``, ``api`` and ``core`` are imported by the test modules that use them
(``from tests.helpers.watching import api, core, server``), so that they replace the plainer
``server`` of ``tests/integration/conftest.py`` in those modules only. Events are compared as
``(type, name, resourceVersion)`` tuples, so that one delivered twice, skipped or out of order
fails the comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

import resilient_kube
from resilient_kube.testing import FakeApiServer

__all__ = ["NAMESPACE", "Event", "api", "core", "create", "event_of", "modify", "server"]

#: ``(type, name, resourceVersion)`` of one delivered event or handler call.
Event = tuple[str, str, str]

#: Where the tests write their ConfigMaps.
NAMESPACE = "default"


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    """The fake API server, with no bookmark within a test's time (every 60 s)."""
    with FakeApiServer(bookmark_interval=60) as fake:
        yield fake


@pytest.fixture
def api(server: FakeApiServer) -> Iterator[resilient_kube.ApiClient]:
    """A resilient client of ``server`` that gives a silent stream up after 0.5 s."""
    api = resilient_kube.ApiClient(server.configuration(), watch_idle_timeout=0.5)
    yield api
    api.close()


@pytest.fixture
def core(api: resilient_kube.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def event_of(kind: str, metadata: Any) -> Event:
    """The event tuple of ``kind`` for an object's metadata, a model's or a plain dict's."""
    if isinstance(metadata, dict):
        return (kind, metadata["name"], metadata["resourceVersion"])
    return (kind, metadata.name, metadata.resource_version)


def create(core: client.CoreV1Api, name: str) -> Event:
    """Create the ConfigMap ``name``; the ADDED event a watcher gets for it."""
    obj = core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name}})
    return event_of("ADDED", obj.metadata)


def modify(core: client.CoreV1Api, name: str, value: str, *, key: str = "v") -> Event:
    """Set ``data[key]`` of the ConfigMap ``name``; the MODIFIED event a watcher gets for it."""
    obj = core.patch_namespaced_config_map(name, NAMESPACE, {"data": {key: value}})
    return event_of("MODIFIED", obj.metadata)
