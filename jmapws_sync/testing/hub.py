"""The reference server's open WebSocket connections (RFC 8887), on its event loop.

:class:`Hub` reads each connection's frames, answers Requests (through the ``process``
coroutine it is given), keeps push settings and sends StateChanges, and carries out the
knobs that act on open connections (halt, reorder, close, reset...). Everything here runs
in the server's loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, hdrs, web
from aiohttp.http_websocket import ws_ext_gen

from jmapws_sync.testing.jmap import JmapRequestError
from jmapws_sync.testing.state import Knobs, Observed, Quirks
from jmapws_sync.testing.store import NoteStore, skewed_state

__all__ = ["CLOSE_TIMEOUT", "Connection", "DeflatingResponse", "Hub", "dumps"]

logger = logging.getLogger(__name__)

#: How long a graceful close may take before the connection is aborted.
CLOSE_TIMEOUT = 1.0


class DeflatingResponse(web.WebSocketResponse):
    """aiohttp's WebSocket response, with the permessage-deflate knobs of :class:`Quirks`.

    aiohttp negotiates permessage-deflate itself (RFC 7692); this caps the server's window
    and can insist on server_no_context_takeover, by amending aiohttp's own answer.
    """

    def __init__(self, quirks: Quirks, **options: Any) -> None:
        super().__init__(compress=quirks.compression, **options)
        self._quirks = quirks

    def _handshake(self, request: Any) -> Any:
        headers, protocol, compress, notakeover = super()._handshake(request)
        if compress:
            compress = min(compress, self._quirks.compression_window_bits)
            notakeover = notakeover or self._quirks.compression_no_context_takeover
            headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = ws_ext_gen(
                compress=compress, isserver=True, server_notakeover=notakeover
            )
        return headers, protocol, compress, notakeover


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(eq=False)
class Connection:
    """One open WebSocket: who it belongs to, its push settings and its pending work."""

    ws: web.WebSocketResponse
    user: str
    account_ids: frozenset[str]
    transport: asyncio.Transport | None
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    push_enabled: bool = False
    data_types: frozenset[str] | None = None
    held: list[str] = field(default_factory=list)
    flush_handle: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Our Close frame went out; only the peer's Close is awaited now (RFC 6455 §5.5.1).
    close_sent: bool = False
    abort_handle: asyncio.TimerHandle | None = None
    aborted: bool = False
    #: Set by :meth:`Hub.abort` (wakes a halted reader).
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the handler has finished with the connection.
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    """The open WebSocket connections of one reference server (loop thread only)."""

    def __init__(
        self,
        *,
        store: NoteStore,
        quirks: Quirks,
        knobs: Knobs,
        observed: Observed,
        rng: random.Random,
        parse: Callable[[bytes | str], Any],
        process: Callable[[str, Any], Awaitable[dict[str, Any]]],
    ) -> None:
        self._store = store
        self._quirks = quirks
        self._knobs = knobs
        self._observed = observed
        self._rng = rng
        self._parse = parse
        self._process = process
        self.conns: set[Connection] = set()
        #: Cleared by halt(): nothing is read, answered or pushed until it is set again.
        self.running = asyncio.Event()
        if not knobs.halted:
            self.running.set()
        #: True once the server is shutting down.
        self.stopping = False

    def register(self, conn: Connection) -> None:
        """Count ``conn`` as open (before its 101 goes out, so a test can see it)."""
        self.conns.add(conn)
        self._observed.set_connections(len(self.conns))

    def unregister(self, conn: Connection) -> None:
        """``conn`` is gone: cancel its timers and tasks, close TCP after our Close."""
        self.conns.discard(conn)
        self._observed.set_connections(len(self.conns))
        for handle in (conn.flush_handle, conn.abort_handle):
            if handle is not None:
                handle.cancel()
        for task in list(conn.tasks):
            task.cancel()
        if conn.close_sent and conn.transport is not None:
            conn.transport.close()
        conn.finished.set()
        logger.debug("WebSocket connection for %s closed (%s)", conn.user, conn.ws.close_code)

    async def serve(self, conn: Connection) -> None:
        """Read frames until the connection ends; the server answers pings itself."""
        ws = conn.ws
        running = self.running
        while True:
            msg = await ws.receive()
            if not running.is_set():
                # halt(): whatever arrived waits here, unread and unanswered, until resume().
                await self._wait_resumed(conn)
            if conn.aborted:
                return
            if msg.type is WSMsgType.TEXT:
                if not conn.close_sent:  # after our Close, data is discarded (RFC 6455 §1.4)
                    self._on_text(conn, msg.data)
            elif msg.type is WSMsgType.PING:
                self._observed.pings += 1
                await self._send_frame(conn, ws.pong(msg.data))
            elif msg.type is WSMsgType.BINARY:
                # RFC 8887 §4.3: JMAP messages are text frames only.
                logger.debug("binary frame from %s; closing with 1003", conn.user)
                await self._begin_close(conn, 1003, "binary frames are not allowed")
            elif msg.type is WSMsgType.CLOSE:
                if not conn.close_sent:
                    # The client started the closing handshake: echo its code, then aiohttp
                    # closes TCP. If we started it, the handler's cleanup closes TCP.
                    code = msg.data if isinstance(msg.data, int) else 1000
                    if not 1000 <= code < 5000 or code in (1005, 1006, 1015):
                        code = 1000
                    await ws.close(code=code)
                return
            elif msg.type is not WSMsgType.PONG:
                return  # CLOSING, CLOSED or ERROR: aiohttp has dealt with the socket

    async def _wait_resumed(self, conn: Connection) -> None:
        """Wait until :meth:`resume` or until the connection is aborted."""
        running = self.running
        waiters = [
            asyncio.ensure_future(running.wait()),
            asyncio.ensure_future(conn.gone.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _on_text(self, conn: Connection, text: str) -> None:
        """Dispatch one text frame by its ``@type`` (RFC 8887 §4.3)."""
        try:
            obj = self._parse(text)
        except JmapRequestError as exc:
            self._spawn(conn, self._send(conn, self._error_frame(exc, {})))
            return
        kind = obj.get("@type") if isinstance(obj, dict) else None
        if kind == "Request":
            self._observed.count_request()
            self._spawn(conn, self._answer(conn, obj))
        elif kind == "WebSocketPushEnable":
            self._push_enable(conn, obj)
        elif kind == "WebSocketPushDisable":
            conn.push_enabled = False
        else:
            not_request = JmapRequestError(
                "notRequest", f"not a Request, WebSocketPushEnable or Disable: {kind!r}"
            )
            frame = self._error_frame(not_request, obj if isinstance(obj, dict) else {})
            self._spawn(conn, self._send(conn, frame))

    @staticmethod
    def _error_frame(error: JmapRequestError, obj: Mapping[str, Any]) -> str:
        frame: dict[str, Any] = {"@type": "RequestError"}
        if obj.get("id") is not None:
            frame["requestId"] = obj["id"]
        frame.update(error.problem())
        return dumps(frame)

    async def _answer(self, conn: Connection, obj: dict[str, Any]) -> None:
        """Run one Request (its own task, so answers may overtake each other)."""
        try:
            response = await self._process(conn.user, obj)
        except JmapRequestError as exc:
            await self._deliver(conn, self._error_frame(exc, obj))
            return
        if self._knobs.drop_requests:
            logger.debug("drop_requests: not answering a request from %s", conn.user)
            return
        frame: dict[str, Any] = {"@type": "Response"}
        if obj.get("id") is not None:
            frame["requestId"] = obj["id"]
        frame.update(response)
        await self._deliver(conn, dumps(frame))

    # -- WebSocket: push ------------------------------------------------------------------
    def _push_enable(self, conn: Connection, obj: dict[str, Any]) -> None:
        """WebSocketPushEnable (RFC 8887 §4.3.5.2), with replay from ``pushState``."""
        self._observed.last_push_enable = obj
        data_types = obj.get("dataTypes")
        push_state = obj.get("pushState")
        if (
            data_types is not None
            and (
                not isinstance(data_types, list) or not all(isinstance(t, str) for t in data_types)
            )
        ) or (push_state is not None and not isinstance(push_state, str)):
            error = JmapRequestError("notRequest", "invalid WebSocketPushEnable")
            self._spawn(conn, self._send(conn, self._error_frame(error, obj)))
            return
        if not self._quirks.supports_push:
            logger.debug("push requested by %s but supportsPush is false; ignored", conn.user)
            return
        if not self._quirks.websocket_push_fires:
            logger.debug("push requested by %s; websocket_push_fires=False: ignored", conn.user)
            return
        if self._quirks.null_data_types_mean_off and not data_types:
            # Cyrus: no dataTypes, null and [] all turn push off, an earlier enable too.
            logger.debug("WebSocketPushEnable without types from %s: push off", conn.user)
            conn.push_enabled = False
            return
        conn.push_enabled = True
        conn.data_types = None if data_types is None else frozenset(data_types)
        if push_state is None or not self._quirks.replays:
            return  # replays=False: the pushState is ignored, nothing is replayed (Stalwart)
        changed, current = self._store.changed_since(push_state, conn.account_ids, conn.data_types)
        if changed:
            frame = self._state_change(changed, current)
            self._spawn(conn, self._send(conn, dumps(frame), halt_aware=True))

    def _state_change(self, changed: dict[str, dict[str, str]], push_state: str) -> dict[str, Any]:
        frame: dict[str, Any] = {"@type": "StateChange", "changed": self._pushed(changed)}
        if self._quirks.sends_push_state:
            frame["pushState"] = push_state
        return frame

    def _pushed(self, changed: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """The TypeState objects as pushed: skewed under ``push_states_differ`` (old Cyrus)."""
        if not self._quirks.push_states_differ:
            return changed
        return {
            account: {name: skewed_state(state) for name, state in types.items()}
            for account, types in changed.items()
        }

    @staticmethod
    def _visible(conn: Connection, changed: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """What of ``changed`` the connection may see: its accounts and its ``dataTypes``."""
        visible: dict[str, dict[str, str]] = {}
        for account, types in changed.items():
            if account not in conn.account_ids:
                continue
            wanted = types
            if conn.data_types is not None:
                # RFC 8887 §4.3.5.2: other types are omitted from the TypeState object.
                wanted = {t: s for t, s in types.items() if t in conn.data_types}
            if wanted:
                visible[account] = wanted
        return visible

    def broadcast_change(self, changed: dict[str, dict[str, str]], push_state: str) -> None:
        """Loop thread: send a StateChange to every push-enabled connection that may see it."""
        for conn in list(self.conns):
            if not conn.push_enabled:
                continue
            visible = self._visible(conn, changed)
            if visible:
                frame = self._state_change(visible, push_state)
                self._spawn(conn, self._send(conn, dumps(frame), halt_aware=True))

    # -- WebSocket: sending ----------------------------------------------------------------
    def _spawn(self, conn: Connection, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        conn.tasks.add(task)
        task.add_done_callback(self._task_done(conn))

    @staticmethod
    def _task_done(conn: Connection) -> Callable[[asyncio.Task[Any]], None]:
        def done(task: asyncio.Task[Any]) -> None:
            conn.tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                logger.error("connection task failed", exc_info=task.exception())

        return done

    async def _deliver(self, conn: Connection, text: str) -> None:
        """Send an answer now, or hold it for :meth:`reorder`."""
        n = self._knobs.reorder_n
        if n <= 1:
            await self._send(conn, text, halt_aware=True)
            return
        conn.held.append(text)
        if len(conn.held) >= n:
            await self._flush(conn)
        elif conn.flush_handle is None:
            conn.flush_handle = asyncio.get_running_loop().call_later(
                self._knobs.reorder_hold, lambda: self._spawn(conn, self._flush(conn))
            )

    async def _flush(self, conn: Connection) -> None:
        if conn.flush_handle is not None:
            conn.flush_handle.cancel()
            conn.flush_handle = None
        batch, conn.held = conn.held, []
        self._rng.shuffle(batch)
        for text in batch:
            await self._send(conn, text, halt_aware=True)

    async def flush_all(self) -> None:
        await asyncio.gather(*(self._flush(c) for c in list(self.conns) if c.held))

    async def _send(self, conn: Connection, text: str, *, halt_aware: bool = True) -> None:
        """Send one text frame; a connection that is gone just drops it (logged)."""
        if halt_aware:
            await self.running.wait()
        await self._send_frame(conn, conn.ws.send_str(text))

    async def _send_frame(self, conn: Connection, send: Coroutine[Any, Any, None]) -> None:
        async with conn.send_lock:
            if conn.ws.closed or conn.aborted or conn.close_sent:
                send.close()
                return
            try:
                await send
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("send to %s failed: %s", conn.user, exc)

    async def broadcast_frame(
        self,
        make: Callable[[Connection], Awaitable[None]],
        only: Callable[[Connection], bool] | None = None,
    ) -> None:
        """Knob helper: run ``make(conn)`` (a coroutine) on every matching open connection."""

        async def one(conn: Connection) -> None:
            async with conn.send_lock:
                if conn.ws.closed or conn.aborted or conn.close_sent:
                    return
                try:
                    await make(conn)
                except (ConnectionError, RuntimeError) as exc:
                    logger.debug("knob frame to %s failed: %s", conn.user, exc)

        conns = [c for c in list(self.conns) if only is None or only(c)]
        await asyncio.gather(*(one(c) for c in conns))

    async def ping_flood(self, n: int, payload: bytes) -> None:
        """Knob: ``n`` pings (and no data) on every open connection."""

        async def flood(conn: Connection) -> None:
            for _ in range(n):
                await conn.ws.ping(payload)

        await self.broadcast_frame(flood)

    async def push_flood(self, n: int, account: str, last_push_state: str | None = None) -> None:
        """Knob: ``n`` StateChanges for ``account`` to its user's connections, push or not;
        the last one carries ``last_push_state`` when given (so a reader knows the end)."""
        frame: dict[str, Any] = {
            "@type": "StateChange",
            "changed": self._pushed({account: {"Note": self._store.state(account)}}),
            "pushState": self._store.push_state(),
        }
        text = dumps(frame)
        last = text if last_push_state is None else dumps({**frame, "pushState": last_push_state})

        async def flood(conn: Connection) -> None:
            for _ in range(n - 1):
                await conn.ws.send_str(text)
            if n > 0:
                await conn.ws.send_str(last)

        await self.broadcast_frame(flood, only=lambda c: account in c.account_ids)

    # -- WebSocket: closing -----------------------------------------------------------------
    async def _begin_close(self, conn: Connection, code: int, reason: str) -> None:
        """Send our Close frame once; the reader loop awaits the peer's (RFC 6455 §5.5.1).

        aiohttp's own ``close()`` drops TCP right away when another task is reading, so the
        client's Close would hit a closed socket; this sends the frame and lets the reader
        finish the handshake, with an abort after ``CLOSE_TIMEOUT`` if the peer is silent.
        """
        if conn.close_sent or conn.aborted or conn.ws.closed:
            return
        conn.close_sent = True
        payload = struct.pack("!H", code) + reason.encode()[:123]
        async with conn.send_lock:
            try:
                await conn.ws.send_frame(payload, WSMsgType.CLOSE)
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("Close frame to %s failed (%s); aborting", conn.user, exc)
                self.abort(conn)
                return
        conn.abort_handle = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort, conn)

    async def close(self, conn: Connection, code: int, reason: str) -> None:
        """Close with ``code`` and wait (bounded) until the connection is gone."""
        await self._begin_close(conn, code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.finished.wait(), CLOSE_TIMEOUT + 1.0)

    async def close_all(self, code: int, reason: str) -> None:
        await asyncio.gather(*(self.close(c, code, reason) for c in list(self.conns)))

    def abort(self, conn: Connection) -> None:
        """Drop the TCP connection at once: SO_LINGER (1, 0) makes close() send a RST."""
        if conn.aborted:
            return
        conn.aborted = True
        conn.gone.set()
        transport = conn.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError as exc:
                logger.debug("SO_LINGER failed: %s", exc)
        transport.abort()

    async def reset_all(self) -> None:
        for conn in list(self.conns):
            self.abort(conn)

    async def set_running(self, running: bool) -> None:
        """halt() (False) and resume() (True)."""
        if running:
            self.running.set()
        else:
            self.running.clear()

    async def shutdown(self) -> None:
        """The server stops: close every connection with 1001 (a halted one just drops)."""
        self.stopping = True
        conns = list(self.conns)
        if not self.running.is_set():  # a halted server does not talk: its connections drop
            for conn in conns:
                self.abort(conn)
        await asyncio.gather(*(self.close(c, 1001, "server shutting down") for c in conns))
        self.running.set()
