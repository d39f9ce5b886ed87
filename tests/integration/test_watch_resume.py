"""``resilient_kube.Watch`` on the fake server: every fault is ridden over with exact delivery.

Each test writes a known history, watches it from a known version through a fault, and checks
that every event after that version arrives once, in order. Backoff waits are recorded, not
slept (``sleep=``), so the tests run at the server's pace.
"""

from __future__ import annotations

import random
import socket
import threading
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import resilient_kube
from resilient_kube import ResourceExpired, Watch
from resilient_kube.testing import (
    EndWatch,
    FakeApiServer,
    ResetConnection,
    ResetWatch,
    SilentWatch,
    StatusFault,
    TruncatedBody,
)
from tests.helpers import watching
from tests.helpers.watching import Event, create, event_of, modify

#: The fixtures: a fake server (no bookmark within a test), a resilient client of it, CoreV1Api.
server, api, core = watching.server, watching.api, watching.core


def history(core: client.CoreV1Api, count: int = 12) -> tuple[str, list[Event]]:
    """Write ``count`` changes to ConfigMaps; return the version before them and the events."""
    start = core.list_namespaced_config_map("default").metadata.resource_version
    expected: list[Event] = []
    for i in range(count):
        name = f"cm{i // 3}"
        step = i % 3
        if step == 0:
            expected.append(create(core, name))
        elif step == 1:
            expected.append(modify(core, name, str(i), key="i"))
        else:
            core.delete_namespaced_config_map(name, "default")
            gone = core.list_namespaced_config_map("default").metadata.resource_version
            expected.append(("DELETED", name, gone))
    return start, expected


def new_watch(waits: list[float] | None = None, **kwargs: Any) -> Watch:
    record = waits if waits is not None else []
    return Watch(sleep=record.append, rng=random.Random(3), **kwargs)


def collect(watch: Watch, core: client.CoreV1Api, count: int, **kwargs: Any) -> list[Event]:
    """Watch ConfigMaps until ``count`` events arrived (bounded by the test timeout)."""
    seen: list[Event] = []
    for event in watch.stream(core.list_namespaced_config_map, "default", **kwargs):
        seen.append(event_of(event["type"], event["raw_object"]["metadata"]))
        if len(seen) == count:
            watch.stop()
    return seen


@pytest.mark.parametrize(
    ("faults", "reasons"),
    [
        pytest.param([ResetWatch(after_events=4)], {"reset": 1}, id="reset-after-4"),
        pytest.param(
            [ResetWatch(after_events=1), ResetWatch(after_events=0), ResetWatch(after_events=5)],
            {"reset": 3},
            id="resets-in-a-row",
        ),
        pytest.param([EndWatch(after_events=3)], {"ended": 1}, id="early-end"),
        pytest.param([TruncatedBody()], {"truncated": 1}, id="truncated-chunk"),
        pytest.param([SilentWatch(after_events=2)], {"idle": 1}, id="silence"),
    ],
)
def test_breaks_resume_with_exact_delivery(
    server: FakeApiServer,
    api: resilient_kube.ApiClient,
    core: client.CoreV1Api,
    faults: list[Any],
    reasons: dict[str, int],
) -> None:
    start, expected = history(core)
    for fault in faults:
        server.inject(fault, verb="watch")
    waits: list[float] = []
    seen = collect(new_watch(waits), core, len(expected), resource_version=start)
    assert seen == expected
    stats = api.stats().watch
    assert stats.restarts_by_reason == reasons
    assert stats.events == len(expected)
    assert server.request_count("watch") == 1 + sum(reasons.values())
    # Full jitter below client-go's ceilings: 0.8 s, then doubling.
    assert len(waits) == sum(reasons.values())
    assert all(0 <= w <= 0.8 * 2**i for i, w in enumerate(waits))


