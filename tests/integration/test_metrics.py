"""Prometheus metrics (issue 19): every series and label set after scripted calls on the fake server."""

from __future__ import annotations

import gc
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import prometheus_client
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry, generate_latest

from resilient_kube import ApiClient, ConfigError, DeadlineExceeded, metrics
from resilient_kube.testing import FakeApiServer, ResetConnection, Stall, StatusFault
from tests.helpers.clock import FakeClock
from tests.helpers.loopback import Relay

#: Every family, its type and its labels: the contract dashboards are built on.
SERIES = {
    "rest_client_requests_total": ("counter", ("code", "method", "host")),
    "rest_client_request_duration_seconds": ("histogram", ("verb", "host")),
    "rest_client_request_size_bytes": ("histogram", ("verb", "host")),
    "rest_client_response_size_bytes": ("histogram", ("verb", "host")),
    "rest_client_rate_limiter_duration_seconds": ("histogram", ("verb", "host")),
    "rest_client_request_retries_total": ("counter", ("code", "verb", "host")),
    "rest_client_dns_resolution_duration_seconds": ("histogram", ("host",)),
    "rest_client_exec_plugin_call_total": ("counter", ("code", "call_status")),
    "rest_client_exec_plugin_ttl_seconds": ("gauge", ()),
    "rest_client_exec_plugin_certificate_rotation_age": ("histogram", ()),
    "resilient_kube_retries_total": ("counter", ("verb", "host", "reason")),
    "resilient_kube_retry_wait_seconds_total": ("counter", ("verb", "host")),
    "resilient_kube_failed_calls_total": ("counter", ("verb", "host", "error")),
    "resilient_kube_retry_budget_refusals_total": ("counter", ("verb", "host")),
    "resilient_kube_deadline_expiries_total": ("counter", ("verb", "host")),
    "resilient_kube_rate_limiter_qps": ("gauge", ("host",)),
    "resilient_kube_flow_control_responses_total": ("counter", ("flow_schema", "priority_level")),
    "resilient_kube_dns_lookups_total": ("counter", ("host", "result")),
    "resilient_kube_pool_connections_total": ("counter", ("host", "event")),
    "resilient_kube_watch_events_total": ("counter", ("kind",)),
    "resilient_kube_watch_restarts_total": ("counter", ("reason",)),
    "resilient_kube_informer_relists_total": ("counter", ("reason",)),
    "resilient_kube_watch_last_event_timestamp_seconds": ("gauge", ()),
    "resilient_kube_credential_refreshes_total": ("counter", ("source", "result")),
    "resilient_kube_credential_refresh_duration_seconds": ("histogram", ("source",)),
    "resilient_kube_server_warnings_total": ("counter", ("host",)),
}


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    metrics.register(registry)
    yield registry
    metrics.unregister()


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as fake:
        yield fake


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def label_sets(registry: CollectorRegistry, name: str) -> set[tuple[tuple[str, str], ...]]:
    """The label sets of a family's samples (``le`` left out)."""
    return {
        tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        for family in registry.collect()
        for sample in family.samples
        if family.name == name.removesuffix("_total")
    }


def test_every_series_has_client_gos_name_type_and_labels(registry: CollectorRegistry) -> None:
    sink = metrics.registered()
    assert sink is not None
    families = {family.name: family for family in sink.collect()}
    # prometheus_client names counter families without ``_total``.
    expected = {
        (name.removesuffix("_total") if kind == "counter" else name): kind
        for name, (kind, _) in SERIES.items()
    }
    assert {name: family.type for name, family in families.items()} == expected
    text = generate_latest(registry).decode()
    for name, (kind, _) in SERIES.items():
        assert f"# TYPE {name.removesuffix('_total') if kind == 'counter' else name} {kind}" in (
            text.replace("_total counter", " counter")
        )


