"""resilient_kube for asyncio: the same guarantees on ``kubernetes.aio``, the official asyncio client.

``ApiClient`` is a drop-in for ``kubernetes.aio.client.ApiClient`` with the same tuning keywords
and ``Settings`` as the sync ``resilient_kube.ApiClient``; ``ClientFactory`` is an async context
manager. ``Watch`` is a drop-in for ``kubernetes.aio.watch.Watch`` that resumes after every
break, and ``SharedInformer`` the sync informer's rules run by a task. All need kubernetes >= 37
(the first release with ``kubernetes.aio``). See docs/asyncio.md.
"""

from __future__ import annotations

from ._client import ApiClient, ClientFactory
from ._informer import SharedInformer
from ._watch import ResourceExpired, Watch

__all__ = ["ApiClient", "ClientFactory", "ResourceExpired", "SharedInformer", "Watch"]
