"""The DNS cache (``_dns.DnsCache``) behind aiohttp's resolver interface.

aiohttp asks its connector's resolver for the addresses of a host each time it opens a
connection. ``CachedResolver`` answers from the same cache the sync client uses (TTLs, negative
caching, serve-stale, Happy Eyeballs order), so a reconnect storm is not a DNS storm on asyncio
either. aiohttp's own DNS cache is turned off in the connector: one cache, one set of rules.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from .._dns import DnsCache

__all__ = ["CachedResolver"]


class CachedResolver(AbstractResolver):
    """An aiohttp resolver that looks names up in ``cache``.

    A lookup that misses the cache queries DNS with dnspython, which blocks: it runs in the
    default executor so the event loop never waits on the network.

    Args:
        cache: the client's ``DnsCache`` (owned by the client, which closes it).
    """

    def __init__(self, cache: DnsCache) -> None:
        self._cache = cache

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host`` in the order to try them, of ``family`` (any for AF_UNSPEC).

        Raises:
            OSError: the ``socket.gaierror`` of a failed lookup (aiohttp turns it into
                ``ClientConnectorDNSError``).
        """
        addresses = await asyncio.to_thread(self._cache.resolve, host)
        results: list[ResolveResult] = []
        for address in addresses:
            kind = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, kind):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": kind,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, f"no address of family {family!r} for {host}")
        return results

    async def close(self) -> None:
        """Nothing to release: the client closes the cache it owns."""
