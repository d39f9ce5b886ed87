"""A check that a test left nothing unclosed: sockets, transports, sessions, connectors.

CPython (and aiohttp) warn with a ResourceWarning from ``__del__`` when such an object is
collected unclosed. Under ``filterwarnings = error`` that warning is an unraisable exception in
whichever later test the collector happens to run, which is how an asyncio leak shows up as a
flaky failure somewhere else. ``no_unclosed_resources`` collects right after the test instead, so
the leak is reported by the test that made it.
"""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
import warnings
from collections.abc import Iterator

import pytest

__all__ = ["no_unclosed_resources"]


def _describe(warning: warnings.WarningMessage) -> str:
    text = str(warning.message)
    source = warning.source
    if source is not None and tracemalloc.is_tracing():
        allocated = tracemalloc.get_object_traceback(source)
        if allocated is not None:
            text += "\n  allocated at:\n    " + "\n    ".join(allocated.format())
    return text


@contextlib.contextmanager
def no_unclosed_resources() -> Iterator[None]:
    """Fail when a garbage collection at the end of the block finds an unclosed resource.

    Meant for an autouse fixture (``with no_unclosed_resources(): yield``). Run with
    ``PYTHONTRACEMALLOC=20`` to see where each leaked object was made.
    """
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    leaked = [_describe(w) for w in caught if issubclass(w.category, ResourceWarning)]
    if leaked:
        pytest.fail("left unclosed:\n" + "\n".join(leaked), pytrace=False)
