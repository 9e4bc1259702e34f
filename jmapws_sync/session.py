"""WsSession: one JMAP-over-WebSocket connection (RFC 8887), blocking and thread-safe.

How it works: websocket-client performs the opening handshake (TLS, proxies, headers,
redirect and subprotocol rules). After that the socket is ours. One named daemon reader
thread owns its receiving side and reads RFC 6455 frames itself, so that a message's size
is checked against the length its header announces before any payload is buffered, and
UTF-8 is checked once, strictly, in C; it decodes each text message with
:mod:`jmapws_sync.codec` and hands the frame either to the ``call()`` that waits for it or
to a queue read by :meth:`WsSession.next_frame`. Every send (including the reader's Pongs
and Closes) is framed here and written under one lock, with a bound on how long a send
may make no progress.

Thread safety:

* ``send_request``, ``send_text``, ``call``, ``enable_push``, ``disable_push``, ``ping``
  and ``close`` are safe from any thread at any time.
* ``next_frame`` and ``changes`` are safe from any thread; with several consumers each
  frame goes to exactly one of them. Frames that ``changes()`` sets aside are returned by
  the next ``next_frame()`` calls first.
* The reader thread never runs user code.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import queue
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import websocket

from .auth import Auth
from .codec import decode, encode_bytes
from .errors import (
    AuthenticationError,
    ConnectionClosedError,
    HandshakeError,
    MessageTooLarge,
    ParseError,
    ProtocolViolation,
    PushUnavailable,
    RequestFailed,
    SessionClosed,
    StarvationError,
    TransportError,
    WebSocketProtocolError,
)
from .frames import (
    AllTypes,
    Frame,
    Request,
    RequestError,
    Response,
    StateChange,
    UnknownFrame,
    WebSocketPushDisable,
    WebSocketPushEnable,
)

if TYPE_CHECKING:
    from .discovery import SessionResource

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_QUEUE",
    "MAX_CONSECUTIVE_NON_TEXT",
    "WsSession",
]

log = logging.getLogger(__name__)

#: Largest message accepted by default: 16 MiB.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
#: Frames the queue holds before the reader pauses (see ``max_queue``).
DEFAULT_MAX_QUEUE: Final = 4096
#: More consecutive data-less messages than this raise :class:`StarvationError`.
MAX_CONSECUTIVE_NON_TEXT: Final = 64

# RFC 6455 §5.2 opcodes and §7.4.1 close codes.
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_CLEAN_CODES = frozenset({1000, 1001, 1005})  # 1005: the server sent no code at all
_POLICY_VIOLATION = 1008  # RFC 8887 §4.2: the credentials expired
_FRAME_TYPES = frozenset({Response, RequestError, StateChange, UnknownFrame})
_unpack_short = struct.Struct(">H").unpack
_unpack_long = struct.Struct(">Q").unpack
_pack_header_16 = struct.Struct(">BBH").pack
_pack_header_64 = struct.Struct(">BBQ").pack


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2; §5.3: a client always masks).

    websocket-client's ABNF does the same through several layers of Python (~5 us more
    per small message); here the XOR runs on two big integers, in C.
    """
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = _pack_header_16(0x80 | opcode, 0xFE, n)
    else:
        header = _pack_header_64(0x80 | opcode, 0xFF, n)
    key = os.urandom(4)
    if not n:
        return header + key
    stream = key * (n >> 2) + key[: n & 3]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
    return header + key + masked.to_bytes(n, "little")


_session_numbers = itertools.count(1)


class _End:
    """Queue marker for the end of the stream; it stays in the queue for later calls.

    ``error`` None with ``local`` False: the server closed cleanly. ``local``: close()
    was called here. ``raised``: the error was raised once already.
    """

    __slots__ = ("error", "local", "raised")

    def __init__(
        self, error: BaseException | None, *, local: bool = False, raised: bool = False
    ) -> None:
        self.error = error
        self.local = local
        self.raised = raised


