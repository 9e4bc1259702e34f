"""Helpers for the fault, fuzz, load and security tests: servers that misbehave, and counters.

* :func:`scripted_session` opens a :class:`~jmapws_sync.WsSession` to a :class:`RawServer`
  whose peer the test drives (and reads) by hand, and checks on the way out that the
  session's reader thread is gone.
* :func:`barrier` makes the client's reader prove, with a Ping/Pong round trip, that it has
  read every frame sent before: faults injected after it cannot race those frames.
* :class:`TlsRawServer` is a :class:`RawServer` speaking TLS (``wss://``).
* :class:`TrickleHandshakeServer` answers the upgrade one header byte at a time, forever;
  :class:`PartialHandshakeServer` sends part of the answer, then nothing.
* :func:`open_fds` and :func:`live_threads` count what the process holds, for leak checks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import jmapws_sync as jws

from .rawws import PING, PONG, Handler, Peer, RawServer
from .threads import wait_no_readers

IO_TIMEOUT = 5.0  # every blocking socket call made by a test peer gives up after this


def open_fds() -> int:
    """How many file descriptors this process holds (counted from /proc, not assumed)."""
    return len(os.listdir("/proc/self/fd"))


def live_threads() -> set[threading.Thread]:
    """The threads alive now."""
    return set(threading.enumerate())


def reader_threads() -> list[threading.Thread]:
    """The WsSession reader threads alive now."""
    return [t for t in threading.enumerate() if t.name.startswith("jmapws-reader")]


@contextlib.contextmanager
def scripted_session(**options: Any) -> Iterator[tuple[RawServer, jws.WsSession, Peer]]:
    """A session to a raw server whose peer the test drives and reads by hand.

    On exit the peer hangs up first (nobody reads our Close), the session is closed, and
    its reader thread must be gone.
    """
    release = threading.Event()
    with RawServer(lambda peer: release.wait(30)) as server:
        options.setdefault("timeout", IO_TIMEOUT)
        options.setdefault("close_timeout", 0.5)
        ws = jws.WsSession.open(server.url, **options)
        peer = server.next_peer()
        peer.sock.settimeout(IO_TIMEOUT)
        try:
            yield server, ws, peer
        finally:
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
            ws.close()
            release.set()
            wait_no_readers()


def barrier(peer: Peer, token: bytes = b"barrier") -> list[tuple[int, bytes]]:
    """Ping the client and read until its Pong: the reader has read all that came before.

    Returns the other frames the client sent meanwhile, as (opcode, payload).
    """
    peer.send_frame(PING, token)
    seen: list[tuple[int, bytes]] = []
    while True:
        opcode, _fin, data = peer.recv_frame()
        if opcode == PONG and data == token:
            return seen
        seen.append((opcode, data))


def hang_up(peer: Peer) -> None:
    """Close the peer's connection cleanly at the TCP level (FIN), no WebSocket Close."""
    with contextlib.suppress(OSError):
        peer.sock.shutdown(socket.SHUT_WR)


class TlsRawServer(RawServer):
    """A :class:`RawServer` that wraps each connection in TLS with ``context`` (wss://).

    A client that rejects the certificate makes the TLS handshake fail in the server's
    connection thread; the failure is recorded in ``tls_failures``, not raised.
    """

    def __init__(self, handler: Handler, context: ssl.SSLContext, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self.context = context
        self.url = self.url.replace("ws://", "wss://")
        self.tls_failures: list[BaseException] = []

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(IO_TIMEOUT)
        try:
            tls = self.context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.tls_failures.append(exc)
            return
        tls.settimeout(None)
        self._socks.append(tls)
        super()._handle(tls)


def _skip_request_head(f: Any) -> None:
    """Read an HTTP request's head (up to the empty line) and ignore it."""
    while f.readline(65536) not in (b"\r\n", b""):
        pass


class PartialHandshakeServer(RawServer):
    """Reads the upgrade request and answers ``answer`` (part of a 101 response), then nothing."""

    def __init__(self, answer: bytes) -> None:
        super().__init__(lambda peer: None)
        self.answer = answer
        self.done = threading.Event()

    def stop(self) -> None:
        self.done.set()
        super().stop()

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(IO_TIMEOUT)
        try:
            with sock.makefile("rb") as f:
                _skip_request_head(f)
                sock.sendall(self.answer)
                self.done.wait(30)  # hold the connection open until the test is over
        except OSError:
            return


class TrickleHandshakeServer(RawServer):
    """Answers the upgrade with a 101 status line, then a header one byte every 50 ms, forever.

    Every read the client makes succeeds well within any socket timeout: only a deadline
    on the whole handshake can stop it.
    """

    def __init__(self) -> None:
        super().__init__(lambda peer: None)
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(IO_TIMEOUT)
        try:
            with sock.makefile("rb") as f:
                _skip_request_head(f)
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: ")
            # Pacing, not synchronisation: a delay inside the server is the fault itself.
            while not self.stopping.wait(0.05):
                sock.sendall(b"a")
        except OSError:
            return
