"""The drop-in contract: user code written for kubernetes.client.ApiClient runs unchanged.

These tests also run against the oldest supported kubernetes release (see .ci/run).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, dynamic, utils, watch

import resilient_kube
from resilient_kube import ApiClient, ClientFactory
from resilient_kube._transport import Transport
from resilient_kube.testing import CustomResource, FakeApiServer

from .conftest import configmap

WIDGETS = CustomResource(group="example.test", version="v1", plural="widgets", kind="Widget")


def test_core_crud_round_trip(configuration: client.Configuration) -> None:
    with ApiClient(configuration) as api_client:
        v1 = client.CoreV1Api(api_client)
        created = v1.create_namespaced_config_map("default", configmap("cm1", app="web"))
        assert created.metadata.resource_version
        assert v1.read_namespaced_config_map("cm1", "default").data == {"key": "value"}
        listed = v1.list_namespaced_config_map("default", label_selector="app=web")
        assert [item.metadata.name for item in listed.items] == ["cm1"]
        created.data = {"key": "replaced"}
        replaced = v1.replace_namespaced_config_map("cm1", "default", created)
        assert replaced.data == {"key": "replaced"}
        patched = v1.patch_namespaced_config_map("cm1", "default", {"data": {"extra": "1"}})
        assert patched.data == {"key": "replaced", "extra": "1"}
        v1.delete_namespaced_config_map("cm1", "default")
        with pytest.raises(client.ApiException) as caught:
            v1.read_namespaced_config_map("cm1", "default")
        assert caught.value.status == 404


def test_apps_batch_and_custom_objects(configuration: client.Configuration) -> None:
    with (
        FakeApiServer(custom_resources=[WIDGETS]) as server,
        ApiClient(server.configuration()) as api_client,
    ):
        apps = client.AppsV1Api(api_client)
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        }
        apps.create_namespaced_deployment("default", deployment)
        assert apps.read_namespaced_deployment("web", "default").spec.selector.match_labels == {
            "app": "web"
        }
        assert client.BatchV1Api(api_client).list_namespaced_job("default").items == []
        custom = client.CustomObjectsApi(api_client)
        widget = {"apiVersion": "example.test/v1", "kind": "Widget", "metadata": {"name": "w"}}
        custom.create_namespaced_custom_object("example.test", "v1", "default", "widgets", widget)
        got = custom.get_namespaced_custom_object("example.test", "v1", "default", "widgets", "w")
        assert got["metadata"]["name"] == "w"


def test_watch_stream_sees_events(server: FakeApiServer) -> None:
    with ApiClient(server.configuration()) as api_client:
        v1 = client.CoreV1Api(api_client)
        v1.create_namespaced_config_map("default", configmap("watched"))
        events = [
            (event["type"], event["object"].metadata.name)
            for event in watch.Watch().stream(
                v1.list_namespaced_config_map, "default", timeout_seconds=1
            )
        ]
        assert ("ADDED", "watched") in events


def test_dynamic_client_and_create_from_yaml(server: FakeApiServer, tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n"
    )
    with ApiClient(server.configuration()) as api_client:
        utils.create_from_yaml(api_client, str(manifest), namespace="default")
        configmaps = dynamic.DynamicClient(api_client).resources.get(
            api_version="v1", kind="ConfigMap"
        )
        assert configmaps.get(name="from-yaml", namespace="default").data.a == "b"


def test_request_timeout_preload_content_and_async_req(configuration: client.Configuration) -> None:
    with ApiClient(configuration) as api_client:
        v1 = client.CoreV1Api(api_client)
        v1.create_namespaced_config_map("default", configmap("raw"))
        assert v1.read_namespaced_config_map("raw", "default", _request_timeout=5).metadata.name
        assert v1.read_namespaced_config_map("raw", "default", _request_timeout=(1, 5)).data
        raw = v1.read_namespaced_config_map("raw", "default", _preload_content=False)
        assert isinstance(raw, urllib3.BaseHTTPResponse)
        assert b'"raw"' in raw.read()
        streamed = v1.read_namespaced_config_map("raw", "default", _preload_content=False)
        assert b'"raw"' in b"".join(streamed.stream())
        # The body was read inside the attempt; a raw response still reads as from the socket.
        pieces = v1.read_namespaced_config_map("raw", "default", _preload_content=False)
        first = pieces.read(5)
        rest = pieces.read()
        assert len(first) == 5
        assert json.loads(first + rest)["metadata"]["name"] == "raw"
        assert pieces.read() == b""
        assert json.loads(pieces.data)["metadata"]["name"] == "raw"
        lines = v1.read_namespaced_config_map("raw", "default", _preload_content=False)
        assert b'"raw"' in b"".join(lines)
        # File-like use: a ``with`` block, and io wrappers over the raw response.
        with v1.read_namespaced_config_map("raw", "default", _preload_content=False) as held:
            assert not held.closed
            assert json.loads(held.read())["metadata"]["name"] == "raw"
        assert held.closed
        assert held.read() == b""
        wrapped = v1.read_namespaced_config_map("raw", "default", _preload_content=False)
        assert '"raw"' in io.TextIOWrapper(wrapped, encoding="utf-8").read()
        buffered = v1.read_namespaced_config_map("raw", "default", _preload_content=False)
        assert b'"raw"' in io.BufferedReader(buffered).read()
        thread = v1.read_namespaced_config_map("raw", "default", async_req=True)
        assert thread.get(timeout=10).metadata.name == "raw"


def test_close_releases_every_socket(server: FakeApiServer) -> None:
    api_client = ApiClient(server.configuration())
    client.CoreV1Api(api_client).list_namespace()
    manager = api_client.rest_client.pool_manager
    assert len(manager.pools) == 1
    api_client.close()
    assert len(manager.pools) == 0


def test_the_transport_sits_behind_the_stable_seam(configuration: client.Configuration) -> None:
    api_client = ApiClient(configuration)
    assert isinstance(api_client, client.ApiClient)
    assert isinstance(api_client.rest_client.pool_manager, Transport)
    # urllib3's own retries are off in every pool.
    assert api_client.rest_client.pool_manager.connection_pool_kw["retries"] is False
    api_client.close()


def test_factory_shares_one_client_pool_and_counters(server: FakeApiServer) -> None:
    with ClientFactory(server.configuration(), qps=100, burst=10) as factory:
        core, apps = factory.core_v1(), factory.apps_v1()
        assert core.api_client is apps.api_client is factory.api_client
        assert factory.api(client.CoreV1Api) is core
        assert factory.batch_v1().api_client is factory.custom_objects().api_client
        core.list_namespace()
        apps.list_namespaced_deployment("default")
        factory.dynamic().resources.get(api_version="v1", kind="Namespace").get()
        stats = factory.stats()
        assert stats.transport.connections_opened == 1
        assert stats.transport.requests >= 3
        assert stats.limiter is not None
        assert stats.limiter.admitted == stats.transport.attempts
        assert isinstance(factory.watch(), watch.Watch)
        assert factory.settings.qps == 100.0


def test_factory_loads_a_kubeconfig_and_context(server: FakeApiServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "config")
    with ClientFactory(kubeconfig=path, context="fake") as factory:
        assert factory.configuration.host == server.url
        assert factory.core_v1().list_namespace().items is not None


def test_factory_reads_kubeconfig_from_the_environment(
    server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", os.fspath(server.write_kubeconfig(tmp_path / "config")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with ClientFactory() as factory:
        assert factory.configuration.host == server.url


def test_factory_in_cluster(
    server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service-account files live at fixed paths in a pod; point the loader at copies.
    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text(server.token)
    ca.write_text("not used over plain HTTP")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", os.fspath(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", os.fspath(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", server.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
    with ClientFactory() as factory:
        assert factory.configuration.host == f"https://{server.host}:{server.port}"
        # The key is "authorization" up to kubernetes 36 and "BearerToken" in 37.
        headers = [value.lower() for value in factory.configuration.api_key.values()]
        assert headers == [f"bearer {server.token}"]


def test_factory_rejects_two_sources_of_configuration(configuration: client.Configuration) -> None:
    with pytest.raises(resilient_kube.ConfigError, match="one source of configuration"):
        ClientFactory(configuration, kubeconfig="/some/file")
    with pytest.raises(resilient_kube.ConfigError, match="in_cluster=True cannot be combined"):
        ClientFactory(in_cluster=True, context="x")