def test_a_503_then_success(registry: CollectorRegistry, server: FakeApiServer) -> None:
    host = f"127.0.0.1:{server.port}"
    server.inject(StatusFault(503), verb="list", times=1)
    with ApiClient(server.configuration(), backoff_base=0.001) as api_client:
        client.CoreV1Api(api_client).list_namespace()
    # client-go counts every attempt in requests_total, and each retry with the failed code.
    assert value(registry, "rest_client_requests_total", code="503", method="GET", host=host) == 1
    assert value(registry, "rest_client_requests_total", code="200", method="GET", host=host) == 1
    assert label_sets(registry, "rest_client_requests_total") == {
        (("code", "200"), ("host", host), ("method", "GET")),
        (("code", "503"), ("host", host), ("method", "GET")),
    }
    retries = {"code": "503", "verb": "GET", "host": host}
    assert value(registry, "rest_client_request_retries_total", **retries) == 1
    reason = {"verb": "GET", "host": host, "reason": "status_503"}
    assert value(registry, "resilient_kube_retries_total", **reason) == 1
    assert value(registry, "resilient_kube_retry_wait_seconds_total", verb="GET", host=host) > 0
    verb_host = {"verb": "GET", "host": host}
    # One call, so one duration; two attempts, so two request sizes and two answers.
    assert value(registry, "rest_client_request_duration_seconds_count", **verb_host) == 1
    assert value(registry, "rest_client_request_size_bytes_count", **verb_host) == 2
    assert value(registry, "rest_client_request_size_bytes_sum", **verb_host) == 0  # GETs
    assert value(registry, "rest_client_response_size_bytes_count", **verb_host) == 2
    assert value(registry, "rest_client_response_size_bytes_sum", **verb_host) > 100
    # The limiter (on by default) is passed once per attempt, at once here.
    assert value(registry, "rest_client_rate_limiter_duration_seconds_count", **verb_host) == 2
    limiter_fast = {"le": "0.005", **verb_host}
    assert value(registry, "rest_client_rate_limiter_duration_seconds_bucket", **limiter_fast) == 2
    assert value(registry, "resilient_kube_failed_calls_total", error="DeadlineExceeded") == 0
    assert label_sets(registry, "resilient_kube_failed_calls_total") == set()


def test_a_post_body_is_measured(registry: CollectorRegistry, server: FakeApiServer) -> None:
    host = f"127.0.0.1:{server.port}"
    with ApiClient(server.configuration()) as api_client:
        client.CoreV1Api(api_client).create_namespaced_config_map(
            "default", {"metadata": {"name": "a"}, "data": {"k": "v" * 300}}
        )
    verb_host = {"verb": "POST", "host": host}
    assert value(registry, "rest_client_request_size_bytes_count", **verb_host) == 1
    assert value(registry, "rest_client_request_size_bytes_sum", **verb_host) > 300
    # Cumulative buckets: nothing at or below 256 bytes, the one body at 512 and above.
    assert value(registry, "rest_client_request_size_bytes_bucket", le="256.0", **verb_host) == 0
    assert value(registry, "rest_client_request_size_bytes_bucket", le="512.0", **verb_host) == 1
    assert value(registry, "rest_client_request_size_bytes_bucket", le="+Inf", **verb_host) == 1


def test_a_429_with_retry_after(registry: CollectorRegistry, server: FakeApiServer) -> None:
    host = f"127.0.0.1:{server.port}"
    server.inject(StatusFault(429, retry_after=0), verb="list", times=1)
    with ApiClient(server.configuration(), backoff_base=0.001) as api_client:
        client.CoreV1Api(api_client).list_namespace()
    assert value(registry, "rest_client_requests_total", code="429", method="GET", host=host) == 1
    retries = {"code": "429", "verb": "GET", "host": host}
    assert value(registry, "rest_client_request_retries_total", **retries) == 1
    assert label_sets(registry, "resilient_kube_retries_total") == {
        (("host", host), ("reason", "status_429"), ("verb", "GET"))
    }
    # The server paced the retry: it draws nothing from the budget, and nothing was refused.
    assert label_sets(registry, "resilient_kube_retry_budget_refusals_total") == set()
    # The 429 halved this client's limiter (default qps 50), labelled by the server it talks
    # to; the answer after it began the way back (by sqrt(2) a second).
    assert 25.0 <= value(registry, "resilient_kube_rate_limiter_qps", host=host) < 26.0


