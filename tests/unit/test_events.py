"""The event sink: a fanout that reaches only the sinks that listen, and survives one that fails."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from kubernetes import client

from resilient_kube import ApiClient, EventSink
from resilient_kube._events import Fanout, subscribe_everywhere, unsubscribe_everywhere
from resilient_kube._stats import Counters
from tests.helpers.loopback import Relay


class Recorder(EventSink):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def retry(self, method: str, host: str, code: str, reason: str, wait: float) -> None:
        self.events.append(("retry", method, host, code, reason, wait))


class Broken(EventSink):
    def retry(self, method: str, host: str, code: str, reason: str, wait: float) -> None:
        raise RuntimeError("boom")


def test_events_reach_the_sinks_that_handle_them_in_order() -> None:
    first, second = Recorder(), Recorder()
    fanout = Fanout([first, second])
    fanout.retry("GET", "h:1", "503", "status_503", 0.5)
    fanout.attempt("GET", "h:1", "200", 0.1, 0, 10)  # nobody handles it: a no-op
    assert first.events == second.events == [("retry", "GET", "h:1", "503", "status_503", 0.5)]


def test_a_sink_that_raises_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    fanout = Fanout([Broken(), recorder])
    with caplog.at_level(logging.ERROR, logger="resilient_kube._events"):
        fanout.retry("GET", "h:1", "503", "status_503", 0.5)
    assert len(recorder.events) == 1
    assert "failed on retry" in caplog.text


def test_a_trusted_sink_alone_is_called_directly() -> None:
    counters = Counters()
    fanout = Fanout([counters])
    assert fanout.attempt == counters.attempt  # no guard, no loop: the hot path's one call
    fanout.add(Recorder())
    assert fanout.attempt == counters.attempt  # Recorder does not handle attempts
    assert fanout.retry != counters.retry


def test_add_remove_and_subscribe_everywhere() -> None:
    recorder, everywhere = Recorder(), Recorder()
    fanout = Fanout()
    fanout.add(recorder)
    subscribe_everywhere(everywhere)
    try:
        later = Fanout()
        fanout.retry("GET", "a", "", "r", 0.0)
        later.retry("GET", "b", "", "r", 0.0)
        assert [event[2] for event in everywhere.events] == ["a", "b"]
        fanout.remove(recorder)
        fanout.retry("GET", "c", "", "r", 0.0)
        assert [event[2] for event in recorder.events] == ["a"]
    finally:
        unsubscribe_everywhere(everywhere)
    fanout.retry("GET", "d", "", "r", 0.0)
    assert [event[2] for event in everywhere.events] == ["a", "b", "c"]


class Tracer(EventSink):
    def call_started(self, method: str, host: str, headers: dict[str, str]) -> None:
        headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def capture() -> Iterator[tuple[str, list[bytes]]]:
    requests: list[bytes] = []
    body = b'{"kind":"NamespaceList","apiVersion":"v1","metadata":{},"items":[]}'
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            len(body),
            body,
        )
    )

    def handle(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            requests.append(data)
            conn.sendall(answer)

    relay = Relay(handle)
    yield f"http://127.0.0.1:{relay.port}", requests
    relay.close()


def test_headers_a_subscriber_adds_at_call_start_are_sent(
    capture: tuple[str, list[bytes]],
) -> None:
    url, requests = capture
    api_client = ApiClient(client.Configuration(host=url))
    v1 = client.CoreV1Api(api_client)
    v1.list_namespace()
    api_client.subscribe(Tracer())
    v1.list_namespace()
    api_client.close()
    assert b"traceparent" not in requests[0]
    assert b"traceparent: 00-0af7651916cd43dd8448eb211c80319c" in requests[1]


class TrustedRecorder(Recorder):
    trusted = True


def test_trusted_sinks_are_all_called_without_a_guard() -> None:
    first, second = TrustedRecorder(), TrustedRecorder()
    fanout = Fanout([first, second])
    fanout.retry("GET", "h:1", "503", "status_503", 0.5)
    assert first.events == second.events == [("retry", "GET", "h:1", "503", "status_503", 0.5)]
    fanout.add(Broken())  # one sink that may raise: every handler is guarded again
    fanout.retry("GET", "h:1", "503", "status_503", 0.5)
    assert len(first.events) == len(second.events) == 2
