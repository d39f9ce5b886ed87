"""Mask the credentials a URL may carry before it is shown or stored.

``Configuration.host`` may be written ``https://user:password@api.example.com:6443``. The official
client ignores the userinfo (credentials travel in headers), but it stays part of every URL the
client builds, and so of anything that quotes one: errors, pickles, log lines, the doctor's report.
``redact_url`` is the one place that masks it; everything that shows or keeps a URL calls it. It
also takes the userinfo out of a URL that goes on the wire (``remove=True``): through an HTTP proxy
the request line carries the whole URL, and RFC 9110 §4.2.4 forbids userinfo in a target URI.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_url"]

#: What replaces a password, or a user name that stands alone (often a token).
REDACTED = "***"

#: ``scheme://userinfo@``: RFC 3986 §3.2.1 userinfo cannot hold ``/ ? #``; an ``@`` left unescaped
#: in a password is taken in up to the last one, as ``urllib.parse`` splits the authority.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def redact_url(text: str, *, remove: bool = False) -> str:
    """``text`` with the userinfo of every URL in it masked: ``user:***@``, or ``***@`` alone.

    Works on a URL and on a message that quotes one; text without ``@`` comes back as it is.
    ``remove=True`` drops the userinfo and its ``@`` instead, for a URL to send.

    Example:
        >>> redact_url("https://admin:s3cret@api.example.com:6443/api/v1/pods")
        'https://admin:***@api.example.com:6443/api/v1/pods'
        >>> redact_url("GET https://TOKEN@api.example.com/version failed")
        'GET https://***@api.example.com/version failed'
        >>> redact_url("http://admin:s3cret@api.example.com/api", remove=True)
        'http://api.example.com/api'
    """
    if "@" not in text:
        return text
    return _USERINFO.sub(r"\g<scheme>" if remove else _mask, text)


def _mask(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    if colon and user:
        return f"{match['scheme']}{user}:{REDACTED}@"
    return f"{match['scheme']}{REDACTED}@"
