"""A 401 to credentials that can be refreshed: fetch fresh ones once, replay once (issue 16)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from resilient_kube import ApiClient
from resilient_kube.testing import FakeApiServer, StatusFault


class RotatingToken:
    """A refresh hook like the loaders' (it runs before every call): it serves ``current``."""

    def __init__(self, token: str) -> None:
        self.current = token
        self.lock = threading.Lock()

    def __call__(self, configuration: client.Configuration) -> None:
        with self.lock:
            configuration.api_key["authorization"] = self.current


@pytest.fixture
def auth_server() -> Iterator[FakeApiServer]:
    with FakeApiServer(authenticate=True) as fake:
        yield fake


def rotating_client(server: FakeApiServer, **tuning: Any) -> tuple[ApiClient, RotatingToken]:
    configuration = server.configuration()
    hook = RotatingToken(server.token)
    configuration.refresh_api_key_hook = hook
    return ApiClient(configuration, **tuning), hook


def test_a_401_fetches_fresh_credentials_and_replays_once(auth_server: FakeApiServer) -> None:
    api_client, hook = rotating_client(auth_server)
    v1 = client.CoreV1Api(api_client)
    v1.list_namespace()
    # The server rotates first; the hook would only learn of it on the next call: in between,
    # the call in flight meets a 401 with the old token.
    auth_server.token = hook.current = "rotated"
    original = api_client.configuration.refresh_api_key_hook
    sent_old = threading.Event()

    def lagging_hook(configuration: client.Configuration) -> None:
        if not sent_old.is_set():
            sent_old.set()
            configuration.api_key["authorization"] = "stale"  # the first read is behind
        else:
            original(configuration)

    api_client.configuration.refresh_api_key_hook = lagging_hook
    auth_server.reset_stats()
    for verb in ("POST", "GET"):  # any verb: authentication rejects before any work
        if verb == "POST":
            v1.create_namespaced_config_map(
                "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"))
            )
        else:
            v1.read_namespaced_config_map("cm", "default")
    assert auth_server.stats().responses_by_status.get(401) == 1
    assert auth_server.request_count("create") == 2  # the 401, then the replay
    assert api_client.stats().retry.retries_by_reason == {"unauthorized": 1}
    api_client.close()


def test_a_second_401_is_final(auth_server: FakeApiServer) -> None:
    api_client, _ = rotating_client(auth_server)
    v1 = client.CoreV1Api(api_client)
    auth_server.token = "nobody-has-this"
    auth_server.reset_stats()
    with pytest.raises(client.ApiException) as caught:
        v1.list_namespace()
    assert caught.value.status == 401
    # The hook has nothing newer: no replay at all (the same header would meet the same 401).
    assert auth_server.request_count("list") == 1
    # A source that hands out a new, also rejected, token on every read: rejected, refreshed,
    # replayed once, rejected again: final.
    tokens = iter(f"wrong-{n}" for n in range(100))
    api_client.configuration.refresh_api_key_hook = lambda configuration: (
        configuration.api_key.update(authorization=next(tokens))
    )
    auth_server.reset_stats()
    with pytest.raises(client.ApiException) as caught:
        v1.list_namespace()
    assert caught.value.status == 401
    assert auth_server.request_count("list") == 2
    api_client.close()


def test_a_403_is_never_replayed(server: FakeApiServer) -> None:
    api_client, _ = rotating_client(server)
    v1 = client.CoreV1Api(api_client)
    server.inject(StatusFault(403), verb="list", times=1)
    with pytest.raises(client.ApiException) as caught:
        v1.list_namespace()
    assert caught.value.status == 403
    assert server.request_count("list") == 1
    api_client.close()
