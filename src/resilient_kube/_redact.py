"""Mask the credentials a URL may carry before it is shown or stored.

``Configuration.host`` may be written ``https://user:password@api.example.com:6443``. The official
client ignores the userinfo (credentials travel in headers), but it stays part of every URL the
client builds, and so of anything that quotes one: errors, pickles, log lines, the doctor's report.
``redact_url`` is the one place that masks it; everything that shows or keeps a URL calls it. It
also takes the userinfo out of a URL that goes on the wire (``remove=True``): through an HTTP proxy
the request line carries the whole URL, and RFC 9110 §4.2.4 forbids userinfo in a target URI.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "RedactUrls", "redact_exception", "redact_url"]

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


def redact_exception(error: BaseException | None) -> None:
    """Mask URLs in ``error`` and its causes in place: their ``args`` and string attributes.

    urllib3's errors keep the URL they failed on (``url``, ``location``) and often quote it in
    their message (``LocationParseError: Failed to parse: URL``); ``str``, ``repr``, a pickle
    and a printed traceback read those. The chain is followed through ``__cause__`` and
    ``__context__``, each exception once.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(isinstance(arg, str) and "@" in arg for arg in error.args):
            error.args = tuple(redact_url(a) if isinstance(a, str) else a for a in error.args)
        for name, value in list(getattr(error, "__dict__", {}).items()):
            if isinstance(value, str) and "@" in value:
                setattr(error, name, redact_url(value))
        error = error.__cause__ or error.__context__


class RedactUrls(logging.Filter):
    """A log filter that masks the credentials of any URL in a record's message.

    Attached to the loggers whose lines quote urllib3's errors (which may quote a URL), so that a
    log line never holds a password, whatever error it describes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "@" in message:
            redacted = redact_url(message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


#: The transport's final and retry lines describe the error of the attempt (``_describe``).
logging.getLogger("resilient_kube._transport").addFilter(RedactUrls())
