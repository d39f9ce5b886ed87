"""The client-side rate limiter: a token bucket run as GCRA, slowed down by the server's 429s.

client-go limits every client to ``QPS`` requests per second with bursts of ``Burst``
(``flowcontrol.NewTokenBucketRateLimiter``); the Python client has no limiter at all.
``TokenBucket`` is that limiter, with the same knobs (``qps``, ``burst``) and the same log line,
built so that it is exact and cheap:

* **Virtual scheduling (GCRA, ITU-T I.371).** Instead of a token count refilled by a timer, the
  bucket keeps one number, the *theoretical arrival time* ``tat``: the instant at which the bucket
  would be empty if nothing else were taken. With ``T = 1/rate`` (the emission interval) and
  ``tau = (burst - 1)·T`` (the tolerance), a call arriving at ``now`` gets the slot::

      tat  = max(tat, now)          # an idle bucket refills, but never beyond full
      slot = tat - tau              # the earliest instant this call may start
      tat  = tat + T                # the next call's slot is one interval later
      wait = max(0, slot - now)

  The slot is reserved under a lock, so concurrent threads get distinct slots, and the sleep happens
  outside it. Sleeping late (the OS wakes threads 0.1-1 ms after the deadline) does not move later
  slots, so no rate is lost: the classic "sleep until one token has accrued, clamp at capacity"
  bucket runs about 2% slow at 100 QPS with burst 1 for exactly that reason.
* **Bound.** Any window of length ``W`` holds at most ``burst + qps·W`` slots, and a bucket that
  starts full hands out ``burst`` tokens at once.
* **Pushback.** A 429 halves the effective rate (``on_throttled``), at most once a second; answers
  that are not 429 let it grow back by ``√2`` per second since (``on_success``, which says why).
* **Slow start of the burst.** A 429 also shrinks what the bucket may save up to one token, and
  each answer that is not 429 lets it save up one more, up to ``burst``: calls that waited out a
  Retry-After go out paced, not all at once into the server that refused them, and the burst is
  back after ``burst`` answers (TCP's slow start after a loss, RFC 5681).

Example:
    >>> bucket = TokenBucket(qps=5.0, burst=2)
    >>> bucket.acquire(), bucket.acquire()
    (0.0, 0.0)
    >>> bucket.acquire(timeout=0.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    resilient_kube.errors.RateLimitTimeout: client-side throttling: ...
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Final, NamedTuple

from ._events import EventSink
from .errors import RateLimitTimeout

__all__ = ["LimiterStats", "TokenBucket"]

log = logging.getLogger(__name__)

#: A wait longer than this is logged (client-go ``longThrottleLatency``, ``rest/request.go``).
LONG_THROTTLE_LATENCY: Final = 0.05
#: At most one throttling log line per this many seconds.
_LOG_INTERVAL: Final = 1.0
#: ``on_throttled`` multiplies the effective rate by this (TCP's and AIMD's classic one half).
DECREASE_FACTOR: Final = 0.5
#: The effective rate never falls below ``max(qps / 16, 1/s)`` (nor above ``qps``): four halvings.
_FLOOR_DIVISOR: Final = 16.0
_FLOOR_MIN_QPS: Final = 1.0
#: A 429 within this many seconds of the last decrease does not decrease again. The answers to
#: requests already in flight when the rate dropped carry no news about the new rate (TCP cuts its
#: window once per round trip, RFC 5681 section 3.1), and APF's Retry-After starts at 1 s.
DECREASE_HOLD: Final = 1.0
#: While answers come and no 429 does, the rate grows by this factor per second: 2 s back from one
#: halving, 8 s from the floor. Below 2, so that a 429 a second still drives the rate down.
RECOVERY_PER_SECOND: Final = math.sqrt(2.0)
#: Waits this short are rounding noise from adding 1/rate to ``tat`` (a nanosecond, below any
#: clock's resolution), not waits.
_EPSILON: Final = 1e-9
#: Distinct flow-control UIDs kept per header; later ones are counted under ``"other"``.
_MAX_FLOW_KEYS: Final = 256


class LimiterStats(NamedTuple):
    """What the client-side limiter did (``Stats.limiter``)."""

    #: Tokens handed out.
    admitted: int
    #: Acquisitions that had to wait for their slot.
    waited: int
    #: Total seconds the schedule made callers wait.
    wait_seconds: float
    #: The current rate after pushback (``qps`` when no 429 was seen lately).
    effective_qps: float
    #: 429 responses reported through ``on_throttled``.
    throttled: int
    #: ``X-Kubernetes-PF-FlowSchema-UID`` -> responses that carried it.
    flow_schemas: dict[str, int]
    #: ``X-Kubernetes-PF-PriorityLevel-UID`` -> responses that carried it.
    priority_levels: dict[str, int]


class TokenBucket:
    """A thread-safe token bucket of ``qps`` tokens per second and ``burst`` capacity, started full.

    Args:
        qps: sustained tokens per second (> 0).
        burst: tokens that may be taken at once (an integer >= 1).
        clock: monotonic seconds; sleep: how to wait (both injectable for tests).
        events: told of every change of the effective rate (``rate_changed``).
        host: ``host:port`` of the client's API server, the label of those events.

    The arguments are trusted: ``Settings`` validated them (``qps`` in [0.001, 1e6], ``burst``
    an integer >= 1).

    Example:
        >>> bucket = TokenBucket(qps=50.0, burst=100)
        >>> bucket.acquire(timeout=1.0)  # seconds waited
        0.0
    """

    __slots__ = (
        "_admitted",
        "_burst",
        "_cap",
        "_changed_at",
        "_clock",
        "_decreased_at",
        "_events",
        "_floor",
        "_flow_schemas",
        "_host",
        "_interval",
        "_lock",
        "_logged_at",
        "_priority_levels",
        "_qps",
        "_rate",
        "_sleep",
        "_tat",
        "_tau",
        "_throttled",
        "_throttled_at",
        "_wait_seconds",
        "_waited",
    )

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        events: EventSink | None = None,
        host: str = "",
    ) -> None:
        #: Told of every change of the effective rate (``rate_changed``), for ``host``.
        self._events = events if events is not None else EventSink()
        self._host = host
        self._qps = float(qps)
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._floor = min(self._qps, max(self._qps / _FLOOR_DIVISOR, _FLOOR_MIN_QPS))
        self._rate = self._qps
        self._interval = 1.0 / self._qps
        # What the bucket may save up: `burst`, shrunk by a 429 and grown back by answers.
        self._cap = burst
        self._tau = (burst - 1) * self._interval
        # tat <= now means a full bucket: the first `burst` calls go at once.
        self._tat = clock()
        self._decreased_at = -math.inf
        # When the rate last changed or a 429 came: recovery counts from there.
        self._changed_at = -math.inf
        # When the last 429 came: answers within DECREASE_HOLD of it do not grow the burst.
        self._throttled_at = -math.inf
        self._logged_at = -math.inf
        self._admitted = 0
        self._waited = 0
        self._wait_seconds = 0.0
        self._throttled = 0
        self._flow_schemas: dict[str, int] = {}
        self._priority_levels: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"TokenBucket(qps={self._qps!r}, burst={self._burst!r})"

    @property
    def qps(self) -> float:
        """The configured rate in tokens per second."""
        return self._qps

    @property
    def burst(self) -> int:
        """The configured capacity."""
        return self._burst

    def reserve(self, timeout: float | None = None) -> float:
        """Take one token's slot without sleeping; return the seconds until it (0.0: now).

        The slot is ``max(now, max(tat, now) - (burst - 1)/rate)``: see the module docstring.
        The caller waits the returned time however it waits (``acquire`` sleeps; an asyncio
        driver awaits): the slot is its own either way.

        Args:
            timeout: the longest acceptable wait in seconds; None waits as long as it takes.

        Raises:
            RateLimitTimeout: the wait would be longer than ``timeout``. It is raised at once,
                without taking the token; ``wait`` holds the wait refused.
        """
        with self._lock:
            now = self._clock()
            tat = self._tat
            if tat < now:  # noqa: PLR1730  max() would cost 80 ns of a 1 µs fast path
                tat = now
            wait = tat - self._tau - now
            if wait <= _EPSILON:
                # Fast path: a token is in the bucket.
                self._tat = tat + self._interval
                self._admitted += 1
                return 0.0
            if timeout is not None and wait > timeout + _EPSILON:
                raise RateLimitTimeout(
                    f"client-side throttling: the rate limiter (qps={self._rate:.4g}, "
                    f"burst={self._burst}) would wait {_seconds(wait)}, longer than the "
                    f"{_seconds(max(timeout, 0.0))} left",
                    wait=wait,
                )
            self._tat = tat + self._interval
            self._admitted += 1
            self._waited += 1
            self._wait_seconds += wait
            report = wait > LONG_THROTTLE_LATENCY and now - self._logged_at >= _LOG_INTERVAL
            if report:
                self._logged_at = now
            rate = self._rate
        if report:
            # client-go's wording (rest/request.go), so operators recognise it.
            log.info(
                "Waited for %.3fs due to client-side throttling, not priority and fairness "
                "(qps=%.4g of %.4g, burst=%d)",
                wait,
                rate,
                self._qps,
                self._burst,
            )
        return wait

    def acquire(self, timeout: float | None = None) -> float:
        """Take one token, sleeping until its slot if needed; return the seconds waited.

        ``reserve`` and then the injected ``sleep``; the arguments and errors are ``reserve``'s.
        """
        wait = self.reserve(timeout)
        if wait:
            self._sleep(wait)
        return wait

    def on_throttled(self) -> None:
        """The server answered 429: empty the bucket and halve the effective rate.

        ``rate = max(rate / 2, floor)`` with ``floor = min(qps, max(qps/16, 1))``, at most once per
        ``DECREASE_HOLD`` (1 s): a burst of 429s for requests that were already in flight counts
        as one signal, as TCP cuts its window once per round trip. Every 429 also spends the
        saved-up burst and lets the bucket save up one token only, until answers grow it back,
        and restarts the rate's recovery from now.
        """
        with self._lock:
            self._throttled += 1
            now = self._clock()
            # The server has no room for a burst: spend the saved-up one and save up no other, so
            # every thread is paced at the (reduced) rate. The next slot stays where it is, at
            # `now` or after the callers already waiting: no token is created, none is lost.
            self._tat = max(self._tat, now + self._tau) - self._tau
            self._cap = 1
            self._tau = 0.0
            self._changed_at = now
            self._throttled_at = now
            if now - self._decreased_at < DECREASE_HOLD:
                return
            self._decreased_at = now
            new = max(self._rate * DECREASE_FACTOR, self._floor)
            if new < self._rate:
                self._set_rate(new, now)

    def on_success(self) -> None:
        """An answer that was not 429: let the bucket save up one more token, up to ``burst``, and
        grow the effective rate back towards ``qps``.

        The burst comes back with answers, one token each, as TCP's window grows with ACKs in slow
        start, from ``DECREASE_HOLD`` after the last 429 (earlier answers are to requests sent
        before it): a client that sends nothing learns nothing, so it does not regain the right
        to a burst. The rate comes back with time, ``x RECOVERY_PER_SECOND`` (``√2``) per second since
        the last 429 or change, applied at each answer: 2 s from one halving, 8 s from the floor.
        Counting answers instead (TCP's ``+1/cwnd`` per ACK) heals slowly exactly when traffic
        comes in bursts with pauses between them, as a controller's resyncs do: the rate then
        stays low for many seconds after the server has recovered, and paces whole bursts behind
        it. The factor is below 2, so that a 429 each second still drives the rate down.
        """
        # Lock-free check for the common case (no pushback): reading attributes is atomic, and a
        # decrease racing with it only means this answer does not count towards recovery.
        if self._rate >= self._qps and self._cap >= self._burst:
            return
        with self._lock:
            now = self._clock()
            # Answers within DECREASE_HOLD of a 429 are mostly to requests sent before it, which
            # carry no news about the reduced rate: they do not grow the burst.
            if self._cap < self._burst and now - self._throttled_at >= DECREASE_HOLD:
                # Room for one more token, which the bucket still has to earn at the rate: the
                # next slot stays where it is.
                self._tat = max(self._tat, now) + self._interval
                self._cap += 1
                self._tau = (self._cap - 1) * self._interval
            rate = self._rate
            if rate < self._qps:
                # Past the time to grow back to qps, the power would only overflow.
                elapsed = now - self._changed_at
                full = math.log(self._qps / rate, RECOVERY_PER_SECOND)
                grown = self._qps if elapsed >= full else rate * RECOVERY_PER_SECOND**elapsed
                self._set_rate(min(self._qps, grown), now)
                self._changed_at = now

    def record_flow_control(
        self, flow_schema_uid: str | None, priority_level_uid: str | None
    ) -> None:
        """Count the APF flow schema and priority level a response was classified into.

        The values are the ``X-Kubernetes-PF-FlowSchema-UID`` and
        ``X-Kubernetes-PF-PriorityLevel-UID`` headers (UIDs, not names); empty or None is skipped.
        """
        with self._lock:
            if flow_schema_uid:
                _count(self._flow_schemas, flow_schema_uid)
            if priority_level_uid:
                _count(self._priority_levels, priority_level_uid)

    def stats(self) -> LimiterStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return LimiterStats(
                admitted=self._admitted,
                waited=self._waited,
                wait_seconds=self._wait_seconds,
                effective_qps=self._rate,
                throttled=self._throttled,
                flow_schemas=dict(self._flow_schemas),
                priority_levels=dict(self._priority_levels),
            )

    def _set_rate(self, rate: float, now: float) -> None:
        """Switch to ``rate`` at ``now`` without creating tokens or reordering slots (lock held).

        With ``cap`` what the bucket may save up now and ``owed = max(tat - now, 0) / T`` the tokens
        taken and not yet refilled:

        * ``owed < cap`` (the last slot handed out is in the past): keep the tokens in the bucket,
          ``cap - owed``, as they are, so ``tat = now + owed·T'``;
        * ``owed >= cap`` (callers are sleeping towards reserved slots, the last one at
          ``L = tat - cap·T``): keep their slots and put the next one at ``L + T'``, so
          ``tat = tat + cap·(T' - T)``.

        Both agree at ``owed = cap``. Tokens are never created, so no burst follows a change.
        """
        interval = 1.0 / rate
        tat = self._tat
        owed = (tat - now) / self._interval if tat > now else 0.0
        if owed < self._cap:
            self._tat = now + owed * interval
        else:
            self._tat = tat + self._cap * (interval - self._interval)
        self._rate = rate
        self._interval = interval
        self._tau = (self._cap - 1) * interval
        self._events.rate_changed(self._host, rate)

    def _after_fork(self) -> None:
        """In a forked child: a new lock (one a parent thread held at the fork stays held)."""
        self._lock = threading.Lock()


def _seconds(seconds: float) -> str:
    """A wait for a message: ``0.250s``, or ``more than a day`` for the absurd ones."""
    return f"{seconds:.3f}s" if seconds < 86400 else "more than a day"


def _count(counts: dict[str, int], key: str) -> None:
    if key not in counts and len(counts) >= _MAX_FLOW_KEYS:
        key = "other"
    counts[key] = counts.get(key, 0) + 1
