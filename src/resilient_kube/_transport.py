"""The transport: the object behind ``api_client.rest_client.pool_manager`` that owns every attempt.

``kubernetes`` calls ``pool_manager.request(method, url, ...)`` once per API call. urllib3's
``RequestMethods.request`` encodes the body and calls ``urlopen``, which runs the attempt loop::

    deadline --> limiter wait --> attempt (urllib3, retries off) --> classify --> wait or return
                 ^                                                           |
                 +-- tenacity: stop on attempts | deadline | budget | Retry-After too long

Streams (``watch=true``, ``follow=true``) skip the limiter and the deadline, and get a read timeout
of the server's ``timeoutSeconds`` plus a margin instead of ``read_timeout``. Other calls have their
body read inside the attempt, so a truncated body is retried like any other read failure.
"""

from __future__ import annotations

import io
import logging
import random
import re
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import tenacity
import urllib3
import urllib3.exceptions as u3
from urllib3._request_methods import RequestMethods
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.url import parse_url

from . import errors
from ._limiter import TokenBucket
from ._retry import IDEMPOTENT_METHODS, Failure, RetryBudget, classify_error, classify_status
from ._retry import retry_after as server_retry_after
from ._settings import Settings
from ._stats import Counters
from ._watchdog import Watch
from ._watchdog import resume as resume_watch
from ._watchdog import start as start_watch
from ._watchdog import stop as stop_watch
from ._watchdog import suspend as suspend_watch

__all__ = ["WATCH_READ_MARGIN", "Transport"]

log = logging.getLogger(__name__)

#: Added to a watch's ``timeoutSeconds`` to get its read timeout: the server closes the stream at
#: ``timeoutSeconds``; the margin covers a slow close and the last bookmark.
WATCH_READ_MARGIN = 30.0

#: urllib3 retries off, built once: urllib3 would otherwise convert ``False`` on every attempt.
_NO_RETRIES = urllib3.Retry(total=False)

#: A request URI that urllib3's ``parse_url`` leaves exactly as it is: only characters it allows
#: unencoded, upper-case percent-escapes, no fragment. (Dot segments are checked apart.)
_PLAIN_URI = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-F]{2})*")

_FLOW_SCHEMA = "X-Kubernetes-PF-FlowSchema-UID"
_PRIORITY_LEVEL = "X-Kubernetes-PF-PriorityLevel-UID"


class _BufferedResponse(urllib3.HTTPResponse):
    """A response whose body was read, decoded and cached inside the attempt.

    ``.data`` serves the cache as it does after urllib3's own preload; ``read()``, ``stream()`` and
    iteration replay it from the start, as they would have read it from the socket. (Asking for
    ``decode_content=False`` then still gives the decoded bytes.)
    """

    _rk_replay: io.BytesIO

    @property
    def closed(self) -> bool:
        # The socket is already back in the pool: open until the caller closes it, so that
        # ``with response:`` and io wrappers work as on a response still reading its socket.
        if not self.auto_close:
            return bool(io.IOBase.closed.__get__(self))
        return self._rk_replay.closed

    def close(self) -> None:
        self._rk_replay.close()
        super().close()

    def read(
        self,
        amt: int | None = None,
        decode_content: bool | None = None,
        cache_content: bool = False,
    ) -> bytes:
        if self._rk_replay.closed:
            return b""  # as a closed socket response reads
        return self._rk_replay.read(amt if amt is not None and amt >= 0 else -1)

    def read1(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        return self.read(amt)

    def stream(
        self, amt: int | None = 2**16, decode_content: bool | None = None
    ) -> Generator[bytes]:
        while data := self.read(amt):
            yield data

    def read_chunked(
        self, amt: int | None = None, decode_content: bool | None = None
    ) -> Generator[bytes]:
        yield from self.stream(amt)


class _AttemptFailed(Exception):
    """One attempt failed: carries the classification and the urllib3 cause."""

    def __init__(self, failure: Failure, cause: BaseException) -> None:
        super().__init__(failure.reason)
        self.failure = failure
        self.cause = cause


@dataclass(slots=True)
class _Call:
    """Per-call state of the attempt loop (the transport itself is shared and stateless)."""

    method: str
    url: str
    #: What urllib3 gets for every attempt: the caller's arguments, the body never preloaded
    #: (the attempt reads it itself, within the deadline).
    send_kwargs: dict[str, Any]
    #: Each attempt's socket timeouts while the deadline is further away than both (a watched
    #: call's sockets only have the connect timeout: the watchdog keeps its read time).
    timeout: urllib3.Timeout
    #: Whether the watchdog keeps this call's read time (every call but a stream).
    watched: bool
    #: What the caller asked of the response it gets back.
    preload: bool
    decode: bool
    streaming: bool
    replayable: bool
    #: ``retry_non_idempotent``: POST and PATCH may be re-sent after they may have arrived.
    repeat_unsafe: bool
    connect: float | None
    read: float | None
    deadline_at: float | None
    clock: Callable[[], float]
    attempts: int = 0
    last_failure: Failure | None = None
    stop_reason: str = "attempts"
    retry_after: float | None = field(default=None)
    #: The running attempt's watch, while the watchdog keeps its time.
    watch: Watch | None = None

    def remaining(self) -> float | None:
        return None if self.deadline_at is None else self.deadline_at - self.clock()

    def may_repeat(self, failure: Failure) -> bool:
        """Whether a failed attempt may be sent again, judged by phase and verb."""
        if not failure.retryable:
            return False
        if not failure.sent:
            return True
        return self.replayable and (self.repeat_unsafe or self.method in IDEMPOTENT_METHODS)

    def path(self) -> str:
        return urlsplit(self.url).path


def _seconds(value: object) -> float | None:
    """A urllib3 timeout value as seconds; its "default" sentinel and None mean no limit."""
    return float(value) if isinstance(value, (int, float)) else None


def _query_flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, [""])[-1].lower() in ("true", "1")


