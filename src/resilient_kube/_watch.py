"""``Watch``: ``kubernetes.watch.Watch`` that resumes after every break and never hangs.

The decisions live in ``_watch_rules.WatchRules``; this module opens streams through the API
function the caller passes (so resilient_kube's transport makes the connection), reads lines,
hands events out and sleeps. See docs/watches.md.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.watch
from kubernetes.watch.watch import iter_resp_lines

from ._backoff import DEFAULT_BACKOFF, Backoff, BackoffPolicy
from ._events import EventSink
from ._settings import DEFAULT_SETTINGS, Settings
from ._watch_rules import EventReader, WatchRules, status_error

__all__ = ["Watch"]

_NO_EVENTS = EventSink()


class Watch(kubernetes.watch.Watch):  # type: ignore[misc]
    """A drop-in ``kubernetes.watch.Watch`` that resumes from the last resourceVersion it delivered.

    ``stream(func, *args, **kwargs)``, ``stop()``, ``resource_version`` and the event dicts
    (``type``, ``object``, ``raw_object``) are the stock client's. On top of it:

    * a reset, a truncated chunk, an idle stream (no byte for ``watch_idle_timeout``), an early
      end, or a 429/5xx or connection failure while re-opening: the stream is opened again from
      the last resourceVersion delivered (bookmarks included), after a backoff with full jitter
      (0.8 s doubling to 30 s). No event is delivered twice or skipped.
    * bookmarks are asked for unless the caller says ``allow_watch_bookmarks=False``; BOOKMARK
      events reach the caller only when it asked for them.
    * without ``timeout_seconds`` each request asks the server for 5 to 10 minutes and the
      stream runs until ``stop()``; with it, the stream ends then, as in the stock client.
    * 410 Gone raises ``ResourceExpired`` at once; 401, 403 and other 4xx are raised. A failure
      of the very first request is raised as from any call (the transport retried it already).
    * ``follow=True`` log streams are passed through as plain lines, as the stock client does.

    Restarts, their reasons and events are reported to the client's event sink (``stats()``).

    Args:
        return_type: as in the stock client.
        backoff: the reconnect policy, or a ``Backoff`` shared with an informer.
        clock: monotonic seconds; sleep: how to wait (default: a wait that ``stop()`` ends).
        rng: draws the jitter and each request's ``timeoutSeconds`` (seed it in tests).

    Example:
        >>> from kubernetes.client import CoreV1Api  # doctest: +SKIP
        >>> w = Watch()  # doctest: +SKIP
        >>> for event in w.stream(CoreV1Api(api).list_namespaced_pod, "default"):  # doctest: +SKIP
        ...     print(event["type"], event["object"].metadata.name)
    """

    def __init__(
        self,
        return_type: Any = None,
        *,
        backoff: BackoffPolicy | Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(return_type)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._backoff = Backoff.of(backoff, clock=clock, rng=self._rng)
        self._sleep = sleep
        self._woken = threading.Event()
        self._stop = False
        self._resp: Any = None
        #: Set by an owner whose stop() must also end a stream that has not started yet.
        self._abort: threading.Event | None = None

    def stop(self) -> None:
        """End the stream: the generator returns after the event in hand (thread-safe)."""
        self._stop = True
        self._woken.set()
        resp = self._resp
        if resp is not None:
            # Wake a read blocked on the socket (what kubernetes 37's stop() does, for 31-36 too).
            sock = getattr(getattr(resp, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Watch ``func`` (e.g. ``CoreV1Api.list_namespaced_pod``) and yield its events.

        Raises:
            ResourceExpired: 410 Gone; list again and watch from the list's version.
            kubernetes.client.ApiException: 401, 403 and other final answers.
        """
        self._stop = False
        self._woken.clear()
        if self._abort is not None and self._abort.is_set():
            # The owner (an informer) stopped before this generator first ran: its stop()
            # may have come before the line above cleared the flag.
            return
        watch_arg = self.get_watch_argument_name(func)
        if watch_arg != "watch":
            # follow=True: a log stream has no resourceVersion to resume from.
            yield from super().stream(func, *args, **kwargs)
            return
        api_client = getattr(getattr(func, "__self__", None), "api_client", None)
        events: EventSink = getattr(api_client, "events", None) or _NO_EVENTS
        settings = getattr(api_client, "settings", None)
        if not isinstance(settings, Settings):
            settings = DEFAULT_SETTINGS
        deserialize = kwargs.pop("deserialize", True)
        kwargs[watch_arg] = True
        kwargs["_preload_content"] = False
        idle = settings.watch_idle_timeout
        if idle is not None and "_request_timeout" not in kwargs:
            # Each read waits at most `idle` seconds for a byte: a silent stream is cut.
            kwargs["_request_timeout"] = (settings.connect_timeout, idle)
        if "resource_version" in kwargs:
            self.resource_version = kwargs["resource_version"]
        rules, wants_bookmarks = WatchRules.for_call(
            func, kwargs, backoff=self._backoff, clock=self._clock, rng=self._rng
        )
        decision = rules.first()
        take = EventReader(
            rules,
            events,
            self.unmarshal_event,
            self.get_return_type(func),
            deserialize=deserialize,
            wants_bookmarks=wants_bookmarks,
        )
        while decision.action == "reopen" and not self._stop:
            if decision.wait > 0:
                self._wait(decision.wait)
                if self._stop:
                    return
            rules.request(decision, kwargs)
            error: BaseException | None = None
            try:
                resp = func(*args, **kwargs)
            except Exception as exc:
                error = exc
            else:
                self._resp = resp
                in_caller = False
                try:
                    if self._stop:
                        # stop() came while the request was on its way: it found no socket
                        # to shut down (it sets the flag before it looks for one).
                        return
                    status = getattr(resp, "status", None)
                    if isinstance(status, int) and not 200 <= status <= 299:
                        # kubernetes 37 hands back the error response of a stream unraised.
                        raise status_error(
                            status,
                            getattr(resp, "reason", None),
                            resp.data,
                            getattr(resp, "headers", None),
                        )
                    rules.opened()
                    # One try around the whole read: a for loop is cheaper per line than
                    # next() in a try. An exception thrown in at the yield is the caller's
                    # (in_caller), never taken for a broken stream.
                    for line in iter_resp_lines(resp):
                        event = take(line)
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
                    self._resp = None
                    resp.close()
                    resp.release_conn()
            if self._stop:
                return
            decision = rules.after(error, events)

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._woken.wait(seconds)
