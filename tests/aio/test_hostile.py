"""Hostile answers on a raw loopback socket, through the asyncio client: bounded and named."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Iterator

import pytest
from kubernetes.aio import client

from resilient_kube import ConnectionReset, ResponseTooLarge
from resilient_kube.aio import ApiClient
from tests.helpers.loopback import Relay

from ..integration.test_hostile import endless_chunks, serve


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    opened: list[Relay] = []
    yield opened
    for relay in opened:
        relay.close()


async def list_namespaces(url: str, **tuning: object) -> BaseException | None:
    async with ApiClient(client.Configuration(host=url), **tuning) as api:  # type: ignore[arg-type]
        try:
            await client.CoreV1Api(api).list_namespace()
        except Exception as exc:  # the test looks at it
            return exc
    return None


def test_an_endless_body_stops_at_max_response_bytes(relays: list[Relay]) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    url = serve(relays, head, endless_chunks())
    started = time.monotonic()
    error = asyncio.run(list_namespaces(url, max_response_bytes=4 * 2**20, deadline=30))
    assert isinstance(error, ResponseTooLarge)
    assert "max_response_bytes=4194304" in str(error)
    assert error.attempts == 1  # a body too large is not fetched again
    assert time.monotonic() - started < 30


def test_a_gzip_bomb_is_stopped_at_the_limit(relays: list[Relay]) -> None:
    bomb = gzip.compress(b"\0" * (64 * 2**20), compresslevel=9)  # 64 MiB in about 64 kB
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(bomb)
    )
    url = serve(relays, head, bomb)
    error = asyncio.run(list_namespaces(url, max_response_bytes=2**20))
    assert isinstance(error, ResponseTooLarge)


def test_a_garbage_status_line_is_named_as_such(relays: list[Relay]) -> None:
    url = serve(relays, b"SSH-2.0-OpenSSH_9.6\r\n", b"")
    error = asyncio.run(list_namespaces(url, max_attempts=1))
    assert isinstance(error, ConnectionReset)
    assert "the server's answer is not HTTP" in str(error)
