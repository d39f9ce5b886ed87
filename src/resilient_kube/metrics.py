"""Prometheus metrics for every resilient_kube client, under client-go's names (``[metrics]`` extra).

``register()`` once per process, as client-go registers its metrics once, and every
resilient_kube client, alive or made later, reports to the registry::

    from resilient_kube import metrics
    import prometheus_client

    metrics.register()                     # prometheus_client's default registry
    prometheus_client.start_http_server(9100)

client-go's series (``k8s.io/component-base/metrics/prometheus/restclient``), same names, labels,
buckets and meaning:

=========================================================  ===================  ========================
series                                                      labels               counted
=========================================================  ===================  ========================
``rest_client_requests_total``                              code, method, host   per wire attempt
``rest_client_request_duration_seconds``                    verb, host           per call: limiter wait,
                                                                                 attempts and backoff
``rest_client_request_size_bytes``                          verb, host           per attempt
``rest_client_response_size_bytes``                         verb, host           per answer read
``rest_client_rate_limiter_duration_seconds``               verb, host           per limiter pass
``rest_client_request_retries_total``                       code, verb, host     per retry
``rest_client_dns_resolution_duration_seconds``             host                 per lookup
``rest_client_exec_plugin_call_total``                      code, call_status    per exec plugin run
``rest_client_exec_plugin_ttl_seconds``                                          at scrape: soonest expiry
``rest_client_exec_plugin_certificate_rotation_age``                             per certificate rotation
=========================================================  ===================  ========================

resilient_kube's own series (``resilient_kube_*``) are listed in ``docs/observability.md``.
Labels are bounded: ``host`` is the API server's ``host:port``, ``code`` an HTTP status or
``<error>``; ``reason``, ``error``, ``event`` and ``result`` come from fixed sets; no path, no
object name.

The hot path of an ordinary GET counts without a lock where it can (``next()`` on an
``itertools.count`` is atomic: the request count, a size of 0, a limiter pass without a wait),
and takes one uncontended lock for the rest (a histogram bucket and its sum), twice a call. The
Prometheus families are only built when the registry is scraped (``ClientMetrics.collect``).
prometheus_client itself is imported by ``register()`` and ``collect()`` only, so importing
this module without the extra costs nothing.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from ._events import NO_CODE, EventSink, subscribe_everywhere, unsubscribe_everywhere
from ._stats import count_value
from .errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["ClientMetrics", "register", "registered", "unregister"]

#: client-go's buckets for request and rate-limiter latency (seconds).
LATENCY_BUCKETS: Final = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
#: client-go's buckets for the age of a rotated exec plugin certificate: 10 minutes to 57 days.
ROTATION_AGE_BUCKETS: Final = tuple(600.0 * 2**power for power in range(14))
#: client-go's buckets for DNS resolution latency (seconds).
DNS_BUCKETS: Final = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: client-go's buckets for request and response sizes: 64 bytes to 16 MiB.
SIZE_BUCKETS: Final = (
    64.0,
    256.0,
    512.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
)

_EXTRA_HINT: Final = "pip install 'resilient_kube[metrics]'"

_Labels = tuple[str, ...]
#: One histogram series: the count in each bucket (``+Inf`` last), then the sum.
_Row = list[float]


class _Histogram:
    """Bucket counts per label set, kept by the caller's lock; cumulated only when scraped.

    Observations of 0 (no wait, no body) are common and change no sum: they are counted apart,
    without the lock, and added to the first bucket when scraped.
    """

    __slots__ = ("bounds", "doc", "labels", "name", "rows", "size", "zeros")

    def __init__(self, name: str, doc: str, labels: _Labels, bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.size = len(bounds) + 2
        self.rows: dict[_Labels, _Row] = {}
        self.zeros: dict[_Labels, itertools.count[int]] = {}

    def zero(self, key: _Labels) -> itertools.count[int]:
        """The lock-free count of ``key``'s observations of 0, made on first use (the row too)."""
        zeros = self.zeros.get(key)
        if zeros is None:
            self.row(key)
            zeros = self.zeros[key] = itertools.count()
        return zeros

    def snapshot(self) -> dict[_Labels, _Row]:
        """A copy of every row, the zeros in the first bucket (under the caller's lock)."""
        rows = {key: list(row) for key, row in self.rows.items()}
        for key, zeros in self.zeros.items():
            rows[key][0] += count_value(zeros)
        return rows

    def row(self, key: _Labels) -> _Row:
        """The row of ``key``, made on first use."""
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0.0] * self.size
        return row

    def observe(self, key: _Labels, value: float) -> None:
        row = self.row(key)
        # bisect_left: the first bucket whose upper bound is >= value (``le`` is inclusive).
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value


