"""A tiny authoritative DNS server on loopback for ``resilient-kube demo``, counting its queries.

It answers A and AAAA for a fixed table over UDP on ``127.0.0.1`` (port 0 picks a free one), so the
demo can connect to the fake API server by name and count every DNS message a client sends.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

__all__ = ["DemoResolver"]

#: How often the serving thread checks whether it should stop.
_POLL_SECONDS = 0.05


class DemoResolver:
    """Serve ``records`` (name -> addresses) with ``ttl`` on ``127.0.0.1:port`` in a thread.

    Example:
        >>> with DemoResolver({"api.demo.test": ["127.0.0.1"]}, ttl=30) as resolver:
        ...     resolver.nameserver.startswith("127.0.0.1:")
        True
    """

    def __init__(self, records: Mapping[str, Iterable[str]], *, ttl: int = 30) -> None:
        self.ttl = ttl
        self._records = {name.rstrip(".").lower(): list(addrs) for name, addrs in records.items()}
        self._lock = threading.Lock()
        self._queries = 0
        self._stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, name="demo-dns", daemon=True)
        self._thread.start()

    @property
    def nameserver(self) -> str:
        """``'127.0.0.1:PORT'``, as ``dns_nameservers=`` takes it."""
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    @property
    def queries(self) -> int:
        """DNS messages received so far."""
        with self._lock:
            return self._queries

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> DemoResolver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._sock], [], [], _POLL_SECONDS)
            if not readable:
                continue
            # A stray datagram that is not DNS is ignored, as a real server would.
            with contextlib.suppress(OSError, dns.exception.DNSException):
                wire, peer = self._sock.recvfrom(65535)
                self._sock.sendto(self._answer(wire), peer)

    def _answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        with self._lock:
            self._queries += 1
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        addresses = self._records.get(question.name.to_text(omit_final_dot=True).lower())
        if addresses is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        is_v6 = question.rdtype == dns.rdatatype.AAAA
        wanted = [a for a in addresses if (":" in a) == is_v6]
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and wanted:
            rrset = dns.rrset.from_text_list(question.name, self.ttl, "IN", question.rdtype, wanted)
            response.answer.append(rrset)
        return response.to_wire()
