"""Make background parts usable again in a child made by ``os.fork()``.

A forked child has one thread: the one that called ``fork``. Everything else the parent's threads
were doing is gone, but their state is copied as it was: a lock another thread held stays locked
forever, a thread pool's workers do not exist (work handed to it never runs), and pooled sockets
are shared with the parent, so the two processes would interleave bytes on one connection.
gunicorn with ``preload_app``, celery's prefork pool and ``multiprocessing`` with the ``fork``
start method all fork a process that may already have used a client.

Each object with such state registers a reset here (``register(obj, reset)``); in the child,
``reset(obj)`` runs right after the fork, before the child's own code. The registry holds ``obj``
through a weak reference, so registering never keeps anything alive, and one object is
registered once.

The registry takes no lock: a lock could itself be held by a parent thread at fork time. Adding
and removing entries are single dict operations, which the GIL makes atomic, and the child runs
the resets while it still has one thread.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["register"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: id(obj) -> (weak reference to obj, its reset).
_entries: dict[int, tuple[weakref.ref[Any], Callable[[Any], object]]] = {}


def register(obj: _T, reset: Callable[[_T], object]) -> None:
    """Call ``reset(obj)`` in every child forked while ``obj`` lives; once per object.

    ``reset`` runs in the child only, first thing after the fork, with the child's one thread. It
    must not take a lock the parent's threads use, nor send anything on a socket the parent
    shares, and it must not hold ``obj`` (pass an unbound method or a module function).

    Raises:
        TypeError: ``obj`` cannot be weakly referenced (a class with ``__slots__`` and no
            ``__weakref__``); register its owner instead.
    """
    key = id(obj)
    if key in _entries:
        return  # alive and registered: its id cannot be reused while it lives
    ref = weakref.ref(obj, functools.partial(_forget, key))
    _entries.setdefault(key, (ref, reset))


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    """``obj`` was collected: drop its entry (unless a new object already has the id's)."""
    entry = _entries.get(key)
    if entry is not None and entry[0] is ref:
        _entries.pop(key, None)


def _after_fork_in_child() -> None:
    for ref, reset in list(_entries.values()):
        obj = ref()
        if obj is None:
            continue
        try:
            reset(obj)
        except Exception:
            # One broken reset must not leave the others undone, nor kill the child.
            log.exception("resilient_kube: resetting %r after fork failed", obj)


os.register_at_fork(after_in_child=_after_fork_in_child)
