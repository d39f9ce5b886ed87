"""``Watch`` and ``SharedInformer`` on a real kube-apiserver: restarts, compaction, outage, bookmarks."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from kubernetes.client import V1ConfigMap, V1Namespace, V1ObjectMeta

import resilient_kube
from resilient_kube import SharedInformer, Watch

from .cluster import ApiServer
from .conftest import StartApiServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

Event = tuple[str, str, str]


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``condition`` (checked every 0.1 s), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _namespace(server: ApiServer) -> str:
    name = f"w-{uuid.uuid4().hex[:6]}"
    with server.stock_client() as api_client:
        kubernetes.client.CoreV1Api(api_client).create_namespace(
            V1Namespace(metadata=V1ObjectMeta(name=name))
        )
    return name


def _create(core: Any, namespace: str, name: str) -> Event:
    obj = core.create_namespaced_config_map(
        namespace, V1ConfigMap(metadata=V1ObjectMeta(name=name))
    )
    return ("ADDED", name, obj.metadata.resource_version)


def _server_state(core: Any, namespace: str) -> dict[str, tuple[str, str]]:
    return {
        f"{namespace}/{o.metadata.name}": (o.metadata.uid, o.metadata.resource_version)
        for o in core.list_namespaced_config_map(namespace).items
    }


def _cache_state(informer: SharedInformer) -> dict[str, tuple[str, str]]:
    return {
        key: (o.metadata.uid, o.metadata.resource_version)
        for key in informer.cache.list_keys()
        if (o := informer.cache.get_by_key(key)) is not None
    }


@pytest.mark.parametrize("watch_cache", [False, True], ids=["etcd", "watch-cache"])
def test_watch_rides_over_an_apiserver_restart(
    start_apiserver: StartApiServer, watch_cache: bool, e2e_results: dict[str, Any]
) -> None:
    """Served from etcd, the watch resumes with every event once. Served from the watch cache,
    the restarted server's cache starts at the current revision, so a resume from an older one
    may get 410: then ``ResourceExpired`` is raised, after exactly the events before it."""
    flags = () if watch_cache else ("--watch-cache=false",)
    server = start_apiserver(f"w-{uuid.uuid4().hex[:6]}", *flags)
    namespace = _namespace(server)
    with resilient_kube.ClientFactory(kubeconfig=server.kubeconfig) as kube:
        core = kube.core_v1()
        start = core.list_namespaced_config_map(namespace).metadata.resource_version
        seen: list[Event] = []
        raised: list[BaseException] = []
        watch = kube.watch()

        def consume() -> None:
            try:
                for event in watch.stream(
                    core.list_namespaced_config_map, namespace, resource_version=start
                ):
                    meta = event["raw_object"]["metadata"]
                    seen.append((event["type"], meta["name"], meta["resourceVersion"]))
            except resilient_kube.ResourceExpired as exc:
                raised.append(exc)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        expected = [_create(core, namespace, f"before-{i}") for i in range(5)]
        _until(lambda: len(seen) >= 5, 30, "the events before the restart")
        started = time.monotonic()
        server.restart()
        expected += [_create(core, namespace, f"after-{i}") for i in range(5)]
        _until(lambda: len(seen) >= 10 or bool(raised), 60, "the events after the restart")
        recovered = time.monotonic() - started
        watch.stop()
        thread.join(10)
        server.stop()
        if raised:
            assert watch_cache, raised  # etcd keeps every revision: no 410 there
            assert seen == expected[: len(seen)]
            assert len(seen) >= 5
        else:
            assert seen == expected
        e2e_results[f"watch_restart_{'cache' if watch_cache else 'etcd'}"] = {
            "recovered_seconds": round(recovered, 2),
            "raised_410": bool(raised),
            "restarts_by_reason": kube.stats().watch.restarts_by_reason,
        }


def test_informer_rides_over_an_apiserver_restart(
    restartable_apiserver: ApiServer, e2e_results: dict[str, Any]
) -> None:
    server = restartable_apiserver
    namespace = _namespace(server)
    with resilient_kube.ClientFactory(kubeconfig=server.kubeconfig) as kube:
        core = kube.core_v1()
        for i in range(20):
            _create(core, namespace, f"cm-{i}")
        informer = kube.informer(core.list_namespaced_config_map, namespace=namespace)
        informer.start()
        try:
            assert informer.wait_for_sync(30)
            server.restart(kill=True)
            for i in range(5):
                core.delete_namespaced_config_map(f"cm-{i}", namespace)
                _create(core, namespace, f"new-{i}")
            core.patch_namespaced_config_map("cm-10", namespace, {"data": {"k": "v"}})
            _until(
                lambda: _cache_state(informer) == _server_state(core, namespace),
                60,
                "the cache to equal the server",
            )
        finally:
            informer.stop()
        e2e_results["informer_restart"] = {"watch": kube.stats().watch._asdict()}


def _etcd_compact(port: int) -> int:
    """Compact etcd up to its current revision (the v3 JSON gateway); return the revision."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    key = base64.b64encode(b"/").decode()
    revision = int(post("/v3/kv/range", {"key": key, "limit": 1})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def test_compaction_makes_the_informer_relist(
    start_apiserver: StartApiServer, e2e_results: dict[str, Any]
) -> None:
    # Without the watch cache, a resume goes to etcd, which answers a compacted version with 410.
    server = start_apiserver(f"nocache-{uuid.uuid4().hex[:6]}", "--watch-cache=false")
    namespace = _namespace(server)
    relists: list[str] = []

    class Relists(resilient_kube.EventSink):
        def informer_relist(self, reason: str) -> None:
            relists.append(reason)

    with resilient_kube.ClientFactory(kubeconfig=server.kubeconfig) as kube:
        kube.api_client.subscribe(Relists())
        core = kube.core_v1()
        for i in range(5):
            _create(core, namespace, f"cm-{i}")
        informer = kube.informer(core.list_namespaced_config_map, namespace=namespace)
        informer.start()
        try:
            assert informer.wait_for_sync(30)

            def compact_while_down() -> None:
                _etcd_compact(server.etcd_port)

            # Writes elsewhere move etcd past the informer's version; then compact, restart.
            core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}})
            server.restart(between=compact_while_down)
            core.delete_namespaced_config_map("cm-0", namespace)
            _create(core, namespace, "after")
            _until(lambda: "expired" in relists, 60, "a relist after 410")
            _until(
                lambda: _cache_state(informer) == _server_state(core, namespace),
                60,
                "the cache to equal the server",
            )
        finally:
            informer.stop()
        e2e_results["compaction"] = {"relists": relists}


