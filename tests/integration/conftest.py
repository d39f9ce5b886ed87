from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from resilient_kube.testing import FakeApiServer
from tests.helpers.loopback import Relay


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as fake:
        yield fake


@pytest.fixture
def configuration(server: FakeApiServer) -> client.Configuration:
    return server.configuration()


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    started: list[Relay] = []
    yield started
    for relay in started:
        relay.close()


def configmap(name: str, namespace: str = "default", **labels: str) -> dict[str, object]:
    """A ConfigMap body as users write it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"key": "value"},
    }
