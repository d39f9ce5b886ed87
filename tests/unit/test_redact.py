"""``redact_url``: the one helper that masks credentials in URLs before they are shown or kept."""

from __future__ import annotations

import pytest

from resilient_kube._redact import redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:PASS@api.example.com:6443/api", "https://user:***@api.example.com:6443/api"),
        ("https://TOKEN@api.example.com/api", "https://***@api.example.com/api"),
        ("https://:PASS@api.example.com", "https://***@api.example.com"),
        ("http://user:p@ss@127.0.0.1:80/x", "http://user:***@127.0.0.1:80/x"),
        ("http://user:p%40ss@[::1]:80", "http://user:***@[::1]:80"),
        (
            "GET https://u:PASS@h/a failed; https://v:PASS@k/b",
            "GET https://u:***@h/a failed; https://v:***@k/b",
        ),
        # No userinfo: unchanged, an @ in the path or the query included.
        ("https://api.example.com/api/v1/namespaces", "https://api.example.com/api/v1/namespaces"),
        ("https://h/apis/x@y?watch=1&who=a@b", "https://h/apis/x@y?watch=1&who=a@b"),
        ("mailto-like text a@b", "mailto-like text a@b"),
        ("", ""),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert "PASS" not in redact_url(text)
    assert "TOKEN" not in redact_url(text)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:PASS@127.0.0.1:8080/api/v1/pods", "http://127.0.0.1:8080/api/v1/pods"),
        ("https://TOKEN@[::1]/version?x=a@b", "https://[::1]/version?x=a@b"),
        ("/api/v1/namespaces/a@b", "/api/v1/namespaces/a@b"),
    ],
)
def test_remove_drops_the_userinfo_of_a_url_to_send(url: str, expected: str) -> None:
    assert redact_url(url, remove=True) == expected


def test_redact_exception_masks_args_attributes_and_the_chain() -> None:
    import pickle

    import urllib3.exceptions as u3

    from resilient_kube._redact import redact_exception

    url = "http://admin:PASS@127.0.0.1:99999/api"
    try:
        try:
            raise ValueError(f"bad port in {url}")
        except ValueError as inner:
            raise u3.LocationParseError(url) from inner
    except u3.LocationParseError as exc:
        error = exc
    redact_exception(error)
    assert "PASS" not in repr(error)
    assert "PASS" not in repr(vars(error))
    assert "PASS" not in repr(error.__cause__)
    assert b"PASS" not in pickle.dumps(error)
    redact_exception(None)  # nothing to do
