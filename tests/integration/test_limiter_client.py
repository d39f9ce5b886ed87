"""The limiter in front of the transport: shared, deadline-aware, driven by 429 (issue: limiter)."""

from __future__ import annotations

import math
import time

import pytest
from kubernetes import client, watch

from resilient_kube import ApiClient, ClientFactory, RateLimitTimeout
from resilient_kube.testing import FakeApiServer, StatusFault


def test_a_wait_that_does_not_fit_the_deadline_fails_at_once(server: FakeApiServer) -> None:
    api_client = ApiClient(server.configuration(), qps=0.5, burst=1, deadline=1)
    v1 = client.CoreV1Api(api_client)
    v1.list_namespace()  # takes the only token; the next one is 2 s away
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout) as caught:
        v1.list_namespace()
    assert time.monotonic() - start < 0.5
    assert caught.value.wait == pytest.approx(2.0, abs=0.2)
    assert "client-side throttling" in str(caught.value)
    assert caught.value.method == "GET"
    assert server.request_count("list") == 1
    api_client.close()


def test_one_bucket_for_every_api_group_of_a_factory(server: FakeApiServer) -> None:
    with ClientFactory(server.configuration(), qps=1000, burst=5) as factory:
        factory.core_v1().list_namespace()
        factory.apps_v1().list_namespaced_deployment("default")
        factory.batch_v1().list_namespaced_job("default")
        limiter = factory.stats().limiter
        assert limiter is not None
        assert limiter.admitted == 3


def test_watches_are_exempt(server: FakeApiServer) -> None:
    api_client = ApiClient(server.configuration(), qps=1000, burst=5)
    v1 = client.CoreV1Api(api_client)
    list(watch.Watch().stream(v1.list_namespaced_config_map, "default", timeout_seconds=1))
    limiter = api_client.stats().limiter
    assert limiter is not None
    assert limiter.admitted == 0
    api_client.close()


def test_429_slows_the_bucket_for_every_thread(server: FakeApiServer) -> None:
    api_client = ApiClient(server.configuration(), qps=100, burst=10, backoff_base=0.01)
    v1 = client.CoreV1Api(api_client)
    server.inject(StatusFault(429, retry_after=0), verb="list", times=1)
    began = time.monotonic()
    v1.list_namespace()
    elapsed = time.monotonic() - began
    limiter = api_client.stats().limiter
    assert limiter is not None
    assert limiter.throttled == 1
    # Halved by the 429, then grown back by √2 a second until the retry was answered.
    assert 50.0 < limiter.effective_qps <= min(100.0, 50.0 * math.sqrt(2) ** elapsed)
    api_client.close()


def test_a_429_storm_ends_in_the_servers_429_not_client_side_throttling(
    server: FakeApiServer,
) -> None:
    # Every answer is 429 with Retry-After: 0. The first takes the only token; the retry's slot
    # is 2 s away, past the deadline: the caller gets the server's 429, which says what
    # happened (issue 22, item 9), not a RateLimitTimeout that hides it.
    api_client = ApiClient(server.configuration(), qps=0.5, burst=1, deadline=1.5)
    v1 = client.CoreV1Api(api_client)
    server.inject(StatusFault(429, retry_after=0), verb="create", times=None)
    with pytest.raises(client.ApiException) as caught:
        v1.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="storm"))
        )
    assert caught.value.status == 429
    assert not isinstance(caught.value, RateLimitTimeout)
    assert server.request_count("create") == 1
    api_client.close()
