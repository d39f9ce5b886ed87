"""429 Too Many Requests from a real kube-apiserver: the stock client fails, resilient_kube waits.

Two servers refuse concurrent work:

* ``tiny_apiserver``: APF off, ``--max-requests-inflight=1``; the max-in-flight filter answers
  429 with ``Retry-After: 1`` to every read beyond the first.
* ``apf_apiserver``: APF on; a FlowSchema sends this test's LISTs to a PriorityLevel of one seat
  whose limit response is ``Reject``, so APF answers 429 instead of queueing.

The same burst (``THREADS`` threads x ``CALLS_PER_THREAD`` LISTs) runs through the stock client
and through resilient_kube; the counts go to the terminal summary and to ``RK_E2E_RESULTS``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException, V1ConfigMap, V1Namespace, V1ObjectMeta

import resilient_kube

from .cluster import USER, ApiServer, poll

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

THREADS = 32
CALLS_PER_THREAD = 20
#: Fewer against APF: its Retry-After grows with sustained drops (1 s doubling up to 32 s).
APF_CALLS_PER_THREAD = 3
#: Objects in the listed namespace, of which ``SELECTED`` carry the label that the LIST selects:
#: the server filters them all while the client decodes only a few (seats stay busy longer
#: than the client needs to produce the next request).
CONFIG_MAPS = 100
SELECTED = 10
SELECTOR = "app=burst"
#: Every burst must end within this many seconds.
BURST_TIMEOUT = 150.0


class WireCounter(logging.Handler):
    """Counts the HTTP responses urllib3 receives (its DEBUG line per response).

    The stock client has no stats, and its urllib3 ``Retry(3)`` default repeats a 429 that
    carries Retry-After up to three times, so calls and wire requests differ there too.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.responses = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == '%s://%s:%s "%s %s %s" %s %s':
            self.responses += 1


@contextlib.contextmanager
def counting_wire_requests() -> Iterator[WireCounter]:
    logger = logging.getLogger("urllib3.connectionpool")
    counter, level, propagate = WireCounter(), logger.level, logger.propagate
    logger.addHandler(counter)
    # DEBUG for this handler only: nothing reaches the root logger (or pytest's capture).
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
        logger.propagate = propagate


@dataclasses.dataclass(frozen=True)
class Burst:
    """What happened to the calls of one burst."""

    calls: int
    ok: int
    #: Calls that ended in a 429 (after the client's own retries, if any).
    throttled: int
    other_errors: int
    #: HTTP responses received, retries included.
    wire_requests: int
    seconds: float
    error_samples: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_burst(list_once: Callable[[], object], calls_per_thread: int) -> Burst:
    """Call ``list_once`` ``calls_per_thread`` times from each of ``THREADS`` threads at once."""
    start_line = threading.Barrier(THREADS)

    def worker() -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        start_line.wait(timeout=30)
        for _ in range(calls_per_thread):
            try:
                list_once()
            except ApiException as exc:
                counts[
                    "throttled" if exc.status == 429 else f"error: {exc.status} {exc.reason}"
                ] += 1
            except Exception as exc:  # counted and reported, never swallowed
                counts[f"error: {exc!r}"[:200]] += 1
            else:
                counts["ok"] += 1
        return counts

    start = time.monotonic()
    with counting_wire_requests() as wire, ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker) for _ in range(THREADS)]
        total: collections.Counter[str] = collections.Counter()
        for future in futures:
            total.update(future.result(timeout=BURST_TIMEOUT))
    errors = {key: count for key, count in total.items() if key.startswith("error")}
    return Burst(
        calls=THREADS * calls_per_thread,
        ok=total["ok"],
        throttled=total["throttled"],
        other_errors=sum(errors.values()),
        wire_requests=wire.responses,
        seconds=round(time.monotonic() - start, 2),
        error_samples=sorted(errors)[:5],
    )


def fill_namespace(server: ApiServer) -> str:
    """Create a namespace with ``CONFIG_MAPS`` ConfigMaps of 1 KiB, ``SELECTED`` of them labeled.

    With the stock client, one at a time; a 429 is repeated (the server's own loopback
    requests can hold the single mutating seat of ``tiny_apiserver`` for a moment).
    """
    name = f"burst-{uuid.uuid4().hex[:8]}"
    with server.stock_client() as api_client:
        core = kubernetes.client.CoreV1Api(api_client)

        def create(call: Callable[[], object]) -> None:
            def attempt() -> bool | None:
                try:
                    call()
                except ApiException as exc:
                    if exc.status != 429:
                        raise
                    return None
                return True

            poll(attempt, timeout=30, what="create despite 429")

        create(lambda: core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name))))
        for index in range(CONFIG_MAPS):
            labels = {"app": "burst"} if index < SELECTED else {"app": "other"}
            body = V1ConfigMap(
                metadata=V1ObjectMeta(name=f"cm-{index}", labels=labels), data={"v": "x" * 1024}
            )
            create(functools.partial(core.create_namespaced_config_map, name, body))
    return name


