"""Loopback HTTP(S) servers and an HTTP proxy for the discovery tests, on 127.0.0.1 port 0.

* :class:`HttpServer` answers GETs from a table of routes and records every request it saw;
  with an ``ssl.SSLContext`` it speaks HTTPS (the TLS handshake runs in the connection's
  thread, so a client that fails it never blocks the others).
* :class:`ConnectProxy` is a small HTTP proxy: CONNECT tunnels and absolute-form GETs, both
  counted, optionally requiring Proxy-Authorization.
* :class:`SilentServer` accepts TCP connections (the kernel does, from the backlog) and never
  answers; :class:`TrickleServer` answers one byte at a time, forever.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import attrs

log = logging.getLogger(__name__)

IO_TIMEOUT = 10.0  # every blocking socket call in these helpers gives up after this


@attrs.frozen
class Seen:
    """One request as a server received it; header names lower-cased."""

    method: str
    target: str
    headers: dict[str, str]


@attrs.frozen
class Reply:
    """What a route answers."""

    status: int = 200
    headers: dict[str, str] = attrs.Factory(dict)
    body: bytes = b""


Route = Callable[[Seen], Reply] | Reply


def json_reply(obj: Any, status: int = 200) -> Reply:
    """A JSON answer."""
    return Reply(status, {"Content-Type": "application/json"}, json.dumps(obj).encode())


def redirect(location: str, status: int = 302) -> Reply:
    """A redirect to ``location``."""
    return Reply(status, {"Location": location})


def session_body(**overrides: Any) -> dict[str, Any]:
    """A valid Session resource (RFC 8620 §2 example, trimmed); ``overrides`` replace members."""
    body: dict[str, Any] = {
        "capabilities": {
            "urn:ietf:params:jmap:core": {
                "maxSizeUpload": 50000000,
                "maxConcurrentUpload": 8,
                "maxSizeRequest": 10000000,
                "maxConcurrentRequests": 8,
                "maxCallsInRequest": 32,
                "maxObjectsInGet": 256,
                "maxObjectsInSet": 128,
                "collationAlgorithms": ["i;ascii-numeric", "i;ascii-casemap"],
            },
            "urn:ietf:params:jmap:mail": {},
            "urn:ietf:params:jmap:websocket": {"url": "/jmap/ws", "supportsPush": True},
            "https://example.com/apis/foobar": {"maxFoosFinangled": 42},
        },
        "accounts": {
            "A13824": {
                "name": "john@example.com",
                "isPersonal": True,
                "isReadOnly": False,
                "accountCapabilities": {"urn:ietf:params:jmap:mail": {"maxMailboxDepth": 10}},
            },
            "A97813": {
                "name": "jane@example.com",
                "isPersonal": False,
                "isReadOnly": True,
                "accountCapabilities": {},
            },
        },
        "primaryAccounts": {"urn:ietf:params:jmap:mail": "A13824"},
        "username": "john@example.com",
        "apiUrl": "/jmap/api/",
        "downloadUrl": "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
        "uploadUrl": "/jmap/upload/{accountId}/",
        "eventSourceUrl": "/jmap/eventsource/?types={types}&closeafter={closeafter}",
        "state": "75128aab4b1b",
    }
    body.update(overrides)
    return body


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = IO_TIMEOUT

    def setup(self) -> None:
        if self.server.tls is not None:
            self.request.settimeout(IO_TIMEOUT)
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.server.tls is not None:
                self.request.close()  # the server closes only the plain socket it accepted

    def do_GET(self) -> None:
        seen = Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
        self.server.owner.requests.append(seen)
        route = self.server.owner.routes.get(urlsplit(self.path).path, Reply(404))
        reply = route if isinstance(route, Reply) else route(seen)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("test server: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: HttpServer, tls: ssl.SSLContext | None) -> None:
        self.owner = owner
        self.tls = tls
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that rejects our certificate ends its handshake: expected in TLS tests.
        log.debug("test server: error with %s", client_address, exc_info=True)


class HttpServer:
    """A threaded HTTP(S) server on 127.0.0.1; ``routes`` maps a path to a :data:`Route`."""

    def __init__(
        self, routes: dict[str, Route] | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[Seen] = []
        self._server = _Server(self, tls)
        self.port: int = self._server.server_address[1]
        self.origin = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="test-http-server",
            daemon=True,
        )

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        return self.origin + path

    def __enter__(self) -> HttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(IO_TIMEOUT)


def _close_listener(listener: socket.socket) -> None:
    """Close a listening socket, waking a thread blocked in accept() (close alone does not)."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError as error:
        log.debug("listener already shut: %s", error)
    listener.close()


