"""The endpoint set's rules: ejection, re-admission, spreading and retries elsewhere (no I/O)."""

from __future__ import annotations

import pytest

from resilient_kube import ConfigError, Settings
from resilient_kube._endpoints import Endpoint, EndpointSet, HealthChecker

URLS = ["https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.3:6443"]


def test_calls_spread_round_robin_over_healthy_endpoints() -> None:
    endpoints = EndpointSet(URLS)
    picked = [endpoints.pick().url for _ in range(6)]
    assert picked == URLS + URLS


def test_a_retry_never_goes_back_to_the_endpoint_that_failed() -> None:
    endpoints = EndpointSet(URLS)
    for _ in range(10):
        first = endpoints.pick()
        assert endpoints.pick(avoid=first) is not first


def test_consecutive_failures_eject_and_passing_checks_readmit() -> None:
    ejected: list[Endpoint] = []
    endpoints = EndpointSet(URLS, eject_after=2, readmit_after=2, on_eject=ejected.append)
    dead = endpoints.endpoints[1]
    endpoints.failed(dead)
    assert dead.state == "healthy"
    endpoints.succeeded(dead)  # an answer in between resets the count
    endpoints.failed(dead)
    assert dead.state == "healthy"
    endpoints.checked(dead, ready=False)  # checks and calls count together
    assert dead.state == "ejected"
    assert ejected == [dead]
    assert dead not in {endpoints.pick() for _ in range(6)}
    endpoints.checked(dead, ready=True)
    assert dead.state == "probation"
    endpoints.checked(dead, ready=True)
    assert dead.state == "healthy"
    assert dead.stats().ejections == 1


def test_a_failure_on_probation_ejects_again_at_once() -> None:
    endpoints = EndpointSet(URLS, eject_after=3)
    endpoint = endpoints.endpoints[0]
    for _ in range(3):
        endpoints.failed(endpoint)
    endpoints.checked(endpoint, ready=True)
    assert endpoint.state == "probation"
    endpoints.failed(endpoint)
    assert endpoint.state == "ejected"
    assert endpoint.stats().ejections == 2


def test_with_none_healthy_probation_is_tried_first_then_anything() -> None:
    endpoints = EndpointSet(URLS[:2], eject_after=1)
    first, second = endpoints.endpoints
    endpoints.failed(first)
    endpoints.failed(second)
    assert {first.state, second.state} == {"ejected"}
    assert endpoints.pick(avoid=first) is second  # not the one that just failed
    endpoints.checked(first, ready=True)
    assert endpoints.pick(avoid=None) is first  # probation before ejected


def test_a_dead_endpoint_is_ejected_within_two_rounds_of_checks() -> None:
    # With the defaults (checks every 2 s with a 1 s timeout, two failures) a round at most 2 s
    # after the death fails, and the next one ejects: within 2 + 2 + 1 = 5 s.
    endpoints = EndpointSet(URLS, eject_after=Settings().eject_after)
    alive = {URLS[0], URLS[2]}
    checker = HealthChecker(
        endpoints, lambda endpoint, timeout: endpoint.url in alive, interval=2.0, timeout=1.0
    )
    checker.check_once()
    assert endpoints.endpoints[1].state == "healthy"
    checker.check_once()
    assert [endpoint.state for endpoint in endpoints.endpoints] == ["healthy", "ejected", "healthy"]
    alive.add(URLS[1])
    checker.check_once()
    checker.check_once()
    assert endpoints.endpoints[1].state == "healthy"


def test_a_probe_that_raises_is_a_failed_check() -> None:
    endpoints = EndpointSet(URLS[:1], eject_after=1)

    def probe(endpoint: Endpoint, timeout: float) -> bool:
        raise OSError("refused")

    HealthChecker(endpoints, probe, interval=1.0, timeout=1.0).check_once()
    assert endpoints.endpoints[0].state == "ejected"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("https://a:1", "must be a non-empty list"),
        ([], "must be a non-empty list"),
        (["ftp://a"], "scheme must be http or https"),
        (["https://u:secret@a"], "credentials do not belong"),
        (["https://a/api"], "without a path"),
        (["https://a", "http://b"], "mixes http and https"),
    ],
)
def test_bad_endpoints_are_named(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_kwargs(endpoints=value)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert "secret" not in str(caught.value)
