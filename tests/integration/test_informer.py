"""``resilient_kube.SharedInformer`` on the fake server: sync, faults, relist difference, outage.

Handlers record every call; the tests wait for a known count of calls (bounded) and compare the
whole sequence, so an event delivered twice, skipped or out of order fails them.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

import resilient_kube
from resilient_kube import BackoffPolicy, SharedInformer
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
from tests.helpers.clock import FakeClock
from tests.helpers.watching import Event, create, event_of, modify

#: The fixtures: a fake server (no bookmark within a test), a resilient client of it, CoreV1Api.
server, api, core = watching.server, watching.api, watching.core

KINDS = ("ADDED", "MODIFIED", "DELETED")


class Recorder:
    """Records handler calls as ``(type, name, resourceVersion)``; waits for a count of them."""

    def __init__(self, informer: SharedInformer) -> None:
        self.calls: list[Event] = []
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        for kind in KINDS:
            informer.add_event_handler(kind, self._handler(kind))
        informer.add_event_handler("ERROR", self.errors.append)

    def _handler(self, kind: str) -> Callable[[Any], None]:
        def handle(obj: Any) -> None:
            with self._cond:
                self.calls.append(event_of(kind, obj.metadata))
                self._cond.notify_all()

        return handle

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Event]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= count, timeout), self.calls
            return list(self.calls)


def informer_on(core: client.CoreV1Api, **kwargs: Any) -> SharedInformer:
    kwargs.setdefault("sleep", lambda seconds: None)
    kwargs.setdefault("rng", random.Random(5))
    return SharedInformer(core.list_namespaced_config_map, namespace="default", **kwargs)


def server_state(core: client.CoreV1Api) -> dict[str, tuple[str, str]]:
    items = core.list_namespaced_config_map("default").items
    return {
        f"default/{o.metadata.name}": (o.metadata.uid, o.metadata.resource_version) for o in items
    }


def cache_state(informer: SharedInformer) -> dict[str, tuple[str, str]]:
    return {
        key: (o.metadata.uid, o.metadata.resource_version)
        for key in informer.cache.list_keys()
        if (o := informer.cache.get_by_key(key)) is not None
    }


def test_lists_in_pages_then_syncs(server: FakeApiServer, core: client.CoreV1Api) -> None:
    expected = [create(core, f"c{i}") for i in range(5)]
    informer = informer_on(core, page_size=2)
    recorder = Recorder(informer)
    assert not informer.has_synced()
    informer.start()
    try:
        assert informer.wait_for_sync(10)
        assert recorder.wait_for(5) == expected
        assert server.request_count("list") == 3  # 2 + 2 + 1
        assert cache_state(informer) == server_state(core)
        later = [create(core, "late"), modify(core, "c0", "1")]
        assert recorder.wait_for(7) == expected + later
    finally:
        informer.stop()
    assert not recorder.errors


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        pytest.param([ResetWatch(after_events=2)], "reset", id="reset"),
        pytest.param([EndWatch(after_events=1)], "ended", id="early-end"),
        pytest.param([TruncatedBody()], "truncated", id="truncated"),
        pytest.param([SilentWatch(after_events=1)], "idle", id="silence"),
    ],
)
def test_watch_faults_lose_nothing(
    server: FakeApiServer,
    api: resilient_kube.ApiClient,
    core: client.CoreV1Api,
    faults: list[Any],
    reason: str,
) -> None:
    first = [create(core, "a")]
    informer = informer_on(core)
    recorder = Recorder(informer)
    for fault in faults:
        server.inject(fault, verb="watch")  # the informer's first watch gets it
    informer.start()
    try:
        assert recorder.wait_for(1) == first
        # Written before the watch opens or while it is open: all arrive, once, in order.
        later = [
            create(core, "b"),
            modify(core, "a", "1"),
            create(core, "c"),
            modify(core, "b", "2"),
        ]
        assert recorder.wait_for(5) == first + later
        assert cache_state(informer) == server_state(core)
    finally:
        informer.stop()
    assert recorder.calls == first + later
    assert reason in api.stats().watch.restarts_by_reason


def test_expired_watch_relists_and_delivers_only_the_difference(
    server: FakeApiServer, api: resilient_kube.ApiClient, core: client.CoreV1Api
) -> None:
    initial = [create(core, name) for name in ("gone", "changed", "replaced", "same")]
    old_gone = core.read_namespaced_config_map("gone", "default")
    old_replaced = core.read_namespaced_config_map("replaced", "default")
    expected_after: list[Event] = []
    done = threading.Event()

    def while_disconnected(seconds: float) -> None:
        # The informer's first backoff wait: the stream is down. Change the world, then
        # compact so that resuming from the old version gets 410.
        if done.is_set():
            return
        done.set()
        core.delete_namespaced_config_map("gone", "default")
        core.delete_namespaced_config_map("replaced", "default")
        replaced = create(core, "replaced")  # same name, new uid
        changed = modify(core, "changed", "x")
        added = create(core, "new")
        server.compact()
        expected_after.extend(
            [
                ("DELETED", "gone", old_gone.metadata.resource_version),
                ("DELETED", "replaced", old_replaced.metadata.resource_version),
                changed,
                replaced,
                added,
            ]
        )

    informer = informer_on(core, sleep=while_disconnected)
    recorder = Recorder(informer)
    server.inject(ResetWatch(after_events=0), verb="watch")
    informer.start()
    try:
        calls = recorder.wait_for(len(initial) + 5)
        assert sorted(calls[: len(initial)]) == sorted(initial)  # a list comes in name order
        # Deletions first (also the old object behind a new uid), then changes and additions,
        # nothing for "same", whose resourceVersion did not change.
        head, tail = calls[len(initial) : len(initial) + 2], calls[len(initial) + 2 :]
        assert head == expected_after[:2]
        assert sorted(tail) == sorted(expected_after[2:])
        assert cache_state(informer) == server_state(core)
        last = create(core, "after-relist")  # and it watches on from the new list
        assert recorder.wait_for(len(initial) + 6)[-1] == last
    finally:
        informer.stop()
    assert api.stats().watch.relists == 2
    assert any(getattr(e, "status", None) == 410 for e in recorder.errors)


def test_handler_errors_are_logged_and_do_not_stop_it(
    core: client.CoreV1Api, caplog: pytest.LogCaptureFixture
) -> None:
    informer = informer_on(core)

    def broken(obj: Any) -> None:
        raise RuntimeError("handler bug")

    informer.add_event_handler("ADDED", broken)
    recorder = Recorder(informer)
    informer.start()
    try:
        with caplog.at_level(logging.ERROR, logger="resilient_kube._informer"):
            expected = [create(core, "a"), create(core, "b")]
            assert recorder.wait_for(2) == expected
    finally:
        informer.stop()
    failures = [r for r in caplog.records if "handler" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in failures)


@pytest.mark.parametrize("seed", range(1, 11))
def test_thirty_second_outage_makes_about_a_dozen_attempts(seed: int) -> None:
    """Virtual time: every wait (the transport's and the informer's) moves a fake clock."""
    with FakeApiServer(bookmark_interval=60) as server:
        clock = FakeClock()
        outage: list[float] = []

        def sleep(seconds: float) -> None:
            if not outage:
                outage.append(clock.now)  # the first wait follows the break
            clock.now += seconds
            if clock.now - outage[0] >= 30:
                server.clear_faults()  # the server is back

        api = resilient_kube.ApiClient(server.configuration(), clock=clock, sleep=sleep)
        try:
            core = client.CoreV1Api(api)
            first = [create(core, "a")]
            # The first watch is reset at once; every watch request after it is reset too.
            server.inject(ResetWatch(after_events=0), verb="watch")
            server.inject(ResetConnection(), verb="watch", times=None)
            informer = informer_on(core, clock=clock, sleep=sleep, rng=random.Random(seed))
            recorder = Recorder(informer)
            informer.start()
            try:
                assert recorder.wait_for(1) == first
                assert server.wait_for_requests(3, verb="watch", timeout=20)
                later = create(core, "after")
                assert recorder.wait_for(2) == [*first, later]
            finally:
                informer.stop()
            assert clock.now - outage[0] >= 30
            # Wire attempts during the outage, the transport's own retries included; not the
            # stream that broke, nor the one that came back.
            attempts = server.request_count("watch") - 2
            print(f"outage attempts (seed {seed}): {attempts}")  # shown with pytest -s
            assert 5 <= attempts <= 15, attempts  # client-go's pace: about a dozen
            # Back within the backoff cap once the server returned.
            assert clock.now - outage[0] <= 30 + 30 + 5
        finally:
            api.close()


@pytest.mark.parametrize("code", [401, 403])
def test_unauthorized_waits_instead_of_looping(server: FakeApiServer, code: int) -> None:
    clock = FakeClock()
    waits: list[float] = []
    stop = threading.Event()
    informer_box: list[SharedInformer] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds
        if clock.now - FakeClock.START >= 30:
            stop.set()
            informer_box[0]._stop_event.set()

    api = resilient_kube.ApiClient(server.configuration(), clock=clock, sleep=sleep)
    try:
        server.inject(StatusFault(code), verb="list", times=None)
        informer = informer_on(client.CoreV1Api(api), clock=clock, sleep=sleep)
        informer_box.append(informer)
        recorder = Recorder(informer)
        informer.start()
        assert stop.wait(10)
        informer.stop()
        lists = server.request_count("list")
        assert 3 <= lists <= 12, lists  # 30 s of backoff from 0.8 s, no hot loop
        assert all(getattr(e, "status", None) == code for e in recorder.errors)
        assert not informer.has_synced()
    finally:
        api.close()


def test_real_time_outage_recovers_within_the_backoff_cap() -> None:
    """Real time, a short outage and a short backoff: back in sync, a bounded number of tries."""
    with FakeApiServer(bookmark_interval=60) as server:
        api = resilient_kube.ApiClient(server.configuration(), max_attempts=1)
        try:
            core = client.CoreV1Api(api)
            first = [create(core, "a")]
            informer = SharedInformer(
                core.list_namespaced_config_map,
                namespace="default",
                backoff=BackoffPolicy(base=0.05, cap=0.4),
            )
            recorder = Recorder(informer)
            server.inject(ResetWatch(after_events=1), verb="watch")
            server.inject(ResetConnection(), verb="watch", times=None, seconds=2.0)
            informer.start()
            try:
                assert recorder.wait_for(1) == first
                later = create(core, "after")
                assert recorder.wait_for(2, timeout=10) == [*first, later]
            finally:
                informer.stop()
            # 2 s of refusals at one attempt per wait of at most 0.4 s: bounded, not a spin.
            assert server.request_count("watch") <= 60
        finally:
            api.close()


def test_factory_builds_informers(server: FakeApiServer) -> None:
    with resilient_kube.ClientFactory(server.configuration()) as kube:
        informer = kube.informer(kube.core_v1().list_namespaced_config_map, namespace="default")
        named = kube.informer("list_namespaced_config_map", namespace="default")
        assert isinstance(named, SharedInformer)
        recorder = Recorder(informer)
        informer.start()
        try:
            assert informer.wait_for_sync(10)
            expected = [create(kube.core_v1(), "x")]
            assert recorder.wait_for(1) == expected
        finally:
            informer.stop()
        assert kube.stats().watch.relists == 1


def test_bad_arguments_name_the_value(core: client.CoreV1Api) -> None:
    with pytest.raises(resilient_kube.ConfigError, match="resync_period=-1"):
        SharedInformer(core.list_namespaced_config_map, resync_period=-1)
    with pytest.raises(resilient_kube.ConfigError, match="page_size=0"):
        SharedInformer(core.list_namespaced_config_map, page_size=0)
    with pytest.raises(ValueError, match="Unknown event_type 'NOPE'"):
        SharedInformer(core.list_namespaced_config_map).add_event_handler("NOPE", print)


def test_expired_continue_token_starts_the_list_over(
    server: FakeApiServer, core: client.CoreV1Api
) -> None:
    expected = sorted(create(core, f"c{i}") for i in range(5))
    pages: list[dict[str, Any]] = []

    @functools.wraps(core.list_namespaced_config_map)
    def list_func(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            pages.append(dict(kwargs))
        result = core.list_namespaced_config_map(*args, **kwargs)
        if not kwargs.get("watch") and len(pages) == 1:
            # A write, then a compaction: the first page's continue token is now too old.
            core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
            server.compact()
        return result

    informer = SharedInformer(list_func, namespace="default", page_size=2, sleep=lambda s: None)
    recorder = Recorder(informer)
    informer.start()
    try:
        assert informer.wait_for_sync(10)
        assert sorted(recorder.wait_for(5)) == expected  # each object once
    finally:
        informer.stop()
    # Page 1, its continue answered 410, then the whole list again: 3 pages.
    assert [bool(p.get("_continue")) for p in pages] == [False, True, False, True, True]
