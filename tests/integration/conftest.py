from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from resilient_kube.testing import FakeApiServer
from tests.helpers.loopback import Relay
from tests.helpers.objects import configmap

__all__ = ["configmap"]  # the tests import it from here too


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
