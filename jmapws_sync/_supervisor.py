"""The supervisor of a ReconnectingSession: one thread that keeps one connection up.

It connects (by discovery for an http(s) URL), enables push, sends keepalive pings,
notices the end of a connection (every connection reports it through ``on_end``), asks
:class:`~jmapws_sync.policy.RetryState` whether to wait, re-authenticate or give up, and
connects again. It never runs user code and never reads frames: every connection puts
its frames into one shared :class:`~jmapws_sync._inbox.Inbox`, and when a connection that
was up ends, the supervisor puts a :class:`Boundary` there, after its last frame. The
boundary becomes ready, with the :class:`ReconnectInfo`, once the next connection is up;
the consumer that reaches it runs ``on_reconnect`` (in its own thread), so frames keep
their order across connections and none is lost.

The thread refers to the :class:`Supervisor` only, never to the public
ReconnectingSession, so that a session nobody holds any more can be collected.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import os
import random
import ssl
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._http import HttpSettings
from ._inbox import Inbox, Marker
from ._net import Cancel, check_timeout, same_origin
from .auth import Auth
from .client import connect
from .discovery import fetch_session
from .errors import JmapWsError, KeepaliveTimeout, SessionClosed, TransportError
from .frames import CORE, AllTypes, Invocation, Request
from .httpcalls import HttpLink
from .policy import Action, Backoff, Decision, RetryState
from .resource import SessionResource
from .session import WsSession

__all__ = ["Attempt", "Boundary", "Link", "ReconnectInfo", "Settings", "Supervisor"]

log = logging.getLogger(__name__)

# One round trip (Core/echo, which every server has, RFC 8620 §4) after the push enable:
# once it is answered the server has handled the enable, so "connected" means "push is
# on" and no change made after wait_connected() can be missed.
_PUSH_BARRIER = Request(using=[CORE], method_calls=[Invocation("Core/echo", {}, "push")])


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


@attrs.frozen
class Settings:
    """How the supervisor connects; fixed for the life of a ReconnectingSession."""

    url: str
    safe: str
    discover: bool
    auth: Auth | None
    connect_timeout: float | None
    ssl_context: ssl.SSLContext | None
    proxy: str | None
    require_subprotocol: bool
    session_options: Mapping[str, Any]
    ping_interval: float | None
    ping_timeout: float
    on_reconnect: Callable[[ReconnectInfo], object] | None
    #: ``"websocket"``, ``"eventsource"`` or ``"auto"`` (see ReconnectingSession).
    push_via: str = "websocket"
    #: Called (in the supervisor thread) on each new connection instead of enabling
    #: WebSocket push, when push goes over an EventSource; it starts or keeps one.
    eventsource: Callable[[Channel], object] | None = None
    #: ``"websocket"``, ``"http"`` or ``"auto"`` (HTTP where the server has no WebSocket).
    transport: str = "websocket"


#: What a link holds: a WebSocket connection, or calls over HTTP POST.
Channel = WsSession | HttpLink


def uses_eventsource(push_via: str, inner: Channel) -> bool:
    """Whether push for ``inner``'s server goes over its EventSource: when asked, or
    (``"auto"``) when its WebSocket does not push and it has an ``eventSourceUrl``."""
    if push_via == "eventsource" or isinstance(inner, HttpLink):
        return True
    if push_via != "auto" or inner.session is None:
        return False
    ws_cap = inner.session.websocket
    return not (ws_cap is not None and ws_cap.supports_push) and bool(
        inner.session.event_source_url
    )


def _drop_locals(error: BaseException | None) -> None:
    """Clear the local variables of the frames in ``error``'s tracebacks, its causes' too.

    The cause of a lost connection outlives it (in :class:`ReconnectInfo`, which the
    application may keep); its traceback's frames are the dead connection's reader, whose
    locals hold the connection, its socket, buffers and zlib streams. The traceback still
    prints (file, line, function); only the variables go.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if error.__traceback__ is not None:
            traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


class Boundary(Marker):
    """Where one connection's frames end and the next one's begin."""

    __slots__ = ("info",)

    def __init__(self) -> None:
        super().__init__(ready=False)
        self.info: ReconnectInfo | None = None


@attrs.define(eq=False)
class Attempt:
    """One connection attempt: what it sent, and (written by its reader) how it ended."""

    #: The digest of the credentials it was opened with (see :func:`_fingerprint`).
    fingerprint: str | None = None
    #: How its stream ended, once it has: ``(error or None, local)``.
    ended: tuple[BaseException | None, bool] | None = None


