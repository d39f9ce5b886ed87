"""Counters every part of the request path reports into, and the ``stats()`` snapshot."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ._dns import DnsStats
    from ._endpoints import EndpointStats
    from ._limiter import LimiterStats

from ._events import EventSink

__all__ = [
    "Counters",
    "CredentialStats",
    "RetryStats",
    "Stats",
    "TransportStats",
    "WatchStats",
    "count_value",
]


def count_value(count: itertools.count[int]) -> int:
    """Where an ``itertools.count`` stands, without advancing it.

    ``next()`` on a count is one atomic step under the GIL, the cheapest lock-free counter
    CPython has. It shows its value only in its repr, ``count(N)``: copying one is deprecated
    since Python 3.12 and gone in 3.14.
    """
    return int(repr(count)[len("count(") : -1])


class TransportStats(NamedTuple):
    """Calls, wire attempts and what the connection pool did."""

    #: Calls made through the transport (one per API method call).
    requests: int
    #: Requests put on the wire, retries included.
    attempts: int
    #: Calls that ended in an error raised by resilient_kube (not HTTP errors).
    failures: int
    connections_opened: int
    connections_reused: int
    #: Pooled connections closed before reuse because they idled past ``pool_idle_timeout``.
    connections_expired: int
    #: Pooled connections closed because their address left the DNS answer, or because the
    #: client certificate or CA they were opened with changed.
    connections_retired: int


class RetryStats(NamedTuple):
    """What the retry layer did."""

    retries: int
    #: Retries by reason: ``status_503``, ``connect_timeout``, ``read_timeout``, ``reset``, ...
    retries_by_reason: dict[str, int]
    #: Retries refused by the retry budget.
    budget_refusals: int
    #: Seconds spent waiting between attempts (backoff and Retry-After).
    backoff_seconds: float


class WatchStats(NamedTuple):
    """What the client's watches and informers did (``resilient_kube.Watch``, ``SharedInformer``)."""

    #: Events received from the server, bookmarks included.
    events: int
    #: BOOKMARK events received (handed to callers only when they asked for them).
    bookmarks: int
    #: Streams re-opened after a break.
    restarts: int
    #: Restarts by reason: ``reset``, ``idle``, ``ended``, ``status_503``, ...
    restarts_by_reason: dict[str, int]
    #: Informer lists, the first one included.
    relists: int
    #: Seconds since the last event or bookmark arrived; None before the first.
    last_event_age: float | None


class CredentialStats(NamedTuple):
    """What the credential sources did (token files, exec plugins, certificate files)."""

    #: Fresh credentials fetched: a token file re-read, an exec plugin run, certificate files
    #: seen changed, a loader's hook asked after a 401.
    refreshes: int
    #: Refreshes by source: ``token_file``, ``exec``, ``certificate_files``, ``configuration``.
    refreshes_by_source: dict[str, int]
    #: Refreshes that failed (an exec plugin that failed or hung, an unreadable token file).
    failures: int
    #: Seconds spent refreshing, by source (for ``exec``: the plugin runs).
    seconds_by_source: dict[str, float]
    #: Calls sent once more with fresh credentials after a 401.
    replays: int


class Stats(NamedTuple):
    """A snapshot of one client's counters (see ``ApiClient.stats()``)."""

    transport: TransportStats
    retry: RetryStats
    #: None when the limiter is off (``qps=None``).
    limiter: LimiterStats | None
    #: None when the DNS cache is off (``dns_cache=False``).
    dns: DnsStats | None
    watch: WatchStats
    credentials: CredentialStats
    #: One entry per API server with ``endpoints=[...]``; empty without.
    endpoints: tuple[EndpointStats, ...] = ()


