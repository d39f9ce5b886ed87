"""Three kube-apiservers on one etcd, a client given all three: kill one, stop another (issue 20)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import pytest
from kubernetes.client import V1ConfigMap, V1Namespace, V1ObjectMeta

import resilient_kube

from .cluster import ApiServer
from .conftest import StartApiServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKERS = 8
OUTAGE = 20.0
#: The article's load balancer ejects a dead master within 5 s; the client promises the same.
EJECT_WITHIN = 5.0


def wait_for(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``condition`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        threading.Event().wait(0.05)
    return None


def test_three_endpoints_kill_one_stop_another(
    start_apiserver: StartApiServer, e2e_results: dict[str, Any]
) -> None:
    # One etcd key prefix for all three: one cluster, three API servers.
    servers: list[ApiServer] = [
        start_apiserver(f"ha-{name}", "--etcd-prefix=/registry-ha") for name in "abc"
    ]
    namespace = "ha"
    with servers[0].stock_client() as api_client:
        setup = kubernetes.client.CoreV1Api(api_client)
        setup.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)))
        setup.create_namespaced_config_map(
            namespace, V1ConfigMap(metadata=V1ObjectMeta(name="probe"), data={"k": "v"})
        )

    stop = threading.Event()
    results = {"resilient": [0, 0], "stock": [0, 0]}  # calls, failures
    lock = threading.Lock()

    with resilient_kube.ClientFactory(
        kubeconfig=servers[0].kubeconfig, endpoints=[server.host for server in servers]
    ) as kube:
        core = kube.core_v1()
        # An informer on the same client keeps its cache in sync throughout.
        informer = kube.informer("list_namespaced_config_map", namespace=namespace)
        informer.start()
        assert informer.wait_for_sync(timeout=60)
        stock_api = servers[2].stock_client()  # the stock client knows one server: the third
        stock = kubernetes.client.CoreV1Api(stock_api)

        writes, write_errors = [0], [0]

        def writer() -> None:
            """Changes for the informer to follow, through every phase. A write whose answer
            was lost when its server died is not sent again (it may have been done): counted,
            not failed."""
            while not stop.is_set():
                name = f"w{writes[0] % 5}"
                try:
                    with contextlib.suppress(kubernetes.client.ApiException):  # 404 at first
                        core.delete_namespaced_config_map(name, namespace)
                    core.create_namespaced_config_map(
                        namespace,
                        V1ConfigMap(metadata=V1ObjectMeta(name=name), data={"n": str(writes[0])}),
                    )
                except (resilient_kube.TransportError, kubernetes.client.ApiException):
                    write_errors[0] += 1
                writes[0] += 1
                stop.wait(0.2)

        def worker(name: str, api: Any) -> None:
            calls = 0
            while not stop.is_set():
                failed = 0
                try:
                    if calls % 2:
                        assert api.read_namespaced_config_map("probe", namespace).data == {"k": "v"}
                    else:
                        assert api.list_namespaced_config_map(namespace).items
                except Exception:
                    failed = 1
                    stop.wait(0.1)  # the stock client fails at once: do not spin
                calls += 1
                with lock:
                    results[name][0] += 1
                    results[name][1] += failed

        def state(index: int) -> str:
            return kube.stats().endpoints[index].state

        with ThreadPoolExecutor(WORKERS + 3) as pool:
            futures = [pool.submit(worker, "resilient", core) for _ in range(WORKERS)]
            futures.append(pool.submit(worker, "stock", stock))
            futures.append(pool.submit(writer))
            assert wait_for(lambda: results["resilient"][0] > 200, 60) is not None

            servers[1].stop(kill=True)  # dead for good
            killed_ejected = wait_for(lambda: state(1) == "ejected", 30)

            servers[2].stop()  # down for OUTAGE seconds, then back
            stopped_ejected = wait_for(lambda: state(2) == "ejected", 30)
            stop.wait(OUTAGE)
            servers[2].start()
            readmitted = wait_for(lambda: state(2) == "healthy", 30)
            stop.wait(2.0)  # calls after the re-admission, on all the healthy endpoints
            stop.set()
            for future in futures:
                future.result(timeout=120)
        stats = kube.stats()
        stock_api.close()

        def cache_equals_server() -> bool:
            on_server = {
                (cm.metadata.name, cm.metadata.resource_version)
                for cm in core.list_namespaced_config_map(namespace).items
            }
            cached = {
                (cm.metadata.name, cm.metadata.resource_version) for cm in informer.cache.list()
            }
            return cached == on_server

        in_sync_after = wait_for(cache_equals_server, 30)
        informer.stop()

    e2e_results["three_endpoints"] = {
        "resilient_calls": results["resilient"][0],
        "resilient_failures": results["resilient"][1],
        "stock_calls_on_the_stopped_server": results["stock"][0],
        "stock_failures": results["stock"][1],
        "killed_ejected_after_seconds": killed_ejected,
        "stopped_ejected_after_seconds": stopped_ejected,
        "readmitted_after_seconds": readmitted,
        "endpoints": [endpoint._asdict() for endpoint in stats.endpoints],
        "writes": writes[0],
        "write_errors_after_a_lost_answer": write_errors[0],
        "informer_in_sync_after_seconds": in_sync_after,
        "watch_restarts": stats.watch.restarts_by_reason,
    }
    assert results["resilient"][1] == 0
    assert stats.transport.failures == 0
    assert killed_ejected is not None
    assert killed_ejected < EJECT_WITHIN
    assert stopped_ejected is not None
    assert stopped_ejected < EJECT_WITHIN
    assert readmitted is not None
    assert stats.endpoints[1].state == "ejected"
    assert writes[0] > 50
    assert in_sync_after is not None
