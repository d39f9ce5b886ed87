"""A name that only the resolver's search list resolves, through the DNS cache.

``DnsCache`` never expands a name through the search list: a pod's ``ndots:5`` would turn each
lookup into up to eight queries. But a kubeconfig inside a pod may say
``https://kubernetes.default.svc``, which only resolves as ``kubernetes.default.svc.cluster.local``,
and the stock client (glibc) resolves it. ``SearchingDnsCache`` resolves such a name once the way
resolv.conf(5) would, and remembers which full name answered:

* a name with a trailing dot, an IP literal, or at least ``ndots`` dots is looked up as it is;
* any other name is tried as it is first (absolute), then with each search domain in order, and
  the first that answers wins;
* the winner is remembered, so later connections look up only the winner, which the cache keeps
  for its TTL: one query per TTL, not one walk per connection. When the winner stops resolving
  (NXDOMAIN), the walk runs again.

Only resolution changes: the connection keeps the configured name, so TLS still verifies it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import dns.resolver

from ._dns import DnsCache, LookupTimeout

__all__ = ["SearchingDnsCache", "system_search"]


def system_search() -> tuple[tuple[str, ...], int]:
    """The search domains and ``ndots`` of /etc/resolv.conf (none and 1 when there is none)."""
    try:
        resolver = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration:
        return (), 1
    domains = tuple(str(name).rstrip(".") for name in resolver.search if str(name) != ".")
    ndots = resolver.ndots if isinstance(resolver.ndots, int) else 1
    return domains, ndots


class SearchingDnsCache(DnsCache):
    """A ``DnsCache`` that walks ``search`` once for a short name and remembers the winner.

    Args:
        search: the search domains, in order (``["default.svc.cluster.local", ...]``).
        ndots: names with at least this many dots are only looked up as they are.
        **kwargs: as ``DnsCache``.
    """

    def __init__(self, *, search: Sequence[str], ndots: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._search = tuple(domain.strip(".") for domain in search if domain.strip("."))
        self._ndots = ndots
        self._winners: dict[str, str] = {}
        self._walk_lock = threading.Lock()

    def _short(self, host: str) -> bool:
        return (
            bool(self._search)
            and not host.endswith(".")
            and host.count(".") < self._ndots
            and not _is_literal(host)
        )

    def _name(self, host: str) -> str:
        """The full name that answered for ``host`` (``host`` itself until a walk found one)."""
        return self._winners.get(host.lower(), host) if self._short(host) else host

    def resolve(self, host: str, timeout: float | None = None) -> list[str]:
        if not self._short(host):
            return super().resolve(host, timeout)
        key = host.lower()
        winner = self._winners.get(key)
        if winner is not None:
            try:
                return super().resolve(winner, timeout)
            except socket.gaierror as exc:
                if exc.errno != socket.EAI_NONAME:
                    raise  # a resolver outage: the cache serves stale or fails; no new walk
                self._winners.pop(key, None)
        # One walk at a time (threads that waited find the winner), all within ``timeout``.
        ends_at = None if timeout is None else time.monotonic() + timeout
        if not self._walk_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise LookupTimeout(f"Resolving {host} timed out")
        try:
            winner = self._winners.get(key)
            if winner is not None:
                return super().resolve(winner, _left(ends_at))
            return self._walk(key, ends_at)
        finally:
            self._walk_lock.release()

    def _walk(self, host: str, ends_at: float | None) -> list[str]:
        candidates = [host, *(f"{host}.{domain}" for domain in self._search)]
        first: socket.gaierror | None = None
        for candidate in candidates:
            try:
                addresses = super().resolve(candidate, _left(ends_at))
            except socket.gaierror as exc:
                if exc.errno not in (socket.EAI_NONAME, socket.EAI_NODATA):
                    raise  # the resolver failed: a later candidate would not be more right
                first = first or exc
                continue
            self._winners[host] = candidate
            return addresses
        assert first is not None  # Defensive: at least the name itself was tried
        raise first

    def is_current(self, host: str, address: str) -> bool:
        return super().is_current(self._name(host), address)

    def report_failure(self, host: str, address: str) -> None:
        super().report_failure(self._name(host), address)

    def report_success(self, host: str, address: str) -> None:
        super().report_success(self._name(host), address)


def _left(ends_at: float | None) -> float | None:
    return None if ends_at is None else max(ends_at - time.monotonic(), 0.0)


def _is_literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))
    except OSError:
        return False
    return True
