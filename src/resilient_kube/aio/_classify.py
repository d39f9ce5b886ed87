"""Classify aiohttp and asyncio errors into the policy's ``Failure`` reasons.

The asyncio driver's only rule of its own: what an aiohttp exception says about the phase of
the attempt (could the request have reached the server?). Everything after that (may it be
repeated, how long to wait, which typed error ends the call) is ``_policy``'s, shared with the
sync driver, whose urllib3 errors ``_policy.classify_error`` reads the same way.
"""

from __future__ import annotations

import errno
import ssl

import aiohttp
import kubernetes.aio.client.exceptions

from .. import errors
from .._policy import BodyTooLarge, Failure
from .._watch_rules import classify_break, status_reason

__all__ = ["DEADLINE_REACHED", "classify_aiohttp_error", "classify_watch_break"]

#: What a deadline that expired in the middle of an attempt counts as: a read timeout, which
#: ``final_error`` turns into ``DeadlineExceeded`` once the deadline has passed.
DEADLINE_REACHED = Failure("read_timeout", sent=True)

_RESETS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def classify_aiohttp_error(error: BaseException) -> Failure:
    """Classify an exception raised by aiohttp (or asyncio) during one attempt.

    The most specific class wins: aiohttp derives ``ClientConnectorDNSError`` and the TLS errors
    from ``ClientConnectorError``, that from ``ClientOSError``, and its timeouts from
    ``TimeoutError`` as well as from ``ClientConnectionError``.
    """
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return Failure("dns", sent=False)
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        # A certificate that does not verify will not verify on the next try either.
        return Failure("tls", sent=False, retryable=False)
    if isinstance(error, (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError)):
        permanent = isinstance(error, ssl.SSLCertVerificationError) or (
            "CERTIFICATE_VERIFY" in str(error)
        )
        return Failure("tls", sent=False, retryable=not permanent)
    if isinstance(error, aiohttp.ClientProxyConnectionError):
        return Failure("proxy", sent=False)
    if isinstance(error, aiohttp.ClientConnectorError):
        return Failure("connect_error", sent=False)
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        # sock_connect (or the wait for a pooled connection): nothing was sent.
        return Failure("connect_timeout", sent=False)
    if isinstance(error, (aiohttp.SocketTimeoutError, TimeoutError)):
        # sock_read: silence from the server after the request went out.
        return Failure("read_timeout", sent=True)
    if isinstance(error, BodyTooLarge):
        return Failure("too_large", sent=True, retryable=False)
    if isinstance(error, aiohttp.ClientPayloadError):
        # The answer started and stopped short: "Response payload is not completed".
        return Failure("truncated", sent=True)
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return Failure("disconnected", sent=True)
    if isinstance(error, aiohttp.ClientResponseError):
        # aiohttp's parser refused what came back (a garbage status line, bad headers): bytes
        # came back, but not HTTP.
        return Failure("bad_response", sent=True)
    if isinstance(error, (aiohttp.ClientOSError, aiohttp.ClientConnectionResetError, OSError)):
        code = getattr(error, "errno", None)
        if (
            isinstance(error, (ConnectionResetError, aiohttp.ClientConnectionResetError))
            or code in _RESETS
            or "reset" in str(error).lower()
        ):
            return Failure("reset", sent=True)
        return Failure("disconnected", sent=True)
    if isinstance(error, aiohttp.ClientConnectionError):
        return Failure("disconnected", sent=True)
    # Defensive: anything else (a bug, a decoding error) is not a network condition.
    return Failure(type(error).__name__, sent=True, retryable=False)


#: A failure of the asyncio driver as a watch's restart reason (``_watch_rules``' fixed set).
_WATCH_REASONS = {
    "dns": "connect",
    "connect_error": "connect",
    "connect_timeout": "connect",
    "proxy": "connect",
    "tls": "connect",
    "read_timeout": "idle",
    "truncated": "truncated",
    "reset": "reset",
    "disconnected": "reset",
    "bad_response": "reset",
}


def classify_watch_break(error: BaseException) -> str | None:
    """``_watch_rules.classify_break`` for the asyncio watch: the reason, or None to raise.

    What breaks while a stream is read comes from aiohttp as it is (the driver has handed the
    stream over); ``kubernetes.aio`` has its own ``ApiException``. Everything else (the
    driver's ``TransportError`` on a re-open, ``ResourceExpired``) is the sync rule's.
    """
    if isinstance(error, kubernetes.aio.client.exceptions.ApiException):
        return None if isinstance(error, errors.ResourceExpired) else status_reason(error.status)
    if isinstance(error, (aiohttp.ClientError, OSError)) and not isinstance(
        error, errors.TransportError
    ):
        if isinstance(error, aiohttp.ClientPayloadError) and "ConnectionResetError" in str(error):
            return "reset"  # aiohttp names the reset that cut the body only in its message
        failure = classify_aiohttp_error(error)
        return _WATCH_REASONS.get(failure.reason) if failure.retryable else None
    return classify_break(error)