class _Counter:
    """Counts per label set, kept by the caller's lock; each a one-item list, so that the hot
    path can keep a reference to it and add without a lookup. Counts of one at a time may
    instead be a ``tick``: an ``itertools.count``, advanced without the lock."""

    __slots__ = ("doc", "labels", "name", "ticks", "values")

    def __init__(self, name: str, doc: str, labels: _Labels) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[_Labels, list[float]] = {}
        self.ticks: dict[_Labels, itertools.count[int]] = {}

    def tick(self, key: _Labels) -> itertools.count[int]:
        """The lock-free count of ``key``, made on first use."""
        tick = self.ticks.get(key)
        if tick is None:
            tick = self.ticks[key] = itertools.count()
        return tick

    def snapshot(self) -> dict[_Labels, float]:
        """Every count, ticks included (under the caller's lock)."""
        counts = {key: cell[0] for key, cell in self.values.items()}
        for key, tick in self.ticks.items():
            counts[key] = counts.get(key, 0.0) + count_value(tick)
        return counts

    def cell(self, key: _Labels) -> list[float]:
        """The count of ``key``, made on first use."""
        cell = self.values.get(key)
        if cell is None:
            cell = self.values[key] = [0.0]
        return cell

    def add(self, key: _Labels, amount: float = 1.0) -> None:
        self.cell(key)[0] += amount


