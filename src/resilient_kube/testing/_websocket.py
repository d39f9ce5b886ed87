"""The fake API server's websocket endpoints: exec, attach and port-forward of a pod.

A real kube-apiserver hands these to the kubelet, so without a node there is nothing to test
against. Here the server answers the upgrade itself (RFC 6455) and plays a tiny container
speaking kube-apiserver's channel protocols (``v5.channel.k8s.io`` if offered, else
``v4.channel.k8s.io``): one byte of channel, then the data; 0 stdin, 1 stdout, 2 stderr, 3 the
final ``Status``, 255 close-a-channel (v5).

Commands the container knows (anything else fails as "executable file not found"):

=================  =====================================================================
``echo ARGS...``   ARGS joined by spaces and a newline on stdout
``stderr ARGS...`` the same on stderr
``cat``            stdin back on stdout until stdin is closed (v5) or the client closes
``sleep SECONDS``  nothing for that long (ends early when the server stops)
``exit CODE``      exits with CODE
=================  =====================================================================

Attach: the container's main process is ``cat``. Port-forward: each requested port answers like an
echo server on its data channel.

The pod must exist (``404`` otherwise, before any upgrade, as the real server answers), and
every fault of the server applies to these requests too (``Stall`` makes a silent peer).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shlex
import struct
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from ._status import ApiStatusError, status_body

if TYPE_CHECKING:
    from ._server import _Handler

__all__ = ["is_websocket", "serve_websocket"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_STDIN, _STDOUT, _STDERR, _ERROR, _CLOSE_CHANNEL = 0, 1, 2, 3, 255
_ACTIONS = frozenset({"exec", "attach", "portforward"})


def is_websocket(handler: _Handler) -> bool:
    """Whether the request asks for a websocket upgrade."""
    return handler.headers.get("Upgrade", "").lower() == "websocket"


def serve_websocket(handler: _Handler) -> None:
    """Answer an upgrade on ``handler``'s connection; the connection ends with the session."""
    handler.close_connection = True
    split = urlsplit(handler.path)
    parts = [unquote(p) for p in split.path.split("/") if p]
    query = parse_qs(split.query)
    # /api/v1/namespaces/{namespace}/pods/{name}/{exec|attach|portforward}
    if len(parts) != 7 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods":
        handler._send_json(404, status_body(404, "no websocket endpoint at this path"))
        return
    namespace, name, action = parts[3], parts[5], parts[6]
    app = handler.server.app
    pods = app._registry.find("", "v1", "pods")
    try:
        if action not in _ACTIONS:
            raise ApiStatusError(404, f"no {action} subresource for pods")
        assert pods is not None  # a built-in kind
        app._store.get(pods, namespace, name)
    except ApiStatusError as exc:
        handler._send_json(exc.code, exc.body)
        return
    key = handler.headers.get("Sec-WebSocket-Key", "")
    offered = [p.strip() for p in handler.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    protocol = next((p for p in _PROTOCOLS if p in offered), None)
    if not key or protocol is None:
        handler._send_json(400, status_body(400, f"unsupported websocket protocols {offered}"))
        return
    # SHA-1 is what RFC 6455 §4.2.2 prescribes for the accept key; nothing secret here.
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.send_header("Sec-WebSocket-Protocol", protocol)
    handler.end_headers()
    session = _Session(handler, v5=protocol.startswith("v5"))
    with contextlib.suppress(OSError, ConnectionError):
        if action == "portforward":
            session.port_forward([int(p) for v in query.get("ports", []) for p in v.split(",")])
        elif action == "attach":
            session.execute(["cat"])  # the container's main process echoes its stdin
        else:
            session.execute(query.get("command", []))
        session.close()


class _Session:
    """One websocket session: frames in and out, and the little container behind them."""

    def __init__(self, handler: _Handler, *, v5: bool) -> None:
        self.handler = handler
        self.v5 = v5
        self.stdin_open = True

    # --- framing (RFC 6455 §5.2): the server sends unmasked, the client masks -------------------

    def send(self, payload: bytes, opcode: int = _BINARY) -> None:
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        self.handler.wfile.write(head + payload)

    def channel(self, number: int, data: bytes) -> None:
        self.send(bytes([number]) + data)

    def receive(self) -> tuple[int, bytes] | None:
        """The next data frame ``(opcode, payload)``; None when the client closed."""
        rfile = self.handler.rfile
        while True:
            head = rfile.read(2)
            if len(head) < 2:
                return None
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", rfile.read(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", rfile.read(8))
            mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = rfile.read(size)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == _PING:
                self.send(payload, _PONG)
            elif opcode == _CLOSE:
                return None
            elif opcode in (_TEXT, _BINARY):
                return opcode, payload

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(struct.pack("!H", 1000), _CLOSE)

    # --- exec and attach ------------------------------------------------------------------------

    def execute(self, command: list[str]) -> None:
        program, args = (command[0], command[1:]) if command else ("", [])
        code = 0
        if program in ("echo", "stderr"):
            out = _STDOUT if program == "echo" else _STDERR
            self.channel(out, (" ".join(args) + "\n").encode())
        elif program == "cat":
            while (frame := self.receive()) is not None:
                _, payload = frame
                if payload[:1] == bytes([_CLOSE_CHANNEL]):
                    break  # v5: the client closed stdin
                if payload[:1] == bytes([_STDIN]):
                    self.channel(_STDOUT, payload[1:])
        elif program == "sleep" and len(args) == 1:
            self.handler.server.app._stopping.wait(float(args[0]))
        elif program == "exit" and len(args) == 1:
            code = int(args[0])
        else:
            message = f"exec: {shlex.join(command)!r}: executable file not found in $PATH"
            self.channel(_ERROR, json.dumps(_failure(message)).encode())
            return
        status: dict[str, Any] = (
            {"metadata": {}, "status": "Success"}
            if code == 0
            else _failure(
                f"command terminated with non-zero exit code: {code}",
                reason="NonZeroExitCode",
                causes=[{"reason": "ExitCode", "message": str(code)}],
            )
        )
        self.channel(_ERROR, json.dumps(status).encode())

    # --- port-forward ---------------------------------------------------------------------------

    def port_forward(self, ports: list[int]) -> None:
        # Each port's data and error channels first carry the port number (little endian).
        for index, port in enumerate(ports):
            for channel in (2 * index, 2 * index + 1):
                self.channel(channel, struct.pack("<H", port))
        while (frame := self.receive()) is not None:
            _, payload = frame
            if payload and payload[0] % 2 == 0 and payload[0] // 2 < len(ports):
                self.channel(payload[0], payload[1:])  # an echo server on every port


def _failure(message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": message}
    reason = details.pop("reason", None)
    if reason is not None:
        body["reason"] = reason
    if details:
        body["details"] = details
    return body