class _Waiter:
    """One pending ``call()``: a pre-acquired lock the reader releases with the answer."""

    __slots__ = ("_lock", "result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.result: Response | RequestError | BaseException | None = None

    def set(self, result: Response | RequestError | BaseException) -> None:
        self.result = result
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(timeout, 0.0))


class _StreamEnded(Exception):
    """Internal: raised inside the reader to unwind with the session's final outcome."""

    def __init__(self, error: BaseException | None, *, local: bool = False) -> None:
        super().__init__()
        self.error = error
        self.local = local


def push_types(
    data_types: Sequence[str] | AllTypes | None, session: SessionResource | None
) -> tuple[str, ...] | None:
    """What ``enable_push(data_types)`` sends as ``dataTypes``: a tuple, or None for null."""
    if isinstance(data_types, AllTypes):
        return None
    if data_types is not None:
        if isinstance(data_types, str):
            raise TypeError("data_types must be a sequence of type names, not a string")
        return tuple(data_types)
    known = session.push_data_types() if session is not None else ()
    return known or None


def _safe_url(url: str) -> str:
    """The URL without user info or query, for logs, reprs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class WsSession:
    """An open JMAP WebSocket session. Create it with :meth:`open` or :func:`connect`.

    Use it as a context manager, or call :meth:`close`; the reader thread and the socket
    never outlive it.
    """

    def __init__(
        self,
        ws: websocket.WebSocket,
        *,
        url: str,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_concurrent_requests: int | None = None,
        close_timeout: float = 2.0,
        session: SessionResource | None = None,
    ) -> None:
        """Wrap an already connected websocket-client ``WebSocket``; prefer :meth:`open`."""
        if ws.sock is None:
            raise ValueError("the WebSocket is not connected")
        self._ws: Any = ws  # websocket-client is only partly typed
        self._sock: socket.socket = ws.sock
        self._sock.settimeout(None)  # the reader blocks in recv; close() unblocks it
        self._rfile = self._sock.makefile("rb", buffering=65536)
        self._url = _safe_url(url)
        self._max_message_size = max_message_size
        self._max_queue = max_queue
        self._close_timeout = close_timeout
        #: The JMAP Session resource this connection was discovered from, if any.
        self.session = session
        #: The code of the Close frame the server sent, once it sent one.
        self.close_code: int | None = None
        #: The reason of the Close frame the server sent ("" when none).
        self.close_reason = ""
        #: Answers to timed-out ``call()`` s that arrived late and were dropped.
        self.late_answers = 0
        #: ``time.monotonic()`` of the last frame of any kind from the server.
        self.last_activity = time.monotonic()

        # SimpleQueue: put/get/qsize in C; queue.Queue costs ~15x more per frame.
        self._queue: queue.SimpleQueue[Frame | BaseException | _End] = queue.SimpleQueue()
        self._held: collections.deque[Frame] = collections.deque()
        self._send_lock = threading.Lock()
        self._send_timeout = 0  # SO_SNDTIMEO now set, whole seconds; 0 means none
        self._room = threading.Condition(threading.Lock())
        self._paused = False
        self._pending: dict[str, _Waiter] = {}
        self._number = next(_session_numbers)
        self._call_prefix = f"jws{self._number}."
        self._call_ids = itertools.count(1)
        self._push_state: str | None = None
        if max_concurrent_requests is None and session is not None:
            max_concurrent_requests = session.core.max_concurrent_requests
        self._slots = (
            threading.BoundedSemaphore(max_concurrent_requests) if max_concurrent_requests else None
        )
        self._closing = False
        self._ended: _End | None = None  # set once, under _send_lock
        self._reader = threading.Thread(
            target=self._run, name=f"jmapws-reader-{self._number}", daemon=True
        )
        self._reader.start()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        url: str,
        *,
        auth: Auth | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 10.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_concurrent_requests: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        require_subprotocol: bool = True,
        close_timeout: float = 2.0,
        session: SessionResource | None = None,
    ) -> WsSession:
        """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and start the reader.

        The handshake offers the ``jmap`` subprotocol (RFC 8887 §4.2) and, unless
        ``require_subprotocol=False``, insists the server picks it. ``auth`` is called
        once for this handshake. ``timeout`` bounds the connect and handshake.

        ``max_message_size`` bounds one message (a larger one ends the session with
        :class:`MessageTooLarge`). ``max_queue`` is the number of frames held for
        :meth:`next_frame` before the reader stops reading from the socket (TCP then
        pushes back on the server; answers to ``call()`` wait too); a warning is logged
        when that happens, and nothing is dropped. 0 means no limit.

        ``max_concurrent_requests`` limits ``call()`` s in flight (defaults to the
        Session resource's ``maxConcurrentRequests`` when ``session`` is given).
        ``ssl_context`` defaults to a shared :func:`ssl.create_default_context` (verification
        on).
        ``proxy`` is ``"http://[user:pass@]host:port"``; ``None`` takes ``https_proxy`` /
        ``http_proxy`` / ``no_proxy`` from the environment, ``""`` means no proxy.

        Raises :class:`AuthenticationError` (401/403), :class:`HandshakeError` (another
        status, or a missing subprotocol), :class:`TransportError` (refused, unreachable,
        TLS failure) or :class:`TimeoutError`.
        """
        safe = _safe_url(url)
        scheme = urlsplit(url).scheme
        if scheme not in ("ws", "wss"):
            raise ValueError(f"not a WebSocket URL: {safe}")
        header = ["Sec-WebSocket-Protocol: jmap"]
        for name, value in {**(headers or {}), **(auth() if auth else {})}.items():
            header.append(f"{name}: {value}")
        options: dict[str, Any] = {
            "header": header,
            "timeout": timeout,
            "redirect_limit": 0,  # a redirect must not move credentials or downgrade
            "suppress_origin": True,
        }
        if proxy is not None:
            options.update(_proxy_options(proxy))
        if ssl_context is None and scheme == "wss":
            from .discovery import shared_default_context  # noqa: PLC0415 (import cycle)

            ssl_context = shared_default_context()
        ws: Any = websocket.WebSocket(
            sslopt={"context": ssl_context} if ssl_context is not None else None,
            enable_multithread=True,
            skip_utf8_validation=True,  # we decode strictly ourselves, in C
        )
        # websocket-client's timeout bounds each socket operation, not the handshake: a
        # server trickling its answer a byte at a time would hold us forever. A watchdog
        # shuts the socket down at the deadline (as discovery's fetch does).
        expired = threading.Event()
        watchdog = None
        if timeout is not None:
            watchdog = threading.Timer(timeout, _expire_handshake, args=(ws, expired))
            watchdog.name = "jmapws-handshake-watchdog"
            watchdog.daemon = True
            watchdog.start()
        try:
            ws.connect(url, **options)
        except (OSError, websocket.WebSocketException) as exc:
            if expired.is_set():
                raise TimeoutError(
                    f"the handshake with {safe} took longer than {timeout} s"
                ) from exc
            raise _connect_error(exc, safe) from exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if expired.is_set():  # fired just as the handshake finished: the socket is gone
            ws.shutdown()
            raise TimeoutError(f"the handshake with {safe} took longer than {timeout} s")
        chosen = (ws.getheaders() or {}).get("sec-websocket-protocol")
        if chosen is not None and chosen.strip().lower() != "jmap":
            ws.shutdown()
            raise HandshakeError(f"{safe} chose subprotocol {chosen!r}, not 'jmap'")
        if chosen is None and require_subprotocol:
            ws.shutdown()
            raise HandshakeError(
                f"{safe} did not accept the 'jmap' subprotocol (RFC 8887 §4.2);"
                " pass require_subprotocol=False to tolerate that"
            )
        log.debug("connected to %s", safe)
        return cls(
            ws,
            url=url,
            max_message_size=max_message_size,
            max_queue=max_queue,
            max_concurrent_requests=max_concurrent_requests,
            close_timeout=close_timeout,
            session=session,
        )

    # ------------------------------------------------------------------ sending

    def send_text(self, text: str) -> None:
        """Send one raw text message, for extensions (e.g. ``ChatStreamEnable``).

        Raises :class:`ValueError` for text that is not valid Unicode (lone surrogates).
        """
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text cannot be sent as UTF-8: {exc.reason}") from None
        self._send(_TEXT, data)

    def send_request(self, request: Request, id: str | int | None = None) -> None:  # noqa: A002
        """Send ``request`` as a ``Request`` frame; the server echoes ``id`` as ``requestId``.

        The answer arrives through :meth:`next_frame`. Ids starting with ``"jws"`` followed
        by digits and a dot are reserved for :meth:`call`. Raises :class:`ValueError` for a
        request that cannot be encoded.
        """
        self._send(_TEXT, encode_bytes(request, id))

    def enable_push(
        self,
        data_types: Sequence[str] | AllTypes | None = None,
        push_state: str | None = None,
    ) -> None:
        """Ask the server to push StateChange frames (RFC 8887 §4.3.5.2).

        ``data_types``: the type names to hear about; ``None`` (the default) for every
        type, sent as the explicit list of the types of the capabilities that the Session
        resource advertises (:meth:`SessionResource.push_data_types
        <jmapws_sync.SessionResource.push_data_types>`), because servers such as Cyrus
        take ``"dataTypes": null`` as "push off"; it is sent as ``null`` when no Session
        resource is known or none of its capabilities is. :data:`~jmapws_sync.ALL_TYPES`
        sends ``null`` in any case. With ``push_state`` (the :attr:`push_state` of an
        earlier connection) the server replays what changed since. Raises
        :class:`PushUnavailable` before sending anything when the Session resource says
        the server does not support push.
        """
        ws_cap = self.session.websocket if self.session is not None else None
        if ws_cap is not None and not ws_cap.supports_push:
            raise PushUnavailable("the server's Session resource says supportsPush: false")
        frame = WebSocketPushEnable(
            data_types=push_types(data_types, self.session), push_state=push_state
        )
        self._send(_TEXT, encode_bytes(frame))

    def disable_push(self) -> None:
        """Ask the server to stop pushing (RFC 8887 §4.3.5.3).

        StateChange frames already on their way still arrive.
        """
        self._send(_TEXT, encode_bytes(WebSocketPushDisable()))

    def ping(self, payload: bytes = b"") -> None:
        """Send a WebSocket Ping; the reader updates :attr:`last_activity` on the Pong."""
        self._send(_PING, payload)

    def _send(self, opcode: int, payload: bytes, deadline: float | None = None) -> None:
        with self._send_lock:
            self._check_open()
            self._write(opcode, payload, deadline)

    def _write(self, opcode: int, payload: bytes, deadline: float | None = None) -> None:
        """Under the send lock: frame (masked, RFC 6455 §5.3) and send one message.

        The frame goes straight to the socket: websocket-client's send would wait for
        writability without a bound (and costs 2-3x more). SO_SNDTIMEO makes a send that
        makes no progress before ``deadline`` fail; a send that fails half-way leaves a
        partial frame behind, so the connection is dropped.
        """
        frame = _client_frame(opcode, payload)
        seconds = 0 if deadline is None else max(1, math.ceil(deadline - time.monotonic()))
        try:
            if seconds != self._send_timeout:
                self._sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0)
                )
                self._send_timeout = seconds
            self._sock.sendall(frame)
        except OSError as exc:
            self._abort()
            if isinstance(exc, BlockingIOError | TimeoutError):
                raise TransportError(
                    f"sending to {self._url} made no progress for {seconds} s; connection dropped"
                ) from exc
            raise TransportError(f"sending to {self._url} failed: {exc}") from exc

    def _check_open(self) -> None:
        ended = self._ended
        if ended is not None:
            raise SessionClosed(cause=ended.error)
        if self._closing:
            raise SessionClosed()

    # ------------------------------------------------------------------ call()

    def call(self, request: Request, *, timeout: float | None = None) -> Response:
        """Send ``request`` and block until its :class:`Response` arrives.

        The request gets an id unique within the session, and the answer goes to this
        caller only (never to :meth:`next_frame`), whatever order the server answers in.
        Safe from any number of threads; when a concurrency limit is known
        (``maxConcurrentRequests``), extra callers wait for a free slot within the same
        ``timeout``.

        Raises :class:`RequestFailed` when the server answers with a RequestError,
        :class:`TimeoutError` when no answer came in time (a late answer is then dropped
        and counted in :attr:`late_answers`), and the error that ended the connection
        (or :class:`SessionClosed`) when the session ends while waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        slots = self._slots
        if slots is not None:
            wait = _remaining(deadline)
            if not slots.acquire(timeout=None if wait is None else max(wait, 0.0)):
                raise TimeoutError("no free request slot (maxConcurrentRequests) in time")
        try:
            request_id = f"{self._call_prefix}{next(self._call_ids)}"
            data = encode_bytes(request, request_id)
            waiter = _Waiter()
            wait = _remaining(deadline)
            if not self._send_lock.acquire(timeout=-1 if wait is None else max(wait, 0.0)):
                raise TimeoutError("another thread's send did not finish in time")
            try:
                self._check_open()
                self._pending[request_id] = waiter
                self._write(_TEXT, data, deadline)
            except BaseException:
                self._pending.pop(request_id, None)
                raise
            finally:
                self._send_lock.release()
            if not waiter.wait(_remaining(deadline)):
                if self._pending.pop(request_id, None) is not None:
                    raise TimeoutError(f"no answer to request {request_id} within {timeout} s")
                waiter.wait(None)  # the reader took it an instant ago; it is being set
        finally:
            if slots is not None:
                slots.release()
        result = waiter.result
        if type(result) is Response:
            return result
        if type(result) is RequestError:
            raise RequestFailed(result)
        assert isinstance(result, BaseException)  # invariant of _finish()
        raise result

    # ------------------------------------------------------------------ receiving

    @property
    def push_state(self) -> str | None:
        """The latest ``pushState`` seen in a StateChange (RFC 8887 §4.3.5), or None."""
        return self._push_state

    @property
    def closed(self) -> bool:
        """True once the session has ended (closed locally, by the server, or broken)."""
        return self._ended is not None or self._closing

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The next frame from the server, blocking up to ``timeout`` seconds.

        Returns a :class:`Response`, :class:`RequestError`, :class:`StateChange` or
        :class:`UnknownFrame`; ``None`` once the server has closed cleanly (1000/1001),
        and on every call after. Frames that arrived before the end are returned first.

        Raises :class:`TimeoutError`; :class:`ProtocolViolation` (binary message),
        :class:`StarvationError` or :class:`ParseError` with the stream still usable;
        the error that ended the stream once (:class:`TransportError` and its kinds,
        :class:`AuthenticationError` for close 1008), then :class:`SessionClosed`.
        """
        if self._held:
            try:
                return self._held.popleft()
            except IndexError:
                pass  # another consumer took it; fall through to the queue
        return self._next_from_queue(timeout)

    def _deliver_special(self, item: BaseException | _End | Frame) -> Frame | None:
        if isinstance(item, _End):
            # Put the marker back so that every later call, in any thread, sees the end.
            if item.error is None or item.raised:
                self._queue.put(item)
            else:
                self._queue.put(_End(item.error, local=item.local, raised=True))
            if item.local:
                raise SessionClosed()
            if item.raised:
                raise SessionClosed(cause=item.error)
            if item.error is not None:
                raise item.error
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def changes(self, timeout: float | None = None) -> Iterator[StateChange]:
        """Iterate over StateChange frames as they arrive.

        ``timeout`` bounds each wait for the next change (:class:`TimeoutError`). The
        iteration ends when the server closes cleanly. Other frames met meanwhile are not
        dropped: they are set aside, in order, and the next :meth:`next_frame` calls
        return them first. Errors are raised as :meth:`next_frame` raises them.
        """
        while True:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                frame = self._next_from_queue(_remaining(deadline))
                if frame is None:
                    return
                if type(frame) is StateChange:
                    break
                self._held.append(frame)
            yield frame

    def _next_from_queue(self, timeout: float | None) -> Frame | None:
        try:
            if timeout is None:
                item = self._queue.get()
            else:
                item = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(f"nothing arrived within {timeout} s") from None
        if self._paused:
            self._wake_reader()
        if type(item) in _FRAME_TYPES:
            return item  # type: ignore[return-value]
        return self._deliver_special(item)

    # ------------------------------------------------------------------ closing

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> None:
        """Close the session: send a Close frame, wake every blocked caller, join the reader.

        Idempotent, and safe from any thread. Waits up to ``timeout`` (default: the
        ``close_timeout`` given to :meth:`open`; 0 drops the connection at once) for the
        server's Close reply, then drops the connection. Frames that arrived before are
        still returned by :meth:`next_frame`, which raises :class:`SessionClosed` after.
        """
        wait = max(self._close_timeout if timeout is None else timeout, 0.0)
        if not self._send_lock.acquire(timeout=wait):
            # A send is stuck (the server stopped reading): drop the connection to free it.
            self._closing = True
            self._abort()
            self._send_lock.acquire()
        try:
            first = not self._closing
            self._closing = True
            if first and self._ended is None:
                try:
                    body = struct.pack(">H", code) + reason.encode("utf-8")
                    self._write(_CLOSE, body, time.monotonic() + wait)
                except TransportError as exc:
                    log.debug("sending Close to %s failed: %s", self._url, exc)
        finally:
            self._send_lock.release()
        with self._room:
            self._room.notify_all()
        if threading.current_thread() is not self._reader:
            self._reader.join(wait)
            if self._reader.is_alive():
                self._abort()  # the server did not answer our Close: drop the connection
                self._reader.join()
        self._release_socket()

    def _abort(self) -> None:
        """Shut the socket down so that the reader's blocking recv returns at once."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            log.debug("socket of %s already shut down", self._url)

    def _release_socket(self) -> None:
        self._rfile.close()
        self._ws.shutdown()

    def __enter__(self) -> WsSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<WsSession {self._url} {state}>"

    # ------------------------------------------------------------------ reader thread

    def _run(self) -> None:
        try:
            self._read_loop()
        except _StreamEnded as end:
            self._finish(end.error, local=end.local)
        except OSError as exc:
            if self._closing:
                self._finish(None, local=True)
            else:
                error = TransportError(f"connection to {self._url} broke: {exc}")
                error.__cause__ = exc
                self._finish(error)
        except BaseException as exc:  # a bug must not leave callers blocked forever
            log.exception("reader thread of %s failed", self._url)
            self._finish(TransportError(f"reader thread failed: {exc!r}"))
            raise

    def _finish(self, error: BaseException | None, *, local: bool = False) -> None:
        """End the stream: record why, wake every waiting call(), queue the end marker."""
        if error is not None and not local:
            log.debug("session %s ended: %s", self._url, type(error).__name__)
        with self._send_lock:
            self._ended = end = _End(error, local=local)
            pending, self._pending = self._pending, {}
            self._abort()
            self._release_socket()
        if pending:
            wake = error if error is not None else SessionClosed("the session ended")
            for waiter in pending.values():
                waiter.set(wake)
        self._queue.put(end)
        with self._room:  # a reader paused on a full queue is this thread; nothing waits
            self._room.notify_all()

    def _fail(self, error: TransportError, code: int) -> _StreamEnded:
        """Send a Close with ``code`` (best effort) and return the exception to unwind with."""
        with self._send_lock:
            if not self._closing:
                try:
                    self._write(_CLOSE, struct.pack(">H", code))
                except TransportError as exc:
                    log.debug("sending Close %d failed: %s", code, exc)
        return _StreamEnded(error)

    def _read_exact(self, n: int) -> bytes:
        data: bytes = self._rfile.read(n)
        if len(data) != n:
            if self._closing:
                raise _StreamEnded(None, local=True)
            raise _StreamEnded(TransportError(f"connection to {self._url} lost (no Close frame)"))
        return data

    def _read_loop(self) -> None:
        read = self._read_exact
        limit = self._max_message_size
        fragments: list[bytes] | None = None
        fragments_opcode = _TEXT
        fragments_size = 0
        idle = 0  # consecutive messages that carried no data
        while True:
            first, second = read(2)
            self.last_activity = time.monotonic()
            fin = first & 0x80
            opcode = first & 0x0F
            length = second & 0x7F
            if first & 0x70:
                raise self._fail(WebSocketProtocolError("frame with reserved bits set"), 1002)
            if second & 0x80:  # RFC 6455 §5.1: a server never masks
                raise self._fail(WebSocketProtocolError("masked frame from the server"), 1002)
            if length == 126:
                (length,) = _unpack_short(read(2))
            elif length == 127:
                (length,) = _unpack_long(read(8))

            if opcode >= _CLOSE:  # control frame, RFC 6455 §5.5
                if length > 125 or not fin:
                    raise self._fail(WebSocketProtocolError("invalid control frame"), 1002)
                payload = read(length) if length else b""
                if opcode == _CLOSE:
                    self._on_close(payload)
                elif opcode == _PING:
                    self._pong(payload)
                elif opcode != _PONG:
                    raise self._fail(WebSocketProtocolError(f"unknown opcode {opcode}"), 1002)
                idle += 1
                if idle > MAX_CONSECUTIVE_NON_TEXT:
                    idle = 0
                    self._put(
                        StarvationError(
                            f"more than {MAX_CONSECUTIVE_NON_TEXT} "
                            "consecutive messages without data"
                        )
                    )
                continue

            if opcode == _CONT:
                if fragments is None:
                    raise self._fail(WebSocketProtocolError("continuation of nothing"), 1002)
                fragments_size += length
                if fragments_size > limit:
                    raise self._fail(MessageTooLarge(fragments_size, limit), 1009)
                if length:
                    fragments.append(read(length))
                    idle = 0  # a fragment with data is progress (bounded by the size limit)
                else:
                    idle += 1  # an empty fragment makes no progress: it counts like a ping
                    if idle > MAX_CONSECUTIVE_NON_TEXT:
                        idle = 0
                        self._put(StarvationError("too many empty continuation frames"))
                if not fin:
                    continue
                data = b"".join(fragments)
                opcode = fragments_opcode
                fragments = None
            elif opcode in (_TEXT, _BINARY):
                if fragments is not None:
                    raise self._fail(
                        WebSocketProtocolError("new message inside a fragmented one"), 1002
                    )
                if length > limit:
                    raise self._fail(MessageTooLarge(length, limit), 1009)
                data = read(length) if length else b""
                if not fin:
                    fragments, fragments_opcode, fragments_size = [data], opcode, length
                    continue
            else:
                raise self._fail(WebSocketProtocolError(f"unknown opcode {opcode}"), 1002)

            idle = 0
            if opcode == _BINARY:  # RFC 8887 §4.3: JMAP messages are text
                self._put(ProtocolViolation(f"binary message of {len(data)} bytes (RFC 8887 §4.3)"))
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise self._fail(
                    WebSocketProtocolError("text message is not valid UTF-8"), 1007
                ) from None
            try:
                frame = decode(text)
            except ParseError as exc:
                self._put(exc)
                continue
            self._dispatch(frame)  # type: ignore[arg-type]

    def _dispatch(self, frame: Frame) -> None:
        kind = type(frame)
        if kind is Response or kind is RequestError:
            request_id = frame.request_id  # type: ignore[union-attr]
            if type(request_id) is str and request_id.startswith(self._call_prefix):
                waiter = self._pending.pop(request_id, None)
                if waiter is not None:
                    waiter.set(frame)  # type: ignore[arg-type]
                else:
                    self.late_answers += 1
                    log.debug("dropped a late answer to %s (its call timed out)", request_id)
                return
        elif kind is StateChange and frame.push_state is not None:  # type: ignore[union-attr]
            self._push_state = frame.push_state  # type: ignore[union-attr]
        self._put(frame)

    def _put(self, item: Frame | BaseException) -> None:
        q = self._queue
        q.put(item)
        limit = self._max_queue
        if limit and q.qsize() >= limit:
            self._pause(limit)

    def _pause(self, limit: int) -> None:
        log.warning(
            "%s: %d frames are waiting for next_frame(); reading paused until the"
            " application catches up (answers to call() wait too)",
            self._url,
            limit,
        )
        low = limit // 2
        with self._room:
            self._paused = True
            while self._queue.qsize() > low and not self._closing:
                self._room.wait()
            self._paused = False
        log.info("%s: reading resumed", self._url)

    def _wake_reader(self) -> None:
        if self._queue.qsize() <= self._max_queue // 2:
            with self._room:
                self._room.notify()

    def _pong(self, payload: bytes) -> None:
        with self._send_lock:
            if self._closing:
                return
            try:
                self._write(_PONG, payload)  # RFC 6455 §5.5.3: same payload
            except TransportError as exc:
                log.debug("sending Pong failed: %s", exc)

    def _on_close(self, payload: bytes) -> None:
        """The server sent Close (RFC 6455 §5.5.1): answer it and end the stream."""
        if len(payload) >= 2:
            (code,) = _unpack_short(payload[:2])
            reason = payload[2:].decode("utf-8", "replace")
        else:
            code, reason = 1005, ""
        self.close_code, self.close_reason = code, reason
        with self._send_lock:
            if not self._closing:
                echo = code if code not in (1005, 1006, 1015) else 1000  # not sendable
                try:
                    self._write(_CLOSE, struct.pack(">H", echo))
                except TransportError as exc:
                    log.debug("answering Close failed: %s", exc)
        if self._closing:
            raise _StreamEnded(None, local=True)
        if code in _CLEAN_CODES:
            raise _StreamEnded(None)
        if code == _POLICY_VIOLATION:
            raise _StreamEnded(
                AuthenticationError(
                    "the server closed the session: credentials expired (close 1008)",
                    close_code=code,
                )
            )
        raise _StreamEnded(ConnectionClosedError(code, reason))


def _expire_handshake(ws: Any, expired: threading.Event) -> None:
    """Watchdog: the handshake's deadline passed; make its blocking read return."""
    expired.set()
    sock = ws.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            log.debug("handshake socket already gone at the deadline")


def _connect_error(exc: BaseException, safe: str) -> BaseException:
    """Translate what websocket-client raised while connecting into our tree."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        status = exc.status_code
        if status in (401, 403):
            challenge = (exc.resp_headers or {}).get("www-authenticate", "")
            return AuthenticationError(
                f"{safe} refused the credentials (HTTP {status})",
                status=status,
                scheme=challenge.split(None, 1)[0] if challenge else None,
            )
        return HandshakeError(
            f"{safe} refused the WebSocket upgrade (HTTP {status})", status=status
        )
    if isinstance(exc, TimeoutError | websocket.WebSocketTimeoutException):
        return TimeoutError(f"connecting to {safe} timed out")
    if isinstance(exc, ssl.SSLError):
        return TransportError(f"TLS failure connecting to {safe}: {exc.reason}")
    if isinstance(
        exc,
        OSError | websocket.WebSocketAddressException | websocket.WebSocketProxyException,
    ):
        return TransportError(f"cannot connect to {safe}: {exc}")
    return HandshakeError(f"invalid WebSocket handshake from {safe}: {exc}")


def _proxy_options(proxy: str) -> dict[str, Any]:
    """websocket-client options for an explicit HTTP proxy URL ("" means none)."""
    if not proxy:
        return {"http_no_proxy": ["*"]}
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("proxy must be an http://host:port URL")
    options: dict[str, Any] = {
        "http_proxy_host": parts.hostname,
        "http_proxy_port": parts.port or 80,
        "proxy_type": "http",
    }
    if parts.username is not None:
        options["http_proxy_auth"] = (unquote(parts.username), unquote(parts.password or ""))
    return options
