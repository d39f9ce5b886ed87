"""Watches through ``kubernetes.watch.Watch``: replay, bookmarks, timeouts, selectors and 410."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from resilient_kube.testing import EndWatch, FakeApiServer, ResetWatch

from .conftest import close, new_watch, stock_client


def _events(core: Any, **kwargs: Any) -> list[tuple[str, str]]:
    """Run one watch stream to its end (``timeout_seconds`` disables the client's re-watch)."""
    watch = new_watch()
    seen = []
    for event in watch.stream(core.list_namespaced_config_map, "default", **kwargs):
        name = event["raw_object"].get("metadata", {}).get("name", "")
        seen.append((event["type"], name))
    return seen


def test_watch_without_version_lists_then_streams(core: Any) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    watch = new_watch()
    seen: list[tuple[str, str]] = []
    for event in watch.stream(core.list_namespaced_config_map, "default", timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 1:
            core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
        if len(seen) == 2:
            core.patch_namespaced_config_map("after", "default", {"data": {"a": "1"}})
        if len(seen) == 3:
            core.delete_namespaced_config_map("after", "default")
        if len(seen) == 4:
            watch.stop()
    assert seen == [
        ("ADDED", "before"),
        ("ADDED", "after"),
        ("MODIFIED", "after"),
        ("DELETED", "after"),
    ]


def test_watch_replays_from_resource_version(core: Any) -> None:
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    core.create_namespaced_secret("default", {"metadata": {"name": "not-a-configmap"}})
    core.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}})
    seen = _events(core, resource_version=first.metadata.resource_version, timeout_seconds=1)
    assert seen == [("ADDED", "b"), ("MODIFIED", "a")]


def test_timeout_seconds_ends_the_stream(core: Any) -> None:
    started = time.monotonic()
    assert _events(core, resource_version="1", timeout_seconds=1) == []
    assert 0.9 <= time.monotonic() - started < 5


def test_bookmarks() -> None:
    with FakeApiServer(bookmark_interval=0.2) as server:
        api = stock_client(server)
        try:
            core = client.CoreV1Api(api)
            created = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
            watch = new_watch()
            bookmarks = []
            for event in watch.stream(
                core.list_namespaced_config_map, "default",
                resource_version=created.metadata.resource_version,
                allow_watch_bookmarks=True, timeout_seconds=10,
            ):  # fmt: skip
                assert event["type"] == "BOOKMARK"
                bookmarks.append(event["raw_object"]["metadata"]["resourceVersion"])
                if len(bookmarks) == 2:
                    watch.stop()
            assert bookmarks == [created.metadata.resource_version] * 2
            assert watch.resource_version == created.metadata.resource_version
        finally:
            close(api)


def test_no_bookmarks_unless_asked() -> None:
    with FakeApiServer(bookmark_interval=0.1) as server:
        api = stock_client(server)
        try:
            assert _events(client.CoreV1Api(api), resource_version="1", timeout_seconds=1) == []
        finally:
            close(api)


def test_expired_resource_version_is_410_in_the_stream() -> None:
    with FakeApiServer(event_window=3) as server:
        api = stock_client(server)
        try:
            core = client.CoreV1Api(api)
            first = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
            for i in range(5):
                core.create_namespaced_config_map("default", {"metadata": {"name": f"n{i}"}})
            watch = new_watch()
            stream = watch.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=first.metadata.resource_version,
            )
            # Without timeout_seconds the client re-watches once after a 410, then raises.
            with pytest.raises(ApiException) as info:
                list(stream)
            assert info.value.status == 410
            assert "too old resource version" in str(info.value.reason)
            assert server.request_count("watch") == 2
        finally:
            close(api)


def test_expired_continue_token_is_410() -> None:
    with FakeApiServer(event_window=2) as server:
        api = stock_client(server)
        try:
            core = client.CoreV1Api(api)
            for i in range(3):
                core.create_namespaced_config_map("default", {"metadata": {"name": f"n{i}"}})
            page = core.list_namespaced_config_map("default", limit=1)
            for i in range(3):
                core.create_namespaced_config_map("default", {"metadata": {"name": f"m{i}"}})
            with pytest.raises(ApiException) as info:
                core.list_namespaced_config_map(
                    "default", limit=1, _continue=page.metadata._continue
                )
            assert info.value.status == 410
            assert '"reason": "Expired"' in str(info.value.body)
        finally:
            close(api)


