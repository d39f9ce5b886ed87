"""OpenTelemetry traces for every resilient_kube client (``[otel]`` extra: the API only).

``instrument()`` once, and every call of every resilient_kube client in the process becomes a
client span, following the HTTP client semantic conventions::

    from resilient_kube import tracing

    tracing.instrument()                   # the global TracerProvider (bring your own SDK)

* one span per call, named after the verb (``GET``), kind ``CLIENT``, a child of the span that
  is current when the call starts: ``http.request.method``, ``server.address``, ``server.port``,
  ``http.response.status_code`` (of the answer the caller got), ``http.request.resend_count``
  (attempts after the first, when there were any), ``error.type`` (the resilient_kube error's
  class, or the status code for 4xx and 5xx answers; the span's status is then ERROR), and
  ``resilient_kube.stop`` when the call stopped retrying for a reason (``budget``,
  ``deadline``, ...);
* an event ``retry`` per retry (``resilient_kube.retry.reason``, ``resilient_kube.retry.wait``
  in seconds, and the failed attempt's ``http.response.status_code``), an event
  ``rate_limiter_wait`` when the client-side limiter held the call (``resilient_kube.wait``),
  and an event ``server_warning`` per ``Warning`` header;
* a W3C ``traceparent`` (the global propagator's headers) sent with every attempt, so that an
  API server with ``APIServerTracing`` joins its spans to the caller's trace.

Without ``instrument()`` nothing of OpenTelemetry is imported and no call pays for it. The sync
driver runs a call on one thread, so the open span is kept per thread from ``call_started`` to
``call_ended``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._events import NO_CODE, EventSink, subscribe_everywhere, unsubscribe_everywhere

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["instrument", "instrumented", "uninstrument"]

_EXTRA_HINT = "pip install 'resilient_kube[otel]'"


class _Tracing(EventSink):
    """The event sink that turns each call into a client span."""

    def __init__(self, tracer: Any, propagate: bool) -> None:
        from opentelemetry import propagate as propagation
        from opentelemetry import trace

        self._tracer = tracer
        self._inject = propagation.inject if propagate else None
        self._with_span = trace.set_span_in_context
        self._client = trace.SpanKind.CLIENT
        self._error = trace.StatusCode.ERROR
        #: This thread's open span and the code of its last attempt.
        self._local = threading.local()
        #: (method, host) -> the span's attributes at its start, shared (spans copy them).
        self._attributes: dict[tuple[str, str], dict[str, str | int]] = {}

    def call_started(self, method: str, host: str, headers: dict[str, str]) -> None:
        local = self._local
        left = getattr(local, "span", None)
        if left is not None:  # Defensive: a call that never reported its end
            left.end()
        attributes = self._attributes.get((method, host))
        if attributes is None:
            attributes = self._attributes[method, host] = _attributes(method, host)
        span = self._tracer.start_span(method, kind=self._client, attributes=attributes)
        local.span = span
        local.code = None
        # No valid context (the API's no-op tracer without a parent): nothing to propagate.
        if self._inject is not None and span.get_span_context().is_valid:
            self._inject(headers, context=self._with_span(span))

    def attempt(  # noqa: PLR0917  the EventSink signature
        self,
        method: str,
        host: str,
        code: str,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        self._local.code = code

    def retry(self, method: str, host: str, code: str, reason: str, wait: float) -> None:
        span = getattr(self._local, "span", None)
        if span is not None and span.is_recording():
            attributes: dict[str, str | float | int] = {
                "resilient_kube.retry.reason": reason,
                "resilient_kube.retry.wait": wait,
            }
            if code != NO_CODE:
                attributes["http.response.status_code"] = int(code)
            span.add_event("retry", attributes)

    def limiter_wait(self, method: str, host: str, seconds: float) -> None:
        if seconds > 0:
            span = getattr(self._local, "span", None)
            if span is not None and span.is_recording():
                span.add_event("rate_limiter_wait", {"resilient_kube.wait": seconds})

    def server_warning(self, host: str, value: str) -> None:
        span = getattr(self._local, "span", None)
        if span is not None and span.is_recording():
            span.add_event("server_warning", {"resilient_kube.warning": value})

    def call_ended(  # noqa: PLR0917  the EventSink signature
        self,
        method: str,
        host: str,
        attempts: int,
        seconds: float,
        stop: str | None,
        error: str | None,
    ) -> None:
        local = self._local
        span = getattr(local, "span", None)
        if span is None:  # the call began before instrument()
            return
        local.span = None
        if span.is_recording():
            code: str | None = local.code
            status = int(code) if code is not None and code != NO_CODE else None
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if attempts > 1:
                span.set_attribute("http.request.resend_count", attempts - 1)
            if stop is not None:
                span.set_attribute("resilient_kube.stop", stop)
            error_type = error if error is not None else code if status and status >= 400 else None
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(self._error)
        span.end()


def _attributes(method: str, host: str) -> dict[str, str | int]:
    """The HTTP client attributes known when a call starts."""
    address, _, port = host.rpartition(":")
    attributes: dict[str, str | int] = {"http.request.method": method}
    if address and port.isdigit():
        attributes["server.address"] = address.strip("[]")
        attributes["server.port"] = int(port)
    else:
        attributes["server.address"] = host
    return attributes


_LOCK = threading.Lock()
_SINK: _Tracing | None = None


def instrument(tracer_provider: TracerProvider | None = None, *, propagate: bool = True) -> None:
    """Trace every call of every resilient_kube client in this process.

    Calling it again replaces the earlier instrumentation (another provider, say).

    Args:
        tracer_provider: where spans go; None is OpenTelemetry's global provider (a no-op until
            the application installs an SDK).
        propagate: send the trace context (W3C ``traceparent``, through the global propagator)
            with every attempt.

    Raises:
        ImportError: opentelemetry-api is missing (``pip install 'resilient_kube[otel]'``).

    Example:
        >>> from resilient_kube import tracing
        >>> tracing.instrument()  # doctest: +SKIP
    """
    global _SINK  # noqa: PLW0603  one instrumentation per process, by design
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ImportError(
            f"resilient_kube.tracing needs opentelemetry-api: {_EXTRA_HINT}", name=exc.name
        ) from None
    from . import __version__

    tracer = trace.get_tracer("resilient_kube", __version__, tracer_provider=tracer_provider)
    sink = _Tracing(tracer, propagate)
    with _LOCK:
        if _SINK is not None:
            unsubscribe_everywhere(_SINK)
        subscribe_everywhere(sink)
        _SINK = sink


def instrumented() -> bool:
    """Whether ``instrument()`` is in effect."""
    return _SINK is not None


def uninstrument() -> None:
    """Stop tracing (a call in flight at that moment is never ended: its span is not exported)."""
    global _SINK  # noqa: PLW0603  one instrumentation per process, by design
    with _LOCK:
        if _SINK is not None:
            unsubscribe_everywhere(_SINK)
            _SINK = None
