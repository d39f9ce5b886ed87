"""The policy core: every rule of a call, with no I/O and no sleeping.

A driver (the urllib3 ``Transport``; an asyncio one shares these rules) only sends and waits. It
asks the policy what to do and tells it what happened::

    call = policy.plan(method, url, request_timeout, streaming=..., replayable=...)
    loop:
        limits = policy.limits(call)          # this attempt's connect/read/deadline, or Raise
        ... one attempt on the wire ...
        decision = policy.decide(call, outcome)   # an answer, or an AttemptError
        RETURN -> hand the answer back | Retry(wait, reason) -> sleep, loop | Raise(error) -> raise

``decide`` applies, in order:

1. **Classify.** An error by its phase (``classify_error``: could the request have reached the
   server?), an answer by its status (``classify_status``) and the delay the server asked for
   (``retry_after``: both RFC 9110 forms of the header, or ``details.retryAfterSeconds``).
2. **Phase and verb.** A failure before sending, and an answer that says the server did no work
   (429, or 503 with Retry-After), may be repeated for every verb. Once the request may have
   arrived, only reads are repeated (``READ_METHODS``, as client-go does), unless
   ``retry_non_idempotent`` allows writes too; a body must be one that can be sent again.
3. **Wait.** The server's Retry-After plus a spread, else full-jitter exponential backoff.
4. **Stop.** Side-effect-free strategies that compose with ``|`` as tenacity's do and say why
   they stopped: ``stop_after_attempt | stop_when_retry_after_exceeds | stop_before_deadline``.
5. **Budget.** Last, so that a retry refused by a stop never draws on it: a retry we time
   ourselves (not one the server paced with Retry-After) needs ``budget.try_withdraw()``.

A call that stops hands back the last answer, or raises the typed error of its last failure from
one table (``final_error``): the deadline and the budget win over the failure that preceded them.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

import tenacity
import urllib3.exceptions as u3

from . import errors
from ._settings import Settings

__all__ = [
    "READ_METHODS",
    "REAUTHENTICATE",
    "RETURN",
    "WATCH_READ_MARGIN",
    "Answer",
    "AttemptError",
    "BodyTooLarge",
    "Budget",
    "Call",
    "Decision",
    "Failure",
    "Limits",
    "Policy",
    "Raise",
    "Reauthenticate",
    "Retry",
    "Return",
    "Stop",
    "classify_error",
    "classify_status",
    "final_error",
    "parse_retry_after",
    "retry_after",
    "stop_after_attempt",
    "stop_before_deadline",
    "stop_when_retry_after_exceeds",
]

#: Verbs repeated after the request may have reached the server: reads only (get, list, watch),
#: as client-go does. Every write can do harm twice even where HTTP calls it idempotent: a PUT
#: with a resourceVersion that succeeded meets 409 when repeated, a DELETE meets 404 (the caller
#: is told a write failed that succeeded), and a repeated deletecollection deletes objects that
#: another client created in between.
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

#: 5xx answers that a safe verb may repeat: the server or a proxy in front of it had a bad moment.
_TRANSIENT_STATUSES: Final = frozenset({500, 502, 503, 504})

#: Added to a watch's ``timeoutSeconds`` to get its read timeout: the server closes the stream at
#: ``timeoutSeconds``; the margin covers a slow close and the last bookmark.
WATCH_READ_MARGIN: Final = 30.0


# --- what happened -----------------------------------------------------------------------------


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


class AttemptError(Exception):
    """One attempt failed without an answer: its classification and the driver's error."""

    def __init__(self, failure: Failure, cause: BaseException) -> None:
        super().__init__(failure.reason)
        self.failure = failure
        self.cause = cause


class BodyTooLarge(u3.HTTPError):
    """The driver stopped reading a body at ``max_response_bytes`` (decoded)."""


