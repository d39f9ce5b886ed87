"""Connect to the first address that answers, Happy Eyeballs style (RFC 8305).

The stock path (``urllib3.util.connection.create_connection``) tries the addresses one after the
other, each with the full connect timeout: when the first address of an API server black-holes SYNs,
every new connection waits ``connect_timeout`` before it tries the second. Here the next address is
started ``stagger`` seconds (RFC 8305 §5 "Connection Attempt Delay", 250 ms recommended) after the
previous one, or at once when the previous one fails; the first to connect wins and the others are
closed. The whole dial, DNS included, is bounded by the connect timeout: the lookup may take only
what the timeout leaves, and the connects get what the lookup left.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from ._dns import DnsCache, LookupTimeout, interleave

__all__ = ["create_connection"]

#: RFC 8305 §5: "A simple implementation can have a fixed delay ... 250 ms", at least 100 ms.
DEFAULT_STAGGER = 0.25

_Address = tuple[int, tuple[str, int] | tuple[str, int, int, int]]
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY}


def create_connection(
    cache: DnsCache | None,
    host: str,
    port: int,
    *,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
    socket_options: Sequence[tuple[int, int, int | bytes]] | None = None,
    stagger: float = DEFAULT_STAGGER,
) -> socket.socket:
    """Resolve ``host`` and connect to one of its addresses, racing them RFC 8305 style.

    Args:
        cache: the DNS cache, or None for ``socket.getaddrinfo`` on every call (the stock client).
        host: a name or an IP literal (brackets allowed).
        port: the TCP port.
        timeout: seconds for the whole dial (name resolution included); None waits for the
            operating system. The connected socket keeps what the dial left of it, so that what
            follows before the request (a proxy's ``CONNECT``, the TLS handshake) fits in it too.
        source_address: ``(ip, port)`` to bind before connecting.
        socket_options: ``(level, option, value)`` set before connecting (urllib3's
            ``socket_options``, e.g. ``TCP_NODELAY`` and keepalive).
        stagger: seconds to wait for an attempt before starting the next address.

    Raises:
        socket.gaierror: the name did not resolve.
        LookupTimeout: the name did not resolve within ``timeout`` (a ``TimeoutError``).
        TimeoutError: no address connected within ``timeout`` (``socket.timeout`` is this class).
        OSError: every address failed; the last error is raised (e.g. ``ConnectionRefusedError``).
    """
    if timeout is not None and not isinstance(timeout, int | float):
        # urllib3's _DEFAULT_TIMEOUT sentinel: the process-wide socket default, as urllib3 does.
        timeout = socket.getdefaulttimeout()
    started = time.monotonic()
    deadline = math.inf if timeout is None else started + timeout
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    candidates = _resolve(cache, host, port, timeout)
    if not candidates:  # Defensive: getaddrinfo never returns an empty list
        raise OSError("getaddrinfo returns an empty list")

    pending = list(candidates)
    attempts: dict[socket.socket, str] = {}
    failed: list[str] = []
    last_error: OSError | None = None
    next_start = started
    selector: selectors.BaseSelector | None = None  # only once two attempts race
    winner: socket.socket | None = None
    timed_out = False
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if pending and (not attempts or now >= next_start):
                family, sockaddr = pending.pop(0)
                address = sockaddr[0]
                # Nothing else in flight: a plain blocking connect, for up to one stagger (or
                # all the time left for the last address), is the cheap common case.
                block = (
                    None
                    if attempts
                    else (min(stagger, deadline - now) if pending else deadline - now)
                )
                try:
                    sock, connected = _start(
                        family, sockaddr, source_address, socket_options, block=block
                    )
                except OSError as exc:
                    last_error = exc
                    failed.append(address)
                    continue  # RFC 8305 §5: a failed attempt starts the next one at once
                attempts[sock] = address
                if connected:
                    winner = sock
                    break
                if selector is None:
                    selector = selectors.DefaultSelector()
                selector.register(sock, selectors.EVENT_WRITE)
                next_start = now + stagger
                continue
            if not attempts or selector is None:
                break  # every address failed
            wait = deadline - now
            if pending:
                wait = min(wait, next_start - now)
            for key, _ in selector.select(None if math.isinf(wait) else max(wait, 0.0)):
                sock = key.fileobj  # type: ignore[assignment]
                selector.unregister(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    winner = sock
                    break
                last_error = _os_error(err)
                failed.append(attempts.pop(sock))
                sock.close()
                next_start = time.monotonic()
            if winner is not None:
                break
    finally:
        if selector is not None:
            selector.close()
        for sock, address in attempts.items():
            if sock is not winner:
                sock.close()
                # Lost the race to an address started later, or ran out of time: try it last.
                failed.append(address)
        if cache is not None:
            for address in failed:
                cache.report_failure(host, address)

    if winner is not None:
        if cache is not None:
            cache.report_success(host, attempts[winner])
        # urllib3 keeps the connect timeout on the socket for the TLS handshake: a full one after
        # a slow lookup would let the connect phase, and the call's deadline, overrun.
        winner.settimeout(None if math.isinf(deadline) else max(deadline - time.monotonic(), 0.001))
        return winner
    if timed_out or last_error is None:
        raise TimeoutError(f"timed out connecting to {host}:{port} after {timeout} s")
    raise last_error


def _resolve(cache: DnsCache | None, host: str, port: int, timeout: float | None) -> list[_Address]:
    """The addresses to try, looked up within ``timeout`` seconds (None: as long as it takes)."""
    if cache is None:
        # The stock path: urllib3's allowed_gai_family() asks for IPv4 only without IPv6 support.
        wanted = socket.AF_UNSPEC if socket.has_ipv6 else socket.AF_INET
        infos = _getaddrinfo(host, port, wanted, timeout)
        by_address: dict[str, _Address] = {}
        for family, _, _, _, sockaddr in infos:
            if isinstance(sockaddr[0], str):  # Defensive: AF_INET and AF_INET6 only
                by_address.setdefault(sockaddr[0], (int(family), sockaddr))
        return [by_address[a] for a in interleave(list(by_address))]
    out: list[_Address] = []
    for address in cache.resolve(host, timeout):
        if ":" in address:
            out.append((socket.AF_INET6, (address, port, 0, 0)))
        else:
            out.append((socket.AF_INET, (address, port)))
    return out


def _getaddrinfo(
    host: str, port: int, family: int, timeout: float | None
) -> list[tuple[int, int, int, str, tuple[str, int] | tuple[str, int, int, int]]]:
    """``socket.getaddrinfo``, given up on after ``timeout`` seconds.

    getaddrinfo cannot be interrupted (glibc waits out resolv.conf's ``timeout`` and
    ``attempts``), so with a limit it runs on a thread of its own, which this call stops waiting
    for; the thread ends when glibc gives up. An IP literal needs no lookup and no thread.
    """
    if timeout is None or _is_literal(host):
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)  # type: ignore[return-value]
    outcome: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller, which raises it
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="resilient_kube-getaddrinfo", daemon=True).start()
    if not done.wait(max(timeout, 0.0)):
        raise LookupTimeout(f"the DNS lookup of {host!r} did not finish within {timeout:.3g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[no-any-return]


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])  # a scope id: fe80::1%eth0
    except ValueError:
        return False
    return True


def _start(
    family: int,
    sockaddr: tuple[str, int] | tuple[str, int, int, int],
    source_address: tuple[str, int] | None,
    socket_options: Sequence[tuple[int, int, int | bytes]] | None,
    *,
    block: float | None,
) -> tuple[socket.socket, bool]:
    """Open a socket and connect: (socket, connected yet); the socket is left non-blocking.

    ``block`` None starts the connect without waiting; a number waits up to that many seconds
    (``inf``: as long as it takes) and leaves the connect in progress if it did not finish.

    Raises:
        OSError: the attempt failed at once (e.g. ``ENETUNREACH`` for IPv6 without a route).
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        for level, option, value in socket_options or ():
            sock.setsockopt(level, option, value)
        if source_address is not None:
            sock.bind(source_address)
        if block is not None and block > 0:
            sock.settimeout(None if math.isinf(block) else block)
            try:
                sock.connect(sockaddr)
            except TimeoutError:  # still connecting in the kernel; the race takes it from here
                sock.setblocking(False)
                return sock, False
            return sock, True
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err and err not in _IN_PROGRESS:
            raise _os_error(err)
    except BaseException:
        sock.close()
        raise
    return sock, err == 0


def _os_error(err: int) -> OSError:
    """``OSError(err)`` as its specific subclass, e.g. ``ConnectionRefusedError``."""
    return OSError(err, os.strerror(err))