@attrs.define(eq=False)
class Link:
    """A connection that is up, and what the supervisor knows of it (under ``cond``)."""

    inner: Channel
    attempt: Attempt
    up_at: float = attrs.field(factory=time.monotonic)
    #: Not to be used for sending any more; the supervisor is replacing it.
    down: bool = False
    #: The first error a caller or the keepalive saw on it.
    failure: BaseException | None = None
    #: The pushState sent with its WebSocketPushEnable (None: push off, or no state).
    sent_push_state: str | None = None


@attrs.frozen
class _Lost:
    cause: BaseException | None
    close_code: int | None
    at: float


def _fingerprint(headers: Mapping[str, str]) -> str:
    """A digest that tells two sets of credentials apart without keeping them."""
    text = "\n".join(f"{k.lower()}: {v}" for k, v in sorted(headers.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_LIVE: weakref.WeakSet[Supervisor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for supervisor in list(_LIVE):
        supervisor.forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class Supervisor:
    """The state of a ReconnectingSession and the thread that keeps it connected."""

    def __init__(
        self,
        settings: Settings,
        *,
        rng: random.Random,
        backoff: Backoff,
        push: bool,
        data_types: tuple[str, ...] | AllTypes | None,
        push_state: str | None,
        max_queue: int,
        number: int,
    ) -> None:
        self.settings = settings
        self.number = number
        self._rng = rng
        self._retry = RetryState(backoff)
        self.inbox = Inbox(max_queue=max_queue, name=settings.safe, on_marker=self._reached)
        self.cond = threading.Condition(threading.Lock())
        # Guarded by cond.
        self.push = push
        self.data_types = data_types
        self.resume_state = push_state
        self.session: SessionResource | None = None
        self.current: Link | None = None
        self.closing = False
        self.final: BaseException | None = None
        self.reconnects = 0
        self.last_info: ReconnectInfo | None = None
        self._opening: Channel | None = None  # an attempt between handshake and push on
        self._refresh: str | None = None  # a sessionState whose Session resource is wanted
        self._refreshed: str | None = None
        self._fetching = False
        self._cancel = Cancel()  # fired by close(): aborts an attempt under way
        self._pings = itertools.count(1)
        #: Set in a process forked from the one that made this: nothing here is ours.
        self.forked = False
        _LIVE.add(self)
        self.thread = threading.Thread(
            target=self._run, name=f"jmapws-reconnect-{number}", daemon=True
        )
        self.thread.start()

    # ------------------------------------------------------------------ any thread

    def live(self) -> Link | None:
        """Under ``cond``: the current connection if it is usable for sending."""
        link = self.current
        if link is None or link.down or link.inner.closed:
            return None
        return link

    def wait_connected(self, deadline: float | None) -> Link:
        """The current connection, once there is one; raises what ends the session."""
        with self.cond:
            while True:
                if self.closing:
                    raise SessionClosed()
                if self.final is not None:
                    raise self.final
                link = self.current
                if link is not None and not link.down:
                    if not link.inner.closed:
                        return link
                    link.down = True
                    self.cond.notify_all()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"not connected to {self.settings.safe} within the timeout")
                self.cond.wait(left)

    def lost(self, link: Link, error: BaseException) -> None:
        """A caller saw ``link`` fail: replace it."""
        with self.cond:
            if link.failure is None:
                link.failure = error
            link.down = True
            self.cond.notify_all()

    def close(self, code: int, reason: str, timeout: float | None) -> None:
        """Stop: close the current connection, end the stream, join the thread.

        In a forked child, only mark it closed: the thread and the sockets are the
        parent's, and so may be the locks.
        """
        if self.forked:
            self.closing = True
            return
        with self.cond:
            self.closing = True
            link, opening = self.current, self._opening
            self.cond.notify_all()
        self._cancel.cancel()  # an attempt stuck in discovery or the handshake ends now
        if opening is not None:
            opening.close(timeout=0)  # ... and one waiting for its push barrier
        if link is not None:
            link.inner.close(code, reason, timeout=math.inf if timeout is None else timeout)
        self.inbox.finish(local=True)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def fail(self, error: BaseException) -> None:
        """End the session with ``error`` from another thread (the EventSource's, when its
        credentials are refused): every caller gets it, the stream ends with it."""
        self._give_up(error)  # the supervisor stops at its next step (final is set)
        with self.cond:
            link = self.current
            if link is not None:
                link.down = True
            self.cond.notify_all()

    def want_session(self, state: str) -> None:
        """A Response carried ``state`` as its sessionState: fetch the Session resource
        again (in the supervisor thread, so the caller's call() is not held) if it is new."""
        with self.cond:
            session = self.session
            if session is None or state in (session.state, self._refreshed, self._refresh):
                return
            self._refresh = state
            self.cond.notify_all()

    def fresh_session(self, deadline: float | None) -> SessionResource | None:
        """The Session resource once no refresh is pending or under way."""
        with self.cond:
            while self._refresh is not None or self._fetching:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("the Session resource was not refreshed in time")
                self.cond.wait(left)
            return self.session

    # ------------------------------------------------------------------ consumer threads

    def _reached(self, marker: Marker) -> None:
        """A consumer reached a boundary: tell the application, in the consumer's thread."""
        info = marker.info if isinstance(marker, Boundary) else None
        callback = self.settings.on_reconnect
        if info is not None and callback is not None:
            callback(info)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._supervise()
        except BaseException as exc:  # a bug must not leave callers blocked forever
            log.exception("reconnect supervisor of %s failed", self.settings.safe)
            self._give_up(TransportError(f"reconnect supervisor failed: {exc!r}"))
            raise

    def _supervise(self) -> None:
        delay = 0.0
        override: Mapping[str, str] | None = None  # fresh credentials for the next attempt
        boundary: Boundary | None = None  # the stream waits there for the next connection
        lost: _Lost | None = None  # how the previous connection ended
        while True:
            if self._sleep(delay):
                return
            self._retry = self._retry.attempted()
            attempt = Attempt()
            try:
                link = self._open(attempt, override)
            except Exception as exc:  # noqa: BLE001 - RetryState decides, fatal ones are kept
                decision, self._retry = self._retry.after(exc, self._rng)
                if decision.action is Action.WAIT:
                    log.warning(
                        "%s: connection attempt %d failed (%s: %s)",
                        self.settings.safe,
                        self._retry.attempts,
                        type(exc).__name__,
                        exc,
                    )
                delay, override = self._follow(decision, exc, attempt.fingerprint)
                if self.final is not None:
                    return
                continue
            if not self._install(link, boundary, lost):
                link.inner.close(timeout=0)
                return
            self._retry, boundary, override = self._retry.connected(), None, None
            if not self._watch(link):
                return  # close() was called; it closes the connection
            lost = self._end(link)
            self._retry = self._retry.ended(lost.at - link.up_at)
            boundary = Boundary()
            self.inbox.put_marker(boundary)
            decision, self._retry = self._retry.after(lost.cause, self._rng)
            delay, override = self._follow(decision, lost.cause, link.attempt.fingerprint)
            if self.final is not None:
                return
            log.warning(
                "%s: connection lost (%s); reconnecting",
                self.settings.safe,
                f"close {lost.close_code}" if lost.cause is None else repr(lost.cause),
            )

    def _follow(
        self, decision: Decision, error: BaseException | None, fingerprint: str | None
    ) -> tuple[float, Mapping[str, str] | None]:
        """Carry ``decision`` out: the delay before the next attempt and its credentials.

        Gives up (the session's final error is then set) when told to, or when fresh
        credentials were asked for and ``auth`` has none.
        """
        if decision.action is Action.WAIT:
            return decision.delay, None
        if decision.action is Action.REAUTH:
            fresh = self._fresh_credentials(fingerprint)
            if fresh is not None:
                return 0.0, fresh
        assert error is not None  # a clean close is never fatal
        self._give_up(error)
        return 0.0, None

    def _sleep(self, delay: float) -> bool:
        """Wait out the backoff ``delay``; True if close() was called meanwhile."""
        with self.cond:
            if delay > 0:
                log.debug("%s: next connection attempt in %.2f s", self.settings.safe, delay)
                return self.cond.wait_for(lambda: self.closing, check_timeout(delay))
            return self.closing

    def _give_up(self, error: BaseException) -> None:
        """Every waiting and later caller gets ``error``; the stream ends with it."""
        if not self.closing:
            log.error("%s: giving up: %s: %s", self.settings.safe, type(error).__name__, error)
        with self.cond:
            if self.final is None:
                self.final = error
            self.cond.notify_all()
        self.inbox.finish(error)

    def _open(self, attempt: Attempt, override: Mapping[str, str] | None) -> Link:
        """One connection attempt, with push enabled when it is asked for."""
        s = self.settings
        options: dict[str, Any] = {
            "auth": self._auth_for(attempt, override),
            "timeout": s.connect_timeout,
            "ssl_context": s.ssl_context,
            "proxy": s.proxy,
            "require_subprotocol": s.require_subprotocol,
            "inbox": self.inbox,
            "on_end": functools.partial(self._on_end, attempt),
            "cancel": self._cancel,
            **s.session_options,
        }
        inner = self._channel(attempt, options)
        with self.cond:
            push, types, state = self.push, self.data_types, self.resume_state
            closing = self.closing
            self._opening = inner
        link = Link(inner, attempt)
        try:
            if push and not closing:
                if s.eventsource is not None and uses_eventsource(s.push_via, inner):
                    s.eventsource(inner)  # the EventSource pushes; it outlives this link
                else:
                    inner.enable_push(types, state)  # RFC 8887 §4.3.5.2: replay
                    inner.call(_PUSH_BARRIER, timeout=s.connect_timeout)
                    link.sent_push_state = state
        except BaseException:
            inner.close(timeout=0)
            raise
        finally:
            with self.cond:
                self._opening = None
        return link  # if closing, _install() refuses it and closes it

    def _channel(self, attempt: Attempt, options: dict[str, Any]) -> Channel:
        """A WebSocket connection, or (``transport``) calls over HTTP where the server
        has no WebSocket or the user asked for HTTP."""
        s = self.settings
        if not s.discover:
            return WsSession.open(s.url, **options)
        if s.transport == "websocket":
            return connect(s.url, **options)
        resource = fetch_session(
            s.url,
            auth=options["auth"],
            timeout=s.connect_timeout,
            ssl_context=s.ssl_context,
            proxy=s.proxy,
            cancel=self._cancel,
        )
        if s.transport == "auto" and resource.websocket is not None:
            return connect(s.url, resource=resource, **options)
        log.info(
            "%s: calls over HTTP (%s)",
            s.safe,
            "asked" if s.transport == "http" else "the server has no WebSocket",
        )
        return HttpLink(
            resource,
            settings=HttpSettings(
                auth=options["auth"],
                ssl_context=s.ssl_context,
                proxy=s.proxy,
                trusted=s.url,
                vouched=same_origin(s.url, resource.url),
            ),
            inbox=self.inbox,
            on_end=options["on_end"],
            max_concurrent_requests=s.session_options.get("max_concurrent_requests"),
        )

    def _on_end(self, attempt: Attempt, error: BaseException | None, local: bool) -> None:
        """A connection's reader thread: its stream ended."""
        with self.cond:
            attempt.ended = (error, local)
            link = self.current
            if link is not None and link.attempt is attempt:
                link.down = True
            self.cond.notify_all()

    def _install(self, link: Link, boundary: Boundary | None, lost: _Lost | None) -> bool:
        """Make ``link`` the current connection; False if close() came first."""
        with self.cond:
            if self.closing:
                return False
            self.current = link
            if link.inner.session is not None:
                self.session = link.inner.session
            if boundary is not None and lost is not None:
                self.reconnects += 1
                boundary.info = self.last_info = ReconnectInfo(
                    count=self.reconnects,
                    cause=lost.cause,
                    close_code=lost.close_code,
                    attempts=self._retry.attempts,
                    disconnected_at=lost.at,
                    downtime=link.up_at - lost.at,
                    push_resumed=link.sent_push_state is not None,
                    push_state=link.sent_push_state,
                )
            self.cond.notify_all()
        if boundary is not None:
            log.info(
                "%s: reconnected after %d attempt(s)", self.settings.safe, self._retry.attempts
            )
            self.inbox.mark_ready(boundary)
        return True

    def _auth_for(self, attempt: Attempt, override: Mapping[str, str] | None) -> Auth | None:
        """The auth for one attempt: records what it sent; ``override`` replaces the call."""
        user_auth = self.settings.auth
        if user_auth is None:
            return None

        def recording() -> Mapping[str, str]:
            headers = override if override is not None else user_auth()
            attempt.fingerprint = _fingerprint(headers)
            return headers

        return recording

    def _fresh_credentials(self, failed: str | None) -> Mapping[str, str] | None:
        """Call ``auth`` once more: the new headers if they differ from the refused ones."""
        auth = self.settings.auth
        if auth is None or failed is None:
            return None
        try:
            fresh = dict(auth())
        except Exception:  # the refused credentials' error is what the application gets
            log.exception("%s: the auth callable failed", self.settings.safe)
            return None
        if _fingerprint(fresh) == failed:
            log.debug("%s: auth returned the same credentials; not retrying", self.settings.safe)
            return None
        log.info("%s: credentials refused; trying fresh ones once", self.settings.safe)
        return fresh

    def _watch(self, link: Link) -> bool:
        """Keepalive until ``link`` ends (True) or close() is called (False).

        A reader paused on a full inbox (the application is slow) cannot read Pongs: it
        is not a dead peer, so silence does not count while it is paused. A Ping never
        waits behind another send: while one holds the socket, the Ping is due and the
        clock runs, and that send's progress (the peer taking our bytes) is the sign of
        life; one that makes none for ``ping_timeout`` is a peer that stopped reading.
        """
        inner = link.inner
        conn = inner._conn  # the progress of a send that holds the socket
        interval, limit = self.settings.ping_interval, self.settings.ping_timeout
        ping_sent: float | None = None  # when the pending Ping went out, or was first due
        held: int | None = None  # conn.sent when another send kept the Ping out
        moving_at = 0.0  # when such a send was last seen to move
        while True:
            refresh: str | None = None
            with self.cond:
                while True:
                    if self.closing:
                        return False
                    if link.down or inner.closed:
                        link.down = True
                        return True
                    if self._refresh is not None:
                        refresh, self._refresh = self._refresh, None
                        self._fetching = True
                        break
                    if interval is None:
                        self.cond.wait()
                        continue
                    now = time.monotonic()
                    if self.inbox.paused:
                        ping_sent = held = None  # the Pong may be waiting behind unread frames
                        self.cond.wait(interval)
                        continue
                    last = max(inner.last_activity, moving_at)
                    if ping_sent is not None and last >= ping_sent:
                        ping_sent = held = None  # a sign of life since the ping
                    if held is not None and conn.sent != held:
                        break  # the send that kept the Ping out moved: try again now
                    if ping_sent is not None:
                        if now - ping_sent >= limit:
                            link.failure = self._dead(now - last, limit, held is not None)
                            link.down = True
                            log.warning("%s", link.failure)
                            return True
                        # Wake at the interval too: once the Pong is in, the next Ping is
                        # due an interval after it, not when the timeout would have run out;
                        # and more often while a send holds the socket, to see it move.
                        wake = min(ping_sent + limit - now, interval)
                        self.cond.wait(wake if held is None else min(wake, limit / 4))
                    elif now - last >= interval:
                        break  # ping, outside the lock
                    else:
                        self.cond.wait(last + interval - now)
            if refresh is not None:
                self._fetch_session(refresh)
                continue
            now = time.monotonic()
            moved = held is not None and conn.sent != held
            try:
                if inner.ping(b"jmapws-%d" % next(self._pings), wait=False):
                    ping_sent, held = now, None
                else:  # another send holds the socket
                    if moved:
                        moving_at = now  # ... and still moves: the peer is reading
                    if ping_sent is None or moved:
                        ping_sent = now
                    held = conn.sent
            except (TransportError, SessionClosed) as exc:
                self.lost(link, exc)

    def _dead(self, silent: float, limit: float, held: bool) -> KeepaliveTimeout:
        """The error of a connection the keepalive found dead."""
        why = (
            f"a send to it made no progress for {limit:g} s"
            if held
            else f"{limit:g} s after a Ping"
        )
        return KeepaliveTimeout(
            f"no sign of life from {self.settings.safe} for {silent:.2f} s ({why})",
            silent_for=silent,
        )

    def _fetch_session(self, state: str) -> None:
        """Fetch the Session resource again, bounded by ``connect_timeout``."""
        s = self.settings
        try:
            fresh = fetch_session(
                s.url,
                auth=s.auth,
                timeout=s.connect_timeout,
                ssl_context=s.ssl_context,
                proxy=s.proxy,
                cancel=self._cancel,
            )
        except (JmapWsError, TimeoutError) as exc:
            log.warning("%s: refreshing the Session resource failed: %s", s.safe, exc)
            fresh = None
        with self.cond:
            self._refreshed = state  # once per new state, even if the fetch failed
            self._fetching = False
            self.cond.notify_all()
            if fresh is not None:
                self.session = fresh
                log.info("%s: Session resource refreshed (state %s)", s.safe, fresh.state)

    def _end(self, link: Link) -> _Lost:
        """Drop ``link`` (its reader has then finished) and say why it ended."""
        at = time.monotonic()
        inner = link.inner
        inner.close(1000, "reconnecting", timeout=0)  # no-op if the server already closed
        with self.cond:
            error, local = link.attempt.ended or (None, True)
            if isinstance(link.failure, KeepaliveTimeout):
                cause: BaseException | None = link.failure
            elif error is not None:
                cause = error
            elif not local:
                cause = None  # the server closed cleanly
            else:
                cause = link.failure or TransportError(f"connection to {self.settings.safe} ended")
            if inner.received_push_state is not None:
                self.resume_state = inner.received_push_state
            self.cond.notify_all()
        _drop_locals(cause)
        return _Lost(cause, inner.close_code, at)
