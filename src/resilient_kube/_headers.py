"""Response headers, parsed without the email package.

``http.client`` hands every response's header block to ``email.parser``, a general MIME parser:
about 40 µs of CPU for the seven headers an API server sends, more than all of resilient_kube's
rules cost a call. Almost every header block is ``Name: value`` lines of printable ASCII, and for
those the email parser's result is plain: one ``(name, value)`` per line, the value without its
leading blanks and line break. ``parse_headers`` builds that same ``HTTPMessage`` directly, and
hands anything else (a folded line, a byte past ASCII, a line that is no header) to the email
parser as ``http.client`` would. ``tests/unit/test_headers.py`` checks the two agree on any
header block.

``HTTPResponse`` is ``http.client.HTTPResponse`` with this parser: its ``begin`` (status line,
``100 Continue``, framing) is the running Python's own code, with only ``parse_headers`` bound to
the function here. resilient_kube's connections build their responses with it.
"""

from __future__ import annotations

import email.parser
import http.client
import re
import types
from typing import Any, BinaryIO

__all__ = ["HTTPResponse", "parse_headers"]

#: http.client's limits (its private ``_MAXLINE`` and ``_MAXHEADERS``), with its errors.
_MAX_LINE = 65536
_MAX_HEADERS = 100
_END = (b"\r\n", b"\n", b"")
#: A header line the email parser reads as just ``(name, value)``: a name of printable ASCII but
#: the colon (its ``headerRE``), then printable ASCII and tabs. Nothing it would split the line at
#: (``str.splitlines`` also breaks at ``\x85``, ``\x0b``, ``\x1c``...), no folded continuation.
_PLAIN = re.compile(rb"([!-9;-~]+):[\t ]*([\t -~]*)\r?\n")


def parse_headers(fp: BinaryIO) -> http.client.HTTPMessage:
    """Read a header block from ``fp`` up to its blank line, as ``http.client.parse_headers`` does."""
    lines = []
    while True:  # http.client's _read_headers, with its limits and errors
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if line in _END:
            break
    message = http.client.HTTPMessage()
    for line in lines[:-1]:
        match = _PLAIN.fullmatch(line)
        if match is None:
            # The email parser's defects, folding and line breaks, exactly as http.client has them.
            parser = email.parser.Parser(_class=http.client.HTTPMessage)
            return parser.parsestr(b"".join(lines).decode("iso-8859-1"))
        name, value = match.groups()
        message.set_raw(name.decode("ascii"), value.decode("ascii"))
    message.set_payload("")  # as the email parser leaves a block with no body
    return message


def _begin_with(parse: Any) -> Any:
    """``http.client.HTTPResponse.begin``, calling ``parse`` for its ``parse_headers``."""
    begin = http.client.HTTPResponse.begin
    if "parse_headers" not in begin.__code__.co_names:  # Defensive: a Python that reads otherwise
        return begin
    namespace = {**vars(http.client), "parse_headers": parse}
    return types.FunctionType(
        begin.__code__, namespace, begin.__name__, begin.__defaults__, begin.__closure__
    )


class HTTPResponse(http.client.HTTPResponse):
    """``http.client.HTTPResponse``, its headers parsed by ``parse_headers``."""

    begin = _begin_with(parse_headers)
