"""Credentials that a 401 can refresh: what the driver asks for before it replays a call.

The official client puts ``Configuration.api_key["authorization"]`` on every call, after running
``Configuration.refresh_api_key_hook`` (the kubeconfig and in-cluster loaders install one that
refreshes expired tokens by their own rules). A 401 means the server no longer takes what was
sent: the driver hands the rejected header to ``Credentials.refresh`` and replays the call once
with what comes back.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from ._events import EventSink

__all__ = ["ConfigurationCredentials", "Credentials"]


class Credentials(Protocol):
    """A source of the ``Authorization`` header that can be asked for a fresh one."""

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None:
        """The server answered 401 to ``rejected``: return a fresh ``Authorization`` value.

        One fetch is shared by every thread that hit the 401 at the same time: a caller whose
        ``rejected`` is already replaced gets the new value without a fetch. None means nothing
        newer can be had, and the 401 goes back to the caller. ``deadline_at`` (monotonic) bounds
        the fetch.
        """
        ...


class ConfigurationCredentials:
    """The credentials of a ``kubernetes.client.Configuration``, refreshed by its own hook.

    Args:
        configuration: the client's configuration.
        events: where a refresh is reported (``credential_refresh``).
    """

    def __init__(self, configuration: Any, events: EventSink) -> None:
        self._configuration = configuration
        self._events = events
        self._lock = threading.Lock()

    def current(self) -> str | None:
        """The ``Authorization`` value the official client would send now."""
        # auth_settings() runs the refresh hook and knows where this release keeps the token
        # (kubernetes 37: "BearerToken" with the alias "authorization"; 31: "authorization").
        value = self._configuration.auth_settings().get("BearerToken", {}).get("value")
        return value if isinstance(value, str) else None

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None:
        with self._lock:
            started = time.monotonic()
            # The hook runs inside: an expired token from a loader is fetched anew here.
            fresh = self.current()
            self._events.credential_refresh(
                "configuration", time.monotonic() - started, fresh is not None
            )
        return fresh if fresh != rejected else None
