"""resilient_kube as a drop-in for the official client against a real kube-apiserver."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3
from kubernetes.client import ApiException, V1ConfigMap, V1Namespace, V1ObjectMeta

import resilient_kube

from .cluster import ApiServer, Binaries, poll

pytestmark = pytest.mark.e2e

CRD_GROUP = "e2e.resilient-kube.test"
CRD_PLURAL = "widgets"


@pytest.fixture
def kube(apiserver: ApiServer) -> Iterator[resilient_kube.ClientFactory]:
    with resilient_kube.ClientFactory(kubeconfig=apiserver.kubeconfig) as factory:
        yield factory


def config_map(name: str, labels: dict[str, str], **data: str) -> V1ConfigMap:
    return V1ConfigMap(metadata=V1ObjectMeta(name=name, labels=labels), data=data)


def test_version_matches_the_built_server(
    kube: resilient_kube.ClientFactory, binaries: Binaries
) -> None:
    version = kube.api(kubernetes.client.VersionApi).get_code()
    assert binaries.kube_apiserver.name.endswith(version.git_version)


def test_config_map_crud_and_label_selectors(
    kube: resilient_kube.ClientFactory, namespace: str
) -> None:
    core = kube.core_v1()
    for name, tier in (("cm-a", "a"), ("cm-b", "b"), ("cm-c", "c")):
        core.create_namespaced_config_map(
            namespace, config_map(name, {"app": "e2e", "tier": tier}, key=name)
        )

    selected = core.list_namespaced_config_map(namespace, label_selector="app=e2e,tier in (a,b)")
    assert sorted(item.metadata.name for item in selected.items) == ["cm-a", "cm-b"]
    assert core.list_namespaced_config_map(namespace, label_selector="tier!=a,app").items

    read = core.read_namespaced_config_map("cm-a", namespace)
    assert read.data == {"key": "cm-a"}
    read.data["key"] = "replaced"
    replaced = core.replace_namespaced_config_map("cm-a", namespace, read)
    assert replaced.data == {"key": "replaced"}
    assert replaced.metadata.resource_version != read.metadata.resource_version

    patched = core.patch_namespaced_config_map(
        "cm-a", namespace, {"metadata": {"labels": {"tier": "z"}}, "data": {"more": "1"}}
    )
    assert patched.metadata.labels["tier"] == "z"
    assert patched.data == {"key": "replaced", "more": "1"}

    core.delete_namespaced_config_map("cm-a", namespace)
    with pytest.raises(ApiException) as excinfo:
        core.read_namespaced_config_map("cm-a", namespace)
    assert excinfo.value.status == 404

    # A stale resourceVersion is a 409 from the server, handed back unchanged (not retried).
    stale = core.read_namespaced_config_map("cm-b", namespace)
    core.patch_namespaced_config_map("cm-b", namespace, {"data": {"key": "newer"}})
    with pytest.raises(ApiException) as excinfo:
        core.replace_namespaced_config_map("cm-b", namespace, stale)
    assert excinfo.value.status == 409


def test_namespace_crud_and_label_selectors(kube: resilient_kube.ClientFactory) -> None:
    core = kube.core_v1()
    run = uuid.uuid4().hex[:8]
    names = [f"e2e-ns-{run}-{index}" for index in range(3)]
    for index, name in enumerate(names):
        labels = {"e2e-run": run, "parity": "even" if index % 2 == 0 else "odd"}
        core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name, labels=labels)))

    even = core.list_namespace(label_selector=f"e2e-run={run},parity=even")
    assert sorted(item.metadata.name for item in even.items) == [names[0], names[2]]

    patched = core.patch_namespace(names[1], {"metadata": {"labels": {"parity": "even"}}})
    assert patched.metadata.labels["parity"] == "even"
    assert len(core.list_namespace(label_selector=f"e2e-run={run},parity=even").items) == 3

    for name in names:
        core.delete_namespace(name)
        # No kube-controller-manager runs, so the namespace stays in Terminating.
        assert core.read_namespace(name).status.phase == "Terminating"


@pytest.fixture
def widget_crd(kube: resilient_kube.ClientFactory) -> Iterator[str]:
    """A namespaced CRD ``widgets.e2e.resilient-kube.test``, Established before the test."""
    extensions = kube.api(kubernetes.client.ApiextensionsV1Api)
    name = f"{CRD_PLURAL}.{CRD_GROUP}"
    body: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": CRD_PLURAL, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer"},
                                        "color": {"type": "string"},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions.create_custom_resource_definition(body)

    def established() -> bool | None:
        crd = extensions.read_custom_resource_definition(name)
        conditions = crd.status.conditions or []
        ok = any(c.type == "Established" and c.status == "True" for c in conditions)
        return True if ok else None

    poll(established, timeout=30, what=f"CRD {name} Established")
    yield name
    extensions.delete_custom_resource_definition(name)


def test_custom_resource_crud_and_label_selectors(
    kube: resilient_kube.ClientFactory, widget_crd: str, namespace: str
) -> None:
    custom = kube.custom_objects()
    args = (CRD_GROUP, "v1", namespace, CRD_PLURAL)
    for name, color in (("w1", "red"), ("w2", "blue"), ("w3", "red")):
        body = {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name, "labels": {"color": color}},
            "spec": {"size": 1, "color": color},
        }
        custom.create_namespaced_custom_object(*args, body)

    red = custom.list_namespaced_custom_object(*args, label_selector="color=red")
    assert sorted(item["metadata"]["name"] for item in red["items"]) == ["w1", "w3"]

    patched = custom.patch_namespaced_custom_object(*args, "w1", {"spec": {"size": 3}})
    assert patched["spec"] == {"size": 3, "color": "red"}
    assert custom.get_namespaced_custom_object(*args, "w1")["spec"]["size"] == 3

    custom.delete_namespaced_custom_object(*args, "w2")
    with pytest.raises(ApiException) as excinfo:
        custom.get_namespaced_custom_object(*args, "w2")
    assert excinfo.value.status == 404
    # The schema is enforced by the server; the 422 comes back as the stock client's exception.
    with pytest.raises(ApiException) as excinfo:
        custom.patch_namespaced_custom_object(*args, "w1", {"spec": {"size": "big"}})
    assert excinfo.value.status == 422


def test_server_side_apply(kube: resilient_kube.ClientFactory, namespace: str) -> None:
    core = kube.core_v1()
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied", "labels": {"app": "e2e"}},
        "data": {"owner": "first", "shared": "1"},
    }

    def apply(body: dict[str, Any], manager: str, *, force: bool = False) -> V1ConfigMap:
        return core.patch_namespaced_config_map(
            "applied",
            namespace,
            body,
            field_manager=manager,
            force=force,
            _content_type="application/apply-patch+yaml",
        )

    created = apply(manifest, "e2e-first")
    assert created.data == {"owner": "first", "shared": "1"}
    managers = {(entry.manager, entry.operation) for entry in created.metadata.managed_fields}
    assert ("e2e-first", "Apply") in managers

    # Re-applying the same manifest changes nothing (the resourceVersion stays).
    again = apply(manifest, "e2e-first")
    assert again.metadata.resource_version == created.metadata.resource_version

    # Another manager touching an owned field conflicts (409) unless it forces the change.
    contender = {**manifest, "data": {"shared": "2"}}
    with pytest.raises(ApiException) as excinfo:
        apply(contender, "e2e-second")
    assert excinfo.value.status == 409
    forced = apply(contender, "e2e-second", force=True)
    assert forced.data == {"owner": "first", "shared": "2"}


def test_dynamic_client(kube: resilient_kube.ClientFactory, namespace: str) -> None:
    config_maps = kube.dynamic().resources.get(api_version="v1", kind="ConfigMap")
    for name, tier in (("dyn-a", "a"), ("dyn-b", "b")):
        config_maps.create(
            body={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"tier": tier}},
                "data": {"k": name},
            },
            namespace=namespace,
        )
    listed = config_maps.get(namespace=namespace, label_selector="tier=b")
    assert [item.metadata.name for item in listed.items] == ["dyn-b"]

    config_maps.patch(
        name="dyn-a",
        namespace=namespace,
        body={"data": {"k": "patched"}},
        content_type="application/merge-patch+json",
    )
    assert config_maps.get(name="dyn-a", namespace=namespace).data.k == "patched"

    applied = config_maps.server_side_apply(
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dyn-c"}},
        namespace=namespace,
        field_manager="e2e-dynamic",
    )
    assert applied.metadata.name == "dyn-c"

    config_maps.delete(name="dyn-a", namespace=namespace)
    with pytest.raises(kubernetes.dynamic.exceptions.NotFoundError):
        config_maps.get(name="dyn-a", namespace=namespace)


def test_watch_with_bookmarks(kube: resilient_kube.ClientFactory, namespace: str) -> None:
    core = kube.core_v1()
    core.create_namespaced_config_map(namespace, config_map("before", {}))
    watch = kube.watch()
    seen: list[tuple[str, str]] = []
    creator: threading.Thread | None = None

    def create_after_bookmark() -> None:
        core.create_namespaced_config_map(namespace, config_map("after", {}))

    start = time.monotonic()
    # sendInitialEvents makes the server end the initial state with a BOOKMARK at once; the
    # timeout bounds the stream if the events never come.
    for event in watch.stream(
        core.list_namespaced_config_map,
        namespace,
        allow_watch_bookmarks=True,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        timeout_seconds=20,
    ):
        raw = event["raw_object"]
        seen.append((event["type"], raw["metadata"].get("name", "")))
        if event["type"] == "BOOKMARK" and creator is None:
            annotations = raw["metadata"].get("annotations", {})
            assert annotations.get("k8s.io/initial-events-end") == "true"
            creator = threading.Thread(target=create_after_bookmark)
            creator.start()
        if ("ADDED", "after") in seen:
            watch.stop()
    assert creator is not None
    creator.join(10)

    assert seen[0] == ("ADDED", "before")
    assert seen[1][0] == "BOOKMARK"
    assert ("ADDED", "after") in seen
    assert watch.resource_version is not None
    assert time.monotonic() - start < 20


def test_tls_verification_uses_the_kubeconfig_ca(apiserver: ApiServer, tmp_path: Path) -> None:
    # The right CA works through the serving certificate's 127.0.0.1 SAN ...
    with resilient_kube.ClientFactory(kubeconfig=apiserver.kubeconfig) as kube:
        assert kube.core_v1().list_namespace().items

    # ... and a CA that signed nothing fails. The stock client tries the handshake 4 times
    # (urllib3's default Retry(3)) and raises MaxRetryError; resilient_kube does not repeat a
    # verification failure and raises TLSError, which is a MaxRetryError with the same reason,
    # so the stock client's except clause catches both.
    wrong = apiserver.write_kubeconfig(
        tmp_path / "wrong-ca.kubeconfig", ca_path=apiserver.pki.wrong_ca_path
    )
    stock = kubernetes.config.new_client_from_config(config_file=str(wrong))
    with stock, pytest.raises(urllib3.exceptions.MaxRetryError) as stock_error:
        kubernetes.client.CoreV1Api(stock).list_namespace()
    assert isinstance(stock_error.value.reason, urllib3.exceptions.SSLError)

    start = time.monotonic()
    with resilient_kube.ClientFactory(kubeconfig=wrong) as kube:
        with pytest.raises(urllib3.exceptions.MaxRetryError) as error:
            kube.core_v1().list_namespace()
        assert kube.stats().transport.attempts == 1
    assert isinstance(error.value, resilient_kube.errors.TLSError)
    assert isinstance(error.value.reason, urllib3.exceptions.SSLError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value)
    assert time.monotonic() - start < 5