def list_selected(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    items = core.list_namespaced_config_map(namespace, label_selector=SELECTOR).items
    assert len(items) == SELECTED


def stock_burst(server: ApiServer, namespace: str, calls_per_thread: int) -> Burst:
    """The burst through the official client (its pool sized for the threads, like ours)."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(server.kubeconfig), client_configuration=configuration
    )
    configuration.connection_pool_maxsize = THREADS
    with kubernetes.client.ApiClient(configuration) as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        return run_burst(lambda: list_selected(core, namespace), calls_per_thread)


def resilient_burst(
    kube: resilient_kube.ClientFactory, namespace: str, calls_per_thread: int
) -> tuple[Burst, dict[str, Any]]:
    """The burst through resilient_kube, with the client's stats after it."""
    core = kube.core_v1()
    before = kube.stats()
    burst = run_burst(lambda: list_selected(core, namespace), calls_per_thread)
    stats = kube.stats()
    assert stats.limiter is not None
    numbers = {
        "attempts": stats.transport.attempts - before.transport.attempts,
        "retries_by_reason": stats.retry.retries_by_reason,
        "budget_refusals": stats.retry.budget_refusals,
        "backoff_seconds": round(stats.retry.backoff_seconds, 2),
        "limiter_throttled": stats.limiter.throttled,
        "limiter_effective_qps": round(stats.limiter.effective_qps, 2),
        "limiter_wait_seconds": round(stats.limiter.wait_seconds, 2),
    }
    return burst, numbers


@pytest.fixture(scope="module")
def tiny_namespace(tiny_apiserver: ApiServer) -> str:
    return fill_namespace(tiny_apiserver)


def test_max_inflight_429(
    tiny_apiserver: ApiServer, tiny_namespace: str, e2e_results: dict[str, Any]
) -> None:
    stock = stock_burst(tiny_apiserver, tiny_namespace, CALLS_PER_THREAD)
    with resilient_kube.ClientFactory(kubeconfig=tiny_apiserver.kubeconfig) as kube:
        resilient, numbers = resilient_burst(kube, tiny_namespace, CALLS_PER_THREAD)
    e2e_results["max_inflight_429"] = {
        "server": "kube-apiserver --enable-priority-and-fairness=false --max-requests-inflight=1",
        "threads": THREADS,
        "calls_per_thread": CALLS_PER_THREAD,
        "stock": stock.as_dict(),
        "resilient": {**resilient.as_dict(), **numbers},
    }

    assert stock.throttled > 0, stock
    assert stock.ok + stock.throttled == stock.calls, stock.error_samples
    assert resilient.ok == resilient.calls, (resilient, numbers)
    retried_429 = numbers["retries_by_reason"].get("status_429", 0)
    assert retried_429 > 0
    assert numbers["attempts"] == resilient.wire_requests == resilient.calls + retried_429
    # The server said "Retry-After: 1": no retry went out sooner.
    assert numbers["backoff_seconds"] >= retried_429 * 1.0 - 0.01


@dataclasses.dataclass(frozen=True)
class TinyFlow:
    """The UIDs of a one-seat, reject-on-overload PriorityLevel and the FlowSchema into it."""

    namespace: str
    flow_schema_uid: str
    priority_level_uid: str


def apf_objects(name: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PriorityLevelConfiguration with one seat that rejects, and a FlowSchema into it."""
    priority_level = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {
            "type": "Limited",
            "limited": {
                # ceil(3 seats * 1 / (245 + 1) shares) = 1 seat; nothing lent or borrowed.
                "nominalConcurrencyShares": 1,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            },
        },
    }
    flow_schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": name},
            # Before every built-in schema except exempt (1) and probes (2).
            "matchingPrecedence": 100,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "User", "user": {"name": USER}}],
                    "resourceRules": [
                        {
                            "verbs": ["list"],
                            "apiGroups": [""],
                            "resources": ["configmaps"],
                            "namespaces": [namespace],
                        }
                    ],
                }
            ],
        },
    }
    return priority_level, flow_schema


@contextlib.contextmanager
def tiny_flow(server: ApiServer) -> Iterator[TinyFlow]:
    """A filled namespace whose LISTs APF sends to a fresh one-seat Reject priority level.

    Each client gets its own level: APF adapts a level's Retry-After to its recent drops
    (doubling up to 32 s), so a shared level would make the second client pay for the first.
    """
    namespace = fill_namespace(server)
    name = f"e2e-tiny-{uuid.uuid4().hex[:6]}"
    priority_level, flow_schema = apf_objects(name, namespace)
    group, version = "flowcontrol.apiserver.k8s.io", "v1"
    with server.stock_client() as api_client:
        custom = kubernetes.client.CustomObjectsApi(api_client)
        created_level = custom.create_cluster_custom_object(
            group, version, "prioritylevelconfigurations", priority_level
        )
        created_schema = custom.create_cluster_custom_object(
            group, version, "flowschemas", flow_schema
        )
        flow = TinyFlow(
            namespace=namespace,
            flow_schema_uid=created_schema["metadata"]["uid"],
            priority_level_uid=created_level["metadata"]["uid"],
        )

        # APF picks the new objects up through an informer: wait until a LIST is classified
        # into the new priority level (the response header names it).
        core = kubernetes.client.CoreV1Api(api_client)

        def classified() -> bool | None:
            _, _, headers = core.list_namespaced_config_map_with_http_info(namespace, limit=1)
            uid = headers.get("X-Kubernetes-PF-PriorityLevel-UID")
            return True if uid == flow.priority_level_uid else None

        poll(classified, timeout=30, interval=0.2, what="FlowSchema in effect")
        try:
            yield flow
        finally:
            custom.delete_cluster_custom_object(group, version, "flowschemas", name)
            custom.delete_cluster_custom_object(group, version, "prioritylevelconfigurations", name)


def test_apf_flow_headers_recorded(apf_apiserver: ApiServer) -> None:
    with (
        tiny_flow(apf_apiserver) as flow,
        resilient_kube.ClientFactory(kubeconfig=apf_apiserver.kubeconfig) as kube,
    ):
        core = kube.core_v1()
        for _ in range(3):
            list_selected(core, flow.namespace)
        kube.core_v1().list_namespace()  # classified by a built-in schema
        limiter = kube.stats().limiter
    assert limiter is not None
    assert limiter.flow_schemas.get(flow.flow_schema_uid) == 3
    assert limiter.priority_levels.get(flow.priority_level_uid) == 3
    assert sum(limiter.flow_schemas.values()) == 4
    assert sum(limiter.priority_levels.values()) == 4


def test_apf_429(apf_apiserver: ApiServer, e2e_results: dict[str, Any]) -> None:
    with tiny_flow(apf_apiserver) as flow:
        stock = stock_burst(apf_apiserver, flow.namespace, APF_CALLS_PER_THREAD)
    with (
        tiny_flow(apf_apiserver) as flow,
        resilient_kube.ClientFactory(kubeconfig=apf_apiserver.kubeconfig) as kube,
    ):
        resilient, numbers = resilient_burst(kube, flow.namespace, APF_CALLS_PER_THREAD)
        limiter = kube.stats().limiter
    assert limiter is not None
    e2e_results["apf_429"] = {
        "server": "kube-apiserver --max-requests-inflight=2 --max-mutating-requests-inflight=1"
        " + a 1-seat Reject PriorityLevel",
        "threads": THREADS,
        "calls_per_thread": APF_CALLS_PER_THREAD,
        "stock": stock.as_dict(),
        "resilient": {
            **resilient.as_dict(),
            **numbers,
            "flow_schemas": limiter.flow_schemas,
            "priority_levels": limiter.priority_levels,
        },
    }

    # The server throttled the stock client too: its wire requests exceed its calls because
    # urllib3's default Retry(3) re-sends a GET that got 429 + Retry-After. Against a burst this
    # small that sometimes carries it through (as it did in 1 of 8 runs here), so whether it
    # failed is recorded, not asserted; the max-inflight test asserts the failures.
    assert stock.wire_requests > stock.calls, stock
    assert stock.ok + stock.throttled == stock.calls, stock.error_samples
    assert numbers["retries_by_reason"].get("status_429", 0) > 0
    # Every response, 429s included, named the schema and the level that classified it.
    assert limiter.flow_schemas == {flow.flow_schema_uid: numbers["attempts"]}
    assert limiter.priority_levels == {flow.priority_level_uid: numbers["attempts"]}
    assert resilient.ok == resilient.calls, (resilient, numbers)
