"""Hostile answers on a raw loopback socket: endless bodies, gzip bombs, garbage, deep nesting.

Each one is a promise the README makes (bounded memory and time, clear typed errors) at an edge
where an adversarial pass broke it (issue 22, items 4, 5 and 9).
"""

from __future__ import annotations

import contextlib
import gzip
import socket
from collections.abc import Iterator

import pytest
from kubernetes import client

from resilient_kube import ApiClient, ConnectionReset, ResponseTooLarge
from tests.helpers.loopback import Relay, elapsed


def serve(relays: list[Relay], head: bytes, body: Iterator[bytes] | bytes) -> str:
    """A server that answers every request with ``head`` and then ``body`` (chunks or bytes)."""

    def handle(conn: socket.socket) -> None:
        # The client hangs up mid-body when it has read enough: that is the point.
        with contextlib.suppress(ConnectionError):
            while conn.recv(65536):
                conn.sendall(head)
                if isinstance(body, bytes):
                    conn.sendall(body)
                else:
                    for chunk in body:
                        conn.sendall(chunk)
                    return

    relay = Relay(handle)
    relays.append(relay)
    return f"http://127.0.0.1:{relay.port}"


def api(url: str, **tuning: object) -> client.CoreV1Api:
    return client.CoreV1Api(ApiClient(client.Configuration(host=url), **tuning))  # type: ignore[arg-type]


def endless_chunks() -> Iterator[bytes]:
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    for _ in range(200_000):  # bounded: 13 GB, far past any limit in these tests
        yield framed


def test_an_endless_body_stops_at_max_response_bytes(relays: list[Relay]) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    url = serve(relays, head, endless_chunks())
    seconds, error = elapsed(
        lambda: api(url, max_response_bytes=4 * 2**20, deadline=30).list_namespace()
    )
    assert isinstance(error, ResponseTooLarge)
    assert "max_response_bytes=4194304" in str(error)
    assert error.attempts == 1  # a body too large is not fetched again
    assert seconds < 30


def test_a_gzip_bomb_is_decompressed_only_to_the_limit(relays: list[Relay]) -> None:
    bomb = gzip.compress(b"\0" * (256 * 2**20), compresslevel=9)  # 256 MiB in about 250 kB
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(bomb)
    )
    url = serve(relays, head, bomb)
    _, error = elapsed(lambda: api(url, max_response_bytes=2**20).list_namespace())
    assert isinstance(error, ResponseTooLarge)


def test_a_body_within_the_limit_reads_as_before(relays: list[Relay]) -> None:
    body = b'{"kind":"NamespaceList","apiVersion":"v1","metadata":{},"items":[]}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    url = serve(relays, head, body)
    assert api(url, max_response_bytes=len(body)).list_namespace().items == []


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_status_body_nested_too_deep_is_an_api_exception(
    relays: list[Relay], status: int
) -> None:
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    head = b"HTTP/1.1 %d Boom\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
        status,
        len(body),
    )
    url = serve(relays, head, body)
    v1 = api(url, max_attempts=2, backoff_base=0.001)
    with pytest.raises(client.ApiException) as caught:
        v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="n")))
    assert caught.value.status == status


def test_a_huge_retry_after_seconds_is_an_api_exception(relays: list[Relay]) -> None:
    body = b'{"kind":"Status","details":{"retryAfterSeconds":' + b"9" * 400 + b"}}"
    head = (
        b"HTTP/1.1 429 Too Many\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (len(body))
    )
    url = serve(relays, head, body)
    with pytest.raises(client.ApiException) as caught:
        api(url).list_namespace()
    assert caught.value.status == 429


def test_a_garbage_status_line_is_named_as_such(relays: list[Relay]) -> None:
    url = serve(relays, b"SSH-2.0-OpenSSH_9.6\r\n", b"")
    _, error = elapsed(lambda: api(url, max_attempts=1).list_namespace())
    assert isinstance(error, ConnectionReset)
    assert "the server's answer is not HTTP" in str(error)
    assert "closed without a response" not in str(error)


def test_a_declared_length_past_the_limit_stops_at_the_limit(relays: list[Relay]) -> None:
    body = b"x" * (2 * 2**20)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    url = serve(relays, head, body)
    _, error = elapsed(lambda: api(url, max_response_bytes=2**20).list_namespace())
    assert isinstance(error, ResponseTooLarge)