class Transport(RequestMethods):
    """A urllib3 request object that wraps the pool manager ``kubernetes`` built.

    Args:
        manager: the ``PoolManager``/``ProxyManager`` to send attempts through (already retuned
            by ``_connection.install_pools``).
        settings: the client's settings.
        counters: where the transport and retry counters go.
        limiter: the client's token bucket, or None.
        budget: the client's retry budget.
        watching: the pools are resilient_kube's (``install_pools`` said so), whose hooks tell
            the watchdog each attempt's connection; otherwise sockets keep read timeouts.
        clock: monotonic seconds; sleep: how to wait (both injectable for tests).
    """

    def __init__(
        self,
        manager: urllib3.PoolManager,
        settings: Settings,
        counters: Counters,
        *,
        limiter: TokenBucket | None,
        budget: RetryBudget,
        watching: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(headers=manager.headers)
        self.manager = manager
        self.settings = settings
        self.counters = counters
        self._requests = counters.ticker("requests")
        self._attempts = counters.ticker("attempts")
        self.limiter = limiter
        self.budget = budget
        self._clock = clock
        self._retrying = tenacity.Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=self._should_retry,
            sleep=sleep,
            before_sleep=self._before_sleep,
            retry_error_callback=self._give_up,
        )
        #: The watchdog needs resilient_kube's pools (their hooks tell it the connection).
        self._watching = watching
        #: Every call's socket timeouts unless it brings its own: built once, urllib3 validates
        #: each. A watched call's socket blocks once connected (see ``_watchdog``).
        self._timeout = urllib3.Timeout(
            connect=settings.connect_timeout, read=None if watching else settings.read_timeout
        )
        self._jitter = tenacity.wait_random_exponential(
            multiplier=settings.backoff_base, max=settings.backoff_max
        )
        #: ``(scheme://host:port, pool)`` of the last URL sent, for ``_route``.
        self._last_route: tuple[str, HTTPConnectionPool] | None = None
        #: Proxy managers rewrite requests in their own ``urlopen``: they always get the URL.
        self._direct = type(manager) is urllib3.PoolManager

    # --- what kubernetes and urllib3 call ------------------------------------------------------

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> BaseHTTPResponse:
        """Send one API call: every attempt, wait and retry happens in here."""
        call = self._new_call(method.upper(), url, kw)
        next(self._requests)  # also the retry budget's count of calls
        try:
            # The first attempt runs outside tenacity: almost every call ends here, and the
            # retry machinery (a Future and a Condition per attempt) would double the overhead.
            try:
                first = self._attempt(call)
            except _AttemptFailed as exc:
                if not self._retryable(call, exc):
                    raise
                return self._retry(call, exc)
            if first.status < 429 or not self._retryable(call, first):  # cheap test first
                return first
            return self._retry(call, first)
        except _AttemptFailed as exc:
            self._raise_final(call, exc.failure, exc.cause)
        except errors.RateLimitTimeout as exc:
            self.counters.add("failures")
            raise errors.RateLimitTimeout(
                str(exc), wait=exc.wait, method=call.method, url=call.url, attempts=call.attempts
            ) from None

    def _retry(self, call: _Call, first: BaseHTTPResponse | _AttemptFailed) -> BaseHTTPResponse:
        """Tenacity's attempt loop, entered with the outcome of the first attempt."""
        retrying = self._retrying
        retrying.begin()
        state = tenacity.RetryCallState(retrying, fn=self._attempt, args=(call,), kwargs={})
        outcome: BaseHTTPResponse | _AttemptFailed = first
        while True:
            if isinstance(outcome, _AttemptFailed):
                state.set_exception((type(outcome), outcome, outcome.__traceback__))
            else:
                state.set_result(outcome)
            action = retrying.iter(state)
            if not isinstance(action, tenacity.DoSleep):
                return action  # type: ignore[return-value]  # the response (or iter raised)
            state.prepare_for_next_attempt()
            retrying.sleep(action)
            try:
                outcome = self._attempt(call)
            except _AttemptFailed as exc:
                outcome = exc

    def clear(self) -> None:
        """Close every pooled connection (``RESTClientObject.close`` calls this)."""
        self._last_route = None  # the manager lets go of its pools: so must we
        self.manager.clear()

    def __getattr__(self, name: str) -> Any:
        # Code that reaches into the stock PoolManager (connection_pool_kw, pools, proxy, ...)
        # keeps finding it.
        if name == "manager":  # Defensive: not yet set (during unpickling or a failed __init__)
            raise AttributeError(name)
        return getattr(self.manager, name)

    # --- one call -------------------------------------------------------------------------

    def _new_call(self, method: str, url: str, kw: dict[str, Any]) -> _Call:
        settings = self.settings
        # Cheap test first: most calls have neither word in the URL.
        query: dict[str, list[str]] = {}
        streaming = False
        if "watch" in url or "follow" in url:
            query = parse_qs(urlsplit(url).query)
            streaming = _query_flag(query, "watch") or _query_flag(query, "follow")
        connect, read = settings.connect_timeout, settings.read_timeout
        deadline = settings.deadline
        timeout = kw.pop("timeout", None)
        kw.pop("retries", None)  # client_go_retries' own urllib3 retries: never a second layer
        if isinstance(timeout, urllib3.Timeout):
            total = _seconds(timeout.total)
            if total is not None:
                # _request_timeout=N: the whole call, retries included, within N (never longer
                # than the deadline).
                deadline = total if deadline is None else min(deadline, total)
            else:
                connect = _seconds(timeout.connect_timeout)
                read = _seconds(timeout.read_timeout)
        elif isinstance(timeout, (int, float)):
            deadline = float(timeout) if deadline is None else min(deadline, float(timeout))
        if streaming:
            # A stream lives as long as the server keeps it: no deadline, no limiter.
            deadline = None
            if timeout is None:
                seconds = query.get("timeoutSeconds", [""])[-1]
                read = (
                    float(seconds) + WATCH_READ_MARGIN
                    if seconds.isascii() and seconds.isdigit()
                    else None
                )
            elif isinstance(timeout, (int, float)) or _seconds(timeout.total) is not None:
                # _request_timeout=N on a stream: as in the stock client, N bounds each wait for
                # bytes (urllib3 applies the total to every read of a stream).
                total = float(timeout) if isinstance(timeout, (int, float)) else timeout.total
                read = total
                connect = total if connect is None else min(connect, total)
        if "headers" not in kw:  # as PoolManager.urlopen fills them in
            kw["headers"] = self.headers
        body = kw.get("body")
        preload = bool(kw.get("preload_content", True))
        kw["preload_content"] = False  # kw is this call's own dict (built by **kw)
        watched = self._watching and not streaming
        return _Call(
            method=method,
            url=url,
            send_kwargs=kw,
            timeout=(
                self._timeout
                if connect == settings.connect_timeout and read == settings.read_timeout
                else urllib3.Timeout(connect=connect, read=None if watched else read)
            ),
            watched=watched,
            preload=preload,
            decode=bool(kw.get("decode_content", True)),
            streaming=streaming,
            replayable=body is None or isinstance(body, (bytes, str)),
            repeat_unsafe=settings.retry_non_idempotent,
            connect=connect,
            read=read,
            deadline_at=None if deadline is None else self._clock() + deadline,
            clock=self._clock,
        )

    def _attempt(self, call: _Call) -> BaseHTTPResponse:
        deadline_at = call.deadline_at
        remaining = None if deadline_at is None else deadline_at - self._clock()
        if remaining is not None and remaining <= 0:
            raise _AttemptFailed(Failure("deadline", sent=False, retryable=False), TimeoutError())
        if self.limiter is not None and not call.streaming:
            self.limiter.acquire(timeout=remaining)
            remaining = call.remaining()
        call.attempts += 1
        next(self._attempts)
        connect, read = call.connect, call.read
        timeout = call.timeout
        watch = None
        if call.watched:
            # The socket keeps only the connect timeout; the watchdog keeps the rest.
            if remaining is not None and (connect is None or remaining < connect):
                timeout = urllib3.Timeout(connect=max(remaining, 0.001), read=None)
            hard_at = None if remaining is None else time.monotonic() + remaining
            if read is not None or hard_at is not None:
                watch = Watch(read, hard_at)
        elif remaining is not None and (
            connect is None or read is None or remaining < max(connect, read)
        ):
            remaining = max(remaining, 0.001)
            connect = remaining if connect is None else min(connect, remaining)
            read = remaining if read is None else min(read, remaining)
            timeout = urllib3.Timeout(connect=connect, read=read)
        pool: Any = None
        outer = None
        try:
            if watch is not None:
                call.watch = watch
                start_watch(watch)
            else:
                outer = suspend_watch()
            pool, uri = self._route(call.url)
            response = pool.urlopen(
                call.method,
                uri,
                redirect=False,
                assert_same_host=False,
                retries=_NO_RETRIES,
                timeout=timeout,
                **call.send_kwargs,
            )
            buffered = self._finish(call, response)
        except (u3.HTTPError, OSError) as exc:
            cause: BaseException = exc
            if watch is not None and watch.fired:
                # The watchdog shut the socket down: whatever broke, the cause is the time.
                cause = self._timed_out(call, watch, pool)
            raise _AttemptFailed(classify_error(cause), cause) from exc
        finally:
            if watch is not None:
                call.watch = None
                stop_watch(watch)
            else:
                resume_watch(outer)
        if watch is not None and watch.fired:
            # Shut down mid-headers, http.client can take the end of the stream for the end of
            # an empty response: a fired watch is a timeout whatever came back.
            cause = self._timed_out(call, watch, pool)
            raise _AttemptFailed(classify_error(cause), cause)
        return buffered

    def _timed_out(self, call: _Call, watch: Watch, pool: Any) -> u3.ReadTimeoutError:
        """The error urllib3 would have raised had the socket's own timeout expired."""
        if watch.hard_at is not None and time.monotonic() >= watch.hard_at:
            limit = "deadline reached"
        else:
            limit = f"read timeout={call.read}"
        if not isinstance(pool, HTTPConnectionPool):  # a proxy manager: its pool for the URL
            pool = self.manager.connection_from_url(call.url)
        return u3.ReadTimeoutError(pool, call.url, f"Read timed out. ({limit})")

    def _route(self, url: str) -> tuple[Any, str]:
        """The pool for ``url`` and what to send it, as ``PoolManager.urlopen`` would find them.

        kubernetes builds every URL as ``Configuration.host`` plus a path, so the pool of the last
        URL's ``scheme://host:port`` is kept: parsing the URL and looking the pool up again cost
        more than the rest of the transport's work on a call. A URI that ``parse_url`` would
        rewrite (escapes, dot segments), a closed pool and a proxy take the manager's way.
        """
        if not self._direct:
            return self.manager, url
        last = self._last_route
        if last is not None and url.startswith(last[0]) and last[1].pool is not None:
            uri = url[len(last[0]) :]
            if _PLAIN_URI.fullmatch(uri) and "/." not in uri.partition("?")[0]:
                return last[1], uri
        parsed = parse_url(url)
        pool = self.manager.connection_from_host(
            parsed.host, port=parsed.port, scheme=parsed.scheme
        )
        uri = parsed.request_uri
        prefix = url[: len(url) - len(uri)]
        if url.endswith(uri) and prefix == f"{parsed.scheme}://{parsed.netloc}":
            self._last_route = (prefix, pool)
        return pool, uri

    def _finish(self, call: _Call, response: BaseHTTPResponse) -> BaseHTTPResponse:
        """Read the body within the deadline (not for a healthy stream) and note server signals."""
        headers = response.headers
        if self.limiter is not None:
            flow = headers.get(_FLOW_SCHEMA)
            level = headers.get(_PRIORITY_LEVEL)
            if flow or level:
                self.limiter.record_flow_control(flow, level)
            if response.status == 429:
                self.limiter.on_throttled()
            else:
                self.limiter.on_success()
        if call.streaming and response.status < 300 and not call.preload:
            return response
        body = self._read_body(call, response)
        if type(response) is urllib3.HTTPResponse:
            # The body is cached in the response (``.data`` serves it, as after urllib3's own
            # preload); the subclass also replays it to read() and stream(), for callers that
            # asked for the raw response. Cheaper than building a second response. (urllib3
            # only ever builds this exact class; any other keeps the cache alone, like a
            # response urllib3 preloaded.)
            response.__class__ = _BufferedResponse
            response._rk_replay = io.BytesIO(body)  # type: ignore[attr-defined]
        return response

    def _read_body(self, call: _Call, response: BaseHTTPResponse) -> bytes:
        """Read the whole body within its read time and the deadline.

        A watched call's body gets ``read`` seconds of its own from the watchdog. A stream's
        socket timeout is cut to what the deadline leaves: each ``recv`` waits at most that
        long, so a server that trickles bytes but never stops can overrun the deadline there.
        """
        if call.deadline_at is not None:
            remaining = call.deadline_at - self._clock()
            if remaining <= 0:
                response.release_conn()
                raise u3.ReadTimeoutError(None, call.url, "deadline reached")  # type: ignore[arg-type]
        if call.watch is not None:
            call.watch.restart()  # the body's own read time, within the deadline
        elif call.deadline_at is not None:
            read = call.read
            # urllib3 left the socket at the attempt's read timeout: it only needs cutting when
            # the deadline is now nearer than that.
            if read is None or remaining < read:
                sock = getattr(response.connection, "sock", None)
                if sock is not None:
                    sock.settimeout(remaining)
        try:
            return response.read(decode_content=call.decode, cache_content=True)
        finally:
            response.release_conn()

    # --- tenacity strategies (read the per-call state from the call's args) ---------------------

    def _should_retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None  # Defensive: tenacity sets it before asking
        return self._retryable(state.args[0], outcome.exception() or outcome.result())

    def _retryable(self, call: _Call, outcome: object) -> bool:
        """Whether this outcome may be retried; notes the failure and Retry-After on the call."""
        if isinstance(outcome, _AttemptFailed):
            call.last_failure, call.retry_after = outcome.failure, None
            return call.may_repeat(outcome.failure)
        if not isinstance(outcome, BaseHTTPResponse):
            return False  # Defensive: the limiter's RateLimitTimeout and bugs end the call
        status = outcome.status
        if status < 429:  # the fast path: success and ordinary client errors are final
            return False
        # The API server also sends Status.details.retryAfterSeconds with some 500s ("too many
        # requests"); a delay it asks for is honoured whatever the status.
        delay = server_retry_after(outcome.headers, outcome.data)
        failure = classify_status(status, has_retry_after=delay is not None)
        if failure is None:
            return False
        call.last_failure, call.retry_after = failure, delay
        return call.may_repeat(failure)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        call: _Call = state.args[0]
        if call.retry_after is not None:
            # Never earlier than asked, but spread out: threads refused together must not all
            # come back at the same instant and collide again.
            spread = max(self.settings.backoff_base, call.retry_after / 4)
            return call.retry_after + random.uniform(0, spread)  # jitter, not crypto
        return float(self._jitter(state))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        call: _Call = state.args[0]
        wait = state.upcoming_sleep
        if state.attempt_number >= self.settings.max_attempts:
            call.stop_reason = "attempts"
            return True
        if call.retry_after is not None and call.retry_after > self.settings.retry_after_max:
            call.stop_reason = "retry_after"
            return True
        remaining = call.remaining()
        if remaining is not None and wait >= remaining:
            call.stop_reason = "deadline"
            return True
        # A retry paced by the server's own Retry-After is the server's decision, not load we add
        # on our own: only the retries we time ourselves draw on the budget.
        if call.retry_after is None and not self.budget.try_withdraw():
            call.stop_reason = "budget"
            self.counters.add("budget_refusals")
            return True
        return False

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        call: _Call = state.args[0]
        failure = call.last_failure
        reason = failure.reason if failure is not None else "unknown"
        wait = state.upcoming_sleep
        self.counters.retried(reason, wait)
        log.debug(
            "retrying %s %s: attempt=%d phase=%s reason=%s wait=%.3fs",
            call.method,
            call.path(),
            state.attempt_number,
            "before-send" if failure is not None and not failure.sent else "after-send",
            reason,
            wait,
        )

    def _give_up(self, state: tenacity.RetryCallState) -> BaseHTTPResponse:
        """After the last attempt: hand back the last response, or raise the typed error."""
        call: _Call = state.args[0]
        outcome = state.outcome
        assert outcome is not None  # Defensive: tenacity sets it before asking
        if not outcome.failed:
            response: BaseHTTPResponse = outcome.result()
            log.warning(
                "%s %s failed after %d attempt(s): HTTP %d (stopped: %s)",
                call.method,
                call.path(),
                call.attempts,
                response.status,
                call.stop_reason,
            )
            return response
        exc = outcome.exception()
        assert isinstance(exc, _AttemptFailed)  # only these are retried
        self._raise_final(call, exc.failure, exc.cause)

    def _raise_final(self, call: _Call, failure: Failure, cause: BaseException) -> NoReturn:
        self.counters.add("failures")
        kind, what = _ERRORS.get(failure.reason, (errors.TransportError, "transport error"))
        remaining = call.remaining()
        if (
            failure.reason == "deadline"
            or (call.stop_reason == "deadline" and failure.retryable)
            or (remaining is not None and remaining <= 0 and failure.reason in _TIMEOUTS)
        ):
            kind, what = errors.DeadlineExceeded, "deadline exceeded"
        elif call.stop_reason == "budget" and failure.retryable:
            kind, what = errors.RetryBudgetExhausted, f"retry budget exhausted after {what}"
        message = (
            f"{call.method} {call.path()} failed after {call.attempts} attempt(s): {what}"
            f" ({_describe(cause)})"
        )
        log.warning("%s", message)
        extra: dict[str, Any] = {}
        if kind is errors.NameResolutionError:
            extra["host"] = urlsplit(call.url).hostname or ""
        raise kind(
            message,
            method=call.method,
            url=call.url,
            attempts=call.attempts,
            last_error=cause,
            **extra,
        ) from cause


_TIMEOUTS = frozenset({"connect_timeout", "read_timeout", "deadline"})

_ERRORS: dict[str, tuple[type[errors.TransportError], str]] = {
    "dns": (errors.NameResolutionError, "name resolution failed"),
    "connect_error": (errors.ConnectError, "connection failed"),
    "proxy": (errors.ConnectError, "proxy connection failed"),
    "connect_timeout": (errors.ConnectTimeout, "connect timeout"),
    "tls": (errors.TLSError, "TLS handshake failed"),
    "read_timeout": (errors.ReadTimeout, "read timeout"),
    "reset": (errors.ConnectionReset, "connection reset"),
    "disconnected": (errors.ConnectionReset, "connection closed without a response"),
    "truncated": (errors.ConnectionReset, "response body cut short"),
}


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


_POOL_PREFIX = re.compile(
    r"^\w*(?:ConnectionPool|Connection)\(host='[^']*', port=\d+\)(?: at 0x[0-9a-f]+)?>?: "
)
