"""The rules of an informer, with no I/O: what a relist delivers, and what follows a failure.

``SharedInformer`` (``_informer``) lists, watches and calls handlers; these functions decide:

* ``relist_changes``: after a list (the first, or again after 410 Gone), which handler calls
  bring the cache from what it held to what the server has now. Only the difference: an object
  whose resourceVersion did not change gets no call; one that is gone gets DELETED; one whose
  ``uid`` changed (deleted and created again under the same name while we were away) gets
  DELETED for the old object, then ADDED for the new one.
* ``after_failure``: list again (410), or wait a backoff and try again (anything else: a 401 or
  403 waits like any other failure, so it cannot turn into a hot loop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._backoff import Backoff
from ._watch_rules import classify_break
from .errors import ResourceExpired

log = logging.getLogger("resilient_kube._informer")

__all__ = ["ListPager", "Step", "after_failure", "meta_of", "relist_changes"]

#: A list whose ``continue`` token expires starts over; after this many, it waits a backoff.
_LIST_RESTARTS = 3


def meta_of(obj: Any) -> tuple[str | None, str | None]:
    """``(uid, resourceVersion)`` of a model object or a plain dict (custom objects)."""
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        return meta.get("uid"), meta.get("resourceVersion")
    meta = getattr(obj, "metadata", None)
    if meta is None:
        return None, None
    if isinstance(meta, dict):
        return meta.get("uid"), meta.get("resourceVersion")
    return getattr(meta, "uid", None), getattr(meta, "resource_version", None)


def relist_changes(
    cached: Mapping[str, Any], listed: Iterable[Any], key_func: Callable[[Any], str]
) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """The new cache contents and the handler calls that lead there, deletions first.

    Returns ``(by_key, calls)``; ``calls`` is a list of ``(event_type, object)``.
    """
    by_key = {key_func(obj): obj for obj in listed}
    deleted: list[tuple[str, Any]] = []
    changed: list[tuple[str, Any]] = []
    for key, old in cached.items():
        new = by_key.get(key)
        if new is None:
            deleted.append(("DELETED", old))
            continue
        old_uid, old_version = meta_of(old)
        new_uid, new_version = meta_of(new)
        if old_uid != new_uid:
            deleted.append(("DELETED", old))
            changed.append(("ADDED", new))
        elif old_version != new_version or old_version is None:
            changed.append(("MODIFIED", new))
    changed.extend(("ADDED", obj) for key, obj in by_key.items() if key not in cached)
    return by_key, deleted + changed


@dataclass(frozen=True, slots=True)
class Step:
    """What the informer does next: ``relist`` or ``rewatch`` (from its version), after ``wait``."""

    action: Literal["relist", "rewatch"]
    wait: float
    reason: str


def after_failure(
    error: BaseException,
    backoff: Backoff,
    *,
    listing: bool,
    classify: Callable[[BaseException], str | None] = classify_break,
) -> Step:
    """The step after ``error`` from a list (``listing``) or a watch.

    ``classify`` names the failure (``classify_break``; the asyncio informer adds aiohttp's).

    A watch's 410 Gone lists again at once (client-go does the same); every other failure, a
    list's included, waits a backoff that counts the transport's wire attempts, then repeats
    what failed (a list, or a watch from the same version).
    """
    expired = isinstance(error, ResourceExpired) or getattr(error, "status", None) == 410
    if expired and not listing:
        return Step("relist", 0.0, "expired")
    attempts = getattr(error, "attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        attempts = 1
    status = getattr(error, "status", None)
    # The watch's fixed set of reasons; a 401 or 403 is status_401 or status_403.
    reason = classify(error) or (f"status_{status}" if isinstance(status, int) else "error")
    return Step("relist" if listing else "rewatch", backoff.failure(attempts), reason)


def _list_meta(response: Any) -> tuple[list[Any], str | None, str | None]:
    """Items, resourceVersion and continue token of a list answer (a model or a dict)."""
    if isinstance(response, dict):
        meta = response.get("metadata") or {}
        items = response.get("items") or []
        return list(items), meta.get("resourceVersion"), meta.get("continue")
    meta = getattr(response, "metadata", None)
    items = getattr(response, "items", None) or []
    if meta is None:
        return list(items), None, None
    return list(items), getattr(meta, "resource_version", None), getattr(meta, "_continue", None)


class ListPager:
    """The requests of one paginated list and what their answers add up to, with no I/O.

    The first list of an informer may come from the API server's watch cache
    (``resourceVersion=0``, as client-go does); a list after 410 reads from etcd, which has
    what was compacted. A ``continue`` token that expires mid-list starts the list over (a few
    times; then the 410 is raised, and the informer backs off).

    Use::

        while (kwargs := pager.next()) is not None:
            try:
                pager.add(list_func(**kwargs))
            except Exception as exc:
                pager.failed(exc)  # raises unless the list starts over
        items, version = pager.items, pager.version
    """

    __slots__ = ("_base", "_first", "_more", "_restarts", "_token", "items", "version")

    def __init__(self, base: dict[str, Any], *, page_size: int, first: bool) -> None:
        self._base = {**base, "limit": page_size}
        self._first = first
        self._restarts = 0
        self._token: str | None = None
        self.items: list[Any] = []
        self.version: str | None = None
        self._start()

    def _start(self) -> None:
        self._token = None
        self.items = []
        self.version = None
        self._more = True

    def next(self) -> dict[str, Any] | None:
        """The keyword arguments of the next page's request, or None: the list is complete."""
        if not self._more:
            return None
        kw = dict(self._base)
        if self._token:
            kw["_continue"] = self._token
        elif self._first:
            kw["resource_version"] = "0"
        return kw

    def add(self, response: Any) -> None:
        """A page arrived."""
        page, self.version, self._token = _list_meta(response)
        self.items.extend(page)
        self._more = bool(self._token)

    def stop(self) -> None:
        """End the list early (the informer is stopping)."""
        self._more = False

    def failed(self, error: BaseException) -> None:
        """A page failed: start over when its ``continue`` token expired, else raise ``error``."""
        if (
            self._token
            and getattr(error, "status", None) == 410
            and self._restarts < _LIST_RESTARTS
        ):
            self._restarts += 1
            log.info("informer list: continue token expired; listing again")
            self._start()
            return
        raise error
