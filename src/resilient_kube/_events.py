"""The event sink: one small protocol every layer reports what it did to.

The transport, the limiter, the DNS cache, the pool, watches and informers do not keep counters
or metrics themselves: they call one method of an ``EventSink`` per thing that happened. Every
method here does nothing, so a subscriber overrides the ones it needs, and a new event costs the
others nothing (client-go's ``tools/metrics`` interfaces with no-op defaults do the same).

Subscribers: ``Counters`` (behind ``stats()``), and whatever the user adds with
``ApiClient.subscribe`` (Prometheus, OpenTelemetry). A sink is called on the thread doing the
work, often with a lock of the caller's held: it must be quick, must not block and must not
raise. ``Fanout`` shields the caller from a subscriber that raises anyway.

Labels are bounded by construction: ``method`` is the HTTP verb, ``host`` is ``host:port`` of the
API server, ``code`` is the status as text (``"200"``) or ``"<error>"`` when no answer came, as in
client-go; ``reason`` comes from a fixed set (``docs/architecture.md`` lists them).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["NO_CODE", "EventSink", "Fanout", "subscribe_everywhere", "unsubscribe_everywhere"]

log = logging.getLogger(__name__)

#: ``code`` of an attempt that got no HTTP answer (client-go's ``"<error>"``).
NO_CODE = "<error>"


class EventSink:
    """Receives events; every method is a no-op until a subscriber overrides it."""

    __slots__ = ()

    # --- calls and attempts (the transport) -------------------------------------------------
    def call_started(self, method: str, host: str, headers: dict[str, str]) -> None:
        """A call begins. ``headers`` starts empty: what a subscriber puts there is sent with
        every attempt of this call (a W3C ``traceparent``, for example)."""

    def attempt(  # noqa: PLR0917  once per attempt: positional arguments are the cheapest
        self,
        method: str,
        host: str,
        code: str,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        """One request went on the wire and ended: with an HTTP ``code`` or ``NO_CODE``."""

    def retry(self, method: str, host: str, code: str, reason: str, wait: float) -> None:
        """The call will be sent again after ``wait`` seconds because of ``reason``."""

    def call_ended(  # noqa: PLR0917  once per call: positional arguments are the cheapest
        self,
        method: str,
        host: str,
        attempts: int,
        seconds: float,
        stop: str | None,
        error: str | None,
    ) -> None:
        """A call ended after ``attempts`` wire attempts and ``seconds`` (limiter waits,
        attempts and backoff: client-go's request latency).

        ``stop`` is None when an answer went back to the caller without a reason to retry, or
        why the call stopped trying: ``attempts``, ``deadline``, ``budget``, ``retry_after``,
        ``final`` (the failure cannot be repeated), ``rate_limit``. ``error`` is the class name
        of the error the call raised (``DeadlineExceeded``, ...), or None when it returned.
        """

    def server_warning(self, host: str, value: str) -> None:
        """An answer carried a ``Warning`` header (RFC 7234 form, as the API server sends:
        ``299 - "text"``, several joined by commas); ``value`` is the header as it came."""

    # --- the limiter -----------------------------------------------------------------------
    def limiter_wait(self, method: str, host: str, seconds: float) -> None:
        """A call waited ``seconds`` for its slot (0.0 when it went at once)."""

    def rate_changed(self, host: str, qps: float) -> None:
        """The limiter of the client of ``host`` changed its effective rate (429 pushback, or
        recovery)."""

    def flow_control(self, flow_schema: str | None, priority_level: str | None) -> None:
        """A response carried API Priority and Fairness UIDs."""

    # --- DNS and the pool ------------------------------------------------------------------
    def dns_lookup(self, host: str, result: str, seconds: float) -> None:
        """A name was looked up: ``result`` is ``hit``, ``miss``, ``stale`` or ``error``."""

    def connection(self, host: str, event: str) -> None:
        """A pooled connection was ``opened``, ``reused``, ``expired`` or ``retired``."""

    # --- watches and informers --------------------------------------------------------------
    def watch_event(self, kind: str) -> None:
        """A watch delivered an event of ``kind`` (``ADDED``, ``BOOKMARK``, ...)."""

    def watch_restart(self, reason: str, wait: float) -> None:
        """A watch stream broke for ``reason`` and is re-opened after ``wait`` seconds."""

    def informer_relist(self, reason: str) -> None:
        """An informer listed again (``initial``, ``expired``, ...)."""

    # --- credentials -----------------------------------------------------------------------
    def credential_refresh(self, source: str, seconds: float, ok: bool) -> None:
        """A credential source (``token_file``, ``exec``, ...) fetched fresh credentials."""

    def exec_plugin_call(self, exit_code: int, call_status: str) -> None:
        """An exec plugin was run, as client-go counts it: ``call_status`` is ``no_error`` (it
        exited 0), ``plugin_execution_error`` (another status; -1 when a signal or the timeout
        ended it) or ``plugin_not_found_error`` (it could not start; ``exit_code`` 1)."""

    def exec_certificate(self, owner: object, not_after: float, rotated_age: float | None) -> None:
        """The exec plugin of ``owner`` (one per client) handed out a new client certificate,
        valid until ``not_after`` (Unix time). ``rotated_age``: how long the certificate it
        replaces had been valid (now minus its notBefore), or None for the first."""


class Fanout(EventSink):
    """Sends every event to each of ``sinks`` that handles it, in order, and to every sink added
    process-wide with ``subscribe_everywhere``; one that raises is logged and skipped.

    Built for the hot path: for each event the fanout keeps a ready function, set on the instance
    whenever its sinks change. No sink that handles an event: a no-op. Only trusted sinks (their
    class sets ``trusted = True``, as ``Counters`` and the metrics do: they cannot raise): their
    bound methods called one after the other, the only one called directly.
    """

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self._own: tuple[EventSink, ...] = tuple(sinks)
        self._lock = threading.Lock()
        with _EVERYWHERE_LOCK:
            _FANOUTS.add(self)
            self._rebuild()

    @property
    def sinks(self) -> tuple[EventSink, ...]:
        """This fanout's own sinks, then the process-wide ones."""
        return self._own + _EVERYWHERE

    def _after_fork(self) -> None:
        """In a forked child: a new lock (one a parent thread held at the fork stays held)."""
        self._lock = threading.Lock()

    def add(self, sink: EventSink) -> None:
        """Subscribe ``sink`` to every later event."""
        with self._lock:
            if sink not in self._own:
                self._own = (*self._own, sink)
            self._rebuild()

    def remove(self, sink: EventSink) -> None:
        """Unsubscribe ``sink``; unknown sinks are ignored."""
        with self._lock:
            self._own = tuple(s for s in self._own if s is not sink)
            self._rebuild()

    def _rebuild(self) -> None:
        sinks = self.sinks
        for name in _EVENTS:
            handlers = [
                getattr(sink, name)
                for sink in sinks
                if getattr(type(sink), name) is not getattr(EventSink, name)
            ]
            setattr(self, name, _dispatcher(name, handlers))


#: Every event's name: the public methods of ``EventSink``.
_EVENTS: Final = tuple(name for name in vars(EventSink) if not name.startswith("_"))

_EVERYWHERE_LOCK = threading.Lock()
_EVERYWHERE: tuple[EventSink, ...] = ()
_FANOUTS: weakref.WeakSet[Fanout] = weakref.WeakSet()


def subscribe_everywhere(sink: EventSink) -> None:
    """Send the events of every client, those alive and those to come, to ``sink`` as well
    (``resilient_kube.metrics.register`` does this, as client-go registers its metrics once)."""
    global _EVERYWHERE  # noqa: PLW0603  one process-wide list, by design
    with _EVERYWHERE_LOCK:
        if sink in _EVERYWHERE:
            return
        _EVERYWHERE = (*_EVERYWHERE, sink)
        for fanout in list(_FANOUTS):
            with fanout._lock:
                fanout._rebuild()


def unsubscribe_everywhere(sink: EventSink) -> None:
    """Undo ``subscribe_everywhere``."""
    global _EVERYWHERE  # noqa: PLW0603  one process-wide list, by design
    with _EVERYWHERE_LOCK:
        _EVERYWHERE = tuple(s for s in _EVERYWHERE if s is not sink)
        for fanout in list(_FANOUTS):
            with fanout._lock:
                fanout._rebuild()


def _noop(*args: object) -> None:
    pass


def _dispatcher(name: str, handlers: list[Callable[..., None]]) -> Callable[..., None]:
    if not handlers:
        return _noop
    chain = tuple(handlers)
    if all(getattr(handler.__self__, "trusted", False) for handler in chain):  # type: ignore[attr-defined]
        # Sinks that cannot raise (Counters, the metrics): called without a guard or a loop.
        if len(chain) == 1:
            return chain[0]
        if len(chain) == 2:
            first, second = chain

            def both(*args: object) -> None:
                first(*args)
                second(*args)

            return both

        def each(*args: object) -> None:
            for handler in chain:
                handler(*args)

        return each

    def dispatch(*args: object) -> None:
        for handler in chain:
            try:
                handler(*args)
            except Exception:
                log.exception("event sink %r failed on %s", handler.__self__, name)  # type: ignore[attr-defined]

    return dispatch