def test_a_reset_has_no_code(registry: CollectorRegistry, server: FakeApiServer) -> None:
    host = f"127.0.0.1:{server.port}"
    server.inject(ResetConnection(), verb="list", times=1)
    with ApiClient(server.configuration(), backoff_base=0.001) as api_client:
        client.CoreV1Api(api_client).list_namespace()
    no_code = {"code": "<error>", "method": "GET", "host": host}
    assert value(registry, "rest_client_requests_total", **no_code) == 1
    retried = {"code": "<error>", "verb": "GET", "host": host}
    assert value(registry, "rest_client_request_retries_total", **retried) == 1
    assert value(registry, "resilient_kube_retries_total", verb="GET", host=host, reason="reset")
    # No answer, no response size: only the second attempt's.
    verb_host = {"verb": "GET", "host": host}
    assert value(registry, "rest_client_response_size_bytes_count", **verb_host) == 1
    assert value(registry, "rest_client_request_size_bytes_count", **verb_host) == 2


def test_a_limiter_wait(registry: CollectorRegistry, server: FakeApiServer) -> None:
    host = f"127.0.0.1:{server.port}"
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    with ApiClient(server.configuration(), qps=10, burst=1, clock=clock, sleep=sleep) as api_client:
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()  # the only token
        v1.list_namespace()  # waits 1/qps = 0.1 s of the fake clock
    verb_host = {"verb": "GET", "host": host}
    name = "rest_client_rate_limiter_duration_seconds"
    assert value(registry, f"{name}_count", **verb_host) == 2
    assert value(registry, f"{name}_sum", **verb_host) == pytest.approx(0.1)
    assert value(registry, f"{name}_bucket", le="0.005", **verb_host) == 1
    assert value(registry, f"{name}_bucket", le="0.025", **verb_host) == 1
    assert value(registry, f"{name}_bucket", le="0.25", **verb_host) == 2


def test_a_budget_refusal(registry: CollectorRegistry, server: FakeApiServer) -> None:
    host = f"127.0.0.1:{server.port}"
    server.inject(StatusFault(503), verb="list", times=1)
    no_budget = {"retry_budget_ratio": 0.0, "retry_budget_min_per_second": 0.0}
    api_client = ApiClient(server.configuration(), **no_budget)  # type: ignore[arg-type]
    with api_client, pytest.raises(ApiException) as caught:
        client.CoreV1Api(api_client).list_namespace()
    assert caught.value.status == 503
    verb_host = {"verb": "GET", "host": host}
    assert value(registry, "resilient_kube_retry_budget_refusals_total", **verb_host) == 1
    assert label_sets(registry, "rest_client_request_retries_total") == set()
    # The call returned the server's answer: no resilient_kube error was raised.
    assert label_sets(registry, "resilient_kube_failed_calls_total") == set()


def test_a_deadline_expiry(registry: CollectorRegistry, server: FakeApiServer) -> None:
    host = f"127.0.0.1:{server.port}"
    server.inject(Stall(), verb="list", times=1)
    api_client = ApiClient(server.configuration(), deadline=0.3, read_timeout=10)
    with api_client, pytest.raises(DeadlineExceeded):
        client.CoreV1Api(api_client).list_namespace()
    verb_host = {"verb": "GET", "host": host}
    assert value(registry, "resilient_kube_deadline_expiries_total", **verb_host) == 1
    failed = {"error": "DeadlineExceeded", **verb_host}
    assert value(registry, "resilient_kube_failed_calls_total", **failed) == 1
    assert value(registry, "rest_client_requests_total", code="<error>", method="GET", host=host)
    assert value(registry, "rest_client_request_duration_seconds_sum", **verb_host) >= 0.3


def _answer_with(headers: bytes) -> Relay:
    body = b'{"kind":"NamespaceList","apiVersion":"v1","metadata":{},"items":[]}'
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (headers, len(body), body)
    )

    def handle(conn: socket.socket) -> None:
        while conn.recv(65536):
            conn.sendall(answer)

    return Relay(handle)


