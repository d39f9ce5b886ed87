"""What may be retried, how long to wait, and how many retries the traffic can afford.

The attempt loop in ``_transport`` asks three questions after every failed attempt:

* ``classify_error`` / ``classify_status``: why did it fail, and may this verb repeat it?
* ``retry_after``: did the server say when to come back (RFC 9110 section 10.2.3)?
* ``RetryBudget.try_withdraw``: do retries still make up less than their allowed share?
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

import urllib3.exceptions as u3

__all__ = [
    "IDEMPOTENT_METHODS",
    "Failure",
    "RetryBudget",
    "classify_error",
    "classify_status",
    "parse_retry_after",
    "retry_after",
]

#: Verbs whose repetition cannot change the outcome (RFC 9110 section 9.2.2). Kubernetes makes PUT
#: and DELETE safe to repeat: a repeated PUT carries the same resourceVersion, a repeated DELETE
#: meets 404. POST creates and PATCH may apply a JSON patch twice.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

#: 5xx answers that a safe verb may repeat: the server or a proxy in front of it had a bad moment.
_TRANSIENT_STATUSES: Final = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed.

    ``reason`` is a short label for logs and stats (``connect_timeout``, ``status_503``, ...).
    ``sent`` is False when the request cannot have reached the server, so any verb may repeat it.
    ``retryable`` is False for failures that repeating cannot fix.
    """

    reason: str
    sent: bool
    retryable: bool = True


def classify_error(error: BaseException) -> Failure:
    """Classify an exception raised by urllib3 during one attempt.

    The most specific class wins: urllib3 derives ``NameResolutionError`` from
    ``NewConnectionError`` and that from ``ConnectTimeoutError``.
    """
    if isinstance(error, u3.NameResolutionError):
        return Failure("dns", sent=False)
    if isinstance(error, u3.NewConnectionError):
        return Failure("connect_error", sent=False)
    if isinstance(error, u3.ConnectTimeoutError):
        return Failure("connect_timeout", sent=False)
    if isinstance(error, u3.ProxyError):
        return Failure("proxy", sent=False)
    if isinstance(error, u3.SSLError):
        # A certificate that does not verify will not verify on the next try either.
        cause = error.args[0] if error.args else None
        permanent = isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(
            error
        )
        return Failure("tls", sent=False, retryable=not permanent)
    if isinstance(error, u3.ReadTimeoutError):
        return Failure("read_timeout", sent=True)
    if isinstance(error, (u3.ProtocolError, u3.IncompleteRead, ConnectionError)):
        text = str(error)
        if "IncompleteRead" in text or isinstance(error, u3.IncompleteRead):
            return Failure("truncated", sent=True)
        if "reset" in text.lower():
            return Failure("reset", sent=True)
        return Failure("disconnected", sent=True)
    # Defensive: anything else (a bug, a decoding error) is not a network condition.
    return Failure(type(error).__name__, sent=True, retryable=False)


def classify_status(status: int, *, has_retry_after: bool) -> Failure | None:
    """Classify an HTTP status; None means the response is final and goes back to the caller.

    429, and 503 with a Retry-After, mean the server refused before doing any work: every verb may
    repeat them. Other transient 5xx answers may have done work: only safe verbs repeat them.
    """
    if status == 429 or (status == 503 and has_retry_after):
        return Failure(f"status_{status}", sent=False)
    if status in _TRANSIENT_STATUSES:
        return Failure(f"status_{status}", sent=True)
    return None


def parse_retry_after(value: str, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header value, or None if it does not parse.

    Both RFC 9110 forms are accepted: delay-seconds (``"3"``) and an HTTP-date
    (``"Wed, 21 Oct 2026 07:28:00 GMT"``). A date in the past means no wait.

    Example:
        >>> parse_retry_after("2")
        2.0
    """
    text = value.strip()
    # isdigit() alone accepts '²' and other Unicode digits; RFC 9110 means ASCII 0-9.
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # Defensive: RFC 9110 dates are GMT; obsolete forms may lack a zone.
        return None
    return max(0.0, when.timestamp() - now())


def retry_after(headers: object, body: bytes | None) -> float | None:
    """The delay the server asked for: the Retry-After header, else a Status body's
    ``details.retryAfterSeconds`` (the API server sets both; aggregated APIs sometimes only one).
    """
    header = headers.get("Retry-After") if hasattr(headers, "get") else None
    if isinstance(header, str):
        parsed = parse_retry_after(header)
        if parsed is not None:
            return parsed
    if body and body[:1] == b"{":
        try:
            status = json.loads(body)
        except ValueError:
            return None
        details = status.get("details") if isinstance(status, dict) else None
        seconds = details.get("retryAfterSeconds") if isinstance(details, dict) else None
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
            return float(seconds)
    return None


class RetryBudget:
    """Retries may add only ``ratio`` of the calls of the last ``window`` seconds, plus a floor.

    Over any window: ``retries <= ratio * calls + min_per_second * window`` (Finagle's
    RetryBudget, Envoy's retry_budget). Under a total outage the wire load is therefore at most
    ``(1 + ratio) * offered + min_per_second``, instead of ``max_attempts * offered``.

    Calls are not counted here: ``calls`` reads the transport's running total (a lock-free
    counter), so the hot path takes no lock for the budget. The budget keeps a snapshot of that
    total at most once a second, when a retry is asked for, and measures the window from the
    latest snapshot at or before its start: one-second resolution while retries happen, and a
    more generous count (never a stricter one) after a quiet spell.
    """

    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        window: float,
        *,
        calls: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._floor = min_per_second * window
        self._window = window
        self._calls = calls
        self._clock = clock
        self._lock = threading.Lock()
        #: (time, calls so far), oldest first; the first is the latest at or before the window.
        self._snapshots: deque[tuple[float, int]] = deque([(clock(), calls())])
        #: When each retry in the window was granted.
        self._retries: deque[float] = deque()

    def try_withdraw(self) -> bool:
        """Count one retry if the budget allows it; False means the retry must not be sent."""
        with self._lock:
            now = self._clock()
            start = now - self._window
            total = self._calls()
            snapshots = self._snapshots
            if now - snapshots[-1][0] >= 1.0:
                snapshots.append((now, total))
            while len(snapshots) > 1 and snapshots[1][0] <= start:
                snapshots.popleft()
            retries = self._retries
            while retries and retries[0] <= start:
                retries.popleft()
            if len(retries) + 1 > self._ratio * (total - snapshots[0][1]) + self._floor:
                return False
            retries.append(now)
            return True

    def _after_fork(self) -> None:
        """In a forked child: a new lock (one a parent thread held at the fork stays held)."""
        self._lock = threading.Lock()
