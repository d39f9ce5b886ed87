"""The sync driver: the object behind ``api_client.rest_client.pool_manager`` that sends every attempt.

``kubernetes`` calls ``pool_manager.request(method, url, ...)`` once per API call. urllib3's
``RequestMethods.request`` encodes the body and calls ``urlopen``, which runs the attempt loop::

    policy.plan --> limits --> limiter reserve + sleep --> attempt (urllib3, retries off)
                      ^                                            |
                      +------ sleep <-- Retry(wait) <-- policy.decide(call, answer or error)
                                          RETURN -> the answer, Raise -> the typed error

Every rule lives in ``_policy``; this module only does I/O: the pool, the watchdog's timers and
the buffered body. Everything that happens is reported to the client's event sink.

Streams (``watch=true``, ``follow=true``) skip the limiter and the deadline, and get a read timeout
of the server's ``timeoutSeconds`` plus a margin instead of ``read_timeout``. Other calls have their
body read inside the attempt, so a truncated body is retried like any other read failure.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

import urllib3
import urllib3.exceptions as u3
from urllib3._request_methods import RequestMethods
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.url import parse_url

from . import errors
from ._credentials import Credentials
from ._driver import end_call, host_label, log_retry
from ._endpoints import Endpoint, EndpointSet
from ._events import NO_CODE, EventSink
from ._limiter import TokenBucket
from ._policy import (
    REAUTHENTICATE,
    RETURN,
    AttemptError,
    BodyTooLarge,
    Call,
    Policy,
    Raise,
    Retry,
    classify_error,
)
from ._redact import redact_url
from ._watchdog import Timer
from ._watchdog import resume as resume_timer
from ._watchdog import start as start_timer
from ._watchdog import stop as stop_timer
from ._watchdog import suspend as suspend_timer

__all__ = ["Transport"]

log = logging.getLogger(__name__)

#: urllib3 retries off, built once: urllib3 would otherwise convert ``False`` on every attempt.
_NO_RETRIES = urllib3.Retry(total=False)

#: A request URI that urllib3's ``parse_url`` leaves exactly as it is: only characters it allows
#: unencoded, upper-case percent-escapes, no fragment. (Dot segments are checked apart.)
_PLAIN_URI = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-F]{2})*")

#: The header kubernetes puts the bearer token in (``Configuration.auth_settings``' key).
_AUTHORIZATION = "authorization"

_FLOW_SCHEMA = "x-kubernetes-pf-flowschema-uid"
_PRIORITY_LEVEL = "x-kubernetes-pf-prioritylevel-uid"


def _header(headers: dict[str, list[str]], name: str) -> str | None:
    """A header's value from urllib3's lower-cased store (``name`` is lower case)."""
    values = headers.get(name)
    return None if values is None else ", ".join(values[1:])


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


class _Wire:
    """What the driver keeps of one call beside the policy's ``Call``: how to send it."""

    __slots__ = (
        "decode",
        "endpoint",
        "kwargs",
        "preload",
        "request_bytes",
        "timed",
        "timeout",
        "timer",
    )

    def __init__(self, transport: Transport, call: Call, kwargs: dict[str, Any]) -> None:
        if "headers" not in kwargs:  # as PoolManager.urlopen fills them in
            kwargs["headers"] = transport.headers
        #: What the caller asked of the response it gets back.
        self.preload = bool(kwargs.get("preload_content", True))
        self.decode = bool(kwargs.get("decode_content", True))
        #: What urllib3 gets for every attempt: the caller's arguments, the body never preloaded
        #: (the attempt reads it itself, within the deadline). ``kwargs`` is this call's own dict.
        kwargs["preload_content"] = False
        self.kwargs = kwargs
        #: Whether the watchdog keeps this call's read time (every call but a stream).
        self.timed = timed = transport._timed and not call.streaming
        settings = transport.settings
        #: Each attempt's socket timeouts while the deadline is further away than both (a timed
        #: call's sockets only have the connect timeout: the watchdog keeps its read time).
        self.timeout = (
            transport._timeout
            if call.connect == settings.connect_timeout and call.read == settings.read_timeout
            else urllib3.Timeout(connect=call.connect, read=None if timed else call.read)
        )
        body = kwargs.get("body")
        self.request_bytes = len(body) if isinstance(body, (bytes, str)) else 0
        #: The running attempt's timer, while the watchdog keeps its time.
        self.timer: Timer | None = None
        #: The API server the last attempt went to, with several (``endpoints``).
        self.endpoint: Endpoint | None = None


