"""resilient_kube: the official Kubernetes client, made to survive the network and the API server.

Replace ``from kubernetes.client import ApiClient`` with ``from resilient_kube import ApiClient``,
or let ``ClientFactory`` load the configuration and hand out ready API objects.
"""

from __future__ import annotations

import logging

from ._backoff import BackoffPolicy
from ._client import ApiClient, ClientFactory
from ._dns import DnsStats
from ._events import EventSink
from ._informer import ObjectCache, SharedInformer
from ._limiter import LimiterStats
from ._settings import DEFAULT_SETTINGS, Settings
from ._stats import RetryStats, Stats, TransportStats, WatchStats
from ._watch import Watch
from .errors import (
    ConfigError,
    ConnectError,
    ConnectionReset,
    ConnectTimeout,
    DeadlineExceeded,
    NameResolutionError,
    RateLimitTimeout,
    ReadTimeout,
    ResilientKubeError,
    ResourceExpired,
    RetryBudgetExhausted,
    TimeoutException,
    TLSError,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SETTINGS",
    "ApiClient",
    "BackoffPolicy",
    "ClientFactory",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionReset",
    "DeadlineExceeded",
    "DnsStats",
    "EventSink",
    "LimiterStats",
    "NameResolutionError",
    "ObjectCache",
    "RateLimitTimeout",
    "ReadTimeout",
    "ResilientKubeError",
    "ResourceExpired",
    "RetryBudgetExhausted",
    "RetryStats",
    "Settings",
    "SharedInformer",
    "Stats",
    "TLSError",
    "TimeoutException",
    "TransportError",
    "TransportStats",
    "Watch",
    "WatchStats",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
