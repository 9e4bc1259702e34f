"""One WebSocket connection after its handshake: the reader thread, the send lock, the end.

:class:`Connection` owns the socket. Its reader thread (a named daemon) is the only one
that reads: it pulls frames through :class:`~jmapws_sync._framing.FrameReader`, decodes
text with :mod:`jmapws_sync.codec`, hands answers to waiting calls (:mod:`._calls`) and
everything else to the :class:`~jmapws_sync._inbox.Inbox`, answers Pings and the server's
Close. Any thread may send; every frame, the reader's Pongs and Closes included, is
written whole under one lock, with a bound on how long a send may make no progress.

The reader thread refers to the Connection only, never to the public session object, so
that a session nobody holds any more can be collected.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ._calls import Calls
from ._framing import CloseCode, FrameReader, Opcode, close_payload, encode_frame, parse_close
from ._inbox import Inbox
from .codec import decode
from .errors import (
    AuthenticationError,
    ConnectionClosedError,
    MessageTooLarge,
    ParseError,
    ProtocolViolation,
    SessionClosed,
    StarvationError,
    TransportError,
    WebSocketProtocolError,
)
from .frames import RequestError, Response, StateChange

__all__ = ["MAX_CONSECUTIVE_NON_TEXT", "Connection"]

log = logging.getLogger(__name__)

#: More consecutive data-less messages than this raise :class:`StarvationError`.
MAX_CONSECUTIVE_NON_TEXT: Final = 64

#: Close codes that end the stream cleanly (1005: the server's Close had no code).
_CLEAN_CLOSES: Final = frozenset({CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS})
#: Codes that may not be sent back (RFC 6455 §7.4.1): echoed as 1000.
_UNSENDABLE: Final = frozenset({CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_HANDSHAKE})
_TEXT, _CONT, _PING, _PONG, _BINARY = (
    Opcode.TEXT,
    Opcode.CONT,
    Opcode.PING,
    Opcode.PONG,
    Opcode.BINARY,
)

#: ``on_end(error, local)``: the stream ended; ``error`` None is a clean end.
OnEnd = Callable[[BaseException | None, bool], object]


class Connection:
    """An open WebSocket (websocket-client's object ``ws``, after the handshake).

    ``url`` is the safe URL, for messages; ``on_end`` is called once, by the reader
    thread, as its last act.
    """

    def __init__(
        self,
        ws: Any,
        *,
        url: str,
        number: int,
        inbox: Inbox,
        calls: Calls,
        max_message_size: int,
        close_timeout: float,
        on_end: OnEnd,
    ) -> None:
        if ws.sock is None:
            raise ValueError("the WebSocket is not connected")
        self._ws = ws
        self._sock: socket.socket = ws.sock
        self._sock.settimeout(None)  # the reader blocks in recv; close() unblocks it
        self._rfile = self._sock.makefile("rb", buffering=65536)
        self.url = url
        self.inbox = inbox
        self.calls = calls
        self.close_timeout = close_timeout
        self._on_end = on_end
        self._frames = FrameReader(self._read_exact, max_message_size=max_message_size)
        #: The code and reason of the Close frame the server sent, once it sent one.
        self.close_code: int | None = None
        self.close_reason = ""
        #: ``time.monotonic()`` of the last frame of any kind from the server.
        self.last_activity = time.monotonic()
        #: The pushState of the last StateChange received (handed out or not).
        self.received_push_state: str | None = None
        self._send_lock = threading.Lock()
        self._send_timeout = 0  # SO_SNDTIMEO now set, whole seconds; 0 means none
        self._closing = False
        #: Why the stream ended, once it has: (error or None, local).
        self.ended: tuple[BaseException | None, bool] | None = None
        self._reader = threading.Thread(
            target=self._run, name=f"jmapws-reader-{number}", daemon=True
        )
        self._reader.start()

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once the stream has ended or close() was called."""
        return self.ended is not None or self._closing

    def check_open(self) -> None:
        """Raise :class:`SessionClosed` (with the cause) once the session is finished."""
        ended = self.ended
        if ended is not None:
            raise SessionClosed(cause=ended[0])
        if self._closing:
            raise SessionClosed()

    # ------------------------------------------------------------------ sending

    def send(self, opcode: Opcode, payload: bytes, deadline: float | None = None) -> None:
        """Send one message from any thread; :class:`SessionClosed` once finished."""
        with self._send_lock:
            self.check_open()
            self._write(opcode, payload, deadline)

    def send_within(self, opcode: Opcode, payload: bytes, deadline: float | None) -> None:
        """:meth:`send`, waiting for the send lock until ``deadline`` at most."""
        wait = -1 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._send_lock.acquire(timeout=wait):
            raise TimeoutError("another thread's send did not finish in time")
        try:
            self.check_open()
            self._write(opcode, payload, deadline)
        finally:
            self._send_lock.release()

    def _write(self, opcode: Opcode, payload: bytes, deadline: float | None = None) -> None:
        """Under the send lock: frame (masked, RFC 6455 §5.3) and send one message.

        The frame goes straight to the socket: websocket-client's send would wait for
        writability without a bound (and costs 2-3x more). SO_SNDTIMEO makes a send that
        makes no progress before ``deadline`` fail; a send that fails half-way leaves a
        partial frame behind, so the connection is dropped.
        """
        frame = encode_frame(opcode, payload)
        seconds = 0 if deadline is None else max(1, math.ceil(deadline - time.monotonic()))
        try:
            if seconds != self._send_timeout:
                self._sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0)
                )
                self._send_timeout = seconds
            self._sock.sendall(frame)
        except OSError as exc:
            self.abort()
            if isinstance(exc, BlockingIOError | TimeoutError):
                raise TransportError(
                    f"sending to {self.url} made no progress for {seconds} s; connection dropped"
                ) from exc
            raise TransportError(f"sending to {self.url} failed: {exc}") from exc

    def _send_close(self, code: int, reason: str = "") -> None:
        """Best effort: a Close frame, unless close() sent one already."""
        with self._send_lock:
            if self._closing:
                return
            try:
                self._write(Opcode.CLOSE, close_payload(code, reason))
            except TransportError as exc:
                log.debug("sending Close %d to %s failed: %s", code, self.url, exc)

    # ------------------------------------------------------------------ closing

    def close(self, code: int, reason: str, timeout: float | None) -> None:
        """Send Close, wait up to ``timeout`` for the server's, then drop the connection."""
        wait = max(self.close_timeout if timeout is None else timeout, 0.0)
        if not self._send_lock.acquire(timeout=wait):
            # A send is stuck (the server stopped reading): drop the connection to free it.
            self._closing = True
            self.abort()
            self._send_lock.acquire()
        try:
            first = not self._closing
            self._closing = True
            if first and self.ended is None:
                try:
                    self._write(Opcode.CLOSE, close_payload(code, reason), time.monotonic() + wait)
                except TransportError as exc:
                    log.debug("sending Close to %s failed: %s", self.url, exc)
        finally:
            self._send_lock.release()
        self.inbox.unblock()  # a reader paused on a full inbox must see the Close reply
        if threading.current_thread() is not self._reader:
            self._reader.join(wait)
            if self._reader.is_alive():
                self.abort()  # the server did not answer our Close: drop the connection
                self._reader.join()
        self._release_socket()

    def abort(self) -> None:
        """Shut the socket down so that the reader's blocking recv returns at once."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            log.debug("socket of %s already shut down", self.url)

    def _release_socket(self) -> None:
        self._rfile.close()
        self._ws.shutdown()

    # ------------------------------------------------------------------ reader thread

    def _run(self) -> None:
        error: BaseException | None
        try:
            error = self._read_until_close()
        except (WebSocketProtocolError, MessageTooLarge) as exc:  # RFC 6455 §7.1.7
            self._send_close(exc.close_code)
            error = exc
        except (EOFError, OSError) as exc:
            error = TransportError(f"connection to {self.url} lost (no Close frame)")
            if isinstance(exc, OSError):
                error = TransportError(f"connection to {self.url} broke: {exc}")
                error.__cause__ = exc
        except BaseException as exc:  # a bug must not leave callers blocked forever
            log.exception("reader thread of %s failed", self.url)
            self._end(TransportError(f"reader thread failed: {exc!r}"))
            raise
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        """Record why the stream ended, wake every waiting call, tell ``on_end``."""
        local = self._closing
        if local:
            error = None
        elif error is not None:
            log.debug("session %s ended: %s", self.url, type(error).__name__)
        with self._send_lock:
            self.ended = (error, local)
            self.abort()
            self._release_socket()
        self.calls.end(error or SessionClosed("the session ended"), error)
        self._on_end(error, local)

    def _read_exact(self, n: int) -> bytes:
        data: bytes = self._rfile.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def _read_until_close(self) -> BaseException | None:
        """Read until the server's Close: return what it means (None: a clean end)."""
        read = self._frames.read
        put = self.inbox.put
        idle = 0  # consecutive messages that carried no data
        while True:
            opcode, data = read()
            self.last_activity = time.monotonic()
            if opcode is _TEXT:
                idle = 0
                try:
                    frame = decode(data)  # type: ignore[arg-type]
                except ParseError as exc:
                    put(exc)
                    continue
                kind = type(frame)
                if kind is StateChange:
                    if frame.push_state is not None:  # type: ignore[union-attr]
                        self.received_push_state = frame.push_state  # type: ignore[union-attr]
                elif kind is Response or kind is RequestError:
                    request_id = frame.request_id  # type: ignore[union-attr]
                    if self.calls.owns(request_id):
                        self.calls.resolve(request_id, frame)  # type: ignore[arg-type]
                        continue
                put(frame)  # type: ignore[arg-type]
                continue
            if opcode is _CONT and data:
                idle = 0  # a fragment with data is progress (bounded by the size limit)
                continue
            if opcode is _BINARY:  # RFC 8887 §4.3: JMAP messages are text
                idle = 0
                put(ProtocolViolation(f"binary message of {len(data)} bytes (RFC 8887 §4.3)"))
                continue
            if opcode is Opcode.CLOSE:
                return self._on_close(data)  # type: ignore[arg-type]
            if opcode is _PING:
                self._pong(data)  # type: ignore[arg-type]
            idle += 1
            if idle > MAX_CONSECUTIVE_NON_TEXT:
                idle = 0
                put(
                    StarvationError(
                        f"more than {MAX_CONSECUTIVE_NON_TEXT} consecutive messages without data"
                    )
                )

    def _pong(self, payload: bytes) -> None:
        with self._send_lock:
            if self._closing:
                return
            try:
                self._write(_PONG, payload)  # RFC 6455 §5.5.3: the same payload
            except TransportError as exc:
                log.debug("sending Pong failed: %s", exc)

    def _on_close(self, payload: bytes) -> BaseException | None:
        """The server sent Close (RFC 6455 §5.5.1): answer it; what does it mean?"""
        code, reason = parse_close(payload)
        self.close_code, self.close_reason = code, reason
        self._send_close(CloseCode.NORMAL if code in _UNSENDABLE else code)
        if code in _CLEAN_CLOSES:
            return None
        if code == CloseCode.POLICY_VIOLATION:
            return AuthenticationError(
                "the server closed the session: credentials expired (close 1008)",
                close_code=code,
            )
        return ConnectionClosedError(code, reason)