def _seconds(value: object) -> float | None:
    """A urllib3 timeout value as seconds; its "default" sentinel and None mean no limit."""
    return float(value) if isinstance(value, (int, float)) else None


def _request_timeout(timeout: object) -> float | tuple[float | None, float | None] | None:
    """urllib3's per-request ``timeout`` as the caller's ``_request_timeout`` was given.

    kubernetes turns ``_request_timeout=N`` into ``Timeout(total=N)`` and ``(connect, read)``
    into ``Timeout(connect=, read=)``; a bare number comes from code that calls urllib3 itself.
    """
    if isinstance(timeout, urllib3.Timeout):
        total = _seconds(timeout.total)
        if total is not None:
            return total
        return (_seconds(timeout.connect_timeout), _seconds(timeout.read_timeout))
    if isinstance(timeout, (int, float)):
        return float(timeout)
    return None


class Transport(RequestMethods):
    """A urllib3 request object that wraps the pool manager ``kubernetes`` built.

    The sync driver: it sends, reads and waits, and asks ``policy`` what every outcome means.

    Args:
        manager: the ``PoolManager``/``ProxyManager`` to send attempts through (already retuned
            by ``_connection.install_pools``).
        policy: the client's rules (``_policy.Policy``).
        events: where attempts, retries, limiter waits and call ends are reported.
        requests: the running count of calls (the retry budget's measure of traffic).
        limiter: the client's token bucket, or None.
        credentials: what a 401 refreshes (a call is replayed once with fresh ones), or None.
        endpoints: several API servers sharing the identity of ``origin`` (the configured
            host), or None: each attempt goes to one ``endpoints.pick`` chooses.
        timed: the pools are resilient_kube's (``install_pools`` said so), whose hooks tell
            the watchdog each attempt's connection; otherwise sockets keep read timeouts.
        sleep: how to wait (injectable for tests).
    """

    def __init__(
        self,
        manager: urllib3.PoolManager,
        policy: Policy,
        events: EventSink,
        requests: Iterator[int],
        *,
        limiter: TokenBucket | None,
        credentials: Credentials | None = None,
        endpoints: EndpointSet | None = None,
        origin: str = "",
        timed: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(headers=manager.headers)
        self.manager = manager
        self.policy = policy
        self.settings = policy.settings
        self.events = events
        self._requests = requests
        self.limiter = limiter
        self.credentials = credentials
        self.endpoints = endpoints
        #: ``scheme://host[:port]`` of the configured host: what endpoints replace in a URL.
        self._origin = origin.rstrip("/")
        self._tls_name = urlsplit(origin).hostname or ""
        self._streams: dict[Endpoint, weakref.WeakSet[BaseHTTPResponse]] = {}
        self._sleep = sleep
        #: The watchdog needs resilient_kube's pools (their hooks tell it the connection).
        self._timed = timed
        settings = policy.settings
        #: Every call's socket timeouts unless it brings its own: built once, urllib3 validates
        #: each. A timed call's socket blocks once connected (see ``_watchdog``).
        self._timeout = urllib3.Timeout(
            connect=settings.connect_timeout, read=None if timed else settings.read_timeout
        )
        #: ``(scheme://host:port, pool, host:port)`` of the last URL sent, for ``_route``.
        self._last_route: tuple[str, HTTPConnectionPool, str] | None = None
        #: Proxy managers rewrite requests in their own ``urlopen``: they always get the URL.
        self._direct = type(manager) is urllib3.PoolManager

    # --- what kubernetes and urllib3 call ------------------------------------------------------

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> BaseHTTPResponse:
        """Send one API call: every attempt, wait and retry happens in here."""
        policy = self.policy
        kw.pop("retries", None)  # client_go_retries' own urllib3 retries: never a second layer
        body = kw.get("body")
        headers = kw.get("headers")
        call = policy.plan(
            method.upper(),
            url,
            None if (timeout := kw.pop("timeout", None)) is None else _request_timeout(timeout),
            replayable=body is None or isinstance(body, (bytes, str)),
            authenticated=self.credentials is not None
            and headers is not None
            and _AUTHORIZATION in headers,
        )
        next(self._requests)  # also the retry budget's count of calls
        began = time.monotonic()
        events = self.events
        host = self._host(url)
        extra: dict[str, str] = {}
        events.call_started(call.method, host, extra)
        if extra:  # a subscriber's headers (tracing), on this call's own copy
            kw["headers"] = {**kw.get("headers", self.headers), **extra}
        wire = _Wire(self, call, kw)
        outcome: BaseHTTPResponse | AttemptError | None = None
        try:
            while True:
                try:
                    outcome = self._attempt(call, wire, host)
                except AttemptError as exc:
                    outcome = exc
                decision = policy.decide(call, outcome)
                if decision is RETURN:
                    break
                if isinstance(decision, Raise):
                    raise decision.error from decision.error.last_error
                if decision is REAUTHENTICATE:
                    if not self._reauthenticate(call, wire):
                        break  # nothing fresher: the 401 goes back
                    events.retry(call.method, host, "401", "unauthorized", 0.0)
                    continue
                assert isinstance(decision, Retry)  # Defensive: the four decisions
                code = str(outcome.status) if isinstance(outcome, BaseHTTPResponse) else NO_CODE
                events.retry(call.method, host, code, decision.reason, decision.wait)
                log_retry(call, decision)
                self._sleep(decision.wait)
        except errors.RateLimitTimeout as exc:
            if call.attempts and isinstance(outcome, BaseHTTPResponse):
                # The limiter refused a retry: the server's own answer (its 429) says more than
                # "client-side throttling" would.
                call.stop = "rate_limit"
            else:
                error = policy.rate_limited(call, exc)
                end_call(events, call, host, began, type(error).__name__)
                raise error from None
        except errors.TransportError as exc:
            end_call(events, call, host, began, type(exc).__name__)
            log.warning("%s", exc)
            raise
        end_call(events, call, host, began, None)
        assert isinstance(outcome, BaseHTTPResponse)  # Defensive: RETURN only follows answers
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

    def _host(self, url: str) -> str:
        """``host:port`` of ``url``, for events (the last route's, without parsing, when it fits)."""
        last = self._last_route
        if last is not None and url.startswith(last[0]):
            return last[2]
        return host_label(url)

    def _reauthenticate(self, call: Call, wire: _Wire) -> bool:
        """Swap fresh credentials into this call's headers; False when there are none."""
        assert self.credentials is not None  # Defensive: plan only allows it with credentials
        headers = wire.kwargs["headers"]
        fresh = self.credentials.refresh(headers.get(_AUTHORIZATION), call.deadline_at)
        if fresh is None:
            return False
        # This call's own copy: kubernetes may share the dict it passed in.
        wire.kwargs["headers"] = {**headers, _AUTHORIZATION: fresh}
        log.info("%s %s: 401, replaying once with fresh credentials", call.method, call.path())
        return True

    def _attempt(self, call: Call, wire: _Wire, host: str) -> BaseHTTPResponse:
        """One attempt on the wire: wait for the limiter, send, read the body (not a stream's)."""
        limits = self.policy.limits(call)
        remaining = limits.remaining
        if self.limiter is not None and not call.streaming:
            wait = self.limiter.reserve(timeout=remaining)
            if wait:
                self._sleep(wait)
                limits = self.policy.limits(call)
                remaining = limits.remaining
            self.events.limiter_wait(call.method, host, wait)
        connect, read = limits.connect, limits.read
        timeout = wire.timeout
        timer = None
        if wire.timed:
            # The socket keeps only the connect timeout; the watchdog keeps the rest.
            if remaining is not None:
                if connect != call.connect:
                    timeout = urllib3.Timeout(connect=max(connect or 0.0, 0.001), read=None)
                timer = Timer(call.read, time.monotonic() + remaining)
            elif read is not None:
                timer = Timer(read, None)
        elif remaining is not None and (connect != call.connect or read != call.read):
            timeout = urllib3.Timeout(
                connect=None if connect is None else max(connect, 0.001),
                read=None if read is None else max(read, 0.001),
            )
        pool: Any = None
        outer = None
        started = time.monotonic()
        response: BaseHTTPResponse | None = None
        try:
            if timer is not None:
                wire.timer = timer
                start_timer(timer)
            else:
                outer = suspend_timer()
            if self.endpoints is not None and call.url.startswith(self._origin):
                pool, uri = self._endpoint_route(call, wire)
            else:
                pool, uri = self._route(call.url)
            response = pool.urlopen(
                call.method,
                uri,
                redirect=False,
                assert_same_host=False,
                retries=_NO_RETRIES,
                timeout=timeout,
                **wire.kwargs,
            )
            buffered = self._finish(call, wire, response)
        except (u3.HTTPError, OSError) as exc:
            cause: BaseException = exc
            if timer is not None and timer.fired:
                # The watchdog shut the socket down: whatever broke, the cause is the time.
                cause = self._timed_out(call, timer, pool)
            self._report(call, host, response, started, wire)
            raise AttemptError(classify_error(cause), cause) from exc
        finally:
            if timer is not None:
                wire.timer = None
                stop_timer(timer)
            else:
                resume_timer(outer)
        if timer is not None and timer.fired:
            # Shut down mid-headers, http.client can take the end of the stream for the end of
            # an empty response: a fired timer is a timeout whatever came back.
            cause = self._timed_out(call, timer, pool)
            self._report(call, host, None, started, wire)
            raise AttemptError(classify_error(cause), cause)
        self._report(call, host, buffered, started, wire)
        return buffered

    def _report(
        self,
        call: Call,
        host: str,
        response: BaseHTTPResponse | None,
        started: float,
        wire: _Wire,
    ) -> None:
        endpoint = wire.endpoint
        if endpoint is not None and self.endpoints is not None:
            if response is None or response.status == 503:
                self.endpoints.failed(endpoint)
            else:
                self.endpoints.succeeded(endpoint)
                if call.streaming and response.status < 300:
                    self._streams.setdefault(endpoint, weakref.WeakSet()).add(response)
        if response is None:
            code, size = NO_CODE, 0
        else:
            code = str(response.status)
            # The buffered body; None for a stream the caller reads.
            data = getattr(response, "_body", None)
            size = len(data) if data else 0
        self.events.attempt(
            call.method, host, code, time.monotonic() - started, wire.request_bytes, size
        )

    def _endpoint_route(self, call: Call, wire: _Wire) -> tuple[Any, str]:
        """The pool of the endpoint for this attempt (a retry avoids the last one), and the URI.

        TLS verifies the configured host's name on every endpoint: they share one identity.
        """
        assert self.endpoints is not None  # Defensive: only called with endpoints
        endpoint = self.endpoints.pick(avoid=wire.endpoint)
        wire.endpoint = endpoint
        return self.endpoint_route(endpoint, call.url[len(self._origin) :] or "/")

    def endpoint_route(self, endpoint: Endpoint, uri: str) -> tuple[Any, str]:
        """Where to send ``uri`` on ``endpoint``: its pool, or a plain-HTTP proxy's whole URL."""
        if not self._direct and endpoint.scheme == "http":
            return self.manager, endpoint.prefix + uri  # a plain-HTTP proxy takes whole URLs
        pool = endpoint.pool
        if pool is None or pool.pool is None:  # first use, or closed by clear()
            pool = endpoint.pool = self._endpoint_pool(endpoint)
        return pool, uri

    def _endpoint_pool(self, endpoint: Endpoint) -> Any:
        """The connection pool for ``endpoint``, with the configured host's TLS name."""
        kwargs = None
        if endpoint.scheme == "https":
            kwargs = {"server_hostname": self._tls_name, "assert_hostname": self._tls_name}
        return self.manager.connection_from_host(
            endpoint.host, port=endpoint.port, scheme=endpoint.scheme, pool_kwargs=kwargs
        )

    def cut_streams(self, endpoint: Endpoint) -> None:
        """Shut down the streams (watches) open on ``endpoint``: they re-open elsewhere."""
        for response in list(self._streams.pop(endpoint, ())):
            with contextlib.suppress(Exception):  # a stream that ended meanwhile
                response.shutdown()

    def _timed_out(self, call: Call, timer: Timer, pool: Any) -> u3.ReadTimeoutError:
        """The error urllib3 would have raised had the socket's own timeout expired."""
        if timer.hard_at is not None and time.monotonic() >= timer.hard_at:
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
            if "@" in url:
                # Through an HTTP proxy the whole URL is the request line: a password written
                # into Configuration.host would go to the proxy and into urllib3's log. RFC 9110
                # section 4.2.4: a target URI carries no userinfo.
                url = redact_url(url, remove=True)
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
            self._last_route = (prefix, pool, (parsed.netloc or "").rpartition("@")[2])
        return pool, uri

    def _finish(self, call: Call, wire: _Wire, response: BaseHTTPResponse) -> BaseHTTPResponse:
        """Read the body within the deadline (not for a healthy stream) and note server signals."""
        # urllib3's HTTPHeaderDict keeps lower-cased names -> [name, value, ...]: one dict
        # lookup each, where .get() costs a Mapping dispatch, a lower() and a join per header.
        headers = getattr(response.headers, "_container", None)
        if headers is None:  # Defensive: a urllib3 that stores headers otherwise
            headers = {k.lower(): [k, v] for k, v in response.headers.items()}
        warning = _header(headers, "warning")
        if warning:
            self.events.server_warning(self._host(call.url), warning)
        flow = _header(headers, _FLOW_SCHEMA)
        level = _header(headers, _PRIORITY_LEVEL)
        limiter = self.limiter
        if flow or level:
            self.events.flow_control(flow, level)
            if limiter is not None:
                limiter.record_flow_control(flow, level)
        if limiter is not None:
            if response.status == 429:
                limiter.on_throttled()
            else:
                limiter.on_success()
        if call.streaming and response.status < 300 and not wire.preload:
            return response
        body = self._read_body(call, wire, response)
        if type(response) is urllib3.HTTPResponse:
            # The body is cached in the response (``.data`` serves it, as after urllib3's own
            # preload); the subclass also replays it to read() and stream(), for callers that
            # asked for the raw response. Cheaper than building a second response. (urllib3
            # only ever builds this exact class; any other keeps the cache alone, like a
            # response urllib3 preloaded. tests/unit/test_buffered_response.py checks that the
            # subclass covers every public read method of urllib3's.)
            response.__class__ = _BufferedResponse
            response._rk_replay = io.BytesIO(body)  # type: ignore[attr-defined]
        return response

    def _read_body(self, call: Call, wire: _Wire, response: BaseHTTPResponse) -> bytes:
        """Read the whole body within its read time and the deadline.

        A timed call's body gets ``read`` seconds of its own from the watchdog. A stream's
        socket timeout is cut to what the deadline leaves: each ``recv`` waits at most that
        long, so a server that trickles bytes but never stops can overrun the deadline there.
        """
        deadline_at = call.deadline_at
        if deadline_at is not None:
            remaining = deadline_at - self.policy.clock()
            if remaining <= 0:
                response.release_conn()
                raise u3.ReadTimeoutError(None, call.url, "deadline reached")  # type: ignore[arg-type]
        if wire.timer is not None:
            wire.timer.restart()  # the body's own read time, within the deadline
        elif deadline_at is not None:
            read = call.read
            # urllib3 left the socket at the attempt's read timeout: it only needs cutting when
            # the deadline is now nearer than that.
            if read is None or remaining < read:
                sock = getattr(response.connection, "sock", None)
                if sock is not None:
                    sock.settimeout(remaining)
        limit = self.settings.max_response_bytes
        try:
            length = response.length_remaining
            if limit is None or (
                length is not None
                and length <= limit
                and "content-encoding"
                not in getattr(response.headers, "_container", response.headers)
            ):
                # The common case, in one read: no limit, or a plain body whose Content-Length
                # fits (http.client reads exactly that many bytes).
                return response.read(decode_content=wire.decode, cache_content=True)
            # One byte past the limit, decoded: urllib3 (>= 2.6) decompresses only what a read
            # asks for, so a gzip bomb or an endless chunked body costs the limit, no more.
            body = response.read(limit + 1, decode_content=wire.decode)
            if len(body) > limit:
                response.close()  # the rest is never read: the connection goes, not back
                raise BodyTooLarge(f"response body passed max_response_bytes={limit}")
            response._body = body  # type: ignore[attr-defined]  # as read(cache_content=True)
            return body
        finally:
            response.release_conn()
