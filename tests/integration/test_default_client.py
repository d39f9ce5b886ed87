"""The installable default: API classes built with no argument run on resilient_kube.

These tests also run against the oldest supported kubernetes release, where the generated classes
build a new stock client instead of asking for a default.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

try:  # kubernetes 37
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock as StockLock
except ImportError:  # kubernetes 31-36 have only the ConfigMap lock
    from kubernetes.leaderelection.resourcelock.configmaplock import (
        ConfigMapLock as StockLock,
    )

import resilient_kube
from resilient_kube import ApiClient, ClientFactory, ConfigError
from resilient_kube.testing import FakeApiServer


@pytest.fixture
def factory(configuration: client.Configuration) -> Iterator[ClientFactory]:
    with ClientFactory(configuration) as kube:
        yield kube
    resilient_kube.uninstall_default()  # a failed test must not leave it installed


def _close_stock(api: object) -> None:
    """Close the stock client an API object built for itself (nothing resilient_kube owns)."""
    api_client = api.api_client  # type: ignore[attr-defined]
    assert type(api_client) is client.ApiClient
    api_client.close()


def test_no_argument_api_classes_go_through_resilient_kube(
    server: FakeApiServer, factory: ClientFactory
) -> None:
    before = factory.stats().transport.requests
    resilient_kube.install_default(factory)
    core = client.CoreV1Api()
    assert core.api_client is factory.api_client
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    assert [cm.metadata.name for cm in core.list_namespaced_config_map("default").items] == ["cm"]
    assert client.AppsV1Api().api_client is factory.api_client
    # Both calls went through the shared client's transport, and reached the server.
    assert factory.stats().transport.requests == before + 2
    assert server.request_count("list", "/api/v1/namespaces/default/configmaps") == 1


def test_uninstall_restores_the_stock_default(factory: ClientFactory) -> None:
    resilient_kube.install_default(factory)
    resilient_kube.uninstall_default()
    resilient_kube.uninstall_default()  # a second time does nothing
    _close_stock(client.CoreV1Api())
    fresh = resilient_kube.ApiClient.get_default()  # a new client, as the official one returns
    assert fresh is not factory.api_client
    fresh.close()


def test_context_manager_restores_the_previous_default(
    configuration: client.Configuration, factory: ClientFactory
) -> None:
    with ApiClient(configuration) as inner:
        resilient_kube.install_default(factory)
        with resilient_kube.install_default(inner) as installed:
            assert installed is inner
            assert client.CoreV1Api().api_client is inner
        assert client.CoreV1Api().api_client is factory.api_client
    with resilient_kube.install_default(factory):
        pass
    assert resilient_kube.ApiClient.get_default() is factory.api_client
    resilient_kube.uninstall_default()
    _close_stock(client.CoreV1Api())


def test_api_client_set_default_reaches_the_generated_classes(factory: ClientFactory) -> None:
    ApiClient.set_default(factory.api_client)
    assert client.CoordinationV1Api().api_client is factory.api_client
    assert ApiClient.get_default() is factory.api_client
    ApiClient.set_default(None)
    _close_stock(client.CoordinationV1Api())


def test_closing_an_api_object_leaves_the_shared_client_open(factory: ClientFactory) -> None:
    resilient_kube.install_default(factory)
    core = client.CoreV1Api()
    if hasattr(core, "close"):  # kubernetes 37: API objects close the clients they own
        core.close()
    assert core.api_client.rest_client.pool_manager.pools is not None
    factory.core_v1().list_namespace()  # still works


def test_stock_lock_runs_on_the_installed_default(
    server: FakeApiServer, factory: ClientFactory
) -> None:
    resilient_kube.install_default(factory)
    lock = StockLock("lock", "default", "me")
    before = factory.stats().transport.requests
    record = LeaderElectionRecord("me", "15", "2026-01-01 00:00:00", "2026-01-01 00:00:00")
    found, _ = lock.get("lock", "default")
    assert not found
    assert lock.create("lock", "default", record)
    found, read = lock.get("lock", "default")
    assert found
    assert read.holder_identity == "me"
    assert factory.stats().transport.requests == before + 3
    assert server.request_count("create") == 1


@pytest.mark.parametrize("value", [None, "client", client.ApiClient])
def test_install_default_rejects_other_objects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"install_default\(api_client_or_factory="):
        resilient_kube.install_default(value)  # type: ignore[arg-type]


def test_install_default_rejects_a_stock_client(configuration: client.Configuration) -> None:
    with client.ApiClient(configuration) as stock, pytest.raises(ConfigError, match="ApiClient"):
        resilient_kube.install_default(stock)


@pytest.mark.skipif(StockLock.__name__ != "LeaseLock", reason="kubernetes 37's elector")
def test_the_stock_elector_wins_a_lease_through_the_installed_default(
    server: FakeApiServer, factory: ClientFactory
) -> None:
    from kubernetes.leaderelection import electionconfig, leaderelection

    resilient_kube.install_default(factory)
    started = threading.Event()

    def on_started() -> None:
        started.set()
        # kubernetes 37 stops renewing when the work raises: the only way to end its run().
        raise RuntimeError("done leading")

    config = electionconfig.Config(
        StockLock("stock", "default", "me"), 3, 2, 1, on_started, lambda: None
    )
    election = threading.Thread(target=leaderelection.LeaderElection(config).run)
    election.start()
    election.join(10)
    assert not election.is_alive()
    assert started.is_set()
    lease = factory.api(client.CoordinationV1Api).read_namespaced_lease("stock", "default")
    assert lease.spec.holder_identity == "me"
    assert server.request_count("create", "/leases") == 1