class _Listener:
    """A TCP listener on 127.0.0.1 whose accepted connections a thread handles."""

    def __init__(self, name: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._name = name
        self._accept = threading.Thread(target=self._serve, name=f"{name}-accept", daemon=True)

    def __enter__(self) -> _Listener:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        _close_listener(self.listener)
        for sock in list(self._socks):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as error:
                log.debug("already closed: %s", error)
            sock.close()
        self._accept.join(IO_TIMEOUT)
        for thread in self._threads:
            thread.join(IO_TIMEOUT)

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed: the test is over
            sock.settimeout(IO_TIMEOUT)
            self._socks.append(sock)
            thread = threading.Thread(
                target=self._guarded, args=(sock,), name=f"{self._name}-conn", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _guarded(self, sock: socket.socket) -> None:
        try:
            self.handle(sock)
        except OSError as error:
            log.debug("%s: connection ended: %s", self._name, error)
        finally:
            sock.close()

    def handle(self, sock: socket.socket) -> None:
        raise NotImplementedError


def _read_head(sock: socket.socket) -> tuple[str, dict[str, str], list[str]]:
    """Read an HTTP request head byte by byte (so nothing after it is consumed)."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionResetError("end of stream in the request head")
        data += byte
    lines = data.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, lines[1:]


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes or nothing moves for IO_TIMEOUT.

    The listener's stop() may close either socket meanwhile (its descriptor is then -1,
    which select() refuses): that ends the relay too."""
    while True:
        if a.fileno() < 0 or b.fileno() < 0:
            return
        try:
            readable, _, _ = select.select([a, b], [], [], IO_TIMEOUT)
        except (OSError, ValueError):
            return
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


class ConnectProxy(_Listener):
    """An HTTP proxy: CONNECT tunnels (``tunnels``) and absolute-form GETs (``forwarded``).

    ``proxy_authorization`` lists the Proxy-Authorization header of every request (None when
    absent); with ``required_authorization`` set, other requests get 407.
    """

    def __init__(self, *, required_authorization: str | None = None) -> None:
        super().__init__("test-proxy")
        self.url = f"http://127.0.0.1:{self.port}"
        self.required_authorization = required_authorization
        self.tunnels: list[str] = []
        self.forwarded: list[str] = []
        self.proxy_authorization: list[str | None] = []

    def __enter__(self) -> ConnectProxy:
        super().__enter__()
        return self

    def handle(self, sock: socket.socket) -> None:
        request_line, headers, raw_lines = _read_head(sock)
        method, target, version = request_line.split(" ", 2)
        given = headers.get("proxy-authorization")
        self.proxy_authorization.append(given)
        if self.required_authorization is not None and given != self.required_authorization:
            sock.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=IO_TIMEOUT) as upstream:
                self.tunnels.append(target)
                sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _relay(sock, upstream)
            return
        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = [
            line
            for line in raw_lines
            if line.partition(":")[0].strip().lower()
            not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        head = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
        address = (parts.hostname or "", parts.port or 80)
        with socket.create_connection(address, timeout=IO_TIMEOUT) as upstream:
            self.forwarded.append(target)
            upstream.sendall(head.encode("latin-1"))
            _relay(sock, upstream)


class SilentServer:
    """A listening socket that never accepts: connects succeed, nothing is ever answered."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port: int = self.listener.getsockname()[1]

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        _close_listener(self.listener)


class TrickleServer(_Listener):
    """Reads a request, then sends a never-ending response head one byte every 50 ms."""

    def __init__(self) -> None:
        super().__init__("test-trickle")

    def __enter__(self) -> TrickleServer:
        super().__enter__()
        return self

    def handle(self, sock: socket.socket) -> None:
        _read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        # Pacing, not synchronisation: each byte comes well within the client's socket
        # timeout, so only a deadline on the whole fetch can stop the client.
        while not self.stopping.wait(0.05):
            sock.sendall(b"a")
