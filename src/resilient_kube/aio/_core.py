"""What every resilient asyncio client is made of, whichever official client it plugs into.

``kubernetes.aio`` (``aio._client``) and the older ``kubernetes_asyncio``
(``aio.kubernetes_asyncio``) have the same seam, ``rest_client.pool_manager``: both put an
``AsyncTransport`` there, built from the parts below, and share ``stats()`` and ``subscribe()``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from .._dns import DnsCache
from .._events import EventSink, Fanout
from .._limiter import TokenBucket
from .._policy import Policy
from .._retry import RetryBudget
from .._settings import Settings
from .._stats import Counters, Stats
from ._transport import AsyncTransport

__all__ = ["Parts", "env_proxy"]


class Parts:
    """One client's counters, event sink, limiter, DNS cache and rules, and its driver.

    Args:
        settings: the client's settings.
        host: ``host:port`` of the API server, the label of the limiter's events.
        clock: monotonic time; tests inject a fake.
    """

    def __init__(
        self, settings: Settings, host: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.counters = Counters(clock=clock)
        #: Where every layer reports what it did: the counters behind ``stats()``, and whatever
        #: ``subscribe`` adds.
        self.events = Fanout([self.counters])
        self.limiter = (
            None
            if settings.qps is None
            else TokenBucket(
                settings.qps, settings.burst, clock=clock, events=self.events, host=host
            )
        )
        self.dns = (
            DnsCache(
                nameservers=settings.dns_nameservers,
                min_ttl=settings.dns_min_ttl,
                max_ttl=settings.dns_max_ttl,
                negative_ttl=settings.dns_negative_ttl,
                stale_ttl=settings.dns_stale_ttl,
                timeout=settings.dns_timeout,
                clock=clock,
            )
            if settings.dns_cache
            else None
        )
        budget = RetryBudget(
            settings.retry_budget_ratio,
            settings.retry_budget_min_per_second,
            settings.retry_budget_window,
            calls=functools.partial(self.counters.value, "requests"),
            clock=clock,
        )
        self.policy = Policy(settings, budget, clock=clock)

    def transport(
        self,
        make_session: Callable[[], aiohttp.ClientSession],
        proxy: tuple[str, aiohttp.BasicAuth | None] | None,
    ) -> AsyncTransport:
        """The driver that stands in for the REST layer's session."""
        return AsyncTransport(
            make_session,
            self.policy,
            self.events,
            self.counters.ticker("requests"),
            limiter=self.limiter,
            proxy=proxy,
        )

    def stats(self) -> Stats:
        """A snapshot of the counters: transport, retries, limiter and DNS."""
        return Stats(
            transport=self.counters.transport_stats(),
            retry=self.counters.retry_stats(),
            limiter=None if self.limiter is None else self.limiter.stats(),
            dns=None if self.dns is None else self.dns.stats(),
            watch=self.counters.watch_stats(),
            credentials=self.counters.credential_stats(),
        )

    def subscribe(self, sink: EventSink) -> None:
        self.events.add(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        self.events.remove(sink)

    def close(self) -> None:
        """Stop the DNS cache's background work (the session is the REST layer's to close)."""
        if self.dns is not None:
            self.dns.close()


def env_proxy(host: str) -> tuple[str, aiohttp.BasicAuth | None] | None:
    """The proxy (and its credentials) that ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` name
    for ``host``, as aiohttp's ``trust_env`` would find it per request; None for no proxy.

    aiohttp with ``trust_env=True`` (the stock sessions') reads ``~/.netrc`` and the proxy
    variables in a worker thread on every request, which costs more CPU than the rest of a
    call: the resilient clients look the proxy up once, when they are built.
    """
    try:
        proxy, auth = get_env_proxy_for_url(URL(host))
    except (LookupError, ValueError):
        return None
    return str(proxy), auth
