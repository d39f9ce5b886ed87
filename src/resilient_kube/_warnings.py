"""The API server's ``Warning`` headers: parsed, then handed to a handler (client-go's idea).

The API server warns with ``Warning: 299 - "text"`` (RFC 7234 §5.5) when a call uses a deprecated
API or CRD version, or when an object passes validation with a warning. The official Python
client drops them; client-go hands them to a ``WarningHandler`` whose default logs them. Here the
client's ``WarningSink`` parses the header (several warnings, comma-joined, quoted strings with
backslash escapes, an optional date) and calls the handler once per warning; the default
handler, ``LogOnce``, logs each distinct text once at WARNING on ``resilient_kube.warnings``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, NamedTuple

from ._events import EventSink

__all__ = ["LogOnce", "ServerWarning", "WarningHandler", "WarningSink", "parse_warnings"]

log = logging.getLogger("resilient_kube.warnings")

#: Distinct texts ``LogOnce`` remembers; past this it forgets the oldest (a server that invents
#: a new text per call must not grow the client's memory without bound).
REMEMBERED_TEXTS: Final = 1024


class ServerWarning(NamedTuple):
    """One warning from an API server's ``Warning`` header."""

    #: The warn-code: 299 ("miscellaneous persistent warning") for every Kubernetes warning.
    code: int
    #: The warn-agent: ``-`` from the API server.
    agent: str
    #: The warning itself, unquoted and unescaped.
    text: str
    #: ``host:port`` of the API server that sent it.
    host: str


#: What handles a warning (``ApiClient.on_server_warning``); called on the calling thread, so it
#: must be quick.
WarningHandler = Callable[[ServerWarning], None]


def _quoted(value: str, start: int) -> tuple[str, int] | None:
    """The quoted-string at ``value[start]`` unescaped, and the index after its closing quote."""
    if start >= len(value) or value[start] != '"':
        return None
    text: list[str] = []
    index = start + 1
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            text.append(value[index + 1])  # quoted-pair: the next character as it is
            index += 2
            continue
        if char == '"':
            return "".join(text), index + 1
        text.append(char)
        index += 1
    return None  # no closing quote


def parse_warnings(value: str) -> list[tuple[int, str, str]]:
    """Every ``(code, agent, text)`` in a ``Warning`` header value, in order.

    ``warning-value = warn-code SP warn-agent SP warn-text [SP warn-date]``, several joined by
    commas (RFC 7234 §5.5). As in client-go's ``ParseWarningHeaders``, parsing stops at the first
    malformed warning, and a text with control characters is malformed (it could forge log
    lines).

    Example:
        >>> parse_warnings('299 - "a \\\\"b\\\\"", 299 - "c"')
        [(299, '-', 'a "b"'), (299, '-', 'c')]
    """
    found: list[tuple[int, str, str]] = []
    index, end = 0, len(value)
    while True:
        while index < end and value[index] in " \t":
            index += 1
        if index >= end:
            return found
        code_text = value[index : index + 3]
        if not (len(code_text) == 3 and code_text.isascii() and code_text.isdigit()):
            return found
        if value[index + 3 : index + 4] != " ":
            return found
        agent_end = value.find(" ", index + 4)
        if agent_end <= index + 4:
            return found
        agent = value[index + 4 : agent_end]
        quoted = _quoted(value, agent_end + 1)
        if quoted is None:
            return found
        text, index = quoted
        if not text.isprintable() or not agent.isprintable():
            return found
        found.append((int(code_text), agent, text))
        while index < end and value[index] in " \t":
            index += 1
        if index < end and value[index] == '"':  # the warn-date: skipped
            date = _quoted(value, index)
            if date is None:
                return found
            index = date[1]
            while index < end and value[index] in " \t":
                index += 1
        if index >= end:
            return found
        if value[index] != ",":
            return found
        index += 1


class LogOnce:
    """The default handler: logs each distinct Kubernetes warning text once, at WARNING.

    Only code 299 with a text is logged, as client-go's ``WarningLogger`` does. One per client:
    a text seen by one client is logged again by another.
    """

    def __init__(self, limit: int = REMEMBERED_TEXTS) -> None:
        self._seen: dict[str, None] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, warning: ServerWarning) -> None:
        if warning.code != 299 or not warning.text:
            return
        with self._lock:
            if warning.text in self._seen:
                return
            self._seen[warning.text] = None
            if len(self._seen) > self._limit:
                del self._seen[next(iter(self._seen))]  # the oldest: dicts keep insertion order
        log.warning("API server %s warns: %s", warning.host, warning.text)


class WarningSink(EventSink):
    """Hands every warning of a client's answers to ``handler``, one call per warning."""

    def __init__(self, handler: WarningHandler) -> None:
        self.handler = handler

    def server_warning(self, host: str, value: str) -> None:
        handler = self.handler
        for code, agent, text in parse_warnings(value):
            handler(ServerWarning(code, agent, text, host))