def test_failed_reopens_back_off_then_resume(
    server: FakeApiServer, api: resilient_kube.ApiClient, core: client.CoreV1Api
) -> None:
    start, expected = history(core)
    server.inject(ResetWatch(after_events=2), verb="watch")
    # The re-open fails: 503 five times (one call of the transport), then a reset five times.
    server.inject(StatusFault(503), verb="watch", times=5)
    server.inject(ResetConnection(), verb="watch", times=5)
    waits: list[float] = []
    seen = collect(new_watch(waits), core, len(expected), resource_version=start)
    assert seen == expected
    assert api.stats().watch.restarts_by_reason == {"reset": 2, "status_503": 1}
    assert len(waits) == 3


class _OnBookmark(resilient_kube.EventSink):
    """Runs ``action`` once, on the watch's thread, when the first bookmark arrives."""

    def __init__(self, action: Any) -> None:
        self.action = action
        self.done = False

    def watch_event(self, kind: str) -> None:
        if kind == "BOOKMARK" and not self.done:
            self.done = True
            self.action()


def test_bookmarks_move_the_resume_point_and_stay_hidden() -> None:
    with FakeApiServer(bookmark_interval=0.05) as server:
        api = resilient_kube.ApiClient(server.configuration(), watch_idle_timeout=5)
        try:
            core = client.CoreV1Api(api)
            start, expected = history(core, 3)
            core.create_namespaced_secret("default", {"metadata": {"name": "s"}})  # rv moves on
            later: list[Event] = []

            def compact_and_write() -> None:
                # Resuming from the last ConfigMap event would now get 410; from the
                # bookmark's version (the newest) it works.
                server.compact()
                later.append(create(core, "x"))

            api.subscribe(_OnBookmark(compact_and_write))
            # Three events and one bookmark, then the stream is reset.
            server.inject(ResetWatch(after_events=4), verb="watch")
            seen = collect(new_watch(), core, 4, resource_version=start)
            assert seen == expected + later
            stats = api.stats().watch
            assert stats.bookmarks >= 1
            assert stats.events == 4 + stats.bookmarks
            assert stats.restarts_by_reason == {"reset": 1}
        finally:
            api.close()


def test_bookmarks_are_yielded_when_asked() -> None:
    with FakeApiServer(bookmark_interval=0.05) as server:
        api = resilient_kube.ApiClient(server.configuration())
        try:
            core = client.CoreV1Api(api)
            watch = new_watch()
            kinds = []
            for event in watch.stream(
                core.list_namespaced_config_map, "default", allow_watch_bookmarks=True,
                resource_version=core.list_namespaced_config_map("default").metadata.resource_version,
            ):  # fmt: skip
                kinds.append(event["type"])
                if len(kinds) == 2:
                    watch.stop()
            assert kinds == ["BOOKMARK", "BOOKMARK"]
        finally:
            api.close()


def test_expired_version_raises_at_once(server: FakeApiServer, core: client.CoreV1Api) -> None:
    start, _ = history(core, 3)
    server.compact()
    with pytest.raises(ResourceExpired) as info:
        collect(new_watch(), core, 10, resource_version=start)
    assert info.value.status == 410
    assert isinstance(info.value, ApiException)
    assert server.request_count("watch") == 1  # no pointless second try from the same version


def test_expired_on_resume_raises(server: FakeApiServer, core: client.CoreV1Api) -> None:
    start, expected = history(core, 6)
    server.inject(ResetWatch(after_events=2), verb="watch")
    watch = new_watch()
    seen: list[Event] = []

    def consume() -> None:
        for event in watch.stream(
            core.list_namespaced_config_map, "default", resource_version=start
        ):
            seen.append(event_of(event["type"], event["raw_object"]["metadata"]))
            if len(seen) == 2:
                server.compact()

    with pytest.raises(ResourceExpired):
        consume()
    assert seen == expected[:2]
    assert server.request_count("watch") == 2


@pytest.mark.parametrize("code", [401, 403])
def test_unauthorized_is_raised_not_looped(
    server: FakeApiServer, api: resilient_kube.ApiClient, core: client.CoreV1Api, code: int
) -> None:
    start, _ = history(core, 3)
    server.inject(ResetWatch(after_events=1), verb="watch")
    server.inject(StatusFault(code), verb="watch", times=None)
    with pytest.raises(ApiException) as info:
        collect(new_watch(), core, 10, resource_version=start)
    assert info.value.status == code
    assert server.request_count("watch") == 2
    assert api.stats().watch.restarts_by_reason == {"reset": 1}


