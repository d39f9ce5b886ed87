"""Loopback servers written for one test: a relay that runs a handler per connection.

A handler is a server's whole behaviour on one connection (answer, stall, trickle, splice to
another port); ``Relay.close`` shuts every socket it opened, waking the handler wherever it waits.
``elapsed`` times a call against such a server and says how it ended.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable


def elapsed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class Relay:
    """A loopback TCP listener that hands each connection to ``handle`` on its own thread.

    Every socket a handler opens is ``keep()``-ed, so that ``close()`` can shut it down and wake
    the handler wherever it waits.
    """

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._handle = handle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.stop = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                threading.Thread(target=self._serve, args=(self.keep(conn),), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except OSError:
            if not self.stop.is_set():
                raise  # closing the relay breaks its sockets under the handlers: that is all

    def keep(self, sock: socket.socket) -> socket.socket:
        self._held.append(sock)
        return sock

    def splice(self, conn: socket.socket, port: int) -> None:
        """Connect to ``port`` and copy bytes both ways until either side is done."""
        upstream = self.keep(socket.create_connection(("127.0.0.1", port)))
        threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
        pipe(upstream, conn)

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        for sock in self._held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def raw_server(relays: list[Relay], answer: bytes) -> str:
    """A server that reads the request, sends ``answer`` and then nothing, ever."""

    def handle(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(answer)

    relay = Relay(handle)
    relays.append(relay)
    return f"http://127.0.0.1:{relay.port}"
