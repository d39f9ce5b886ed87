"""pytest fixtures for ``FakeApiServer``, registered through the ``pytest11`` entry point.

Fixtures:
    ``fake_api_server``: a plain-HTTP server per test.
    ``fake_api_server_session``: one plain-HTTP server for the whole session; objects,
    faults and counters carry over between tests, so call ``clear_faults()`` and
    ``reset_stats()`` where it matters.
    ``fake_api_server_tls``: a TLS server per test.
    ``kube_configuration``: the ``kubernetes.client.Configuration`` for ``fake_api_server``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ._server import FakeApiServer

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = [
    "fake_api_server",
    "fake_api_server_session",
    "fake_api_server_tls",
    "kube_configuration",
]


@pytest.fixture
def fake_api_server() -> Iterator[FakeApiServer]:
    """A started ``FakeApiServer`` on plain HTTP, stopped after the test."""
    with FakeApiServer() as server:
        yield server


@pytest.fixture(scope="session")
def fake_api_server_session() -> Iterator[FakeApiServer]:
    """One ``FakeApiServer`` shared by the session; state is not reset between tests."""
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def fake_api_server_tls() -> Iterator[FakeApiServer]:
    """A started ``FakeApiServer`` on HTTPS with its own CA (needs ``trustme``)."""
    with FakeApiServer(tls=True) as server:
        yield server


@pytest.fixture
def kube_configuration(fake_api_server: FakeApiServer) -> Configuration:
    """A ``kubernetes.client.Configuration`` pointing at ``fake_api_server``."""
    return fake_api_server.configuration()
