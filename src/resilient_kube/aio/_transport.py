"""The asyncio driver: the object behind ``api_client.rest_client.pool_manager`` of ``kubernetes.aio``.

``kubernetes.aio``'s ``RESTClientObject.request`` builds the request (headers, JSON body) and
calls ``pool_manager.request(method=, url=, timeout=, headers=, data=, ...)`` once per API call,
normally on an ``aiohttp.ClientSession``. ``AsyncTransport`` takes that place and runs the attempt
loop with the rules of the shared policy core, as the sync driver does::

    policy.plan --> limits --> limiter reserve + await sleep --> attempt (aiohttp, no retries)
                      ^                                                   |
                      +---- await sleep <-- Retry(wait) <-- policy.decide(call, answer or error)
                                              RETURN -> the response, Raise -> the typed error

Every rule lives in ``_policy``; this module only sends, reads and waits, and reports to the
client's event sink. Its one rule of its own, what an aiohttp error says, is ``_classify``.

A call's body is read inside its attempt, within the deadline and ``max_response_bytes``, so a
cut-off body is retried like any other read failure. Streams (``watch=true``, ``follow=true``)
skip the limiter and the deadline; their read timeout is aiohttp's ``sock_read``, at most
``watch_idle_timeout``, and no total timeout cuts them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.base_protocol import BaseProtocol

from .. import errors
from .._driver import end_call, host_label, log_retry
from .._events import NO_CODE, EventSink
from .._limiter import TokenBucket
from .._policy import RETURN, AttemptError, BodyTooLarge, Call, Policy, Raise, Retry
from ._classify import DEADLINE_REACHED, classify_aiohttp_error

__all__ = ["REQUEST_TIMEOUT", "UNSET", "AsyncTransport"]

log = logging.getLogger(__name__)

#: ``REQUEST_TIMEOUT`` when no ``ApiClient.call_api`` set it (``rest_client.request`` called
#: directly).
UNSET: Final = object()

#: The caller's ``_request_timeout`` as given, set by ``ApiClient.call_api`` for the task. The
#: stock REST layer hands the session ``_request_timeout or 300``, which cannot tell an explicit
#: 300 from none, and a tuple as it is.
REQUEST_TIMEOUT: contextvars.ContextVar[object] = contextvars.ContextVar(
    "resilient_kube_request_timeout", default=UNSET
)

#: The stock REST layer's total timeout when the caller gave none (``rest.py``: ``or 5 * 60``).
_STOCK_DEFAULT_TIMEOUT: Final = 300

_FLOW_SCHEMA = "X-Kubernetes-PF-FlowSchema-UID"
_PRIORITY_LEVEL = "X-Kubernetes-PF-PriorityLevel-UID"


class _Answer:
    """What the policy reads of one answer (``_policy.Answer``): status, headers, body."""

    __slots__ = ("data", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data


def _request_timeout(timeout: object) -> float | tuple[float | None, float | None] | None:
    """The caller's ``_request_timeout`` read back from what the stock REST layer passed on."""
    if isinstance(timeout, aiohttp.ClientTimeout):  # kubernetes_asyncio passes these
        if timeout.total is not None:
            return float(timeout.total)
        connect = timeout.sock_connect if timeout.sock_connect is not None else timeout.connect
        if connect is None and timeout.sock_read is None:
            return None  # ClientTimeout(), kubernetes_asyncio's "none given"
        return (connect, timeout.sock_read)
    if isinstance(timeout, tuple):
        return (timeout[0], timeout[1])
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        # The stock default stands for "none given" (see REQUEST_TIMEOUT).
        return None if timeout == _STOCK_DEFAULT_TIMEOUT else float(timeout)
    return None


def _shorter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


