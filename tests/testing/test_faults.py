"""Each fault, as the stock ``kubernetes`` client (urllib3 retries off) experiences it."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ConnectTimeoutError, ProtocolError, ReadTimeoutError

from resilient_kube.testing import (
    CloseConnection,
    Delay,
    FakeApiServer,
    FullAcceptQueueListener,
    ResetConnection,
    SilentWatch,
    Stall,
    StatusFault,
    TruncatedBody,
)
from resilient_kube.testing._faults import FaultRules, RequestInfo

from ..helpers.clock import FakeClock
from .conftest import close, new_watch, stock_client


def test_status_fault_with_retry_after_and_details(
    fake_api_server: FakeApiServer, core: Any
) -> None:
    fake_api_server.inject(
        StatusFault(429, retry_after=3, details_retry_after_seconds=3), verb="list"
    )
    with pytest.raises(ApiException) as info:
        core.list_namespace()
    assert info.value.status == 429
    assert (info.value.headers or {})["Retry-After"] == "3"
    body = json.loads(str(info.value.body))
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["reason"] == "TooManyRequests"
    assert body["code"] == 429
    assert body["details"] == {"retryAfterSeconds": 3}
    assert core.list_namespace().items  # times=1: the next request is fine


def test_status_fault_with_http_date_and_custom_reason(
    fake_api_server: FakeApiServer, core: Any
) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    fault = StatusFault(503, retry_after=date, reason="ServiceUnavailable", message="busy")
    fake_api_server.inject(fault)
    with pytest.raises(ApiException) as info:
        core.list_namespace()
    assert info.value.status == 503
    assert (info.value.headers or {})["Retry-After"] == date
    assert json.loads(str(info.value.body))["message"] == "busy"


def test_delay_then_normal_answer(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(Delay(0.3), verb="list")
    started = time.monotonic()
    assert core.list_namespace().items
    assert time.monotonic() - started >= 0.3


def test_delay_longer_than_read_timeout(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(Delay(5))
    with pytest.raises(ReadTimeoutError):
        core.list_namespace(_request_timeout=(5, 0.3))


def test_stall_is_a_read_timeout_and_stop_releases_it() -> None:
    server = FakeApiServer().start()
    api = stock_client(server)
    try:
        server.inject(Stall(), times=2)
        with pytest.raises(ReadTimeoutError):
            client.CoreV1Api(api).list_namespace(_request_timeout=(5, 0.3))
        # A second stalled request is still blocked when the server stops.
        outcome: list[BaseException] = []

        def blocked() -> None:
            try:
                client.CoreV1Api(api).list_namespace(_request_timeout=(5, 30))
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=blocked)
        thread.start()
        assert server.wait_for_requests(2, verb="list", timeout=5)
        started = time.monotonic()
        server.stop()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5
        assert isinstance(outcome[0], ProtocolError)
    finally:
        server.stop()
        close(api)


def test_reset_is_a_protocol_error(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(ResetConnection())
    with pytest.raises(ProtocolError) as info:
        core.list_namespace()
    assert isinstance(info.value.args[1], ConnectionResetError)
    assert core.list_namespace().items  # the pool reconnects


def test_close_without_response(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(CloseConnection())
    with pytest.raises(ProtocolError, match="Remote end closed connection"):
        core.list_namespace()


def test_truncated_body(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(TruncatedBody(), verb="list")
    with pytest.raises(ProtocolError, match="IncompleteRead"):
        core.list_namespace()


def test_truncated_body_still_applies_the_write(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(TruncatedBody(), verb="create")
    with pytest.raises(ProtocolError):
        core.create_namespaced_config_map("default", {"metadata": {"name": "maybe"}})
    assert core.read_namespaced_config_map("maybe", "default").metadata.name == "maybe"


def test_truncated_watch(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(TruncatedBody(), verb="watch")
    with pytest.raises(ProtocolError):
        list(new_watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=5))


def test_silent_watch_after_events(fake_api_server: FakeApiServer, core: Any) -> None:
    for name in ("a", "b"):
        core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    fake_api_server.inject(SilentWatch(after_events=1))
    stream = new_watch().stream(
        core.list_namespaced_config_map, "default", _request_timeout=(5, 0.5)
    )
    seen: list[str] = []
    with pytest.raises(ReadTimeoutError):
        seen.extend(event["object"].metadata.name for event in stream)
    assert seen == ["a"]


def test_silent_watch_matches_only_watches(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(SilentWatch(), times=None)
    assert core.list_namespace().items
    assert fake_api_server.stats().faults_by_kind == {}


def test_full_accept_queue_is_a_connect_timeout() -> None:
    with FullAcceptQueueListener() as listener:
        config = client.Configuration(host=listener.url)
        config.retries = False
        api = client.ApiClient(config)
        try:
            started = time.monotonic()
            with pytest.raises(ConnectTimeoutError):
                client.CoreV1Api(api).list_namespace(_request_timeout=(0.5, 5))
            assert 0.4 < time.monotonic() - started < 3
        finally:
            close(api)


def test_full_accept_queue_listener_rejects_outside_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FullAcceptQueueListener("192.0.2.1")


def test_matching_by_verb_path_and_resource(fake_api_server: FakeApiServer, core: Any) -> None:
    fault = StatusFault(500)
    fake_api_server.inject(fault, verb="create", resource="secrets", times=None)
    fake_api_server.inject(fault, verb="GET", path=r"/configmaps/blocked$", times=None)
    core.create_namespaced_config_map("default", {"metadata": {"name": "blocked"}})
    core.read_namespace("default")
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("blocked", "default")
    for _ in range(2):
        with pytest.raises(ApiException):
            core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    fake_api_server.clear_faults()
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    assert fake_api_server.stats().faults_by_kind == {"StatusFault": 3}


def test_times_counts_down(fake_api_server: FakeApiServer, core: Any) -> None:
    fake_api_server.inject(StatusFault(503), times=2)
    for _ in range(2):
        with pytest.raises(ApiException):
            core.list_namespace()
    assert core.list_namespace().items


def test_a_rule_given_seconds_is_gone_after_them_used_up_or_not() -> None:
    clock = FakeClock()
    rules = FaultRules(clock)
    overload = StatusFault(429, retry_after=1)
    rules.add(overload, verb=None, path=None, resource=None, times=None, seconds=0.8)
    rules.add(Stall(), verb="create", path=None, resource=None, times=None)
    get = RequestInfo("GET", "list", "/api/v1/namespaces", "namespaces")
    post = RequestInfo("POST", "create", "/api/v1/namespaces", "namespaces")
    assert [rules.pick(get), rules.pick(post)] == [overload, overload]
    clock.set(0.79)
    assert rules.pick(get) == overload
    clock.set(0.8)
    # The overload is over; the rule behind it, which has no end, still applies.
    assert [rules.pick(get), rules.pick(post)] == [None, Stall()]


@pytest.mark.parametrize("random", [False, True], ids=["inject", "inject_random"])
def test_the_server_stops_serving_a_rule_when_its_seconds_are_up(
    fake_api_server: FakeApiServer, core: Any, random: bool
) -> None:
    overload = StatusFault(429, retry_after=1)
    if random:
        fake_api_server.inject_random(overload, 1.0, seed=1, seconds=0.3)
    else:
        fake_api_server.inject(overload, times=None, seconds=0.3)
    statuses = []
    # Bounded: the rule ends 0.3 s after it was injected; 5 s is far past it.
    give_up = time.monotonic() + 5.0
    while time.monotonic() < give_up:
        try:
            core.list_namespace()
        except ApiException as exc:
            statuses.append(exc.status)
            continue
        break
    else:
        pytest.fail("the overload outlived its seconds")
    # It was served first, and nothing else was.
    assert statuses
    assert set(statuses) == {429}


def test_random_faults_are_reproducible() -> None:
    def run(seed: int) -> list[int]:
        with FakeApiServer() as server:
            api = stock_client(server)
            try:
                server.inject_random(StatusFault(503), 0.5, seed=seed, verb="list")
                codes = []
                for _ in range(20):
                    try:
                        client.CoreV1Api(api).list_namespace()
                        codes.append(200)
                    except ApiException as exc:
                        codes.append(int(exc.status))
                return codes
            finally:
                close(api)

    first, second = run(7), run(7)
    assert first == second
    assert 200 in first
    assert 503 in first
    assert run(8) != first


def test_inject_validates_arguments(fake_api_server: FakeApiServer) -> None:
    with pytest.raises(ValueError, match="verb="):
        fake_api_server.inject(Stall(), verb="fetch")
    with pytest.raises(ValueError, match="times="):
        fake_api_server.inject(Stall(), times=0)
    with pytest.raises(ValueError, match="probability="):
        fake_api_server.inject_random(Stall(), 1.5, seed=1)
    for seconds in (0, -1, float("inf"), "1"):
        with pytest.raises(ValueError, match="seconds="):
            fake_api_server.inject(Stall(), seconds=seconds)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a fault"):
        fake_api_server.inject("boom", verb="GET")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="code="):
        StatusFault(200)
    with pytest.raises(ValueError, match="retry_after="):
        StatusFault(503, retry_after="soon")
    with pytest.raises(ValueError, match="seconds="):
        Delay(-1)


def test_stock_client_retries_resets_three_times(fake_api_server: FakeApiServer) -> None:
    """The stock client's urllib3 default is ``Retry(3)``: the counters show the retries."""
    fake_api_server.inject(ResetConnection(), times=None)
    api = client.ApiClient(fake_api_server.configuration())
    try:
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            client.CoreV1Api(api).list_namespace()
    finally:
        close(api)
    assert fake_api_server.request_count("list") == 4
    assert fake_api_server.stats().faults_by_kind["ResetConnection"] == 4


def test_counters(fake_api_server: FakeApiServer, core: Any) -> None:
    core.list_namespace()
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    fake_api_server.inject(StatusFault(500))
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("a", "default")
    stats = fake_api_server.stats()
    assert stats.connections == 1  # keep-alive
    assert stats.requests == 3
    assert stats.requests_by_verb == {"list": 1, "create": 1, "get": 1}
    assert stats.requests_by_method == {"GET": 2, "POST": 1}
    assert stats.requests_by_path["/api/v1/namespaces/default/configmaps/a"] == 1
    assert stats.faults_by_kind == {"StatusFault": 1}
    assert stats.responses_by_status == {200: 1, 201: 1, 500: 1}
    assert fake_api_server.request_count() == 3
    assert fake_api_server.request_count("GET") == 2
    assert fake_api_server.request_count(path="/configmaps") == 2
    assert fake_api_server.request_count("create", path="^/api/v1/namespaces/default/") == 1
    fake_api_server.reset_stats()
    assert fake_api_server.stats().requests == 0
    assert fake_api_server.stats().connections == 0
