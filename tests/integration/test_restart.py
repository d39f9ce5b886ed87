"""An API server restarting on loopback: refused for a while, then back on the same port (#20).

With the default settings a call made while the server is down succeeds once it is back: connects
that found no server are bounded by the deadline and the retry budget, not by ``max_attempts``.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from resilient_kube import ApiClient, Settings, _connection
from resilient_kube._dialer import create_connection
from resilient_kube.testing import FakeApiServer
from tests.helpers.loopback import Relay, pipe


class Frontend:
    """A port that refuses connections until ``up()``, then splices each one to ``backend``."""

    def __init__(self, backend: int) -> None:
        self._backend = backend
        with socket.create_server(("127.0.0.1", 0)) as probe:
            self.port = probe.getsockname()[1]  # free now: connects are refused
        self._listener: socket.socket | None = None
        self._held: list[socket.socket] = []

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self._backend))
                self._held += [conn, upstream]
                threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
                threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for sock in self._held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def frontend(server: FakeApiServer) -> Iterator[Frontend]:
    front = Frontend(server.port)
    yield front
    front.close()


def wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        threading.Event().wait(0.01)
    return False


def test_calls_made_while_the_server_is_down_succeed_when_it_is_back(
    server: FakeApiServer, frontend: Frontend
) -> None:
    configuration = server.configuration()
    configuration.host = f"http://127.0.0.1:{frontend.port}"
    api_client = ApiClient(configuration)  # the defaults
    v1 = client.CoreV1Api(api_client)
    defaults = Settings()
    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(v1.list_namespace) for _ in range(8)]
        # Down until the calls have been refused more often than max_attempts allows.
        assert wait_for(
            lambda: api_client.stats().transport.attempts > 8 * defaults.max_attempts, 30
        )
        frontend.up()
        results = [call.result(timeout=defaults.deadline or 60) for call in calls]
    assert len(results) == 8
    stats = api_client.stats()
    assert stats.transport.failures == 0
    assert stats.retry.retries_by_reason["connect_error"] > 8 * (defaults.max_attempts - 1)
    api_client.close()


def test_a_connection_reset_before_its_first_request_is_closed_and_the_call_retried(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server going down resets the connections still in its accept queue: one can be reset
    # after the handshake, before the pool has it. The dialer is the seam that holds it there
    # until the reset has arrived (the race cannot be ordered from outside).
    def reset_first(conn: socket.socket) -> None:
        if next(accepted) == 0:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        else:
            relay.splice(conn, server.port)

    accepted = itertools.count()
    relay = Relay(reset_first)
    dialed: list[socket.socket] = []

    def dial(*args: Any, **kwargs: Any) -> socket.socket:
        sock = create_connection(*args, **kwargs)
        if not dialed:
            with pytest.raises(ConnectionResetError):
                sock.recv(1, socket.MSG_PEEK)  # bounded: the dialer left the connect timeout
        dialed.append(sock)
        return sock

    monkeypatch.setattr(_connection, "create_connection", dial)
    configuration = server.configuration()
    configuration.host = f"http://127.0.0.1:{relay.port}"
    api_client = ApiClient(configuration)
    try:
        client.CoreV1Api(api_client).list_namespace()
        assert len(dialed) == 2
        assert dialed[0].fileno() == -1  # closed where it broke, not left to the collector
        assert api_client.stats().retry.retries_by_reason["connect_error"] == 1
    finally:
        api_client.close()
        relay.close()