def test_flow_control_and_warnings_from_the_server(registry: CollectorRegistry) -> None:
    relay = _answer_with(
        b"X-Kubernetes-PF-FlowSchema-UID: fs-1\r\n"
        b"X-Kubernetes-PF-PriorityLevel-UID: pl-1\r\n"
        b'Warning: 299 - "v1 Thing is deprecated"\r\n'
    )
    try:
        api_client = ApiClient(client.Configuration(host=f"http://127.0.0.1:{relay.port}"))
        with api_client:
            client.CoreV1Api(api_client).list_namespace()
            client.CoreV1Api(api_client).list_namespace()
    finally:
        relay.close()
    flow = {"flow_schema": "fs-1", "priority_level": "pl-1"}
    assert value(registry, "resilient_kube_flow_control_responses_total", **flow) == 2
    host = f"127.0.0.1:{relay.port}"
    assert value(registry, "resilient_kube_server_warnings_total", host=host) == 2


def test_events_not_from_calls_reach_their_series(registry: CollectorRegistry) -> None:
    """Watches, the pool, DNS, the limiter's rate and credentials, by the sink's own methods."""
    sink = metrics.registered()
    assert sink is not None
    sink.watch_event("ADDED")
    sink.watch_event("BOOKMARK")
    sink.watch_event("ADDED")
    sink.watch_restart("reset", 0.5)
    sink.watch_restart("idle", 1.0)
    sink.watch_restart("reset", 0.2)
    sink.informer_relist("initial")
    sink.informer_relist("expired")
    sink.rate_changed("api:6443", 25.0)
    sink.rate_changed("api:6443", 12.5)
    sink.rate_changed("other:6443", 50.0)
    sink.dns_lookup("api:6443", "miss", 0.02)
    sink.dns_lookup("api:6443", "hit", 0.0)
    sink.dns_lookup("api:6443", "stale", 2.0)
    sink.connection("api:6443", "opened")
    sink.connection("api:6443", "retired")
    sink.connection("api:6443", "opened")
    sink.credential_refresh("exec", 0.3, True)
    sink.credential_refresh("exec", 1.5, False)
    sink.credential_refresh("token_file", 0.001, True)
    sink.exec_plugin_call(0, "no_error")
    sink.exec_plugin_call(3, "plugin_execution_error")
    sink.exec_plugin_call(1, "plugin_not_found_error")

    def v(name: str, **labels: str) -> float:
        return value(registry, name, **labels)

    assert v("resilient_kube_watch_events_total", kind="ADDED") == 2
    assert v("resilient_kube_watch_events_total", kind="BOOKMARK") == 1
    assert v("resilient_kube_watch_restarts_total", reason="reset") == 2
    assert v("resilient_kube_watch_restarts_total", reason="idle") == 1
    assert v("resilient_kube_informer_relists_total", reason="initial") == 1
    assert v("resilient_kube_informer_relists_total", reason="expired") == 1
    stamp = v("resilient_kube_watch_last_event_timestamp_seconds")
    assert stamp > 1.7e9  # Unix time, so age is time() - it
    assert v("resilient_kube_rate_limiter_qps", host="api:6443") == 12.5
    assert v("resilient_kube_rate_limiter_qps", host="other:6443") == 50.0
    assert v("resilient_kube_dns_lookups_total", host="api:6443", result="miss") == 1
    assert v("resilient_kube_dns_lookups_total", host="api:6443", result="stale") == 1
    assert v("rest_client_dns_resolution_duration_seconds_count", host="api:6443") == 3
    assert v("rest_client_dns_resolution_duration_seconds_bucket", host="api:6443", le="1.0") == 2
    assert v("resilient_kube_pool_connections_total", host="api:6443", event="opened") == 2
    assert v("resilient_kube_pool_connections_total", host="api:6443", event="retired") == 1
    assert v("rest_client_exec_plugin_call_total", code="0", call_status="no_error") == 1
    failed = {"code": "3", "call_status": "plugin_execution_error"}
    assert v("rest_client_exec_plugin_call_total", **failed) == 1
    assert label_sets(registry, "rest_client_exec_plugin_call_total") == {
        (("call_status", "no_error"), ("code", "0")),
        (("call_status", "plugin_execution_error"), ("code", "3")),
        (("call_status", "plugin_not_found_error"), ("code", "1")),
    }
    assert v("resilient_kube_credential_refreshes_total", source="exec", result="ok") == 1
    assert v("resilient_kube_credential_refreshes_total", source="exec", result="error") == 1
    assert v("resilient_kube_credential_refreshes_total", source="token_file", result="ok") == 1
    assert v("resilient_kube_credential_refresh_duration_seconds_count", source="exec") == 2


