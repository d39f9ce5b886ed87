"""A DNS server on 127.0.0.1 (UDP, dnspython) in a thread, with knobs for faults.

It answers A and AAAA from a mutable table and can delay, drop, hold or SERVFAIL queries, so tests
can drive every path of the DNS cache without touching a real resolver. It counts the queries it
receives, which the tests use as the number of DNS messages a client sent.

Example::

    with FakeDnsServer({"api.kube.test": ["127.0.0.1", "::1"]}, ttl=30) as stub:
        cache = DnsCache(nameservers=[stub.nameserver])
"""

from __future__ import annotations

import contextlib
import heapq
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from types import TracebackType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["FakeDnsServer"]


class FakeDnsServer:
    """A DNS server for tests, listening on ``127.0.0.1:<port>`` over UDP.

    Args:
        records: name -> addresses; IPv6 addresses become AAAA records, the others A records.
        ttl: the TTL of every answer.

    Knobs (plain attributes, change them at any time):
        ``delay``: seconds to wait before each response; ``drop``: never respond;
        ``servfail``: respond SERVFAIL; ``negative_soa``: the TTL and MINIMUM of the SOA sent with
        NXDOMAIN and NODATA responses (RFC 2308; None: ``ttl``); ``no_soa``: send none;
        ``hold()``/``release()``: keep responses back until released.
    """

    def __init__(
        self, records: Mapping[str, Iterable[str]] | None = None, *, ttl: int = 60
    ) -> None:
        self.ttl = ttl
        self.delay = 0.0
        self.drop = False
        self.servfail = False
        self.negative_soa: int | None = None
        self.no_soa = False
        self._records: dict[str, list[str]] = {}
        for name, addresses in (records or {}).items():
            self.set(name, *addresses)
        self._cond = threading.Condition()
        self._queries: Counter[str] = Counter()
        self._held = False
        self._held_responses: list[tuple[bytes, tuple[str, int]]] = []
        self._due: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._seq = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="fake-dns-server", daemon=True)
        self._thread.start()

    # --- configuration -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def nameserver(self) -> str:
        """``'127.0.0.1:<port>'``, as ``DnsCache(nameservers=...)`` takes it."""
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, *addresses: str) -> None:
        """Replace the addresses of ``name`` (none: the name exists with no A or AAAA)."""
        self._records[name.rstrip(".").lower()] = list(addresses)

    def remove(self, name: str) -> None:
        """Forget ``name``: it answers NXDOMAIN from now on."""
        self._records.pop(name.rstrip(".").lower(), None)

    def hold(self) -> None:
        """Keep responses back until ``release()`` (queries are still counted)."""
        with self._cond:
            self._held = True

    def release(self) -> None:
        """Send the responses held back, and stop holding."""
        with self._cond:
            self._held = False
            for payload, peer in self._held_responses:
                self._schedule(0.0, payload, peer)
            self._held_responses.clear()
        self._wake()

    # --- observation ---------------------------------------------------------------------------

    @property
    def queries(self) -> int:
        """Queries received so far."""
        with self._cond:
            return sum(self._queries.values())

    def queries_for(self, rdtype: str) -> int:
        """Queries received so far for one record type (``'A'``, ``'AAAA'``)."""
        with self._cond:
            return self._queries[rdtype]

    def wait_for_queries(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` queries have arrived; False if ``timeout`` ran out."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(self._queries.values()) >= count, timeout)

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(5)
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FakeDnsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the server ----------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # closed already
            self._wake_w.send(b"x")

    def _schedule(self, delay: float, payload: bytes, peer: tuple[str, int]) -> None:
        self._seq += 1
        heapq.heappush(self._due, (time.monotonic() + delay, self._seq, payload, peer))

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                with self._cond:
                    wait = max(0.0, self._due[0][0] - time.monotonic()) if self._due else None
                for key, _ in selector.select(wait):
                    if key.fileobj is self._wake_r:
                        self._wake_r.recv(4096)
                    else:
                        self._receive()
                self._send_due()

    def _send_due(self) -> None:
        now = time.monotonic()
        with self._cond:
            while self._due and self._due[0][0] <= now:
                _, _, payload, peer = heapq.heappop(self._due)
                with contextlib.suppress(OSError):  # the client gave up and closed its socket
                    self._sock.sendto(payload, peer)

    def _receive(self) -> None:
        try:
            wire, peer = self._sock.recvfrom(65535)
        except OSError:
            return
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # not DNS; ignore it like a real server would
            return
        question = query.question[0]
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._cond:
            self._queries[rdtype] += 1
            self._cond.notify_all()
        if self.drop:
            return
        response = self._answer(query, question.name, question.rdtype)
        payload = response.to_wire(want_shuffle=False)  # answers in table order, for tests
        with self._cond:
            if self._held:
                self._held_responses.append((payload, peer))
            else:
                self._schedule(self.delay, payload, peer)

    def _answer(
        self, query: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        name = qname.to_text(omit_final_dot=True).lower()
        addresses = self._records.get(name)
        if addresses is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            is_v6 = rdtype == dns.rdatatype.AAAA
            wanted = [a for a in addresses if (":" in a) == is_v6]
            if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and wanted:
                response.answer.append(
                    dns.rrset.from_text_list(qname, self.ttl, "IN", rdtype, wanted)
                )
        if not response.answer and not self.no_soa:
            negative = self.ttl if self.negative_soa is None else self.negative_soa
            soa = f"ns.test. admin.test. 1 3600 600 86400 {negative}"
            response.authority.append(
                dns.rrset.from_text(qname.parent(), negative, "IN", "SOA", soa)
            )
        return response
