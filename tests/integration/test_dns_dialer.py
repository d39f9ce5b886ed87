"""Happy Eyeballs dialing (RFC 8305) against real listeners on 127.0.0.1, .2 and .3.

A black-holed address is a listener with a full accept queue: ``listen(0)`` plus one connection
that is never accepted, so the kernel drops further SYNs and a connect just hangs. A refused address
is a port nobody listens on. Nothing outside 127.0.0.0/8 is ever contacted.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from resilient_kube._dialer import create_connection
from resilient_kube._dns import DnsCache
from resilient_kube.testing import FakeDnsServer

HOST = "api.kube.test"
STAGGER = 0.25


class Listeners:
    """Listening sockets on several loopback addresses, all on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self._sockets: list[socket.socket] = []

    def _bind(self, address: str, backlog: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, self.port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        self._sockets.append(sock)
        if not self.port:
            self.port = int(sock.getsockname()[1])
        return sock

    def working(self, address: str) -> None:
        """A listener that completes handshakes (never accepts; the backlog holds them)."""
        self._bind(address, 16)

    def black_hole(self, address: str) -> None:
        """A listener whose accept queue is full: SYNs to it are dropped."""
        self._bind(address, 0)
        filler = socket.create_connection((address, self.port), timeout=2)
        self._sockets.append(filler)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    group = Listeners()
    try:
        # Claim a free port on an address no test dials; the tests bind 127.0.0.1-3 to it too.
        group.working("127.0.0.4")
        yield group
    finally:
        group.close()


@pytest.fixture
def stub() -> Iterator[FakeDnsServer]:
    with FakeDnsServer(ttl=300) as server:
        yield server


@pytest.fixture
def cache(stub: FakeDnsServer) -> Iterator[DnsCache]:
    dns_cache = DnsCache(nameservers=[stub.nameserver], timeout=1.0, hosts_file="/nonexistent")
    yield dns_cache
    dns_cache.close()


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    started = time.monotonic()
    ended: list[float] = []
    try:
        yield lambda: ended[0] - started
    finally:
        ended.append(time.monotonic())


def test_black_holed_first_address_costs_one_stagger(
    listeners: Listeners, stub: FakeDnsServer, cache: DnsCache
) -> None:
    listeners.black_hole("127.0.0.2")
    listeners.working("127.0.0.3")
    stub.set(HOST, "127.0.0.2", "127.0.0.3")
    assert cache.resolve(HOST) == ["127.0.0.2", "127.0.0.3"]
    with timed() as elapsed:
        sock = create_connection(cache, HOST, listeners.port, timeout=5.0, stagger=STAGGER)
    with sock:
        assert sock.getpeername() == ("127.0.0.3", listeners.port)
        # What the dial left of the 5 s, for the TLS handshake that may follow.
        left = sock.gettimeout()
        assert left is not None
        assert 5.0 - elapsed() <= left <= 5.0 - STAGGER * 0.9
    # About one stagger, far from the 5 s connect timeout the sequential stock dialer would spend.
    assert STAGGER * 0.9 <= elapsed() < STAGGER + 0.5
    # The address that lost the race is tried last next time: the next dial is immediate.
    assert cache.resolve(HOST) == ["127.0.0.3", "127.0.0.2"]
    with timed() as elapsed:
        create_connection(cache, HOST, listeners.port, timeout=5.0, stagger=STAGGER).close()
    assert elapsed() < STAGGER


def test_refused_address_starts_the_next_at_once_and_moves_last(
    listeners: Listeners, stub: FakeDnsServer, cache: DnsCache
) -> None:
    listeners.working("127.0.0.3")  # nothing on 127.0.0.1 at this port: refused
    stub.set(HOST, "127.0.0.1", "127.0.0.3")
    with timed() as elapsed:
        sock = create_connection(cache, HOST, listeners.port, timeout=5.0, stagger=STAGGER)
    with sock:
        assert sock.getpeername()[0] == "127.0.0.3"
    assert elapsed() < STAGGER  # RFC 8305 §5: a failure starts the next attempt immediately
    assert cache.resolve(HOST) == ["127.0.0.3", "127.0.0.1"]


def test_all_refused_raises_connection_refused(
    listeners: Listeners, stub: FakeDnsServer, cache: DnsCache
) -> None:
    stub.set(HOST, "127.0.0.1", "127.0.0.2")
    with timed() as elapsed, pytest.raises(ConnectionRefusedError):
        create_connection(cache, HOST, listeners.port, timeout=5.0)
    assert elapsed() < 1.0


def test_all_black_holed_times_out_within_the_connect_timeout(
    listeners: Listeners, stub: FakeDnsServer, cache: DnsCache
) -> None:
    listeners.black_hole("127.0.0.2")
    listeners.black_hole("127.0.0.3")
    stub.set(HOST, "127.0.0.2", "127.0.0.3")
    with timed() as elapsed, pytest.raises(TimeoutError):
        create_connection(cache, HOST, listeners.port, timeout=0.6, stagger=STAGGER)
    assert 0.55 <= elapsed() < 1.2
    assert isinstance(TimeoutError(), socket.timeout)  # what urllib3 catches as a connect timeout


def test_name_failure_raises_gaierror(
    listeners: Listeners, stub: FakeDnsServer, cache: DnsCache
) -> None:
    with pytest.raises(socket.gaierror):
        create_connection(cache, "missing.kube.test", listeners.port, timeout=2.0)


def test_socket_options_and_source_address_are_applied(
    listeners: Listeners, stub: FakeDnsServer, cache: DnsCache
) -> None:
    listeners.working("127.0.0.3")
    stub.set(HOST, "127.0.0.3")
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    sock = create_connection(
        cache,
        HOST,
        listeners.port,
        timeout=None,
        source_address=("127.0.0.1", 0),
        socket_options=options,
    )
    with sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.gettimeout() is None


@pytest.mark.parametrize("host", ["127.0.0.3", "localhost"])
def test_without_a_cache_getaddrinfo_is_used(listeners: Listeners, host: str) -> None:
    listeners.working("127.0.0.3")
    listeners.working("127.0.0.1")
    with create_connection(None, host, listeners.port, timeout=2.0) as sock:
        assert sock.getpeername()[0] in {"127.0.0.1", "127.0.0.3"}


def test_ipv6_loopback_literal(listeners: Listeners, cache: DnsCache) -> None:
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server, create_connection(cache, "[::1]", server.getsockname()[1], timeout=2.0) as sock:
        assert sock.family == socket.AF_INET6
