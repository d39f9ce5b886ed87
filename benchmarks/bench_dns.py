"""What the DNS cache saves on the connection path, beside the stock path's ``getaddrinfo``.

Run::

    python benchmarks/bench_dns.py            # full: 20,000 cached lookups, 1,000 connections each way
    python benchmarks/bench_dns.py --quick    # fewer samples, 200 connections each way
    python benchmarks/bench_dns.py --json OUT # also write the results as JSON

Everything runs on loopback against a real dnsmasq (``--local-ttl=30``, ``--log-queries``) serving
``api.kube.test``; nothing reads the machine's /etc/resolv.conf.

What is measured:

* **Lookup cost.** The median of batches of 100 calls (``time.perf_counter_ns``), per call:
  a cached ``DnsCache.resolve``; ``socket.getaddrinfo("localhost")``, which glibc answers from
  /etc/hosts (files path, no DNS: a lower bound for the stock path); one uncached dnspython query
  to dnsmasq over UDP; and, when the stock path can be pointed at dnsmasq (below), glibc
  ``getaddrinfo("api.kube.test")`` through DNS.
* **Queries per connection.** ``connections`` new TCP connections to a listener on 127.0.0.1, each
  resolving ``api.kube.test``, counted in dnsmasq's query log:

  - resilient_kube: ``_dialer.create_connection`` through one ``DnsCache``;
  - stock: ``urllib3.util.connection.create_connection`` (what the official client runs for every
    new connection), in a child process in a private mount namespace where /etc/resolv.conf is
    ``nameserver 127.0.0.1`` and dnsmasq listens on 127.0.0.1:53. That needs root, ``unshare``
    and a free port 53; otherwise the stock count is *emulated* with dnspython sending A and AAAA
    per connection, as glibc does with ``AF_UNSPEC`` (and the result says so). A pod's resolv.conf
    (``search`` list, ``ndots:5``) multiplies the stock count further; this setup has no search list.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.name

ROOT = Path(__file__).resolve().parents[1]
try:
    from resilient_kube._dialer import create_connection
    from resilient_kube._dns import DnsCache
except ImportError:  # run from a checkout without installing: python benchmarks/bench_dns.py
    sys.path.insert(0, str(ROOT / "src"))
    from resilient_kube._dialer import create_connection
    from resilient_kube._dns import DnsCache
try:
    from tests.helpers.dnsmasq import Dnsmasq, dnsmasq_available
except ImportError:  # the script's own directory is on sys.path, not the checkout
    sys.path.insert(0, str(ROOT))
    from tests.helpers.dnsmasq import Dnsmasq, dnsmasq_available

__all__ = ["run"]

HOST = "api.kube.test"
TTL = 30
BATCH = 100

_STOCK_CHILD = r"""
import json, socket, statistics, sys, time
import urllib3.util.connection as connection
host, port, count, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
samples = []
for _ in range(count):
    started = time.perf_counter_ns()
    if mode == "dial":
        connection.create_connection((host, port), timeout=2.0).close()
    else:
        socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    samples.append(time.perf_counter_ns() - started)
print(json.dumps({"median_ns": statistics.median(samples)}))
"""


def _per_call_ns(call: Callable[[], object], calls: int) -> dict[str, float]:
    """Median and p99 of the per-call time over batches of ``BATCH`` calls."""
    samples = []
    for _ in range(max(1, calls // BATCH)):
        started = time.perf_counter_ns()
        for _ in range(BATCH):
            call()
        samples.append((time.perf_counter_ns() - started) / BATCH)
    samples.sort()
    return {
        "median_ns": statistics.median(samples),
        "p99_ns": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "calls": len(samples) * BATCH,
    }


class _Acceptor:
    """A listener on 127.0.0.1 that accepts and closes every connection, in a thread."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = int(self.server.getsockname()[1])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.server.close()
        self._thread.join(2)


def _count(server: Dnsmasq, before: int, expected_at_least: int) -> int:
    server.wait_for_queries(before + expected_at_least, timeout=3.0)
    return server.queries() - before


