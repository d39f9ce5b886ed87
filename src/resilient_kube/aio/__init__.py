"""resilient_kube for asyncio: the same guarantees on ``kubernetes.aio``, the official asyncio client.

``ApiClient`` is a drop-in for ``kubernetes.aio.client.ApiClient`` with the same tuning keywords
and ``Settings`` as the sync ``resilient_kube.ApiClient``; ``ClientFactory`` is an async context
manager. Both need kubernetes >= 37 (the first release with ``kubernetes.aio``). See
docs/asyncio.md.
"""

from __future__ import annotations

from ._client import ApiClient, ClientFactory

__all__ = ["ApiClient", "ClientFactory"]
