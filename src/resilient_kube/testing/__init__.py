"""A fault-injecting Kubernetes API server for tests, and its pytest plugin.

Example:
    >>> from kubernetes.client import ApiClient, CoreV1Api  # doctest: +SKIP
    >>> with FakeApiServer() as server:  # doctest: +SKIP
    ...     server.inject(StatusFault(503, retry_after=1), verb="list")
    ...     CoreV1Api(ApiClient(server.configuration())).list_namespace()  # 503
"""

from __future__ import annotations

from ._dns import FakeDnsServer
from ._faults import (
    CloseConnection,
    Delay,
    EndWatch,
    Fault,
    Overload,
    ResetConnection,
    ResetWatch,
    SilentWatch,
    Stall,
    StatusFault,
    TruncatedBody,
)
from ._listener import FullAcceptQueueListener
from ._resources import CustomResource
from ._server import (
    DEFAULT_BOOKMARK_INTERVAL,
    DEFAULT_EVENT_WINDOW,
    DEFAULT_TOKEN,
    FakeApiServer,
    ServerStats,
)

__all__ = [
    "DEFAULT_BOOKMARK_INTERVAL",
    "DEFAULT_EVENT_WINDOW",
    "DEFAULT_TOKEN",
    "CloseConnection",
    "CustomResource",
    "Delay",
    "EndWatch",
    "FakeApiServer",
    "FakeDnsServer",
    "Fault",
    "FullAcceptQueueListener",
    "Overload",
    "ResetConnection",
    "ResetWatch",
    "ServerStats",
    "SilentWatch",
    "Stall",
    "StatusFault",
    "TruncatedBody",
]
