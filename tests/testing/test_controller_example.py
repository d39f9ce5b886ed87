"""The controller example from docs/testing.md, verbatim: keep the two in step."""

from __future__ import annotations

import threading

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from resilient_kube import ApiClient
from resilient_kube.testing import FakeApiServer, StatusFault

LABELS = "app=demo"


def reconcile(core: client.CoreV1Api, cm: client.V1ConfigMap) -> None:
    """Mark a ConfigMap as processed; on a conflict, read it again and retry."""
    for _ in range(3):
        if (cm.data or {}).get("processed") == "true":
            return
        meta = cm.metadata
        if meta is None or not meta.name or not meta.namespace:
            return
        cm.data = {**(cm.data or {}), "processed": "true"}
        try:
            core.replace_namespaced_config_map(meta.name, meta.namespace, cm)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
            cm = core.read_namespaced_config_map(meta.name, meta.namespace)


def run_controller(core: client.CoreV1Api, namespace: str, stop: threading.Event) -> None:
    """List, then watch from the list's resourceVersion; list again when the watch ends."""
    while not stop.is_set():
        listed = core.list_namespaced_config_map(namespace, label_selector=LABELS)
        for cm in listed.items:
            reconcile(core, cm)
        assert listed.metadata is not None
        stream = watch.Watch()
        try:
            for event in stream.stream(
                core.list_namespaced_config_map,
                namespace,
                label_selector=LABELS,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=1,
            ):
                if event["type"] in ("ADDED", "MODIFIED"):
                    reconcile(core, event["object"])
                if stop.is_set():
                    stream.stop()
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: our resourceVersion expired, list again
                raise


def demo_config_map(name: str, **labels: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels))


def wait_until_processed(core: client.CoreV1Api, name: str, timeout: int = 10) -> bool:
    """Watch one ConfigMap until the controller has marked it (bounded by ``timeout``)."""
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_config_map,
        "default",
        field_selector=f"metadata.name={name}",
        timeout_seconds=timeout,
    ):
        if (event["object"].data or {}).get("processed") == "true":
            stream.stop()
            return True
    return False


def test_controller_marks_configmaps(
    fake_api_server: FakeApiServer, kube_configuration: client.Configuration
) -> None:
    api = ApiClient(kube_configuration)
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", demo_config_map("early", app="demo"))
    # The controller's first write loses a race with another writer.
    fake_api_server.inject(StatusFault(409, reason="Conflict"), verb="update")

    stop = threading.Event()
    controller = threading.Thread(target=run_controller, args=(core, "default", stop))
    controller.start()
    try:
        core.create_namespaced_config_map("default", demo_config_map("late", app="demo"))
        core.create_namespaced_config_map("default", demo_config_map("other"))
        assert wait_until_processed(core, "early")
        assert wait_until_processed(core, "late")
        other = core.read_namespaced_config_map("other", "default")
        assert "processed" not in (other.data or {})  # not labelled app=demo
    finally:
        stop.set()
        controller.join(timeout=10)
        api.close()
    assert not controller.is_alive()
    assert fake_api_server.stats().faults_by_kind["StatusFault"] == 1
    assert fake_api_server.request_count("update") == 3  # one conflict, two writes
