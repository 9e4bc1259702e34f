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

import collections
import logging
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from ._calls import Calls
from ._deflate import MIN_SIZE, Deflater, Inflater, Params
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
from .frames import RequestError, Response, StateChange, UnknownFrame

__all__ = ["BURST_WINDOW", "FORKED", "MAX_CONSECUTIVE_NON_TEXT", "Connection"]

log = logging.getLogger(__name__)

#: More data-less messages in a row than this, within :data:`BURST_WINDOW` seconds,
#: raise :class:`StarvationError` (Pongs that answer our own Pings never count).
MAX_CONSECUTIVE_NON_TEXT: Final = 64
#: The span, in seconds, within which those messages make a burst.
BURST_WINDOW: Final = 1.0
#: A bounded send writes at most this much per system call, checking its deadline between.
_SEND_CHUNK: Final = 256 * 1024
#: A send without a deadline counts its progress in chunks of this size (a blocking send
#: returns only once its whole chunk is queued: 64 KiB every 20 s is 3.2 KB/s).
_PROGRESS_CHUNK: Final = 64 * 1024
#: Our Pings whose Pongs are still awaited, at most (older ones are forgotten).
_PINGS_REMEMBERED: Final = 32

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

#: What a forked child is told when it uses a connection of its parent's.
FORKED: Final = (
    "this session was opened by the parent process; after os.fork() the child must open"
    " its own (the socket is shared, and answers would go to either process)"
)

_LIVE: weakref.WeakSet[Connection] = weakref.WeakSet()
# A child's copies of the parent's sockets and buffered readers are kept from garbage
# collection: closing a buffered reader takes the lock that the parent's reader thread
# held at the fork (it is always in a read), and the child would hang on it.
_ORPHANED: list[object] = []


def _after_fork_in_child() -> None:
    """os.register_at_fork: every connection of the parent is the parent's, not ours."""
    for conn in list(_LIVE):
        conn._forked = True
        _ORPHANED.append((conn._sock, conn._rfile))


