"""``ApiClient`` for ``kubernetes_asyncio``, the older separate asyncio client, on the same seam.

``kubernetes_asyncio``'s REST layer, like ``kubernetes.aio``'s, builds each request and hands it
to ``pool_manager.request(...)``, an ``aiohttp.ClientSession``: the same driver takes that place.
Tested with kubernetes_asyncio 36 (tests/aio/test_kubernetes_asyncio.py); see docs/asyncio.md.

Example:
    >>> from kubernetes_asyncio.client import CoreV1Api  # doctest: +SKIP
    >>> from resilient_kube.aio.kubernetes_asyncio import ApiClient  # doctest: +SKIP
    >>> async with ApiClient(configuration, read_timeout=10) as api:  # doctest: +SKIP
    ...     await CoreV1Api(api).list_namespace()
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Unpack

import aiohttp
import kubernetes_asyncio.client

from .._driver import host_label
from .._events import EventSink
from .._settings import Settings, Tuning
from .._stats import Stats
from ._core import Parts, env_proxy
from ._pool import make_connector

__all__ = ["ApiClient"]

#: The stock session's read buffer: watch events of large objects exceed aiohttp's default.
_READ_BUFSIZE = 2**21


class ApiClient(kubernetes_asyncio.client.ApiClient):  # type: ignore[misc]
    """``kubernetes_asyncio.client.ApiClient`` with the guarantees of ``resilient_kube.aio``.

    The same arguments as the official one plus keyword-only tuning (the fields of
    ``Settings``). Build it inside a running loop, as the official one (its session is made
    when it is built).

    Args:
        configuration: a ``kubernetes_asyncio.client.Configuration``; None: the default one.
        header_name, header_value, cookie, pool_threads: as in the official client.
        settings: a ``Settings`` object to start from (keyword arguments override it).
        clock: monotonic time; tests inject a fake.
        **tuning: any ``Settings`` field.

    Raises:
        ConfigError: an unknown tuning keyword or a bad value; the message names both.
    """

    _rk: Parts

    def __init__(
        self,
        configuration: Any = None,
        header_name: str | None = None,
        header_value: str | None = None,
        cookie: str | None = None,
        pool_threads: int = 1,
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.monotonic,
        **tuning: Unpack[Tuning],
    ) -> None:
        # Validate first: a typo must fail before anything is built.
        self.settings = Settings.from_kwargs(settings, **tuning)
        super().__init__(configuration, header_name, header_value, cookie, pool_threads)
        settings = self.settings
        self._rk = parts = Parts(settings, host_label(self.configuration.host), clock)
        #: Where every layer reports what it did (``subscribe`` adds to it).
        self.events = parts.events
        rest = self.rest_client
        # kubernetes_asyncio has no retry layer of its own; aiohttp's re-send of idempotent
        # methods on a broken connection is switched off in the driver's sessions. Its stock
        # session (made eagerly, with no connection yet) is closed with the client.
        self._stock_session: aiohttp.ClientSession = rest.pool_manager
        ssl = rest.pool_manager.connector._ssl  # the stock TLS context (aiohttp keeps it there)
        make_session = functools.partial(
            _session,
            functools.partial(
                make_connector,
                settings,
                parts.dns,
                ssl=ssl,
                limit_per_host=None,
                events=parts.events,
            ),
        )
        proxy = env_proxy(self.configuration.host) if rest.proxy is None else None
        self.transport = parts.transport(make_session, proxy)
        rest.pool_manager = self.transport

    def stats(self) -> Stats:
        """A snapshot of this client's counters: transport, retries, limiter and DNS."""
        return self._rk.stats()

    def subscribe(self, sink: EventSink) -> None:
        """Send this client's events (attempts, retries, waits, ...) to ``sink``."""
        self._rk.subscribe(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        """Stop sending events to ``sink``."""
        self._rk.unsubscribe(sink)

    async def close(self) -> None:
        """Close both sessions, every pooled connection and the DNS cache's background work."""
        try:
            await super().close()
        finally:  # one failed or cancelled close leaves none of the others undone
            try:
                await self._stock_session.close()
            finally:
                self._rk.close()


def _session(make_connector: Callable[[], aiohttp.TCPConnector]) -> aiohttp.ClientSession:
    """The stock REST layer's session, with resilient_kube's pool and without ``trust_env``
    (the environment's proxy is looked up once: ``_core.env_proxy``)."""
    return aiohttp.ClientSession(
        connector=make_connector(), trust_env=False, read_bufsize=_READ_BUFSIZE
    )
