"""The watchdog's watches: when one shuts a connection down, and when it must not."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from resilient_kube import _watchdog
from resilient_kube._watchdog import Timer


@dataclass
class Connection:
    sock: object | None


@dataclass
class Wrapped:
    """Like urllib3's SSLTransport (TLS inside TLS): not a socket, but holds one."""

    socket: socket.socket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    with ours, theirs:
        yield ours, theirs


def armed(sock: object, read: float | None = 1.0, hard_at: float | None = None) -> Timer:
    watch = Timer(read=read, hard_at=hard_at)
    watch.attach(Connection(sock=sock))
    watch.arm(sock)
    return watch


def test_a_watch_waits_until_it_is_armed(pair: tuple[socket.socket, socket.socket]) -> None:
    watch = Timer(read=1.0, hard_at=None)
    now = time.monotonic() + 10
    assert not watch.fire(now)  # no connection yet: try again next tick
    watch.attach(Connection(sock=pair[0]))
    assert not watch.fire(now)  # connecting (TLS, a proxy's CONNECT): the connect timeout's job
    assert not watch.fired


def test_firing_shuts_the_socket_down(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    watch = armed(ours)
    assert watch.fire(time.monotonic())
    assert watch.fired
    assert ours.recv(1) == b""  # a blocked recv would have woken with this
    assert theirs.recv(1) == b""


def test_the_socket_under_a_tls_in_tls_wrapper_is_shut(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    watch = armed(Wrapped(ours))
    assert watch.sock is ours
    assert watch.fire(time.monotonic())
    assert ours.recv(1) == b""


def test_a_connection_back_in_the_pool_is_never_touched(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    watch = armed(ours)
    watch.detach(watch.conn)  # back in the pool: another attempt may hold it now
    assert watch.fire(time.monotonic())  # nothing left to do
    assert not watch.fired
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x"


def test_only_the_attempts_own_connection_detaches_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # Another response released on this thread (a finalizer, say) is not this attempt's.
    ours, _ = pair
    watch = armed(ours)
    mine = watch.conn
    watch.attach(Connection(sock=None))  # a second checkout does not replace the first
    watch.detach(Connection(sock=None))
    assert watch.conn is mine
    assert watch.fire(time.monotonic())
    assert watch.fired


def test_a_closed_socket_ends_the_watch(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    watch = armed(ours)
    ours.close()
    assert watch.fire(time.monotonic())
    assert not watch.fired


def test_the_deadline_caps_every_read_time() -> None:
    now = time.monotonic()
    assert Timer(read=None, hard_at=None).expires_at == float("inf")
    assert Timer(read=None, hard_at=now + 2).expires_at == now + 2
    capped = Timer(read=30.0, hard_at=now + 2)
    assert capped.expires_at == now + 2
    capped.restart()
    assert capped.expires_at == now + 2
    free = Timer(read=1.0, hard_at=None)
    assert now + 1 <= free.expires_at <= time.monotonic() + 1
    later = time.monotonic()
    free.restart()  # read seconds again, from now
    assert later + 1 <= free.expires_at <= time.monotonic() + 1


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="the kernel's TCP_INFO is Linux's")
def test_a_server_that_just_spoke_gets_more_time(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = tcp_pair
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x"
    now = time.monotonic()
    talking = armed(ours, read=5.0)
    talking.expires_at = now  # due
    assert not talking.fire(now)
    assert not talking.fired
    assert talking.expires_at > now + 4  # read seconds from its last word
    # The deadline is never extended, however talkative the server.
    bounded = armed(ours, read=5.0, hard_at=now)
    assert bounded.fire(now)
    assert bounded.fired


def test_the_watchdog_wakes_a_blocked_recv(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    watch = Timer(read=0.2, hard_at=None)
    _watchdog.start(watch)
    try:
        watch.attach(Connection(sock=ours))
        watch.arm(ours)
        began = time.monotonic()
        assert ours.recv(1) == b""  # blocks until the watchdog shuts the socket down
        assert 0.2 <= time.monotonic() - began < 0.2 + 1.0
        assert watch.fired
    finally:
        _watchdog.stop(watch)


def test_a_call_nested_on_the_same_thread_leaves_the_outer_attempt_its_watch() -> None:
    # An API call from a logging handler or a finalizer, in the middle of another attempt.
    outer, inner = Timer(read=1.0, hard_at=None), Timer(read=1.0, hard_at=None)
    _watchdog.start(outer)
    try:
        _watchdog.start(inner)
        assert _watchdog.current() is inner
        _watchdog.stop(inner)
        assert _watchdog.current() is outer
    finally:
        _watchdog.stop(outer)
    assert _watchdog.current() is None


def test_an_unwatched_attempt_nested_on_the_thread_is_not_the_outer_ones() -> None:
    # A stream opened mid-attempt must not attach or arm the interrupted attempt's watch.
    outer = Timer(read=1.0, hard_at=None)
    _watchdog.start(outer)
    try:
        suspended = _watchdog.suspend()
        assert suspended is outer
        assert _watchdog.current() is None
        _watchdog.resume(suspended)
        assert _watchdog.current() is outer
    finally:
        _watchdog.stop(outer)


def test_a_timer_due_sooner_wakes_the_sleeping_watchdog(
    pair: tuple[socket.socket, socket.socket], tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    # The thread sleeps until the earliest timer (30 s away); a 0.2 s one must not wait that long.
    slow = Timer(read=30.0, hard_at=None)
    _watchdog.start(slow)
    try:
        slow.attach(Connection(sock=tcp_pair[0]))
        slow.arm(tcp_pair[0])
        quick = Timer(read=0.2, hard_at=None)
        _watchdog.start(quick)
        try:
            quick.attach(Connection(sock=pair[0]))
            quick.arm(pair[0])
            began = time.monotonic()
            assert pair[0].recv(1) == b""  # shut down by the watchdog
            assert 0.2 <= time.monotonic() - began < 0.2 + 1.0
            assert quick.fired
            assert not slow.fired
        finally:
            _watchdog.stop(quick)
    finally:
        _watchdog.stop(slow)


def test_the_watchdog_sleeps_while_attempts_come_and_go() -> None:
    # Attempts share the read timeout: each new timer is due after the earliest one, so starting
    # and stopping it wakes nobody (the thread once looked every 10 ms, at a cost on every call).
    pinned = Timer(read=30.0, hard_at=None)
    _watchdog.start(pinned)
    try:
        looks = _watchdog._watchdog.looks
        began = time.monotonic()
        while time.monotonic() - began < 0.1:  # a busy client, for ten of the old ticks
            timer = Timer(read=30.0, hard_at=None)
            _watchdog.start(timer)
            timer.restart()
            _watchdog.stop(timer)
        # At most the look that starting ``pinned`` asked for, had it not happened yet.
        assert _watchdog._watchdog.looks - looks <= 1
    finally:
        _watchdog.stop(pinned)
