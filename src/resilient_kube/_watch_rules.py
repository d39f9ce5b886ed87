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

import json
import logging
import math
import pydoc
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import urllib3.exceptions as u3
from kubernetes.client.exceptions import ApiException

from ._backoff import Backoff
from ._events import EventSink
from .errors import ResourceExpired, TransportError

__all__ = [
    "MAX_SERVER_TIMEOUT",
    "MIN_SERVER_TIMEOUT",
    "SYNC_ERRORS",
    "Decision",
    "ErrorTypes",
    "EventReader",
    "WatchRules",
    "as_expired",
    "classify_break",
    "documents",
    "status_error",
    "status_reason",
]

log = logging.getLogger("resilient_kube._watch")

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


def status_reason(status: object) -> str | None:
    """The restart reason for an HTTP answer's ``status`` (429 and 5xx), or None: raise it."""
    return f"status_{status}" if status in _RETRYABLE_STATUS else None


def classify_break(error: BaseException) -> str | None:
    """The restart reason for ``error``, or None when re-opening cannot help.

    ``ResourceExpired`` and 410, 401 and 403, other 4xx answers and anything that is not a
    network or server condition (a bug, a decoding error) return None: the caller gets them.
    """
    if isinstance(error, ResourceExpired):
        return None
    if isinstance(error, ApiException):
        return status_reason(getattr(error, "status", None))
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


class ErrorTypes(NamedTuple):
    """The exceptions of one client: ``kubernetes.client``'s, or ``kubernetes.aio``'s (its own)."""

    #: What a final HTTP answer raises (``ApiException``).
    api_exception: type[Exception]
    #: What 410 Gone raises: a ``ResourceExpired`` that is also that client's ``ApiException``.
    expired: Callable[..., Exception]


#: ``kubernetes.client.ApiException`` and ``resilient_kube.ResourceExpired``.
SYNC_ERRORS = ErrorTypes(ApiException, ResourceExpired)


def documents(func: Callable[..., Any], param: str) -> bool:
    """Whether the generated API function ``func`` takes ``param`` (its docstring lists it)."""
    doc = pydoc.getdoc(func) or ""
    return f":param {param}:" in doc or any(
        f":param {kind} {param}:" in doc for kind in ("bool", "int", "str")
    )


def status_error(
    status: int,
    reason: str | None,
    body: bytes | str | None,
    headers: Any = None,
    types: ErrorTypes = SYNC_ERRORS,
) -> Exception:
    """The error the client raises for an answer with ``status``; 410 is ``ResourceExpired``.

    ``body`` may be the answer's bytes (kubernetes 37 and ``kubernetes.aio`` hand the error
    answer of a stream back unraised).
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    elif not isinstance(body, str):
        body = None
    if status == 410:
        return types.expired(reason or "Gone", body=body)
    error = types.api_exception(status=status, reason=reason or "")  # type: ignore[call-arg]
    error.body = body  # type: ignore[attr-defined]
    error.headers = headers  # type: ignore[attr-defined]
    return error


def error_event(obj: object, types: ErrorTypes = SYNC_ERRORS) -> Exception:
    """An ``ERROR`` event's ``Status`` as the exception the client raises for it."""
    status = obj if isinstance(obj, dict) else {}
    code = status.get("code")
    reason = f"{status.get('reason')}: {status.get('message')}"
    return status_error(
        code if isinstance(code, int) else 500, reason, json.dumps(status), None, types
    )


def as_expired(error: BaseException, types: ErrorTypes = SYNC_ERRORS) -> BaseException:
    """A 410 ``ApiException`` (raised by the client itself) as ``ResourceExpired``."""
    if (
        isinstance(error, types.api_exception)
        and not isinstance(error, ResourceExpired)
        and getattr(error, "status", None) == 410
    ):
        expired = types.expired(
            getattr(error, "reason", None) or "Gone", body=getattr(error, "body", None)
        )
        expired.__cause__ = error
        return expired
    return error