def _stock_available() -> str | None:
    """Why the real stock path cannot be measured here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root for a private mount namespace"
    if shutil.which("unshare") is None:
        return "unshare not installed"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 53))
    except OSError as exc:
        return f"127.0.0.1:53 is taken ({exc})"
    return None


def _stock_child(workdir: Path, port: int, count: int, mode: str) -> dict[str, Any]:
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n", encoding="utf-8")
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    args = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(resolv)]
    args += [sys.executable, "-c", _STOCK_CHILD, HOST, str(port), str(count), mode]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=300)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run(quick: bool) -> dict[str, Any]:
    """Run every measurement and return the numbers (see the module docstring)."""
    if not dnsmasq_available():
        raise SystemExit("bench_dns needs dnsmasq (apt-get install dnsmasq-base)")
    lookups = 2_000 if quick else 20_000
    connections = 200 if quick else 1_000
    queries = 100 if quick else 500
    results: dict[str, Any] = {"quick": quick, "ttl": TTL, "connections": connections}
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        workdir = Path(tmp)
        acceptor = _Acceptor()
        server = Dnsmasq(workdir / "cache", ttl=TTL)
        server.set_hosts({HOST: ["127.0.0.1"]}, wait=False)
        try:
            server.start()
            cache = DnsCache(nameservers=[server.nameserver], hosts_file="/nonexistent")
            try:
                cache.resolve(HOST)
                results["cached_resolve"] = _per_call_ns(lambda: cache.resolve(HOST), lookups)
            finally:
                cache.close()
            results["getaddrinfo_localhost"] = _per_call_ns(
                lambda: socket.getaddrinfo("localhost", 443, 0, socket.SOCK_STREAM), lookups
            )
            resolver = server.resolver()
            qname = dns.name.from_text(HOST)
            results["dnspython_uncached_query"] = _per_call_ns(
                lambda: resolver.resolve(qname, "A", search=False), queries
            )

            # resilient_kube: one cache for every connection.
            cache = DnsCache(nameservers=[server.nameserver], hosts_file="/nonexistent")
            try:
                before = server.queries()
                dials = []
                for _ in range(connections):
                    started_ns = time.perf_counter_ns()
                    create_connection(cache, HOST, acceptor.port, timeout=2.0).close()
                    dials.append(time.perf_counter_ns() - started_ns)
                results["cache_path"] = {
                    "queries": _count(server, before, 2),
                    "cache_stats_queries": cache.stats().queries,
                    "seconds_per_connection": statistics.median(dials) / 1e9,
                }
            finally:
                cache.close()
        finally:
            server.stop()

        why_not = _stock_available()
        stock: dict[str, Any]
        if why_not is None:
            stock_server = Dnsmasq(workdir / "stock", ttl=TTL, port=53)
            stock_server.set_hosts({HOST: ["127.0.0.1"]}, wait=False)
            with stock_server:
                before = stock_server.queries()
                dial = _stock_child(workdir, acceptor.port, connections, "dial")
                stock = {
                    "measured": "urllib3 create_connection + glibc getaddrinfo, real",
                    "queries": _count(stock_server, before, connections),
                    "seconds_per_connection": dial["median_ns"] / 1e9,
                }
                gai = _stock_child(workdir, acceptor.port, min(connections, 500), "getaddrinfo")
                results["getaddrinfo_dns"] = {"median_ns": gai["median_ns"]}
        else:
            stock_server = Dnsmasq(workdir / "stock", ttl=TTL)
            stock_server.set_hosts({HOST: ["127.0.0.1"]}, wait=False)
            with stock_server:
                resolver = stock_server.resolver()
                before = stock_server.queries()
                dials = []
                for _ in range(connections):
                    started_ns = time.perf_counter_ns()
                    for rdtype in ("A", "AAAA"):  # glibc with AF_UNSPEC asks both, uncached
                        resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
                    socket.create_connection(("127.0.0.1", acceptor.port), timeout=2.0).close()
                    dials.append(time.perf_counter_ns() - started_ns)
                stock = {
                    "measured": f"emulated with dnspython ({why_not})",
                    "queries": _count(stock_server, before, 2 * connections),
                    "seconds_per_connection": statistics.median(dials) / 1e9,
                }
        results["stock_path"] = stock
        acceptor.close()
    per_1000 = 1000 / connections
    results["queries_per_1000_connections"] = {
        "cache": results["cache_path"]["queries"] * per_1000,
        "stock": stock["queries"] * per_1000,
    }
    return results


def _print(results: dict[str, Any]) -> None:
    def us(entry: dict[str, Any]) -> str:
        return f"{entry['median_ns'] / 1000:8.2f} µs"

    print(f"lookup cost (median per call){' (quick)' if results['quick'] else ''}:")
    print(f"  DnsCache.resolve, cached            {us(results['cached_resolve'])}")
    print(f"  getaddrinfo('localhost'), files     {us(results['getaddrinfo_localhost'])}")
    if "getaddrinfo_dns" in results:
        print(f"  getaddrinfo('{HOST}'), DNS    {us(results['getaddrinfo_dns'])}")
    print(f"  dnspython query to dnsmasq, no cache{us(results['dnspython_uncached_query'])}")
    q = results["queries_per_1000_connections"]
    n = results["connections"]
    cache, stock = results["cache_path"], results["stock_path"]
    print(f"DNS queries per 1,000 new connections (TTL {results['ttl']} s; raw count / {n}):")
    print(f"  resilient_kube cache   {q['cache']:8.0f}   ({cache['queries']} / {n})")
    print(f"  stock                  {q['stock']:8.0f}   ({stock['queries']} / {n})")
    print(f"  stock measured as: {stock['measured']}")
    cache_ms = cache["seconds_per_connection"] * 1000
    stock_ms = stock["seconds_per_connection"] * 1000
    print(f"median time per new connection: cache {cache_ms:.3f} ms, stock {stock_ms:.3f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args.quick)
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
