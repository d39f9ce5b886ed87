"""The key scenarios again, through ``resilient_kube.ApiClient`` instead of the stock client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

import resilient_kube
from resilient_kube.testing import (
    FakeApiServer,
    FullAcceptQueueListener,
    ResetConnection,
    Stall,
    StatusFault,
)

from .conftest import close, new_watch


@pytest.fixture
def resilient(fake_api_server: FakeApiServer) -> Iterator[resilient_kube.ApiClient]:
    api = resilient_kube.ApiClient(fake_api_server.configuration(), backoff_base=0.01)
    yield api
    api.close()


def test_crud_and_watch(resilient: resilient_kube.ApiClient) -> None:
    core = client.CoreV1Api(resilient)
    created = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    assert core.read_namespaced_config_map("a", "default").data == {"k": "v"}
    events = [
        (e["type"], e["object"].metadata.name)
        for e in new_watch().stream(
            core.list_namespaced_config_map, "default",
            resource_version=created.metadata.resource_version, timeout_seconds=1,
        )
    ]  # fmt: skip
    assert events == [("MODIFIED", "a")]
    core.delete_namespaced_config_map("a", "default")


def test_retries_503_with_retry_after(
    fake_api_server: FakeApiServer, resilient: resilient_kube.ApiClient
) -> None:
    fake_api_server.inject(StatusFault(503, retry_after=0), verb="list", times=2)
    assert client.CoreV1Api(resilient).list_namespace().items
    assert fake_api_server.request_count("list") == 3


def test_retries_a_reset_get(
    fake_api_server: FakeApiServer, resilient: resilient_kube.ApiClient
) -> None:
    fake_api_server.inject(ResetConnection(), verb="get")
    assert client.CoreV1Api(resilient).read_namespace("default").metadata.name == "default"
    assert fake_api_server.request_count("get") == 2


def test_does_not_retry_a_reset_create(
    fake_api_server: FakeApiServer, resilient: resilient_kube.ApiClient
) -> None:
    fake_api_server.inject(ResetConnection(), verb="create")
    with pytest.raises(resilient_kube.ConnectionReset):
        client.CoreV1Api(resilient).create_namespaced_config_map(
            "default", {"metadata": {"name": "once"}}
        )
    assert fake_api_server.request_count("create") == 1


def test_stall_is_a_read_timeout(fake_api_server: FakeApiServer) -> None:
    fake_api_server.inject(Stall(), times=None)
    api = resilient_kube.ApiClient(
        fake_api_server.configuration(), read_timeout=0.3, max_attempts=1
    )
    try:
        with pytest.raises(resilient_kube.ReadTimeout):
            client.CoreV1Api(api).list_namespace()
    finally:
        api.close()


def test_full_accept_queue_is_a_connect_timeout() -> None:
    with FullAcceptQueueListener() as listener:
        api = resilient_kube.ApiClient(
            client.Configuration(host=listener.url), connect_timeout=0.5, max_attempts=1
        )
        try:
            with pytest.raises(resilient_kube.ConnectTimeout):
                client.CoreV1Api(api).list_namespace()
        finally:
            api.close()


def test_tls_and_mutual_tls() -> None:
    with FakeApiServer(tls=True, client_cert=True) as server:
        api = resilient_kube.ApiClient(server.configuration())
        try:
            assert client.CoreV1Api(api).list_namespace().items
        finally:
            close(api)
