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
    Overload,
    ResetConnection,
    SilentWatch,
    Stall,
    StatusFault,
    TruncatedBody,
)
from resilient_kube.testing._faults import Capacity, Fault, FaultRules, RequestInfo

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

    def pick(request: RequestInfo) -> Fault | None:
        picked = rules.pick(request)
        return None if picked is None else picked.fault

    assert [pick(get), pick(post)] == [overload, overload]
    clock.set(0.79)
    assert pick(get) == overload
    clock.set(0.8)
    # The overload is over; the rule behind it, which has no end, still applies.
    assert [pick(get), pick(post)] == [None, Stall()]


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


def wait_until_queued(capacity: Capacity, count: int) -> bool:
    """Whether ``count`` requests are waiting in ``capacity``'s queue within 5 s."""
    give_up = time.monotonic() + 5.0
    while capacity.queued < count and time.monotonic() < give_up:
        time.sleep(0.001)
    return capacity.queued == count


def test_overload_seats_queue_and_refusal() -> None:
    seats = Capacity(Overload(1, queue=1), FakeClock())
    assert seats.take()
    queued = threading.Thread(target=seats.take, daemon=True)
    queued.start()
    # Bounded wait until the second request is in the queue.
    assert wait_until_queued(seats, 1)
    assert not seats.take()  # no seat, no place in the queue: refused at once
    seats.give_back()
    queued.join(5.0)
    assert not queued.is_alive()  # the seat went to the request that waited for it
    seats.give_back()
    assert seats.take()


def test_overload_queue_is_first_come_first_served() -> None:
    """A seat given back goes to the request that waited, not to one arriving meanwhile."""
    seats = Capacity(Overload(1, queue=1), FakeClock())
    assert seats.take()
    order: list[str] = []

    def take(name: str) -> None:
        assert seats.take()
        order.append(name)

    queued = threading.Thread(target=take, args=("queued",), daemon=True)
    queued.start()
    assert wait_until_queued(seats, 1)
    seats.give_back()
    # The seat is the queued request's, woken or not: a newcomer queues behind it.
    late = threading.Thread(target=take, args=("late",), daemon=True)
    late.start()
    queued.join(5.0)
    assert order[:1] == ["queued"]
    seats.give_back()
    late.join(5.0)
    assert order == ["queued", "late"]


def test_overload_retry_after_adapts_to_refusals_as_apf_does() -> None:
    clock = FakeClock()
    capacity = Capacity(Overload(1, retry_after=1, max_retry_after=4), clock)

    def refuse(at: float, times: int = 1) -> list[int]:
        clock.set(at)
        return [capacity.refuse() for _ in range(times)]

    assert refuse(0.0, 3) == [1, 1, 1]
    # Three refusals in the second before: doubled.
    assert refuse(1.0) == [2]
    # Not again until 2 s have passed since, and [0, 2) saw 4 < 3 x 2 anyway.
    assert refuse(2.5, 6) == [2] * 6
    assert refuse(3.0) == [4]  # [1, 3) saw 7 >= 6
    assert refuse(3.5, 20) == [4] * 20
    assert refuse(7.0) == [4]  # [3, 7) saw 21 >= 12, but 4 is the most
    # Quiet seconds: down by one at each refusal that finds fewer than one per second before.
    assert refuse(20.0) == [3]
    assert refuse(21.0) == [2]
    assert refuse(22.0) == [2]  # [20, 22) saw 2, not fewer than 2
    assert refuse(40.0) == [1]
    assert refuse(41.0) == [1]  # never below retry_after


def test_overload_retry_after_stays_fixed_when_it_may_not_grow() -> None:
    clock = FakeClock()
    capacity = Capacity(Overload(1, retry_after=2, max_retry_after=2), clock)
    for second in range(10):
        clock.set(second)
        assert [capacity.refuse() for _ in range(10)] == [2] * 10


def test_each_overload_rule_has_capacity_of_its_own() -> None:
    rules = FaultRules()
    for verb in ("list", "get"):
        rules.add(Overload(1), verb=verb, path=None, resource=None, times=None)
    lists = rules.pick(RequestInfo("GET", "list", "/api/v1/namespaces", "namespaces"))
    gets = rules.pick(RequestInfo("GET", "get", "/api/v1/namespaces/a", "namespaces"))
    again = rules.pick(RequestInfo("GET", "list", "/api/v1/namespaces", "namespaces"))
    assert lists is not None
    assert gets is not None
    assert again is not None
    assert lists.capacity is again.capacity
    assert lists.capacity is not gets.capacity
    # One seat each: taking the list rule's leaves the get rule's free.
    assert lists.capacity is not None
    assert gets.capacity is not None
    assert lists.capacity.take()
    assert gets.capacity.take()


def test_overload_refuses_what_finds_no_seat_and_stop_releases_the_rest() -> None:
    """2 seats and 1 place in the queue: of 5 concurrent requests, 2 are refused at once."""
    server = FakeApiServer().start()
    api = stock_client(server)
    outcomes: list[BaseException] = []
    changed = threading.Condition()

    def list_namespaces() -> None:
        try:
            client.CoreV1Api(api).list_namespace(_request_timeout=(5, 30))
        except Exception as exc:
            with changed:
                outcomes.append(exc)
                changed.notify_all()

    try:
        # Work longer than the test: nothing leaves a seat until the server stops.
        server.inject(Overload(2, queue=1, work=60, retry_after=2), verb="list", times=None)
        threads = [threading.Thread(target=list_namespaces) for _ in range(5)]
        for thread in threads:
            thread.start()
        with changed:
            assert changed.wait_for(lambda: len(outcomes) >= 2, timeout=10)
        for refused in outcomes:
            assert isinstance(refused, ApiException)
            assert refused.status == 429
            assert (refused.headers or {})["Retry-After"] == "2"
            body = json.loads(str(refused.body))
            assert body["reason"] == "TooManyRequests"
            assert body["details"] == {"retryAfterSeconds": 2}
        assert server.stats().responses_by_status[429] == 2
        stopped = time.monotonic()
        server.stop()
        for thread in threads:
            thread.join(5.0)
        # The two seated requests and the queued one end when the server stops.
        assert not any(thread.is_alive() for thread in threads)
        assert time.monotonic() - stopped < 5.0
        assert len(outcomes) == 5
        assert not any(isinstance(outcome, ApiException) for outcome in outcomes[2:])
    finally:
        server.stop()
        close(api)


def test_overload_serves_a_client_that_waits_its_turn(
    fake_api_server: FakeApiServer, core: Any
) -> None:
    """One seat and no queue: requests one after another all get a seat, each after ``work``."""
    fake_api_server.inject(Overload(1, work=0.1), verb="list", times=None)
    for _ in range(3):
        started = time.monotonic()
        assert core.list_namespace().items
        assert time.monotonic() - started >= 0.1
    assert fake_api_server.stats().faults_by_kind["Overload"] == 3
    assert 429 not in fake_api_server.stats().responses_by_status


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
    for bad in ({"seats": 0}, {"seats": True}, {"seats": 1, "queue": -1},
                {"seats": 1, "retry_after": 0}, {"seats": 1, "retry_after": 1.5},
                {"seats": 1, "retry_after": 2, "max_retry_after": 1}):  # fmt: skip
        name = next(key for key in reversed(bad) if key != "seats" or len(bad) == 1)
        with pytest.raises(ValueError, match=f"{name}="):
            Overload(**bad)
    with pytest.raises(ValueError, match="work="):
        Overload(1, work=-0.1)


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
