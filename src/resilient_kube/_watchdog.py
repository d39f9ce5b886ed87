"""Time limits for attempts, kept by one thread instead of by each socket.

A socket with a timeout costs CPython a ``poll()`` before every ``send`` and ``recv``, and with
it one more release and re-acquisition of the GIL: with 32 threads sharing the GIL that was the
largest part of resilient_kube's cost per call. So the sockets of ordinary calls block, and a
watchdog thread ends an attempt that overran its time by shutting its socket down, which wakes
the blocked ``recv`` or ``send`` at once. The attempt then reports a read timeout.

``read_timeout`` limits silence, not the whole response, as a socket timeout does: when a timer
is due, the kernel's ``TCP_INFO`` tells how long ago data last moved either way (the answer
arriving, or the request going out as the server takes it in). An exchange still moving gets
``read`` more seconds from then, within the deadline. Where ``TCP_INFO`` is missing (not Linux)
the request, the wait for the headers and the body each get ``read`` seconds.

The thread sleeps until the earliest expiry. A timer only ever moves later once started, and
attempts share the same ``read_timeout``, so a new timer almost never expires before the
earliest one: starting and stopping it touches a dict and nothing else, and the thread wakes
about once per ``read_timeout`` however many calls go by (waking it every 10 ms, as it once
did, cost more CPU per call than all of resilient_kube's rules). A timer due before the thread's
next look (a deadline nearer than the read timeout, a shorter ``_request_timeout``) wakes it.
Connecting keeps its socket timeout: a new connection is rare and its ``connect()`` must be
bounded before there is a socket to shut down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from typing import Any

__all__ = ["Timer", "current", "resume", "start", "stop", "suspend"]

log = logging.getLogger(__name__)

_current = threading.local()
_NEVER = float("inf")
#: How soon a due timer that could not fire yet (its attempt still connecting) is looked at again.
_RECHECK = 0.01
#: ``Timer.conn`` before the pool has handed the attempt a connection.
_PENDING: Any = object()
#: ``struct tcp_info`` (linux/tcp.h): ``tcpi_retransmits`` (offset 2: timeouts of the oldest
#: unacknowledged segment), milliseconds since data was last sent (``tcpi_last_data_sent``,
#: offset 44) and since data last arrived (``tcpi_last_data_recv``, offset 52). Keepalive and
#: window probes carry no data: they move neither.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCP_STATE = struct.Struct("=2xB41xI4xI")


class Timer:
    """One attempt's time limit, and the socket it shuts down when the limit passes.

    The attempt's thread calls, in order: ``attach`` (the pool handed out a connection),
    ``arm`` (connected: the request goes out now; connecting has its own socket timeout),
    ``restart`` (the request is out; again when the body is next), ``detach`` (the connection
    goes back to the pool) and ``end``. The watchdog calls ``fire``.
    """

    __slots__ = (
        "_lock",
        "conn",
        "expires_at",
        "fired",
        "hard_at",
        "outer",
        "read",
        "sock",
    )

    def __init__(self, read: float | None, hard_at: float | None) -> None:
        #: Seconds the server may stay silent.
        self.read = read
        #: The call's deadline (monotonic), which nothing extends.
        self.hard_at = hard_at
        self.expires_at = _expiry(time.monotonic(), read, hard_at)
        #: The connection the pool handed this attempt; None once it is back in the pool.
        self.conn: Any = _PENDING
        #: The socket to shut down, once armed: held here because http.client lets go of
        #: ``conn.sock`` while a response that closes the connection is still being read.
        self.sock: socket.socket | None = None
        #: The timer of an attempt this one interrupted on the same thread (see ``start``).
        self.outer: Timer | None = None
        self.fired = False
        self._lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        """The pool handed out ``conn``: the first one is this attempt's."""
        if self.conn is _PENDING:
            self.conn = conn

    def arm(self, sock: Any) -> None:
        """Connected: from now on the server's silence is timed, and ``sock`` is shut on expiry."""
        raw = _raw_socket(sock)
        with self._lock:
            if self.sock is None:
                self.expires_at = _expiry(time.monotonic(), self.read, self.hard_at)
            self.sock = raw

    def restart(self) -> None:
        """A new phase (the request is out, the body is next): ``read`` seconds from now."""
        self.expires_at = _expiry(time.monotonic(), self.read, self.hard_at)

    def detach(self, conn: Any) -> None:
        """``conn`` goes back to the pool: if it is this attempt's, it is someone else's now."""
        if conn is self.conn:
            with self._lock:
                self.conn = None

    def end(self) -> None:
        """The attempt is over: nothing of it may be touched any more."""
        with self._lock:
            self.conn = None

    def fire(self, now: float) -> bool:
        """The timer is due: shut the attempt's socket down, unless the server is still talking.

        Returns False when the timer must stay: not armed yet (connecting has its own timeout),
        or a new expiry, ``read`` seconds after the server's last word.
        """
        with self._lock:
            if self.conn is None:
                return True  # back in the pool, or the attempt ended: nothing to do
            sock = self.sock
            if sock is None:
                return False
            if sock.fileno() < 0:
                return True  # closed: the attempt is ending anyway
            quiet = _quiet_seconds(sock)
            if quiet is not None and self.read is not None and quiet < self.read:
                self.expires_at = _expiry(now - quiet, self.read, self.hard_at)
                if self.expires_at > now:
                    return False
            self.fired = True
            # socket.socket's own shutdown, also for an SSLSocket: its override would drop the
            # TLS state under the thread that is reading. Closed meanwhile is fine.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            return True


