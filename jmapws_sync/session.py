"""WsSession: one JMAP-over-WebSocket connection (RFC 8887), blocking and thread-safe.

How it works: websocket-client performs the opening handshake (:mod:`._handshake`: TLS,
proxies, headers, the ``jmap`` subprotocol). After that the socket belongs to a
:class:`~jmapws_sync._connection.Connection`, whose reader thread reads RFC 6455 frames
itself (:mod:`._framing`), so that a message's size is checked against the length its
header announces before any payload is buffered and UTF-8 is checked once, strictly, in
C. Each decoded frame goes either to the ``call()`` that waits for it (:mod:`._calls`) or
to the inbox read by :meth:`WsSession.next_frame` and :meth:`WsSession.changes`
(:mod:`._inbox`). Every send is framed and written under one lock, with a bound on how
long a send may make no progress.

Thread safety:

* ``send_request``, ``send_text``, ``call``, ``enable_push``, ``disable_push``, ``ping``
  and ``close`` are safe from any thread at any time.
* ``next_frame`` and ``changes`` are safe from any thread; with several consumers each
  frame goes to exactly one of them. Frames that ``changes()`` passes over stay where
  they are, for ``next_frame()``.
* The reader thread never runs user code.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import ssl
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

from ._calls import Calls
from ._connection import MAX_CONSECUTIVE_NON_TEXT, Connection, OnEnd
from ._deflate import Params, check_compression
from ._framing import MAX_CONTROL_PAYLOAD, CloseCode, Opcode, close_payload
from ._handshake import open_websocket
from ._http import HttpSettings
from ._inbox import DEFAULT_MAX_QUEUE, Inbox
from ._net import Cancel, Deadline, check_timeout, finalize, resolve_proxy, safe_url
from .auth import Auth
from .blobs import Blob, BlobReader, Blobs, Progress, Source
from .codec import encode_bytes
from .errors import PushUnavailable, RequestFailed
from .frames import (
    AllTypes,
    Frame,
    Request,
    RequestError,
    Response,
    StateChange,
    WebSocketPushDisable,
    WebSocketPushEnable,
)
from .resource import SessionResource

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_QUEUE",
    "MAX_CONSECUTIVE_NON_TEXT",
    "WsSession",
    "push_types",
]

log = logging.getLogger(__name__)

#: Largest message accepted by default: 16 MiB.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024

_session_numbers = itertools.count(1)
_RESERVED_ID: Final = re.compile(r"jws\d+\.")


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


class WsSession:
    """An open JMAP WebSocket session. Create it with :meth:`open` or :func:`connect`.

    Use it as a context manager, or call :meth:`close`; the reader thread and the socket
    never outlive it.
    """

    def __init__(
        self,
        ws: Any,
        *,
        url: str,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_concurrent_requests: int | None = None,
        close_timeout: float = 2.0,
        session: SessionResource | None = None,
        inbox: Inbox | None = None,
        on_end: OnEnd | None = None,
        deflate: Params | None = None,
        http: HttpSettings | None = None,
    ) -> None:
        """Wrap an already connected websocket-client ``WebSocket``; prefer :meth:`open`.

        ``inbox`` and ``on_end`` are for wrappers that stitch several connections into
        one stream (:class:`~jmapws_sync.ReconnectingSession`): the frames go to that
        inbox, and the end of the stream is reported to ``on_end(error, local)`` instead
        of ending the inbox.
        """
        self._url = safe_url(url)
        #: The JMAP Session resource this connection was discovered from, if any.
        self.session = session
        self._blobs = Blobs(
            http if http is not None else HttpSettings(trusted=url, vouched=session is not None),
            lambda: self.session,
            lambda request, timeout: self.call(request, timeout=timeout),
        )
        self._inbox = inbox if inbox is not None else Inbox(max_queue=max_queue, name=self._url)
        if on_end is None:
            finish = self._inbox.finish

            def on_end(error: BaseException | None, local: bool) -> None:
                finish(error, local=local)

        self._number = next(_session_numbers)
        if max_concurrent_requests is None and session is not None:
            max_concurrent_requests = session.core.max_concurrent_requests
        self._calls = Calls(self._number, max_concurrent_requests)
        self._conn = Connection(
            ws,
            url=self._url,
            number=self._number,
            inbox=self._inbox,
            calls=self._calls,
            max_message_size=max_message_size,
            close_timeout=check_timeout(close_timeout, "close_timeout"),
            on_end=on_end,
            deflate=deflate,
        )

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
        inbox: Inbox | None = None,
        on_end: OnEnd | None = None,
        cancel: Cancel | None = None,
        compression: str | None = "deflate",
        http: HttpSettings | None = None,
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
        ``ssl_context`` defaults to a shared :func:`ssl.create_default_context`
        (verification on). ``proxy`` is ``"http://[user:pass@]host:port"``; ``None``
        takes ``https_proxy`` / ``http_proxy`` / ``no_proxy`` from the environment, ``""``
        means no proxy. ``inbox`` and ``on_end``: see the constructor. ``cancel`` (a
        :class:`~jmapws_sync._net.Cancel`) aborts the handshake from another thread.

        ``compression="deflate"`` (the default) offers permessage-deflate (RFC 7692) and
        uses it if the server agrees (:attr:`compression` says what was agreed); ``None``
        offers nothing. ``max_message_size`` applies to the inflated message.

        Blob transfers (:meth:`upload`, :meth:`download`) use the same ``auth``,
        ``ssl_context`` and ``proxy``, and the URLs of ``session``: its credentials go to
        ``url``'s origin and, when ``session`` is given (the user's own resource), to the
        URLs it names. ``http`` replaces those settings (:func:`~jmapws_sync.connect`
        passes its own, which know where the resource came from).

        Raises :class:`AuthenticationError` (401/403), :class:`HandshakeError` (another
        status, or a missing subprotocol), :class:`TransportError` (refused, unreachable,
        TLS failure) or :class:`TimeoutError`.
        """
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise ValueError(f"not a WebSocket URL: {safe_url(url)}")
        check_timeout(close_timeout, "close_timeout")
        offered = check_compression(compression)
        ws, deflate = open_websocket(
            url,
            headers={**(headers or {}), **(auth() if auth else {})},
            timeout=check_timeout(timeout),
            ssl_context=ssl_context,
            proxy=resolve_proxy(url, proxy),
            require_subprotocol=require_subprotocol,
            compression=offered,
            cancel=cancel,
        )
        return cls(
            ws,
            url=url,
            max_message_size=max_message_size,
            max_queue=max_queue,
            max_concurrent_requests=max_concurrent_requests,
            close_timeout=close_timeout,
            session=session,
            inbox=inbox,
            on_end=on_end,
            deflate=deflate,
            http=http
            if http is not None
            else HttpSettings(
                auth=auth,
                ssl_context=ssl_context,
                proxy=proxy,
                trusted=url,
                vouched=session is not None,
            ),
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
        self._conn.send(Opcode.TEXT, data)

    def send_request(self, request: Request, id: str | int | None = None) -> None:  # noqa: A002
        """Send ``request`` as a ``Request`` frame; the server echoes ``id`` as ``requestId``.

        The answer arrives through :meth:`next_frame`. Ids of the form ``jws<digits>.``...
        are reserved for :meth:`call` (its answers never reach :meth:`next_frame`), and
        one is a :class:`ValueError`, as is a request that cannot be encoded.
        """
        if type(id) is str and _RESERVED_ID.match(id):
            raise ValueError("ids of the form 'jws<digits>.…' are reserved for call()")
        self._conn.send(Opcode.TEXT, encode_bytes(request, id))

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
        self._conn.send(Opcode.TEXT, encode_bytes(frame))

    def disable_push(self) -> None:
        """Ask the server to stop pushing (RFC 8887 §4.3.5.3).

        StateChange frames already on their way still arrive.
        """
        self._conn.send(Opcode.TEXT, encode_bytes(WebSocketPushDisable()))

    def ping(self, payload: bytes = b"", *, wait: bool = True) -> bool:
        """Send a WebSocket Ping; the reader updates :attr:`last_activity` on the Pong.

        The Pong that answers it never counts toward :class:`StarvationError`. A payload
        over 125 bytes (RFC 6455 §5.5) is a :class:`ValueError`, before anything is sent.
        With ``wait=False`` the Ping is not sent, and False is returned, while another
        thread's send holds the socket (a keepalive of your own must not wait behind a
        send to a peer that stopped reading); otherwise True.
        """
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a Ping payload is at most {MAX_CONTROL_PAYLOAD} bytes")
        return self._conn.ping(bytes(payload), wait=wait)

    # ------------------------------------------------------------------ call()

    def call(self, request: Request, *, timeout: float | None = None) -> Response:
        """Send ``request`` and block until its :class:`Response` arrives.

        The request gets an id unique within the session, and the answer goes to this
        caller only (never to :meth:`next_frame`), whatever order the server answers in.
        Safe from any number of threads; when a concurrency limit is known
        (``maxConcurrentRequests``), extra callers wait for a free slot within the same
        ``timeout``, and a call that timed out keeps its slot until its late answer
        arrives (the server is still running it). ``timeout`` bounds all of it, the send
        included: a send that cannot finish in time (the server stopped reading) drops the
        connection, since half a frame may have gone out.

        Raises :class:`RequestFailed` when the server answers with a RequestError,
        :class:`TimeoutError` when no answer came in time (a late answer is then dropped
        and counted in :attr:`late_answers`), and the error that ended the connection
        (or :class:`SessionClosed`) when the session ends while waiting.
        """
        deadline = Deadline(check_timeout(timeout))
        calls = self._calls
        request_id = calls.new_id()
        data = encode_bytes(request, request_id)
        if not calls.acquire_slot(deadline.left()):
            raise TimeoutError("no free request slot (maxConcurrentRequests) in time")
        waiter = calls.register(request_id)
        try:
            self._conn.send_within(Opcode.TEXT, data, deadline.at)
        except BaseException:
            calls.give_up(request_id, sent=False)
            raise
        if not waiter.wait(deadline.left()):
            if calls.give_up(request_id, sent=True):
                raise TimeoutError(f"no answer to request {request_id} within {timeout} s")
            waiter.wait(None)  # the reader took it an instant ago; it is being set
        result = waiter.result
        if type(result) is Response:
            return result
        if type(result) is RequestError:
            raise RequestFailed(result)
        assert isinstance(result, BaseException)  # invariant of Calls.end()
        raise result

    # ------------------------------------------------------------------ receiving

    @property
    def http_settings(self) -> HttpSettings:
        """What this session's HTTP requests (blobs, an EventSource) are made with: its
        credentials and where they may go, TLS context and proxy."""
        return self._blobs.settings

    # ------------------------------------------------------------------ blobs

    def upload(
        self,
        data: Source,
        *,
        type: str = "application/octet-stream",  # noqa: A002 - RFC 8620's name
        account_id: str | None = None,
        timeout: float | None = 60.0,
        progress: Progress | None = None,
        via: str = "auto",
    ) -> Blob:
        """Upload ``data`` (bytes, a path, or a binary file object) and return its
        :class:`~jmapws_sync.Blob`; see :meth:`Blobs.upload <jmapws_sync.blobs.Blobs.upload>`.

        Streams files in 64 KiB pieces; refuses a known size over ``maxSizeUpload``
        before sending; at most ``maxConcurrentUpload`` at once per session. ``via``:
        ``"http"``, ``"jmap"`` (RFC 9404 ``Blob/upload``) or ``"auto"``. Safe from any
        thread. Raises :class:`~jmapws_sync.BlobError` and its kinds,
        :class:`~jmapws_sync.AuthenticationError`, :class:`~jmapws_sync.TransportError`,
        :class:`TimeoutError`.
        """
        return self._blobs.upload(
            data, type=type, account_id=account_id, timeout=timeout, progress=progress, via=via
        )

    def download(
        self,
        blob_id: str,
        *,
        to: str | os.PathLike[str] | BinaryIO,
        name: str | None = None,
        type: str | None = None,  # noqa: A002
        account_id: str | None = None,
        timeout: float | None = 60.0,
        progress: Progress | None = None,
    ) -> int:
        """Download a blob into a path or a binary file object; the bytes written.

        To a path through a temporary file renamed at the end; resumed with ``Range``
        when the connection drops mid-body; the length is checked. See
        :meth:`Blobs.download <jmapws_sync.blobs.Blobs.download>`. Safe from any thread.
        """
        return self._blobs.download(
            blob_id,
            to=to,
            name=name,
            type=type,
            account_id=account_id,
            timeout=timeout,
            progress=progress,
        )

    def open_blob(
        self,
        blob_id: str,
        *,
        name: str | None = None,
        type: str | None = None,  # noqa: A002
        account_id: str | None = None,
        timeout: float | None = 60.0,
    ) -> BlobReader:
        """A blob as a readable binary stream (a context manager), resumed as
        :meth:`download` is."""
        return self._blobs.open(
            blob_id, name=name, type=type, account_id=account_id, timeout=timeout
        )

    def read_blob(
        self,
        blob_id: str,
        *,
        offset: int = 0,
        length: int | None = None,
        account_id: str | None = None,
        timeout: float | None = 60.0,
    ) -> bytes:
        """Bytes of a blob by RFC 9404 ``Blob/get`` over this session (``length`` bytes
        from ``offset``); the server must advertise ``urn:ietf:params:jmap:blob``."""
        return self._blobs.read(
            blob_id, offset=offset, length=length, account_id=account_id, timeout=timeout
        )

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
        self._conn.check_forked()
        return self._inbox.get(check_timeout(timeout))

    def changes(self, timeout: float | None = None) -> Iterator[StateChange]:
        """Iterate over StateChange frames as they arrive.

        ``timeout`` bounds each wait for the next change (:class:`TimeoutError`). The
        iteration ends when the server closes cleanly. Other frames met meanwhile are not
        dropped: they stay, in order, for the next :meth:`next_frame` calls. Errors are
        raised as :meth:`next_frame` raises them.
        """
        self._conn.check_forked()
        return self._inbox.changes(check_timeout(timeout))

    # ------------------------------------------------------------------ state

    @property
    def push_state(self) -> str | None:
        """The ``pushState`` of the last StateChange handed out (RFC 8887 §4.3.5), or None."""
        return self._inbox.push_state

    @property
    def closed(self) -> bool:
        """True once the session has ended (closed locally, by the server, or broken)."""
        return self._conn.closed

    @property
    def compression(self) -> str | None:
        """The ``Sec-WebSocket-Extensions`` the server agreed to (``permessage-deflate``
        and its parameters), or None when messages are not compressed."""
        deflate = self._conn.deflate
        return deflate.header if deflate is not None else None

    @property
    def close_code(self) -> int | None:
        """The code of the Close frame the server sent, once it sent one."""
        return self._conn.close_code

    @property
    def close_reason(self) -> str:
        """The reason of the Close frame the server sent ("" when none)."""
        return self._conn.close_reason

    @property
    def last_activity(self) -> float:
        """``time.monotonic()`` of the last frame of any kind from the server."""
        return self._conn.last_activity

    @property
    def received_push_state(self) -> str | None:
        """The ``pushState`` of the last StateChange received, handed out or not."""
        return self._conn.received_push_state

    @property
    def late_answers(self) -> int:
        """Answers to timed-out ``call()`` s that arrived late and were dropped."""
        return self._calls.late_answers

    @property
    def pending_frames(self) -> int:
        """How many frames have arrived that :meth:`next_frame` has not returned yet."""
        return len(self._inbox)

    @property
    def pending_calls(self) -> int:
        """How many ``call()`` s are waiting for their answers right now."""
        return len(self._calls)

    # ------------------------------------------------------------------ closing

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> None:
        """Close the session: send a Close frame, wake every blocked caller, join the reader.

        Idempotent, and safe from any thread. Waits up to ``timeout`` (default: the
        ``close_timeout`` given to :meth:`open`; 0 drops the connection at once) for the
        server's Close reply, then drops the connection. Frames that arrived before are
        still returned by :meth:`next_frame`, which raises :class:`SessionClosed` after.

        ``code`` is 1000 or an application code, 3000-4999 (RFC 6455 §7.4.2), ``reason``
        at most 123 bytes of UTF-8: anything else is a :class:`ValueError`, raised before
        anything is sent, with the session still usable.
        """
        if code != 1000 and not 3000 <= code <= 4999:
            raise ValueError(f"close() takes 1000 or a code in 3000-4999, not {code!r}")
        body = close_payload(code, reason)
        conn = self._conn
        conn.close(body, conn.close_timeout if timeout is None else check_timeout(timeout))

    def __enter__(self) -> WsSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<WsSession {self._url} {state}>"

    def __del__(self) -> None:
        # As sockets and files do: a session nobody closed is closed when it is collected
        # (its reader thread refers to the Connection only), with a ResourceWarning.
        conn = getattr(self, "_conn", None)
        if conn is None or conn.closed:
            return
        warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1, source=self)
        finalize(conn.close, close_payload(CloseCode.GOING_AWAY), 0.0)