class AsyncTransport:
    """Stands in for the ``aiohttp.ClientSession`` of ``kubernetes.aio``'s REST layer.

    Args:
        make_session: builds the session on first use (aiohttp sessions belong to the running
            loop, and a client may be built before one runs).
        policy: the client's rules (``_policy.Policy``).
        events: where attempts, retries, limiter waits and call ends are reported.
        requests: the running count of calls (the retry budget's measure of traffic).
        limiter: the client's token bucket, or None.
        proxy: the proxy URL and credentials from the environment, for calls without one.
        sleep: how to wait (injectable for tests).
    """

    def __init__(
        self,
        make_session: Callable[[], aiohttp.ClientSession],
        policy: Policy,
        events: EventSink,
        requests: Iterator[int],
        *,
        limiter: TokenBucket | None,
        proxy: tuple[str, aiohttp.BasicAuth | None] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._make_session = make_session
        self.session: aiohttp.ClientSession | None = None
        #: Set by ``close()``: no session is made again (it would never be closed).
        self._closed = False
        self.policy = policy
        self.settings = policy.settings
        self.events = events
        self._requests = requests
        self.limiter = limiter
        self._sleep = sleep
        #: The proxy the environment names for the API server (looked up once), used when the
        #: configuration names none.
        self._proxy = proxy
        settings = policy.settings
        #: Every call's per-attempt timeouts unless it brings its own or the deadline is nearer.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        #: ``(scheme://host:port, host:port)`` of the last URL sent: events name the host.
        self._last_host: tuple[str, str] | None = None

    # --- what kubernetes.aio calls ---------------------------------------------------------

    async def request(
        self, method: str, url: str, *, timeout: object = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """Send one API call: every attempt, wait and retry happens in here."""
        policy = self.policy
        kwargs.pop("retry_options", None)  # never a second retry layer
        if self._proxy is not None and "proxy" not in kwargs:
            kwargs["proxy"], kwargs["proxy_auth"] = self._proxy
        given = REQUEST_TIMEOUT.get()
        request_timeout = _request_timeout(timeout) if given is UNSET else given
        data = kwargs.get("data")
        call = policy.plan(
            method.upper(),
            url,
            request_timeout,  # type: ignore[arg-type]  # the caller's, checked by kubernetes
            replayable=data is None or isinstance(data, (bytes, str)),
        )
        if call.streaming and request_timeout is None:
            # Workaround until Policy.plan takes an idle timeout: a stream's silence limit is
            # watch_idle_timeout (or the server's timeoutSeconds plus its margin, if shorter).
            call.read = _shorter(call.read, self.settings.watch_idle_timeout)
        next(self._requests)  # also the retry budget's count of calls
        began = time.monotonic()
        events = self.events
        host = self._host(url)
        extra: dict[str, str] = {}
        events.call_started(call.method, host, extra)
        if extra:  # a subscriber's headers (tracing), on this call's own copy
            kwargs["headers"] = {**(kwargs.get("headers") or {}), **extra}
        data_bytes = len(data) if isinstance(data, (bytes, str)) else 0
        outcome: aiohttp.ClientResponse | AttemptError | None = None
        try:
            while True:
                try:
                    outcome, answer = await self._attempt(call, host, kwargs, data_bytes)
                    decision = policy.decide(call, answer)
                except AttemptError as exc:
                    outcome = exc
                    decision = policy.decide(call, exc)
                if decision is RETURN:
                    break
                if isinstance(decision, Raise):
                    raise decision.error from decision.error.last_error
                assert isinstance(decision, Retry)  # Defensive: the three decisions
                code = (
                    str(outcome.status) if isinstance(outcome, aiohttp.ClientResponse) else NO_CODE
                )
                events.retry(call.method, host, code, decision.reason, decision.wait)
                log_retry(call, decision)
                await self._sleep(decision.wait)
        except errors.RateLimitTimeout as exc:
            if call.attempts and isinstance(outcome, aiohttp.ClientResponse):
                # The limiter refused a retry: the server's own answer (its 429) says more.
                call.stop = "rate_limit"
            else:
                error = policy.rate_limited(call, exc)
                end_call(events, call, host, began, type(error).__name__)
                raise error from None
        except errors.TransportError as exc:
            end_call(events, call, host, began, type(exc).__name__)
            log.warning("%s", exc)
            raise
        except BaseException as exc:
            # Cancelled (or a bug): the call ends without an answer.
            end_call(events, call, host, began, type(exc).__name__)
            raise
        end_call(events, call, host, began, None)
        assert isinstance(outcome, aiohttp.ClientResponse)  # Defensive: RETURN follows answers
        if call.stop is not None and call.stop != "final":
            log.warning(
                "%s %s failed after %d attempt(s): HTTP %d (stopped: %s)",
                call.method,
                call.path(),
                call.attempts,
                outcome.status,
                call.stop,
            )
        return outcome

    async def close(self) -> None:
        """Close the session and every pooled connection (``RESTClientObject.close`` calls it)."""
        self._closed = True
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    @property
    def closed(self) -> bool:
        return self.session is None or self.session.closed

    def __getattr__(self, name: str) -> Any:
        # Code that reaches into the stock session (connector, cookie_jar, ...) keeps finding it
        # once there is one; before the first call the stock REST layer has none either (and a
        # session must not be made outside the loop).
        session = self.__dict__.get("session")
        if session is None:
            raise AttributeError(name)
        return getattr(session, name)

    # --- one call --------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        session = self.session
        if session is None or session.closed:
            if self._closed:
                # As the stock client's closed session says: a client used after close() would
                # otherwise open a session that nobody closes.
                raise RuntimeError("Session is closed")
            session = self.session = self._make_session()
            # aiohttp's own hidden retry: it re-sends GET, HEAD, PUT, DELETE, OPTIONS and TRACE
            # once on a broken pooled connection, a write the server may have done included
            # (issue 22). There is no public switch; the policy decides every repeat.
            session._retry_connection = False
        return session

    def _host(self, url: str) -> str:
        """``host:port`` of ``url``, for events (the last URL's, without parsing, when it fits)."""
        last = self._last_host
        if last is not None and url.startswith(last[0]):
            return last[1]
        parts = urlsplit(url)
        host = host_label(url)
        self._last_host = (f"{parts.scheme}://{parts.netloc}/", host)
        return host

    async def _attempt(
        self, call: Call, host: str, kwargs: dict[str, Any], request_bytes: int
    ) -> tuple[aiohttp.ClientResponse, _Answer]:
        """One attempt on the wire: wait for the limiter, send, read the body (not a stream's)."""
        policy = self.policy
        limits = policy.limits(call)
        if self.limiter is not None and not call.streaming:
            wait = self.limiter.reserve(timeout=limits.remaining)
            if wait:
                await self._sleep(wait)  # the slot is ours; other tasks run meanwhile
                limits = policy.limits(call)
            self.events.limiter_wait(call.method, host, wait)
        connect, read, remaining = limits.connect, limits.read, limits.remaining
        timeout = (
            self._timeout
            if connect == self._timeout.sock_connect and read == self._timeout.sock_read
            else aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        )
        session = self._get_session()
        response: aiohttp.ClientResponse | None = None
        started = time.monotonic()
        # The whole attempt (pool wait, DNS, connect, headers, body) within what the deadline
        # leaves; None: no deadline (a stream).
        scope = asyncio.timeout(remaining)
        try:
            async with scope:
                response = await session.request(call.method, call.url, timeout=timeout, **kwargs)
                body = await self._finish(call, host, response)
        except (aiohttp.ClientError, OSError, BodyTooLarge) as exc:
            # aiohttp's timeouts are OSErrors too (TimeoutError); so is the deadline's.
            failure = DEADLINE_REACHED if scope.expired() else classify_aiohttp_error(exc)
            cause: BaseException = exc
            if scope.expired():
                cause = TimeoutError(f"deadline reached (read timeout={call.read})")
            if response is not None:
                response.close()  # the connection may be mid-answer: it goes, not back
            self._report(call, host, None, started, request_bytes=request_bytes, response_bytes=0)
            raise AttemptError(failure, cause) from exc
        except BaseException:
            # Cancelled while the answer was coming: its connection goes, not back to the pool.
            if response is not None:
                response.close()
            raise
        self._report(
            call,
            host,
            response,
            started,
            request_bytes=request_bytes,
            response_bytes=len(body or b""),
        )
        return response, _Answer(response.status, response.headers, body or b"")

    def _report(
        self,
        call: Call,
        host: str,
        response: aiohttp.ClientResponse | None,
        started: float,
        *,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        code = NO_CODE if response is None else str(response.status)
        self.events.attempt(
            call.method, host, code, time.monotonic() - started, request_bytes, response_bytes
        )

    async def _finish(
        self, call: Call, host: str, response: aiohttp.ClientResponse
    ) -> bytes | None:
        """Note the server's signals and read the body (None: a healthy stream, left unread)."""
        headers = response.headers
        warning = headers.get("Warning")
        if warning:
            self.events.server_warning(host, warning)
        limiter = self.limiter
        if limiter is not None:
            flow = headers.get(_FLOW_SCHEMA)
            level = headers.get(_PRIORITY_LEVEL)
            if flow or level:
                limiter.record_flow_control(flow, level)
                self.events.flow_control(flow, level)
            if response.status == 429:
                limiter.on_throttled()
            else:
                limiter.on_success()
        if call.streaming and response.status < 300:
            return None
        return await self._read_body(response)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """Read the whole (decoded) body, at most ``max_response_bytes``, and keep it.

        ``response.read()``, ``.text()`` and ``.json()`` then serve the kept bytes, as after
        aiohttp's own read; ``response.content`` replays them to callers who read the stream.
        """
        limit = self.settings.max_response_bytes
        content = response.content
        if limit is None:
            body = await response.read()
        else:
            parts: list[bytes] = []
            size = 0
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"response body passed max_response_bytes={limit}")
                parts.append(chunk)
            body = b"".join(parts)
            # As ClientResponse.read() keeps it. (Not release(): a response released by hand
            # refuses read(); reaching the end of the body gave the connection back already.)
            response._body = body
        # A fresh reader holding the body, for callers of the raw response that read
        # ``response.content`` (``*_without_preload_content``). Its limit is above the body's
        # size, so feeding it never asks the (dummy) protocol to pause.
        loop = asyncio.get_running_loop()
        replay = aiohttp.StreamReader(_NoFlowControl(loop), max(len(body), 1), loop=loop)
        if body:
            replay.feed_data(body)
        replay.feed_eof()
        response.content = replay
        return body


class _NoFlowControl(BaseProtocol):
    """The protocol of a replay reader: there is no socket to pause."""

    __slots__ = ()
