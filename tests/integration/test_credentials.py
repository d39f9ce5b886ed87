"""Credential sources that refresh themselves: token files (issue 16)."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, watch

from resilient_kube import ApiClient, ClientFactory, CredentialError
from resilient_kube._credentials import (
    AuthProviderCredentials,
    CredentialSpec,
    TokenFileCredentials,
)
from resilient_kube.testing import FakeApiServer
from tests.helpers.clock import FakeClock
from tests.helpers.tokens import ProjectedToken


@pytest.fixture
def auth_server() -> Iterator[FakeApiServer]:
    with FakeApiServer(authenticate=True, token="token-0") as fake:
        yield fake


def kubeconfig_with(path: Path, server: FakeApiServer, user: dict[str, object]) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
        "users": [{"name": "fake", "user": user}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def run_threads(
    threads: int, work: Callable[[], None], until: Callable[[], bool], *, seconds: float
) -> list[BaseException]:
    """``threads`` threads call ``work`` in a loop until ``until()`` or ``seconds`` pass."""
    errors: list[BaseException] = []
    stop_at = time.monotonic() + seconds

    def loop() -> None:
        while not until() and time.monotonic() < stop_at:
            try:
                work()
            except BaseException as exc:  # collected, the test asserts on them
                errors.append(exc)
                return

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    return errors


class CallCounter:
    """Counts successful calls; the test waits on it instead of sleeping."""

    def __init__(self) -> None:
        self.count = 0
        self.condition = threading.Condition()

    def add(self) -> None:
        with self.condition:
            self.count += 1
            self.condition.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.condition:
            assert self.condition.wait_for(lambda: self.count >= count, timeout), self.count


def test_a_token_file_swapped_through_a_symlink_is_read_again(
    auth_server: FakeApiServer, tmp_path: Path
) -> None:
    volume = ProjectedToken(tmp_path, "token-0")
    clock = FakeClock()
    api_client = ApiClient(
        auth_server.configuration(),
        credential_spec=CredentialSpec(token_file=str(volume.path)),
        clock=clock,
    )
    v1 = client.CoreV1Api(api_client)
    v1.list_namespace()
    # The kubelet writes the new token first; the old one stops working afterwards.
    volume.rotate("token-1")
    auth_server.token = "token-1"
    # Within the check interval the file is not looked at: the 401 reads it, the call is
    # replayed once and succeeds.
    v1.list_namespace()
    stats = api_client.stats().credentials
    assert stats.replays == 1
    assert stats.refreshes_by_source == {"token_file": 2}
    assert auth_server.stats().responses_by_status.get(401) == 1
    # Past the interval the next call notices the swap (a new inode) before it is sent: no 401.
    volume.rotate("token-2")
    auth_server.token = "token-2"
    clock.now += 1.0
    v1.list_namespace()
    stats = api_client.stats().credentials
    assert stats.replays == 1
    assert stats.refreshes_by_source == {"token_file": 3}
    assert auth_server.stats().responses_by_status.get(401) == 1
    # Unchanged, the file is only looked at, not read.
    clock.now += 5.0
    v1.list_namespace()
    assert api_client.stats().credentials.refreshes_by_source == {"token_file": 3}
    api_client.close()


def test_a_401_storm_on_many_threads_ends_in_one_read_per_rotation(
    auth_server: FakeApiServer, tmp_path: Path
) -> None:
    volume = ProjectedToken(tmp_path, "token-0")
    api_client = ApiClient(
        auth_server.configuration(),
        credential_spec=CredentialSpec(token_file=str(volume.path)),
        clock=FakeClock(),  # never past the check interval: only 401s notice a rotation
        qps=None,  # the limiter would wait on the fake clock
    )
    v1 = client.CoreV1Api(api_client)
    calls = CallCounter()
    rotations = 5
    done = threading.Event()

    def work() -> None:
        v1.list_namespace()
        calls.add()

    def rotate() -> None:
        try:
            for n in range(1, rotations + 1):
                calls.wait_for(calls.count + 40)
                volume.rotate(f"token-{n}")
                auth_server.token = f"token-{n}"
            calls.wait_for(calls.count + 40)
        finally:
            done.set()

    rotator = threading.Thread(target=rotate)
    rotator.start()
    errors = run_threads(8, work, done.is_set, seconds=60)
    rotator.join(10)
    assert errors == []
    stats = api_client.stats().credentials
    # One read at the start and exactly one per rotation, however many threads met the 401.
    assert stats.refreshes_by_source == {"token_file": 1 + rotations}
    assert stats.failures == 0
    unauthorized = auth_server.stats().responses_by_status.get(401, 0)
    print("storm:", calls.count, "calls", stats.replays, "replays", unauthorized, "401s")
    assert rotations <= stats.replays == unauthorized
    assert api_client.stats().transport.failures == 0
    api_client.close()


def test_client_factory_uses_a_kubeconfig_token_file(
    auth_server: FakeApiServer, tmp_path: Path
) -> None:
    (tmp_path / "volume").mkdir()
    volume = ProjectedToken(tmp_path / "volume", "token-0")
    # A relative tokenFile is relative to the kubeconfig's directory, as in client-go.
    kubeconfig = kubeconfig_with(tmp_path / "config", auth_server, {"tokenFile": "volume/token"})
    with ClientFactory(kubeconfig=kubeconfig) as kube:
        source = kube.api_client.rest_client.pool_manager.credentials
        assert isinstance(source, TokenFileCredentials)
        assert source.path == str(volume.path)
        kube.core_v1().list_namespace()
        volume.rotate("token-1")
        auth_server.token = "token-1"
        kube.core_v1().list_namespace()  # by the 401 or by the stat: either way it succeeds
        assert kube.stats().transport.failures == 0


def test_client_factory_in_cluster_uses_the_service_account_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    with FakeApiServer(tls=True, authenticate=True, token="token-0") as server:
        assert server.ca_cert_path is not None
        volume = ProjectedToken(tmp_path, "token-0")
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(volume.path))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(server.ca_cert_path))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        with ClientFactory(in_cluster=True) as kube:
            source = kube.api_client.rest_client.pool_manager.credentials
            assert isinstance(source, TokenFileCredentials)
            kube.core_v1().list_namespace()
            volume.rotate("token-1")
            server.token = "token-1"
            kube.core_v1().list_namespace()
            assert kube.stats().transport.failures == 0


def test_an_unreadable_token_file_keeps_the_last_token_and_never_logs_it(
    auth_server: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    token_file.write_text("token-0\n", encoding="utf-8")  # whitespace around it is not part of it
    clock = FakeClock()
    api_client = ApiClient(
        auth_server.configuration(),
        credential_spec=CredentialSpec(token_file=str(token_file)),
        clock=clock,
    )
    v1 = client.CoreV1Api(api_client)
    v1.list_namespace()
    token_file.unlink()
    clock.now += 1.0
    v1.list_namespace()  # the last token still works
    assert api_client.stats().credentials.failures == 1
    assert "cannot read the token file" in caplog.text
    assert "token-0" not in caplog.text
    assert "token-0" not in repr(api_client.rest_client.pool_manager.credentials)
    assert "token-0" not in repr(api_client.stats())
    api_client.close()
    # Never readable: a clear error naming the file, not an unauthenticated call.
    missing = ApiClient(
        auth_server.configuration(),
        credential_spec=CredentialSpec(token_file=str(tmp_path / "missing")),
    )
    with pytest.raises(CredentialError, match="missing cannot be read") as caught:
        client.CoreV1Api(missing).list_namespace()
    assert "missing" in str(pickle.loads(pickle.dumps(caught.value)))
    missing.close()


def test_a_401_forces_the_refresh_of_a_kubeconfig_auth_provider(
    auth_server: FakeApiServer, tmp_path: Path
) -> None:
    # The gcp auth-provider with a cmd-path helper (as gcloud configures it) refreshes only when
    # its expiry passes; a 401 before that forces the helper to run.
    current = tmp_path / "current"
    current.write_text("token-0")
    helper = tmp_path / "helper.py"
    helper.write_text(
        "import json\n"
        f"token = open({str(current)!r}).read()\n"
        "print(json.dumps({'credential': {'access_token': token,"
        " 'token_expiry': '2099-01-01T00:00:00Z'}}))\n"
    )
    provider = {
        "name": "gcp",
        "config": {
            "access-token": "token-0",
            "expiry": "2099-01-01T00:00:00Z",
            "cmd-path": sys.executable,
            "cmd-args": str(helper),
        },
    }
    kubeconfig = kubeconfig_with(tmp_path / "config", auth_server, {"auth-provider": provider})
    with ClientFactory(kubeconfig=kubeconfig) as kube:
        assert isinstance(
            kube.api_client.rest_client.pool_manager.credentials, AuthProviderCredentials
        )
        kube.core_v1().list_namespace()
        current.write_text("token-1")
        auth_server.token = "token-1"
        kube.core_v1().list_namespace()
        stats = kube.stats().credentials
        assert stats.replays == 1
        assert stats.refreshes_by_source == {"auth_provider": 1}


def test_a_watch_opened_after_a_rotation_is_replayed_with_the_new_token(
    auth_server: FakeApiServer, tmp_path: Path
) -> None:
    volume = ProjectedToken(tmp_path, "token-0")
    api_client = ApiClient(
        auth_server.configuration(),
        credential_spec=CredentialSpec(token_file=str(volume.path)),
        clock=FakeClock(),  # within the check interval: only the 401 tells of the rotation
        qps=None,
    )
    v1 = client.CoreV1Api(api_client)
    v1.create_namespaced_config_map("default", {"metadata": {"name": "cm", "namespace": "default"}})
    volume.rotate("token-1")
    auth_server.token = "token-1"
    events = [
        event["object"].metadata.name
        for event in watch.Watch().stream(
            v1.list_namespaced_config_map, "default", timeout_seconds=1
        )
    ]
    assert events == ["cm"]
    assert api_client.stats().credentials.replays == 1
    assert auth_server.request_count("watch") == 2  # the 401, then the replay
    api_client.close()
