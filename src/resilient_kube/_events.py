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
from collections.abc import Iterable

__all__ = ["NO_CODE", "EventSink", "Fanout"]

log = logging.getLogger(__name__)

#: ``code`` of an attempt that got no HTTP answer (client-go's ``"<error>"``).
NO_CODE = "<error>"


class EventSink:
    """Receives events; every method is a no-op until a subscriber overrides it."""

    __slots__ = ()

    # --- calls and attempts (the transport) -------------------------------------------------
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

    def call_ended(self, method: str, host: str, attempts: int, stop: str | None) -> None:
        """A call ended after ``attempts`` wire attempts.

        ``stop`` is None when the last answer went back to the caller as it came, or why the
        call stopped trying: ``attempts``, ``deadline``, ``budget``, ``retry_after``, ``final``
        (the failure cannot be repeated), ``rate_limit``.
        """

    # --- the limiter -----------------------------------------------------------------------
    def limiter_wait(self, method: str, host: str, seconds: float) -> None:
        """A call waited ``seconds`` for its slot (0.0 when it went at once)."""

    def rate_changed(self, qps: float) -> None:
        """The limiter's effective rate changed (429 pushback, or recovery)."""

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


class Fanout(EventSink):
    """Sends every event to each of ``sinks``, in order; one that raises is logged and skipped.

    The list can grow while events flow (``add``): readers take the current tuple without a lock.
    """

    __slots__ = ("_lock", "_sinks")

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self._sinks: tuple[EventSink, ...] = tuple(sinks)
        self._lock = threading.Lock()

    @property
    def sinks(self) -> tuple[EventSink, ...]:
        return self._sinks

    def _after_fork(self) -> None:
        """In a forked child: a new lock (one a parent thread held at the fork stays held)."""
        self._lock = threading.Lock()

    def add(self, sink: EventSink) -> None:
        """Subscribe ``sink`` to every later event."""
        with self._lock:
            if sink not in self._sinks:
                self._sinks = (*self._sinks, sink)

    def remove(self, sink: EventSink) -> None:
        """Unsubscribe ``sink``; unknown sinks are ignored."""
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)


def _forward(name: str) -> object:
    def forward(self: Fanout, *args: object) -> None:
        for sink in self._sinks:
            try:
                getattr(sink, name)(*args)
            except Exception:
                log.exception("event sink %r failed on %s", sink, name)

    forward.__name__ = name
    forward.__doc__ = getattr(EventSink, name).__doc__
    return forward


for _name in [n for n in vars(EventSink) if not n.startswith("_")]:
    setattr(Fanout, _name, _forward(_name))
del _name