def test_label_selector_watch_sees_objects_enter_and_leave(core: Any) -> None:
    start = core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    core.patch_namespaced_config_map("x", "default", {"metadata": {"labels": {"on": "yes"}}})
    core.patch_namespaced_config_map("x", "default", {"data": {"a": "1"}})
    core.patch_namespaced_config_map("x", "default", {"metadata": {"labels": {"on": None}}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "y"}})
    seen = _events(
        core,
        resource_version=start.metadata.resource_version,
        label_selector="on=yes",
        timeout_seconds=1,
    )
    assert seen == [("ADDED", "x"), ("MODIFIED", "x"), ("DELETED", "x")]


def test_field_selector_watch_on_one_object(core: Any) -> None:
    start = core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "y"}})
    core.patch_namespaced_config_map("x", "default", {"data": {"a": "1"}})
    seen = _events(
        core,
        resource_version=start.metadata.resource_version,
        field_selector="metadata.name=x",
        timeout_seconds=1,
    )
    assert seen == [("MODIFIED", "x")]


def test_watch_sees_changes_made_from_another_thread(core: Any) -> None:
    listed = core.list_namespaced_config_map("default")

    def writer() -> None:
        for i in range(3):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"w{i}"}})

    # Whether the writes land before or after the watch connects, watching from the list's
    # resourceVersion sees all of them: that is the list-then-watch contract.
    thread = threading.Thread(target=writer)
    thread.start()
    watch = new_watch()
    seen = []
    for event in watch.stream(
        core.list_namespaced_config_map, "default",
        resource_version=listed.metadata.resource_version, timeout_seconds=10,
    ):  # fmt: skip
        seen.append(event["object"].metadata.name)
        if len(seen) == 3:
            watch.stop()
    thread.join(10)
    assert seen == ["w0", "w1", "w2"]


def _raw_stream(core: Any, since: str) -> tuple[list[str], BaseException | None]:
    """Read one stream with the stock client (retries off); names seen and how it ended."""
    watch = new_watch()
    seen: list[str] = []
    stream = watch.stream(
        core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=5
    )
    try:
        seen.extend(event["raw_object"]["metadata"]["name"] for event in stream)
    except Exception as exc:
        return seen, exc
    return seen, None


def _backlog(core: Any) -> str:
    since: str = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(4):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"b{i}"}})
    return since


def test_reset_watch_after_events(fake_api_server: FakeApiServer, core: Any) -> None:
    since = _backlog(core)
    fake_api_server.inject(ResetWatch(after_events=2), verb="watch")
    seen, error = _raw_stream(core, since)
    assert seen == ["b0", "b1"]
    assert isinstance(error, ProtocolError)
    assert "reset" in str(error).lower()


def test_end_watch_ends_early_and_cleanly(fake_api_server: FakeApiServer, core: Any) -> None:
    since = _backlog(core)
    fake_api_server.inject(EndWatch(after_events=3), verb="watch")
    started = time.monotonic()
    seen, error = _raw_stream(core, since)
    assert (seen, error) == (["b0", "b1", "b2"], None)
    assert time.monotonic() - started < 5  # long before its timeoutSeconds


def test_compact_makes_older_versions_expire(fake_api_server: FakeApiServer, core: Any) -> None:
    since = _backlog(core)
    newest = fake_api_server.compact()
    assert str(newest) == core.list_namespaced_config_map("default").metadata.resource_version
    seen, error = _raw_stream(core, since)
    assert seen == []
    assert isinstance(error, ApiException)
    assert error.status == 410
    # From the compacted version on, watching works.
    core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
    seen, error = _raw_stream(core, str(newest))
    assert (seen, error) == (["after"], None)


def test_watch_fault_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="after_events=-1"):
        ResetWatch(-1)
    with pytest.raises(ValueError, match="after_events=True"):
        EndWatch(True)
