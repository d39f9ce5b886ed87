"""The watchdog's watches: when one shuts a connection down, and when it must not."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from resilient_kube import _watchdog
from resilient_kube._watchdog import Watch


@dataclass
class Connection:
    sock: socket.socket | None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


def test_a_watch_waits_for_its_connection() -> None:
    watch = Watch(read=1.0, hard_at=None)
    assert not watch.fire(time.monotonic())  # no connection yet: try again next tick
    watch.attach(Connection(sock=None))
    assert not watch.fire(time.monotonic())  # still connecting: connect has its own timeout
    assert not watch.fired


def test_firing_shuts_the_socket_down(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    watch = Watch(read=1.0, hard_at=None)
    watch.attach(Connection(sock=ours))
    assert watch.fire(time.monotonic())
    assert watch.fired
    assert ours.recv(1) == b""  # a blocked recv would have woken with this
    assert theirs.recv(1) == b""


def test_a_detached_connection_is_never_touched(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    watch = Watch(read=1.0, hard_at=None)
    watch.attach(Connection(sock=ours))
    watch.detach()  # back in the pool: another attempt may hold it now
    assert watch.fire(time.monotonic())  # nothing left to do
    assert not watch.fired
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x"


def test_the_deadline_caps_every_read_time() -> None:
    now = time.monotonic()
    assert Watch(read=None, hard_at=None).expires_at == float("inf")
    assert Watch(read=None, hard_at=now + 2).expires_at == now + 2
    capped = Watch(read=30.0, hard_at=now + 2)
    assert capped.expires_at == now + 2
    capped.extend_to(30.0)
    assert capped.expires_at == now + 2
    free = Watch(read=1.0, hard_at=None)
    assert now + 1 <= free.expires_at <= time.monotonic() + 1
    free.extend_to(5.0)
    assert free.expires_at >= now + 5


def test_the_watchdog_wakes_a_blocked_recv(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    watch = Watch(read=0.2, hard_at=None)
    _watchdog.start(watch)
    watch.attach(Connection(sock=ours))
    try:
        began = time.monotonic()
        assert ours.recv(1) == b""  # blocks until the watchdog shuts the socket down
        assert 0.2 <= time.monotonic() - began < 0.2 + 1.0
        assert watch.fired
    finally:
        _watchdog.stop(watch)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    with ours, theirs:
        yield ours, theirs


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="the kernel's TCP_INFO is Linux's")
def test_a_server_that_just_spoke_gets_more_time(tcp_pair: tuple[socket.socket, ...]) -> None:
    ours, theirs = tcp_pair
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x"
    now = time.monotonic()
    talking = Watch(read=5.0, hard_at=None)
    talking.attach(Connection(sock=ours))
    talking.expires_at = now  # due
    assert not talking.fire(now)
    assert not talking.fired
    assert talking.expires_at > now + 4  # read seconds from its last word
    # The deadline is never extended, however talkative the server.
    bounded = Watch(read=5.0, hard_at=now)
    bounded.attach(Connection(sock=ours))
    assert bounded.fire(now)
    assert bounded.fired
