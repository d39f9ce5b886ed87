"""Response headers parsed without the email package: the same ``HTTPMessage`` as http.client's.

``parse_headers`` splits plain ``Name: value`` lines itself and hands any other block to the email
parser; on any block it must give what ``http.client.parse_headers`` gives, or raise what it
raises. The property tests draw blocks of plain lines and of every kind of line the email parser
treats otherwise.
"""

from __future__ import annotations

import contextlib
import email.parser
import http.client
import io
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_kube import _headers
from resilient_kube._headers import HTTPResponse, parse_headers

#: Name characters: printable ASCII but the colon (and a few the email parser treats apart).
NAME = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"), min_size=1
)
PLAIN_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"))
ENDING = st.sampled_from(["\r\n", "\n"])
PLAIN_LINE = st.builds(
    lambda name, blanks, value, end: f"{name}:{blanks}{value}{end}",
    NAME,
    st.sampled_from(["", " ", "  ", "\t", " \t "]),
    PLAIN_VALUE,
    ENDING,
)
#: Lines the email parser does not read as one plain header: folded, past ASCII, line breaks
#: ``str.splitlines`` knows, no colon, an empty name, a "From " line.
ODD_LINE = st.one_of(
    st.builds(lambda value, end: f" {value}{end}", PLAIN_VALUE, ENDING),
    st.builds(lambda value, end: f"\t{value}{end}", PLAIN_VALUE, ENDING),
    st.builds(
        lambda name, value, end: f"{name}: {value}{end}",
        NAME,
        st.text(st.characters(min_codepoint=0x00, max_codepoint=0xFF, exclude_characters="\n")),
        ENDING,
    ),
    st.builds(lambda value, end: f"{value}{end}", PLAIN_VALUE, ENDING),
    st.builds(lambda value, end: f":{value}{end}", PLAIN_VALUE, ENDING),
    st.builds(lambda value, end: f"From {value}{end}", PLAIN_VALUE, ENDING),
)
BLOCK_END = st.sampled_from(["\r\n", "\n", ""])


def stdlib(block: bytes) -> object:
    return outcome(lambda: http.client.parse_headers(io.BytesIO(block)))


def ours(block: bytes) -> object:
    return outcome(lambda: parse_headers(io.BytesIO(block)))


def outcome(parse: object) -> object:
    """What a parse gave: every attribute of the message, or the error's type and text."""
    try:
        message = parse()  # type: ignore[operator]
    except http.client.HTTPException as exc:
        return (type(exc), str(exc))
    assert type(message) is http.client.HTTPMessage
    state = vars(message).copy()
    state["defects"] = [(type(defect), str(defect)) for defect in state["defects"]]
    return state


@contextlib.contextmanager
def no_email_parser() -> Iterator[None]:
    """The email parser raises: the block must have been split without it."""
    real = email.parser.Parser

    def refuse(*args: object, **kwargs: object) -> email.parser.Parser:
        raise AssertionError("the email parser was used")

    email.parser.Parser = refuse  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        email.parser.Parser = real  # type: ignore[misc]


@given(st.lists(PLAIN_LINE, max_size=20), BLOCK_END)
def test_plain_headers_give_http_clients_message_without_the_email_parser(
    lines: list[str], end: str
) -> None:
    block = "".join([*lines, end]).encode("ascii")
    expected = stdlib(block)
    with no_email_parser():
        assert ours(block) == expected


@given(st.lists(st.one_of(PLAIN_LINE, ODD_LINE), max_size=20), BLOCK_END)
def test_any_header_block_gives_http_clients_message(lines: list[str], end: str) -> None:
    block = "".join([*lines, end]).encode("latin-1")
    assert ours(block) == stdlib(block)


def test_a_folded_header_is_the_email_parsers() -> None:
    block = b'Warning: 299 - "one"\r\n  continued\r\nWarning: 299 - "two"\r\n\r\n'
    assert ours(block) == stdlib(block)
    message = parse_headers(io.BytesIO(block))
    assert message.get_all("warning") == ['299 - "one"\r\n  continued', '299 - "two"']


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"A: " + b"x" * 65536 + b"\r\n\r\n", "got more than 65536 bytes when reading header line"),
        (b"A: b\r\n" * 100 + b"\r\n", "got more than 100 headers"),
    ],
    ids=["line too long", "too many headers"],
)
def test_limits_raise_http_clients_errors(block: bytes, error: str) -> None:
    assert ours(block) == stdlib(block)
    assert ours(block)[1] == error  # type: ignore[index]


def test_99_headers_are_allowed_as_http_client_allows_them() -> None:
    block = b"A: b\r\n" * 99 + b"\r\n"
    assert ours(block) == stdlib(block)
    assert len(parse_headers(io.BytesIO(block)).get_all("a") or []) == 99


def test_the_response_begins_with_pythons_own_code_and_this_parser() -> None:
    begin = HTTPResponse.begin
    assert begin is not http.client.HTTPResponse.begin
    assert begin.__code__ is http.client.HTTPResponse.begin.__code__
    assert begin.__globals__["parse_headers"] is _headers.parse_headers


class _Socket:
    """What http.client's response reads from: ``makefile`` over fixed bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nA: b\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    ],
    ids=["plain", "100 continue", "1.0 keep-alive", "chunked", "204 close"],
)
def test_the_response_frames_the_body_as_http_clients(head: bytes) -> None:
    body = head if head.endswith(b"0\r\n\r\n") else head + b"{}"
    theirs = http.client.HTTPResponse(_Socket(body), method="GET")  # type: ignore[arg-type]
    mine = HTTPResponse(_Socket(body), method="GET")  # type: ignore[arg-type]
    theirs.begin()
    mine.begin()
    for attribute in ("status", "reason", "version", "chunked", "length", "will_close"):
        assert getattr(mine, attribute) == getattr(theirs, attribute), attribute
    assert mine.getheaders() == theirs.getheaders()
    assert mine.read() == theirs.read()
