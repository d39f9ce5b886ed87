"""Discovery documents, health endpoints and ``kubernetes.dynamic.DynamicClient``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from resilient_kube.testing import CustomResource, FakeApiServer

from .conftest import close, stock_client


def _get(api: Any, path: str) -> Any:
    response = api.call_api("GET", api.configuration.host + path)
    response.read()
    return response


def test_version_and_health(fake_api_server: FakeApiServer, api_client: client.ApiClient) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1"
    assert version.git_version.startswith("v1.")
    for path in ("/healthz", "/readyz", "/livez"):
        response = _get(api_client, path)
        assert response.status == 200
        assert response.data == b"ok"


def test_discovery_documents(fake_api_server: FakeApiServer, api_client: client.ApiClient) -> None:
    core_resources = client.CoreV1Api(api_client).get_api_resources()
    names = {r.name for r in core_resources.resources}
    assert {"namespaces", "configmaps", "secrets", "pods", "services", "events", "nodes"} <= names
    assert "pods/status" in names
    groups = client.ApisApi(api_client).get_api_versions()
    assert {g.name for g in groups.groups} >= {"apps", "batch", "coordination.k8s.io"}
    apps = client.AppsV1Api(api_client).get_api_resources()
    assert apps.group_version == "apps/v1"
    assert "deployments" in {r.name for r in apps.resources}
    versions = json.loads(_get(api_client, "/api").data)
    assert versions["versions"] == ["v1"]


def test_unknown_paths_are_not_found(api_client: client.ApiClient) -> None:
    for path in ("/apis/nothing.example.test/v1/things", "/api/v1/things", "/nothing"):
        response = _get(api_client, path)
        assert response.status == 404
        assert json.loads(response.data)["reason"] == "NotFound"


def test_unknown_custom_resource_is_an_api_exception(api_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as info:
        custom.get_namespaced_custom_object("example.test", "v1", "default", "things", "x")
    assert info.value.status == 404


def test_dynamic_client(tmp_path: Path) -> None:
    widgets = CustomResource("example.test", "v1", "widgets", "Widget", short_names=("wd",))
    with FakeApiServer(custom_resources=[widgets]) as server:
        api = stock_client(server)
        try:
            dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
            configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
            configmaps.create(body={"metadata": {"name": "d"}, "data": {"a": "1"}},
                              namespace="default")  # fmt: skip
            assert configmaps.get(name="d", namespace="default").data.a == "1"
            configmaps.patch(name="d", namespace="default", body={"data": {"a": "2"}})
            listed = configmaps.get(namespace="default")
            assert [item.metadata.name for item in listed.items] == ["d"]
            configmaps.delete(name="d", namespace="default")
            deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
            assert deployments.namespaced
            resource = dyn.resources.get(api_version="example.test/v1", kind="Widget")
            resource.create(body={"apiVersion": "example.test/v1", "kind": "Widget",
                                  "metadata": {"name": "w"}}, namespace="default")  # fmt: skip
            assert resource.get(name="w", namespace="default").metadata.name == "w"
        finally:
            close(api)
