"""Connection pools and connections: DNS-cached connect, socket options, idle expiry.

The official client builds a urllib3 ``PoolManager`` (or ``ProxyManager``) from its
``Configuration``. resilient_kube keeps that manager, so TLS and proxy settings are applied exactly
as ``kubernetes`` applies them, and swaps in the pool classes below. They add three things:

* connect through the DNS cache and the multi-address dialer (``_dialer.create_connection``);
* close a pooled connection that idled past ``pool_idle_timeout`` before reusing it, so that a
  load balancer's silent idle cut-off never eats a request;
* close a pooled connection whose address has left the DNS answer, so traffic follows DNS.

In a forked child, the manager lets go of every pooled connection (``forget_pools``): they are
the parent's, and two processes writing requests on one connection would garble both.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
import urllib3.connection
import urllib3.exceptions as u3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import _fork
from ._dialer import create_connection
from ._dns import DnsCache, LookupTimeout
from ._events import EventSink
from ._headers import HTTPResponse
from ._settings import Settings
from ._watchdog import current as current_watch

__all__ = ["PoolContext", "forget_pools", "install_pools", "socket_options"]


@dataclass(frozen=True, slots=True)
class PoolContext:
    """What every pool and connection of one client shares."""

    settings: Settings
    #: The client's event sink: connections opened, reused, expired and retired go there.
    events: EventSink
    dns: DnsCache | None
    clock: Callable[[], float] = time.monotonic


def socket_options(settings: Settings) -> list[tuple[int, int, int]]:
    """urllib3's defaults (TCP_NODELAY) plus keepalive and TCP_USER_TIMEOUT.

    A dead peer is then noticed in ``keepalive_idle + keepalive_interval * keepalive_count``
    seconds when idle, and in ``tcp_user_timeout`` when data is unacknowledged, instead of the
    kernel's 2 hours and ~15 minutes. Options the platform lacks are left out.
    """
    options: list[tuple[int, int, int]] = list(
        urllib3.connection.HTTPConnection.default_socket_options
    )
    if settings.keepalive_idle is not None:
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for name, value in (
            ("TCP_KEEPIDLE", settings.keepalive_idle),
            ("TCP_KEEPINTVL", settings.keepalive_interval),
            ("TCP_KEEPCNT", settings.keepalive_count),
        ):
            if hasattr(socket, name):
                options.append((socket.IPPROTO_TCP, getattr(socket, name), max(1, round(value))))
    if settings.tcp_user_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
        milliseconds = max(1, round(settings.tcp_user_timeout * 1000))
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds))
    return options


class _ConnectionMixin:
    """Open the socket through the DNS cache and remember the address it reached."""

    rk_context: PoolContext
    #: http.client's response, its headers parsed without the email package (``_headers``).
    response_class: type[http.client.HTTPResponse] = HTTPResponse
    rk_address: str | None = None
    rk_released_at: float = 0.0
    #: The pool's ``rk_generation`` when this connection was (re)connected.
    rk_generation: int = 0

    # Attributes of urllib3's HTTPConnection that this mixin reads.
    sock: socket.socket | None
    _dns_host: str
    host: str
    port: int
    timeout: float | None
    source_address: tuple[str, int] | None
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        # The same exception mapping as urllib3's own HTTPConnection._new_conn.
        context = self.rk_context
        try:
            sock = create_connection(
                context.dns,
                self._dns_host,
                self.port,
                timeout=self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
            address = _peer_address(sock)
        except socket.gaierror as exc:
            raise u3.NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        except LookupTimeout as exc:
            # The connect timeout ran out while the name was still being looked up: a timeout
            # (retried for every verb, nothing was sent), not an answer about the name.
            raise u3.ConnectTimeoutError(
                self, f"Resolving {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except TimeoutError as exc:
            raise u3.ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise u3.NewConnectionError(
                self,  # type: ignore[arg-type]
                f"Failed to establish a new connection: {exc}",
            ) from exc
        self.rk_address = address
        context.events.connection(f"{self.host}:{self.port}", "opened")
        return sock

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        except TimeoutError as exc:
            # TCP is up (``_new_conn`` maps its own timeout): the TLS handshake or a proxy's
            # CONNECT stalled. Still the connect phase: nothing was sent, so every verb may repeat
            # it, and the limit that ran out is the connect timeout (urllib3 would call it a read
            # timeout quoting the connect value).
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            raise u3.ConnectTimeoutError(
                self,
                f"TLS handshake with {self.host} timed out. (connect timeout={self.timeout})",
            ) from exc
        watch = current_watch()
        if watch is not None and self.sock is not None:
            # Connected (a proxy's CONNECT and TLS included, under the connect timeout): from
            # here the watchdog keeps the time, and the socket blocks. (A plain-HTTP connection
            # is made by http.client as the request starts to go out.)
            self.timeout = None
            self.sock.settimeout(None)
            watch.arm(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch = current_watch()
        if watch is None:
            super().request(*args, **kwargs)  # type: ignore[misc]
            return
        if self.sock is not None:
            # A pooled connection: send on a blocking socket under the watchdog (urllib3 would
            # set the connect timeout, a poll() before every send).
            self.timeout = None
            watch.arm(self.sock)
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        finally:
            watch.restart()  # sent: the server's time to answer starts now


def _peer_address(sock: socket.socket) -> str:
    """The address ``sock`` connected to.

    Raises:
        OSError: reset between the handshake and now (a server going down with connections
            still in its accept queue); the socket, nobody's yet, is closed.
    """
    try:
        return str(sock.getpeername()[0])
    except OSError:
        sock.close()
        raise


class ResilientHTTPConnection(_ConnectionMixin, urllib3.connection.HTTPConnection):
    """A plain HTTP connection that connects through the DNS cache."""


class ResilientHTTPSConnection(_ConnectionMixin, urllib3.connection.HTTPSConnection):
    """A TLS connection: connects to the resolved address, verifies and sends SNI for the name."""


class _PoolMixin:
    """Stamp connections on release; expire or retire stale ones at checkout.

    Mixed in before urllib3's pool classes, so ``super()`` reaches them.
    """

    rk_context: PoolContext
    #: Whether this pool's host is a name the DNS cache answers for (not an IP literal).
    rk_follows_dns: bool
    rk_host: str
    port: int | None
    #: Raised when the client certificate, key or CA files change (``_credentials``): a pooled
    #: connection made before is closed at checkout and connects again with the new files.
    rk_generation: int = 0
    host: str

    def __init__(self, *args: Any, rk_context: PoolContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rk_context = rk_context
        #: ``host:port``, the label of this pool's connection events.
        self.rk_host = f"{self.host}:{self.port}"
        self.rk_follows_dns = rk_context.dns is not None and not _is_ip_literal(self.host)

    def _new_conn(self) -> Any:
        conn = super()._new_conn()  # type: ignore[misc]
        conn.rk_context = self.rk_context
        return conn

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        watch = current_watch()
        if watch is not None:
            watch.attach(conn)
        context = self.rk_context
        generation = self.rk_generation
        if conn.sock is None:  # new, or dropped and reset by urllib3: it will connect afresh
            conn.rk_generation = generation
            return conn
        idle_timeout = context.settings.pool_idle_timeout
        if idle_timeout is not None and context.clock() - conn.rk_released_at > idle_timeout:
            conn.close()
            context.events.connection(self.rk_host, "expired")
        elif conn.rk_generation != generation or (
            self.rk_follows_dns
            and conn.rk_address is not None
            and context.dns is not None
            and not context.dns.is_current(conn._dns_host, conn.rk_address)
        ):
            conn.close()
            context.events.connection(self.rk_host, "retired")
        else:
            context.events.connection(self.rk_host, "reused")
        conn.rk_generation = generation  # reused as it is, or connecting afresh
        return conn

    def _put_conn(self, conn: Any) -> None:
        watch = current_watch()
        if watch is not None:
            # Before the pool has it back: the watchdog must never shut down a connection
            # that another attempt has taken.
            watch.detach(conn)
        if conn is not None:
            conn.rk_released_at = self.rk_context.clock()
        super()._put_conn(conn)  # type: ignore[misc]


class ResilientHTTPConnectionPool(_PoolMixin, HTTPConnectionPool):
    ConnectionCls = ResilientHTTPConnection


class ResilientHTTPSConnectionPool(_PoolMixin, HTTPSConnectionPool):
    ConnectionCls = ResilientHTTPSConnection


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def install_pools(
    manager: urllib3.PoolManager, context: PoolContext, *, keep_socket_options: bool
) -> bool:
    """Retune a pool manager built by ``kubernetes`` and give it resilient_kube's pool classes.

    ``keep_socket_options``: the user set ``Configuration.socket_options``; theirs win.

    SOCKS proxies keep urllib3's SOCKS pools: the proxy resolves names there, so the DNS cache
    has nothing to do, but the socket options, pool size and timeouts still apply.

    Returns whether the pools are resilient_kube's, whose hooks let the watchdog find the
    connection of an attempt (``_watchdog``); SOCKS pools keep socket timeouts instead.
    """
    settings = context.settings
    _fork.register(manager, forget_pools)
    pool_kw = manager.connection_pool_kw
    pool_kw["maxsize"] = settings.pool_maxsize
    pool_kw["block"] = False
    pool_kw["retries"] = False  # exactly one retry layer: ours
    if not keep_socket_options:
        pool_kw["socket_options"] = socket_options(settings)
    if manager.pool_classes_by_scheme.get("http") is not HTTPConnectionPool:
        return False  # SOCKSProxyManager: keep its SOCKS pool classes
    # PoolManager only calls these as pool_cls(host, port, **kw): a partial binds the context.
    manager.pool_classes_by_scheme = {
        "http": functools.partial(ResilientHTTPConnectionPool, rk_context=context),  # type: ignore[dict-item]
        "https": functools.partial(ResilientHTTPSConnectionPool, rk_context=context),  # type: ignore[dict-item]
    }
    return True


def forget_pools(manager: urllib3.PoolManager) -> None:
    """In a forked child: drop every pool of ``manager`` and the parent's connections in them.

    The child's copy of each pooled socket is closed, which leaves the parent's connection
    as it was: nothing is sent (``close()`` sends no TLS close_notify and no shutdown).
    The pools are closed as ``PoolManager.clear`` closes them, so the transport's remembered
    route lets go too, and the next request opens a new pool and a new connection. No lock the
    parent's threads may have held at the fork is taken: the container gets a new one, and the
    pools' queues are read directly.
    """
    pools = manager.pools
    pools.lock = threading.RLock()
    for key in pools.keys():  # noqa: SIM118  (the container refuses iteration)
        pool = pools[key]
        queue, pool.pool = pool.pool, None  # closed: urllib3 never takes from it again
        for conn in list(queue.queue) if queue is not None else ():
            if conn is not None:
                conn.close()
    pools.clear()
