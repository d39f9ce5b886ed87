"""The exceptions resilient_kube raises.

HTTP errors keep the official client's types: after the last attempt a 4xx or 5xx response is handed
back to ``kubernetes`` unchanged, so it still raises ``kubernetes.client.ApiException`` (or a subclass
such as ``NotFoundException``) with ``status``, ``reason``, ``body`` and ``headers``.

Everything else is one tree::

    ResilientKubeError
    ├── ConfigError(ResilientKubeError, ValueError)            a tuning argument is out of range
    ├── CredentialError(.command, .exit_status)               a credential source could not deliver
    ├── ResourceExpired(.., kubernetes ApiException)           410 Gone: the watched version was compacted
    └── TransportError(ResilientKubeError, urllib3 MaxRetryError)
        ├── TimeoutException(urllib3 TimeoutError, TransportError)
        │   ├── ConnectTimeout(.., urllib3 ConnectTimeoutError)  no connection (DNS too) in connect_timeout
        │   ├── ReadTimeout(.., urllib3 ReadTimeoutError)        no byte from the server in read_timeout
        │   ├── DeadlineExceeded                                  the whole call ran out of its deadline
        │   └── RateLimitTimeout(.wait)                           the limiter's wait would not fit
        ├── NameResolutionError(.., urllib3 NameResolutionError)  DNS failed for .host (NXDOMAIN, SERVFAIL)
        ├── ConnectError(.., urllib3 NewConnectionError)          refused, unreachable
        ├── ConnectionReset(.., urllib3 ProtocolError)            reset, closed or truncated mid-call
        ├── TLSError (.reason is urllib3's SSLError)               handshake or certificate failure
        ├── ResponseTooLarge                                      the body passed max_response_bytes
        └── RetryBudgetExhausted                                  retries were refused to protect the server

Every ``TransportError`` carries ``attempts`` (wire attempts made), ``last_error`` (the last underlying
exception, also ``reason`` as on urllib3's ``MaxRetryError``), ``method`` and ``url``.

Code written for the stock client keeps working because each class also derives from the urllib3
error the stock client raises in the same situation:

=====================================  ==============================================================
stock client (urllib3 retries)         resilient_kube
=====================================  ==============================================================
``MaxRetryError``                      every ``TransportError``
``ConnectTimeoutError``                ``ConnectTimeout``
``ReadTimeoutError``                   ``ReadTimeout``
``NewConnectionError``                 ``ConnectError``
``NameResolutionError``                ``NameResolutionError``
``ProtocolError``                      ``ConnectionReset``
``MaxRetryError(reason=SSLError)``     ``TLSError`` (a ``MaxRetryError`` whose ``reason`` is the ``SSLError``)
=====================================  ==============================================================
"""

from __future__ import annotations

import pickle
from typing import Any

import urllib3.exceptions as u3
from kubernetes.client.exceptions import ApiException

from ._redact import redact_exception, redact_url

__all__ = [
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionReset",
    "CredentialError",
    "DeadlineExceeded",
    "NameResolutionError",
    "RateLimitTimeout",
    "ReadTimeout",
    "ResilientKubeError",
    "ResourceExpired",
    "ResponseTooLarge",
    "RetryBudgetExhausted",
    "TLSError",
    "TimeoutException",
    "TransportError",
]


class ResilientKubeError(Exception):
    """The root of every error resilient_kube raises itself."""


class ConfigError(ResilientKubeError, ValueError):
    """A tuning argument has a bad type or value; the message names both."""


class CredentialError(ResilientKubeError):
    """A credential source could not deliver: an exec plugin failed, hung or printed nonsense.

    The message names the source and, for an exec plugin, its ``command`` (the program, never
    its arguments) and ``exit_status`` (None when it did not exit by itself). It never holds the
    credential or anything the plugin printed: a plugin's output may carry the credential.
    """

    def __init__(
        self, message: str, *, command: str | None = None, exit_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.command = command
        self.exit_status = exit_status

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_credential_error, (str(self), self.command, self.exit_status))


def _restore_credential_error(
    message: str, command: str | None, exit_status: int | None
) -> CredentialError:
    return CredentialError(message, command=command, exit_status=exit_status)


