"""Fixtures for the asyncio client's tests: a fake server and ``kubernetes.aio`` configurations.

pytest-asyncio is not a dependency: each test drives its coroutine with ``asyncio.run``, which
also proves that a client built outside a loop works inside one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.aio import client

from resilient_kube.testing import FakeApiServer

from ..helpers.leaks import no_unclosed_resources


@pytest.fixture(autouse=True)
def _closes_everything() -> Iterator[None]:
    """Every asyncio test leaves no socket, transport or session unclosed (see helpers.leaks)."""
    with no_unclosed_resources():
        yield


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as fake:
        yield fake


def aio_configuration(server: FakeApiServer) -> client.Configuration:
    """A ``kubernetes.aio`` configuration for ``server`` (host, token, CA when TLS)."""
    sync = server.configuration()
    config = client.Configuration(
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


def configmap(name: str, namespace: str = "default", **labels: str) -> dict[str, object]:
    """A ConfigMap body as users write it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"key": "value"},
    }
