"""A byte-counting TCP relay on loopback: what went over the wire, each way.

The compression workload points a session at the relay's port instead of the server's;
the relay copies bytes both ways and counts them (TCP payload: WebSocket frame headers
included, TCP/IP headers not). One relay serves one connection at a time.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Listens on 127.0.0.1; each accepted connection is relayed to ``(host, port)``."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        #: Bytes client -> server and server -> client, over every connection so far.
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._accepting.start()

    def counts(self) -> tuple[int, int]:
        """``(up, down)`` so far."""
        with self._lock:
            return self.up, self.down

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._upstream, timeout=60)
            server.settimeout(None)
            self._sockets += (client, server)
            for src, dst, up in ((client, server, True), (server, client, False)):
                thread = threading.Thread(
                    target=self._pump, args=(src, dst, up), name="relay-pump", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(262_144):
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting and wait for the relayed connections to end."""
        self._listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            sock.close()
