"""Faults the fake server can serve instead of (or before) a normal answer, and their rules."""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from email.utils import parsedate_to_datetime
from typing import NamedTuple, TypeAlias

__all__ = [
    "HTTP_METHODS",
    "KUBERNETES_VERBS",
    "Capacity",
    "CloseConnection",
    "Delay",
    "EndWatch",
    "Fault",
    "FaultRules",
    "Overload",
    "Picked",
    "RequestInfo",
    "ResetConnection",
    "ResetWatch",
    "SilentWatch",
    "Stall",
    "StatusFault",
    "TruncatedBody",
    "check_verb",
    "verb_matches",
]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
KUBERNETES_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)


def _check_seconds(name: str, value: object, *, allow_zero: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} must be a number of seconds")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be a finite number of seconds {bound}")


@dataclass(frozen=True, slots=True)
class StatusFault:
    """Answer with an HTTP error and a ``Status`` body instead of doing the request.

    Args:
        code: the HTTP status, e.g. 429, 500, 503 or 504.
        retry_after: sends ``Retry-After`` as seconds (a number) or an HTTP-date (a string).
        details_retry_after_seconds: sets ``Status.details.retryAfterSeconds``, as the real
            server does on 429 and on 500 "the server has received too many requests".
        reason: ``Status.reason``; by default the one upstream uses for ``code``.
        message: ``Status.message``; by default a generic message naming the fault.

    Example:
        >>> StatusFault(429, retry_after=2, details_retry_after_seconds=2)
        StatusFault(code=429, retry_after=2, details_retry_after_seconds=2, reason=None, message=None)
    """

    code: int
    _: KW_ONLY
    retry_after: float | str | None = None
    details_retry_after_seconds: int | None = None
    reason: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.code, bool) or not isinstance(self.code, int):
            raise ValueError(f"code={self.code!r} must be an HTTP status code")
        if not 400 <= self.code <= 599:
            raise ValueError(f"code={self.code!r} must be an error status (400-599)")
        if isinstance(self.retry_after, str):
            try:
                parsedate_to_datetime(self.retry_after)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"retry_after={self.retry_after!r} must be seconds or an HTTP-date"
                ) from exc
        elif self.retry_after is not None:
            _check_seconds("retry_after", self.retry_after)
        seconds = self.details_retry_after_seconds
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0
        ):
            raise ValueError(f"details_retry_after_seconds={seconds!r} must be an int >= 0")

    def retry_after_header(self) -> str | None:
        """The ``Retry-After`` header value, if any."""
        if self.retry_after is None or isinstance(self.retry_after, str):
            return self.retry_after
        seconds = self.retry_after
        return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` (or until the server stops), then answer normally."""

    seconds: float

    def __post_init__(self) -> None:
        _check_seconds("seconds", self.seconds)


@dataclass(frozen=True, slots=True)
class Stall:
    """Read the request and never answer; the connection is released when the server stops."""


@dataclass(frozen=True, slots=True)
class ResetConnection:
    """Read the request, then reset the TCP connection (``SO_LINGER`` 0, then close)."""


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Read the request, then close the connection cleanly without answering."""


@dataclass(frozen=True, slots=True)
class TruncatedBody:
    """Do the request, announce the full ``Content-Length``, send half the body and close.

    On a watch the stream's first chunk is cut in half instead.
    """


@dataclass(frozen=True, slots=True)
class SilentWatch:
    """Start the watch, send ``after_events`` events (bookmarks included), then nothing, ever.

    No more events, bookmarks or end of stream: the client sees a silent, open connection,
    like a watch behind a load balancer that dropped the backend. Only watches match; the
    connection is released when the server stops.
    """

    after_events: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.after_events, bool) or not isinstance(self.after_events, int):
            raise ValueError(f"after_events={self.after_events!r} must be an int")
        if self.after_events < 0:
            raise ValueError(f"after_events={self.after_events!r} must be >= 0")


@dataclass(frozen=True, slots=True)
class ResetWatch:
    """Start the watch, send ``after_events`` events (bookmarks included), then a TCP reset.

    A watch cut by a load balancer or a crashed API server in the middle of the stream. Only
    watches match.
    """

    after_events: int = 0

    def __post_init__(self) -> None:
        _check_events(self.after_events)


@dataclass(frozen=True, slots=True)
class EndWatch:
    """Start the watch, send ``after_events`` events (bookmarks included), then end it, early.

    The chunked body ends as if ``timeoutSeconds`` had passed, long before it has: what an API
    server that shuts down gracefully, or a proxy with its own stream limit, does. Only watches
    match.
    """

    after_events: int = 0

    def __post_init__(self) -> None:
        _check_events(self.after_events)


def _check_events(after_events: object) -> None:
    if isinstance(after_events, bool) or not isinstance(after_events, int):
        raise ValueError(f"after_events={after_events!r} must be an int")
    if after_events < 0:
        raise ValueError(f"after_events={after_events!r} must be >= 0")


@dataclass(frozen=True, slots=True)
class Overload:
    """A server short of capacity: ``seats`` requests at a time, ``queue`` more waiting, the rest refused.

    Each matching request holds one of ``seats`` for ``work`` seconds (the server's work,
    slowed: a busy etcd, a priority level shared with noisy neighbours), then gets its normal
    answer. While every seat is taken it waits in a queue of ``queue`` places; when the queue is
    full too, it is refused at once with 429, as API Priority and Fairness refuses a request when
    its priority level's queues are full (``queue=0, max_retry_after=1`` is the max-in-flight
    filter, which always answers ``Retry-After: 1``). The queue is first come, first served. Unlike a
    ``StatusFault(429)`` rule, how many requests are refused depends on how the clients send: a
    client that backs off finds seats free.

    ``Retry-After`` starts at ``retry_after`` seconds and adapts to the refusals as
    kube-apiserver's APF does (``dropped_requests_tracker.go``). At the first refusal of a new
    second it looks at the last ``Retry-After`` seconds: with three refusals or more per second
    it doubles, up to ``max_retry_after`` and at most once per ``Retry-After`` seconds; with fewer
    than one per second it falls by one, down to ``retry_after``. ``max_retry_after=retry_after``
    keeps it fixed.

    Each injected rule has capacity of its own; requests already holding or waiting for a seat
    finish when the rule expires.

    Example:
        >>> Overload(4, queue=8, work=0.1)
        Overload(seats=4, queue=8, work=0.1, retry_after=1, max_retry_after=32)
    """

    seats: int
    _: KW_ONLY
    queue: int = 0
    work: float = 0.1
    retry_after: int = 1
    max_retry_after: int = 32

    def __post_init__(self) -> None:
        for name, least in (
            ("seats", 1), ("queue", 0), ("retry_after", 1), ("max_retry_after", self.retry_after)
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}={value!r} must be an int >= {least}")
        _check_seconds("work", self.work)

    @staticmethod
    def refusal(retry_after: int) -> StatusFault:
        """The answer to a request that found no seat and no place in the queue."""
        return StatusFault(
            429,
            retry_after=retry_after,
            details_retry_after_seconds=retry_after,
            message="Too many requests, please try again later.",
        )


#: Any fault ``FakeApiServer.inject`` accepts.
Fault: TypeAlias = (
    StatusFault | Delay | Stall | ResetConnection | CloseConnection | TruncatedBody | SilentWatch
    | ResetWatch | EndWatch | Overload
)  # fmt: skip
_FAULT_TYPES = (
    StatusFault, Delay, Stall, ResetConnection, CloseConnection, TruncatedBody, SilentWatch,
    ResetWatch, EndWatch, Overload,
)  # fmt: skip


_WATCH_FAULTS = (SilentWatch, ResetWatch, EndWatch)


class Capacity:
    """An ``Overload`` rule's seats, queue and refusals, shared by the requests it matches.

    Args:
        overload: the rule's fault.
        clock: monotonic seconds; refusals are counted per whole second of it.
    """

    def __init__(self, overload: Overload, clock: Callable[[], float]) -> None:
        self._overload = overload
        self._clock = clock
        self._ready = threading.Condition()
        self._free = overload.seats
        # The queue as tickets: request number n waits until n < _admitted.
        self._issued = 0
        self._admitted = 0
        self._retry_after = overload.retry_after
        # Refusals per second: the second being counted, and the (second, count) before it.
        self._second = -math.inf
        self._count = 0
        self._history: list[tuple[float, int]] = []
        self._raised_at = -math.inf

    @property
    def queued(self) -> int:
        """Requests waiting for a seat."""
        with self._ready:
            return self._issued - self._admitted

    def take(self) -> bool:
        """Wait for a seat and take it; False, at once, when seats and queue are full.

        The queue is first come, first served, as APF serves its queues before new arrivals: a
        seat given back goes to the request that has waited longest, never to one that arrives
        meanwhile.
        """
        with self._ready:
            if self._free > 0:  # then nobody waits: give_back() hands seats to the queue first
                self._free -= 1
                return True
            if self._issued - self._admitted >= self._overload.queue:
                return False
            ticket = self._issued
            self._issued += 1
            while ticket >= self._admitted:
                # Woken by give_back(); a server that stops frees every seat promptly.
                self._ready.wait()
            return True

    def give_back(self) -> None:
        with self._ready:
            if self._issued > self._admitted:
                self._admitted += 1
                self._ready.notify_all()
            else:
                self._free += 1

    def refuse(self) -> int:
        """Count a refusal; return the Retry-After to send with it, in seconds."""
        with self._ready:
            second = math.floor(self._clock())
            if second != self._second:
                self._next_second(second)
            self._count += 1
            return self._retry_after

    def _next_second(self, second: float) -> None:
        """APF's update at the first refusal of a new second, from the seconds before it."""
        if self._count:
            self._history.append((self._second, self._count))
        self._second, self._count = second, 0
        retry_after = self._retry_after
        keep = min(2 * retry_after, self._overload.max_retry_after)
        self._history = [(s, n) for s, n in self._history if second - s <= keep]
        refused = sum(n for s, n in self._history if second - s <= retry_after)
        if second - self._raised_at >= retry_after and refused >= 3 * retry_after:
            self._retry_after = min(2 * retry_after, self._overload.max_retry_after)
            self._raised_at = second
        elif refused < retry_after and retry_after > self._overload.retry_after:
            self._retry_after = retry_after - 1


class Picked(NamedTuple):
    """The fault a request gets, and for an ``Overload`` the capacity of its rule."""

    fault: Fault
    capacity: Capacity | None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What fault rules and counters see of one request."""

    #: The HTTP method, e.g. ``GET``.
    method: str
    #: The Kubernetes verb (``get``, ``list``, ``watch``, ``create``, ...), or for
    #: non-resource paths such as ``/version`` the lowercase HTTP method.
    verb: str
    #: The path without the query string.
    path: str
    #: The resource plural, e.g. ``configmaps``; None for non-resource paths.
    resource: str | None


def check_verb(verb: str | None) -> None:
    """Reject a verb that is neither an HTTP method (upper case) nor a Kubernetes verb."""
    if verb is not None and verb not in HTTP_METHODS and verb not in KUBERNETES_VERBS:
        raise ValueError(
            f"verb={verb!r} must be an HTTP method ({', '.join(sorted(HTTP_METHODS))}) or a "
            f"Kubernetes verb ({', '.join(sorted(KUBERNETES_VERBS))})"
        )


def verb_matches(verb: str | None, request: RequestInfo) -> bool:
    """Upper case matches the HTTP method, lower case the Kubernetes verb."""
    if verb is None:
        return True
    return request.method == verb if verb.isupper() else request.verb == verb


@dataclass(slots=True)
class _Rule:
    fault: Fault
    verb: str | None
    path: re.Pattern[str] | None
    resource: str | None
    remaining: int | None
    probability: float = 1.0
    rng: random.Random | None = None
    #: The rule's clock reading after which it is gone (None: never).
    expires: float | None = None
    capacity: Capacity | None = None

    def matches(self, request: RequestInfo) -> bool:
        if not verb_matches(self.verb, request):
            return False
        if self.path is not None and not self.path.search(request.path):
            return False
        if self.resource is not None and self.resource != request.resource:
            return False
        return not isinstance(self.fault, _WATCH_FAULTS) or request.verb == "watch"


class FaultRules:
    """The ordered, thread-safe list of injected faults; the first match wins.

    Args:
        clock: monotonic seconds, for rules that last ``seconds`` (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._clock = clock

    def add(
        self,
        fault: Fault,
        *,
        verb: str | None,
        path: str | None,
        resource: str | None,
        times: int | None,
        probability: float = 1.0,
        seed: int | str | None = None,
        seconds: float | None = None,
    ) -> None:
        if not isinstance(fault, _FAULT_TYPES):
            raise TypeError(f"fault={fault!r} is not a fault (StatusFault, Delay, Stall, ...)")
        check_verb(verb)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise ValueError(f"times={times!r} must be a positive int or None (forever)")
        if times is not None and times < 1:
            raise ValueError(f"times={times!r} must be >= 1 or None (forever)")
        if isinstance(probability, bool) or not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability={probability!r} must be between 0 and 1")
        if seconds is not None:
            _check_seconds("seconds", seconds, allow_zero=False)
        rng = random.Random(seed) if probability < 1.0 else None
        pattern = re.compile(path) if path is not None else None
        capacity = Capacity(fault, self._clock) if isinstance(fault, Overload) else None
        with self._lock:
            expires = None if seconds is None else self._clock() + seconds
            self._rules.append(
                _Rule(fault, verb, pattern, resource, times, probability, rng, expires, capacity)
            )

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pick(self, request: RequestInfo) -> Picked | None:
        """Return the fault to serve for ``request`` and use up one of its ``times``."""
        with self._lock:
            now = self._clock()
            self._rules = [r for r in self._rules if r.expires is None or now < r.expires]
            for rule in self._rules:
                if not rule.matches(request):
                    continue
                if rule.rng is not None and rule.rng.random() >= rule.probability:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return Picked(rule.fault, rule.capacity)
        return None
