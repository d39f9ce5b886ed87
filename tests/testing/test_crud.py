"""Every verb through the stock ``kubernetes`` client, and the errors the real server gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from resilient_kube.testing import CustomResource, FakeApiServer

from .conftest import close, stock_client


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": data}


def test_create_get_stamps_server_fields(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("one", a="1"))
    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None
    assert int(created.metadata.resource_version) > 0
    fetched = core.read_namespaced_config_map("one", "default")
    assert fetched.data == {"a": "1"}
    assert fetched.metadata.namespace == "default"
    assert fetched.metadata.resource_version == created.metadata.resource_version


def test_resource_versions_increase_globally(core: Any) -> None:
    a = core.create_namespaced_config_map("default", _cm("a"))
    b = core.create_namespaced_secret("default", {"metadata": {"name": "b"}})
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)


def test_namespace_comes_from_the_url(core: Any) -> None:
    created = core.create_namespaced_config_map("kube-system", _cm("x"))
    assert created.metadata.namespace == "kube-system"
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("x", "default")
    assert info.value.status == 404


def test_mismatched_namespace_is_a_bad_request(core: Any) -> None:
    body = {"metadata": {"name": "x", "namespace": "other"}}
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("default", body)
    assert info.value.status == 400


def test_not_found_is_a_real_status(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("missing", "default")
    status = json.loads(str(info.value.body))
    assert info.value.status == 404
    assert status["kind"] == "Status"
    assert status["apiVersion"] == "v1"
    assert status["status"] == "Failure"
    assert status["reason"] == "NotFound"
    assert status["code"] == 404
    assert status["message"] == 'configmaps "missing" not found'
    assert status["details"] == {"name": "missing", "kind": "configmaps"}


def test_duplicate_create_is_already_exists(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("dup"))
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("default", _cm("dup"))
    assert info.value.status == 409
    assert '"reason": "AlreadyExists"' in str(info.value.body)


def test_generate_name(core: Any) -> None:
    body = {"metadata": {"generateName": "job-"}}
    first = core.create_namespaced_config_map("default", body)
    second = core.create_namespaced_config_map("default", body)
    assert first.metadata.name.startswith("job-")
    assert len(first.metadata.name) == len("job-") + 5
    assert first.metadata.name != second.metadata.name


def test_missing_name_is_invalid(core: Any) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("default", {"metadata": {}})
    assert info.value.status == 422
    assert "name or generateName is required" in str(info.value.body)


def test_replace_and_stale_resource_version_conflict(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("cm", a="1"))
    created.data = {"a": "2"}
    replaced = core.replace_namespaced_config_map("cm", "default", created)
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    created.data = {"a": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("cm", "default", created)
    assert info.value.status == 409
    assert '"reason": "Conflict"' in str(info.value.body)
    assert "the object has been modified" in str(info.value.body)


def test_replace_without_resource_version_is_unconditional(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("cm", a="1"))
    replaced = core.replace_namespaced_config_map("cm", "default", _cm("cm", a="9"))
    assert replaced.data == {"a": "9"}


def test_noop_replace_keeps_the_resource_version(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("cm", a="1"))
    again = core.replace_namespaced_config_map("cm", "default", created)
    assert again.metadata.resource_version == created.metadata.resource_version


def test_replace_missing_is_not_found(core: Any) -> None:
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("nope", "default", _cm("nope"))
    assert info.value.status == 404


def test_strategic_merge_patch_is_the_default(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("cm", a="1", b="2"))
    patched = core.patch_namespaced_config_map("cm", "default", {"data": {"b": None, "c": "3"}})
    assert patched.data == {"a": "1", "c": "3"}


def test_strategic_merge_patch_merges_containers_by_name(core: Any) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]},
    }
    core.create_namespaced_pod("default", pod)
    patch = {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}
    patched = core.patch_namespaced_pod("p", "default", patch)
    images = {c.name: c.image for c in patched.spec.containers}
    assert images == {"app": "a:2", "side": "s:1"}


def test_merge_patch_replaces_lists(core: Any) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]},
    }
    core.create_namespaced_pod("default", pod)
    patch = {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}
    patched = core.patch_namespaced_pod(
        "p", "default", patch, _content_type="application/merge-patch+json"
    )
    assert [c.name for c in patched.spec.containers] == ["app"]


def test_json_patch(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("cm", a="1"))
    patch = [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "add", "path": "/data/b", "value": "2"},
        {"op": "copy", "from": "/data/b", "path": "/data/c"},
        {"op": "move", "from": "/data/a", "path": "/data/d"},
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "remove", "path": "/data/c"},
    ]
    patched = core.patch_namespaced_config_map("cm", "default", patch)
    assert patched.data == {"b": "20", "d": "1"}


def test_failed_json_patch_test_is_invalid(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("cm", a="1"))
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map(
            "cm", "default", [{"op": "test", "path": "/data/a", "value": "2"}]
        )
    assert info.value.status == 422


def test_patch_with_stale_resource_version_conflicts(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("cm", a="1"))
    old = created.metadata.resource_version
    core.patch_namespaced_config_map("cm", "default", {"data": {"a": "2"}})
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map(
            "cm", "default", {"metadata": {"resourceVersion": old}, "data": {"a": "3"}}
        )
    assert info.value.status == 409


def test_delete_returns_status_or_object(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("cm"))
    status = core.delete_namespaced_config_map("cm", "default")
    status_dict = status if isinstance(status, dict) else status.to_dict()
    assert status_dict["status"] == "Success"
    assert status_dict["details"]["uid"] == created.metadata.uid
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    core.create_namespaced_pod("default", pod)
    deleted = core.delete_namespaced_pod("p", "default")
    assert deleted.metadata.name == "p"
    assert deleted.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_pod("p", "default")
    assert info.value.status == 404


def test_finalizers_hold_deletion_until_removed(core: Any) -> None:
    body = {"metadata": {"name": "held", "finalizers": ["example.test/cleanup"]}}
    core.create_namespaced_config_map("default", body)
    marked = core.delete_namespaced_config_map("held", "default")
    marked_dict = marked if isinstance(marked, dict) else marked.to_dict()
    assert marked_dict["metadata"]["deletionTimestamp"]
    still = core.read_namespaced_config_map("held", "default")
    assert still.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(
        "held", "default", {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("held", "default")
    assert info.value.status == 404


def test_delete_precondition_conflict(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("cm"))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_config_map("cm", "default", body=options)
    assert info.value.status == 409


def test_delete_collection_by_label(core: Any) -> None:
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": {"tier": tier}}}
        )
    core.delete_collection_namespaced_config_map("default", label_selector="tier=web")
    names = [cm.metadata.name for cm in core.list_namespaced_config_map("default").items]
    assert names == ["c"]


def test_cluster_scoped_nodes_and_namespaces(core: Any) -> None:
    core.create_node({"metadata": {"name": "node-1", "labels": {"zone": "a"}}})
    assert [n.metadata.name for n in core.list_node().items] == ["node-1"]
    assert core.read_node("node-1").metadata.namespace is None
    ns = core.create_namespace({"metadata": {"name": "team"}})
    assert ns.status.phase == "Active"
    core.create_namespaced_config_map("team", _cm("inside"))
    core.delete_namespace("team")
    assert core.list_namespaced_config_map("team").items == []


def test_list_across_namespaces(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("a"))
    core.create_namespaced_config_map("kube-system", _cm("b"))
    listed = core.list_config_map_for_all_namespaces()
    assert [(c.metadata.namespace, c.metadata.name) for c in listed.items] == [
        ("default", "a"),
        ("kube-system", "b"),
    ]
    assert int(listed.metadata.resource_version) >= 2


def test_status_subresource_updates_only_status(core: Any) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    core.create_namespaced_pod("default", pod)
    patch = {"status": {"phase": "Running"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    patched = core.patch_namespaced_pod_status("p", "default", patch)
    assert patched.status.phase == "Running"
    assert patched.spec.containers[0].image == "i"


def test_services_events_and_secrets(core: Any) -> None:
    svc = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    assert core.create_namespaced_service("default", svc).spec.ports[0].port == 80
    event = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p"}}
    assert core.create_namespaced_event("default", event).involved_object.name == "p"
    secret = {"metadata": {"name": "s"}, "stringData": {"k": "v"}}
    assert core.create_namespaced_secret("default", secret).metadata.name == "s"


def test_deployments_and_jobs(api_client: client.ApiClient) -> None:
    apps, batch = client.AppsV1Api(api_client), client.BatchV1Api(api_client)
    template: dict[str, Any] = {"metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}  # fmt: skip
    deployment = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "w"}}, "template": template},
    }
    created = apps.create_namespaced_deployment("default", deployment)
    assert created.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 3}})
    assert scaled.spec.replicas == 3
    assert scaled.metadata.generation == 2
    job = {"metadata": {"name": "once"},
           "spec": {"template": {**template, "spec": {**template["spec"], "restartPolicy": "Never"}}}}  # fmt: skip  # noqa: E501
    assert batch.create_namespaced_job("default", job).metadata.name == "once"
    assert [j.metadata.name for j in batch.list_namespaced_job("default").items] == ["once"]


WIDGETS = CustomResource("example.test", "v1", "widgets", "Widget")
GADGETS = CustomResource("example.test", "v1alpha1", "gadgets", "Gadget", namespaced=False)


def test_custom_resources() -> None:
    with FakeApiServer(custom_resources=[WIDGETS, GADGETS]) as server:
        api = stock_client(server)
        try:
            custom = client.CustomObjectsApi(api)
            body = {"apiVersion": "example.test/v1", "kind": "Widget",
                    "metadata": {"name": "w1"}, "spec": {"size": 1}}  # fmt: skip
            created = custom.create_namespaced_custom_object("example.test", "v1", "default",
                                                             "widgets", body)  # fmt: skip
            assert created["metadata"]["resourceVersion"]
            patched = custom.patch_namespaced_custom_object(
                "example.test", "v1", "default", "widgets", "w1", {"spec": {"size": 2}}
            )
            assert patched["spec"] == {"size": 2}
            listed = custom.list_namespaced_custom_object(
                "example.test", "v1", "default", "widgets"
            )
            assert listed["kind"] == "WidgetList"
            assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
            deleted = custom.delete_namespaced_custom_object(
                "example.test", "v1", "default", "widgets", "w1"
            )
            assert deleted["metadata"]["name"] == "w1"  # custom resources return the object
            gadget = {"metadata": {"name": "g"}}
            made = custom.create_cluster_custom_object(
                "example.test", "v1alpha1", "gadgets", gadget
            )
            assert made["kind"] == "Gadget"
            assert "namespace" not in made["metadata"]
        finally:
            close(api)


def test_unknown_resource_is_not_found(api_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as info:
        custom.list_namespaced_custom_object("example.test", "v1", "default", "widgets")
    assert info.value.status == 404


def test_strategic_merge_on_custom_resource_is_unsupported() -> None:
    with FakeApiServer(custom_resources=[WIDGETS]) as server:
        api = stock_client(server)
        try:
            custom = client.CustomObjectsApi(api)
            custom.create_namespaced_custom_object(
                "example.test", "v1", "default", "widgets", {"metadata": {"name": "w"}}
            )
            with pytest.raises(ApiException) as info:
                custom.patch_namespaced_custom_object(
                    "example.test", "v1", "default", "widgets", "w", {"spec": {}},
                    _content_type="application/strategic-merge-patch+json",
                )  # fmt: skip
            assert info.value.status == 415
        finally:
            close(api)


def test_custom_resource_validation() -> None:
    with pytest.raises(ValueError, match="kind="):
        CustomResource("example.test", "v1", "widgets", "widget")
    with pytest.raises(ValueError, match="group="):
        CustomResource("", "v1", "widgets", "Widget")
    with pytest.raises(ValueError, match="registered twice"):
        FakeApiServer(custom_resources=[WIDGETS, WIDGETS])
