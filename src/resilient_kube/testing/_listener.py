"""A loopback listener whose accept queue is full, so that every connect times out."""

from __future__ import annotations

import ipaddress
import select
import socket
from types import TracebackType

__all__ = ["FullAcceptQueueListener"]

#: A connect that has not completed after this long is taken as dropped by the kernel.
_PROBE_SECONDS = 0.2
_MAX_FILLERS = 16


class FullAcceptQueueListener:
    """A TCP listener on loopback that never accepts, with its accept queue already full.

    It listens with a backlog of 0 and connects filler sockets until the kernel stops
    completing handshakes; from then on every SYN is dropped and every further connect
    hangs until the client's connect timeout. This is the only honest way to get a connect
    timeout without leaving loopback (never an outside "blackhole" address).

    Example:
        >>> with FullAcceptQueueListener() as listener:  # doctest: +SKIP
        ...     CoreV1Api(client).list_namespace(_request_timeout=(0.5, 5))  # ConnectTimeoutError
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"host={host!r} must be a loopback address (127.0.0.0/8 or ::1)")
        self.host = host
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self._family == socket.AF_INET6 else self.host
        return f"http://{host}:{self.port}"

    def open(self) -> None:
        if self._server is not None:
            raise RuntimeError("the listener is already open")
        self._server = socket.socket(self._family, socket.SOCK_STREAM)
        self._server.bind((self.host, 0))
        self._server.listen(0)
        self.port = self._server.getsockname()[1]
        for _ in range(_MAX_FILLERS):
            if not self._connect_filler():
                return
        self.close()  # Defensive: a kernel that never fills its queue
        raise RuntimeError("could not fill the accept queue")

    def _connect_filler(self) -> bool:
        """Connect one more filler; False once the kernel no longer completes connects."""
        probe = socket.socket(self._family, socket.SOCK_STREAM)
        probe.setblocking(False)
        probe.connect_ex((self.host, self.port))
        _, writable, _ = select.select([], [probe], [], _PROBE_SECONDS)
        if writable and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            self._fillers.append(probe)
            return True
        probe.close()
        return False

    def close(self) -> None:
        for sock in self._fillers:
            sock.close()
        self._fillers.clear()
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> FullAcceptQueueListener:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
