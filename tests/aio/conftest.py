"""Fixtures for the asyncio client's tests: a fake server and ``kubernetes.aio`` configurations.

pytest-asyncio is not a dependency: each test drives its coroutine with ``asyncio.run``, which
also proves that a client built outside a loop works inside one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.aio import client

from resilient_kube.testing import FakeApiServer

from ..helpers.leaks import no_unclosed_resources
from ..helpers.objects import configmap

__all__ = ["aio_configuration", "configmap"]  # the tests import them from here


@pytest.fixture(autouse=True)
def _closes_everything() -> Iterator[None]:
    """Every asyncio test leaves no socket, transport or session unclosed (see helpers.leaks)."""
    with no_unclosed_resources():
        yield


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as fake:
        yield fake


def aio_configuration(server: FakeApiServer, configuration_class: Any = None) -> Any:
    """A ``kubernetes.aio`` configuration for ``server`` (host, token, CA when TLS).

    ``configuration_class``: another client's ``Configuration`` (kubernetes_asyncio's).
    """
    sync = server.configuration()
    config = (configuration_class or client.Configuration)(
        host=sync.host,
        api_key={"BearerToken": server.token},
        api_key_prefix={"BearerToken": "Bearer"},
    )
    config.ssl_ca_cert = sync.ssl_ca_cert
    config.cert_file = sync.cert_file
    config.key_file = sync.key_file
    return config


@pytest.fixture
def configuration(server: FakeApiServer) -> client.Configuration:
    return aio_configuration(server)
