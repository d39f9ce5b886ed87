"""The transport's direct route to the pool: what urllib3's PoolManager would have sent, cheaper."""

from __future__ import annotations

import pytest
import urllib3
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client
from urllib3.util.url import parse_url

from resilient_kube import ApiClient
from resilient_kube._transport import Transport

#: Characters a request URI may hold, and some it must not hold unencoded.
URI_CHARS = "abcXYZ019-._~!$&'()*+,;=:@/?%#[] \"<>^`{|}\\é"


def transport(host: str = "https://127.0.0.1:6443") -> Transport:
    api_client = ApiClient(client.Configuration(host=host))
    pool_manager = api_client.rest_client.pool_manager
    assert isinstance(pool_manager, Transport)
    return pool_manager


@given(path=st.text(alphabet=URI_CHARS, max_size=40))
def test_the_route_sends_what_parse_url_would(path: str) -> None:
    route = transport()
    url = "https://127.0.0.1:6443/" + path
    expected = parse_url(url)
    for _ in range(2):  # the first finds the pool, the second may take the remembered route
        pool, uri = route._route(url)
        assert uri == expected.request_uri
        assert (pool.scheme, pool.host, pool.port) == ("https", "127.0.0.1", 6443)


@pytest.mark.parametrize(
    ("first", "second", "host", "port"),
    [
        ("https://127.0.0.1:6443/api", "https://127.0.0.1:6444/api", "127.0.0.1", 6444),
        ("https://127.0.0.1:6443/api", "http://127.0.0.1:6443/api", "127.0.0.1", 6443),
        ("https://[::1]:6443/api", "https://[::1]:6443/apis", "::1", 6443),
        ("https://127.0.0.1:6443/api", "https://user@127.0.0.1:6443/api", "127.0.0.1", 6443),
    ],
)
def test_another_host_gets_its_own_pool(first: str, second: str, host: str, port: int) -> None:
    route = transport(first.rsplit("/", 1)[0])
    route._route(first)
    pool, uri = route._route(second)
    assert (pool.scheme, pool.host.strip("[]"), pool.port) == (
        parse_url(second).scheme,
        host,
        port,
    )
    assert uri == parse_url(second).request_uri


def test_clear_forgets_the_pool() -> None:
    route = transport()
    pool, _ = route._route("https://127.0.0.1:6443/api")
    assert route._route("https://127.0.0.1:6443/apis")[0] is pool
    route.clear()
    assert route._route("https://127.0.0.1:6443/api")[0] is not pool


def test_a_proxy_manager_gets_the_whole_url() -> None:
    configuration = client.Configuration(host="http://127.0.0.1:6443")
    configuration.proxy = "http://127.0.0.1:3128"
    route = ApiClient(configuration).rest_client.pool_manager
    assert isinstance(route, Transport)
    assert isinstance(route.manager, urllib3.ProxyManager)
    manager, url = route._route("http://127.0.0.1:6443/api")
    assert manager is route.manager
    assert url == "http://127.0.0.1:6443/api"