def _raw_socket(sock: Any) -> socket.socket:
    """The ``socket.socket`` under ``sock`` (TLS inside TLS wraps one in urllib3's SSLTransport)."""
    while not isinstance(sock, socket.socket):
        sock = sock.socket
    return sock


def _quiet_seconds(sock: socket.socket) -> float | None:
    """Seconds since data last moved either way on ``sock``; None where the kernel cannot tell.

    Either way: while the request is still going out, the server taking it in (the window
    opening, so that our data moves) is its word; once it is all taken in, only an answer is. Sending
    does not count while the kernel is retransmitting: the server is not taking anything in.
    """
    if _TCP_INFO is None:
        return None
    try:
        info = socket.socket.getsockopt(sock, socket.IPPROTO_TCP, _TCP_INFO, 64)
    except OSError:  # not TCP (a Unix socket), or closed
        return None
    if len(info) < _TCP_STATE.size:
        return None
    retransmits: int
    sent_ms: int
    received_ms: int
    retransmits, sent_ms, received_ms = _TCP_STATE.unpack_from(info)
    if retransmits:
        # Data sent again because nothing was acknowledged is no sign of a server.
        return received_ms / 1000
    return min(sent_ms, received_ms) / 1000


def _expiry(now: float, seconds: float | None, hard_at: float | None) -> float:
    soft = None if seconds is None else now + seconds
    if hard_at is None:
        return soft if soft is not None else float("inf")
    return hard_at if soft is None else min(soft, hard_at)


def current() -> Timer | None:
    """The timer of the attempt running on this thread (the pool's hooks attach its connection)."""
    timer: Timer | None = getattr(_current, "timer", None)
    return timer


class _Watchdog:
    """The thread that fires timers whose time has passed, asleep until the earliest is due."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (in a forked child, where the thread did not survive)."""
        self._timers: dict[int, Timer] = {}
        self._wake = threading.Condition(threading.Lock())
        #: When the thread looks next (monotonic); +inf while it is looking, or has no timer to
        #: wait for and no thread runs yet: then every new timer wakes it.
        self._wake_at = _NEVER
        self._thread: threading.Thread | None = None
        #: How many times the thread has looked at the timers (tests check it sleeps).
        self.looks = 0

    def start(self, timer: Timer) -> None:
        """Keep ``timer``'s time from now on; it is this thread's current attempt."""
        self._timers[id(timer)] = timer
        # An API call made on this thread while another's attempt is in flight (a logging
        # handler, a finalizer) must leave that attempt its timer.
        timer.outer = getattr(_current, "timer", None)
        _current.timer = timer
        # Read after the timer is in the dict: either the thread's next look sees the timer,
        # or it set _wake_at to +inf before looking and this wakes it.
        if timer.expires_at < self._wake_at:  # rare: due before the thread's next look
            with self._wake:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="resilient-kube-watchdog", daemon=True
                    )
                    self._thread.start()
                self._wake_at = min(self._wake_at, timer.expires_at)
                self._wake.notify()

    def stop(self, timer: Timer) -> None:
        """The attempt is over: forget it (its connection, if any, is no longer touched)."""
        _current.timer = timer.outer
        timer.outer = None
        timer.end()
        self._timers.pop(id(timer), None)

    @staticmethod
    def _fire(timer: Timer, now: float) -> bool:
        try:
            return timer.fire(now)
        except Exception:
            # The thread keeps every client's time: it must not die of one odd socket. That
            # timer is dropped (a bug, logged): its attempt has no read limit left.
            log.exception("resilient_kube watchdog: cannot check %r", timer.sock)
            return True

    def _run(self) -> None:
        with self._wake:
            while True:
                self._wake_at = _NEVER  # looking: a timer started now wakes the next wait
                self.looks += 1
                now = time.monotonic()
                earliest = _NEVER
                for key, timer in list(self._timers.items()):
                    expires_at = timer.expires_at
                    if expires_at <= now:
                        if self._fire(timer, now):
                            self._timers.pop(key, None)
                            continue
                        # Still connecting (its own timeout), or its server just spoke (a new
                        # expiry): looked at again then, or soon.
                        expires_at = max(timer.expires_at, now + _RECHECK)
                    earliest = min(earliest, expires_at)
                self._wake_at = earliest
                self._wake.wait(None if earliest == _NEVER else max(earliest - now, 0.0))


_watchdog = _Watchdog()


def suspend() -> Timer | None:
    """An attempt with no timer (a stream) runs on this thread: no outer timer is its."""
    outer = current()
    if outer is not None:
        _current.timer = None
    return outer


def resume(outer: Timer | None) -> None:
    """That attempt is over: the outer attempt's timer is the thread's again."""
    if outer is not None:
        _current.timer = outer


def start(timer: Timer) -> None:
    """Keep ``timer``'s time from now on; it is this thread's current attempt."""
    _watchdog.start(timer)


def stop(timer: Timer) -> None:
    """The attempt is over: forget ``timer``."""
    _watchdog.stop(timer)


# The thread does not survive a fork: in the child a new one starts with the next attempt.
os.register_at_fork(after_in_child=_watchdog.reset)
