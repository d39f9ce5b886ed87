"""The rules of a resumable watch, with no I/O: what to ask for, and what to do after a break.

``Watch.stream`` (``_watch``) only opens streams, reads lines and sleeps; every decision is made
here, from the outcome it reports, so that a table of outcomes tests the rules on a fake clock:

=======================================  ====================================================
outcome                                   decision
=======================================  ====================================================
an event or bookmark delivered            remember its resourceVersion (the resume point)
the stream ended at its timeoutSeconds    re-open at once (``timeout``), or stop at the
                                          caller's ``timeout_seconds``
reset, truncated chunk, idle, early end   re-open from the resume point after a backoff wait
connect failure, 429, 5xx on a re-open    the same, the wait counting every wire attempt
410 Gone (status or ERROR event)          raise ``ResourceExpired`` at once
401, 403, any other 4xx, a bug            raise
=======================================  ====================================================

Restart reasons are a fixed set: ``reset``, ``truncated``, ``idle``, ``ended``, ``timeout``,
``connect``, ``status_<code>`` (429 and 5xx only).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import urllib3.exceptions as u3
from kubernetes.client.exceptions import ApiException

from ._backoff import Backoff
from .errors import ResourceExpired, TransportError

__all__ = [
    "MAX_SERVER_TIMEOUT",
    "MIN_SERVER_TIMEOUT",
    "Decision",
    "WatchRules",
    "classify_break",
]

#: Without a caller's ``timeout_seconds`` each request asks the server to end the stream after a
#: random 5 to 10 minutes, as client-go's reflector does (``minWatchTimeout * (1 + rand)``): the
#: API servers behind a load balancer then see their watches spread out and rebalance.
MIN_SERVER_TIMEOUT = 300
MAX_SERVER_TIMEOUT = 600

#: A clean end this close to the asked-for ``timeoutSeconds`` is the server keeping its word.
_TIMEOUT_SLACK = 1.0

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Decision:
    """What the watch does next.

    ``reopen``: open the stream again from ``resource_version`` after ``wait`` seconds,
    asking the server for ``timeout_seconds``; ``stop``: end the caller's stream cleanly;
    ``raise``: re-raise the error that was reported.
    """

    action: Literal["reopen", "stop", "raise"]
    wait: float = 0.0
    reason: str = ""
    resource_version: str | None = None
    timeout_seconds: int | None = None


def classify_break(error: BaseException) -> str | None:
    """The restart reason for ``error``, or None when re-opening cannot help.

    ``ResourceExpired`` and 410, 401 and 403, other 4xx answers and anything that is not a
    network or server condition (a bug, a decoding error) return None: the caller gets them.
    """
    if isinstance(error, ResourceExpired):
        return None
    if isinstance(error, ApiException):
        status = getattr(error, "status", None)
        if status in _RETRYABLE_STATUS:
            return f"status_{status}"
        return None
    if isinstance(error, u3.ReadTimeoutError):
        return "idle"
    if isinstance(error, TransportError):
        # Raised by resilient_kube's transport when a re-open ran out of attempts.
        if isinstance(error, u3.ProtocolError):
            return "reset"
        return "connect"
    if isinstance(error, u3.ProtocolError):
        cause = error.args[1] if len(error.args) > 1 else None
        if isinstance(cause, (u3.IncompleteRead, u3.InvalidChunkLength)) or "IncompleteRead" in str(
            error
        ):
            return "truncated"
        return "reset"
    if isinstance(error, (u3.NewConnectionError, u3.ConnectTimeoutError, u3.MaxRetryError)):
        return "connect"
    if isinstance(error, (u3.IncompleteRead, u3.InvalidChunkLength)):  # Defensive: unwrapped
        return "truncated"
    if isinstance(error, (ConnectionError, u3.HTTPError)):
        return "reset"
    return None


class WatchRules:
    """The decisions of one ``Watch.stream`` call: resume point, timeouts, backoff.

    Args:
        resource_version: the caller's ``resource_version``, or None.
        timeout_seconds: the caller's ``timeout_seconds`` (the whole stream ends then), or None
            (the stream runs until ``stop()``; each request asks for 5-10 minutes).
        backoff: the wait before each re-open; shared with an informer that owns the watch.
        clock: monotonic seconds.
        rng: draws each request's ``timeoutSeconds``.
    """

    def __init__(
        self,
        *,
        resource_version: str | None,
        timeout_seconds: float | None,
        backoff: Backoff,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._backoff = backoff
        #: The resourceVersion of the last event or bookmark delivered: the resume point.
        self.resource_version = resource_version or None
        self._ends_at = None if timeout_seconds is None else clock() + timeout_seconds
        self._opened_at = -math.inf
        self._asked: int | None = None
        #: Whether a stream was ever established (before that, failures go to the caller).
        self.established = False

    # --- requests ---------------------------------------------------------------------------

    def first(self) -> Decision:
        """The first request: from the caller's version, with the server timeout to ask for."""
        return self._reopen(0.0, "", 1)

    def opened(self) -> None:
        """The server answered 200: the stream is established."""
        self.established = True
        self._opened_at = self._clock()

    def delivered(self, resource_version: str | None) -> None:
        """An event or bookmark at ``resource_version`` reached the caller (or was skipped)."""
        if resource_version:
            self.resource_version = resource_version

    # --- outcomes ---------------------------------------------------------------------------

    def ended(self) -> Decision:
        """The server ended the stream cleanly."""
        elapsed = self._clock() - self._opened_at
        if self._asked is not None and elapsed + _TIMEOUT_SLACK >= self._asked:
            # The server kept its timeoutSeconds: a healthy end, re-open at once.
            if self._ends_at is not None and self._clock() + _TIMEOUT_SLACK >= self._ends_at:
                return Decision("stop")
            return self._reopen(0.0, "timeout", 1)
        return self.broke("ended")

    def broke(self, reason: str, attempts: int = 1) -> Decision:
        """The stream (or a re-open) failed for ``reason`` after ``attempts`` wire attempts."""
        return self._reopen(self._backoff.failure(attempts), reason, attempts)

    def failed(self, error: BaseException) -> Decision:
        """An exception while opening or reading: re-open after a backoff, or raise it."""
        reason = classify_break(error)
        if reason is None or not self.established:
            # Before a stream was ever established the caller gets the error, as from any call
            # (the transport has already retried it); 410, 401, 403 and bugs are never retried.
            return Decision("raise")
        attempts = getattr(error, "attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            attempts = 1
        return self.broke(reason, attempts)

    def _reopen(self, wait: float, reason: str, attempts: int) -> Decision:
        del attempts  # counted by the backoff already
        now = self._clock()
        if self._ends_at is None:
            asked = self._rng.randint(MIN_SERVER_TIMEOUT, MAX_SERVER_TIMEOUT)
        else:
            left = self._ends_at - now - wait
            if left < _TIMEOUT_SLACK and reason:
                return Decision("stop")
            asked = max(1, math.ceil(left))
        self._asked = asked
        return Decision(
            "reopen",
            wait=wait,
            reason=reason,
            resource_version=self.resource_version,
            timeout_seconds=asked,
        )
