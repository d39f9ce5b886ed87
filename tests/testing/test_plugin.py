"""The pytest plugin's fixtures."""

from __future__ import annotations

import pytest
from kubernetes import client

from resilient_kube.testing import FakeApiServer

from .conftest import close, stock_client

_session_urls: list[str] = []


def test_kube_configuration_points_at_the_server(
    fake_api_server: FakeApiServer, kube_configuration: client.Configuration
) -> None:
    assert kube_configuration.host == fake_api_server.url
    assert kube_configuration.auth_settings()["BearerToken"]["value"] == (
        f"Bearer {fake_api_server.token}"
    )


@pytest.mark.parametrize("run", [1, 2])
def test_session_server_is_shared(fake_api_server_session: FakeApiServer, run: int) -> None:
    _session_urls.append(fake_api_server_session.url)
    assert set(_session_urls) == {fake_api_server_session.url}
    api = stock_client(fake_api_server_session)
    try:
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map("default", {"metadata": {"generateName": "kept-"}})
        kept = core.list_namespaced_config_map("default").items
        assert len(kept) >= len(_session_urls)  # objects from earlier tests are still there
    finally:
        close(api)


def test_start_twice_and_stop_twice() -> None:
    server = FakeApiServer()
    server.start()
    try:
        with pytest.raises(RuntimeError, match="once"):
            server.start()
    finally:
        server.stop()
        server.stop()


def test_ipv6_loopback() -> None:
    import socket

    if not socket.has_ipv6:  # Defensive: IPv6 is on everywhere this runs
        return
    try:
        server = FakeApiServer(host="::1").start()
    except OSError:  # Defensive: a kernel without ::1
        return
    try:
        assert server.url.startswith("http://[::1]:")
        api = stock_client(server)
        try:
            assert client.CoreV1Api(api).list_namespace().items
        finally:
            close(api)
    finally:
        server.stop()