class Counters(EventSink):
    """Thread-safe counters for the transport, the retry layer and watches: the event sink
    subscriber behind ``stats()``.

    Plain counts are ``itertools.count`` objects: ``next()`` on one is atomic in CPython, so the
    hot path (three counts per call) takes no lock and threads do not queue behind each other.
    """

    __slots__ = (
        "_attempts",
        "_backoff_seconds",
        "_clock",
        "_connections",
        "_counts",
        "_credential_failures",
        "_credential_refreshes",
        "_credential_seconds",
        "_last_event_at",
        "_lock",
        "_restart_reasons",
        "_retry_reasons",
        "_watch_bookmarks",
        "_watch_counts",
        "_watch_events",
    )

    _NAMES = (*TransportStats._fields, "budget_refusals", "watch_events", "watch_bookmarks")
    #: Never raises: the fanout calls it without a guard.
    trusted = True

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts = {name: itertools.count() for name in self._NAMES}
        self._attempts = self._counts["attempts"]
        self._connections = {
            event: self._counts[f"connections_{event}"]
            for event in ("opened", "reused", "expired", "retired")
        }
        self._watch_events = self._counts["watch_events"]
        self._watch_bookmarks = self._counts["watch_bookmarks"]
        self._lock = threading.Lock()
        self._clock = clock
        self._retry_reasons: Counter[str] = Counter()
        self._backoff_seconds = 0.0
        self._restart_reasons: Counter[str] = Counter()
        self._watch_counts: Counter[str] = Counter()
        self._last_event_at = -math.inf
        self._credential_refreshes: Counter[str] = Counter()
        self._credential_seconds: defaultdict[str, float] = defaultdict(float)
        self._credential_failures = 0

    def add(self, name: str) -> None:
        """Count one event ``name`` (a ``TransportStats`` field or ``budget_refusals``)."""
        next(self._counts[name])

    def ticker(self, name: str) -> Iterator[int]:
        """The count behind ``name`` itself: ``next()`` on it counts one, with no method call."""
        return self._counts[name]

    def value(self, name: str) -> int:
        """The current count of ``name``."""
        return count_value(self._counts[name])

    def retried(self, reason: str, wait: float) -> None:
        """Record one retry for ``reason`` after waiting ``wait`` seconds."""
        with self._lock:
            self._retry_reasons[reason] += 1
            self._backoff_seconds += wait

    def _after_fork(self) -> None:
        """In a forked child: a new lock (one a parent thread held at the fork stays held)."""
        self._lock = threading.Lock()

    def transport_stats(self) -> TransportStats:
        return TransportStats(*(self.value(name) for name in TransportStats._fields))

    def retry_stats(self) -> RetryStats:
        with self._lock:
            return RetryStats(
                retries=sum(self._retry_reasons.values()),
                retries_by_reason=dict(self._retry_reasons),
                budget_refusals=self.value("budget_refusals"),
                backoff_seconds=self._backoff_seconds,
            )

    # --- calls (EventSink) -----------------------------------------------------------------

    def attempt(  # noqa: PLR0917  the EventSink signature
        self,
        method: str,
        host: str,
        code: str,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        next(self._attempts)

    def retry(self, method: str, host: str, code: str, reason: str, wait: float) -> None:
        self.retried(reason, wait)

    def call_ended(  # noqa: PLR0917  the EventSink signature
        self,
        method: str,
        host: str,
        attempts: int,
        seconds: float,
        stop: str | None,
        error: str | None,
    ) -> None:
        if error is not None:
            next(self._counts["failures"])
        if stop == "budget":
            next(self._counts["budget_refusals"])

    def connection(self, host: str, event: str) -> None:
        next(self._connections[event])

    # --- watches (EventSink) ---------------------------------------------------------------

    def watch_event(self, kind: str) -> None:
        # Once per watch event: lock-free like the transport's counts (a float store is atomic).
        next(self._watch_events)
        if kind == "BOOKMARK":
            next(self._watch_bookmarks)
        self._last_event_at = self._clock()

    def watch_restart(self, reason: str, wait: float) -> None:
        with self._lock:
            self._restart_reasons[reason] += 1

    def informer_relist(self, reason: str) -> None:
        with self._lock:
            self._watch_counts["relists"] += 1

    def watch_stats(self) -> WatchStats:
        with self._lock:
            last = self._last_event_at
            return WatchStats(
                events=self.value("watch_events"),
                bookmarks=self.value("watch_bookmarks"),
                restarts=sum(self._restart_reasons.values()),
                restarts_by_reason=dict(self._restart_reasons),
                relists=self._watch_counts["relists"],
                last_event_age=None if last == -math.inf else self._clock() - last,
            )

    # --- credentials (EventSink) -----------------------------------------------------------

    def credential_refresh(self, source: str, seconds: float, ok: bool) -> None:
        with self._lock:
            self._credential_refreshes[source] += 1
            self._credential_seconds[source] += seconds
            if not ok:
                self._credential_failures += 1

    def credential_stats(self) -> CredentialStats:
        with self._lock:
            return CredentialStats(
                refreshes=sum(self._credential_refreshes.values()),
                refreshes_by_source=dict(self._credential_refreshes),
                failures=self._credential_failures,
                seconds_by_source=dict(self._credential_seconds),
                # The driver reports each 401 replay as a retry for "unauthorized".
                replays=self._retry_reasons["unauthorized"],
            )
