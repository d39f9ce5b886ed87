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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._backoff import Backoff
from ._watch_rules import classify_break
from .errors import ResourceExpired

__all__ = ["Step", "after_failure", "meta_of", "relist_changes"]


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