def test_label_names_are_the_declared_ones(
    registry: CollectorRegistry, server: FakeApiServer
) -> None:
    server.inject(StatusFault(503), verb="list", times=1)
    with ApiClient(server.configuration(), backoff_base=0.001) as api_client:
        client.CoreV1Api(api_client).list_namespace()
    sink = metrics.registered()
    assert sink is not None
    sink.credential_refresh("exec", 0.1, True)
    sink.exec_plugin_call(0, "no_error")
    sink.exec_certificate(sink, time.time() + 60, 700.0)
    sink.rate_changed("h:1", 5.0)
    sink.dns_lookup("h:1", "hit", 0.0)
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        _, labels = SERIES[name]
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)


def test_register_is_once_per_process() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    sink = metrics.register(first)
    try:
        assert metrics.register(first) is sink
        with pytest.raises(ConfigError, match="already registered"):
            metrics.register(second)
    finally:
        metrics.unregister()
    assert metrics.registered() is None
    metrics.unregister()  # a second undo does nothing
    # Afterwards, another registry is fine, and the first no longer has the series.
    assert metrics.register(second) is not sink
    metrics.unregister()
    assert first.get_sample_value("resilient_kube_rate_limiter_qps") is None
    assert not list(first.collect())


def test_a_name_clash_in_the_registry_is_refused() -> None:
    registry = CollectorRegistry()
    prometheus_client.Counter(
        "rest_client_requests_total", "someone else's", ["code"], registry=registry
    )
    with pytest.raises(ValueError, match="rest_client_requests"):
        metrics.register(registry)
    assert metrics.registered() is None


def test_the_default_registry_is_prometheus_clients(server: FakeApiServer) -> None:
    sink = metrics.register()
    try:
        with ApiClient(server.configuration()) as api_client:
            client.CoreV1Api(api_client).list_namespace()
        labels = {"code": "200", "method": "GET", "host": f"127.0.0.1:{server.port}"}
        got = prometheus_client.REGISTRY.get_sample_value("rest_client_requests_total", labels)
        assert got == 1
        assert metrics.registered() is sink
    finally:
        metrics.unregister()


def test_without_the_extra_register_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'resilient_kube\[metrics\]'"):
        metrics.register()


