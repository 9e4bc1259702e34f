"""ReconnectingSession: a JMAP WebSocket connection that heals itself.

Long-lived threaded applications (a push listener, a daemon that calls the server now and
then) want one object that stays connected: it reconnects with backoff, notices a peer
that has silently gone away, resumes push where it stopped, and tells the application
what happened. :class:`ReconnectingSession` keeps one :class:`~jmapws_sync.WsSession` at a
time and replaces it when it ends::

    with jws.ReconnectingSession("https://host", auth=jws.BearerAuth(token), push=True) as rs:
        for change in rs.changes():
            ...

How it works
------------
One named daemon *supervisor* thread per ReconnectingSession (:mod:`._supervisor`) owns the
connection's life: it connects (with discovery for an http(s) URL, directly for a ws(s)
URL), re-enables push, sends keepalive pings, notices the end of a connection, asks
:mod:`jmapws_sync.policy` whether to retry, waits out the backoff delay and connects
again. Every connection puts its frames into one inbox that :meth:`next_frame` and
:meth:`changes` read, so nothing that arrived before a break is lost, and order is kept.

The constructor returns at once: the first connection is made by the supervisor in the
background (eager, not blocking). :meth:`wait_connected` blocks until it is up and raises
a fatal error (bad credentials, no WebSocket support...) if there is one.

What is retried
---------------
:func:`jmapws_sync.policy.classify` decides, in one place, for every way a connection
attempt or an open connection can end; its table is in :mod:`jmapws_sync.policy`. In
short: network failures, timeouts, HTTP 408/429/5xx and close codes 1001/1006/1011-1014
are retried with backoff; close 1002/1003/1007/1010, TLS certificate failures and other
HTTP statuses are fatal; 401/403 and close 1008 are never retried with the same
credentials (a callable ``auth`` is asked once for fresh ones). A server's clean close
(1000) is followed by a reconnect, like 1001: a long-lived listener wants to stay
connected, and a server that wants a client gone refuses its credentials. The backoff
is not reset unless a connection stayed up ``reset_after`` seconds.

A fatal error ends the ReconnectingSession: :meth:`next_frame` and :meth:`changes` raise
it once, after the frames that arrived before it, then :class:`~jmapws_sync.SessionClosed`
(whose ``cause`` is the error); :meth:`call`, ``send_*``, :meth:`enable_push` and
:meth:`wait_connected` raise the error itself every time.

Keepalive
---------
When nothing has arrived for ``ping_interval`` seconds, the supervisor sends a WebSocket
Ping; if nothing at all (Pong or frame) arrives within ``ping_timeout`` seconds after it,
the connection is declared dead (:class:`~jmapws_sync.KeepaliveTimeout`), dropped without
waiting for a Close reply, and replaced. A dead peer is therefore detected at most
``ping_interval + ping_timeout`` seconds after the last sign of life (40 s with the
defaults). A busy connection sends no pings; an idle one wakes the supervisor twice per
interval and costs no CPU in between. A Ping never waits behind another send: while a
large send holds the socket, the bytes the peer takes are the sign of life, and a send
that makes no progress for ``ping_timeout`` seconds after a Ping was due is a peer that
stopped reading (the send then fails with a :class:`~jmapws_sync.TransportError`).

Resume
------
After a reconnect, push is enabled again with the same data types and the last
``pushState`` received, so that the server replays what changed meanwhile (RFC 8887
§4.3.5.2). Calls in flight when a connection broke fail with
:class:`~jmapws_sync.ConnectionLost` and are *not* re-sent: the server may have run them.
The Session resource is fetched again at every reconnect, and also, by the supervisor
thread (never holding up the call that received it), when a Response carries a
``sessionState`` that differs from :attr:`session`'s ``state``;
:meth:`fresh_session` waits for that refresh.

The application learns of a reconnect through ``on_reconnect(info)``: called with a
:class:`ReconnectInfo`, in the thread that reads frames (:meth:`next_frame` /
:meth:`changes`), at the exact point of the stream where the new connection starts, before
its first frame. ``info.push_resumed`` says whether the server was asked to replay from a
pushState; when it is False (no pushState known yet), or when the server is one that does
not replay, the application should fall back to ``/changes`` calls. Reconnects with no
frame between them are reported once, by the latest one (``info.count`` tells how many
there were): the stream holds one marker where they happened, so an application that
never reads frames (``call()`` only) holds nothing per reconnect. :attr:`reconnects` and
:attr:`last_reconnect` tell the same to threads that do not read frames.

Thread safety
-------------
The same rules as :class:`~jmapws_sync.WsSession`: ``call``, ``send_request``,
``send_text``, ``enable_push``, ``disable_push``, ``wait_connected`` and ``close`` are
safe from any thread at any time; ``next_frame`` and ``changes`` are safe from any thread,
and with several consumers each frame goes to exactly one of them (order is only
meaningful with one consumer). ``on_reconnect`` runs in a consumer's thread, never in a
library thread. ``close()`` is idempotent and returns at once, also during a backoff wait.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from ._connection import FORKED
from ._deflate import check_compression
from ._framing import close_payload
from ._inbox import DEFAULT_MAX_QUEUE
from ._net import Deadline, check_timeout, finalize, safe_url
from ._supervisor import (
    Boundary,
    Channel,
    Link,
    ReconnectInfo,
    Settings,
    Supervisor,
    uses_eventsource,
)
from .auth import Auth
from .blobs import Blob, BlobReader, Progress, Source
from .errors import (
    AuthenticationError,
    ConnectionLost,
    KeepaliveTimeout,
    PushUnavailable,
    SessionClosed,
    TransportError,
)
from .eventsource import EventSourcePush, Reopened
from .frames import AllTypes, Frame, Request, Response, StateChange
from .httpcalls import HttpLink
from .policy import FATAL_CLOSE_CODES, Backoff, Verdict, classify
from .resource import SessionResource
from .session import DEFAULT_MAX_MESSAGE_SIZE

__all__ = [
    "FATAL_CLOSE_CODES",
    "Backoff",
    "ConnectionLost",
    "KeepaliveTimeout",
    "ReconnectInfo",
    "ReconnectingSession",
    "Verdict",
    "classify",
]

log = logging.getLogger(__name__)

_numbers = itertools.count(1)


def _weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (bound to a ReconnectingSession) called through a weak reference: the
    supervisor's and the EventSource's threads must not keep a forgotten session alive.
    Once it is gone, calls do nothing."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        target = ref()
        return None if target is None else target(*args)

    return call


def _types_option(data_types: Sequence[str] | AllTypes | None) -> tuple[str, ...] | AllTypes | None:
    """``data_types`` as kept for every connection; each expands ``None`` for its server."""
    if data_types is None or isinstance(data_types, AllTypes):
        return data_types
    if isinstance(data_types, str):
        raise TypeError("data_types must be a sequence of type names, not a string")
    return tuple(data_types)


class ReconnectingSession:
    """A JMAP WebSocket session that reconnects by itself (see the module docstring).

    ``url``: an ``https://``/``http://`` base or Session resource URL (discovery at every
    connect, RFC 8620 §2), or a ``wss://``/``ws://`` URL (no discovery; :attr:`session`
    stays ``None``). ``auth`` is called at every connect.

    ``push=True`` enables push on every connection, for ``data_types`` (``None``: every
    type, as :meth:`WsSession.enable_push <jmapws_sync.WsSession.enable_push>` sends it);
    ``push_state`` resumes from a pushState saved by an earlier run. ``backoff`` and
    ``rng`` (a seeded :class:`random.Random` makes the delays reproducible) set the retry
    delays; ``ping_interval`` / ``ping_timeout`` the keepalive (``ping_interval=None``
    turns it off). ``on_reconnect(info)`` is called in the consumer's thread at each
    reconnect. ``connect_timeout`` bounds each attempt (discovery and handshake).

    ``transport`` says how calls go: ``"websocket"``, ``"http"`` (each call a POST to the
    Session resource's ``apiUrl`` over a keep-alive pool, at most
    ``maxConcurrentRequests`` at once: :class:`~jmapws_sync.httpcalls.HttpLink`), or
    ``"auto"`` (the default): the WebSocket where the Session resource has one, HTTP where
    it has none (Fastmail). Over HTTP, ``call()``, ``send_request()`` (its answer comes
    through :meth:`next_frame`), the errors and :class:`~jmapws_sync.MethodError` are the
    same; push then comes from the EventSource. :attr:`transport` says which is used.

    ``push_via`` says where pushes come from: ``"websocket"`` (RFC 8887),
    ``"eventsource"`` (RFC 8620 §7.3: the Session resource's ``eventSourceUrl``, read in a
    thread of its own, for jmaple, whose WebSocket says it pushes and never does), or
    ``"auto"`` (the default): the WebSocket where its capability says ``supportsPush``,
    the EventSource otherwise. Either way the StateChanges come through :meth:`changes`,
    :meth:`next_frame` and :meth:`events` alike; an EventSource resumes with
    ``Last-Event-ID``, waits what its ``retry:`` asks (within the backoff's ceiling), takes
    its ``ping`` events (asked every ``ping_interval``) as the keepalive, and reports its
    reconnects as the WebSocket's are. :attr:`push_source` says which is used.

    The other options go to :meth:`WsSession.open <jmapws_sync.WsSession.open>` for every
    connection; ``max_queue`` bounds the frames held for :meth:`next_frame` across them.

    Thread safety and the contract of each method: see the module docstring.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: Auth | None = None,
        push: bool = False,
        data_types: Sequence[str] | AllTypes | None = None,
        push_state: str | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        on_reconnect: Callable[[ReconnectInfo], object] | None = None,
        connect_timeout: float | None = 10.0,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        require_subprotocol: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_concurrent_requests: int | None = None,
        close_timeout: float = 2.0,
        compression: str | None = "deflate",
        push_via: str = "auto",
        transport: str = "auto",
    ) -> None:
        scheme = urlsplit(url).scheme
        if push_via not in ("auto", "websocket", "eventsource"):
            raise ValueError('push_via is "auto", "websocket" or "eventsource"')
        if transport not in ("auto", "websocket", "http"):
            raise ValueError('transport is "auto", "websocket" or "http"')
        if transport == "http" and scheme not in ("http", "https"):
            raise ValueError("transport='http' needs an http(s) URL to discover the apiUrl")
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"not an http(s) or ws(s) URL: {safe_url(url)}")
        ping_interval = check_timeout(ping_interval, "ping_interval")  # inf: no keepalive
        ping_timeout = check_timeout(ping_timeout, "ping_timeout") or math.inf
        if ping_interval == 0 or ping_timeout == 0:
            raise ValueError("ping_interval and ping_timeout must be positive")
        connect_timeout = check_timeout(connect_timeout, "connect_timeout")
        check_compression(compression)
        self._safe = safe_url(url)
        self._close_timeout = check_timeout(close_timeout, "close_timeout")
        self._initial_push_state = push_state
        settings = Settings(
            url=url,
            safe=self._safe,
            discover=scheme in ("http", "https"),
            auth=auth,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
            proxy=proxy,
            require_subprotocol=require_subprotocol,
            session_options={
                "headers": headers,
                "max_message_size": max_message_size,
                "max_concurrent_requests": max_concurrent_requests,
                "compression": compression,
                "close_timeout": math.inf if self._close_timeout is None else close_timeout,
            },
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            on_reconnect=on_reconnect,
            push_via=push_via,
            eventsource=_weakly(self._eventsource_for),  # the thread must not keep self
            transport=transport,
        )
        self._backoff = backoff if backoff is not None else Backoff()
        self._es_lock = threading.Lock()
        self._es: EventSourcePush | None = None
        self._es_types: tuple[str, ...] | None = None
        self._sup = Supervisor(
            settings,
            rng=rng if rng is not None else random.Random(),  # noqa: S311 - jitter only
            backoff=self._backoff,
            push=push,
            data_types=_types_option(data_types),
            push_state=push_state,
            max_queue=max_queue,
            number=next(_numbers),
        )

    # ------------------------------------------------------------------ state

    @property
    def session(self) -> SessionResource | None:
        """The latest JMAP Session resource (``None`` for a ws(s) URL or before connecting)."""
        return self._sup.session

    def fresh_session(self, timeout: float | None = None) -> SessionResource | None:
        """:attr:`session`, once the refresh that a Response's new ``sessionState`` asked
        for is done (at once when none is pending). :class:`TimeoutError` after
        ``timeout``."""
        self._check_forked()
        return self._sup.fresh_session(Deadline(timeout).at)

    def _check_forked(self) -> None:
        if self._sup.forked:
            raise SessionClosed(FORKED)

    @property
    def push_state(self) -> str | None:
        """The ``pushState`` of the last StateChange handed out by :meth:`next_frame` or
        :meth:`changes` (before any: the ``push_state`` given at start). Saving it after
        handling a change and resuming from it later never skips a change."""
        handed = self._sup.inbox.push_state
        return handed if handed is not None else self._initial_push_state

    @property
    def reconnects(self) -> int:
        """How many times a connection was replaced (the first connection is not counted)."""
        return self._sup.reconnects

    @property
    def last_reconnect(self) -> ReconnectInfo | None:
        """The :class:`ReconnectInfo` of the latest reconnect, or ``None``."""
        return self._sup.last_info

    @property
    def transport(self) -> str | None:
        """How calls go: ``"websocket"``, ``"http"`` (POST to ``apiUrl``, where the server
        has no WebSocket or ``transport="http"`` asked), or None while not connected."""
        link = self._sup.live()
        if link is None:
            return None
        return "http" if isinstance(link.inner, HttpLink) else "websocket"

    @property
    def push_source(self) -> str | None:
        """Where pushes come from: ``"websocket"``, ``"eventsource"``, or None (push off,
        or not decided yet: ``push_via="auto"`` decides at the first connection)."""
        with self._es_lock:
            if self._es is not None:
                return "eventsource"
        return "websocket" if self._sup.push and self._sup.live() is not None else None

    @property
    def connected(self) -> bool:
        """True while a connection is up (as far as anyone has noticed)."""
        with self._sup.cond:
            return self._sup.live() is not None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`, or after a fatal error."""
        return self._sup.closing or self._sup.final is not None

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until a connection is up (with ``push``: and the server has enabled push,
        so no change made after this returns can be missed).

        Raises :class:`TimeoutError`, the fatal error that ended the session, or
        :class:`~jmapws_sync.SessionClosed` after :meth:`close`.
        """
        self._check_forked()
        self._sup.wait_connected(Deadline(timeout).at)

    # ------------------------------------------------------------------ sending

    def call(self, request: Request, *, timeout: float | None = None) -> Response:
        """Send ``request`` on the current connection and wait for its Response.

        ``timeout`` covers waiting for a connection (during a reconnect) and for the
        answer. A call in flight when the connection breaks raises :class:`ConnectionLost`
        and is not re-sent. Otherwise raises what :meth:`WsSession.call
        <jmapws_sync.WsSession.call>` raises (:class:`TimeoutError`,
        :class:`~jmapws_sync.RequestFailed`...).
        """
        self._check_forked()
        deadline = Deadline(timeout)
        link = self._sup.wait_connected(deadline.at)
        try:
            response = link.inner.call(request, timeout=deadline.left())
        except (TransportError, AuthenticationError, SessionClosed) as exc:
            self._sup.lost(link, exc)
            if self._sup.closing:
                raise SessionClosed() from exc
            raise ConnectionLost(
                f"the connection to {self._safe} ended before the answer arrived; the"
                " request was not re-sent (the server may have run it)"
            ) from exc
        self._check_session_state(response)
        return response

    def send_request(
        self,
        request: Request,
        id: str | int | None = None,  # noqa: A002
        *,
        timeout: float | None = None,
    ) -> None:
        """Send ``request``; its answer arrives through :meth:`next_frame`.

        Waits up to ``timeout`` for a connection. A request that could not be sent because
        the connection had just ended is sent on the next one; one whose sending failed
        midway raises :class:`ConnectionLost`.
        """
        self._send(lambda inner: inner.send_request(request, id), timeout)

    def send_text(self, text: str, *, timeout: float | None = None) -> None:
        """Send one raw text message (extensions); same rules as :meth:`send_request`."""
        self._send(lambda inner: inner.send_text(text), timeout)

    def _send(self, send: Callable[[Channel], None], timeout: float | None) -> None:
        self._check_forked()
        deadline = Deadline(timeout)
        while True:
            link = self._sup.wait_connected(deadline.at)
            try:
                send(link.inner)
            except SessionClosed as exc:  # raised before anything was sent: try the next one
                self._sup.lost(link, exc)
                continue
            except TransportError as exc:
                self._sup.lost(link, exc)
                raise ConnectionLost(
                    f"sending to {self._safe} failed; not re-sent (part may have gone out)"
                ) from exc
            return

    def enable_push(
        self,
        data_types: Sequence[str] | AllTypes | None = None,
        push_state: str | None = None,
    ) -> None:
        """Enable push now (if connected) and on every later connection.

        ``push_state`` asks for a replay from that token (RFC 8887 §4.3.5.2); later
        reconnects use the latest pushState received. Raises
        :class:`~jmapws_sync.PushUnavailable` when the Session resource says the server
        has no push. A connection that breaks while this is sent gets it on the next one.
        """
        self._check_forked()
        types = _types_option(data_types)
        session = self._sup.session
        ws_cap = session.websocket if session is not None else None
        if ws_cap is not None and not ws_cap.supports_push:
            raise PushUnavailable("the server's Session resource says supportsPush: false")
        sup = self._sup
        with sup.cond:
            sup.push = True
            sup.data_types = types
            if push_state is not None:
                sup.resume_state = push_state
            link = sup.live()
        if link is not None:
            if uses_eventsource(self._sup.settings.push_via, link.inner):
                self._eventsource_for(link.inner)
            else:
                self._on_link(link, lambda inner: inner.enable_push(types, push_state))

    def disable_push(self) -> None:
        """Stop push now (if connected) and on every later connection."""
        self._check_forked()
        sup = self._sup
        with sup.cond:
            sup.push = False
            link = sup.live()
        with self._es_lock:
            by_eventsource = self._es is not None
        if by_eventsource:
            self._stop_eventsource()
        elif link is not None:
            self._on_link(link, lambda inner: inner.disable_push())

    def _on_link(self, link: Link, send: Callable[[Channel], None]) -> None:
        try:
            send(link.inner)
        except (TransportError, SessionClosed) as exc:
            self._sup.lost(link, exc)  # the reconnect does it

    # ------------------------------------------------------------------ EventSource push

    def _eventsource_for(self, inner: Channel) -> None:
        """The supervisor's call on a new connection when push goes over the EventSource
        (RFC 8620 §7.3): start one (or another, for other types) and wait until it is
        open, so that push is on when :meth:`wait_connected` returns, as with WebSocket
        push. One EventSource serves every connection: it reconnects by itself."""
        sup = self._sup
        with sup.cond:
            types = sup.data_types
            last_id = sup.resume_state
        wanted = None if types is None or isinstance(types, AllTypes) else tuple(types)
        resource = inner.session
        if resource is None or not resource.event_source_url:
            raise PushUnavailable("the Session resource names no eventSourceUrl")
        with self._es_lock:
            es = self._es
            if es is None or self._es_types != wanted:
                if es is not None:
                    es.close(timeout=0)
                    last_id = es.last_event_id or last_id
                interval = sup.settings.ping_interval
                ping = 0 if interval is None else max(1, min(round(interval), 300))
                es = self._es = EventSourcePush(
                    resource.event_source_url,
                    settings=inner.http_settings,
                    ping=ping,  # the keepalive: as the WebSocket pings, the server does
                    types=wanted,
                    deliver=sup.inbox.put,
                    on_reconnect=_weakly(self._eventsource_reconnected),
                    on_fatal=sup.fail,
                    backoff=self._backoff,
                    last_event_id=last_id,
                    name=f"jmapws-eventsource-{sup.number}",
                ).start()
                self._es_types = wanted
        if not es.settled.wait(sup.settings.connect_timeout):
            raise TimeoutError(f"the EventSource of {self._safe} did not open in time")
        if es.error is not None:
            raise es.error

    def _eventsource_reconnected(self, reopened: Reopened) -> None:
        """The EventSource's thread: a stream opened again. The stream gets a marker there,
        as after a WebSocket reconnect, so ``on_reconnect`` and :meth:`events` hear of it.
        Its ``count`` is the EventSource's own (:attr:`reconnects` counts connections)."""
        boundary = Boundary()
        boundary.info = ReconnectInfo(
            count=reopened.count,
            cause=reopened.cause,
            close_code=None,
            attempts=reopened.attempts,
            disconnected_at=reopened.lost_at,
            downtime=time.monotonic() - reopened.lost_at,
            push_resumed=reopened.resumed_from is not None,
            push_state=reopened.resumed_from,
        )
        boundary.ready = True
        self._sup.inbox.put_marker(boundary)

    def _stop_eventsource(self) -> None:
        with self._es_lock:
            es, self._es, self._es_types = self._es, None, None
        if es is not None:
            es.close(timeout=self._close_timeout)

    # ------------------------------------------------------------------ blobs

    def _for_blobs(self, timeout: float | None) -> Channel:
        """The current connection's session, whose HTTP settings and Session resource a
        transfer uses (waiting up to ``timeout`` for one); the transfer itself does not
        need the WebSocket to stay up."""
        self._check_forked()
        return self._sup.wait_connected(Deadline(timeout).at).inner

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
        """:meth:`WsSession.upload <jmapws_sync.WsSession.upload>`, over the current
        connection's settings (``timeout`` also bounds waiting for one)."""
        return self._for_blobs(timeout).upload(
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
        """:meth:`WsSession.download <jmapws_sync.WsSession.download>`; a download goes
        on across a reconnect of the WebSocket."""
        return self._for_blobs(timeout).download(
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
        """:meth:`WsSession.open_blob <jmapws_sync.WsSession.open_blob>`."""
        return self._for_blobs(timeout).open_blob(
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
        """:meth:`WsSession.read_blob <jmapws_sync.WsSession.read_blob>`."""
        return self._for_blobs(timeout).read_blob(
            blob_id, offset=offset, length=length, account_id=account_id, timeout=timeout
        )

    # ------------------------------------------------------------------ receiving

    def next_frame(self, timeout: float | None = None) -> Frame:
        """The next frame from the server, across reconnects, blocking up to ``timeout``.

        Frames of a connection that ended come first, then ``on_reconnect`` runs (in this
        thread), then the frames of the new connection. Never returns ``None``: a clean
        close by the server is followed by a reconnect.

        Raises :class:`TimeoutError`; :class:`~jmapws_sync.ProtocolViolation` and
        :class:`~jmapws_sync.ParseError` with the stream still usable; whatever
        ``on_reconnect`` raises; the fatal error once, then
        :class:`~jmapws_sync.SessionClosed`; :class:`~jmapws_sync.SessionClosed` after
        :meth:`close` (once the frames received before have been returned).
        """
        self._check_forked()
        frame = self._sup.inbox.get(check_timeout(timeout))
        assert frame is not None  # the stream never ends cleanly: it is closed or fails
        if type(frame) is Response:
            self._check_session_state(frame)
        return frame

    def changes(self, timeout: float | None = None) -> Iterator[StateChange]:
        """Iterate over StateChange frames, across reconnects.

        ``timeout`` bounds each wait for the next change (:class:`TimeoutError`). Other
        frames met meanwhile stay, in order, for the next :meth:`next_frame` calls. Ends
        only by an exception, as :meth:`next_frame` raises them.
        """
        self._check_forked()
        return self._sup.inbox.changes(check_timeout(timeout))

    def events(self, timeout: float | None = None) -> Iterator[StateChange | ReconnectInfo]:
        """Iterate over StateChange frames and reconnects, in the order of the stream.

        As :meth:`changes`, and a :class:`ReconnectInfo` comes where a new connection
        began (after ``on_reconnect`` ran for it): the point after which a consumer that
        keeps state should catch up with ``/changes``, whatever the server did with the
        pushState (:class:`~jmapws_sync.ChangeFeed` does). Reconnects with no frame
        between them come as one, the latest.
        """
        self._check_forked()
        inbox, limit = self._sup.inbox, check_timeout(timeout)
        while True:
            item = inbox.get_event(limit)
            if isinstance(item, Boundary):
                if item.info is not None:
                    yield item.info
            elif isinstance(item, StateChange):
                yield item

    # ------------------------------------------------------------------ Session resource

    def _check_session_state(self, response: Response) -> None:
        """A Response says the Session resource changed (RFC 8620 §2): the supervisor
        fetches it again, in its own thread, so that this call is not held by it."""
        self._sup.want_session(response.session_state)

    # ------------------------------------------------------------------ closing

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> None:
        """Close the current connection and stop reconnecting; idempotent, any thread.

        Returns at once during a backoff wait. ``timeout`` (default ``close_timeout``)
        bounds the wait for the server's Close reply and for the supervisor thread.
        Frames received before stay readable; :meth:`next_frame` then raises
        :class:`~jmapws_sync.SessionClosed`.
        """
        if code != 1000 and not 3000 <= code <= 4999:
            raise ValueError(f"close() takes 1000 or a code in 3000-4999, not {code!r}")
        close_payload(code, reason)  # ValueError for a reason over 123 bytes, before anything
        wait = self._close_timeout if timeout is None else check_timeout(timeout)
        self._stop_eventsource()
        self._sup.close(code, reason, wait)

    def __enter__(self) -> ReconnectingSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Collected without close(): stop reconnecting, with a ResourceWarning (the
        # supervisor thread refers to the Supervisor only, not to this object).
        sup = getattr(self, "_sup", None)
        if sup is None or sup.closing or sup.forked:
            return
        text = f"unclosed <ReconnectingSession {self._safe}>"
        warnings.warn(text, ResourceWarning, stacklevel=1, source=self)
        es = getattr(self, "_es", None)
        if es is not None:
            finalize(es.close, 0.0)
        finalize(sup.close, 1000, "", 0.0)

    def __repr__(self) -> str:
        sup = self._sup
        if sup.closing:
            state = "closed"
        elif sup.final is not None:
            state = f"failed ({type(sup.final).__name__})"
        else:
            state = "connected" if self.connected else "connecting"
        return f"<ReconnectingSession {self._safe} {state} reconnects={sup.reconnects}>"
