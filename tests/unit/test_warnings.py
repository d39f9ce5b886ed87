"""Parsing the API server's ``Warning`` headers (RFC 7234 §5.5), as client-go does."""

from __future__ import annotations

import pytest

from resilient_kube._warnings import parse_warnings


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('299 - "v1 Foo is deprecated"', [(299, "-", "v1 Foo is deprecated")]),
        # Several warnings, joined by commas as urllib3 joins repeated headers.
        ('299 - "a", 299 - "b"', [(299, "-", "a"), (299, "-", "b")]),
        ('299 - "a",299 - "b"', [(299, "-", "a"), (299, "-", "b")]),
        # A comma and escaped quotes inside the text.
        (r'299 - "x, \"y\" and \\z"', [(299, "-", 'x, "y" and \\z')]),
        # An optional warn-date, then the next warning.
        (
            '299 - "a" "Sat, 25 Aug 2012 23:34:45 GMT", 199 agent:1 "b"',
            [(299, "-", "a"), (199, "agent:1", "b")],
        ),
        ('  299 - "padded"  ', [(299, "-", "padded")]),
        ('299 - ""', [(299, "-", "")]),
        ('299 - "ünïcode ✓"', [(299, "-", "ünïcode ✓")]),
        ("", []),
    ],
)
def test_well_formed(header: str, expected: list[tuple[int, str, str]]) -> None:
    assert parse_warnings(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("299 - unquoted", []),
        ('29 - "short code"', []),
        ('abc - "letters"', []),
        ('299  "no agent"', []),
        ('299 - "no closing quote', []),
        ('299 -"no space"', []),
        # Parsing stops at the first bad warning and keeps the good ones before it.
        ('299 - "good", nonsense, 299 - "lost"', [(299, "-", "good")]),
        ('299 - "good" junk', [(299, "-", "good")]),
        ('299 - "good" "unterminated date', [(299, "-", "good")]),
        # A control character could forge a log line: refused, as client-go does.
        ('299 - "line\nforged"', []),
        ('299 - "bell\x07"', []),
        ('٢٩٩ - "non-ASCII digits"', []),
    ],
)
def test_malformed_stops_parsing(header: str, expected: list[tuple[int, str, str]]) -> None:
    assert parse_warnings(header) == expected
