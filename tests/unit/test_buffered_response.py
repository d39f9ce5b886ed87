"""The buffered response: urllib3's response whose class the transport swaps after reading the body.

The swap is cheaper than a second response, but only right while ``_BufferedResponse`` covers
every way urllib3's response gives out its body. The first test fails when a new urllib3 adds a
reading method, so the swap is looked at again then.
"""

from __future__ import annotations

import io
import json

import pytest
import urllib3

from resilient_kube._transport import _BufferedResponse

BODY = b'{"kind": "Status"}\nline two\nthree'

#: urllib3's public ways to get at a body, and how _BufferedResponse serves each: its own
#: override, or urllib3's code on top of an override (``data`` reads the cache; ``json`` and
#: ``readinto`` call ``data`` and ``read``; ``__iter__`` calls ``stream``).
READERS = {
    "read": "override",
    "read1": "override",
    "stream": "override",
    "read_chunked": "override",
    "readinto": "via read",
    "__iter__": "via stream",
    "data": "cache",
    "json": "via data",
}


def buffered(body: bytes = BODY) -> urllib3.HTTPResponse:
    response = urllib3.HTTPResponse(body=io.BytesIO(body), preload_content=False, status=200)
    data = response.read(cache_content=True)
    response.__class__ = _BufferedResponse  # as Transport._finish does
    response._rk_replay = io.BytesIO(data)  # type: ignore[attr-defined]
    return response


def test_every_public_reader_of_urllib3s_response_is_covered() -> None:
    readers = {
        name
        for klass in urllib3.HTTPResponse.__mro__
        if klass.__module__.startswith("urllib3")
        for name in vars(klass)
        if (name.startswith(("read", "stream")) or name in ("__iter__", "data", "json"))
        and name != "readable"  # says True, reads nothing
    }
    assert readers == set(READERS)
    overridden = {name for name, how in READERS.items() if how == "override"}
    assert overridden <= set(vars(_BufferedResponse))


@pytest.mark.parametrize("reader", sorted(READERS))
def test_each_reader_replays_the_whole_body(reader: str) -> None:
    response = buffered()
    if reader == "read":
        got = response.read()
    elif reader == "read1":
        got = b"".join(iter(lambda: response.read1(5), b""))
    elif reader == "stream":
        got = b"".join(response.stream(4))
    elif reader == "read_chunked":
        got = b"".join(response.read_chunked(4))
    elif reader == "readinto":
        buffer = bytearray(len(BODY))
        assert response.readinto(buffer) == len(BODY)
        got = bytes(buffer)
    elif reader == "__iter__":
        got = b"".join(response)
    elif reader == "data":
        got = response.data
    else:
        with pytest.raises(json.JSONDecodeError):  # the body is not one JSON document
            response.json()
        got = BODY
    assert got == BODY


def test_small_reads_and_close() -> None:
    response = buffered()
    assert response.read(5) == BODY[:5]
    assert response.read() == BODY[5:]
    assert not response.closed
    response.close()
    assert response.closed
    assert response.read() == b""
