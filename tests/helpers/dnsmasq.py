"""Run a real dnsmasq on 127.0.0.1 for the DNS integration tests and the benchmark.

dnsmasq answers for ``kube.test`` from a hosts directory (``--hostsdir``), re-read through inotify, so
a test changes an answer by writing a file elsewhere and renaming it into place. Names it does not
know get NXDOMAIN (``--local=/kube.test/``); there is no upstream, so nothing leaves loopback.

Example::

    with Dnsmasq(tmp_path, ttl=7) as server:
        server.set_hosts({"api.kube.test": ["127.0.0.1"]})
        cache = DnsCache(nameservers=[server.nameserver])
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.name
import dns.resolver

__all__ = ["DNSMASQ", "Dnsmasq", "dnsmasq_available"]

#: Debian's dnsmasq-base puts the binary here.
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def dnsmasq_available() -> bool:
    return os.access(DNSMASQ, os.X_OK)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dnsmasq:
    """A dnsmasq process serving ``*.kube.test`` on ``127.0.0.1:<free port>``.

    Args:
        workdir: a private directory for the hosts directory, the log and the pid file.
        ttl: ``--local-ttl``, the TTL of every answer.
        port: a fixed port (53 lets glibc use it through a resolv.conf); 0 picks a free one.
        log_queries: write one log line per query (``--log-queries``), counted by ``queries()``.
        domains: the domains it answers for (``--local``); names elsewhere are refused.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ttl: int = 7,
        log_queries: bool = True,
        port: int = 0,
        domains: Iterable[str] = ("kube.test",),
    ) -> None:
        self.workdir = workdir
        self.ttl = ttl
        self.hostsdir = workdir / "hosts.d"
        self.hostsdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "dnsmasq.log"
        self._log_queries = log_queries
        self._proc: subprocess.Popen[bytes] | None = None
        self._generation = 0
        self._lock = threading.Lock()
        self._fixed_port = port
        self.port = port
        #: Domains answered locally (NXDOMAIN for unknown names in them); others are refused.
        self.domains = tuple(domains)

    @property
    def nameserver(self) -> str:
        """``'127.0.0.1:<port>'``, as ``DnsCache(nameservers=...)`` takes it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start dnsmasq on a free port and wait until it answers (bounded)."""
        # Keep the current user: dropping to nobody would lose access to a private tmp directory.
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        for _ in range(5):  # the free port can be taken between probing and binding
            self.port = self._fixed_port or _free_udp_port()
            args = [
                DNSMASQ,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                f"--port={self.port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                f"--user={user}",
                f"--group={group}",
                f"--pid-file={self.workdir / 'dnsmasq.pid'}",
                *(f"--local=/{domain}/" for domain in self.domains),
                f"--hostsdir={self.hostsdir}",
                f"--local-ttl={self.ttl}",
                f"--log-facility={self.log_path}",
            ]
            if self._log_queries:
                args.append("--log-queries")
            self._proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True
            )
            if self._wait_ready(5.0):
                return
            self.stop()
        raise RuntimeError(f"dnsmasq did not start; see {self.log_path}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        resolver = self.resolver(timeout=0.2)
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                resolver.resolve(dns.name.from_text(f"ready.{self.domains[0]}"), "A", search=False)
            except dns.resolver.NXDOMAIN:
                return True  # it answers
            except dns.exception.DNSException:
                threading.Event().wait(0.02)
        return False

    def stop(self) -> None:
        """Terminate dnsmasq (SIGTERM) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # Defensive
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """Kill dnsmasq (SIGKILL): an outage, the port now refuses (ICMP port unreachable)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def resolver(self, timeout: float = 1.0) -> dns.resolver.Resolver:
        """An uncached dnspython resolver pointed at this dnsmasq (for checks and the benchmark)."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.nameserver_ports = {"127.0.0.1": self.port}
        resolver.cache = None
        resolver.timeout = timeout
        resolver.lifetime = timeout
        return resolver

    def set_hosts(self, records: Mapping[str, Iterable[str]], *, wait: bool = True) -> None:
        """Replace the answers: write a hosts file elsewhere, then rename it into the hosts dir.

        With ``wait``, return once dnsmasq serves the new A answer of every name (bounded, 5 s).
        """
        with self._lock:
            self._generation += 1
            lines = [
                f"{address} {name}" for name, addresses in records.items() for address in addresses
            ]
            staging = self.workdir / f"hosts.{self._generation}.tmp"
            staging.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(staging, self.hostsdir / "hosts")
        if wait and self._proc is not None:
            for name, addresses in records.items():
                self._wait_for_answer(name, sorted(a for a in addresses if ":" not in a))

    def _wait_for_answer(self, name: str, expected: list[str]) -> None:
        resolver = self.resolver(timeout=0.5)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                answer = resolver.resolve(dns.name.from_text(name), "A", search=False)
                got = sorted(str(rdata) for rdata in answer)
            except dns.exception.DNSException:
                got = []
            if got == expected:
                return
            threading.Event().wait(0.02)
        raise AssertionError(f"dnsmasq did not pick up {name} -> {expected} within 5 s")

    def queries(self, rdtype: str | None = None) -> int:
        """Queries logged so far (``--log-queries``), optionally of one record type."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return 0
        marker = f"query[{rdtype}]" if rdtype else "query["
        return sum(marker in line for line in text.splitlines())

    def wait_for_queries(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``queries()`` reaches ``count`` (dnsmasq logs asynchronously); bounded."""
        deadline = time.monotonic() + timeout
        while self.queries() < count:
            if time.monotonic() >= deadline:
                return False
            threading.Event().wait(0.02)
        return True

    def __enter__(self) -> Dnsmasq:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
