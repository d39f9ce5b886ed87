"""What the sync and the async driver share beyond the policy's rules: how a call's end and a
retry are told (the event sink, the log). Both drivers call these; neither repeats them."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from ._events import EventSink
from ._policy import Call, Retry

__all__ = ["end_call", "host_label", "log_retry"]

log = logging.getLogger("resilient_kube._transport")


def host_label(url: str) -> str:
    """``host[:port]`` of ``url`` as events label it (never the userinfo)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def end_call(events: EventSink, call: Call, host: str, began: float, error: str | None) -> None:
    """Report that ``call`` ended, ``began`` (``time.monotonic()``) seconds ago: with the class
    name of the error it raised, or None when it returned an answer."""
    events.call_ended(call.method, host, call.attempts, time.monotonic() - began, call.stop, error)


def log_retry(call: Call, decision: Retry) -> None:
    """One DEBUG line per retry: the attempt, its phase, the reason and the wait."""
    failure = call.failure
    log.debug(
        "retrying %s %s: attempt=%d phase=%s reason=%s wait=%.3fs",
        call.method,
        call.path(),
        call.attempts,
        "before-send" if failure is not None and not failure.sent else "after-send",
        decision.reason,
        decision.wait,
    )