class ResourceExpired(ResilientKubeError, ApiException):  # type: ignore[misc]
    """410 Gone: the resourceVersion a watch asked for is older than the server keeps.

    A ``kubernetes.client.ApiException`` with ``status == 410``, so ``except ApiException`` blocks
    written for the stock client keep working. Watching again from the same version cannot work:
    list again (``SharedInformer`` does) and watch from the list's version.
    """

    def __init__(self, reason: str = "Gone", *, body: str | None = None) -> None:
        super().__init__(status=410, reason=reason)  # type: ignore[call-arg]
        self.body = body

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_expired, (self.reason, self.body))


def _restore_expired(reason: str, body: str | None) -> ResourceExpired:
    return ResourceExpired(reason, body=body)


class TransportError(ResilientKubeError, u3.MaxRetryError):
    """A call failed without an HTTP response worth returning.

    Args:
        message: what happened, naming the phase (DNS, connect, TLS, read).
        method: the HTTP verb of the call.
        url: the URL of the call. A password in it (``https://user:password@host``) is masked
            here, as in ``message`` and in the ``url`` that urllib3's errors keep, so no copy of
            the error (``str``, ``repr``, a pickle, a log line) holds it.
        attempts: wire attempts made before giving up.
        last_error: the last underlying exception, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        attempts: int = 0,
        last_error: BaseException | None = None,
    ) -> None:
        # Not MaxRetryError.__init__: it formats its own message from a pool we do not have.
        message = redact_url(message)
        Exception.__init__(self, message)
        self.message = message
        self.method = method
        self.url = redact_url(url)
        self.attempts = attempts
        self.last_error = last_error
        # urllib3's errors keep the URL they failed on, and may quote it; they are pickled and
        # printed with this one.
        redact_exception(last_error)
        # The attributes urllib3's parents expose, so handlers written for them keep working.
        self.reason: Exception | None = last_error if isinstance(last_error, Exception) else None

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors: pickle the message and the attributes, for every subclass.
        state = dict(self.__dict__)
        try:
            pickle.dumps(self.last_error)
        except Exception:  # a cause holding a socket or a pool: keep its text
            state["last_error"] = state["reason"] = None
            state["message"] = self.message
        return (_restore, (type(self), self.message, state))


def _restore(cls: type[TransportError], message: str, state: dict[str, Any]) -> TransportError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class TimeoutException(u3.TimeoutError, TransportError):
    """A time limit ran out: connect, read, the whole-call deadline or the limiter's wait."""


class ConnectTimeout(TimeoutException, u3.ConnectTimeoutError):
    """No connection within ``connect_timeout``: name resolution, TCP and TLS handshakes included."""


class ReadTimeout(TimeoutException, u3.ReadTimeoutError):
    """The server sent nothing for ``read_timeout`` seconds."""


class DeadlineExceeded(TimeoutException):
    """The call's whole-call ``deadline`` ran out before an attempt could succeed."""


class RateLimitTimeout(TimeoutException):
    """The client-side limiter would have made the call wait longer than its remaining deadline.

    ``wait`` is the wait in seconds the limiter would have needed.
    """

    def __init__(self, message: str, *, wait: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.wait = wait


# urllib3 types `pool` differently in its two bases; we set neither (see TransportError).
class NameResolutionError(TransportError, u3.NameResolutionError):  # type: ignore[misc]
    """The API server's host name did not resolve; ``host`` names it."""

    def __init__(self, message: str, *, host: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.host = host


class ConnectError(TransportError, u3.NewConnectionError):  # type: ignore[misc]
    """The TCP connection was refused or the address was unreachable."""


class ConnectionReset(TransportError, u3.ProtocolError):
    """The connection was reset, closed or cut short after the request was sent."""


class TLSError(TransportError):
    """The TLS handshake failed, for example because the certificate did not verify."""


class ResponseTooLarge(TransportError):
    """The response body (decoded) grew past ``max_response_bytes``; reading stopped there."""


class RetryBudgetExhausted(TransportError):
    """A retry was refused because retries already make up their allowed share of the traffic."""
