"""``Watch``: ``kubernetes.aio.watch.Watch`` that resumes after every break and never hangs.

The asyncio twin of ``resilient_kube._watch``: the same ``_watch_rules.WatchRules`` decide when
and from where to re-open, the same ``EventReader`` turns lines into events and moves the
resume point, the same ``Backoff`` spaces the re-opens. This module only opens streams through
the API function the caller passes (so resilient_kube's asyncio driver makes the connection),
reads chunks, hands events out and awaits. See docs/asyncio.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp
import kubernetes.aio.client.exceptions
import kubernetes.aio.watch

from .. import errors
from .._backoff import DEFAULT_BACKOFF, Backoff, BackoffPolicy
from .._events import EventSink
from .._watch_rules import ErrorTypes, EventReader, WatchRules, status_error
from ._classify import classify_watch_break

__all__ = ["AIO_ERRORS", "ResourceExpired", "Watch", "pause", "split_lines"]

_NO_EVENTS = EventSink()


class ResourceExpired(errors.ResourceExpired, kubernetes.aio.client.exceptions.ApiException):  # type: ignore[misc]
    """410 Gone on the asyncio client: ``resilient_kube.ResourceExpired`` and ``kubernetes.aio``'s
    ``ApiException`` at once, so ``except ApiException`` blocks written for ``kubernetes.aio``
    keep working (it has its own ``ApiException`` class, apart from ``kubernetes.client``'s).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_expired, (self.reason, self.body))


def _restore_expired(reason: str, body: str | None) -> ResourceExpired:
    return ResourceExpired(reason, body=body)


#: ``kubernetes.aio``'s ``ApiException`` and the ``ResourceExpired`` above.
AIO_ERRORS = ErrorTypes(kubernetes.aio.client.exceptions.ApiException, ResourceExpired)


class Watch(kubernetes.aio.watch.Watch):  # type: ignore[misc]
    """A drop-in ``kubernetes.aio.watch.Watch`` that resumes from the last resourceVersion it delivered.

    ``async for event in w.stream(func, *args, **kwargs)``, ``async with``, ``stop()``,
    ``close()``, ``resource_version`` and the event dicts (``type``, ``object``,
    ``raw_object``) are the stock client's. The rules are the sync ``resilient_kube.Watch``'s:

    * a reset, a truncated chunk, an idle stream (no byte for ``watch_idle_timeout``, cut by
      the asyncio driver), an early end, or a 429/5xx or connection failure while re-opening:
      the stream is opened again from the last resourceVersion delivered (bookmarks included),
      after a backoff with full jitter (0.8 s doubling to 30 s). No event is delivered twice or
      skipped.
    * bookmarks are asked for unless the caller says ``allow_watch_bookmarks=False``; BOOKMARK
      events reach the caller only when it asked for them.
    * without ``timeout_seconds`` each request asks the server for 5 to 10 minutes and the
      stream runs until ``stop()``; with it, the stream ends then.
    * 410 Gone raises ``ResourceExpired`` (also a ``kubernetes.aio`` ``ApiException``) at once;
      401, 403 and other 4xx are raised. A failure of the very first request is raised as
      from any call (the driver retried it already).
    * ``follow=True`` log streams are passed through as the stock client reads them.

    Restarts and events are reported to the client's event sink (``stats()``). ``stop()`` is
    for the loop's thread (from another thread: ``loop.call_soon_threadsafe(w.stop)``); it
    ends a wait and an open stream at once.

    Args:
        return_type: as in the stock client.
        backoff: the reconnect policy, or a ``Backoff`` shared with an informer.
        clock: monotonic seconds; sleep: an ``async`` wait (default: one that ``stop()`` ends).
        rng: draws the jitter and each request's ``timeoutSeconds`` (seed it in tests).

    Example:
        >>> from kubernetes.aio.client import CoreV1Api  # doctest: +SKIP
        >>> async with Watch() as w:  # doctest: +SKIP
        ...     async for event in w.stream(CoreV1Api(api).list_namespaced_pod, "default"):
        ...         print(event["type"], event["object"].metadata.name)
    """

    def __init__(
        self,
        return_type: Any = None,
        *,
        backoff: BackoffPolicy | Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(return_type)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._backoff = Backoff.of(backoff, clock=clock, rng=self._rng)
        self._sleep = sleep
        #: Set by stop(); made per stream (an asyncio.Event belongs to the loop that waits).
        self._woken: asyncio.Event | None = None
        self._events: AsyncGenerator[Any, None] | None = None
        #: The open stream's ``aiohttp.ClientResponse``, for stop().
        self._open: Any = None

    def stop(self) -> None:
        """End the stream: iteration stops after the event in hand, or at once when waiting."""
        self._stop = True
        if self._woken is not None:
            self._woken.set()
        resp = self._open
        if resp is not None:
            # Wakes a read waiting on the socket: the connection goes, not back to the pool.
            resp.close()

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Watch:
        """Watch ``func`` (e.g. ``CoreV1Api.list_namespaced_pod``); iterate the result.

        Returns this watch, an async iterator of events (as the stock client).

        Raises (while iterating):
            ResourceExpired: 410 Gone; list again and watch from the list's version.
            kubernetes.aio.client.ApiException: 401, 403 and other final answers.
        """
        self._stop = False
        self._woken = None
        self.return_type = self.get_return_type(func)
        self._events = self._run(func, args, kwargs)
        return self

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Any:
        events = self._events
        if events is None:
            raise StopAsyncIteration
        try:
            return await events.__anext__()
        except BaseException:
            # As the stock client: the end of the stream (or its error) closes the watch.
            await self.close()
            raise

    async def next(self) -> Any:
        """The next event (the stock client's name for ``__anext__``)."""
        return await self.__anext__()

    async def close(self) -> None:
        """Close the open stream, if any (``async with`` does this)."""
        events, self._events = self._events, None
        if events is not None:
            if getattr(events, "ag_running", False):  # Defensive: closed mid-read by a task
                self.stop()
            else:
                await events.aclose()
        await super().close()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the loop ---------------------------------------------------------------------------

    async def _run(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        self._woken = asyncio.Event()
        watch_arg = self.get_watch_argument_name(func)
        kwargs[watch_arg] = True
        owner = getattr(func, "__self__", None)
        call = func
        raw = getattr(owner, f"{getattr(func, '__name__', '')}_without_preload_content", None)
        if inspect.ismethod(func) and raw is not None:
            call = raw  # kubernetes.aio's way to get the response unread
        else:
            kwargs["_preload_content"] = False
        if watch_arg != "watch":
            # follow=True: a log stream has no resourceVersion to resume from.
            async with contextlib.aclosing(self._log_lines(call, args, kwargs)) as log:
                async for text in log:
                    yield text
            return
        events: EventSink = (
            getattr(getattr(owner, "api_client", None), "events", None) or _NO_EVENTS
        )
        deserialize = kwargs.pop("deserialize", True)
        if "resource_version" in kwargs:
            self.resource_version = kwargs["resource_version"]
        rules, wants_bookmarks = WatchRules.for_call(
            func,
            kwargs,
            backoff=self._backoff,
            clock=self._clock,
            rng=self._rng,
            classify=classify_watch_break,
        )
        take = EventReader(
            rules,
            events,
            self.unmarshal_event,
            self.return_type,
            deserialize=deserialize,
            wants_bookmarks=wants_bookmarks,
            types=AIO_ERRORS,
        )
        decision = rules.first()
        while decision.action == "reopen" and not self._stop:
            if decision.wait > 0:
                await self._wait(decision.wait)
                if self._stop:
                    return
            rules.request(decision, kwargs)
            error: BaseException | None = None
            try:
                resp = await self._open_stream(call, args, kwargs)
            except Exception as exc:
                error = exc
            else:
                in_caller = False
                try:
                    if self._stop:
                        return  # stop() came while the request was on its way
                    rules.opened()
                    content = resp.content
                    rest = b""
                    while chunk := await content.readany():
                        lines, rest = split_lines(rest, chunk)
                        for line in lines:
                            event = take(line.decode("utf-8", "replace"))
                            self.resource_version = rules.resource_version
                            if event is None:
                                continue
                            in_caller = True
                            yield event
                            in_caller = False
                            if self._stop:
                                return
                except Exception as exc:
                    if in_caller:
                        raise
                    error = exc
                finally:
                    self._open = None
                    # After the end of the body aiohttp gave the connection back already.
                    resp.close()
            if self._stop:
                return
            decision = rules.after(error, events, AIO_ERRORS)

    async def _open_stream(
        self, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        """Send the request; the open stream's response, or the error its answer stands for."""
        resp = await call(*args, **kwargs)
        # *_without_preload_content hands back aiohttp's response; _preload_content=False
        # kubernetes.aio's RESTResponse around it.
        resp = getattr(resp, "response", resp)
        if not 200 <= resp.status <= 299:
            # kubernetes.aio hands back the error answer of an unread call.
            try:
                body = await resp.read()
            finally:
                resp.close()
            raise status_error(resp.status, resp.reason, body, resp.headers, AIO_ERRORS)
        self._open = resp
        return resp  # type: ignore[no-any-return]

    async def _log_lines(
        self, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[str, None]:
        """A ``follow=True`` log: its lines, newline kept (as ``kubernetes.aio``'s), to its end.

        Not the stock reader: on kubernetes 37 it takes a log's end for a broken watch and asks
        for the whole log again, over and over.
        """
        resp = await self._open_stream(call, args, kwargs)
        try:
            rest = b""
            while chunk := await resp.content.readany():
                lines, rest = split_lines(rest, chunk)
                for line in lines:
                    yield line.decode("utf-8", "replace") + "\n"
                    if self._stop:
                        return
            if rest:
                yield rest.decode("utf-8", "replace")
        finally:
            self._open = None
            resp.close()

    async def _wait(self, seconds: float) -> None:
        await pause(seconds, self._sleep, self._woken)


def split_lines(rest: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``rest + chunk`` and what is left of a line still arriving.

    A stream is split here, not with ``StreamReader.readline()``: that refuses a line past
    aiohttp's buffer (128 KiB), and a Kubernetes object may be larger.
    """
    lines = (rest + chunk).split(b"\n")
    return lines, lines.pop()


async def pause(
    seconds: float,
    sleep: Callable[[float], Awaitable[object]] | None,
    woken: asyncio.Event | None,
) -> None:
    """Wait ``seconds`` with ``sleep`` (tests inject one), or until ``woken`` is set (stop())."""
    if sleep is not None:
        await sleep(seconds)
        return
    assert woken is not None  # Defensive: made when the loop starts
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await woken.wait()