os.register_at_fork(after_in_child=_after_fork_in_child)


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
        close_timeout: float | None,
        on_end: OnEnd,
        deflate: Params | None = None,
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
        #: What permessage-deflate the server agreed to, or None (RFC 7692).
        self.deflate = deflate
        self._deflater = Deflater(deflate) if deflate is not None else None
        self._frames = FrameReader(
            self._read_exact,
            max_message_size=max_message_size,
            inflater=Inflater(deflate) if deflate is not None else None,
        )
        #: The code and reason of the Close frame the server sent, once it sent one.
        self.close_code: int | None = None
        self.close_reason = ""
        #: ``time.monotonic()`` of the last frame of any kind from the server.
        self.last_activity = time.monotonic()
        #: The pushState of the last StateChange received (handed out or not).
        self.received_push_state: str | None = None
        self._send_lock = threading.Lock()
        #: Writes and chunks of writes completed: it moves while a long send progresses.
        self.sent = 0
        self._send_timeout = 0.0  # SO_SNDTIMEO now set, in seconds; 0 means none
        self._closing = False
        #: Set when a send broke the framing (interrupted half-way): why the stream ends.
        self._fault: TransportError | None = None
        self._pings: collections.deque[bytes] = collections.deque(maxlen=_PINGS_REMEMBERED)
        self._pings_lock = threading.Lock()
        self._forked = False
        _LIVE.add(self)
        #: Why the stream ended, once it has: (error or None, local).
        self.ended: tuple[BaseException | None, bool] | None = None
        self._reader = threading.Thread(
            target=self._run, name=f"jmapws-reader-{number}", daemon=True
        )
        self._reader.start()

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once the stream has ended, a send broke it, close() was called, or this
        is a forked child's copy."""
        return self.ended is not None or self._closing or self._fault is not None or self._forked

    def check_forked(self) -> None:
        """:class:`SessionClosed` in a process forked from the one that opened this."""
        if self._forked:
            raise SessionClosed(FORKED)

    def check_open(self) -> None:
        """Raise :class:`SessionClosed` (with the cause) once the session is finished."""
        if self._forked:
            raise SessionClosed(FORKED)
        ended = self.ended
        if ended is not None:
            raise SessionClosed(cause=ended[0])
        if self._fault is not None:
            raise SessionClosed(cause=self._fault)
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

    def ping(self, payload: bytes, *, wait: bool = True) -> bool:
        """Send a Ping; its Pong will not count toward starvation.

        With ``wait=False`` nothing is sent, and False returned, while another send holds
        the socket (the keepalive must not queue behind a send the peer does not read).
        """
        if not self._send_lock.acquire(blocking=wait):
            return False
        try:
            self.check_open()
            with self._pings_lock:
                self._pings.append(payload)
            self._write(Opcode.PING, payload)
        finally:
            self._send_lock.release()
        return True

    def _answers_our_ping(self, payload: bytes) -> bool:
        """The reader: a Pong with this payload answers one of our Pings (and older ones:
        RFC 6455 §5.5.3 lets a peer answer only the latest)."""
        with self._pings_lock:
            pings = self._pings
            if payload not in pings:
                return False
            while pings.popleft() != payload:
                pass
            return True

    def _write(self, opcode: Opcode, payload: bytes, deadline: float | None = None) -> None:
        """Under the send lock: frame (masked, RFC 6455 §5.3) and send one message.

        The frame goes straight to the socket: websocket-client's send would wait for
        writability without a bound (and costs 2-3x more). With a ``deadline`` the frame
        is written in chunks, each bounded by SO_SNDTIMEO to the time left, so the whole
        send ends by the deadline. A send that fails, times out or is interrupted
        (KeyboardInterrupt) half-way leaves a partial frame behind: the connection is
        dropped, so that nothing later is taken as the rest of that frame.
        """
        deflater = self._deflater
        if deflater is not None and opcode <= Opcode.BINARY and len(payload) >= MIN_SIZE:
            frame = encode_frame(opcode, deflater.compress(payload), compressed=True)
        else:
            frame = encode_frame(opcode, payload)
        try:
            if deadline is None:
                self._set_send_timeout(0.0)
                self._send_all(frame)
            else:
                self._send_by(frame, deadline)
        except OSError as exc:
            if isinstance(exc, BlockingIOError | TimeoutError):
                fault = TransportError(
                    f"sending to {self.url} did not finish in time (the server is not"
                    " reading); connection dropped"
                )
            else:
                fault = TransportError(f"sending to {self.url} failed: {exc}")
            fault.__cause__ = exc
            self._break(fault)
            raise fault from exc
        except BaseException:
            self._break(
                TransportError(f"a send to {self.url} was interrupted half-way; connection dropped")
            )
            raise

    def _send_all(self, frame: bytes) -> None:
        """Write ``frame`` with no deadline; a large one in chunks, counting each in
        :attr:`sent`, so that a keepalive kept out by this send can tell a peer that reads
        slowly from one that stopped reading."""
        sock = self._sock
        size = len(frame)
        if size <= _PROGRESS_CHUNK:
            sock.sendall(frame)
        else:
            view = memoryview(frame)
            for start in range(0, size, _PROGRESS_CHUNK):
                sock.sendall(view[start : start + _PROGRESS_CHUNK])
                self.sent += 1
        self.sent += 1

    def _break(self, fault: TransportError) -> None:
        """A send failed half-way: the stream is finished, and ends with ``fault``."""
        if self._fault is None:
            self._fault = fault
        self.abort()

    def _send_by(self, frame: bytes, deadline: float) -> None:
        """Write ``frame`` by ``deadline``: SO_SNDTIMEO never exceeds the time left.

        The timeout is set in steps (the time left rounded down to a tenth of a second),
        so that calls with similar deadlines need no system call to change it; a send that
        times out early, with time left, had written nothing and is simply tried again.
        """
        sock = self._sock
        sent, size = 0, len(frame)
        view: memoryview | None = None
        while sent < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not 0 < self._send_timeout <= left:
                self._set_send_timeout(int(left * 10) / 10 if left >= 0.2 else left)
            try:
                if sent == 0 and size <= _SEND_CHUNK:
                    sent = sock.send(frame)
                else:
                    if view is None:
                        view = memoryview(frame)
                    sent += sock.send(view[sent : sent + _SEND_CHUNK])
                    self.sent += 1
            except BlockingIOError:
                if deadline - time.monotonic() <= 0:
                    raise
                self._send_timeout = -1.0  # set it again from the time left

    def _set_send_timeout(self, seconds: float) -> None:
        if seconds != self._send_timeout:
            whole = int(seconds)
            micro = 0 if seconds == 0 else max(int((seconds - whole) * 1e6), 1)
            self._sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, micro)
            )
            self._send_timeout = seconds

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

    def close(self, body: bytes, wait: float | None) -> None:
        """Send a Close with ``body`` (see :func:`close_payload`), wait up to ``wait``
        seconds (None: no limit) for the server's, then drop the connection.

        In a process forked from the one that opened the connection, only mark it closed:
        the socket, and the locks the parent's threads may have held at the fork, are the
        parent's.
        """
        if self._forked:
            self._closing = True
            return
        if not self._send_lock.acquire(timeout=-1 if wait is None else wait):
            # A send is stuck (the server stopped reading): drop the connection to free it.
            self._closing = True
            self.abort()
            self._send_lock.acquire()
        try:
            first = not self._closing
            self._closing = True
            if first and self.ended is None:
                # Even close(timeout=0) tries to get its Close out: a frame this small only
                # waits when the server stopped reading, and then 50 ms is all it gets.
                deadline = None if wait is None else time.monotonic() + max(wait, 0.05)
                try:
                    self._write(Opcode.CLOSE, body, deadline)
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
            error = self._fault or error
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
        take_text = self._take_text
        put = self.inbox.put
        # When each data-less message of the current run arrived (starvation is a burst).
        idle: collections.deque[float] = collections.deque(maxlen=MAX_CONSECUTIVE_NON_TEXT + 1)
        while True:
            opcode, data = read()
            now = self.last_activity = time.monotonic()
            if opcode is _TEXT:
                idle.clear()
                take_text(data)  # type: ignore[arg-type]
                # Unbound before the next read() blocks: an idle session must not keep its
                # last message alive (a 16 MiB answer would stay resident until the next).
                del data
                continue
            if opcode is _CONT and data:
                idle.clear()  # a fragment with data is progress (bounded by the size limit)
                continue
            if opcode is _BINARY:  # RFC 8887 §4.3: JMAP messages are text
                idle.clear()
                put(ProtocolViolation(f"binary message of {len(data)} bytes (RFC 8887 §4.3)"))
                continue
            if opcode is Opcode.CLOSE:
                return self._on_close(data)  # type: ignore[arg-type]
            if opcode is _PING:
                self._pong(data)  # type: ignore[arg-type]
            elif opcode is _PONG and self._answers_our_ping(data):  # type: ignore[arg-type]
                continue  # our keepalive's answer: never starvation
            idle.append(now)
            if len(idle) > MAX_CONSECUTIVE_NON_TEXT and now - idle[0] <= BURST_WINDOW:
                idle.clear()
                put(
                    StarvationError(
                        f"more than {MAX_CONSECUTIVE_NON_TEXT} messages without data within"
                        f" {BURST_WINDOW:g} s"
                    )
                )

    def _take_text(self, text: str) -> None:
        """Decode one text message and hand it on: to its ``call()``, or to the inbox."""
        try:
            frame = decode(text)
        except ParseError as exc:
            self.inbox.put(exc)
            return
        kind = type(frame)
        if kind is StateChange:
            if frame.push_state is not None:  # type: ignore[union-attr]
                self.received_push_state = frame.push_state  # type: ignore[union-attr]
        elif kind is Response or kind is RequestError:
            request_id = frame.request_id  # type: ignore[union-attr]
            calls = self.calls
            if calls.owns(request_id):
                calls.resolve(request_id, frame)  # type: ignore[arg-type]
                return
        elif kind is UnknownFrame and self._misfit_answer(frame):  # type: ignore[arg-type]
            return
        self.inbox.put(frame)  # type: ignore[arg-type]

    def _misfit_answer(self, frame: UnknownFrame) -> bool:
        """An answer to one of our calls that does not fit its type: tell the caller now."""
        request_id = frame.raw.get("requestId")
        if frame.type_name not in ("Response", "RequestError") or not self.calls.owns(request_id):
            return False
        self.calls.resolve(
            request_id,  # type: ignore[arg-type]
            ParseError(
                f"the {frame.type_name} answering request {request_id} is malformed:"
                f" {frame.problem or 'it does not fit its type'}"
            ),
        )
        return True

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
