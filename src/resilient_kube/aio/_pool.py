"""The asyncio client's connection pool: aiohttp's ``TCPConnector``, sized and counted.

Built like the stock ``RESTClientObject._create_connector`` of ``kubernetes.aio`` (its TLS
context and ``tcp_connector_limit_per_host``), with what the sync client's pool has: ``pool_maxsize``
connections, idle expiry after ``pool_idle_timeout``, TCP keepalive and ``TCP_USER_TIMEOUT`` on
every socket (``_connection.socket_options``), and the DNS cache as the resolver. As the sync
pools do, it reports every connection opened, reused and retired to the client's event sink, and
retires a pooled connection whose address has left the DNS answer instead of reusing it, so
traffic follows DNS, and tells the DNS cache which addresses failed to connect, so they are tried
last next time.

It also owns the end of every connection it opened. aiohttp closes a connection it does not
pool (a stream given up, ``Connection: close``, an answer cut short) with ``transport.close()``,
which on TLS starts the shutdown handshake (close_notify, then wait for the peer's) and forgets
the connection: ``connector.close()`` only aborts the pooled and lent ones. When the event loop
ended before the peer answered (``asyncio.run`` returning right after ``await api.close()``,
say), the socket under the TLS layer was left open and collected later with a ResourceWarning.
``close()`` now aborts every connection whose end has not come yet and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from .._connection import socket_options
from .._dns import DnsCache
from .._events import EventSink
from .._settings import Settings
from ._resolver import CachedResolver

__all__ = ["make_connector"]

#: How long ``close()`` waits for aborted connections to report their end (a few loop turns).
_CLOSE_WAIT = 1.0


class _ReportingConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that reports the connections it opens, reuses and retires, retires
    the pooled ones whose address left the DNS answer, and closes every one of them for good in
    ``close()``.

    Reported here rather than with an aiohttp ``TraceConfig``: traces cost every request about
    30 us of signal dispatch.
    """

    def __init__(self, *, events: EventSink, dns: DnsCache | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rk_events = events
        self._rk_dns = dns
        #: Every connection opened whose protocol is alive, with the transport it was opened on
        #: (the protocol forgets it on close). An entry goes when its protocol is collected,
        #: which its transport prevents until the connection has ended.
        self._rk_open: weakref.WeakKeyDictionary[ResponseHandler, asyncio.Transport] = (
            weakref.WeakKeyDictionary()
        )

    async def _get(self, key: Any, traces: Any) -> aiohttp.connector.Connection | None:
        host = f"{key.host}:{key.port}"
        while True:
            connection = await super()._get(key, traces)
            if connection is None:
                return None  # none pooled: a new one is opened
            # Through a proxy the peer is the proxy, not an address of the API server's name.
            if key.proxy is not None or self._follows_dns(key.host, connection):
                self._rk_events.connection(host, "reused")
                return connection
            connection.close()  # its address left the answer: the next one, or a new one
            self._rk_events.connection(host, "retired")

    def _follows_dns(self, host: str, connection: aiohttp.connector.Connection) -> bool:
        """Whether a pooled connection's peer is still in the DNS answer for ``host``."""
        dns = self._rk_dns
        transport = connection.transport
        if dns is None or transport is None:
            return True
        peer = transport.get_extra_info("peername")
        return not peer or dns.is_current(host, str(peer[0]))

    async def _wrap_create_connection(
        self, *args: Any, addr_infos: list[Any], req: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        """Connect to the first of ``addr_infos`` that answers; the DNS cache learns which failed.

        aiohappyeyeballs starts the addresses in the order given (the cache's), one stagger
        apart: those before the one that connected failed or were still connecting, and are
        tried last next time, as by the sync dialer. When none connected, all are.
        """
        dns = self._rk_dns
        if dns is None:
            return await super()._wrap_create_connection(
                *args, addr_infos=addr_infos, req=req, **kwargs
            )
        # The name aiohttp looked up: through a proxy, the proxy's (the key of these addresses).
        name = req.url.raw_host
        order = [info[4][0] for info in addr_infos]
        try:
            transport, protocol = await super()._wrap_create_connection(
                *args, addr_infos=addr_infos, req=req, **kwargs
            )
        except aiohttp.ClientSSLError:
            raise  # connected: the TLS handshake failed, not the address
        except Exception:
            for address in order:
                dns.report_failure(name, address)
            raise
        peer = transport.get_extra_info("peername")
        if peer and peer[0] in order:
            for address in order[: order.index(peer[0])]:
                dns.report_failure(name, address)
            dns.report_success(name, peer[0])
        return transport, protocol

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> ResponseHandler:
        protocol = await super()._create_connection(req, traces, timeout)
        self._rk_events.connection(f"{req.host}:{req.port}", "opened")
        if protocol.transport is not None:
            self._rk_open[protocol] = protocol.transport
        return protocol

    async def close(self, *args: Any, **kwargs: Any) -> None:
        """Close the pool, then abort and wait for the connections still ending (see above)."""
        opened = list(self._rk_open.items())
        self._rk_open.clear()
        ending: list[asyncio.Future[None]] = []
        try:
            await super().close(*args, **kwargs)
        finally:  # cancelled or not, nothing stays open
            for protocol, transport in opened:
                # None: connection_lost came already (and nobody asked for the future before).
                closed = protocol.closed
                if closed is not None and not closed.done():
                    transport.abort()  # its end comes in the next turns of the loop
                    ending.append(closed)
        if ending:
            # A connection lost with an error sets its future's exception: taken, not raised.
            # The bound only guards against a transport that never reports its end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await asyncio.gather(*ending, return_exceptions=True)


def make_connector(
    settings: Settings,
    dns: DnsCache | None,
    *,
    ssl: Any,
    limit_per_host: int | None,
    events: EventSink,
) -> aiohttp.TCPConnector:
    """The pool, made in the running loop (aiohttp connectors belong to one).

    Args:
        settings: the client's settings.
        dns: the client's DNS cache, or None for the system resolver (aiohttp's threaded one).
        ssl: the REST layer's TLS context (its CA, client certificate and verification).
        limit_per_host: ``tcp_connector_limit_per_host`` of the configuration, if any.
        events: the client's event sink (``connection``: opened, reused, retired).
    """
    options = socket_options(settings)

    def make_socket(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, kind, proto)
        try:
            for level, name, value in options:
                sock.setsockopt(level, name, value)
        except OSError:
            sock.close()
            raise
        return sock

    kwargs: dict[str, Any] = {
        "limit": settings.pool_maxsize,
        "ssl": ssl,
        # None: a pooled connection never expires from idling alone, as pool_idle_timeout=None.
        "keepalive_timeout": settings.pool_idle_timeout,
        "socket_factory": make_socket,
    }
    if limit_per_host is not None:
        kwargs["limit_per_host"] = limit_per_host
    if dns is not None:
        # One cache with one set of rules: aiohttp's own (10 s, no negative caching) is off.
        kwargs["resolver"] = CachedResolver(dns)
        kwargs["use_dns_cache"] = False
    return _ReportingConnector(events=events, dns=dns, **kwargs)
