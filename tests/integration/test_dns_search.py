"""A cluster name only the search list resolves, through the DNS cache, against dnsmasq (#20).

dnsmasq answers for ``svc`` and ``cluster.local`` and knows only
``kubernetes.default.svc.cluster.local``: the name a pod's kubeconfig uses, ``kubernetes.default.svc``,
is NXDOMAIN as it is and resolves through the search domain ``cluster.local``, as in a pod.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from resilient_kube import ApiClient
from resilient_kube.testing import FakeApiServer
from tests.helpers.dnsmasq import DNSMASQ, Dnsmasq, dnsmasq_available

pytestmark = [
    pytest.mark.dnsmasq,
    pytest.mark.skipif(not dnsmasq_available(), reason=f"dnsmasq not installed at {DNSMASQ}"),
]

SHORT = "kubernetes.default.svc"
FULL = "kubernetes.default.svc.cluster.local"


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, ttl=60, domains=("svc", "cluster.local"))
    server.set_hosts({FULL: ["127.0.0.1"]}, wait=False)
    with server:
        yield server


def searching_client(server: FakeApiServer, dnsmasq: Dnsmasq, **tuning: object) -> ApiClient:
    configuration = server.configuration()
    configuration.host = f"http://{SHORT}:{server.port}"
    settings: dict[str, Any] = {
        "dns_nameservers": [dnsmasq.nameserver],
        "dns_search": ["cluster.local"],
        "dns_ndots": 5,
        **tuning,
    }
    return ApiClient(configuration, **settings)


def test_a_name_only_the_search_list_resolves_works(
    server: FakeApiServer, dnsmasq: Dnsmasq
) -> None:
    api_client = searching_client(server, dnsmasq)
    v1 = client.CoreV1Api(api_client)
    queries_before = dnsmasq.queries()
    for _ in range(20):
        v1.list_namespace()
        api_client.rest_client.pool_manager.clear()  # a new connection for every call
    assert api_client.stats().transport.connections_opened == 20
    # The walk once (the name as it is, then with the search domain; A and AAAA each), then
    # the winner from the cache for its TTL: no query per connection.
    assert dnsmasq.queries() - queries_before <= 4
    api_client.close()


def test_without_a_search_list_the_short_name_does_not_resolve(
    server: FakeApiServer, dnsmasq: Dnsmasq
) -> None:
    api_client = searching_client(server, dnsmasq, dns_search=[], max_attempts=1)
    with pytest.raises(Exception, match="resolution"):
        client.CoreV1Api(api_client).list_namespace()
    api_client.close()
