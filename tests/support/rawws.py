"""A byte-exact WebSocket server for fault tests, on 127.0.0.1 port 0.

It speaks just enough RFC 6455 to complete a handshake and then does exactly what the
test's handler tells it: send any frame with any header (including lies about the
length), reset the TCP connection, fall silent. The reference server covers normal
traffic; this one covers what a well-behaved server library refuses to send.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import queue
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def server_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
    mask: bool = False,
) -> bytes:
    """The bytes of one frame; ``length`` overrides the announced payload length."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack(">Q", n)
    if mask:
        key = b"\x01\x02\x03\x04"
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, sock: socket.socket, rfile: Any, request_headers: dict[str, str]) -> None:
        self.sock = sock
        self.headers = request_headers
        self._rfile = rfile
        self.send_lock = threading.Lock()
        #: Whether the last frame :meth:`recv_frame` read had RSV1 (permessage-deflate).
        self.rsv1 = False

    # -- sending -------------------------------------------------------------
    def frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        length: int | None = None,
        mask: bool = False,
    ) -> bytes:
        """The bytes of one frame (see :func:`server_frame`)."""
        return server_frame(opcode, payload, fin=fin, rsv=rsv, length=length, mask=mask)

    def send_raw(self, data: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        self.send_raw(self.frame(opcode, payload, **kw))

    def send_text(self, text: str) -> None:
        self.send_frame(TEXT, text.encode())

    def send_json(self, obj: Any) -> None:
        self.send_text(json.dumps(obj))

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        body = b"" if code is None else struct.pack(">H", code) + reason.encode()
        self.send_frame(CLOSE, body)

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._rfile.close()  # the file object holds the descriptor open too
        self.sock.close()

    # -- receiving -----------------------------------------------------------
    def _read(self, n: int) -> bytes:
        data = self._rfile.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def recv_frame(self) -> tuple[int, bool, bytes]:
        """One client frame (unmasked): (opcode, fin, payload). EOFError at end."""
        b0, b1 = self._read(2)
        self.rsv1 = bool(b0 & 0x40)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._read(8))
        key = self._read(4) if b1 & 0x80 else b"\0\0\0\0"
        data = self._read(n)
        if b1 & 0x80 and n:
            stream = (key * (n // 4 + 1))[:n]
            data = (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
        return b0 & 0x0F, bool(b0 & 0x80), data

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Client messages (opcode, payload) until EOF; answers pings, stops after Close."""
        parts: list[bytes] = []
        kind = TEXT
        while True:
            try:
                opcode, fin, data = self.recv_frame()
            except (EOFError, OSError):
                return
            if opcode == PING:
                self.send_frame(PONG, data)
                continue
            if opcode in (TEXT, BINARY):
                kind, parts = opcode, []
            if opcode in (TEXT, BINARY, CONT):
                parts.append(data)
                if fin:
                    yield kind, b"".join(parts)
                continue
            yield opcode, data
            if opcode == CLOSE:
                return


Handler = Callable[[Peer], None]


class RawServer:
    """Accepts connections on 127.0.0.1 and runs ``handler(peer)`` for each, in a thread.

    ``status`` answers the upgrade with that HTTP status instead of 101;
    ``subprotocol=None`` leaves the Sec-WebSocket-Protocol header out;
    ``handshake=False`` reads the request and never answers it; ``extra_headers`` (each
    ending in CRLF) go into the answer, 101 or not. ``routes`` maps a path to a JSON body
    served to a plain GET (no Upgrade) on the same port, e.g. a Session resource; every
    request's headers are kept in :attr:`requests` as ``(path, headers)``.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        status: int = 101,
        subprotocol: str | None = "jmap",
        handshake: bool = True,
        extra_headers: str = "",
        routes: dict[str, Any] | None = None,
    ) -> None:
        self.handler = handler
        self.routes = dict(routes or {})
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.status = status
        self.subprotocol = subprotocol
        self.handshake = handshake
        self.extra_headers = extra_headers
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/jmap/ws"
        self.peers: queue.Queue[Peer] = queue.Queue()
        self.errors: list[BaseException] = []
        self.closes: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, name="rawws-accept", daemon=True)

    def __enter__(self) -> RawServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self.listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)

    def next_peer(self, timeout: float = 5.0) -> Peer:
        return self.peers.get(timeout=timeout)

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._socks.append(sock)
            t = threading.Thread(target=self._handle, args=(sock,), daemon=True)
            self._threads.append(t)
            t.start()

    def _handle(self, sock: socket.socket) -> None:
        try:
            f = sock.makefile("rb")
            lines = []
            while (line := f.readline(65536)) not in (b"\r\n", b""):
                lines.append(line.decode("latin-1").rstrip("\r\n"))
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            path = lines[0].split(" ")[1] if lines and lines[0].count(" ") >= 2 else ""
            self.requests.append((path, headers))
            if path in self.routes and "upgrade" not in headers:
                body = json.dumps(self.routes[path]).encode()
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                return
            if not self.handshake:
                sock.recv(1)  # hold the connection until the client gives up
                return
            if self.status != 101:
                body = b"no"
                sock.sendall(
                    f"HTTP/1.1 {self.status} Nope\r\nContent-Length: {len(body)}\r\n"
                    f"{self.extra_headers}Connection: close\r\n\r\n".encode()
                    + body
                )
                return
            accept = base64.b64encode(
                hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest()
            ).decode()
            proto = f"Sec-WebSocket-Protocol: {self.subprotocol}\r\n" if self.subprotocol else ""
            sock.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{proto}"
                    f"{self.extra_headers}\r\n"
                ).encode()
            )
            peer = Peer(sock, f, headers)
            self.peers.put(peer)
            self.handler(peer)
        except (OSError, EOFError):
            pass  # the client went away; the test asserts on what it saw
        except BaseException as exc:
            self.errors.append(exc)


# -- handlers --------------------------------------------------------------------------


def idle(peer: Peer) -> None:
    """Read and discard until the client leaves; answer a Close."""
    for opcode, data in peer.messages():
        if opcode == CLOSE:
            peer.send_frame(CLOSE, data[:2])
            return


def echo_requests(peer: Peer) -> None:
    """Answer every Request with a Response echoing its calls and id."""
    for opcode, data in peer.messages():
        if opcode == CLOSE:
            peer.send_frame(CLOSE, data[:2])
            return
        msg = json.loads(data)
        if msg.get("@type") != "Request":
            continue
        answer: dict[str, Any] = {
            "@type": "Response",
            "methodResponses": msg["methodCalls"],
            "sessionState": "s1",
        }
        if "id" in msg:
            answer["requestId"] = msg["id"]
        peer.send_json(answer)
