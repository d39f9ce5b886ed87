"""Time limits for attempts, kept by one thread instead of by each socket.

A socket with a timeout costs CPython a ``poll()`` before every ``send`` and ``recv``, and with
it one more release and re-acquisition of the GIL: with 32 threads sharing the GIL that was the
largest part of resilient_kube's cost per call. So the sockets of ordinary calls block, and a
watchdog thread ends an attempt that overran its time by shutting its socket down, which wakes
the blocked ``recv`` or ``send`` at once. The attempt then reports a read timeout.

Watches are checked every ``TICK`` seconds while any exist (and for ``LINGER`` seconds after the
last one, so that a busy client does not wake the thread on every call); an idle process has a
sleeping thread. Connecting keeps its socket timeout: a new connection is rare and its
``connect()`` must be bounded before there is a socket to shut down.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

__all__ = ["LINGER", "TICK", "Watch", "current", "start", "stop"]

#: How often the watchdog looks at the clock while attempts are in flight: a time limit fires at
#: most this late.
TICK = 0.01
#: How long the watchdog keeps ticking after the last attempt ended.
LINGER = 2.0

_current = threading.local()
#: ``Watch.conn`` before the pool has handed the attempt a connection.
_PENDING: Any = object()


class Watch:
    """One attempt's time limit, and the connection it will shut down when it passes."""

    __slots__ = ("_lock", "conn", "expires_at", "fired", "hard_at", "read")

    def __init__(self, read: float | None, hard_at: float | None) -> None:
        #: Seconds the server may take to answer, counted again once a new connection is up.
        self.read = read
        #: The call's deadline (monotonic), which nothing extends.
        self.hard_at = hard_at
        self.expires_at = _expiry(time.monotonic(), read, hard_at)
        #: The pooled connection the attempt is using; None once it is back in the pool.
        self.conn: Any = _PENDING
        self.fired = False
        self._lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        self.conn = conn

    def detach(self) -> None:
        """The connection goes back to the pool: from now on it is someone else's."""
        with self._lock:
            self.conn = None

    def restart(self) -> None:
        """A new connection is up: the server's time to answer starts now."""
        self.expires_at = _expiry(time.monotonic(), self.read, self.hard_at)

    def extend_to(self, seconds: float | None) -> None:
        """The body is next: it gets ``seconds`` (its own read time), within the deadline."""
        self.expires_at = _expiry(time.monotonic(), seconds, self.hard_at)

    def fire(self) -> bool:
        """Shut the attempt's socket down; False while it has none yet (try again next tick)."""
        with self._lock:
            conn = self.conn
            if conn is None:
                return True  # the connection is back in the pool: the attempt is over
            sock = None if conn is _PENDING else getattr(conn, "sock", None)
            if sock is None:
                return False  # not connected yet: connecting has its own socket timeout
            self.fired = True
            # Already closed is fine: the attempt has ended anyway. socket.socket's own
            # shutdown, also for an SSLSocket: its override would drop the TLS state under the
            # thread that is reading.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            return True


def _expiry(now: float, seconds: float | None, hard_at: float | None) -> float:
    soft = None if seconds is None else now + seconds
    if hard_at is None:
        return soft if soft is not None else float("inf")
    return hard_at if soft is None else min(soft, hard_at)


def current() -> Watch | None:
    """The watch of the attempt running on this thread (the pool's hooks attach its connection)."""
    watch: Watch | None = getattr(_current, "watch", None)
    return watch


class _Watchdog:
    """The thread that fires watches whose time has passed."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (in a forked child, where the thread did not survive)."""
        self._watches: dict[int, Watch] = {}
        self._wake = threading.Condition(threading.Lock())
        self._idle = True
        self._thread: threading.Thread | None = None

    def start(self, watch: Watch) -> None:
        """Watch ``watch`` from now on; it is this thread's current attempt."""
        self._watches[id(watch)] = watch
        _current.watch = watch
        if self._idle:  # rare: the first attempt after a quiet spell
            with self._wake:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="resilient-kube-watchdog", daemon=True
                    )
                    self._thread.start()
                    self._idle = False
                self._wake.notify()

    def stop(self, watch: Watch) -> None:
        """The attempt is over: forget it (its connection, if any, is no longer touched)."""
        _current.watch = None
        watch.detach()
        self._watches.pop(id(watch), None)

    def _run(self) -> None:
        quiet_since = time.monotonic()
        while True:
            if not self._watches and time.monotonic() - quiet_since > LINGER:
                with self._wake:
                    self._idle = True
                    # Checked again after _idle is set: start() reads _idle after adding.
                    while not self._watches:
                        self._wake.wait()
                    self._idle = False
            time.sleep(TICK)
            now = time.monotonic()
            for key, watch in list(self._watches.items()):
                if watch.expires_at <= now and watch.fire():
                    self._watches.pop(key, None)
            if self._watches:
                quiet_since = now


_watchdog = _Watchdog()


def start(watch: Watch) -> None:
    """Watch ``watch`` from now on; it is this thread's current attempt."""
    _watchdog.start(watch)


def stop(watch: Watch) -> None:
    """The attempt is over: forget ``watch``."""
    _watchdog.stop(watch)


# The thread does not survive a fork: in the child a new one starts with the next attempt.
os.register_at_fork(after_in_child=_watchdog.reset)
