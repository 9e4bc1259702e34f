"""A scripted event-stream server on 127.0.0.1 for the EventSource tests.

Each accepted connection reads one HTTP request and hands it to ``handler(stream)``,
which writes what it wants (status line, headers, events, silence, a reset) with the
:class:`Stream` methods; the requests are recorded in order. Every socket has a timeout,
and stop() closes every connection, so no test can hang on it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SseServer", "Stream"]

IO_TIMEOUT = 30.0


class Stream:
    """One connection of the server, from the request on."""

    def __init__(self, sock: socket.socket, request: str, headers: dict[str, str]) -> None:
        self.sock = sock
        self.request = request
        self.headers = headers  # lower-cased names

    def start(self, status: int = 200, content_type: str = "text/event-stream") -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        head += "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        self.sock.sendall(head.encode())

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def event(self, kind: str, data: Any, *, id: str | None = None) -> None:  # noqa: A002
        text = data if isinstance(data, str) else json.dumps(data)
        lines = f"event: {kind}\n" + (f"id: {id}\n" if id is not None else "")
        lines += "".join(f"data: {line}\n" for line in text.split("\n")) + "\n"
        self.send(lines.encode())

    def state(self, changed: dict[str, dict[str, str]], push_state: str, **kw: Any) -> None:
        body = {"@type": "StateChange", "changed": changed, "pushState": push_state}
        self.event("state", body, **kw)

    def hold(self) -> None:
        """Send nothing more until the client goes away (or the server stops)."""
        try:
            while self.sock.recv(1024):
                pass
        except OSError:
            pass

    def reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class SseServer:
    """``handler(stream)`` runs for each connection, in its own thread."""

    def __init__(self, handler: Callable[[Stream], None]) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[Stream] = []
        self.arrived = threading.Condition()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        """An eventSourceUrl template, as RFC 8620 §7.3 writes one."""
        return (
            f"http://127.0.0.1:{self.port}/events?types={{types}}"
            "&closeafter={closeafter}&ping={ping}"
        )

    def __enter__(self) -> SseServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):  # wakes the accept() (close alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)

    def wait_requests(self, n: int, timeout: float = IO_TIMEOUT) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= n, timeout)

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(IO_TIMEOUT)
            self._socks.append(sock)
            thread = threading.Thread(target=self._handle, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, sock: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            stream = Stream(sock, lines[0], headers)
            with self.arrived:
                self.requests.append(stream)
                self.arrived.notify_all()
            self.handler(stream)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()
