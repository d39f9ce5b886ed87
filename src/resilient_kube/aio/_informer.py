"""``SharedInformer`` for asyncio: the sync informer's rules, run by a task.

The arguments, the cache, the handlers, the paginated list (``_informer_rules.ListPager``), the
relist difference (``relist_changes``) and the step after a failure (``after_failure``) are the
sync ``resilient_kube.SharedInformer``'s (``_informer.InformerCore``); this module only awaits
the list calls, iterates ``resilient_kube.aio.Watch`` and waits. See docs/asyncio.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .._informer import ERROR, MODIFIED, InformerCore
from ._classify import classify_watch_break
from ._watch import Watch, pause

__all__ = ["SharedInformer"]

log = logging.getLogger(__name__)


class SharedInformer(InformerCore[Callable[[float], Awaitable[object]]]):
    """Keeps a local cache of one resource in sync and calls handlers on every change, in a task.

    The constructor, ``cache``, ``add_event_handler`` and ``remove_event_handler`` are those of
    ``resilient_kube.SharedInformer`` (kubernetes 37's informer), and so are the rules: a
    paginated list, a ``resilient_kube.aio.Watch`` from the list's version, a relist on 410 that
    delivers only the difference, a jittered backoff after every failure (401 and 403 too).
    Pass a list method of a ``kubernetes.aio`` API object, e.g.
    ``CoreV1Api(api).list_namespaced_pod``.

    The asyncio side:

    * ``start()`` runs the loop in a task of the running loop and returns that task at once;
      ``await wait_for_sync(timeout)`` waits for the first list (True) or the timeout (False);
      ``await stop()`` ends the loop (the task is cancelled, so a list in flight or an open
      stream ends at once) and returns when it has ended. ``async with informer:`` starts it
      and stops it on the way out.
    * ``await run()`` runs the loop in the calling task instead, until ``stop()`` (from another
      task) or a cancel.
    * a handler may be a function or a coroutine function (its result is awaited); handlers
      run in the informer's task, one at a time, in the order of events. One that raises is
      logged (logger ``resilient_kube.aio._informer``) and the informer goes on.

    Args:
        list_func, namespace, resync_period, label_selector, field_selector, key_func,
        page_size, backoff: as for ``resilient_kube.SharedInformer``.
        clock: monotonic seconds; sleep: an ``async`` wait (default: one ``stop()`` ends).
        rng: the jitter and each watch request's ``timeoutSeconds`` (seed it in tests).

    Example:
        >>> pods = CoreV1Api(api).list_namespaced_pod  # doctest: +SKIP
        >>> async with SharedInformer(pods, namespace="default") as informer:  # doctest: +SKIP
        ...     informer.add_event_handler(ADDED, print)
        ...     await informer.wait_for_sync(30)
    """

    def _loop_state(self) -> None:
        self._watch: Watch | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._has_synced = False
        #: Made in the loop that waits on them (an asyncio.Event belongs to one loop).
        self._synced: asyncio.Event | None = None
        self._woken: asyncio.Event | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the list-and-watch loop in a task of the running loop; return the task.

        Raises:
            RuntimeError: no running event loop.
        """
        task = self._task
        if task is None or task.done():
            loop = asyncio.get_running_loop()
            task = self._task = loop.create_task(self.run(), name="SharedInformer")
        return task

    async def stop(self) -> None:
        """End the loop: wake every wait, close the stream, and for ``start()`` cancel its task."""
        self._stopping = True
        if self._woken is not None:
            self._woken.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """List and watch in the calling task until ``stop()``; return then."""
        self._stopping = False
        self._woken = asyncio.Event()
        reason = "initial"
        while not self._stopping:
            if self._resource_version is None:
                try:
                    await self._list(reason)
                except Exception as exc:
                    if self._stopping:
                        return
                    step = self._failed(exc, listing=True, classify=classify_watch_break)
                    await self._fire(ERROR, exc)
                    reason = "retry"
                    await self._wait(step.wait)
                    continue
            await self._watch_once()
            reason = "expired"

    def has_synced(self) -> bool:
        """Whether the first list has reached the cache and the handlers."""
        return self._has_synced

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for ``has_synced()``; return it."""
        if self._has_synced:
            return True
        synced = self._synced_event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await synced.wait()
        return self._has_synced

    async def __aenter__(self) -> SharedInformer:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the loop ---------------------------------------------------------------------------

    def _synced_event(self) -> asyncio.Event:
        if self._synced is None:
            self._synced = asyncio.Event()
        return self._synced

    async def _fire(self, event_type: str, obj: Any) -> None:
        """Call (and await) every handler for ``event_type``; one that raises is logged."""
        for handler in self._handlers_for(event_type):
            try:
                result = handler(obj)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("informer handler %r failed on %s", handler, event_type)

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await pause(seconds, self._sleep, self._woken)

    async def _list(self, reason: str) -> None:
        """List every page, then bring the cache and the handlers to the result."""
        pager = self._pager(reason)
        while (kw := pager.next()) is not None:
            try:
                pager.add(await self._list_func(**kw))
            except Exception as exc:
                pager.failed(exc)
            if self._stopping:
                pager.stop()
        for event_type, obj in self._listed(pager):
            await self._fire(event_type, obj)
        self._has_synced = True
        self._synced_event().set()

    async def _watch_once(self) -> None:
        """Watch from the current version until the stream ends, fails or is stopped."""
        watch = Watch(backoff=self._backoff, clock=self._clock, sleep=self._sleep, rng=self._rng)
        self._watch = watch
        if self._stopping:  # stop() came while the list was on its way
            return
        try:
            async for event in watch.stream(self._list_func, **self._watch_kwargs()):
                if self._stopping:
                    return
                call = self._received(event, watch.resource_version)
                if call is not None:
                    await self._fire(*call)
            if self._resync_period > 0 and not self._stopping:
                for obj in self._cache.list():
                    await self._fire(MODIFIED, obj)
        except Exception as exc:
            if self._stopping:
                return
            step = self._failed(exc, listing=False, classify=classify_watch_break)
            await self._fire(ERROR, exc)
            await self._wait(step.wait)
        finally:
            self._watch = None
            await watch.close()
