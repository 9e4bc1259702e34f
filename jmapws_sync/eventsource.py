"""Push over an EventSource (RFC 8620 §7.3), for servers whose WebSocket does not push.

Fastmail offers no WebSocket push at all, jmaple pushes only on its event stream, and
Cyrus serves both: :class:`EventSourcePush` reads the ``eventSourceUrl`` in a thread of
its own and hands each ``state`` event to ``deliver`` as a
:class:`~jmapws_sync.StateChange`, so a ReconnectingSession puts them in the same inbox
as WebSocket pushes (``changes()``, merging and ``push_state`` behave the same). The
format is parsed by :mod:`._sse`; the I/O goes through :mod:`._http`, with the session's
credentials, TLS settings and proxy.

* The URL template is expanded with ``types`` (the data types, or ``*``),
  ``closeafter=no`` and ``ping`` (RFC 6570 level 1).
* Every reconnect sends ``Last-Event-ID`` (Cyrus's ids; servers without ids, such as
  Stalwart, get none) and waits what the server's ``retry:`` asked, else the backoff.
* The ``ping`` events are the keepalive: no byte for two intervals means a dead stream,
  which is dropped and opened again. An interval over 600 is read as milliseconds
  (Stalwart sends 30000 for 30 s); a ping interval of ten minutes would be no keepalive.
* 401 and 403 end the push (the credentials were refused); a 204 too, as the WHATWG
  text says; other failures are retried with the backoff.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import attrs

from ._http import HttpSettings, connect, expand, status_error
from ._net import resolve_proxy, safe_url
from ._sse import Event, EventStreamError, EventStreamParser
from .codec import decode
from .errors import AuthenticationError, JmapWsError, ParseError, PushUnavailable
from .frames import StateChange
from .policy import Backoff

__all__ = ["DEFAULT_PING", "EventSourcePush", "Reopened", "ping_seconds"]

log = logging.getLogger(__name__)

#: The ``ping`` interval asked of the server, in seconds.
DEFAULT_PING: Final = 20
#: Intervals above this are milliseconds (see the module docstring).
_MILLISECONDS_ABOVE: Final = 600
_READ: Final = 64 * 1024


def ping_seconds(interval: object) -> float | None:
    """The seconds a ping event's ``interval`` means (None if it is not a number > 0)."""
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        return None
    return interval / 1000 if interval > _MILLISECONDS_ABOVE else float(interval)


@attrs.frozen
class Reopened:
    """A stream opened again: the ``count`` of reopenings so far, the ``cause`` that lost
    the last one, the ``resumed_from`` Last-Event-ID sent (or None), when it was
    ``lost_at`` (``time.monotonic()``) and the ``attempts`` it took."""

    count: int
    cause: BaseException | None
    resumed_from: str | None
    lost_at: float
    attempts: int