class EventReader:
    """Turns a watch's lines into the events the caller gets, moving the resume point.

    ``unmarshal`` is the watch's ``unmarshal_event`` (used when ``deserialize``). Every event
    and bookmark moves ``rules``' resume point and is counted (``watch_event``); a BOOKMARK
    reaches the caller only when it asked for them; an ``ERROR`` event is raised as the
    exception the client raises for its ``Status``. Shared by the sync and asyncio watches,
    whose loops only read lines and hand out what this returns.
    """

    __slots__ = (
        "_count",
        "_delivered",
        "_deserialize",
        "_hide_bookmarks",
        "_return_type",
        "_types",
        "_unmarshal",
    )

    def __init__(
        self,
        rules: WatchRules,
        events: EventSink,
        unmarshal: Callable[[str, Any], Any],
        return_type: Any,
        *,
        deserialize: bool,
        wants_bookmarks: bool,
        types: ErrorTypes = SYNC_ERRORS,
    ) -> None:
        self._delivered = rules.delivered
        self._count = events.watch_event
        self._unmarshal = unmarshal
        self._return_type = return_type
        self._deserialize = deserialize
        self._hide_bookmarks = not wants_bookmarks
        self._types = types

    def __call__(self, line: str) -> Any:
        """The event in ``line`` for the caller, or None (blank, or a hidden bookmark).

        Raises:
            ApiException: an ``ERROR`` event (410 as ``ResourceExpired``).
        """
        # One call per line, nothing called that need not be: the watch's hot path.
        if self._deserialize:
            event = self._unmarshal(line, self._return_type)
            if event.__class__ is not dict:  # blank (None), or kubernetes.aio's non-JSON line
                return None
            raw = event["raw_object"]
        else:
            if not line or line.isspace():
                return None
            event = json.loads(line)
            raw = event["object"]
        kind = event["type"]
        if kind == "ERROR":
            raise error_event(raw, self._types)
        meta = raw.get("metadata") if raw.__class__ is dict else None
        version = meta.get("resourceVersion") if meta.__class__ is dict else None
        if version is not None:
            self._delivered(version)
        self._count(kind)
        if kind == "BOOKMARK" and self._hide_bookmarks:
            return None
        return event


class WatchRules:
    """The decisions of one ``Watch.stream`` call: resume point, timeouts, backoff.

    Args:
        resource_version: the caller's ``resource_version``, or None.
        timeout_seconds: the caller's ``timeout_seconds`` (the whole stream ends then), or None
            (the stream runs until ``stop()``; each request asks for 5-10 minutes).
        backoff: the wait before each re-open; shared with an informer that owns the watch.
        clock: monotonic seconds.
        rng: draws each request's ``timeoutSeconds``.
        classify: the restart reason of an error, or None to raise it (``classify_break``;
            the asyncio watch adds aiohttp's errors).
    """

    def __init__(
        self,
        *,
        resource_version: str | None,
        timeout_seconds: float | None,
        backoff: Backoff,
        clock: Callable[[], float],
        rng: random.Random,
        classify: Callable[[BaseException], str | None] = classify_break,
    ) -> None:
        self._classify = classify
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

    @classmethod
    def for_call(
        cls,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        backoff: Backoff,
        clock: Callable[[], float],
        rng: random.Random,
        classify: Callable[[BaseException], str | None] = classify_break,
    ) -> tuple[WatchRules, bool]:
        """The rules of a ``stream(func, **kwargs)`` call, and whether it asked for bookmarks.

        Takes the caller's ``resource_version`` and ``timeout_seconds`` out of ``kwargs`` (each
        request gets its own, from ``request``) and asks for bookmarks when ``func`` takes them
        and the caller did not say.
        """
        wants_bookmarks = bool(kwargs.get("allow_watch_bookmarks"))
        if "allow_watch_bookmarks" not in kwargs and documents(func, "allow_watch_bookmarks"):
            kwargs["allow_watch_bookmarks"] = True
        rules = cls(
            resource_version=kwargs.pop("resource_version", None),
            timeout_seconds=kwargs.pop("timeout_seconds", None),
            backoff=backoff,
            clock=clock,
            rng=rng,
            classify=classify,
        )
        return rules, wants_bookmarks

    # --- requests ---------------------------------------------------------------------------

    @staticmethod
    def request(decision: Decision, kwargs: dict[str, Any]) -> None:
        """Put ``decision``'s resume point and server timeout into the request's ``kwargs``."""
        if decision.resource_version is None:
            kwargs.pop("resource_version", None)
        else:
            kwargs["resource_version"] = decision.resource_version
        kwargs["timeout_seconds"] = decision.timeout_seconds

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
        reason = self._classify(error)
        if reason is None or not self.established:
            # Before a stream was ever established the caller gets the error, as from any call
            # (the transport has already retried it); 410, 401, 403 and bugs are never retried.
            return Decision("raise")
        attempts = getattr(error, "attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            attempts = 1
        return self.broke(reason, attempts)

    def after(
        self,
        error: BaseException | None,
        events: EventSink,
        types: ErrorTypes = SYNC_ERRORS,
    ) -> Decision:
        """What follows a stream that ended (``error`` None) or failed; reports a restart.

        Raises:
            error: when it is not to be ridden over (a 410 as ``ResourceExpired``).
        """
        decision = self.ended() if error is None else self.failed(error)
        if decision.action == "raise":
            assert error is not None  # Defensive: only failures are raised
            raise as_expired(error, types)
        if decision.action == "reopen":
            events.watch_restart(decision.reason, decision.wait)
            _log_restart(decision, error)
        return decision

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


def _log_restart(decision: Decision, error: BaseException | None) -> None:
    if decision.reason == "timeout":
        log.debug("watch ended at its timeoutSeconds; re-opening at once")
        return
    log.info(
        "watch broke (%s%s); re-opening from resourceVersion %s in %.2f s",
        decision.reason,
        f": {error}" if error is not None else "",
        decision.resource_version,
        decision.wait,
    )