def test_importing_resilient_kube_imports_neither_prometheus_nor_opentelemetry() -> None:
    code = (
        "import sys, resilient_kube, resilient_kube.metrics, resilient_kube.tracing;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('prometheus_client', 'opentelemetry'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_counts_are_exact_under_threads() -> None:
    sink = metrics.ClientMetrics()
    registry = CollectorRegistry()
    registry.register(sink)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(2000):
            sink.limiter_wait("GET", "h:1", 0.0)
            sink.attempt("GET", "h:1", "200", 0.001, 0, 100)
            sink.call_ended("GET", "h:1", 1, 0.001, None, None)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        list(registry.collect())  # scrapes meanwhile see consistent copies and never raise
    for thread in threads:
        thread.join()
    verb_host = {"verb": "GET", "host": "h:1"}
    assert value(registry, "rest_client_requests_total", code="200", method="GET", host="h:1") == (
        16000
    )
    assert value(registry, "rest_client_request_duration_seconds_count", **verb_host) == 16000
    assert value(registry, "rest_client_response_size_bytes_sum", **verb_host) == 1_600_000
    assert value(registry, "rest_client_rate_limiter_duration_seconds_count", **verb_host) == 16000


def test_a_call_that_began_before_register_counts_its_whole_duration() -> None:
    # The driver times the call and says so when it ends: nothing is kept per thread.
    sink = metrics.ClientMetrics()
    registry = CollectorRegistry()
    registry.register(sink)
    sink.call_ended("GET", "h:1", 1, 0.3, None, None)
    sink.call_ended("GET", "h:1", 2, 0.0, None, None)
    verb_host = {"verb": "GET", "host": "h:1"}
    duration = "rest_client_request_duration_seconds"
    assert value(registry, f"{duration}_count", **verb_host) == 2
    assert value(registry, f"{duration}_sum", **verb_host) == 0.3
    assert value(registry, f"{duration}_bucket", le="0.005", **verb_host) == 1


def test_lock_free_counts_add_up_with_the_locked_ones() -> None:
    # A size of 0 and a limiter pass without a wait are counted apart, without the lock, and
    # folded into the first bucket when scraped; sizes and waits above 0 take the lock.
    sink = metrics.ClientMetrics()
    registry = CollectorRegistry()
    registry.register(sink)
    sink.attempt("POST", "h:1", "201", 0.001, 300, 64)
    sink.attempt("POST", "h:1", "201", 0.001, 0, 65)
    sink.limiter_wait("POST", "h:1", 0.0)
    sink.limiter_wait("POST", "h:1", 0.004)
    sink.limiter_wait("POST", "h:1", 0.2)
    verb_host = {"verb": "POST", "host": "h:1"}
    sent = "rest_client_request_size_bytes"
    assert value(registry, f"{sent}_bucket", le="64.0", **verb_host) == 1
    assert value(registry, f"{sent}_bucket", le="512.0", **verb_host) == 2
    assert value(registry, f"{sent}_count", **verb_host) == 2
    assert value(registry, f"{sent}_sum", **verb_host) == 300
    received = "rest_client_response_size_bytes"
    assert value(registry, f"{received}_bucket", le="64.0", **verb_host) == 1
    assert value(registry, f"{received}_bucket", le="256.0", **verb_host) == 2
    waited = "rest_client_rate_limiter_duration_seconds"
    assert value(registry, f"{waited}_bucket", le="0.005", **verb_host) == 2
    assert value(registry, f"{waited}_bucket", le="0.25", **verb_host) == 3
    assert value(registry, f"{waited}_sum", **verb_host) == pytest.approx(0.204)
    requests = "rest_client_requests_total"
    assert value(registry, requests, code="201", method="POST", host="h:1") == 2


def test_the_exec_certificate_ttl_is_the_soonest_expiry_of_live_plugins() -> None:
    """client-go's TTL gauge: +Inf with no certificate, else seconds until the soonest expires
    (negative once expired); a client's plugin that is gone no longer counts."""
    now = 1_000_000.0
    sink = metrics.ClientMetrics(clock=lambda: now)
    registry = CollectorRegistry()
    registry.register(sink)
    assert value(registry, "rest_client_exec_plugin_ttl_seconds") == math.inf

    class Owner:
        """Stands for one client's exec plugin (the event's owner, held weakly)."""

    first, second = Owner(), Owner()
    sink.exec_certificate(first, now + 600, None)
    sink.exec_certificate(second, now + 300, None)
    assert value(registry, "rest_client_exec_plugin_ttl_seconds") == 300
    sink.exec_certificate(second, now - 5, 4000.0)  # rotated to one already expired
    assert value(registry, "rest_client_exec_plugin_ttl_seconds") == -5
    del second
    gc.collect()
    assert value(registry, "rest_client_exec_plugin_ttl_seconds") == 600
    age = "rest_client_exec_plugin_certificate_rotation_age"
    assert value(registry, f"{age}_count") == 1
    assert value(registry, f"{age}_bucket", le="4800.0") == 1
    assert value(registry, f"{age}_bucket", le="2400.0") == 0