class Answer(Protocol):
    """What ``decide`` reads of an HTTP answer (a urllib3 response is one as it is)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def data(self) -> bytes: ...


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
    if isinstance(error, BodyTooLarge):
        return Failure("too_large", sent=True, retryable=False)
    if isinstance(error, (u3.ProtocolError, u3.IncompleteRead, ConnectionError)):
        inner = error.args[-1] if error.args else None
        if isinstance(inner, http.client.BadStatusLine) and not isinstance(
            inner, http.client.RemoteDisconnected
        ):
            # Bytes came back, but not HTTP: a server that closed without a word is
            # RemoteDisconnected, a BadStatusLine too.
            return Failure("bad_response", sent=True)
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
        return float(min(int(text), _LONGEST_ASK)) if len(text) < 12 else float(_LONGEST_ASK)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # Defensive: RFC 9110 dates are GMT; obsolete forms may lack a zone.
        return None
    return max(0.0, when.timestamp() - now())


def retry_after(headers: Mapping[str, str], body: bytes | None) -> float | None:
    """The delay the server asked for: the Retry-After header, else a Status body's
    ``details.retryAfterSeconds`` (the API server sets both; aggregated APIs sometimes only one).
    """
    header = headers.get("Retry-After")
    if isinstance(header, str):
        parsed = parse_retry_after(header)
        if parsed is not None:
            return parsed
    # A Status is small and shallow. Anything larger, or with more brackets than a Status could
    # hold, is not parsed at all: a body nested 100,000 deep would recurse json.loads to its limit
    # (RecursionError, and finalizers that run down there fail too).
    if (
        body
        and body[:1] == b"{"
        and len(body) <= _MAX_STATUS_BYTES
        and body.count(b"{") + body.count(b"[") <= _MAX_STATUS_BRACKETS
    ):
        try:
            status = json.loads(body)
        except (ValueError, RecursionError):  # not JSON
            return None
        details = status.get("details") if isinstance(status, dict) else None
        seconds = details.get("retryAfterSeconds") if isinstance(details, dict) else None
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
            # An int of any size parses; past a year it is no plan to come back (and past 308
            # digits no float): it stays a long ask, which retry_after_max refuses.
            return float(min(seconds, _LONGEST_ASK))
    return None


#: The largest body, and the most brackets in it, read as a Status for ``retryAfterSeconds``.
_MAX_STATUS_BYTES: Final = 64 * 1024
_MAX_STATUS_BRACKETS: Final = 256

#: The longest delay a server's ask is read as: a year.
_LONGEST_ASK: Final = 365 * 86400


# --- one call ----------------------------------------------------------------------------------


class Budget(Protocol):
    """Shared permission to retry (``RetryBudget``)."""

    def try_withdraw(self) -> bool: ...


@dataclass(slots=True)
class Call:
    """One call's plan (fixed by ``plan``) and the state of its attempts (kept by ``decide``)."""

    method: str
    url: str
    #: A watch or a log stream: no deadline, no limiter, the body is the caller's to read.
    streaming: bool
    #: The body can be sent again (bytes, text or none; not a generator or a file).
    replayable: bool
    #: Seconds for TCP (and TLS), and of silence from the server; None: no limit.
    connect: float | None
    read: float | None
    #: Monotonic instant the whole call must end by; None: no deadline.
    deadline_at: float | None
    attempts: int = 0
    #: Attempts whose connect was refused (no server listening): bounded by the deadline, not
    #: by ``max_attempts`` or the retry budget.
    unreached: int = 0
    #: The last attempt's failure and the delay the server asked for with it.
    failure: Failure | None = None
    retry_after: float | None = None
    #: Why the call stopped trying (``attempts``, ``deadline``, ...); None while it may go on.
    stop: str | None = None
    #: The call carries credentials that can be refreshed, and has not been replayed for a 401.
    reauthenticate: bool = False

    @property
    def attempt_number(self) -> int:
        """Attempts made so far, as tenacity's wait strategies read it."""
        return self.attempts

    def path(self) -> str:
        return urlsplit(self.url).path


class Limits(NamedTuple):
    """One attempt's time limits: what the deadline leaves of the connect and read timeouts."""

    connect: float | None
    read: float | None
    #: Seconds to the call's deadline when the attempt starts; None: no deadline.
    remaining: float | None


class Reauthenticate:
    """The server answered 401 to credentials this call sent: fetch fresh ones and send the
    call once more at once (no wait, no budget: authentication rejects a request before any
    work is done, so the replay is safe for every verb)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REAUTHENTICATE"


#: The one ``Reauthenticate`` decision.
REAUTHENTICATE: Final = Reauthenticate()


class Return:
    """Hand the last answer back to the caller as it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "RETURN"


