"""aio._classify: each aiohttp error maps to the policy's failure reason and phase."""

from __future__ import annotations

import errno
import socket
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from resilient_kube._policy import BodyTooLarge, Failure
from resilient_kube.aio._classify import classify_aiohttp_error

KEY = ConnectionKey("api.example.test", 6443, True, True, None, None, None, None)

CASES: list[tuple[BaseException, Failure]] = [
    (
        aiohttp.ClientConnectorDNSError(KEY, socket.gaierror(socket.EAI_NONAME, "unknown")),
        Failure("dns", sent=False),
    ),
    (
        aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("bad cert")),
        Failure("tls", sent=False, retryable=False),
    ),
    (
        aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError("handshake cut")),
        Failure("tls", sent=False),
    ),
    (
        aiohttp.ClientProxyConnectionError(KEY, ConnectionRefusedError(errno.ECONNREFUSED, "")),
        Failure("proxy", sent=False),
    ),
    (
        aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
        Failure("connect_error", sent=False),
    ),
    (aiohttp.ConnectionTimeoutError("Connection timeout"), Failure("connect_timeout", sent=False)),
    (aiohttp.SocketTimeoutError("Timeout on reading"), Failure("read_timeout", sent=True)),
    (TimeoutError(), Failure("read_timeout", sent=True)),
    (BodyTooLarge("too large"), Failure("too_large", sent=True, retryable=False)),
    (
        aiohttp.ClientPayloadError("Response payload is not completed"),
        Failure("truncated", sent=True),
    ),
    (aiohttp.ServerDisconnectedError(), Failure("disconnected", sent=True)),
    (
        aiohttp.ClientResponseError(None, (), status=400, message="Invalid status line"),  # type: ignore[arg-type]
        Failure("bad_response", sent=True),
    ),
    (
        aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
        Failure("reset", sent=True),
    ),
    (aiohttp.ClientConnectionResetError("Cannot write"), Failure("reset", sent=True)),
    (aiohttp.ClientOSError(errno.EHOSTUNREACH, "unreachable"), Failure("disconnected", sent=True)),
    (ValueError("a bug"), Failure("ValueError", sent=True, retryable=False)),
]


@pytest.mark.parametrize(("error", "expected"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_classify(error: BaseException, expected: Failure) -> None:
    assert classify_aiohttp_error(error) == expected
