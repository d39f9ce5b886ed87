"""The DNS cache's logic, driven by a fake clock against the in-process DNS stub on 127.0.0.1.

The stub is a real UDP server on loopback; time in the cache is the fake clock, so TTL expiry,
negative caching and serve-stale are exact and instant. Waits for background work are bounded
waits on a condition (queries seen by the stub, an answer changing), never sleeps.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient_kube import ConfigError, Settings
from resilient_kube._dns import (
    FAILURE_MEMORY,
    HOSTS_CHECK_INTERVAL,
    STALE_RECHECK_INTERVAL,
    DnsCache,
    DnsStats,
    interleave,
)
from resilient_kube.testing import FakeDnsServer
from tests.helpers.clock import FakeClock

HOST = "api.kube.test"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` runs out (bounded; for background work)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        pause.wait(0.005)
    return True


@pytest.fixture
def stub() -> Iterator[FakeDnsServer]:
    with FakeDnsServer({HOST: ["127.0.0.1"]}, ttl=60) as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n", encoding="utf-8")
    return path


@pytest.fixture
def make_cache(
    stub: FakeDnsServer, clock: FakeClock, hosts_file: Path
) -> Iterator[Callable[..., DnsCache]]:
    caches: list[DnsCache] = []

    def make(**kwargs: object) -> DnsCache:
        options: dict[str, object] = {
            "nameservers": [stub.nameserver],
            "clock": clock,
            "hosts_file": str(hosts_file),
            "timeout": 1.0,
        }
        options.update(kwargs)
        cache = DnsCache(**options)  # type: ignore[arg-type]
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.close()


# --- bypasses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.9", "127.0.0.9"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("fe80::1%lo", "fe80::1%lo"),
    ],
)
def test_ip_literals_are_returned_without_dns(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, host: str, expected: str
) -> None:
    cache = make_cache()
    assert cache.resolve(host) == [expected]
    assert cache.is_current(host, expected)
    assert not cache.is_current(host, "127.0.0.8")
    assert stub.queries == 0
    assert cache.stats() == DnsStats(0, 0, 0, 0, 0, 0.0)


def test_hosts_file_names_bypass_dns(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, hosts_file: Path
) -> None:
    hosts_file.write_text(
        "# comment\n127.0.0.5 Pinned.Kube.Test pinned-alias # trailing\n::1 pinned.kube.test\n"
        "not-an-ip broken\n",
        encoding="utf-8",
    )
    cache = make_cache()
    assert cache.resolve("pinned.kube.test.") == ["::1", "127.0.0.5"]
    assert cache.resolve("PINNED-ALIAS") == ["127.0.0.5"]
    assert cache.is_current("pinned.kube.test", "127.0.0.5")
    assert not cache.is_current("pinned.kube.test", "127.0.0.6")
    assert stub.queries == 0


def test_hosts_file_changes_are_picked_up(
    make_cache: Callable[..., DnsCache], clock: FakeClock, hosts_file: Path
) -> None:
    hosts_file.write_text("127.0.0.5 pinned.kube.test\n", encoding="utf-8")
    cache = make_cache()
    assert cache.resolve("pinned.kube.test") == ["127.0.0.5"]
    hosts_file.write_text("127.0.0.6 pinned.kube.test\n#padding\n", encoding="utf-8")
    # Checked at most once per HOSTS_CHECK_INTERVAL: still the old answer until then.
    assert cache.resolve("pinned.kube.test") == ["127.0.0.5"]
    clock.set(HOSTS_CHECK_INTERVAL)
    assert cache.resolve("pinned.kube.test") == ["127.0.0.6"]
    hosts_file.unlink()
    clock.set(2 * HOSTS_CHECK_INTERVAL)
    with pytest.raises(socket.gaierror):  # now a DNS name, unknown to the stub
        cache.resolve("pinned.kube.test")


# --- answers and TTLs ----------------------------------------------------------------------------


def test_one_query_per_record_type_then_hits(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    cache = make_cache()
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert (stub.queries_for("A"), stub.queries_for("AAAA")) == (1, 1)
    for offset in (0.0, 10.0, 50.0):
        clock.set(offset)
        assert cache.resolve(HOST) == ["127.0.0.1"]
    assert cache.resolve("API.Kube.Test.") == ["127.0.0.1"]  # same entry: case, trailing dot
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.queries, stats.failures) == (4, 1, 2, 0)
    assert stats.lookup_seconds > 0
    assert stub.queries == 2


def test_names_are_fully_qualified_never_searched(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer
) -> None:
    stub.set("kubernetes", "127.0.0.7")
    cache = make_cache()
    assert cache.resolve("kubernetes") == ["127.0.0.7"]
    assert stub.queries == 2  # "kubernetes." A and AAAA, no search-list expansion


def test_answer_expires_after_its_ttl(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    cache = make_cache()
    cache.resolve(HOST)
    stub.set(HOST, "127.0.0.2")
    clock.set(45)  # below the refresh point (85% of 60 s = 51 s): a plain hit
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert stub.queries == 2
    clock.set(60)
    assert cache.resolve(HOST) == ["127.0.0.2"]
    assert stub.queries == 4
    assert cache.stats().misses == 2


@pytest.mark.parametrize(
    "case",
    [
        (1, 4.0, 5.0, {"min_ttl": 5.0}),  # raised to min_ttl
        (0, 4.0, 5.0, {"min_ttl": 5.0}),  # a 0 TTL too
        (100_000, 250.0, 300.0, {"max_ttl": 300.0}),  # cut to max_ttl
    ],
)
def test_ttl_is_clamped(
    make_cache: Callable[..., DnsCache],
    stub: FakeDnsServer,
    clock: FakeClock,
    case: tuple[int, float, float, dict[str, float]],
) -> None:
    record_ttl, hit_at, miss_at, kwargs = case
    stub.ttl = record_ttl
    cache = make_cache(**kwargs)
    cache.close()  # no background refresh: this test is about expiry alone
    cache.resolve(HOST)
    clock.set(hit_at)
    cache.resolve(HOST)
    assert stub.queries == 2
    clock.set(miss_at)
    cache.resolve(HOST)
    assert stub.queries == 4


def test_nxdomain_is_cached_for_negative_ttl(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    cache = make_cache(negative_ttl=5.0)
    with pytest.raises(socket.gaierror) as info:
        cache.resolve("missing.kube.test")
    assert info.value.errno == socket.EAI_NONAME
    assert "NXDOMAIN" in str(info.value)
    clock.set(4.9)
    with pytest.raises(socket.gaierror):
        cache.resolve("missing.kube.test")
    assert stub.queries == 2
    stub.set("missing.kube.test", "127.0.0.3")
    clock.set(5.0)
    assert cache.resolve("missing.kube.test") == ["127.0.0.3"]
    assert stub.queries == 4
    assert cache.stats().failures == 2  # A and AAAA, once


def test_servfail_is_cached_for_negative_ttl(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.servfail = True
    cache = make_cache(negative_ttl=5.0)
    with pytest.raises(socket.gaierror) as info:
        cache.resolve(HOST)
    assert info.value.errno == socket.EAI_AGAIN
    sent = stub.queries
    clock.set(3)
    with pytest.raises(socket.gaierror):
        cache.resolve(HOST)
    assert stub.queries == sent  # RFC 9520: failures are cached too
    stub.servfail = False
    clock.set(5)
    assert cache.resolve(HOST) == ["127.0.0.1"]


def test_invalid_name_is_nxdomain_without_a_query(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer
) -> None:
    cache = make_cache()
    for name in ("a..kube.test", "x" * 64 + ".test", "", "."):
        with pytest.raises(socket.gaierror) as info:
            cache.resolve(name)
        assert info.value.errno == socket.EAI_NONAME
    assert stub.queries == 0


def test_missing_aaaa_is_an_answer_not_a_failure(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.ttl = 10
    stub.negative_soa = 100
    cache = make_cache(negative_ttl=5.0)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert cache.stats().failures == 0
    cache.close()  # no prefetch: count only expiry-driven queries
    clock.set(20)  # A expired (10 s); the NODATA for AAAA lives for the SOA's 100 s (RFC 2308 §5)
    cache.resolve(HOST)
    assert (stub.queries_for("A"), stub.queries_for("AAAA")) == (2, 1)


def test_nodata_without_soa_is_cached_like_an_answer(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.no_soa = True
    cache = make_cache(max_ttl=120.0)
    cache.close()
    cache.resolve(HOST)
    clock.set(60)  # A expired; the AAAA NODATA (no SOA: 300 s, clamped to max_ttl) did not
    cache.resolve(HOST)
    assert (stub.queries_for("A"), stub.queries_for("AAAA")) == (2, 1)
    clock.set(120)
    cache.resolve(HOST)
    assert (stub.queries_for("A"), stub.queries_for("AAAA")) == (3, 2)


def test_name_without_any_address_raises_nodata(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer
) -> None:
    stub.set("empty.kube.test")
    cache = make_cache()
    with pytest.raises(socket.gaierror) as info:
        cache.resolve("empty.kube.test")
    assert info.value.errno == getattr(socket, "EAI_NODATA", socket.EAI_NONAME)
    assert cache.stats().failures == 0


# --- serve-stale (RFC 8767) ----------------------------------------------------------------------


def test_stale_answer_is_served_when_the_resolver_fails(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.ttl = 10
    cache = make_cache()
    cache.resolve(HOST)
    stub.servfail = True
    clock.set(11)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    stats = cache.stats()
    assert (stats.stale_served, stats.failures, stats.misses) == (1, 2, 2)
    assert stub.queries == 4
    # Within the recheck timer: served stale at once, no query.
    clock.set(11 + STALE_RECHECK_INTERVAL - 1)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert stub.queries == 4
    assert cache.stats().stale_served == 2
    # The recheck runs in the background; the caller still gets the stale answer at once.
    stub.servfail = False
    stub.set(HOST, "127.0.0.2")
    clock.set(11 + STALE_RECHECK_INTERVAL)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert stub.wait_for_queries(6)
    assert wait_until(lambda: not cache.is_current(HOST, "127.0.0.1"))
    assert cache.resolve(HOST) == ["127.0.0.2"]
    assert stub.queries == 6


def test_stale_answer_is_not_served_past_stale_ttl(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.ttl = 10
    cache = make_cache(stale_ttl=100.0)
    cache.resolve(HOST)
    stub.servfail = True
    clock.set(109)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    clock.set(110)
    with pytest.raises(socket.gaierror) as info:
        cache.resolve(HOST)
    assert info.value.errno == socket.EAI_AGAIN


def test_nxdomain_is_an_answer_and_ends_stale_serving(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.ttl = 10
    cache = make_cache()
    cache.resolve(HOST)
    stub.remove(HOST)
    clock.set(11)
    with pytest.raises(socket.gaierror) as info:
        cache.resolve(HOST)
    assert info.value.errno == socket.EAI_NONAME
    assert not cache.is_current(HOST, "127.0.0.1")


def test_one_record_type_failing_still_answers_with_the_other(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.set(HOST, "127.0.0.1", "::1")
    stub.ttl = 10
    cache = make_cache()
    assert cache.resolve(HOST) == ["::1", "127.0.0.1"]
    stub.servfail = True
    clock.set(11)
    assert cache.resolve(HOST) == ["::1", "127.0.0.1"]  # both stale
    assert cache.stats().stale_served == 1


# --- refresh before expiry ----------------------------------------------------------------------


def test_answer_in_use_is_refreshed_before_it_expires(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.ttl = 10
    cache = make_cache()
    cache.resolve(HOST)
    stub.set(HOST, "127.0.0.2", "::2")
    clock.set(8)  # < 85%: no refresh
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert stub.queries == 2
    clock.set(9)  # >= 85%: the caller is answered from cache, the refresh runs in the background
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert stub.wait_for_queries(4)
    # Both record types refreshed (A and AAAA are separate background lookups).
    assert wait_until(
        lambda: not cache.is_current(HOST, "127.0.0.1") and cache.is_current(HOST, "::2")
    )
    clock.set(12)  # past the old expiry: the refreshed answer, no waiting
    assert cache.resolve(HOST) == ["::2", "127.0.0.2"]
    stats = cache.stats()
    assert (stats.misses, stats.hits, stub.queries) == (1, 3, 4)


def test_failed_refresh_keeps_the_answer_and_serves_it_stale(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.ttl = 10
    cache = make_cache()
    cache.resolve(HOST)
    stub.servfail = True
    clock.set(9)
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert stub.wait_for_queries(4)
    assert wait_until(lambda: cache.stats().failures == 2)
    clock.set(9.5)  # no second refresh before the recheck timer
    cache.resolve(HOST)
    clock.set(15)  # expired: served stale at once, no foreground lookup
    assert cache.resolve(HOST) == ["127.0.0.1"]
    assert stub.queries == 4
    assert cache.stats().misses == 1


def test_close_stops_background_refresh(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.ttl = 10
    cache = make_cache()
    cache.resolve(HOST)
    cache.close()
    clock.set(9)
    cache.resolve(HOST)
    assert stub.queries == 2
    clock.set(10)  # lookups still work, in the caller
    stub.set(HOST, "127.0.0.2")
    assert cache.resolve(HOST) == ["127.0.0.2"]


# --- single flight ------------------------------------------------------------------------------


def test_concurrent_misses_share_one_lookup(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer
) -> None:
    cache = make_cache(timeout=5.0)
    threads = 16
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(cache.resolve(HOST))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    stub.hold()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    try:
        # Every thread has counted its miss (and so joined the flight) while the answer is held.
        assert wait_until(lambda: cache.stats().misses == threads)
        assert stub.wait_for_queries(2)
        assert stub.queries == 2
    finally:
        stub.release()
        for thread in workers:
            thread.join(5)
    assert not errors
    assert results == [["127.0.0.1"]] * threads
    assert stub.queries == 2
    assert cache.stats().queries == 2


# --- ordering and is_current --------------------------------------------------------------------


def test_interleave_follows_rfc8305() -> None:
    assert interleave(["::1", "::2", "10.0.0.1", "10.0.0.2", "10.0.0.3"]) == [
        "::1",
        "10.0.0.1",
        "::2",
        "10.0.0.2",
        "10.0.0.3",
    ]
    assert interleave(["10.0.0.1", "::1", "::2", "::3"]) == ["::1", "10.0.0.1", "::2", "::3"]
    assert interleave(["10.0.0.2", "10.0.0.1"]) == ["10.0.0.2", "10.0.0.1"]
    assert interleave([]) == []


def test_failed_address_is_tried_last(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.set(HOST, "127.0.0.1", "127.0.0.2", "::1", "::2")
    cache = make_cache()
    assert cache.resolve(HOST) == ["::1", "127.0.0.1", "::2", "127.0.0.2"]
    cache.report_failure(HOST, "::1")
    clock.set(1)
    cache.report_failure(HOST + ".", "127.0.0.1")
    # Not failed first, in their order; then failed ones, the oldest failure first.
    assert cache.resolve(HOST) == ["::2", "127.0.0.2", "::1", "127.0.0.1"]
    cache.report_success(HOST, "::1")
    assert cache.resolve(HOST) == ["::1", "::2", "127.0.0.2", "127.0.0.1"]
    clock.set(1 + FAILURE_MEMORY)
    assert cache.resolve(HOST) == ["::1", "127.0.0.1", "::2", "127.0.0.2"]
    cache.report_success(HOST, "127.0.0.1")  # nothing recorded: no effect
    cache.report_failure("127.0.0.9", "127.0.0.9")
    assert cache.resolve("127.0.0.9") == ["127.0.0.9"]


def test_is_current_turns_false_when_the_answer_changes(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer, clock: FakeClock
) -> None:
    stub.set(HOST, "127.0.0.1", "::1")
    cache = make_cache()
    assert cache.is_current(HOST, "127.0.0.1")  # unknown yet: nothing says otherwise
    cache.resolve(HOST)
    assert cache.is_current(HOST, "127.0.0.1")
    assert cache.is_current(HOST, "::1")
    assert cache.is_current(HOST, "0:0:0:0:0:0:0:1")  # same address, other spelling
    assert not cache.is_current(HOST, "127.0.0.2")
    stub.set(HOST, "127.0.0.2")
    clock.set(60)
    cache.resolve(HOST)
    assert not cache.is_current(HOST, "127.0.0.1")
    assert not cache.is_current(HOST, "::1")  # AAAA is now NODATA
    assert cache.is_current(HOST, "127.0.0.2")


def test_is_current_keeps_connections_while_dns_fails(
    make_cache: Callable[..., DnsCache], stub: FakeDnsServer
) -> None:
    stub.servfail = True
    cache = make_cache()
    with pytest.raises(socket.gaierror):
        cache.resolve(HOST)
    assert cache.is_current(HOST, "127.0.0.1")


# --- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dns_min_ttl": -1.0},
        {"dns_negative_ttl": float("nan")},
        {"dns_min_ttl": 10.0, "dns_max_ttl": 5.0},
        {"dns_timeout": 0.0},
    ],
)
def test_bad_arguments_are_rejected_by_settings_naming_the_setting(kwargs: dict[str, Any]) -> None:
    # The cache trusts its arguments: Settings validates them, with the setting's name.
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        Settings.from_kwargs(**kwargs)


def test_nameservers_default_to_resolv_conf_without_sending_anything() -> None:
    cache = DnsCache()
    try:
        assert cache.resolve("127.0.0.1") == ["127.0.0.1"]
        assert "DnsCache(nameservers=[" in repr(cache)
        assert cache.stats().queries == 0
    finally:
        cache.close()