#: The one ``Return`` decision.
RETURN: Final = Return()


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the call again after ``wait`` seconds, because of ``reason``."""

    wait: float
    reason: str


@dataclass(frozen=True, slots=True)
class Raise:
    """End the call with ``error``."""

    error: errors.TransportError


Decision = Return | Retry | Raise | Reauthenticate


# --- stop strategies ---------------------------------------------------------------------------


class Stop:
    """A stop condition: ``stop(call, wait, now)`` is why to stop before waiting ``wait``, or None.

    Conditions compose with ``|`` (the first that stops wins), as tenacity's do, but name their
    reason instead of answering yes or no, and change nothing.
    """

    __slots__ = ()

    def __call__(self, call: Call, wait: float, now: float) -> str | None:
        raise NotImplementedError  # Defensive: every condition overrides it

    def __or__(self, other: Stop) -> Stop:
        return _StopAny((self, other))


class _StopAny(Stop):
    __slots__ = ("_stops",)

    def __init__(self, stops: tuple[Stop, ...]) -> None:
        self._stops: tuple[Stop, ...] = ()
        for stop in stops:
            self._stops += stop._stops if isinstance(stop, _StopAny) else (stop,)

    def __call__(self, call: Call, wait: float, now: float) -> str | None:
        for stop in self._stops:
            reason = stop(call, wait, now)
            if reason is not None:
                return reason
        return None

    def __repr__(self) -> str:
        return " | ".join(map(repr, self._stops))


class stop_after_attempt(Stop):
    """Stop once ``attempts`` attempts reached a server: ``"attempts"``.

    A connect refused because no server listens is not counted while the call has a deadline:
    that is what an API server restart looks like, and repeating it costs no server anything,
    so the deadline and the backoff bound those retries instead of a small count that a 2-10 s
    restart outlasts. Without a deadline, or with ``attempts=1`` (retries off),
    every attempt counts.
    """

    __slots__ = ("attempts",)

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(self, call: Call, wait: float, now: float) -> str | None:
        counted = call.attempts
        if call.deadline_at is not None and self.attempts > 1:  # 1 still turns retries off
            counted -= call.unreached
        return "attempts" if counted >= self.attempts else None

    def __repr__(self) -> str:
        return f"stop_after_attempt({self.attempts})"


class stop_when_retry_after_exceeds(Stop):
    """Stop when the server asks to come back later than ``seconds``: ``"retry_after"``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, call: Call, wait: float, now: float) -> str | None:
        asked = call.retry_after
        return "retry_after" if asked is not None and asked > self.seconds else None

    def __repr__(self) -> str:
        return f"stop_when_retry_after_exceeds({self.seconds})"


class stop_before_deadline(Stop):
    """Stop when the wait would reach the call's deadline: ``"deadline"``."""

    __slots__ = ()

    def __call__(self, call: Call, wait: float, now: float) -> str | None:
        deadline_at = call.deadline_at
        return "deadline" if deadline_at is not None and wait >= deadline_at - now else None

    def __repr__(self) -> str:
        return "stop_before_deadline()"


# --- the policy --------------------------------------------------------------------------------