def test_thirty_second_outage_attempts(
    restartable_apiserver: ApiServer, e2e_results: dict[str, Any]
) -> None:
    server = restartable_apiserver
    namespace = _namespace(server)
    with resilient_kube.ClientFactory(kubeconfig=server.kubeconfig) as kube:
        core = kube.core_v1()
        _create(core, namespace, "a")
        informer = kube.informer(core.list_namespaced_config_map, namespace=namespace)
        informer.start()
        try:
            assert informer.wait_for_sync(30)
            before = kube.stats().transport.attempts
            server.stop()
            down = time.monotonic()
            time.sleep(30)  # the outage itself: the server is down this long
            during = kube.stats().transport.attempts - before
            server.start()
            up = time.monotonic()
            with server.stock_client() as api_client:
                last = _create(kubernetes.client.CoreV1Api(api_client), namespace, "after")
            _until(
                lambda: informer.cache.get_by_key(f"{namespace}/after") is not None,
                45,
                "the informer back in sync",
            )
            back = time.monotonic() - up
        finally:
            informer.stop()
        assert last[1] == "after"
        # Every wire attempt of the 30 s, the transport's retries included: about a dozen.
        assert during <= 25, during
        e2e_results["outage_30s"] = {
            "attempts": during,
            "outage_seconds": round(up - down, 1),
            "back_in_sync_seconds": round(back, 1),
            "restarts_by_reason": kube.stats().watch.restarts_by_reason,
        }


def test_bookmark_cadence(apiserver: ApiServer, e2e_results: dict[str, Any]) -> None:
    """How often kube-apiserver sends a BOOKMARK to an idle watch that asks for them."""
    namespace = _namespace(apiserver)
    with resilient_kube.ClientFactory(kubeconfig=apiserver.kubeconfig) as kube:
        core = kube.core_v1()
        start = core.list_namespaced_config_map(namespace).metadata.resource_version
        watch = Watch()
        arrivals: list[float] = []
        opened = time.monotonic()
        for event in watch.stream(
            core.list_namespaced_config_map, namespace, resource_version=start,
            allow_watch_bookmarks=True, timeout_seconds=200,
        ):  # fmt: skip
            if event["type"] == "BOOKMARK":
                arrivals.append(time.monotonic() - opened)
                if len(arrivals) == 3:
                    watch.stop()
        gaps = [b - a for a, b in zip([0.0, *arrivals], arrivals, strict=False)]
        e2e_results["bookmark_cadence"] = {
            "arrivals_seconds": [round(a, 1) for a in arrivals],
            "gaps_seconds": [round(g, 1) for g in gaps],
        }
        assert len(arrivals) == 3
        assert max(gaps) < 180  # watch_idle_timeout (180 s recommended) must sit above every gap
