"""``SharedInformer``: kubernetes 37's informer, for kubernetes 31-37, that never spins.

Same constructor, methods, ``cache`` and event constants as ``kubernetes.informer.SharedInformer``
(code moves over by changing the import). It lists (paginated), watches from the list's
resourceVersion with ``resilient_kube.Watch``, lists again on 410 delivering only the difference,
and waits a backoff after every failure. The decisions are in ``_informer_rules``.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._backoff import DEFAULT_BACKOFF, Backoff, BackoffPolicy
from ._events import EventSink
from ._informer_rules import ListPager, Step, after_failure, relist_changes
from ._watch import Watch
from ._watch_rules import classify_break
from .errors import ConfigError

__all__ = [
    "ADDED",
    "BOOKMARK",
    "DELETED",
    "ERROR",
    "MODIFIED",
    "ObjectCache",
    "SharedInformer",
]

log = logging.getLogger(__name__)

# Event types handed to registered handlers (kubernetes.informer's names and values).
ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"

#: Objects per list page: client-go's reflector pages by 500.
DEFAULT_PAGE_SIZE = 500
_NO_EVENTS = EventSink()


def meta_namespace_key(obj: Any) -> str:
    """``namespace/name`` (``name`` for cluster-scoped objects), for models and dicts alike."""
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    else:
        meta = getattr(obj, "metadata", None)
        if meta is None:
            return ""
        if isinstance(meta, dict):
            namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        else:
            namespace = getattr(meta, "namespace", None) or ""
            name = getattr(meta, "name", None) or ""
    return f"{namespace}/{name}" if namespace else name


class ObjectCache:
    """A thread-safe map of objects by key: ``kubernetes.informer.ObjectCache``'s interface."""

    def __init__(self, key_func: Callable[[Any], str] | None = None) -> None:
        self._key_func = key_func if key_func is not None else meta_namespace_key
        self._objects: dict[str, Any] = {}
        self._rlock = threading.RLock()

    # --- mutation (the informer's) ----------------------------------------------------------
    def _put(self, obj: Any) -> None:
        key = self._key_func(obj)
        with self._rlock:
            self._objects[key] = obj

    def _remove(self, obj: Any) -> None:
        key = self._key_func(obj)
        with self._rlock:
            self._objects.pop(key, None)

    def _replace_all(self, objects: Any) -> None:
        rebuilt = objects if isinstance(objects, dict) else {self._key_func(o): o for o in objects}
        with self._rlock:
            self._objects = rebuilt

    def _snapshot(self) -> dict[str, Any]:
        with self._rlock:
            return dict(self._objects)

    # --- reading ----------------------------------------------------------------------------
    def list(self) -> builtins.list[Any]:
        """A snapshot list of every cached object."""
        with self._rlock:
            return list(self._objects.values())

    def list_keys(self) -> builtins.list[str]:
        """A snapshot list of every key."""
        with self._rlock:
            return list(self._objects.keys())

    def get(self, obj: Any) -> Any:
        """The cached copy of ``obj``, or None."""
        return self.get_by_key(self._key_func(obj))

    def get_by_key(self, key: str) -> Any:
        """The object under ``key``, or None."""
        with self._rlock:
            return self._objects.get(key)


#: How an informer waits: ``time.sleep``-like for the thread, ``asyncio.sleep``-like for the task.
SleepT = TypeVar("SleepT")