def test_first_request_failure_is_raised(server: FakeApiServer, core: client.CoreV1Api) -> None:
    server.inject(StatusFault(404), verb="watch")
    with pytest.raises(ApiException) as info:
        collect(new_watch(), core, 1, resource_version="1")
    assert info.value.status == 404


def test_caller_timeout_ends_the_stream(server: FakeApiServer) -> None:
    api = resilient_kube.ApiClient(server.configuration(), watch_idle_timeout=30)
    try:
        core = client.CoreV1Api(api)
        start, expected = history(core, 3)
        server.inject(ResetWatch(after_events=1), verb="watch")
        seen = collect(new_watch(), core, 100, resource_version=start, timeout_seconds=3)
        assert seen == expected
        # One stream reset; the re-open asked for what was left of the caller's 3 s and ran
        # to its end, and the stream ended there.
        assert server.request_count("watch") == 2
        assert api.stats().watch.restarts_by_reason == {"reset": 1}
    finally:
        api.close()


def test_stop_from_another_thread_wakes_a_quiet_stream(
    server: FakeApiServer, core: client.CoreV1Api
) -> None:
    api = resilient_kube.ApiClient(server.configuration(), watch_idle_timeout=None)
    try:
        quiet = client.CoreV1Api(api)
        watch = Watch()
        start = quiet.list_namespaced_config_map("default").metadata.resource_version
        done = threading.Event()

        def consume() -> None:
            for _ in watch.stream(
                quiet.list_namespaced_config_map, "default", resource_version=start
            ):
                pass  # Defensive: nothing is written
            done.set()

        thread = threading.Thread(target=consume)
        thread.start()
        assert server.wait_for_requests(1, verb="watch")
        watch.stop()
        assert done.wait(5)
        thread.join(5)
    finally:
        api.close()


def test_stock_client_is_served_too(server: FakeApiServer) -> None:
    """On a stock ``kubernetes`` ApiClient the watch resumes too (no stats to report to)."""
    api = client.ApiClient(server.configuration())
    try:
        core = client.CoreV1Api(api)
        start, expected = history(core, 6)
        server.inject(ResetWatch(after_events=2), verb="watch")
        assert collect(new_watch(), core, len(expected), resource_version=start) == expected
    finally:
        api.close()


def test_factory_hands_out_the_resilient_watch(server: FakeApiServer) -> None:
    with resilient_kube.ClientFactory(server.configuration()) as kube:
        watch = kube.watch()
        assert isinstance(watch, Watch)
        core = kube.core_v1()
        start, expected = history(core, 3)
        server.inject(ResetWatch(after_events=1), verb="watch")
        watch._sleep = lambda seconds: None  # the factory's watch keeps real waits otherwise
        assert collect(watch, core, len(expected), resource_version=start) == expected
        assert kube.stats().watch.restarts == 1


def test_deserialize_false_gives_plain_dicts(server: FakeApiServer, core: client.CoreV1Api) -> None:
    start, expected = history(core, 3)
    server.inject(ResetWatch(after_events=1), verb="watch")
    watch = new_watch()
    seen = []
    for event in watch.stream(
        core.list_namespaced_config_map, "default", resource_version=start, deserialize=False
    ):
        seen.append(event_of(event["type"], event["object"]["metadata"]))
        if len(seen) == len(expected):
            watch.stop()
    assert seen == expected


def test_follow_log_streams_stay_plain_lines() -> None:
    """``follow=True`` goes to the stock line stream: lines as they come, no resume logic."""
    body = b"first line\nsecond line\n"
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(65536):
                pass  # Defensive: the request arrives in one read on loopback
            chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n" + chunked
            )

    thread = threading.Thread(target=serve)
    thread.start()
    api = resilient_kube.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    try:
        core = client.CoreV1Api(api)
        lines = list(Watch().stream(core.read_namespaced_pod_log, "pod", "default", follow=True))
        assert lines == ["first line", "second line"]
        assert api.stats().watch.restarts == 0
    finally:
        api.close()
        thread.join(5)
        listener.close()
