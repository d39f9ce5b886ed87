"""The API server's ``Warning`` headers reach a handler: logged once per distinct text by default."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from kubernetes import client

from resilient_kube import ApiClient, ServerWarning
from tests.helpers.loopback import Relay

_BODY = b'{"kind":"NamespaceList","apiVersion":"v1","metadata":{},"items":[]}'


@pytest.fixture
def warning_server() -> Iterator[tuple[str, list[bytes]]]:
    """A server that answers each request with the next of ``headers`` (the last one repeats)."""
    headers: list[bytes] = []
    served = iter(range(1 << 30))

    def handle(conn: socket.socket) -> None:
        while conn.recv(65536):
            index = min(next(served), len(headers) - 1)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%s"
                b"Content-Length: %d\r\n\r\n%s" % (headers[index], len(_BODY), _BODY)
            )

    relay = Relay(handle)
    yield f"http://127.0.0.1:{relay.port}", headers
    relay.close()


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "resilient_kube.warnings"]


def test_each_distinct_text_is_logged_once_per_client(
    warning_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    url, headers = warning_server
    headers += [
        b'Warning: 299 - "v1beta1 Widget is deprecated; use v1"\r\n',
        # Two warnings in two header lines, one of them seen before.
        b'Warning: 299 - "v1beta1 Widget is deprecated; use v1"\r\n'
        b'Warning: 299 - "unknown field \\"spec.colour\\""\r\n',
        b"",
    ]
    host = url.removeprefix("http://")
    with caplog.at_level(logging.WARNING, logger="resilient_kube.warnings"):
        with ApiClient(client.Configuration(host=url)) as api_client:
            v1 = client.CoreV1Api(api_client)
            for _ in range(3):
                v1.list_namespace()
        assert _records(caplog) == [
            f"API server {host} warns: v1beta1 Widget is deprecated; use v1",
            f'API server {host} warns: unknown field "spec.colour"',
        ]
        assert all(r.levelno == logging.WARNING for r in caplog.records)
        # Another client has its own memory: it logs the text again.
        headers[:] = [b'Warning: 299 - "v1beta1 Widget is deprecated; use v1"\r\n']
        with ApiClient(client.Configuration(host=url)) as other:
            client.CoreV1Api(other).list_namespace()
        assert len(_records(caplog)) == 3


def test_a_custom_handler_gets_every_warning(warning_server: tuple[str, list[bytes]]) -> None:
    url, headers = warning_server
    headers.append(b'Warning: 299 - "a", 199 agent "b"\r\n')
    got: list[ServerWarning] = []
    with ApiClient(client.Configuration(host=url)) as api_client:
        api_client.on_server_warning(got.append)
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()
        v1.list_namespace()
    host = url.removeprefix("http://")
    one = [ServerWarning(299, "-", "a", host), ServerWarning(199, "agent", "b", host)]
    assert got == one + one  # no deduplication: the handler decides


def test_off_by_setting_or_by_none(
    warning_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    url, headers = warning_server
    headers.append(b'Warning: 299 - "deprecated"\r\n')
    with caplog.at_level(logging.WARNING, logger="resilient_kube.warnings"):
        with ApiClient(client.Configuration(host=url), server_warnings=False) as api_client:
            client.CoreV1Api(api_client).list_namespace()
            got: list[ServerWarning] = []
            api_client.on_server_warning(got.append)  # an explicit handler still works
            client.CoreV1Api(api_client).list_namespace()
            assert [w.text for w in got] == ["deprecated"]
        with ApiClient(client.Configuration(host=url)) as api_client:
            api_client.on_server_warning(None)
            client.CoreV1Api(api_client).list_namespace()
    assert _records(caplog) == []


def test_a_handler_that_raises_does_not_fail_the_call(
    warning_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    url, headers = warning_server
    headers.append(b'Warning: 299 - "x"\r\n')

    def broken(warning: ServerWarning) -> None:
        raise RuntimeError("boom")

    with ApiClient(client.Configuration(host=url)) as api_client:
        api_client.on_server_warning(broken)
        with caplog.at_level(logging.ERROR, logger="resilient_kube._events"):
            assert client.CoreV1Api(api_client).list_namespace().items == []
    assert "failed on server_warning" in caplog.text


def test_the_memory_of_texts_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    from resilient_kube._warnings import LogOnce

    handler = LogOnce(limit=2)
    with caplog.at_level(logging.WARNING, logger="resilient_kube.warnings"):
        for text in ("a", "b", "a", "c", "a", "c"):
            handler(ServerWarning(299, "-", text, "h:1"))
        handler(ServerWarning(199, "-", "not a Kubernetes warning", "h:1"))
        handler(ServerWarning(299, "-", "", "h:1"))
    # "a" is forgotten once "c" arrives (two remembered), so it is logged again.
    assert [m.rpartition(" ")[2] for m in _records(caplog)] == ["a", "b", "c", "a"]
