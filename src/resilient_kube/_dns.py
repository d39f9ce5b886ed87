"""A local DNS cache for the API server's name, so that a new connection does not wait on DNS.

urllib3 calls ``getaddrinfo`` for every new connection, and glibc has no cache: a reconnect storm
is also a DNS storm, and one lost UDP packet costs the resolv.conf timeout (5 s by default). This
module resolves with dnspython and keeps the answers:

* Record TTLs are honoured (RFC 1035 §3.2.1; RFC 2181 §8), clamped to ``[min_ttl, max_ttl]``.
* NXDOMAIN and failures (SERVFAIL, timeouts) are cached for ``negative_ttl`` (RFC 2308 §5, §7;
  RFC 9520 makes caching resolution failures mandatory, for at most 5 min). NODATA (a name without
  AAAA) is an answer, not a failure: it is cached like one, for the SOA's negative TTL (300 s
  without an SOA, as dnspython and most resolvers do), within the same clamps.
* When the resolver fails, the last good answer is served for up to ``stale_ttl`` after it expired,
  with a background re-check at most once per 30 s (RFC 8767 §4, §5).
* An answer in use is refreshed in the background at 85% of its TTL (prefetch, as CoreDNS and
  Unbound do), so a busy client never waits on DNS.
* Addresses are returned in Happy Eyeballs order, IPv6 and IPv4 interleaved (RFC 8305 §4), with an
  address that failed recently moved last.
* The name is treated as fully qualified: one query per record type, never expanded through the
  resolv.conf search list (a pod's ``ndots:5`` turns one lookup into up to 4 + 4 queries).
* IP literals and ``/etc/hosts`` names bypass DNS, as with ``hosts: files dns`` in nsswitch.conf.
* One lookup per name and record type is in flight however many threads miss at once.
* A caller with a time limit (``resolve(host, timeout=...)``, the dial's connect timeout) waits no
  longer than that: the lookup goes on in the background and its answer is kept for the next
  call, and an expired answer is served meanwhile if there is one (RFC 8767 §5, the client
  response timer).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import cachetools
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from . import _fork
from ._events import EventSink
from ._settings import parse_nameserver

__all__ = ["DnsCache", "DnsStats", "LookupTimeout"]

log = logging.getLogger(__name__)

#: A hit later than this share of the TTL starts a background refresh (CoreDNS prefetches at 90%,
#: Unbound at 90%; 85% leaves one more refresh attempt before expiry for TTLs of a minute and more).
REFRESH_FRACTION = 0.85
#: RFC 8767 §5: after a failed lookup, re-check no more often than every 30 s.
STALE_RECHECK_INTERVAL = 30.0
#: An address whose connect failed is tried last for this long (or until a connect to it succeeds).
FAILURE_MEMORY = 60.0
#: Names (times record types) kept; the cache serves one client's API servers, so this is plenty.
MAX_ENTRIES = 1024
#: /etc/hosts is checked for changes (mtime, size, inode) at most this often.
HOSTS_CHECK_INTERVAL = 1.0
#: Threads for background refreshes and the second record type of a miss.
_WORKERS = 4

_Key = tuple[str, dns.rdatatype.RdataType]
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
# Linux has EAI_NODATA; other platforms fold it into EAI_NONAME.
_EAI_NODATA: int = getattr(socket, "EAI_NODATA", socket.EAI_NONAME)
_MESSAGES = {
    socket.EAI_NONAME: "Name or service not known",
    socket.EAI_AGAIN: "Temporary failure in name resolution",
    _EAI_NODATA: "No address associated with hostname",
}


class LookupTimeout(TimeoutError):
    """``DnsCache.resolve`` ran out of its caller's time before the lookup finished.

    The lookup itself goes on (up to the cache's own ``timeout``), and its answer is kept.
    """


class DnsStats(NamedTuple):
    """What the DNS cache did since it was created."""

    #: ``resolve`` calls answered from fresh cached data without waiting.
    hits: int
    #: ``resolve`` calls that waited for a lookup (their own or another thread's).
    misses: int
    #: ``resolve`` calls answered with expired data because the resolver failed (RFC 8767).
    stale_served: int
    #: Lookups (one name, one record type) that failed: NXDOMAIN, SERVFAIL, timeout.
    failures: int
    #: DNS messages sent, retries and TCP fallbacks included.
    queries: int
    #: Seconds spent in lookups, foreground and background.
    lookup_seconds: float


@dataclasses.dataclass(slots=True)
class _Entry:
    """The cached state of one (name, record type)."""

    #: The answer; ``()`` for NODATA and NXDOMAIN; None when a lookup failed with nothing to serve.
    addresses: tuple[str, ...] | None
    #: Fresh until (the clamped TTL, or ``negative_ttl`` for NXDOMAIN and failures).
    expires: float
    #: A hit at or after this time starts a background refresh.
    refresh_at: float
    #: ``addresses`` may be served after ``expires`` until this while lookups fail (RFC 8767).
    stale_until: float
    #: The ``socket.gaierror`` code for NXDOMAIN and failures; 0 for an answer.
    error: int = 0
    #: The last lookup failed and ``addresses`` are the last good answer.
    failing: bool = False
    #: While failing: no new lookup before this (RFC 8767 §5 failure recheck timer).
    recheck_at: float = 0.0


class _Flight:
    """One lookup in flight; other threads that need the same answer wait on ``done``."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _CountingNameserver(dns.nameserver.Do53Nameserver):
    """A UDP/TCP nameserver that counts every message it sends (for ``DnsStats.queries``)."""

    def __init__(self, address: str, port: int, on_query: Callable[[], None]) -> None:
        super().__init__(address, port)
        self._on_query = on_query

    def query(  # noqa: PLR0917 -- dnspython's signature
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        self._on_query()
        return super().query(
            request, timeout, source, source_port, max_size, one_rr_per_rrset, ignore_trailing
        )


class _HostsFile:
    """``/etc/hosts`` parsed once and re-read when its mtime, size or inode changes."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._names: dict[str, tuple[str, ...]] = {}
        self._checked = -math.inf

    def lookup(self, name: str, now: float) -> tuple[str, ...] | None:
        """The addresses for ``name`` (lower case, no trailing dot); re-reads a changed file."""
        if now - self._checked >= HOSTS_CHECK_INTERVAL:
            self._checked = now
            self._reload()
        return self._names.get(name)

    def peek(self, name: str) -> tuple[str, ...] | None:
        """Like ``lookup`` without touching the file system."""
        return self._names.get(name)

    def _reload(self) -> None:
        with self._lock:
            try:
                st = os.stat(self._path)
            except OSError:
                self._signature, self._names = None, {}
                return
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == self._signature:
                return
            try:
                with open(self._path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:  # Defensive: removed between stat and open
                return
            self._signature, self._names = signature, _parse_hosts(text)


def _parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """Parse hosts(5): ``address name [aliases...]``, ``#`` comments, names case-insensitive."""
    names: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.partition("#")[0].split()
        if len(fields) < 2:
            continue
        try:
            address = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
        for name in fields[1:]:
            found = names.setdefault(name.rstrip(".").lower(), [])
            if address not in found:
                found.append(address)
    return {name: tuple(addresses) for name, addresses in names.items()}


def _literal(host: str) -> str | None:
    """``host`` without brackets if it is an IPv4 or IPv6 literal, else None."""
    # Cheap pre-check: a DNS name never ends in a digit (no TLD is numeric) and never has a colon.
    if ":" not in host and not host[-1:].isdigit():
        return None
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return None
    return bare


def _same_address(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def interleave(addresses: Sequence[str]) -> list[str]:
    """Alternate IPv6 and IPv4 addresses, IPv6 first, keeping the order within each family.

    RFC 8305 §4 (First Address Family Count 1): ``[v6a, v6b, v4a, v4b]`` → ``[v6a, v4a, v6b, v4b]``.
    """
    v6 = [a for a in addresses if ":" in a]
    if not v6 or len(v6) == len(addresses):
        return list(addresses)
    return _merge(v6, [a for a in addresses if ":" not in a])


def _merge(v6: Sequence[str], v4: Sequence[str]) -> list[str]:
    """``[v6[0], v4[0], v6[1], v4[1], ...]``, then the rest of the longer list."""
    out = [a for pair in zip(v6, v4, strict=False) for a in pair]
    shorter = min(len(v6), len(v4))
    out.extend(v6[shorter:] if len(v6) > shorter else v4[shorter:])
    return out


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


class DnsCache:
    """Resolve host names through a local cache with TTLs, negative caching and serve-stale.

    Args:
        nameservers: resolvers as ``'ip'``, ``'ip:port'`` or ``'[v6]:port'``; None reads
            /etc/resolv.conf (only its nameservers, ``port`` and options are used: the name is never
            expanded through its search list).
        min_ttl: the shortest time an answer is kept, whatever its TTL (0-TTL records included).
        max_ttl: the longest time an answer is kept before it is asked again.
        negative_ttl: how long NXDOMAIN and failed lookups are cached (RFC 2308 §5, §7).
        stale_ttl: how long after expiry an answer may be served while the resolver fails
            (RFC 8767 §4 suggests 1 to 3 days).
        timeout: seconds one lookup of one record type may take, all servers and retries included
            (dnspython's ``lifetime``); each server gets an equal share.
        clock: seconds from a monotonic clock; injectable for tests.
        hosts_file: the hosts(5) file consulted before DNS.
        events: the client's event sink; each lookup of a name (not a literal or a hosts-file
            name) is reported as ``hit``, ``miss``, ``stale`` or ``error`` with its seconds.

    The arguments are trusted: ``Settings`` validated them (``dns_*``), with errors that name
    the setting.

    Example:
        >>> cache = DnsCache(nameservers=["127.0.0.1:5353"])
        >>> cache.resolve("127.0.0.1")
        ['127.0.0.1']
        >>> cache.close()
    """

    def __init__(
        self,
        *,
        nameservers: Sequence[str] | None = None,
        min_ttl: float = 5.0,
        max_ttl: float = 300.0,
        negative_ttl: float = 5.0,
        stale_ttl: float = 86400.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        hosts_file: str = "/etc/hosts",
        events: EventSink | None = None,
    ) -> None:
        #: Where every lookup is reported (``dns_lookup``): the client's event sink.
        self._events = events if events is not None else EventSink()
        self._min_ttl = float(min_ttl)
        self._max_ttl = float(max_ttl)
        self._negative_ttl = float(negative_ttl)
        self._stale_ttl = float(stale_ttl)
        self._timeout = float(timeout)
        self._clock = clock
        self._hosts = _HostsFile(hosts_file)

        self._lock = threading.Lock()
        self._entries: cachetools.LRUCache[_Key, _Entry] = cachetools.LRUCache(MAX_ENTRIES)
        self._failed: cachetools.LRUCache[str, dict[str, float]] = cachetools.LRUCache(MAX_ENTRIES)
        self._inflight: dict[_Key, _Flight] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._hits = self._misses = self._stale_served = self._failures = self._queries = 0
        self._lookup_seconds = 0.0
        self._resolver = self._make_resolver(nameservers)
        _fork.register(self, DnsCache._after_fork)

    # --- public interface ----------------------------------------------------------------------

    def resolve(self, host: str, timeout: float | None = None) -> list[str]:
        """Return the addresses to connect to, in the order to try them.

        IPv6 and IPv4 are interleaved (RFC 8305 §4) and an address reported failed within the last
        ``FAILURE_MEMORY`` seconds comes last. An IP literal is returned as it is (without
        brackets); a name in the hosts file gets its addresses from there, without DNS.

        Args:
            host: a name or an IP literal.
            timeout: the longest this call may wait for a lookup (what the caller's own time
                limit leaves); None waits up to the cache's ``timeout``. A lookup still running
                then goes on in the background, and an expired answer is served meanwhile if
                there is one (RFC 8767 §5).

        Raises:
            socket.gaierror: ``EAI_NONAME`` for NXDOMAIN, ``EAI_AGAIN`` when the lookup failed and
                there is nothing stale to serve, ``EAI_NODATA`` when the name has no A or AAAA.
            LookupTimeout: ``timeout`` ran out before an answer came, with nothing to serve.
        """
        literal = _literal(host)
        if literal is not None:
            return [literal]
        name = host.rstrip(".").lower()
        if not name:
            raise socket.gaierror(socket.EAI_NONAME, _MESSAGES[socket.EAI_NONAME])
        now = self._clock()
        from_hosts = self._hosts.lookup(name, now)
        if from_hosts is not None:
            return self._order(name, interleave(from_hosts), now)

        started = time.monotonic()
        try:
            addresses, result = self._resolve_name(host, name, now, timeout)
        except Exception:
            self._events.dns_lookup(name, "error", time.monotonic() - started)
            raise
        self._events.dns_lookup(name, result, time.monotonic() - started)
        return addresses

    def _resolve_name(
        self, host: str, name: str, now: float, timeout: float | None
    ) -> tuple[list[str], str]:
        """``resolve`` past the literal and hosts-file answers: the addresses, and whether the
        cache had them (``hit``), served them expired (``stale``) or asked (``miss``)."""
        keys = ((name, _AAAA), (name, _A))
        entries: list[_Entry | None] = [None, None]
        lookups: list[_Key] = []
        background: list[tuple[_Key, _Flight]] = []
        stale = False
        with self._lock:
            for i, key in enumerate(keys):
                entry = self._entries.get(key)
                if entry is None:
                    lookups.append(key)
                elif now < entry.expires:
                    entries[i] = entry
                    if now >= entry.refresh_at and (not entry.failing or now >= entry.recheck_at):
                        self._start_background(key, entry, now, background)
                elif entry.failing and entry.addresses is not None and now < entry.stale_until:
                    entries[i] = entry
                    stale = True
                    if now >= entry.recheck_at:
                        self._start_background(key, entry, now, background)
                else:
                    lookups.append(key)
            if lookups:
                self._misses += 1
            elif stale:
                self._stale_served += 1
            else:
                self._hits += 1
        for key, flight in background:
            if not self._submit(key, flight):
                self._release(key, flight)
        pending: set[_Key] = set()
        if lookups:
            pending = self._lookup(lookups, timeout)
            now = self._clock()
            with self._lock:
                for i, key in enumerate(keys):
                    if key not in lookups:
                        continue
                    entry = self._entries.get(key)
                    if key in pending and (entry is None or now >= entry.expires):
                        # Out of the caller's time: an expired answer is better than none.
                        if entry is not None and entry.addresses and now < entry.stale_until:
                            entries[i] = entry
                            stale = True
                        continue
                    pending.discard(key)  # answered just after the wait ended
                    used = entries[i] = self._after_lookup(entry, now)
                    stale = stale or (used is entry and used.failing)
                if stale:
                    self._stale_served += 1
        result = "miss" if lookups else "stale" if stale else "hit"
        return self._answer(host, name, entries, now, pending=pending, timeout=timeout), result

    def is_current(self, host: str, address: str) -> bool:
        """False once ``address`` has left the cached answer for ``host``; never waits on I/O.

        Unknown names and lookups that failed with nothing to compare count as current: a pooled
        connection is retired only when DNS positively gave a different answer. A pooled
        connection does not resolve, so this is where a busy client notices that an answer is due
        for its refresh: it starts one in the background, and a later check sees the result.
        """
        literal = _literal(host)
        if literal is not None:
            return _same_address(literal, address)
        name = host.rstrip(".").lower()
        from_hosts = self._hosts.peek(name)
        if from_hosts is not None:
            return any(_same_address(a, address) for a in from_hosts)
        key = (name, _AAAA if ":" in address else _A)
        now = self._clock()
        background: list[tuple[_Key, _Flight]] = []
        with self._lock:
            entry = self._entries.get(key)
            if (
                entry is not None
                and now >= entry.refresh_at
                and (not entry.failing or now >= entry.recheck_at)
            ):
                self._start_background(key, entry, now, background)
        for flight_key, flight in background:
            if not self._submit(flight_key, flight):
                self._release(flight_key, flight)
        if entry is None or entry.addresses is None:
            return True
        return address in entry.addresses or any(_same_address(a, address) for a in entry.addresses)

    def report_failure(self, host: str, address: str) -> None:
        """Record that connecting to ``address`` failed: ``resolve`` returns it last for a while."""
        key = host.rstrip(".").lower()
        now = self._clock()
        with self._lock:
            failed = self._failed.get(key)
            if failed is None:
                self._failed[key] = failed = {}
            failed[address] = now

    def report_success(self, host: str, address: str) -> None:
        """Record that connecting to ``address`` worked, undoing an earlier ``report_failure``."""
        key = host.rstrip(".").lower()
        with self._lock:
            failed = self._failed.get(key)
            if failed is not None:
                failed.pop(address, None)
                if not failed:
                    del self._failed[key]

    def stats(self) -> DnsStats:
        """A snapshot of the counters."""
        with self._lock:
            return DnsStats(
                hits=self._hits,
                misses=self._misses,
                stale_served=self._stale_served,
                failures=self._failures,
                queries=self._queries,
                lookup_seconds=self._lookup_seconds,
            )

    def close(self) -> None:
        """Stop background refresh work; ``resolve`` keeps working, looking up in the caller."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's workers, lookups in flight and locks.

        The pool's threads did not survive the fork, so a lookup handed to it would never run
        and its in-flight slot would never be freed: every later miss would wait for it in vain
        (``timeout`` + 1 s) and that record type would never be asked again. A lock held by a
        parent thread at the fork would stay held. The answers themselves stay valid.
        """
        self._lock = threading.Lock()
        self._hosts._lock = threading.Lock()
        self._inflight = {}
        # Not shut down: its queue and locks are the parent's. A new pool starts on demand.
        self._pool = None

    def __repr__(self) -> str:
        servers = [f"{ns.address}:{ns.port}" for ns in self._nameservers]
        return (
            f"DnsCache(nameservers={servers!r}, min_ttl={self._min_ttl!r}, "
            f"max_ttl={self._max_ttl!r}, negative_ttl={self._negative_ttl!r}, "
            f"stale_ttl={self._stale_ttl!r}, timeout={self._timeout!r})"
        )

    # --- lookups -------------------------------------------------------------------------------

    def _make_resolver(self, nameservers: Sequence[str] | None) -> dns.resolver.Resolver:
        if nameservers is None:
            try:
                resolver = dns.resolver.Resolver(configure=True)
                servers = [
                    (ns, resolver.nameserver_ports.get(ns, resolver.port))
                    if isinstance(ns, str)
                    else (ns.address, ns.port)
                    for ns in resolver.nameservers
                    if isinstance(ns, str | dns.nameserver.Do53Nameserver)
                ]
            except dns.resolver.NoResolverConfiguration:
                # resolv.conf(5): without a nameserver line the default is the local machine.
                resolver = dns.resolver.Resolver(configure=False)
                servers = [("127.0.0.1", 53)]
        else:
            resolver = dns.resolver.Resolver(configure=False)
            servers = [parse_nameserver(entry) for entry in nameservers]
        if not servers:
            servers = [("127.0.0.1", 53)]
        self._nameservers = [
            _CountingNameserver(address, port, self._count_query) for address, port in servers
        ]
        resolver.nameservers = self._nameservers
        resolver.cache = None  # this module is the cache
        resolver.lifetime = self._timeout
        resolver.timeout = self._timeout / len(self._nameservers)
        resolver.search = []
        return resolver

    def _count_query(self) -> None:
        with self._lock:
            self._queries += 1

    def _start_background(
        self,
        key: _Key,
        entry: _Entry,
        now: float,
        out: list[tuple[_Key, _Flight]],
    ) -> None:
        """Under the lock: claim a background refresh of ``key`` unless one is running."""
        if key in self._inflight or self._closed:
            return
        if entry.failing:
            # Whatever the outcome, the next re-check waits for the recheck timer (RFC 8767 §5).
            entry.recheck_at = now + STALE_RECHECK_INTERVAL
        flight = _Flight()
        self._inflight[key] = flight
        out.append((key, flight))

    def _submit(self, key: _Key, flight: _Flight) -> bool:
        """Run the flight for ``key`` on the background pool; False if the pool is gone."""
        with self._lock:
            if self._pool is None and not self._closed:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_WORKERS, thread_name_prefix="resilient_kube-dns"
                )
            pool = self._pool
        if pool is not None:
            try:
                pool.submit(self._fly, key, flight)
                return True
            except RuntimeError:  # closed between the check and the submit
                pass
        return False

    def _release(self, key: _Key, flight: _Flight) -> None:
        """End ``flight`` (done or abandoned) and wake the threads waiting for it."""
        with self._lock:
            if self._inflight.get(key) is flight:
                del self._inflight[key]
        flight.done.set()

    def _lookup(self, keys: list[_Key], timeout: float | None) -> set[_Key]:
        """Look ``keys`` up in parallel (RFC 8305 §3), joining lookups other threads started.

        Waits at most ``timeout`` (None: the cache's ``timeout`` and a second) and returns the
        keys whose lookups were still running then.
        """
        started = time.monotonic()
        limit = self._timeout + 1.0
        # A caller with a time limit leaves every query to the pool, so that a lookup still
        # running when the caller stops waiting goes on, and its answer is kept.
        bounded = timeout is not None
        if timeout is not None:
            limit = min(limit, max(timeout, 0.0))
        waits: list[tuple[_Key, _Flight]] = []
        mine: list[tuple[_Key, _Flight]] = []
        with self._lock:
            for key in keys:
                flight = self._inflight.get(key)
                if flight is None:
                    flight = self._inflight[key] = _Flight()
                    mine.append((key, flight))
                waits.append((key, flight))
        # All but the last on the pool; the last one in this thread unless time is limited.
        pending: set[_Key] = set()
        for key, flight in mine if bounded else mine[:-1]:
            if not self._submit(key, flight):
                # The cache is closed: look up here, within the caller's time.
                left = min(max(limit - (time.monotonic() - started), 0.0), self._timeout)
                if not self._fly(key, flight, lifetime=left):
                    pending.add(key)
        if mine and not bounded:
            self._fly(*mine[-1])
        deadline = started + limit
        for key, flight in waits:
            if not flight.done.wait(max(0.0, deadline - time.monotonic())):
                pending.add(key)
        return pending

    def _fly(self, key: _Key, flight: _Flight, lifetime: float | None = None) -> bool:
        """Query ``key``, store the outcome and release the threads waiting for it.

        Returns False when the query ran out of a ``lifetime`` shorter than the cache's
        ``timeout``: nothing was stored.
        """
        try:
            return self._query(key, lifetime)
        finally:
            self._release(key, flight)

    def _query(self, key: _Key, lifetime: float | None = None) -> bool:
        """Query ``key`` and store the outcome; False if it ran out of a cut ``lifetime``.

        ``lifetime`` below the cache's ``timeout`` is a caller's shorter limit: running out of
        it says nothing about the resolver, so that timeout is not cached as a failure.
        """
        name, rdtype = key
        started = time.perf_counter()
        addresses: tuple[str, ...] | None = None
        error = 0
        ttl = self._negative_ttl
        reason = ""
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            # Not a valid DNS name (empty label, label over 63 octets): no server can know it.
            with self._lock:
                self._store(
                    key,
                    addresses=(),
                    error=socket.EAI_NONAME,
                    ttl=self._negative_ttl,
                    now=self._clock(),
                    reason=str(exc),
                )
            return True
        try:
            answer = self._resolver.resolve(
                qname,
                rdtype,
                search=False,
                raise_on_no_answer=False,
                lifetime=lifetime,
            )
        except dns.resolver.NXDOMAIN:
            addresses, error, reason = (), socket.EAI_NONAME, "NXDOMAIN"
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            cut = lifetime is not None and lifetime < self._timeout
            if cut and isinstance(exc, dns.exception.Timeout):
                return False
            error, reason = socket.EAI_AGAIN, f"{type(exc).__name__}: {exc}"
        else:
            # The smallest TTL along the CNAME chain and of the answer; for NODATA, RFC 2308 §5's
            # min(SOA TTL, SOA MINIMUM), or dnspython's 300 s when the server sent no SOA (a
            # v4-only name must not cost an AAAA query every few seconds). Clamped in _store.
            ttl = answer.chaining_result.minimum_ttl
            addresses = (
                tuple(dict.fromkeys(str(rdata) for rdata in answer.rrset))
                if answer.rrset is not None
                else ()
            )
        elapsed = time.perf_counter() - started
        now = self._clock()
        with self._lock:
            self._lookup_seconds += elapsed
            if error:
                self._failures += 1
            self._store(key, addresses=addresses, error=error, ttl=ttl, now=now, reason=reason)
        return True

    def _store(
        self,
        key: _Key,
        *,
        addresses: tuple[str, ...] | None,
        error: int,
        ttl: float,
        now: float,
        reason: str,
    ) -> None:
        """Under the lock: record a lookup's outcome for ``key``."""
        rdname = dns.rdatatype.to_text(key[1])
        if error == socket.EAI_AGAIN:
            old = self._entries.get(key)
            usable = old is not None and old.error == 0 and old.addresses is not None
            if old is not None and usable and now < old.stale_until:
                if not old.failing:
                    log.warning(
                        "DNS lookup of %s %s failed (%s); serving the last answer for up to "
                        "%.0f s more",
                        key[0],
                        rdname,
                        reason,
                        old.stale_until - now,
                    )
                old.failing = True
                old.recheck_at = now + STALE_RECHECK_INTERVAL
                return
            log.info("DNS lookup of %s %s failed: %s", key[0], rdname, reason)
            self._entries[key] = _Entry(None, now + ttl, math.inf, now + ttl, error)
        elif error:
            log.info("DNS lookup of %s %s: %s", key[0], rdname, reason)
            self._entries[key] = _Entry((), now + ttl, math.inf, now + ttl, error)
        else:
            ttl = _clamp(ttl, self._min_ttl, self._max_ttl)
            self._entries[key] = _Entry(
                addresses, now + ttl, now + REFRESH_FRACTION * ttl, now + ttl + self._stale_ttl
            )
            log.debug("DNS %s %s -> %s (ttl %.0f s)", key[0], rdname, addresses, ttl)

    @staticmethod
    def _after_lookup(entry: _Entry | None, now: float) -> _Entry:
        """The entry to use right after a lookup: the answer, a stale answer or the failure."""
        if entry is None:  # Defensive: evicted, or the wait for another thread's lookup ran out
            return _Entry(None, now, math.inf, now, socket.EAI_AGAIN)
        if entry.failing and not (entry.addresses is not None and now < entry.stale_until):
            return _Entry(None, now, math.inf, now, socket.EAI_AGAIN)
        return entry

    # --- answers -------------------------------------------------------------------------------

    def _answer(
        self,
        host: str,
        name: str,
        entries: list[_Entry | None],
        now: float,
        *,
        pending: set[_Key],
        timeout: float | None,
    ) -> list[str]:
        v6, v4 = ((entry.addresses or ()) if entry is not None else () for entry in entries)
        if v6 or v4:
            return self._order(name, _merge(v6, v4) if v6 and v4 else list(v6 or v4), now)
        codes = {entry.error for entry in entries if entry is not None}
        if pending and socket.EAI_NONAME not in codes:
            waited = self._timeout + 1.0 if timeout is None else timeout
            raise LookupTimeout(
                f"the DNS lookup of {host!r} did not finish within {max(waited, 0.0):.3g} s"
            )
        if socket.EAI_NONAME in codes:
            code, detail = socket.EAI_NONAME, "NXDOMAIN"
        elif socket.EAI_AGAIN in codes:
            code, detail = socket.EAI_AGAIN, "the DNS lookup failed"
        else:
            code, detail = _EAI_NODATA, "no A or AAAA record"
        raise socket.gaierror(code, f"{_MESSAGES[code]} ({detail} for {host!r})")

    def _order(self, name: str, ordered: list[str], now: float) -> list[str]:
        """Move recently failed addresses last (oldest failure first), in place."""
        if not self._failed:
            return ordered
        with self._lock:
            failed = self._failed.get(name)
            if not failed:
                return ordered
            for address, when in list(failed.items()):
                if now - when >= FAILURE_MEMORY:
                    del failed[address]
            marks = dict(failed)
        if marks:
            ordered.sort(key=lambda a: marks.get(a, -math.inf))
        return ordered
