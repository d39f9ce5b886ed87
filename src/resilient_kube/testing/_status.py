"""``Status`` bodies, the shape every Kubernetes API error takes on the wire."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

__all__ = ["ApiStatusError", "reason_for", "status_body"]

#: Reasons the real API server uses (k8s.io/apimachinery/pkg/apis/meta/v1 StatusReason).
_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(code: int) -> str:
    """Return the ``Status.reason`` the real server sends with ``code``."""
    if code in _REASONS:
        return _REASONS[code]
    try:
        return HTTPStatus(code).phrase.replace(" ", "")
    except ValueError:
        return "Unknown"


def status_body(
    code: int,
    message: str,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a failure ``Status`` object as a JSON-ready dict."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or reason_for(code),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiStatusError(Exception):
    """Raised inside the fake server to answer with a failure ``Status``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason=reason, details=details)