class Policy:
    """The rules of one client's calls: ``plan``, ``limits`` and ``decide``.

    Args:
        settings: the client's settings.
        budget: the client's retry budget.
        clock: monotonic seconds; uniform: ``random.uniform``, for the Retry-After spread (both
            injectable for tests). The backoff's jitter is tenacity's ``wait_random_exponential``.
    """

    __slots__ = ("_backoff", "_budget", "_spread", "_uniform", "clock", "settings", "stop")

    def __init__(
        self,
        settings: Settings,
        budget: Budget,
        *,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.settings = settings
        self._budget = budget
        self.clock = clock
        self._uniform = uniform
        self._backoff = tenacity.wait_random_exponential(
            multiplier=settings.backoff_base, max=settings.backoff_max
        )
        self._spread = settings.backoff_base
        #: Why a call stops, checked in this order before each retry.
        self.stop: Stop = (
            stop_after_attempt(settings.max_attempts)
            | stop_when_retry_after_exceeds(settings.retry_after_max)
            | stop_before_deadline()
        )

    def plan(
        self,
        method: str,
        url: str,
        request_timeout: float | tuple[float | None, float | None] | None,
        *,
        replayable: bool,
        authenticated: bool = False,
    ) -> Call:
        """Fix a call's time limits and what may be repeated.

        Args:
            method: the HTTP verb, upper case.
            url: the whole URL.
            request_timeout: the caller's ``_request_timeout``: a number bounds the whole call,
                retries included (never beyond ``deadline``); ``(connect, read)`` replaces the
                two timeouts; None keeps the settings.
            replayable: the body can be sent again.
            authenticated: the call carries credentials that a 401 may refresh (once).

        A stream (``watch=true`` or ``follow=true``) lives as long as the server keeps it: no
        deadline, and a read timeout of the server's ``timeoutSeconds`` plus
        ``WATCH_READ_MARGIN`` (none without it). A number given as its ``_request_timeout``
        limits each wait for bytes, and the connect, as in the stock client.
        """
        settings = self.settings
        connect, read, deadline = settings.connect_timeout, settings.read_timeout, settings.deadline
        if isinstance(request_timeout, tuple):
            connect, read = request_timeout
        elif request_timeout is not None:
            deadline = request_timeout if deadline is None else min(deadline, request_timeout)
        streaming = False
        # Cheap test first: most calls have neither word in the URL.
        if "watch" in url or "follow" in url:
            query = parse_qs(urlsplit(url).query)
            streaming = _query_flag(query, "watch") or _query_flag(query, "follow")
            if streaming:
                deadline = None
                if request_timeout is None:
                    seconds = query.get("timeoutSeconds", [""])[-1]
                    read = (
                        float(seconds) + WATCH_READ_MARGIN
                        if seconds.isascii() and seconds.isdigit()
                        else None
                    )
                elif not isinstance(request_timeout, tuple):
                    read = request_timeout
                    connect = request_timeout if connect is None else min(connect, request_timeout)
        return Call(
            method=method,
            url=url,
            streaming=streaming,
            replayable=replayable,
            connect=connect,
            read=read,
            deadline_at=None if deadline is None else self.clock() + deadline,
            reauthenticate=authenticated and replayable,
        )

    def limits(self, call: Call) -> Limits:
        """The next attempt's limits: the timeouts, cut to what the deadline leaves.

        Raises:
            DeadlineExceeded: the deadline has passed (a wait overslept it, or the limiter's).
        """
        deadline_at = call.deadline_at
        if deadline_at is None:
            return Limits(call.connect, call.read, None)
        now = self.clock()
        remaining = deadline_at - now
        if remaining <= 0:
            call.stop = "deadline"
            raise final_error(call, _DEADLINE, TimeoutError("deadline reached"), now)
        connect, read = call.connect, call.read
        return Limits(
            remaining if connect is None or remaining < connect else connect,
            remaining if read is None or remaining < read else read,
            remaining,
        )

    def may_repeat(self, call: Call, failure: Failure) -> bool:
        """Whether a failed attempt may be sent again, judged by phase and verb."""
        if not failure.retryable:
            return False
        if not failure.sent:
            return True
        return call.replayable and (
            self.settings.retry_non_idempotent or call.method in READ_METHODS
        )

    def decide(self, call: Call, outcome: Answer | AttemptError) -> Decision:
        """What to do after an attempt: ``RETURN``, ``Retry(wait, reason)``, ``Raise(error)``, or
        ``REAUTHENTICATE`` (the first 401 to refreshable credentials; a second one is returned).

        Counts the attempt (``call.attempts``) and notes the failure, the server's delay and
        why the call stopped on ``call``; draws on the retry budget only for a retry it grants.
        """
        call.attempts += 1
        if isinstance(outcome, AttemptError):
            failure = outcome.failure
            call.failure, call.retry_after = failure, None
            if failure.reason in _UNREACHED:
                call.unreached += 1
            if not self.may_repeat(call, failure):
                call.stop = "final"
                return Raise(final_error(call, failure, outcome.cause, self.clock()))
        else:
            status = outcome.status
            if status < 429:  # the fast path: success and ordinary client errors are final
                if status == 401 and call.reauthenticate:
                    call.reauthenticate = False
                    return REAUTHENTICATE
                return RETURN
            # The API server also sends Status.details.retryAfterSeconds with some 500s ("too many
            # requests"); a delay it asks for is honoured whatever the status.
            delay = retry_after(outcome.headers, outcome.data)
            answer_failure = classify_status(status, has_retry_after=delay is not None)
            if answer_failure is None:
                return RETURN
            failure = answer_failure
            call.failure, call.retry_after = failure, delay
            if not self.may_repeat(call, failure):
                call.stop = "final"
                return RETURN
        wait = self._wait(call)
        now = self.clock()
        stop = self.stop(call, wait, now)
        # A retry paced by the server's own Retry-After is the server's decision, not load we add
        # on our own, and a connect that found no server listening loads no server: only the
        # other retries we time ourselves draw on the budget.
        if (
            stop is None
            and call.retry_after is None
            and not (failure.reason in _UNREACHED and call.deadline_at is not None)
            and not self._budget.try_withdraw()
        ):
            stop = "budget"
        if stop is None:
            return Retry(wait, failure.reason)
        call.stop = stop
        if isinstance(outcome, AttemptError):
            return Raise(final_error(call, failure, outcome.cause, now))
        return RETURN

    def _wait(self, call: Call) -> float:
        asked = call.retry_after
        if asked is not None:
            # Never earlier than asked, but spread out: threads refused together must not all
            # come back at the same instant and collide again.
            return asked + self._uniform(0, max(self._spread, asked / 4))
        # uniform(0, min(backoff_max, backoff_base * 2**(n - 1))) after the n-th attempt.
        return float(self._backoff(call))  # type: ignore[arg-type]  # reads attempt_number only

    def rate_limited(self, call: Call, error: errors.RateLimitTimeout) -> errors.RateLimitTimeout:
        """The limiter's refusal, with the call's verb, URL and attempts on it."""
        call.stop = "rate_limit"
        return errors.RateLimitTimeout(
            str(error), wait=error.wait, method=call.method, url=call.url, attempts=call.attempts
        )


def _query_flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, [""])[-1].lower() in ("true", "1")


