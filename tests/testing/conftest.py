"""Fixtures for the FakeApiServer tests: stock ``kubernetes`` clients and a thread-leak guard."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes import client

from resilient_kube.testing import FakeApiServer

# The plugin's fixtures, for runs where the package is not installed (no pytest11 entry point).
from resilient_kube.testing.pytest_plugin import (
    fake_api_server,
    fake_api_server_session,
    fake_api_server_tls,
    kube_configuration,
)

__all__ = [
    "fake_api_server",
    "fake_api_server_session",
    "fake_api_server_tls",
    "kube_configuration",
]


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Every server thread a test starts must be gone once its fixtures are torn down."""
    before = set(threading.enumerate())
    yield
    started = [
        t for t in threading.enumerate() if t not in before and t.name.startswith("fake-api-server")
    ]
    for thread in started:
        thread.join(5.0)
    leaked = [t.name for t in started if t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


def stock_client(server: FakeApiServer) -> client.ApiClient:
    """A stock ``kubernetes`` ApiClient for ``server`` without urllib3 retries.

    Without retries the client raises the raw urllib3 error (``ProtocolError``,
    ``ReadTimeoutError``, ...) that each fault produces.
    """
    config = server.configuration()
    config.retries = False
    return client.ApiClient(config)


def close(api: client.ApiClient) -> None:
    api.close()


@pytest.fixture
def api_client(fake_api_server: FakeApiServer) -> Iterator[client.ApiClient]:
    api = stock_client(fake_api_server)
    yield api
    close(api)


@pytest.fixture
def core(api_client: client.ApiClient) -> Any:
    return client.CoreV1Api(api_client)


def new_watch() -> Any:
    return kubernetes.watch.Watch()
