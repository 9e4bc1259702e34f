"""The reference server's event source (RFC 8620 §7.3): push over a streamed HTTP response.

``GET /jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}`` (the
Session resource's ``eventSourceUrl``) authenticates like the API (401 with a challenge)
and answers ``200`` with ``Content-Type: text/event-stream`` and ``Cache-Control:
no-cache``, its headers sent at once, then a body in the WHATWG server-sent events
format, every line ending in LF:

* ``retry: N`` and a blank line first, when the ``event_retry_ms`` quirk is set;
* a ``state`` event for each change of the user's accounts that concerns the requested
  types: ``event: state``, ``id: p<seq>`` (the pushState; left out under
  ``event_ids=False``) and ``data:`` a StateChange ``{"@type": "StateChange",
  "changed": {accountId: {type: state}}, "pushState": "p<seq>"}`` (no ``pushState``
  under ``sends_push_state=False``, skewed states under ``push_states_differ``), then a
  blank line; ``multiline_data`` spreads any event's JSON over one ``data:`` line per
  line of its pretty-printed text;
* a ``ping`` event (``event: ping``, ``data: {"interval": N}``, never an id) whenever
  ``N`` seconds have passed since the previous event, N being the requested ``ping``
  clamped to ``[ping_min_interval, 300]`` (in milliseconds under
  ``ping_in_milliseconds``); ``ping=0`` sends none;
* ``: keepalive`` comments (and a blank line) when the ``event_keepalive`` quirk asks.

``types`` is ``*`` or comma-separated type names (unknown names just never match),
``closeafter`` is ``state`` (the response ends after the first state event) or ``no``;
missing parameters mean ``*``, ``no`` and ``0`` unless ``require_ping_and_closeafter``
(James) refuses a request without ``ping`` or ``closeafter``. Malformed values answer 400.
Refusals are RFC 7807 problems.

On connect, a ``Last-Event-ID`` header (a pushState this server gave) gets one state
event at once with what changed since (every requested type when the id is unknown), or
nothing when nothing did; without the header nothing is sent until a change, unless
``event_current_state`` sends the current state of every requested type at once. A stream
ends cleanly (the chunked body's last chunk) when the server stops, by ``closeafter=state``
or by :meth:`EventStreams.close_all`, and by a TCP reset with :meth:`EventStreams.reset_all`;
:meth:`EventStreams.set_silent` holds every write (events wait) until it is undone.

Everything here runs in the server's loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from jmapws_sync.testing.hub import CLOSE_TIMEOUT, dumps
from jmapws_sync.testing.state import EventSourceRequest, Knobs, Observed, Quirks
from jmapws_sync.testing.store import NoteStore, account_id_for, skewed_state
from jmapws_sync.testing.transfer import problem

__all__ = [
    "EVENTSOURCE_PATH",
    "EVENT_SOURCE_TEMPLATE",
    "EVENT_STREAM",
    "PING_MAX_INTERVAL",
    "EventStream",
    "EventStreams",
    "StreamParams",
    "event_block",
    "parse_params",
]

logger = logging.getLogger(__name__)

EVENTSOURCE_PATH = "/jmap/eventsource/"
#: What the Session resource advertises as ``eventSourceUrl`` (after the base URL).
EVENT_SOURCE_TEMPLATE = EVENTSOURCE_PATH + "?types={types}&closeafter={closeafter}&ping={ping}"
EVENT_STREAM = "text/event-stream"
#: The longest ping interval granted (RFC 8620 §7.3: a maximum must be at least 300).
PING_MAX_INTERVAL = 300
#: How often a quiet stream looks whether its client has gone.
_POLL = 0.2

_Authenticate = Callable[[web.Request], tuple[str | None, str | None]]
_Unauthorized = Callable[[str | None], web.Response]


@dataclass(frozen=True)
class StreamParams:
    """The query parameters of one event source request, checked."""

    #: The type names asked for; ``None``: every type (``*``).
    types: frozenset[str] | None
    #: ``closeafter=state``: end the response after the first state event.
    close_after_state: bool
    #: The requested ping interval in seconds (0: no pings).
    ping: int


def parse_params(query: Mapping[str, str], quirks: Quirks) -> StreamParams | str:
    """The checked parameters, or the detail of a 400 answer."""
    if quirks.require_ping_and_closeafter:
        missing = [name for name in ("ping", "closeafter") if name not in query]
        if missing:
            return "missing required parameters: " + ", ".join(missing)
    raw_types = query.get("types", "*")
    types: frozenset[str] | None = None
    if raw_types != "*":
        names = raw_types.split(",")
        if not all(names):
            return "types must be * or comma-separated type names"
        types = frozenset(names)
    closeafter = query.get("closeafter", "no")
    if closeafter not in ("state", "no"):
        return "closeafter must be state or no"
    raw_ping = query.get("ping", "0")
    if not (raw_ping.isascii() and raw_ping.isdigit()):
        return "ping must be a non-negative integer (seconds)"
    return StreamParams(types=types, close_after_state=closeafter == "state", ping=int(raw_ping))


def event_block(
    name: str | None, data: Any, *, event_id: str | None = None, multiline: bool = False
) -> bytes:
    """One server-sent event: ``event:``, ``id:`` and ``data:`` lines, then a blank line.

    ``data`` is written as compact JSON on one ``data:`` line, or pretty-printed with
    one ``data:`` line per JSON line (``multiline``); either way the lines a parser joins
    with LF are the JSON text.
    """
    lines = []
    if name is not None:
        lines.append(f"event: {name}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    text = json.dumps(data, indent=2, ensure_ascii=False) if multiline else dumps(data)
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def _seq(push_state: str) -> int:
    """The counter of a pushState this store gave (``"p<seq>"``)."""
    return int(push_state[1:])


@dataclass(eq=False)
class EventStream:
    """One open event stream: whose, what it asked for, what is waiting to go out."""

    user: str
    account_ids: frozenset[str]
    params: StreamParams
    #: The ping interval granted, in seconds (0: no pings).
    interval: int
    transport: asyncio.Transport | None
    #: The changes up to this pushState counter are known to the client already.
    since: int
    #: ``(changed, pushState)`` waiting to be sent, oldest first.
    pending: collections.deque[tuple[dict[str, dict[str, str]], str]] = field(
        default_factory=collections.deque
    )
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``"close"`` (end cleanly) or ``"reset"`` (aborted) once a knob or the stop says so.
    ending: str | None = None
    #: Set when the handler has finished with the stream.
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def gone(self) -> bool:
        """Whether the client went away (its TCP connection is closing or closed)."""
        return self.transport is None or self.transport.is_closing()


class EventStreams:
    """The event source endpoint of one reference server and its open streams."""

    def __init__(
        self,
        *,
        store: NoteStore,
        quirks: Quirks,
        knobs: Knobs,
        observed: Observed,
        authenticate: _Authenticate,
        unauthorized: _Unauthorized,
    ) -> None:
        self._store = store
        self._quirks = quirks
        self._knobs = knobs
        self._observed = observed
        self._authenticate = authenticate
        self._unauthorized = unauthorized
        self.streams: set[EventStream] = set()
        #: True once the server is shutting down: new requests get 503.
        self.stopping = False

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve ``GET`` at :data:`EVENTSOURCE_PATH` (not HEAD: there is no end to say)."""
        router.add_get(EVENTSOURCE_PATH, self.handle, allow_head=False)

    # -- the request -------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One GET of ``eventSourceUrl``: check it, then stream until the end."""
        user, scheme = self._authenticate(request)
        query = request.query
        last_event_id = request.headers.get("Last-Event-ID")

        def record(status: int) -> None:
            self._observed.record_event_source(
                EventSourceRequest(
                    types=query.get("types"),
                    closeafter=query.get("closeafter"),
                    ping=query.get("ping"),
                    last_event_id=last_event_id,
                    status=status,
                    user=user,
                    auth_scheme=scheme,
                    accept=request.headers.get("Accept"),
                    query_string=request.raw_path.partition("?")[2],
                )
            )

        if user is None:
            record(401)
            return self._unauthorized(scheme)
        if self.stopping:
            record(503)
            return problem(503, "Service Unavailable", "the server is shutting down")
        params = parse_params(query, self._quirks)
        if isinstance(params, str):
            record(400)
            return problem(400, "Bad Request", params)
        record(200)
        stream, initial = self._open(user, params, last_event_id, request.transport)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"}
        )
        self.streams.add(stream)
        self._observed.set_event_streams(len(self.streams))
        try:
            await response.prepare(request)  # a StreamResponse sends its headers at once
            logger.debug("event stream for %s opened (%s)", user, params)
            await self._serve(stream, response, initial)
        except ConnectionError as exc:
            logger.debug("event stream for %s lost: %s", user, exc)
        finally:
            self.streams.discard(stream)
            self._observed.set_event_streams(len(self.streams))
            stream.finished.set()
            logger.debug("event stream for %s ended (%s)", user, stream.ending or "client")
        return response

    def _open(
        self,
        user: str,
        params: StreamParams,
        last_event_id: str | None,
        transport: asyncio.Transport | None,
    ) -> tuple[EventStream, tuple[dict[str, dict[str, str]], str] | None]:
        """The new stream and its first state event, if any (no await: no change slips in).

        The stream's ``since`` is the pushState the first event (or the connect) covers,
        so a change committed just before and broadcast just after is not sent twice.
        """
        account_ids = frozenset({account_id_for(user)})
        quirks = self._quirks
        initial: tuple[dict[str, dict[str, str]], str] | None = None
        if last_event_id is not None and quirks.event_ids:
            changed, current = self._store.changed_since(last_event_id, account_ids, params.types)
            initial = (changed, current) if changed else None
        elif quirks.event_current_state:
            changed, current = self._store.changed_since(None, account_ids, params.types)
            initial = (changed, current) if changed else None
        else:
            current = self._store.push_state()
        requested = params.ping
        interval = 0
        if requested:
            interval = min(max(requested, quirks.ping_min_interval), PING_MAX_INTERVAL)
        stream = EventStream(
            user=user,
            account_ids=account_ids,
            params=params,
            interval=interval,
            transport=transport,
            since=_seq(current),
        )
        return stream, initial

    # -- the body ------------------------------------------------------------------------
    async def _serve(
        self,
        stream: EventStream,
        response: web.StreamResponse,
        initial: tuple[dict[str, dict[str, str]], str] | None,
    ) -> None:
        """Write events until the stream ends; a clean end writes the body's last chunk."""
        quirks = self._quirks
        loop = asyncio.get_running_loop()
        if initial is not None:
            stream.pending.appendleft(initial)
        if quirks.event_retry_ms is not None:
            await response.write(f"retry: {quirks.event_retry_ms}\n\n".encode())
        last_event = last_write = loop.time()
        while stream.ending is None and not stream.gone():
            now = loop.time()
            if self._knobs.event_streams_silent:
                await self._nap(stream, _POLL)
                continue
            if stream.pending:
                changed, push_state = stream.pending.popleft()
                await response.write(self._state_event(changed, push_state))
                last_event = last_write = loop.time()
                if stream.params.close_after_state:
                    stream.ending = "close"
                continue
            if stream.interval and now >= last_event + stream.interval:
                interval = (
                    stream.interval * 1000 if quirks.ping_in_milliseconds else stream.interval
                )
                data = {"interval": interval}
                await response.write(event_block("ping", data, multiline=quirks.multiline_data))
                last_event = last_write = loop.time()
                continue
            keepalive = quirks.event_keepalive
            if keepalive is not None and now >= last_write + keepalive:
                await response.write(b": keepalive\n\n")
                last_write = loop.time()
                continue
            deadline = now + _POLL
            if stream.interval:
                deadline = min(deadline, last_event + stream.interval)
            if keepalive is not None:
                deadline = min(deadline, last_write + keepalive)
            await self._nap(stream, deadline - now)
        if stream.ending == "close":
            await response.write_eof()

    @staticmethod
    async def _nap(stream: EventStream, seconds: float) -> None:
        """Wait up to ``seconds`` for news (a change, a knob); clear the wake-up first."""
        stream.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.wake.wait(), max(seconds, 0.0))

    def _state_event(self, changed: dict[str, dict[str, str]], push_state: str) -> bytes:
        quirks = self._quirks
        if quirks.push_states_differ:
            changed = {
                account: {name: skewed_state(state) for name, state in types.items()}
                for account, types in changed.items()
            }
        data: dict[str, Any] = {"@type": "StateChange", "changed": changed}
        if quirks.sends_push_state:
            data["pushState"] = push_state
        event_id = push_state if quirks.event_ids else None
        return event_block("state", data, event_id=event_id, multiline=quirks.multiline_data)

    # -- news from the store ---------------------------------------------------------------
    def broadcast_change(self, changed: dict[str, dict[str, str]], push_state: str) -> None:
        """Loop thread: queue a state event on every stream that may see ``changed``."""
        seq = _seq(push_state)
        for stream in list(self.streams):
            if seq <= stream.since or stream.ending is not None:
                continue
            wanted = stream.params.types
            visible: dict[str, dict[str, str]] = {}
            for account, types in changed.items():
                if account not in stream.account_ids:
                    continue
                shown = types if wanted is None else {t: s for t, s in types.items() if t in wanted}
                if shown:
                    visible[account] = shown
            if visible:
                stream.pending.append((visible, push_state))
                stream.wake.set()

    # -- knobs -------------------------------------------------------------------------
    async def close_all(self) -> None:
        """End every open stream cleanly; abort those still open after ``CLOSE_TIMEOUT``."""
        streams = list(self.streams)
        for stream in streams:
            if stream.ending is None:
                stream.ending = "close"
            stream.wake.set()
        waits = [asyncio.ensure_future(s.finished.wait()) for s in streams]
        if waits:
            _, late = await asyncio.wait(waits, timeout=CLOSE_TIMEOUT)
            for waiter in late:
                waiter.cancel()
        for stream in streams:
            if not stream.finished.is_set():
                self._abort(stream)  # a client that does not read: its writes never end

    async def reset_all(self) -> None:
        """Abort every open stream with a TCP RST (SO_LINGER (1, 0), then close)."""
        for stream in list(self.streams):
            self._abort(stream)

    def _abort(self, stream: EventStream) -> None:
        stream.ending = "reset"
        stream.wake.set()
        transport = stream.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError as exc:
                logger.debug("SO_LINGER failed: %s", exc)
        transport.abort()

    async def set_silent(self, silent: bool) -> None:
        """Silence (``True``) or wake (``False``) every stream, open and future."""
        self._knobs.event_streams_silent = silent
        for stream in list(self.streams):
            stream.wake.set()

    async def shutdown(self) -> None:
        """The server stops: refuse new streams and end the open ones cleanly."""
        self.stopping = True
        await self.close_all()