class _Gauge:
    """A value per label set, set by the caller under its lock; a label set is absent until
    first set."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: _Labels = ()) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[_Labels, float] = {}


_VERB_HOST: Final = ("verb", "host")
#: An attempt's request count, its size-0 request count, request size row, response size row.
_AttemptCells: TypeAlias = "tuple[itertools.count[int], itertools.count[int], _Row, _Row | None]"
#: A call's duration row, its no-wait limiter count and its limiter row.
_CallRows: TypeAlias = "tuple[_Row, itertools.count[int], _Row]"
_bisect: Final = bisect.bisect_left
_SIZES: Final = SIZE_BUCKETS
#: The size bucket of every bit length: the sizes' bounds are powers of two, so the first bound
#: at or above ``n`` is the first whose exponent reaches ``(n - 1).bit_length()``.
_SIZE_INDEX: Final = tuple(
    _bisect([int(bound).bit_length() - 1 for bound in SIZE_BUCKETS], bits) for bits in range(64)
)


def _size_bucket(size: int) -> int:
    """``bisect_left(SIZE_BUCKETS, size)`` without the search: one table lookup."""
    bits = (size - 1).bit_length()
    return _SIZE_INDEX[bits] if bits < 64 else len(SIZE_BUCKETS)


class ClientMetrics(EventSink):
    """The event sink behind ``register()``: it counts every client's events under client-go's
    names, and is the prometheus_client collector that exposes them.

    One per process is the usual case (``register``); a test or a program with several
    registries may build more and subscribe each where it wants (``ApiClient.subscribe``).

    Args:
        clock: wall-clock time for the last-event timestamp (``time.time``).
        monotonic: how call durations are timed (``time.monotonic``).
    """

    # Never raises: plain dict and list updates with arguments of known types. The fanout then
    # calls it without a guard when it is an event's only subscriber (see ``_events.Fanout``).
    trusted = True

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        h, c = _Histogram, _Counter
        # --- client-go --------------------------------------------------------------------
        self.requests = c(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            ("code", "method", "host"),
        )
        self.duration = h(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.",
            _VERB_HOST,
            LATENCY_BUCKETS,
        )
        self.request_size = h(
            "rest_client_request_size_bytes",
            "Request size in bytes. Broken down by verb and host.",
            _VERB_HOST,
            SIZE_BUCKETS,
        )
        self.response_size = h(
            "rest_client_response_size_bytes",
            "Response size in bytes. Broken down by verb and host.",
            _VERB_HOST,
            SIZE_BUCKETS,
        )
        self.limiter_duration = h(
            "rest_client_rate_limiter_duration_seconds",
            "Client side rate limiter latency in seconds. Broken down by verb, and host.",
            _VERB_HOST,
            LATENCY_BUCKETS,
        )
        self.retries = c(
            "rest_client_request_retries_total",
            "Number of request retries, partitioned by status code, verb, and host.",
            ("code", "verb", "host"),
        )
        self.dns_duration = h(
            "rest_client_dns_resolution_duration_seconds",
            "DNS resolver latency in seconds. Broken down by host.",
            ("host",),
            DNS_BUCKETS,
        )
        self.exec_calls = c(
            "rest_client_exec_plugin_call_total",
            "Number of calls to an exec plugin, partitioned by the type of event encountered"
            " (no_error, plugin_execution_error) and an exit code (0 if and only if the call"
            " succeeded).",
            ("code", "call_status"),
        )
        self.exec_rotation_age = h(
            "rest_client_exec_plugin_certificate_rotation_age",
            "Histogram of the number of seconds the last auth exec plugin client certificate"
            " lived before being rotated. If auth exec plugin client certificates are unused,"
            " histogram will contain no data.",
            (),
            ROTATION_AGE_BUCKETS,
        )
        # --- resilient_kube ---------------------------------------------------------------
        self.retry_reasons = c(
            "resilient_kube_retries_total",
            "Retries by the reason the attempt failed (status_503, reset, read_timeout, ...).",
            ("verb", "host", "reason"),
        )
        self.retry_wait = c(
            "resilient_kube_retry_wait_seconds_total",
            "Seconds calls waited between attempts (backoff and Retry-After).",
            _VERB_HOST,
        )
        self.failed_calls = c(
            "resilient_kube_failed_calls_total",
            "Calls that raised a resilient_kube error, by its class (DeadlineExceeded, ...).",
            ("verb", "host", "error"),
        )
        self.budget_refusals = c(
            "resilient_kube_retry_budget_refusals_total",
            "Retries the retry budget refused: the call ended with its last answer or error.",
            _VERB_HOST,
        )
        self.deadline_expiries = c(
            "resilient_kube_deadline_expiries_total",
            "Calls whose deadline ended them.",
            _VERB_HOST,
        )
        self.limiter_qps = _Gauge(
            "resilient_kube_rate_limiter_qps",
            "The client-side limiter's effective rate (requests per second) after 429 pushback.",
            ("host",),
        )
        self.flow_control_responses = c(
            "resilient_kube_flow_control_responses_total",
            "Responses by the API Priority and Fairness flow schema and priority level UIDs.",
            ("flow_schema", "priority_level"),
        )
        self.dns_lookups = c(
            "resilient_kube_dns_lookups_total",
            "DNS cache lookups by result: hit, miss, stale (served past its TTL), error.",
            ("host", "result"),
        )
        self.connections = c(
            "resilient_kube_pool_connections_total",
            "Pooled connections by event: opened, reused, expired (idle), retired (left DNS).",
            ("host", "event"),
        )
        self.watch_events = c(
            "resilient_kube_watch_events_total",
            "Watch events received, by type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).",
            ("kind",),
        )
        self.watch_restarts = c(
            "resilient_kube_watch_restarts_total",
            "Watch streams re-opened after a break, by reason.",
            ("reason",),
        )
        self.relists = c(
            "resilient_kube_informer_relists_total",
            "Informer lists, the first one included, by reason.",
            ("reason",),
        )
        self.last_event = _Gauge(
            "resilient_kube_watch_last_event_timestamp_seconds",
            "Unix time of the last watch event or bookmark (age: time() - this).",
        )
        self.credential_refreshes = c(
            "resilient_kube_credential_refreshes_total",
            "Credential refreshes by source (token_file, exec, ...) and result (ok, error).",
            ("source", "result"),
        )
        self.credential_duration = h(
            "resilient_kube_credential_refresh_duration_seconds",
            "Seconds a credential refresh took, by source.",
            ("source",),
            LATENCY_BUCKETS,
        )
        self.server_warnings = c(
            "resilient_kube_server_warnings_total",
            "Answers that carried a Warning header (deprecations, validation warnings).",
            ("host",),
        )
        self._counters = tuple(v for v in vars(self).values() if isinstance(v, _Counter))
        self._histograms = tuple(v for v in vars(self).values() if isinstance(v, _Histogram))
        self._gauges = (self.limiter_qps, self.last_event)
        #: Each exec plugin's (one per client) current certificate's notAfter, for the TTL gauge.
        self._certificates: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
        #: (code, method, host) -> its request count, request size row, response size row.
        self._attempt_cells: dict[tuple[str, str, str], _AttemptCells] = {}
        #: (method, host) -> its duration row, no-wait limiter count and rate limiter row.
        self._call_rows: dict[tuple[str, str], _CallRows] = {}

    # --- calls (EventSink) ---------------------------------------------------------------------

    # The three events every call sends look their label set up once, in a dict of references
    # to the counts and rows they update: one lookup, then a lock-free count or plain list
    # arithmetic under the lock.

    def attempt(  # noqa: PLR0917  the EventSink signature
        self,
        method: str,
        host: str,
        code: str,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        cells = self._attempt_cells.get((code, method, host))
        if cells is None:
            cells = self._new_attempt_cells(code, method, host)
        count, unsent, sent, received = cells
        next(count)
        if request_bytes:
            bucket = _bisect(_SIZES, request_bytes)
            lock = self._lock
            lock.acquire()  # not ``with``: its protocol costs more than the work (CPython 3.11)
            try:
                sent[bucket] += 1
                sent[-1] += request_bytes
            finally:
                lock.release()
        else:
            next(unsent)  # a GET's: no body, the first bucket, nothing to add to the sum
        if received is not None:
            bucket = _size_bucket(response_bytes)
            lock = self._lock
            lock.acquire()
            try:
                received[bucket] += 1
                received[-1] += response_bytes
            finally:
                lock.release()

    def limiter_wait(self, method: str, host: str, seconds: float) -> None:
        rows = self._call_rows.get((method, host))
        if rows is None:
            rows = self._new_call_rows(method, host)
        if not seconds:
            next(rows[1])  # most calls go at once: counted without the lock
            return
        waited = rows[2]
        bucket = _bisect(LATENCY_BUCKETS, seconds)
        lock = self._lock
        lock.acquire()
        try:
            waited[bucket] += 1
            waited[-1] += seconds
        finally:
            lock.release()

    def call_ended(  # noqa: PLR0917  the EventSink signature
        self,
        method: str,
        host: str,
        attempts: int,
        seconds: float,
        stop: str | None,
        error: str | None,
    ) -> None:
        rows = self._call_rows.get((method, host))
        if rows is None:
            rows = self._new_call_rows(method, host)
        took = rows[0]
        bucket = _bisect(LATENCY_BUCKETS, seconds)
        lock = self._lock
        lock.acquire()
        try:
            took[bucket] += 1
            took[-1] += seconds
        finally:
            lock.release()
        if stop is not None or error is not None:
            key = (method, host)
            with self._lock:
                if error is not None:
                    self.failed_calls.add((method, host, error))
                if stop == "budget":
                    self.budget_refusals.add(key)
                elif stop == "deadline" or error == "DeadlineExceeded":
                    self.deadline_expiries.add(key)

    def _new_attempt_cells(self, code: str, method: str, host: str) -> _AttemptCells:
        with self._lock:
            key = (method, host)
            cells = (
                self.requests.tick((code, method, host)),
                self.request_size.zero(key),
                self.request_size.row(key),
                None if code == NO_CODE else self.response_size.row(key),
            )
            self._attempt_cells[code, method, host] = cells
            return cells

    def _new_call_rows(self, method: str, host: str) -> _CallRows:
        with self._lock:
            key = (method, host)
            rows = self._call_rows[key] = (
                self.duration.row(key),
                self.limiter_duration.zero(key),
                self.limiter_duration.row(key),
            )
            return rows

    def retry(self, method: str, host: str, code: str, reason: str, wait: float) -> None:
        with self._lock:
            self.retries.add((code, method, host))
            self.retry_reasons.add((method, host, reason))
            self.retry_wait.add((method, host), wait)

    def server_warning(self, host: str, value: str) -> None:
        with self._lock:
            self.server_warnings.add((host,))

    # --- the limiter ---------------------------------------------------------------------------

    def rate_changed(self, host: str, qps: float) -> None:
        with self._lock:
            self.limiter_qps.values[host,] = qps

    def flow_control(self, flow_schema: str | None, priority_level: str | None) -> None:
        with self._lock:
            self.flow_control_responses.add((flow_schema or "", priority_level or ""))

    # --- DNS and the pool ----------------------------------------------------------------------

    def dns_lookup(self, host: str, result: str, seconds: float) -> None:
        with self._lock:
            self.dns_duration.observe((host,), seconds)
            self.dns_lookups.add((host, result))

    def connection(self, host: str, event: str) -> None:
        with self._lock:
            self.connections.add((host, event))

    # --- watches and informers -----------------------------------------------------------------

    def watch_event(self, kind: str) -> None:
        with self._lock:
            self.watch_events.add((kind,))
            self.last_event.values[()] = self._clock()

    def watch_restart(self, reason: str, wait: float) -> None:
        with self._lock:
            self.watch_restarts.add((reason,))

    def informer_relist(self, reason: str) -> None:
        with self._lock:
            self.relists.add((reason,))

    # --- credentials ---------------------------------------------------------------------------

    def credential_refresh(self, source: str, seconds: float, ok: bool) -> None:
        with self._lock:
            self.credential_refreshes.add((source, "ok" if ok else "error"))
            self.credential_duration.observe((source,), seconds)

    def exec_plugin_call(self, exit_code: int, call_status: str) -> None:
        with self._lock:
            self.exec_calls.add((str(exit_code), call_status))

    def exec_certificate(self, owner: object, not_after: float, rotated_age: float | None) -> None:
        with self._lock:
            self._certificates[owner] = not_after
            if rotated_age is not None:
                self.exec_rotation_age.observe((), rotated_age)

    # --- the prometheus_client collector -------------------------------------------------------

    def describe(self) -> Iterator[Any]:
        """Every family, without samples: how a registry learns the names, to refuse a clash."""
        return self._families(empty=True)

    def collect(self) -> Iterator[Any]:
        """Build every family from a consistent copy of the counts (prometheus_client calls this
        on each scrape)."""
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        counts: list[dict[_Labels, float]] = []
        rows: list[dict[_Labels, _Row]] = []
        values: list[dict[_Labels, float]] = []
        not_afters: list[float] = []
        if not empty:
            with self._lock:
                counts = [counter.snapshot() for counter in self._counters]
                rows = [histogram.snapshot() for histogram in self._histograms]
                values = [dict(g.values) for g in self._gauges]
                not_afters = list(self._certificates.values())
        for index, counter in enumerate(self._counters):
            family = CounterMetricFamily(counter.name, counter.doc, labels=counter.labels)
            for key, count in sorted(counts[index].items() if counts else ()):
                family.add_metric(key, count)
            yield family
        for index, histogram in enumerate(self._histograms):
            histogram_family = HistogramMetricFamily(
                histogram.name, histogram.doc, labels=histogram.labels
            )
            les = [floatToGoString(bound) for bound in histogram.bounds]  # type: ignore[no-untyped-call]
            les.append("+Inf")
            for key, row in sorted(rows[index].items() if rows else ()):
                total, buckets = 0.0, []
                for le, count in zip(les, row[:-1], strict=True):
                    total += count
                    buckets.append((le, total))
                histogram_family.add_metric(key, buckets, sum_value=row[-1])
            yield histogram_family
        for index, gauge in enumerate(self._gauges):
            gauge_family = GaugeMetricFamily(gauge.name, gauge.doc, labels=gauge.labels)
            for key, value in sorted(values[index].items() if values else ()):
                gauge_family.add_metric(key, value)
            yield gauge_family
        # client-go's: seconds until the soonest exec plugin certificate expires, +Inf with none.
        ttl = GaugeMetricFamily(
            "rest_client_exec_plugin_ttl_seconds",
            "Gauge of the shortest TTL (time-to-live) of the client certificate(s) managed by the"
            " auth exec plugin. The value is in seconds until certificate expiry (negative if"
            " already expired). If auth exec plugins are unused or manage no TLS certificates,"
            " the value will be +INF.",
        )
        if not empty:
            ttl.add_metric((), min(not_afters) - self._clock() if not_afters else math.inf)
        yield ttl


_LOCK = threading.Lock()
#: The registry and the sink of the one ``register()`` call, until ``unregister()``.
_REGISTERED: tuple[Any, ClientMetrics] | None = None


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            f"resilient_kube.metrics needs prometheus_client: {_EXTRA_HINT}", name=exc.name
        ) from None
    return prometheus_client


def register(registry: CollectorRegistry | None = None) -> ClientMetrics:
    """Export the metrics of every resilient_kube client in this process to ``registry``.

    Once per process, as client-go registers its metrics: a second call with the same registry
    returns the same ``ClientMetrics``.

    Args:
        registry: a ``prometheus_client.CollectorRegistry``; None is prometheus_client's default
            ``REGISTRY`` (what ``start_http_server`` serves).

    Raises:
        ImportError: prometheus_client is missing (``pip install 'resilient_kube[metrics]'``).
        ConfigError: already registered with another registry (``unregister()`` first).
        ValueError: ``registry`` already has one of these series from someone else.

    Example:
        >>> from resilient_kube import metrics
        >>> sink = metrics.register()  # doctest: +SKIP
    """
    global _REGISTERED  # noqa: PLW0603  one registration per process, by design
    prometheus = _prometheus()
    if registry is None:
        registry = prometheus.REGISTRY
    with _LOCK:
        if _REGISTERED is not None:
            if _REGISTERED[0] is registry:
                return _REGISTERED[1]
            raise ConfigError(
                f"registry={registry!r}: resilient_kube.metrics is already registered with"
                f" {_REGISTERED[0]!r}; metrics are registered once per process (call"
                " resilient_kube.metrics.unregister() first)"
            )
        sink = ClientMetrics()
        registry.register(sink)  # a name clash raises here, before any event is counted
        subscribe_everywhere(sink)
        _REGISTERED = (registry, sink)
        return sink


def registered() -> ClientMetrics | None:
    """The sink of the current ``register()``, or None."""
    current = _REGISTERED
    return None if current is None else current[1]


def unregister() -> None:
    """Undo ``register()``: clients stop reporting and the registry drops the series."""
    global _REGISTERED  # noqa: PLW0603  one registration per process, by design
    with _LOCK:
        if _REGISTERED is None:
            return
        registry, sink = _REGISTERED
        unsubscribe_everywhere(sink)
        registry.unregister(sink)
        _REGISTERED = None