# --- from failure to error ---------------------------------------------------------------------

#: The failure of an attempt that was due after the deadline.
_DEADLINE: Final = Failure("deadline", sent=False, retryable=False)

_TIMEOUTS: Final = frozenset({"connect_timeout", "read_timeout", "deadline"})

#: A connect refused (or unreachable): no server is listening, as while an API server restarts.
#: With a deadline, ``stop_after_attempt`` does not count it and the budget does not pay for it:
#: the deadline and the backoff bound those retries. (A connect timeout may be a listener too
#: busy to accept: it counts as usual.)
_UNREACHED: Final = frozenset({"connect_error"})

#: The one table from failure reason to error class and what the message calls it.
ERRORS: Final[dict[str, tuple[type[errors.TransportError], str]]] = {
    "dns": (errors.NameResolutionError, "name resolution failed"),
    "connect_error": (errors.ConnectError, "connection failed"),
    "proxy": (errors.ConnectError, "proxy connection failed"),
    "connect_timeout": (errors.ConnectTimeout, "connect timeout"),
    "tls": (errors.TLSError, "TLS handshake failed"),
    "read_timeout": (errors.ReadTimeout, "read timeout"),
    "reset": (errors.ConnectionReset, "connection reset"),
    "disconnected": (errors.ConnectionReset, "connection closed without a response"),
    "truncated": (errors.ConnectionReset, "response body cut short"),
    "bad_response": (errors.ConnectionReset, "the server's answer is not HTTP"),
    "too_large": (errors.ResponseTooLarge, "response body larger than max_response_bytes"),
    "deadline": (errors.DeadlineExceeded, "deadline exceeded"),
}


def final_error(
    call: Call, failure: Failure, cause: BaseException, now: float
) -> errors.TransportError:
    """The typed error that ends ``call`` after ``failure``.

    The deadline wins when it stopped a retryable failure or passed during a timeout; the budget
    wins when it refused a retry; otherwise the table (``ERRORS``) names the class.
    """
    kind, what = ERRORS.get(failure.reason, (errors.TransportError, "transport error"))
    deadline_at = call.deadline_at
    if (call.stop == "deadline" and failure.retryable) or (
        deadline_at is not None and deadline_at - now <= 0 and failure.reason in _TIMEOUTS
    ):
        kind, what = errors.DeadlineExceeded, "deadline exceeded"
    elif call.stop == "budget" and failure.retryable:
        kind, what = errors.RetryBudgetExhausted, f"retry budget exhausted after {what}"
    message = (
        f"{call.method} {call.path()} failed after {call.attempts} attempt(s): {what}"
        f" ({_describe(cause)})"
    )
    extra: dict[str, Any] = {}
    if kind is errors.NameResolutionError:
        extra["host"] = urlsplit(call.url).hostname or ""
    return kind(
        message, method=call.method, url=call.url, attempts=call.attempts, last_error=cause, **extra
    )


def _describe(cause: BaseException) -> str:
    """The innermost useful message of a urllib3 error, without the pool's or connection's repr."""
    reason = getattr(cause, "reason", None)
    if isinstance(reason, BaseException):
        cause = reason
    # ConnectTimeoutError(conn, message) keeps the message last; pool errors prefix "Pool(...): ".
    last = cause.args[-1] if cause.args else None
    text = last if len(cause.args) > 1 and isinstance(last, str) else str(cause)
    text = _POOL_PREFIX.sub("", text) or type(cause).__name__
    return f"{type(cause).__name__}: {text}"


_POOL_PREFIX: Final = re.compile(
    r"^\w*(?:ConnectionPool|Connection)\(host='[^']*', port=\d+\)(?: at 0x[0-9a-f]+)?>?: "
)
