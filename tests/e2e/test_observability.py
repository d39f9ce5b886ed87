"""Metrics, traces and the server's warnings against a real kube-apiserver (issue 19)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import resilient_kube
from resilient_kube import metrics, tracing

from .cluster import ApiServer, poll
from .test_throttling import APF_CALLS_PER_THREAD, resilient_burst, tiny_flow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

GROUP = "obs.resilient-kube.test"
PLURAL = "gadgets"
DEPRECATION = "obs.resilient-kube.test/v1beta1 Gadget is deprecated; use v1"


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    metrics.register(registry)
    yield registry
    metrics.unregister()


def _total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of ``name`` over every sample whose labels include ``labels``."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(provider)
    yield exporter
    tracing.uninstrument()
    provider.shutdown()


def test_apf_429s_retries_and_limiter_waits_are_scraped_and_traced(
    apf_apiserver: ApiServer, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    with (
        tiny_flow(apf_apiserver) as flow,
        resilient_kube.ClientFactory(kubeconfig=apf_apiserver.kubeconfig) as kube,
    ):
        before = _total(registry, "rest_client_requests_total")
        exporter.clear()  # tiny_flow's own calls go through the stock client: no spans anyway
        burst, numbers = resilient_burst(kube, flow.namespace, APF_CALLS_PER_THREAD)
        limiter = kube.stats().limiter
    assert limiter is not None
    assert burst.ok == burst.calls
    attempts = _total(registry, "rest_client_requests_total") - before
    assert attempts >= numbers["attempts"]  # and the set-up's calls
    throttled = _total(registry, "rest_client_requests_total", code="429", method="GET")
    assert throttled > 0
    retried = _total(registry, "rest_client_request_retries_total", code="429", verb="GET")
    assert retried == numbers["retries_by_reason"]["status_429"] == throttled
    assert _total(registry, "resilient_kube_retries_total", reason="status_429") == retried
    # Every pass through the limiter is observed; the seconds are the limiter's own.
    waits = "rest_client_rate_limiter_duration_seconds"
    assert _total(registry, f"{waits}_count", verb="GET") >= numbers["attempts"]
    assert _total(registry, f"{waits}_sum") == pytest.approx(limiter.wait_seconds, abs=1e-6)
    # APF named its flow schema and priority level on every answer of the burst, 429s included.
    flow_labels = {"flow_schema": flow.flow_schema_uid, "priority_level": flow.priority_level_uid}
    seen = _total(registry, "resilient_kube_flow_control_responses_total", **flow_labels)
    assert seen == numbers["attempts"]
    # One span per call; the retried ones show their resend count and a retry event each.
    spans = exporter.get_finished_spans()
    assert len(spans) == burst.calls
    resent = [(span.attributes or {}).get("http.request.resend_count", 0) for span in spans]
    assert sum(resent) == retried  # type: ignore[arg-type]
    for span, count in zip(spans, resent, strict=True):
        assert (span.attributes or {})["http.response.status_code"] == 200
        assert [event.name for event in span.events].count("retry") == count


@pytest.fixture
def deprecated_crd(apiserver: ApiServer) -> Iterator[str]:
    """A CRD whose only version is served, deprecated, with a deprecationWarning."""
    name = f"{PLURAL}.{GROUP}"
    body: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": True,
                    "deprecated": True,
                    "deprecationWarning": DEPRECATION,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    with apiserver.stock_client() as api_client:
        extensions = kubernetes.client.ApiextensionsV1Api(api_client)
        extensions.create_custom_resource_definition(body)
        custom = kubernetes.client.CustomObjectsApi(api_client)

        def served() -> bool | None:
            try:
                custom.list_namespaced_custom_object(GROUP, "v1beta1", "default", PLURAL)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return True

        poll(served, timeout=30, what=f"CRD {name} served")
        try:
            yield name
        finally:
            extensions.delete_custom_resource_definition(name)


def test_a_deprecated_crd_version_is_logged_once(
    apiserver: ApiServer,
    deprecated_crd: str,
    caplog: pytest.LogCaptureFixture,
    registry: CollectorRegistry,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="resilient_kube.warnings"),
        resilient_kube.ClientFactory(kubeconfig=apiserver.kubeconfig) as kube,
    ):
        custom = kube.custom_objects()
        for _ in range(3):
            custom.list_namespaced_custom_object(GROUP, "v1beta1", "default", PLURAL)
    logged = [r.getMessage() for r in caplog.records if r.name == "resilient_kube.warnings"]
    assert len(logged) == 1, logged
    assert logged[0].endswith(f"warns: {DEPRECATION}")
    assert _total(registry, "resilient_kube_server_warnings_total") == 3


def test_every_call_has_a_span_with_the_right_attributes(
    apiserver: ApiServer, exporter: InMemorySpanExporter
) -> None:
    with resilient_kube.ClientFactory(kubeconfig=apiserver.kubeconfig) as kube:
        core = kube.core_v1()
        core.list_namespace()
        with pytest.raises(kubernetes.client.ApiException):
            core.read_namespace("no-such-namespace")
    listed, missing = exporter.get_finished_spans()
    for span in (listed, missing):
        attributes = span.attributes or {}
        assert span.name == "GET"
        assert attributes["http.request.method"] == "GET"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == apiserver.port
    assert (listed.attributes or {})["http.response.status_code"] == 200
    assert "error.type" not in (listed.attributes or {})
    assert (missing.attributes or {})["http.response.status_code"] == 404
    assert (missing.attributes or {})["error.type"] == "404"
