"""resilient_kube: the official Kubernetes client, made to survive the network and the API server.

Replace ``from kubernetes.client import ApiClient`` with ``from resilient_kube import ApiClient``,
or let ``ClientFactory`` load the configuration and hand out ready API objects.
"""

from __future__ import annotations

import logging

from ._backoff import BackoffPolicy
from ._client import ApiClient, ClientFactory
from ._credentials import CredentialSpec, ExecConfig
from ._default import DefaultClient, install_default, uninstall_default
from ._dns import DnsStats
from ._endpoints import EndpointStats
from ._events import EventSink
from ._informer import ObjectCache, SharedInformer
from ._leader import ElectionTiming, LeaderElector, Leadership
from ._limiter import LimiterStats
from ._settings import DEFAULT_SETTINGS, Settings
from ._stats import CredentialStats, RetryStats, Stats, TransportStats, WatchStats
from ._stream import portforward, stream
from ._warnings import ServerWarning, WarningHandler
from ._watch import Watch
from .errors import (
    ConfigError,
    ConnectError,
    ConnectionReset,
    ConnectTimeout,
    CredentialError,
    DeadlineExceeded,
    NameResolutionError,
    RateLimitTimeout,
    ReadTimeout,
    ResilientKubeError,
    ResourceExpired,
    ResponseTooLarge,
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
    "CredentialError",
    "CredentialSpec",
    "CredentialStats",
    "DeadlineExceeded",
    "DefaultClient",
    "DnsStats",
    "ElectionTiming",
    "EndpointStats",
    "EventSink",
    "ExecConfig",
    "LeaderElector",
    "Leadership",
    "LimiterStats",
    "NameResolutionError",
    "ObjectCache",
    "RateLimitTimeout",
    "ReadTimeout",
    "ResilientKubeError",
    "ResourceExpired",
    "ResponseTooLarge",
    "RetryBudgetExhausted",
    "RetryStats",
    "ServerWarning",
    "Settings",
    "SharedInformer",
    "Stats",
    "TLSError",
    "TimeoutException",
    "TransportError",
    "TransportStats",
    "WarningHandler",
    "Watch",
    "WatchStats",
    "__version__",
    "install_default",
    "portforward",
    "stream",
    "uninstall_default",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
