"""ReconnectingSession: a JMAP WebSocket connection that heals itself.

Long-lived threaded applications (a push listener, a daemon that calls the server now and
then) want one object that stays connected: it reconnects with backoff, notices a peer
that has silently gone away, resumes push where it stopped, and tells the application
what happened. :class:`ReconnectingSession` wraps one :class:`~jmapws_sync.WsSession` at a
time and replaces it when it ends::

    with jws.ReconnectingSession("https://host", auth=jws.BearerAuth(token), push=True) as rs:
        for change in rs.changes():
            ...

How it works
------------
One named daemon *supervisor* thread per ReconnectingSession owns the connection's life:
it connects (with discovery for an http(s) URL, directly for a ws(s) URL), re-enables
push, sends keepalive pings, notices the end of a connection, classifies why it ended
(:func:`classify`), waits out the backoff delay and connects again. It never runs user
code and never reads frames the application is waiting for, except to move the unread
frames of a connection that ended into a backlog that :meth:`next_frame` returns first
(so nothing that arrived before a break is lost, and order is kept).

The constructor returns at once: the first connection is made by the supervisor in the
background (eager, not blocking). :meth:`wait_connected` blocks until it is up and raises
a fatal error (bad credentials, no WebSocket support...) if there is one.

What is retried
---------------
:func:`classify` decides, in one place, for every way a connection attempt or an open
connection can end:

=========================================================  =======
outcome                                                    verdict
=========================================================  =======
server's clean close: 1000, 1001 (going away), 1005        RETRY
ConnectionClosedError 1006 1009 1011 1012 1013 1014,       RETRY
and 3000-4999 (application codes)
ConnectionClosedError 1002 1003 1007 1010 (the server      FATAL
says *we* broke the protocol: a new connection would too)
other TransportError: refused, reset, EOF without Close,   RETRY
bad framing, message over the limit, KeepaliveTimeout
TransportError caused by a failed TLS certificate check    FATAL
TimeoutError (discovery, handshake)                        RETRY
HandshakeError / SessionError with HTTP 408, 429, 5xx      RETRY
the same with another status or none (subprotocol          FATAL
refused, bad Session resource, no WebSocket, downgrade)
AuthenticationError: HTTP 401/403, close 1008              REAUTH
PushUnavailable (push asked for, the server has none)      FATAL
SessionClosed                                              as its ``cause`` (RETRY if none)
plain OSError                                              RETRY
anything else (a bug, an exception raised by ``auth``)     FATAL
=========================================================  =======

REAUTH means "never again with the same credentials": the ``auth`` callable is called
once more; if it returns different headers (a refreshed token), one attempt is made with
them at once, without backoff; if they are the same (``BasicAuth``, a fixed token), or
the fresh ones are refused too, the error is fatal. A server's clean close (1000) is
followed by a reconnect, like 1001: a long-lived listener wants to stay connected, and a
server that wants a client gone refuses its credentials (1008, 401). The backoff keeps a
server that accepts and closes at once from being hammered (it is not reset unless a
connection stayed up ``reset_after`` seconds).

A fatal error ends the ReconnectingSession: :meth:`next_frame` and :meth:`changes` raise
it once, after the frames that arrived before it, then :class:`~jmapws_sync.SessionClosed`
(whose ``cause`` is the error); :meth:`call`, ``send_*``, :meth:`enable_push` and
:meth:`wait_connected` raise the error itself every time.

Keepalive
---------
When nothing has arrived for ``ping_interval`` seconds, the supervisor sends a WebSocket
Ping; if nothing at all (Pong or frame, :attr:`WsSession.last_activity
<jmapws_sync.WsSession.last_activity>`) arrives within ``ping_timeout`` seconds after it,
the connection is declared dead (:class:`KeepaliveTimeout`), dropped without waiting for
a Close reply, and replaced. A dead peer is therefore detected at most ``ping_interval +
ping_timeout`` seconds after the last sign of life (40 s with the defaults). A busy
connection sends no pings; an idle one wakes the supervisor twice per interval and costs
no CPU in between (it waits on a condition with a timeout, never in a sleep loop). With
``ping_interval=None`` an end that no consumer or call runs into is noticed at the next
use (WsSession has no end callback to wake the supervisor).

Resume
------
After a reconnect, push is enabled again with the same data types and the last
``pushState`` received (:attr:`push_state`), so that the server replays what changed
meanwhile (RFC 8887 §4.3.5.2). Calls in flight when a connection broke fail with
:class:`ConnectionLost` and are *not* re-sent: the server may have run them. The Session
resource is fetched again at every reconnect, and also (by the thread that receives it)
when a Response carries a ``sessionState`` that differs from :attr:`session`'s ``state``.

The application learns of a reconnect through ``on_reconnect(info)``: called with a
:class:`ReconnectInfo`, in the thread that reads frames (:meth:`next_frame` /
:meth:`changes`), at the exact point of the stream where the new connection starts, before
its first frame. ``info.push_resumed`` says whether the server was asked to replay from a
pushState; when it is False (no pushState known yet), or when the server is one that does
not replay, the application should fall back to ``/changes`` calls. :attr:`reconnects`
and :attr:`last_reconnect` tell the same to threads that do not read frames.

Thread safety
-------------
The same rules as :class:`~jmapws_sync.WsSession`: ``call``, ``send_request``,
``send_text``, ``enable_push``, ``disable_push``, ``wait_connected`` and ``close`` are
safe from any thread at any time; ``next_frame`` and ``changes`` are safe from any thread,
and with several consumers each frame goes to exactly one of them (order is only
meaningful with one consumer). ``on_reconnect`` runs in a consumer's thread, never in a
library thread. ``close()`` is idempotent and returns at once, also during a backoff wait;
a connection attempt in progress (bounded by ``connect_timeout``) is abandoned and its
result closed as soon as it completes.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import itertools
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from .auth import Auth
from .discovery import SessionResource, connect, fetch_session
from .errors import (
    AuthenticationError,
    ConnectionClosedError,
    HandshakeError,
    JmapWsError,
    ParseError,
    ProtocolViolation,
    PushUnavailable,
    SessionClosed,
    SessionError,
    TransportError,
)
from .frames import CORE, AllTypes, Frame, Invocation, Request, Response, StateChange
from .session import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_QUEUE, WsSession, _safe_url

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

#: Close codes after which a new connection would fail the same way (RFC 6455 §7.4.1).
FATAL_CLOSE_CODES: Final = frozenset({1002, 1003, 1007, 1010})
_CLEAN_CODES: Final = frozenset({1000, 1001, 1005})
_RETRY_STATUSES: Final = frozenset({408, 429})

_numbers = itertools.count(1)


# ---------------------------------------------------------------------------- errors


class ConnectionLost(TransportError):
    """The connection broke while this call or send was in flight; it was not re-sent.

    The server may or may not have received (and run) the request: only the application
    knows whether running it twice is harmless. ``__cause__`` is the error that ended the
    connection. The ReconnectingSession itself reconnects; the next call uses the new
    connection.
    """


class KeepaliveTimeout(TransportError):
    """Nothing arrived within ``ping_timeout`` after a Ping: the peer is declared dead.

    ``silent_for`` is how long the connection had been silent when it was dropped.
    """

    def __init__(self, message: str, *, silent_for: float) -> None:
        self.silent_for = silent_for
        super().__init__(message)


# ---------------------------------------------------------------------------- policy


class Verdict(enum.Enum):
    """What to do after a connection attempt failed or a connection ended."""

    #: Connect again after the backoff delay.
    RETRY = "retry"
    #: Credentials refused: never again with the same ones (see the module docstring).
    REAUTH = "reauth"
    #: Give up: the error goes to the application.
    FATAL = "fatal"


def classify(error: BaseException | None) -> Verdict:
    """Decide retry, re-authenticate or give up; ``None`` means a clean close by the server.

    The table is in the module docstring; this function is the only place it is decided.
    """
    if error is None:
        return Verdict.RETRY
    if isinstance(error, SessionClosed):
        return classify(error.cause) if error.cause is not None else Verdict.RETRY
    if isinstance(error, AuthenticationError):
        return Verdict.REAUTH
    if isinstance(error, ConnectionClosedError):
        if error.code in _CLEAN_CODES:
            return Verdict.RETRY
        return Verdict.FATAL if error.code in FATAL_CLOSE_CODES else Verdict.RETRY
    if isinstance(error, TransportError):
        if isinstance(error.__cause__, ssl.SSLCertVerificationError):
            return Verdict.FATAL  # the certificate will not become trusted by retrying
        return Verdict.RETRY
    if isinstance(error, TimeoutError):
        return Verdict.RETRY
    if isinstance(error, HandshakeError | SessionError):
        status = error.status
        if status is not None and (status in _RETRY_STATUSES or 500 <= status <= 599):
            return Verdict.RETRY
        return Verdict.FATAL
    if isinstance(error, OSError):
        return Verdict.RETRY
    return Verdict.FATAL


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter: when to try connecting again.

    The first delay is drawn uniformly from ``first`` (so that clients dropped together,
    by a server restart, come back spread out); each next one is the previous base times
    ``factor``, capped at ``ceiling``, then scaled down by up to ``jitter`` (a fraction),
    so a delay is never above the ceiling. The sequence starts again from a fresh first
    delay once a connection has stayed up ``reset_after`` seconds.

    Pure: :meth:`delays` depends only on these numbers and the random source given.
    """

    first: tuple[float, float] = (0.5, 3.0)
    factor: float = 1.6
    ceiling: float = 60.0
    jitter: float = 0.25
    reset_after: float = 60.0

    def __attrs_post_init__(self) -> None:
        low, high = self.first
        if not 0 <= low <= high <= self.ceiling:
            raise ValueError("Backoff needs 0 <= first[0] <= first[1] <= ceiling")
        if self.factor < 1:
            raise ValueError("Backoff.factor must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("Backoff.jitter must be in [0, 1)")
        if self.reset_after < 0:
            raise ValueError("Backoff.reset_after must be >= 0")

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The infinite sequence of delays, in seconds, drawn from ``rng``."""
        low, high = self.first
        base = rng.uniform(low, high)
        yield base
        while True:
            base = min(base * self.factor, self.ceiling)
            yield base * (1.0 - self.jitter * rng.random())


@attrs.frozen(eq=False)
class ReconnectInfo:
    """What ``on_reconnect`` is told: why the old connection ended and how it was replaced."""

    #: Reconnects so far, this one included (1 for the first).
    count: int
    #: Why the previous connection ended; ``None`` when the server closed it cleanly.
    cause: BaseException | None
    #: The close code the server sent on the previous connection, if any.
    close_code: int | None
    #: Connection attempts this reconnect took (1 when the first one worked).
    attempts: int
    #: ``time.monotonic()`` when the previous connection was found to have ended.
    disconnected_at: float
    #: Seconds from then until the new connection was up.
    downtime: float
    #: True when push was enabled again *with a pushState*: the server was asked to
    #: replay what changed meanwhile. False when push is off or no pushState was known.
    push_resumed: bool
    #: The pushState sent with the new WebSocketPushEnable, if any.
    push_state: str | None


# ---------------------------------------------------------------------------- internals


class _Boundary:
    """Backlog marker: the frames after it come from a new connection."""

    __slots__ = ("info",)

    def __init__(self, info: ReconnectInfo) -> None:
        self.info = info


_Item = Frame | BaseException | _Boundary


class _Conn:
    """One WsSession and what the ReconnectingSession knows about it (guarded by _cond)."""

    __slots__ = ("down", "exhausted", "failure", "fingerprint", "inner", "up_at")

    def __init__(self, inner: WsSession, fingerprint: str | None) -> None:
        self.inner = inner
        self.fingerprint = fingerprint
        self.up_at = time.monotonic()
        #: Not to be used for sending any more; the supervisor is replacing it.
        self.down = False
        #: Every frame it received has been handed out or moved to the backlog.
        self.exhausted = False
        #: The first error a caller or the keepalive saw on it.
        self.failure: BaseException | None = None


@attrs.define
class _Ended:
    cause: BaseException | None
    close_code: int | None
    at: float


class _Attempt:
    """The fingerprint of the credentials one connection attempt sent."""

    __slots__ = ("fingerprint",)

    def __init__(self) -> None:
        self.fingerprint: str | None = None


_PUSH_BARRIER = Request(using=[CORE], method_calls=[Invocation("Core/echo", {}, "push")])


def _fingerprint(headers: Mapping[str, str]) -> str:
    """A digest that tells two sets of credentials apart without keeping them."""
    text = "\n".join(f"{k.lower()}: {v}" for k, v in sorted(headers.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _types_option(data_types: Sequence[str] | AllTypes | None) -> tuple[str, ...] | AllTypes | None:
    """``data_types`` as kept for every connection; each expands ``None`` for its server."""
    if data_types is None or isinstance(data_types, AllTypes):
        return data_types
    if isinstance(data_types, str):
        raise TypeError("data_types must be a sequence of type names, not a string")
    return tuple(data_types)


# ---------------------------------------------------------------------------- session


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

    The other options go to :meth:`WsSession.open <jmapws_sync.WsSession.open>` for every
    connection. ``max_queue`` also bounds the backlog of frames moved over from ended
    connections that nobody has read yet (the oldest are then dropped, with a warning).

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
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"not an http(s) or ws(s) URL: {_safe_url(url)}")
        if ping_interval is not None and (ping_interval <= 0 or ping_timeout <= 0):
            raise ValueError("ping_interval and ping_timeout must be positive")
        self._url = url
        self._safe = _safe_url(url)
        self._discover = scheme in ("http", "https")
        self._auth = auth
        self._backoff = backoff if backoff is not None else Backoff()
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._on_reconnect = on_reconnect
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._proxy = proxy
        self._require_subprotocol = require_subprotocol
        self._close_timeout = close_timeout
        self._max_queue = max_queue
        self._options: dict[str, Any] = {
            "headers": headers,
            "max_message_size": max_message_size,
            "max_queue": max_queue,
            "max_concurrent_requests": max_concurrent_requests,
            "close_timeout": close_timeout,
        }

        self._cond = threading.Condition(threading.Lock())
        # Everything below is guarded by _cond.
        self._push = push
        self._data_types = _types_option(data_types)
        self._push_state = push_state
        self._session: SessionResource | None = None
        self._current: _Conn | None = None
        self._backlog: collections.deque[_Item] = collections.deque()
        self._held: collections.deque[Frame] = collections.deque()
        self._closing = False
        self._final: BaseException | None = None
        self._final_raised = False
        self._reconnects = 0
        self._last_info: ReconnectInfo | None = None
        self._refreshed_for: str | None = None
        self._refresh_lock = threading.Lock()

        self._number = next(_numbers)
        self._thread = threading.Thread(
            target=self._run, name=f"jmapws-reconnect-{self._number}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ state

    @property
    def session(self) -> SessionResource | None:
        """The latest JMAP Session resource (``None`` for a ws(s) URL or before connecting)."""
        return self._session

    @property
    def push_state(self) -> str | None:
        """The latest ``pushState`` received on any connection (persist it to resume later)."""
        with self._cond:
            conn = self._current
            latest = conn.inner.push_state if conn is not None else None
            return latest if latest is not None else self._push_state

    @property
    def reconnects(self) -> int:
        """How many times a connection was replaced (the first connection is not counted)."""
        return self._reconnects

    @property
    def last_reconnect(self) -> ReconnectInfo | None:
        """The :class:`ReconnectInfo` of the latest reconnect, or ``None``."""
        return self._last_info

    @property
    def connected(self) -> bool:
        """True while a connection is up (as far as anyone has noticed)."""
        with self._cond:
            conn = self._current
            return conn is not None and not conn.down and not conn.inner.closed

    @property
    def closed(self) -> bool:
        """True after :meth:`close`, or after a fatal error."""
        return self._closing or self._final is not None

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until a connection is up (with ``push``: and the server has enabled push,
        so no change made after this returns can be missed).

        Raises :class:`TimeoutError`, the fatal error that ended the session, or
        :class:`~jmapws_sync.SessionClosed` after :meth:`close`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_connected(deadline)

    # ------------------------------------------------------------------ sending

    def call(self, request: Request, *, timeout: float | None = None) -> Response:
        """Send ``request`` on the current connection and wait for its Response.

        ``timeout`` covers waiting for a connection (during a reconnect) and for the
        answer. A call in flight when the connection breaks raises :class:`ConnectionLost`
        and is not re-sent. Otherwise raises what :meth:`WsSession.call
        <jmapws_sync.WsSession.call>` raises (:class:`TimeoutError`,
        :class:`~jmapws_sync.RequestFailed`...).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self._wait_connected(deadline)
        try:
            response = conn.inner.call(request, timeout=_remaining(deadline))
        except (TransportError, AuthenticationError, SessionClosed) as exc:
            self._lost(conn, exc)
            if self._closing:
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

    def _send(self, send: Callable[[WsSession], None], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            conn = self._wait_connected(deadline)
            try:
                send(conn.inner)
            except SessionClosed as exc:  # raised before anything was sent: try the next one
                self._lost(conn, exc)
                continue
            except TransportError as exc:
                self._lost(conn, exc)
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
        types = _types_option(data_types)
        session = self._session
        ws_cap = session.websocket if session is not None else None
        if ws_cap is not None and not ws_cap.supports_push:
            raise PushUnavailable("the server's Session resource says supportsPush: false")
        with self._cond:
            self._push = True
            self._data_types = types
            if push_state is not None:
                self._push_state = push_state
            conn = self._live()
        if conn is not None:
            try:
                conn.inner.enable_push(types, push_state)
            except (TransportError, SessionClosed) as exc:
                self._lost(conn, exc)  # the reconnect enables it

    def disable_push(self) -> None:
        """Stop push now (if connected) and on every later connection."""
        with self._cond:
            self._push = False
            conn = self._live()
        if conn is not None:
            try:
                conn.inner.disable_push()
            except (TransportError, SessionClosed) as exc:
                self._lost(conn, exc)

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
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._checked(self._read(deadline, use_held=True))

    def changes(self, timeout: float | None = None) -> Iterator[StateChange]:
        """Iterate over StateChange frames, across reconnects.

        ``timeout`` bounds each wait for the next change (:class:`TimeoutError`). Other
        frames met meanwhile are set aside, in order, for the next :meth:`next_frame`
        calls. Ends only by an exception, as :meth:`next_frame` raises them.
        """
        while True:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                frame = self._read(deadline, use_held=False)
                if type(frame) is StateChange:
                    break
                with self._cond:
                    self._held.append(frame)
            yield frame

    def _read(self, deadline: float | None, *, use_held: bool) -> Frame:
        while True:
            conn: _Conn | None = None
            with self._cond:
                if use_held and self._held:
                    return self._held.popleft()
                if self._backlog:
                    item = self._backlog.popleft()
                else:
                    conn = self._current
                    if conn is None or conn.exhausted:
                        self._raise_stream_end()
                        left = _remaining(deadline)
                        if left is not None and left <= 0:
                            raise TimeoutError("no frame within the timeout (reconnecting)")
                        self._cond.wait(left)
                        continue
            if conn is None:
                if isinstance(item, _Boundary):
                    if self._on_reconnect is not None:
                        self._on_reconnect(item.info)
                    continue
                if isinstance(item, BaseException):
                    raise item
                return item
            try:
                frame = conn.inner.next_frame(_remaining(deadline))
            except (ProtocolViolation, ParseError):
                raise  # the stream is still usable
            except (TransportError, AuthenticationError, SessionClosed) as exc:
                self._exhausted(conn, exc)
                continue
            if frame is None:
                self._exhausted(conn, None)
                continue
            return frame

    def _raise_stream_end(self) -> None:
        """Under _cond: raise what ends the frame stream, if anything does."""
        if self._closing:
            raise SessionClosed()
        final = self._final
        if final is not None:
            if not self._final_raised:
                self._final_raised = True
                raise final
            raise SessionClosed(cause=final)

    def _checked(self, frame: Frame) -> Frame:
        if type(frame) is Response:
            self._check_session_state(frame)
        return frame

    # ------------------------------------------------------------------ Session resource

    def _check_session_state(self, response: Response) -> None:
        """Fetch the Session resource again when a Response says it changed (RFC 8620 §2)."""
        session = self._session
        state = response.session_state
        if session is None or state in (session.state, self._refreshed_for):
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is fetching it right now
        try:
            self._refreshed_for = state  # once per new state, even if the fetch fails
            fresh = fetch_session(
                self._url,
                auth=self._auth,
                timeout=self._connect_timeout,
                ssl_context=self._ssl_context,
                proxy=self._proxy,
            )
        except (JmapWsError, TimeoutError) as exc:
            log.warning("%s: refreshing the Session resource failed: %s", self._safe, exc)
        else:
            self._session = fresh
            log.info("%s: Session resource refreshed (state %s)", self._safe, fresh.state)
        finally:
            self._refresh_lock.release()

    # ------------------------------------------------------------------ closing

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> None:
        """Close the current connection and stop reconnecting; idempotent, any thread.

        Returns at once during a backoff wait. ``timeout`` (default ``close_timeout``)
        bounds the wait for the server's Close reply and for the supervisor thread; a
        connection attempt still running then is closed by the supervisor when it ends.
        Frames received before stay readable; :meth:`next_frame` then raises
        :class:`~jmapws_sync.SessionClosed`.
        """
        with self._cond:
            self._closing = True
            conn = self._current
            self._cond.notify_all()
        if conn is not None:
            conn.inner.close(code, reason, timeout=timeout)
        if threading.current_thread() is not self._thread:
            self._thread.join(self._close_timeout if timeout is None else timeout)

    def __enter__(self) -> ReconnectingSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closing:
            state = "closed"
        elif self._final is not None:
            state = f"failed ({type(self._final).__name__})"
        else:
            state = "connected" if self.connected else "connecting"
        return f"<ReconnectingSession {self._safe} {state} reconnects={self._reconnects}>"

    # ------------------------------------------------------------------ helpers (any thread)

    def _live(self) -> _Conn | None:
        """Under _cond: the current connection if it is usable for sending."""
        conn = self._current
        if conn is None or conn.down or conn.inner.closed:
            return None
        return conn

    def _wait_connected(self, deadline: float | None) -> _Conn:
        with self._cond:
            while True:
                if self._closing:
                    raise SessionClosed()
                if self._final is not None:
                    raise self._final
                conn = self._current
                if conn is not None and not conn.down:
                    if not conn.inner.closed:
                        return conn
                    conn.down = True
                    self._cond.notify_all()
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    raise TimeoutError(f"not connected to {self._safe} within the timeout")
                self._cond.wait(left)

    def _lost(self, conn: _Conn, error: BaseException) -> None:
        """A caller saw ``conn`` fail: wake the supervisor to replace it."""
        with self._cond:
            if conn.failure is None:
                conn.failure = error
            conn.down = True
            self._cond.notify_all()

    def _exhausted(self, conn: _Conn, error: BaseException | None) -> None:
        """A consumer read ``conn`` to its end."""
        with self._cond:
            if conn.failure is None:
                conn.failure = error
            conn.down = conn.exhausted = True
            self._cond.notify_all()

    def _append_backlog(self, item: _Item) -> None:
        """Under _cond: add to the backlog, dropping the oldest beyond ``max_queue``."""
        backlog = self._backlog
        backlog.append(item)
        limit = self._max_queue
        if limit and len(backlog) > limit:
            dropped = backlog.popleft()
            log.warning(
                "%s: %d frames from ended connections are unread; dropped the oldest (%s)",
                self._safe,
                limit,
                type(dropped).__name__,
            )

    # ------------------------------------------------------------------ supervisor thread

    def _run(self) -> None:
        try:
            self._supervise()
        except BaseException as exc:  # a bug must not leave callers blocked forever
            log.exception("reconnect supervisor of %s failed", self._safe)
            self._fail(TransportError(f"reconnect supervisor failed: {exc!r}"))
            raise

    def _fail(self, error: BaseException) -> None:
        """Give up: every waiting and later caller gets ``error``."""
        if not self._closing:
            log.error("%s: giving up: %s: %s", self._safe, type(error).__name__, error)
        with self._cond:
            if self._final is None:
                self._final = error
            self._cond.notify_all()

    def _supervise(self) -> None:
        delays: Iterator[float] | None = None
        override: Mapping[str, str] | None = None  # fresh credentials for the next attempt
        reauth_spent = False
        wait = False
        attempts = 0
        ended: _Ended | None = None  # how the previous connection ended; None at first
        while True:
            if wait:
                if delays is None:
                    delays = self._backoff.delays(self._rng)
                delay = next(delays)
                log.debug("%s: next connection attempt in %.2f s", self._safe, delay)
                with self._cond:
                    if self._cond.wait_for(lambda: self._closing, delay):
                        return
            elif self._closing:
                return
            wait = True
            attempts += 1
            attempt = _Attempt()
            try:
                conn, sent_state = self._open(attempt, override)
            except Exception as exc:  # noqa: BLE001 - classify() decides, fatal ones are kept
                override = None
                verdict = classify(exc)
                if verdict is Verdict.REAUTH and not reauth_spent:
                    override = self._fresh_credentials(attempt.fingerprint)
                    if override is not None:
                        reauth_spent, wait = True, False
                        continue
                if verdict is not Verdict.RETRY:
                    self._fail(exc)
                    return
                log.warning(
                    "%s: connection attempt %d failed (%s: %s)",
                    self._safe,
                    attempts,
                    type(exc).__name__,
                    exc,
                )
                continue
            override, reauth_spent = None, False
            with self._cond:
                closing = self._closing
                if not closing:
                    self._current = conn
                    if conn.inner.session is not None:
                        self._session = conn.inner.session
                    if ended is not None:
                        self._reconnects += 1
                        info = ReconnectInfo(
                            count=self._reconnects,
                            cause=ended.cause,
                            close_code=ended.close_code,
                            attempts=attempts,
                            disconnected_at=ended.at,
                            downtime=conn.up_at - ended.at,
                            push_resumed=sent_state is not None,
                            push_state=sent_state,
                        )
                        self._last_info = info
                        self._append_backlog(_Boundary(info))
                    self._cond.notify_all()
            if closing:
                conn.inner.close(timeout=0)
                return
            if ended is not None:
                log.info("%s: reconnected after %d attempt(s)", self._safe, attempts)
            attempts = 0
            if not self._watch(conn):
                return  # close() was called; it closes the connection
            ended = self._end(conn)
            if ended.at - conn.up_at >= self._backoff.reset_after:
                delays = None
            verdict = classify(ended.cause)
            if verdict is Verdict.REAUTH:
                override = self._fresh_credentials(conn.fingerprint)
                if override is None:
                    verdict = Verdict.FATAL
                else:
                    reauth_spent, wait = True, False
            if verdict is Verdict.FATAL:
                assert ended.cause is not None  # a clean close is never fatal
                self._fail(ended.cause)
                return
            log.warning(
                "%s: connection lost (%s); reconnecting",
                self._safe,
                f"close {ended.close_code}" if ended.cause is None else repr(ended.cause),
            )

    def _open(
        self, attempt: _Attempt, override: Mapping[str, str] | None
    ) -> tuple[_Conn, str | None]:
        """One connection attempt; push enabled. Returns the connection and the pushState sent."""
        auth = self._auth_for(attempt, override)
        if self._discover:
            inner = connect(
                self._url,
                auth=auth,
                timeout=self._connect_timeout,
                ssl_context=self._ssl_context,
                proxy=self._proxy,
                require_subprotocol=self._require_subprotocol,
                **self._options,
            )
        else:
            inner = WsSession.open(
                self._url,
                auth=auth,
                timeout=self._connect_timeout,
                ssl_context=self._ssl_context,
                proxy=self._proxy,
                require_subprotocol=self._require_subprotocol,
                **self._options,
            )
        with self._cond:
            push, types, state = self._push, self._data_types, self._push_state
        sent: str | None = None
        if push:
            try:
                inner.enable_push(types, state)  # RFC 8887 §4.3.5.2: replay from pushState
                # One round trip (Core/echo, which every server has, RFC 8620 §4): once it
                # is answered the server has handled the enable, so "connected" means
                # "push is on" and no change made after wait_connected() can be missed.
                inner.call(_PUSH_BARRIER, timeout=self._connect_timeout)
            except BaseException:
                inner.close(timeout=0)
                raise
            sent = state
        return _Conn(inner, attempt.fingerprint), sent

    def _auth_for(self, attempt: _Attempt, override: Mapping[str, str] | None) -> Auth | None:
        """The auth for one attempt: records what it sent; ``override`` replaces the call."""
        user_auth = self._auth
        if user_auth is None:
            return None

        def recording() -> Mapping[str, str]:
            headers = override if override is not None else user_auth()
            attempt.fingerprint = _fingerprint(headers)
            return headers

        return recording

    def _fresh_credentials(self, failed: str | None) -> Mapping[str, str] | None:
        """Call ``auth`` once more: the new headers if they differ from the refused ones."""
        if self._auth is None or failed is None:
            return None
        try:
            fresh = dict(self._auth())
        except Exception:  # the refused credentials' error is what the application gets
            log.exception("%s: the auth callable failed", self._safe)
            return None
        if _fingerprint(fresh) == failed:
            log.debug("%s: auth returned the same credentials; not retrying", self._safe)
            return None
        log.info("%s: credentials refused; trying fresh ones once", self._safe)
        return fresh

    def _watch(self, conn: _Conn) -> bool:
        """Keepalive until ``conn`` ends (True) or close() is called (False)."""
        inner = conn.inner
        interval, limit = self._ping_interval, self._ping_timeout
        ping_sent: float | None = None
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return False
                    if conn.down or inner.closed:
                        conn.down = True
                        return True
                    if interval is None:
                        self._cond.wait()
                        continue
                    now = time.monotonic()
                    last = inner.last_activity
                    if ping_sent is not None and last >= ping_sent:
                        ping_sent = None  # a sign of life since the ping
                    if ping_sent is not None:
                        if now - ping_sent >= limit:
                            silent = now - last
                            conn.failure = KeepaliveTimeout(
                                f"no sign of life from {self._safe} for {silent:.2f} s"
                                f" ({limit:g} s after a Ping)",
                                silent_for=silent,
                            )
                            conn.down = True
                            log.warning("%s", conn.failure)
                            return True
                        self._cond.wait(ping_sent + limit - now)
                    elif now - last >= interval:
                        break  # ping, outside the lock
                    else:
                        self._cond.wait(last + interval - now)
            ping_sent = time.monotonic()
            try:
                inner.ping()
            except (TransportError, SessionClosed) as exc:
                self._lost(conn, exc)

    def _end(self, conn: _Conn) -> _Ended:
        """Drop ``conn``, move its unread frames to the backlog, and say why it ended."""
        at = time.monotonic()
        inner = conn.inner
        inner.close(1000, "reconnecting", timeout=0)  # no-op if the server already closed
        items: list[_Item] = []
        drained: BaseException | None = None
        clean = False
        while True:  # after close() the end marker is queued: this never waits
            try:
                frame = inner.next_frame(timeout=0)
            except (ProtocolViolation, ParseError) as exc:
                items.append(exc)
                continue
            except SessionClosed as exc:
                drained = exc.cause
                break
            except (TransportError, AuthenticationError) as exc:
                drained = exc
                break
            except TimeoutError:
                log.warning("%s: no end marker after close(); frames may be lost", self._safe)
                break
            if frame is None:
                clean = True
                break
            items.append(frame)
        cause: BaseException | None
        if isinstance(conn.failure, KeepaliveTimeout):
            cause = conn.failure
        elif drained is not None:
            cause = drained
        elif clean:
            cause = None
        else:
            cause = conn.failure or TransportError(f"connection to {self._safe} ended")
        with self._cond:
            for item in items:
                self._append_backlog(item)
            conn.down = conn.exhausted = True
            if inner.push_state is not None:
                self._push_state = inner.push_state
            self._cond.notify_all()
        return _Ended(cause, inner.close_code, at)