class InformerCore(Generic[SleepT]):
    """What the sync and the asyncio ``SharedInformer`` share, with no I/O.

    The arguments and their checks, the cache, the handlers, and what a list or a watch event
    does to the cache and which handlers it calls. The subclasses run the loop: a thread
    (``SharedInformer``) or a task (``resilient_kube.aio.SharedInformer``); each makes its
    loop's state in ``_loop_state()``.
    """

    def __init__(  # noqa: PLR0917  kubernetes.informer.SharedInformer's positional arguments
        self,
        list_func: Callable[..., Any],
        namespace: str | None = None,
        resync_period: float = 0,
        label_selector: str | None = None,
        field_selector: str | None = None,
        key_func: Callable[[Any], str] | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        backoff: BackoffPolicy = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: SleepT | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not callable(list_func):
            raise ConfigError(f"list_func={list_func!r} must be a bound list method")
        if isinstance(resync_period, bool) or not isinstance(resync_period, (int, float)):
            raise ConfigError(f"resync_period={resync_period!r} must be a number of seconds")
        if resync_period < 0:
            raise ConfigError(f"resync_period={resync_period!r} must be >= 0 (0: no resync)")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ConfigError(f"page_size={page_size!r} must be an int >= 1")
        if not isinstance(backoff, BackoffPolicy):
            raise ConfigError(f"backoff={backoff!r} must be a BackoffPolicy")
        self._list_func = list_func
        self._namespace = namespace
        self._resync_period = resync_period
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._page_size = page_size
        self._cache = ObjectCache(key_func=key_func)
        self._handlers: dict[str, list[Callable[[Any], Any]]] = {
            ADDED: [], MODIFIED: [], DELETED: [], BOOKMARK: [], ERROR: [],
        }  # fmt: skip
        self._handler_lock = threading.Lock()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._backoff = Backoff(backoff, clock=clock, rng=self._rng)
        api_client = getattr(getattr(list_func, "__self__", None), "api_client", None)
        self._events: EventSink = getattr(api_client, "events", None) or _NO_EVENTS
        #: The newest resourceVersion seen; None forces a list.
        self._resource_version: str | None = None
        self._listed_once = False
        self._sleep = sleep
        self._loop_state()

    def _loop_state(self) -> None:
        """Make the state of the loop that runs the informer (a thread's, a task's)."""
        raise NotImplementedError  # Defensive: every subclass has one

    # --- public API (kubernetes.informer.SharedInformer's) ----------------------------------

    @property
    def cache(self) -> ObjectCache:
        """The ``ObjectCache`` this informer keeps in sync."""
        return self._cache

    def add_event_handler(self, event_type: str, handler: Callable[[Any], Any]) -> None:
        """Call ``handler(obj)`` on every ``event_type`` (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).

        Raises:
            ValueError: an unknown ``event_type`` (as the stock informer).
        """
        if event_type not in self._handlers:
            raise ValueError(
                f"Unknown event_type {event_type!r}. Use one of: {', '.join(sorted(self._handlers))}"
            )
        with self._handler_lock:
            self._handlers[event_type].append(handler)

    def remove_event_handler(self, event_type: str, handler: Callable[[Any], Any]) -> None:
        """Deregister ``handler``; a handler that is not registered is ignored."""
        with self._handler_lock, contextlib.suppress(KeyError, ValueError):
            self._handlers[event_type].remove(handler)

    # --- what the loops share ---------------------------------------------------------------

    def _build_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self._namespace is not None:
            kw["namespace"] = self._namespace
        if self._label_selector is not None:
            kw["label_selector"] = self._label_selector
        if self._field_selector is not None:
            kw["field_selector"] = self._field_selector
        return kw

    def _handlers_for(self, event_type: str) -> list[Callable[[Any], Any]]:
        with self._handler_lock:
            return list(self._handlers.get(event_type, ()))

    def _pager(self, reason: str) -> ListPager:
        """The pages of a list (reported as a relist for ``reason``)."""
        self._events.informer_relist(reason)
        return ListPager(
            self._build_kwargs(), page_size=self._page_size, first=not self._listed_once
        )

    def _listed(self, pager: ListPager) -> list[tuple[str, Any]]:
        """Bring the cache to a complete list; return the handler calls that lead there."""
        by_key, calls = relist_changes(self._cache._snapshot(), pager.items, self._cache._key_func)
        self._cache._replace_all(by_key)
        self._resource_version = pager.version or "0"
        self._listed_once = True
        return calls

    def _watch_kwargs(self) -> dict[str, Any]:
        kw = self._build_kwargs()
        kw["resource_version"] = self._resource_version
        kw["allow_watch_bookmarks"] = True
        if self._resync_period > 0:
            kw["timeout_seconds"] = max(1, int(self._resync_period))
        return kw

    def _received(self, event: dict[str, Any], version: str | None) -> tuple[str, Any] | None:
        """Apply a watch event to the cache; return the handler call it makes, if any."""
        self._resource_version = version or self._resource_version
        kind = event.get("type")
        obj = event.get("object")
        if kind in (ADDED, MODIFIED):
            self._cache._put(obj)
            return kind, obj
        if kind == DELETED:
            self._cache._remove(obj)
            return DELETED, obj
        if kind == BOOKMARK:
            return BOOKMARK, event.get("raw_object", obj)
        return None  # Defensive: the watch raises ERROR events

    def _failed(
        self,
        exc: BaseException,
        *,
        listing: bool,
        classify: Callable[[BaseException], str | None] = classify_break,
    ) -> Step:
        """The step after a failed list or watch; the log line and the restart count."""
        step = after_failure(exc, self._backoff, listing=listing, classify=classify)
        if listing:
            log.warning("informer list failed (%s); again in %.2f s", exc, step.wait)
        elif step.action == "relist":
            log.info("informer watch expired (410 Gone); listing again")
            self._resource_version = None
        else:
            log.warning("informer watch failed (%s); again in %.2f s", exc, step.wait)
            # The watch could not start (it restarts itself once it has): count it too.
            self._events.watch_restart(step.reason, step.wait)
        return step


class SharedInformer(InformerCore[Callable[[float], None]]):
    """Keeps a local cache of one resource in sync and calls handlers on every change.

    A drop-in for kubernetes 37's ``kubernetes.informer.SharedInformer`` that also runs on
    kubernetes 31-36. Unlike it, this one:

    * lists in pages (``limit``/``continue``; the first list from the API server's watch
      cache, ``resourceVersion=0``), then watches from the list's version with
      ``resilient_kube.Watch``, which resumes after every break and asks for bookmarks;
    * on 410 Gone lists again and delivers only the difference (DELETED for objects gone or
      replaced under the same name, ADDED, MODIFIED for changed resourceVersions);
    * waits a backoff (0.8 s doubling to 30 s, full jitter, counting the transport's retries)
      after every failed list or watch, 401 and 403 included: no hot loop;
    * offers ``has_synced()`` and ``wait_for_sync(timeout)``;
    * on ``resync_period`` replays the cache to MODIFIED handlers (client-go's resync) instead
      of listing again.

    Args:
        list_func: a bound list method, e.g. ``CoreV1Api(api).list_namespaced_pod``.
        namespace, label_selector, field_selector: passed to ``list_func``.
        resync_period: seconds between cache replays; 0 turns them off.
        key_func: the cache key of an object (default ``namespace/name``).
        page_size: objects per list page.
        backoff: the reconnect policy.
        clock, sleep, rng: time, how to wait (default: a wait ``stop()`` ends) and jitter.

    Example:
        >>> pods = CoreV1Api(api).list_namespaced_pod  # doctest: +SKIP
        >>> informer = SharedInformer(pods, namespace="default")  # doctest: +SKIP
        >>> informer.add_event_handler(ADDED, print)  # doctest: +SKIP
        >>> informer.start(); informer.wait_for_sync(30)  # doctest: +SKIP
    """

    def _loop_state(self) -> None:
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._synced = threading.Event()

    def start(self) -> None:
        """Start the list-and-watch loop in a daemon thread (again after ``stop()``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run_loop, name="SharedInformer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop (it wakes from any wait and any open stream) and join its thread."""
        self._stop_event.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        if self._thread is not None:
            self._thread.join()
        self._thread = None

    def has_synced(self) -> bool:
        """Whether the first list has reached the cache and the handlers."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for ``has_synced()``; return it."""
        return self._synced.wait(timeout)

    # --- the loop ---------------------------------------------------------------------------

    def _fire(self, event_type: str, obj: Any) -> None:
        """Call every handler for ``event_type``; one that raises is logged and skipped."""
        for handler in self._handlers_for(event_type):
            try:
                handler(obj)
            except Exception:
                log.exception("informer handler %r failed on %s", handler, event_type)

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._stop_event.wait(seconds)

    def _list(self, reason: str) -> None:
        """List every page, then bring the cache and the handlers to the result."""
        pager = self._pager(reason)
        while (kw := pager.next()) is not None:
            try:
                pager.add(self._list_func(**kw))
            except Exception as exc:
                pager.failed(exc)
            if self._stop_event.is_set():
                pager.stop()
        for event_type, obj in self._listed(pager):
            self._fire(event_type, obj)
        self._synced.set()

    def _run_loop(self) -> None:
        reason = "initial"
        while not self._stop_event.is_set():
            if self._resource_version is None:
                try:
                    self._list(reason)
                except Exception as exc:
                    if self._stop_event.is_set():
                        return
                    step = self._failed(exc, listing=True)
                    self._fire(ERROR, exc)
                    reason = "retry"
                    self._wait(step.wait)
                    continue
            self._watch_once()
            reason = "expired"

    def _watch_once(self) -> None:
        """Watch from the current version until the stream ends, fails or is stopped."""
        watch = Watch(backoff=self._backoff, clock=self._clock, sleep=self._sleep, rng=self._rng)
        watch._abort = self._stop_event
        self._watch = watch
        if self._stop_event.is_set():  # stop() came before the watch existed
            return
        try:
            for event in watch.stream(self._list_func, **self._watch_kwargs()):
                if self._stop_event.is_set():
                    return
                call = self._received(event, watch.resource_version)
                if call is not None:
                    self._fire(*call)
            if self._resync_period > 0 and not self._stop_event.is_set():
                for obj in self._cache.list():
                    self._fire(MODIFIED, obj)
        except Exception as exc:
            if self._stop_event.is_set():
                return
            step = self._failed(exc, listing=False)
            self._fire(ERROR, exc)
            self._wait(step.wait)
        finally:
            self._watch = None
