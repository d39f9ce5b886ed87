"""OpenTelemetry traces (issue 19): a client span per call, events per retry, traceparent sent."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from resilient_kube import ApiClient, ConnectionReset, tracing
from resilient_kube.testing import FakeApiServer, ResetConnection, StatusFault
from tests.helpers.clock import FakeClock
from tests.helpers.loopback import Relay


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(provider)
    yield exporter
    tracing.uninstrument()
    provider.shutdown()


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as fake:
        yield fake


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, spans
    return spans[0]


def test_a_call_is_one_client_span(exporter: InMemorySpanExporter, server: FakeApiServer) -> None:
    with ApiClient(server.configuration()) as api_client:
        client.CoreV1Api(api_client).list_namespace()
    span = only_span(exporter)
    assert span.name == "GET"
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


def test_a_retried_call_shows_its_resend_count_and_retries(
    exporter: InMemorySpanExporter, server: FakeApiServer
) -> None:
    server.inject(StatusFault(503), verb="list", times=1)
    server.inject(StatusFault(429, retry_after=0), verb="list", times=1)
    with ApiClient(server.configuration(), backoff_base=0.001) as api_client:
        client.CoreV1Api(api_client).list_namespace()
    span = only_span(exporter)
    attributes = span.attributes or {}
    assert attributes["http.request.resend_count"] == 2
    assert attributes["http.response.status_code"] == 200
    assert "error.type" not in attributes
    assert [event.name for event in span.events] == ["retry", "retry"]
    first, second = (dict(event.attributes or {}) for event in span.events)
    assert first["resilient_kube.retry.reason"] == "status_503"
    assert first["http.response.status_code"] == 503
    assert second["resilient_kube.retry.reason"] == "status_429"
    assert second["http.response.status_code"] == 429
    assert isinstance(first["resilient_kube.retry.wait"], float)


def test_an_error_answer_and_a_failed_call_set_error_type(
    exporter: InMemorySpanExporter, server: FakeApiServer
) -> None:
    server.inject(ResetConnection(), verb="list", times=1)
    with ApiClient(server.configuration(), max_attempts=1) as api_client:
        v1 = client.CoreV1Api(api_client)
        with pytest.raises(ConnectionReset):
            v1.list_namespace()
        with pytest.raises(ApiException):
            v1.read_namespace("missing")
    failed, missing = exporter.get_finished_spans()
    assert (failed.attributes or {})["error.type"] == "ConnectionReset"
    assert "http.response.status_code" not in (failed.attributes or {})
    assert failed.status.status_code is StatusCode.ERROR
    assert (missing.attributes or {})["error.type"] == "404"
    assert (missing.attributes or {})["http.response.status_code"] == 404
    assert missing.status.status_code is StatusCode.ERROR


def test_a_limiter_wait_is_an_event(exporter: InMemorySpanExporter, server: FakeApiServer) -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    with ApiClient(server.configuration(), qps=10, burst=1, clock=clock, sleep=sleep) as api_client:
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()
        v1.list_namespace()
    first, second = exporter.get_finished_spans()
    assert first.events == ()
    (event,) = second.events
    assert event.name == "rate_limiter_wait"
    assert (event.attributes or {})["resilient_kube.wait"] == pytest.approx(0.1)


@pytest.fixture
def capture() -> Iterator[tuple[str, list[bytes]]]:
    requests: list[bytes] = []
    body = b'{"kind":"NamespaceList","apiVersion":"v1","metadata":{},"items":[]}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"

    def handle(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            requests.append(data)
            conn.sendall(answer % (len(body), body))

    relay = Relay(handle)
    yield f"http://127.0.0.1:{relay.port}", requests
    relay.close()


def _traceparent(request: bytes) -> str:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        if name.lower() == b"traceparent":
            return value.decode()
    raise AssertionError(f"no traceparent in {request!r}")


def test_traceparent_joins_the_callers_trace(
    exporter: InMemorySpanExporter, capture: tuple[str, list[bytes]]
) -> None:
    url, requests = capture
    tracer = trace.get_tracer("test", tracer_provider=tracing_provider(exporter))
    with ApiClient(client.Configuration(host=url)) as api_client:
        with tracer.start_as_current_span("reconcile") as parent:
            client.CoreV1Api(api_client).list_namespace()
        spans = {span.name: span for span in exporter.get_finished_spans()}
    call = spans["GET"]
    assert call.parent is not None
    assert call.parent.span_id == parent.get_span_context().span_id
    context = call.get_span_context()
    assert context is not None
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    assert _traceparent(requests[0]) == expected


def tracing_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    """A second provider into the same exporter, for the caller's own spans."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_no_sdk_means_no_spans_and_no_header(capture: tuple[str, list[bytes]]) -> None:
    url, requests = capture
    tracing.instrument(trace.NoOpTracerProvider())
    try:
        with ApiClient(client.Configuration(host=url)) as api_client:
            client.CoreV1Api(api_client).list_namespace()
    finally:
        tracing.uninstrument()
    assert b"traceparent" not in requests[0].lower()


def test_propagation_can_be_turned_off(capture: tuple[str, list[bytes]]) -> None:
    url, requests = capture
    exporter = InMemorySpanExporter()
    tracing.instrument(tracing_provider(exporter), propagate=False)
    try:
        with ApiClient(client.Configuration(host=url)) as api_client:
            client.CoreV1Api(api_client).list_namespace()
    finally:
        tracing.uninstrument()
    assert len(exporter.get_finished_spans()) == 1
    assert b"traceparent" not in requests[0].lower()


def test_uninstrument_stops_tracing(exporter: InMemorySpanExporter, server: FakeApiServer) -> None:
    assert tracing.instrumented()
    with ApiClient(server.configuration()) as api_client:
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()
        tracing.uninstrument()
        assert not tracing.instrumented()
        v1.list_namespace()
    assert len(exporter.get_finished_spans()) == 1


def test_instrument_again_replaces_the_provider(server: FakeApiServer) -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    tracing.instrument(tracing_provider(first))
    tracing.instrument(tracing_provider(second))
    try:
        with ApiClient(server.configuration()) as api_client:
            client.CoreV1Api(api_client).list_namespace()
    finally:
        tracing.uninstrument()
    assert len(first.get_finished_spans()) == 0
    assert len(second.get_finished_spans()) == 1


def test_without_the_extra_instrument_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'resilient_kube\[otel\]'"):
        tracing.instrument()
    assert not tracing.instrumented()


@pytest.mark.parametrize(
    ("host", "address", "port"),
    [("127.0.0.1:6443", "127.0.0.1", 6443), ("[::1]:443", "::1", 443), ("api", "api", None)],
)
def test_server_address_and_port(host: str, address: str, port: int | None) -> None:
    from resilient_kube.tracing import _attributes

    attributes = _attributes("GET", host)
    assert attributes["server.address"] == address
    assert attributes.get("server.port") == port