class EventSourcePush:
    """One EventSource kept open, in a thread, until :meth:`close`.

    ``url`` is the ``eventSourceUrl`` template, ``types`` the data types (None: all),
    ``deliver(change)`` takes each StateChange, ``on_reconnect(reopened)`` is told of each
    reconnect after the first connection (a :class:`Reopened`), ``on_fatal(error)`` of the
    error that ended it.
    ``connected`` is set once a stream is open.
    """

    def __init__(
        self,
        url: str,
        *,
        settings: HttpSettings,
        types: Sequence[str] | None,
        deliver: Callable[[StateChange], object],
        on_reconnect: Callable[[Reopened], object] | None = None,
        on_fatal: Callable[[BaseException], object] | None = None,
        backoff: Backoff | None = None,
        ping: int = DEFAULT_PING,
        last_event_id: str | None = None,
        name: str = "jmapws-eventsource",
    ) -> None:
        self._template = url
        self._settings = settings
        self._types = tuple(types) if types is not None else None
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._on_fatal = on_fatal
        self._backoff = backoff or Backoff()
        self._rng = random.Random()  # noqa: S311 - jitter only
        self._ping = ping
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None  # the open stream's socket (for close())
        #: Set while a stream is open.
        self.connected = threading.Event()
        #: Set once a stream was open, or the push ended with :attr:`error`.
        self.settled = threading.Event()
        #: The id to resume from (the last ``id:`` the server sent).
        self.last_event_id = last_event_id
        #: Streams opened again after the first.
        self.reconnects = 0
        #: The error that ended the push, if one did.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def url(self) -> str:
        """The expanded URL the stream is read from."""
        types = ",".join(self._types) if self._types else "*"
        return expand(self._template, {"types": types, "closeafter": "no", "ping": str(self._ping)})

    def start(self) -> EventSourcePush:
        """Start the thread; return ``self``."""
        self._thread.start()
        return self

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop reading and join the thread; idempotent, from any thread."""
        self._closing.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        base: float | None = None
        cause: BaseException | None = None
        opened = 0  # streams opened so far
        lost_at = 0.0  # when the last stream was lost
        attempts = 0  # attempts since then
        while not self._closing.is_set():
            parser = EventStreamParser()
            resumed_from = self.last_event_id
            attempts += 1
            try:
                for event in self._events(parser):
                    if event is _OPEN:
                        opened += 1
                        self.settled.set()
                        base = None  # the backoff starts again once a stream is up
                        if opened > 1:
                            self.reconnects += 1
                            if self._on_reconnect is not None:
                                self._on_reconnect(
                                    Reopened(
                                        self.reconnects, cause, resumed_from, lost_at, attempts
                                    )
                                )
                        attempts = 0
                        continue
                    self._handle(event)
            except _Stop as stop:
                if stop.error is not None and not self._closing.is_set():
                    self.error = stop.error
                    self.settled.set()
                    log.warning("%s: event stream refused: %s", self._label(), stop.error)
                    if self._on_fatal is not None:
                        self._on_fatal(stop.error)
                return
            except (OSError, http.client.HTTPException, JmapWsError) as exc:
                if self.connected.is_set():  # an open stream was lost: the clock starts
                    cause, lost_at = exc, time.monotonic()
                elif opened == 0:
                    cause, lost_at = exc, lost_at or time.monotonic()
                if not self._closing.is_set():
                    log.warning("%s: event stream lost (%s)", self._label(), exc)
            finally:
                self.connected.clear()
                with self._lock:
                    conn, self._conn, self._sock = self._conn, None, None
                if conn is not None:
                    conn.close()
            if parser.retry is not None:  # the server's word, within the backoff's ceiling
                delay = min(parser.retry / 1000, self._backoff.ceiling)
            else:
                delay, base = self._backoff.step(base, self._rng)
            if self._closing.wait(delay):
                return

    def _events(self, parser: EventStreamParser) -> Iterator[Event]:
        """Open one stream (``_OPEN`` once it is), then its events until it ends."""
        url = self.url
        settings = self._settings
        conn, target, extra = connect(
            url,
            proxy=resolve_proxy(url, settings.proxy),
            context=settings.ssl_context,
            # Until the server says its own ping interval; with no ping asked, no limit.
            timeout=2 * self._ping + 10 if self._ping else None,
        )
        with self._lock:
            self._conn = conn
        if self._closing.is_set():
            raise _Stop(None)
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "User-Agent": "jmapws-sync",
            **extra,
            **settings.credentials_for(url),
        }
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        conn.request("GET", target, headers=headers)
        with self._lock:  # http.client lets go of it once the answer says Connection: close
            self._sock = conn.sock
        if self._closing.is_set():
            raise _Stop(None)
        response = conn.getresponse()
        if response.status == 204:  # WHATWG: the server says stop (Cyrus without push)
            raise _Stop(PushUnavailable(f"{safe_url(url)} answered 204: it pushes nothing"))
        if response.status != 200:
            error = status_error(response, url, action="opening the event stream")
            if isinstance(error, AuthenticationError):
                raise _Stop(error)
            raise error
        kind = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        if kind != "text/event-stream":
            raise EventStreamError(f"{safe_url(url)} answered {kind or 'no type'}, not events")
        self.connected.set()
        yield _OPEN
        while True:
            data = response.read1(_READ)
            if not data:
                raise EventStreamError("the event stream ended")
            yield from parser.feed(data)

    def _handle(self, event: Event) -> None:
        if event.id is not None:
            self.last_event_id = event.id
        if event.type == "state":
            try:
                frame = decode(event.data)
            except ParseError:
                log.warning("%s: a state event that is not JSON; passed over", self._label())
                return
            if isinstance(frame, StateChange):
                self._deliver(frame)
            else:
                log.warning("%s: a state event that is no StateChange", self._label())
        elif event.type == "ping":
            try:
                interval = ping_seconds(json.loads(event.data).get("interval"))
            except (ValueError, AttributeError):
                interval = None
            if interval is not None:
                self._keepalive(interval)

    def _keepalive(self, interval: float) -> None:
        """No byte for two intervals (and a second of slack) is a dead stream."""
        with self._lock:
            sock = self._sock
        if sock is not None:
            sock.settimeout(2 * interval + 1)

    def _label(self) -> str:
        return safe_url(self._template)


#: What _events() yields once the stream is open, before any event (told apart by identity).
_OPEN: Final = Event("open", "")


class _Stop(Exception):
    """Internal: the push ends (``error`` says why; None when closed or told to stop)."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__()
        self.error = error
