"""The reference JMAP-over-WebSocket server: aiohttp in its own event loop and thread.

:class:`ReferenceServer` serves one port with everything a JMAP client touches:

* ``GET /.well-known/jmap`` -> 307 to ``/jmap/session`` (RFC 8620 §2.2), both authenticated;
* ``GET /jmap/session`` -> the Session resource (RFC 8620 §2);
* ``POST /jmap/api`` -> JMAP over HTTP (RFC 8620 §3), request errors as RFC 7807 problems;
* ``GET /jmap/ws`` -> JMAP over WebSocket (RFC 8887), subprotocol ``jmap``, push included.

Authentication is HTTP Basic (``users``) or Bearer (``tokens``); failures answer 401 with a
``WWW-Authenticate`` challenge for both schemes. Credentials are never logged or stored
anywhere but the maps given to the constructor.

The server runs in a named daemon thread with its own asyncio loop; every public method is
thread-safe and meant to be called from the test thread. The knobs (:meth:`delay`,
:meth:`reorder`, :meth:`halt`, :meth:`reset_all`...) make it misbehave on purpose for fault
tests; each says whether it acts on the open connections, on future ones, or both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hmac
import json
import logging
import random
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from jmapws_sync.testing.jmap import (
    CORE,
    NOTES,
    WEBSOCKET,
    JmapRequestError,
    Limits,
    RequestContext,
    process_request,
)
from jmapws_sync.testing.store import NoteStore, account_id_for

__all__ = ["CYRUS_QUIRKS", "Handshake", "ReferenceServer"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

SESSION_PATH = "/jmap/session"
API_PATH = "/jmap/api"
WS_PATH = "/jmap/ws"
WELL_KNOWN_PATH = "/.well-known/jmap"
CHALLENGE = 'Basic realm="jmap", Bearer realm="jmap"'
PROBLEM_JSON = "application/problem+json"

#: The :class:`ReferenceServer` options that make it behave as Cyrus IMAP 3.6 does where
#: Cyrus departs from what a client would assume (seen against Cyrus 3.6.1 and 3.10.3):
#: ``ReferenceServer(**CYRUS_QUIRKS)``.
CYRUS_QUIRKS: Mapping[str, Any] = MappingProxyType(
    {
        "relative_urls": True,
        "hostless_ws_url": True,
        "well_known_status": 301,
        "null_data_types_mean_off": True,
    }
)

#: How long a graceful close may take before the connection is aborted.
_CLOSE_TIMEOUT = 1.0
#: How long :meth:`ReferenceServer.start` waits for the port to be bound.
_START_TIMEOUT = 10.0
#: How long a knob call from the test thread may take.
_KNOB_TIMEOUT = 10.0


@dataclass(frozen=True)
class Handshake:
    """What one WebSocket upgrade request carried (the scheme only, never the secret)."""

    #: The raw ``Sec-WebSocket-Protocol`` header the client offered, or ``None``.
    offered_subprotocols: str | None
    #: The subprotocol answered in the 101 response, or ``None``.
    subprotocol: str | None
    #: The ``Authorization`` scheme as sent (``"Basic"``, ``"Bearer"``...), or ``None``.
    auth_scheme: str | None
    #: The authenticated user, or ``None`` when authentication failed.
    user: str | None
    #: The HTTP status answered: 101 on success, else 401, 503, or a :meth:`fail_handshake`.
    status: int


@dataclass(eq=False)
class _Connection:
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
    #: Set by :meth:`ReferenceServer._abort` (wakes a halted reader).
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the handler has finished with the connection.
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status, content_type=PROBLEM_JSON, dumps=_dumps)


class ReferenceServer:
    """A real JMAP server (HTTP + WebSocket on one port) for tests, demos and benchmarks.

    Use it as a context manager or call :meth:`start` / :meth:`stop`::

        with ReferenceServer(users={"alice": "secret"}, tokens={"tok": "alice"}) as srv:
            srv.session_url, srv.ws_url, srv.api_url

    Each user gets one account ``"a-<user>"`` holding ``Note`` objects (capability
    :data:`~jmapws_sync.testing.jmap.NOTES`). The notes live in :attr:`store`, which can be
    passed to a new server so data, states and the change log survive a restart::

        again = ReferenceServer(store=srv.store, port=srv.port, users=...).start()

    Quirks of deployed servers, each off by default (:data:`CYRUS_QUIRKS` turns on those
    of Cyrus IMAP 3.6): ``relative_urls`` advertises apiUrl, the WebSocket url and the
    other URLs as relative references; ``hostless_ws_url`` advertises the WebSocket as
    ``wss:/jmap/ws`` (a scheme without a host, ``wss`` even over plain http);
    ``well_known_status`` is the redirect status of ``/.well-known/jmap`` (Cyrus: 301);
    ``null_data_types_mean_off`` makes a WebSocketPushEnable whose ``dataTypes`` is
    missing, ``null`` or ``[]`` turn push off, as Cyrus does, instead of meaning "all
    types" (RFC 8887 §4.3.5.2). ``seed`` seeds the generator used by :meth:`delay` and
    :meth:`reorder` for reproducible runs.

    Knobs (thread-safe; those that act on open connections need a running server, else
    ``RuntimeError``): :meth:`delay`, :meth:`reorder`, :meth:`send_binary`,
    :meth:`send_raw_text`, :meth:`ping_flood`, :meth:`push_flood`, :meth:`close_all`,
    :meth:`reset_all`, :meth:`halt` / :meth:`resume`, :meth:`omit_subprotocol`,
    :meth:`fail_handshake`, :meth:`drop_requests`, :meth:`bump_session_state`,
    :meth:`set_password`, :meth:`set_token`, :meth:`change_note`, :meth:`destroy_note`.
    Observation: :meth:`connection_count`, :meth:`wait_for_connections`,
    :meth:`requests_seen`, :meth:`last_handshake`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        store: NoteStore | None = None,
        ssl_context: ssl.SSLContext | None = None,
        relative_urls: bool = False,
        hostless_ws_url: bool = False,
        well_known_status: int = 307,
        null_data_types_mean_off: bool = False,
        supports_push: bool = True,
        max_calls_in_request: int = 16,
        max_concurrent_requests: int = 4,
        max_size_request: int = 10_000_000,
        max_objects_in_get: int = 500,
        max_objects_in_set: int = 500,
        seed: int | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._auth_lock = threading.Lock()
        self._users: dict[str, str] = dict({"alice": "secret"} if users is None else users)
        self._tokens: dict[str, str] = dict(tokens or {})
        self.store: NoteStore = store if store is not None else NoteStore()
        """The notes, states and change log; hand it to a new server to survive a restart."""
        for user in {*self._users, *self._tokens.values()}:
            self.store.ensure_account(user)
        self._ssl_context = ssl_context
        self._relative_urls = relative_urls
        self._hostless_ws_url = hostless_ws_url
        if well_known_status not in (301, 302, 303, 307, 308):
            raise ValueError("well_known_status must be a redirect status")
        self._well_known_status = well_known_status
        self._null_types_off = null_data_types_mean_off
        self._supports_push = supports_push
        self.limits = Limits(
            max_size_request=max_size_request,
            max_concurrent_requests=max_concurrent_requests,
            max_calls_in_request=max_calls_in_request,
            max_objects_in_get=max_objects_in_get,
            max_objects_in_set=max_objects_in_set,
        )
        self._rng = random.Random(seed)  # noqa: S311 - timing and shuffling, not secrets
        # Lifecycle (guarded by _life_lock; the loop objects belong to the server thread).
        self._life_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._startup_error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._running: asyncio.Event | None = None
        self._stopping = False
        # Connections (loop thread) and their count (shared, under _cond).
        self._conns: set[_Connection] = set()
        self._cond = threading.Condition()
        self._conn_count = 0
        self._requests_seen = 0
        self._inflight: Counter[str] = Counter()
        self._last_handshake: Handshake | None = None
        self._last_push_enable: dict[str, Any] | None = None
        self._session_serial = 0
        # Knobs (plain attributes: written by the test thread, read by the loop).
        self._delay: tuple[float, float] | None = None
        self._reorder_n = 0
        self._reorder_hold = 0.2
        self._halted = False
        self._omit_subprotocol = False
        self._fail_status: int | None = None
        self._drop_requests = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> ReferenceServer:
        """Bind the port and serve in a background thread; return ``self``.

        A restarted server (``start`` after ``stop``) binds the port it had before.
        Raises ``OSError`` when the port cannot be bound, ``RuntimeError`` if already running.
        """
        with self._life_lock:
            if self._thread is not None:
                raise RuntimeError("the reference server is already running")
            self._ready.clear()
            self._stopped.clear()
            self._startup_error = None
            self._stopping = False
            thread = threading.Thread(
                target=self._run, name=f"jmapws-reference-server:{self._port}", daemon=True
            )
            self._thread = thread
            thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            self.stop()
            raise TimeoutError("the reference server did not start in time")
        if self._startup_error is not None:
            error = self._startup_error
            thread.join(_START_TIMEOUT)
            with self._life_lock:
                self._thread = None
            raise error
        thread.name = f"jmapws-reference-server:{self._port}"
        logger.info("reference server listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Close every connection (1001), stop listening and join the thread; idempotent."""
        with self._life_lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            try:
                loop.call_soon_threadsafe(stop_requested.set)
            except RuntimeError:
                logger.debug("reference server loop already closed")
        thread.join(_START_TIMEOUT * 2)
        if thread.is_alive():
            logger.warning("reference server thread %s did not stop in time", thread.name)
        else:
            logger.info("reference server on port %s stopped", self._port)

    def serve_forever(self) -> None:
        """Start if needed, then block until :meth:`stop` (another thread) or Ctrl-C.

        On ``KeyboardInterrupt`` the server is stopped and the call returns normally.
        """
        if self._thread is None:
            self.start()
        try:
            self._stopped.wait()
        except KeyboardInterrupt:
            logger.info("interrupted; stopping the reference server")
        finally:
            self.stop()

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = "running" if self._thread is not None else "stopped"
        return f"<ReferenceServer {self.base_url} {running}>"

    # -- addresses ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (the requested one before the first start)."""
        return self._port

    @property
    def host(self) -> str:
        """The host the server listens on."""
        return self._host

    @property
    def base_url(self) -> str:
        """``http://host:port`` (``https`` with an ``ssl_context``)."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._netloc()}"

    @property
    def session_url(self) -> str:
        """The absolute URL of the Session resource."""
        return self.base_url + SESSION_PATH

    @property
    def api_url(self) -> str:
        """The absolute URL of the JMAP API endpoint (HTTP POST)."""
        return self.base_url + API_PATH

    @property
    def ws_url(self) -> str:
        """``ws://host:port/jmap/ws`` (``wss`` with an ``ssl_context``)."""
        scheme = "wss" if self._ssl_context is not None else "ws"
        return f"{scheme}://{self._netloc()}{WS_PATH}"

    @property
    def well_known_url(self) -> str:
        """The absolute ``/.well-known/jmap`` URL (RFC 8620 §2.2)."""
        return self.base_url + WELL_KNOWN_PATH

    def _netloc(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    # -- accounts and data -------------------------------------------------------------
    def account_id(self, user: str) -> str:
        """The account id of ``user`` (``"a-" + user``)."""
        return account_id_for(user)

    def set_password(self, user: str, password: str | None) -> None:
        """Add a user, change a password, or (``None``) remove Basic access for ``user``.

        Affects future authentications only; open connections stay open.
        """
        with self._auth_lock:
            if password is None:
                self._users.pop(user, None)
            else:
                self._users[user] = password
        if password is not None:
            self.store.ensure_account(user)

    def set_token(self, token: str, user: str | None) -> None:
        """Add a bearer token for ``user``, or (``None``) revoke it; future requests only."""
        with self._auth_lock:
            if user is None:
                self._tokens.pop(token, None)
            else:
                self._tokens[token] = user
        if user is not None:
            self.store.ensure_account(user)

    def change_note(
        self,
        user: str,
        note_id: str | None = None,
        *,
        title: str | None = None,
        body: str | None = None,
    ) -> str:
        """Create (``note_id=None``) or update a note of ``user`` from Python; return its id.

        Goes through the store like a ``Note/set``, so push-enabled connections get a
        StateChange.
        """
        account_id = self.store.ensure_account(user)
        if note_id is None:
            return self.store.create_note(account_id, title=title or "", body=body or "")
        self.store.update_note(account_id, note_id, title=title, body=body)
        return note_id

    def destroy_note(self, user: str, note_id: str) -> None:
        """Destroy a note of ``user`` from Python (push-enabled connections are told)."""
        self.store.destroy_note(self.store.ensure_account(user), note_id)

    def session_state(self) -> str:
        """The current Session ``state`` (also each Response's ``sessionState``)."""
        return f"ss{self._session_serial}"

    def bump_session_state(self) -> str:
        """Change the Session state, as if accounts or capabilities changed; return it."""
        self._session_serial += 1
        return self.session_state()

    # -- observation -------------------------------------------------------------------
    def connection_count(self) -> int:
        """The number of open WebSocket connections."""
        with self._cond:
            return self._conn_count

    def wait_for_connections(self, n: int, timeout: float | None = None) -> bool:
        """Block until exactly ``n`` WebSocket connections are open; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._conn_count == n, timeout)

    def requests_seen(self) -> int:
        """How many JMAP Request objects arrived (WebSocket frames and HTTP API posts)."""
        return self._requests_seen

    def wait_for_requests(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` Request objects have arrived; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._requests_seen >= n, timeout)

    def _count_request(self) -> None:
        with self._cond:
            self._requests_seen += 1
            self._cond.notify_all()

    def last_handshake(self) -> Handshake | None:
        """The last WebSocket upgrade attempt (successful or not), or ``None``."""
        return self._last_handshake

    def last_push_enable(self) -> dict[str, Any] | None:
        """The last WebSocketPushEnable object received (as sent, decoded), or ``None``."""
        return self._last_push_enable

    # -- knobs: timing --------------------------------------------------------------------
    def delay(self, seconds: float | tuple[float, float] | None) -> None:
        """Wait before processing each request (WebSocket and HTTP); ``None``/0 turns it off.

        A ``(low, high)`` pair draws each delay uniformly from the seeded generator, so
        answers on one connection come back out of order. Acts on requests that arrive
        from now on, on every connection.
        """
        if seconds is None:
            self._delay = None
        elif isinstance(seconds, tuple):
            low, high = seconds
            self._delay = (float(low), float(high))
        else:
            self._delay = (float(seconds), float(seconds)) if seconds > 0 else None

    def reorder(self, n: int, *, hold: float = 0.2) -> None:
        """Hold WebSocket answers per connection until ``n`` are ready, then send them shuffled.

        Leftovers are flushed ``hold`` seconds after the first of them was held, so a caller
        that sends fewer than ``n`` requests never stalls. ``n <= 1`` turns it off and
        flushes whatever is held. Acts on every connection, open and future.
        """
        self._reorder_hold = hold
        self._reorder_n = n
        if n <= 1 and self._thread is not None:
            self._call(self._flush_all())

    # -- knobs: frames --------------------------------------------------------------------
    def send_binary(self, data: bytes) -> None:
        """Send one binary frame on every open connection (a violation of RFC 8887 §4.3)."""
        self._call(self._broadcast_frame(lambda c: c.ws.send_bytes(data)))

    def send_raw_text(self, text: str) -> None:
        """Send ``text`` as one text frame on every open connection: invalid JSON, anything."""
        self._call(self._broadcast_frame(lambda c: c.ws.send_str(text)))

    def ping_flood(self, n: int, payload: bytes = b"") -> None:
        """Send ``n`` pings (and no data) on every open connection."""

        async def flood(conn: _Connection) -> None:
            for _ in range(n):
                await conn.ws.ping(payload)

        self._call(self._broadcast_frame(flood))

    def push_flood(
        self,
        n: int,
        account: str = "a-alice",
        *,
        wait: bool = True,
        timeout: float | None = 60.0,
    ) -> None:
        """Send ``n`` StateChange frames for ``account`` as fast as possible (benchmarks).

        They go to every open connection of the account's user, push-enabled or not, and
        carry the account's real current state and pushState. With ``wait=False`` the call
        returns at once; otherwise when every frame has been handed to the transport (which
        needs the client to keep reading: flow control applies), or ``TimeoutError``.
        """

        async def flood(conn: _Connection) -> None:
            text = _dumps(
                {
                    "@type": "StateChange",
                    "changed": {account: {"Note": self.store.state(account)}},
                    "pushState": self.store.push_state(),
                }
            )
            for _ in range(n):
                await conn.ws.send_str(text)

        coro = self._broadcast_frame(flood, only=lambda c: account in c.account_ids)
        if wait:
            self._call(coro, timeout=timeout)
        else:
            self._submit(coro)

    # -- knobs: connection faults ------------------------------------------------------------
    def close_all(self, code: int, reason: str = "") -> None:
        """Send a Close frame with ``code`` (and ``reason``) on every open connection.

        The server then waits for the client's Close and closes TCP (RFC 6455 §7.1.1); a
        client that does not answer within 1 s is aborted. Returns once every connection is
        gone (or after that bound). Under :meth:`halt` the client's Close is not read, so
        halted connections end by the abort.
        """
        self._call(self._close_all(code, reason))

    def reset_all(self) -> None:
        """Abort every open connection with a TCP RST (SO_LINGER (1, 0), then close)."""
        self._call(self._reset_all())

    def halt(self) -> None:
        """Stop reading and answering on every connection, open and future (half-open).

        Sockets stay open and handshakes still complete, but no frame is read, no ping
        answered, no answer or push sent until :meth:`resume`. Knob frames
        (:meth:`send_raw_text`, :meth:`close_all`...) still go out. HTTP is not affected.
        :meth:`stop` aborts halted connections instead of closing them.
        """
        self._halted = True
        if self._thread is not None:
            self._call(self._set_running(False))

    def resume(self) -> None:
        """Undo :meth:`halt`: read, answer and push again, held answers first."""
        self._halted = False
        if self._thread is not None:
            self._call(self._set_running(True))

    def omit_subprotocol(self, omit: bool = True) -> None:
        """Answer future handshakes without ``Sec-WebSocket-Protocol`` (RFC 8887 §4.2 breach)."""
        self._omit_subprotocol = omit

    def fail_handshake(self, status: int | None) -> None:
        """Answer future WebSocket upgrades with HTTP ``status`` (e.g. 500, 503); ``None`` stops.

        Authentication is checked first, so bad credentials still get 401.
        """
        self._fail_status = status

    def drop_requests(self, drop: bool = True) -> None:
        """Read WebSocket Request frames but never answer them (every connection, from now on).

        The requests still run (a ``Note/set`` changes data and pushes), like an answer
        lost on the way; pings are still answered. ``False`` turns it off.
        """
        self._drop_requests = drop

    # -- thread plumbing ------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        loop = self._loop
        if self._thread is None or loop is None:
            coro.close()
            raise RuntimeError("the reference server is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = _KNOB_TIMEOUT) -> _T:
        future = self._submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _run(self) -> None:
        """The server thread: its own loop, the app, then an orderly shutdown."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:
            if self._ready.is_set():
                logger.exception("reference server failed")
            else:
                self._startup_error = exc
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._ready.set()
                self._stopped.set()

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        self._running = asyncio.Event()
        if not self._halted:
            self._running.set()
        app = web.Application(client_max_size=self.limits.max_size_request * 2 + 65536)
        app.router.add_get(WELL_KNOWN_PATH, self._handle_well_known)
        app.router.add_get(SESSION_PATH, self._handle_session)
        app.router.add_post(API_PATH, self._handle_api)
        app.router.add_get(WS_PATH, self._handle_ws)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                self._host,
                self._port,
                ssl_context=self._ssl_context,
                reuse_address=True,
            )
            await site.start()
            self._port = site.port
            unsubscribe = self.store.subscribe(self._on_store_change)
        except BaseException:
            await runner.cleanup()
            raise
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            unsubscribe()
            await self._shutdown(runner)

    async def _shutdown(self, runner: web.AppRunner) -> None:
        self._stopping = True
        conns = list(self._conns)
        halted = self._running is not None and not self._running.is_set()
        if halted:  # a halted server does not talk: its connections just drop
            for conn in conns:
                self._abort(conn)
        await asyncio.gather(*(self._close(c, 1001, "server shutting down") for c in conns))
        if self._running is not None:
            self._running.set()
        await runner.cleanup()

    def _on_store_change(self, changed: dict[str, dict[str, str]], push_state: str) -> None:
        """Store listener (any thread): hand the change over to the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._broadcast_change, changed, push_state)
        except RuntimeError:
            logger.debug("state change after the loop closed; not pushed")

    # -- authentication --------------------------------------------------------------------
    def _authenticate(self, request: web.Request) -> tuple[str | None, str | None]:
        """``(user, scheme)``: the user is ``None`` when the credentials do not check out."""
        header = request.headers.get("Authorization")
        if not header:
            return None, None
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        lowered = scheme.lower()
        with self._auth_lock:
            if lowered == "basic":
                try:
                    decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    return None, scheme
                name, sep, password = decoded.partition(":")
                expected = self._users.get(name)
                if (
                    sep
                    and expected is not None
                    and hmac.compare_digest(expected.encode(), password.encode())
                ):
                    return name, scheme
                return None, scheme
            if lowered == "bearer":
                for token, name in self._tokens.items():
                    if hmac.compare_digest(token.encode(), credentials.encode()):
                        return name, scheme
        return None, scheme

    @staticmethod
    def _unauthorized(scheme: str | None) -> web.Response:
        detail = "credentials required" if scheme is None else "credentials rejected"
        response = _problem(401, "Unauthorized", detail)
        response.headers["WWW-Authenticate"] = CHALLENGE
        return response

    # -- HTTP ------------------------------------------------------------------------------
    async def _handle_well_known(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        location = SESSION_PATH if self._relative_urls else self.session_url
        response = web.Response(status=self._well_known_status)
        response.headers["Location"] = location
        return response

    async def _handle_session(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        return web.json_response(self.session_resource(user), dumps=_dumps)

    def session_resource(self, user: str) -> dict[str, Any]:
        """The Session resource (RFC 8620 §2) that ``user`` gets from ``/jmap/session``."""
        account_id = self.store.ensure_account(user)
        base = "" if self._relative_urls else self.base_url
        if self._hostless_ws_url:
            ws_url = "wss:" + WS_PATH  # Cyrus 3.6: "wss:/jmap/ws/", over http as well
        else:
            ws_url = WS_PATH if self._relative_urls else self.ws_url
        return {
            "capabilities": {
                CORE: self.limits.capability(),
                WEBSOCKET: {"url": ws_url, "supportsPush": self._supports_push},
                NOTES: {},
            },
            "accounts": {
                account_id: {
                    "name": user,
                    "isPersonal": True,
                    "isReadOnly": False,
                    "accountCapabilities": {NOTES: {}},
                }
            },
            "primaryAccounts": {NOTES: account_id},
            "username": user,
            "apiUrl": base + API_PATH,
            "downloadUrl": base + "/jmap/download/{accountId}/{blobId}/{name}?type={type}",
            "uploadUrl": base + "/jmap/upload/{accountId}/",
            "eventSourceUrl": base
            + "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}",
            "state": self.session_state(),
        }

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        self._count_request()
        body = await request.read()
        try:
            response = await self._process(user, self._parse(body))
        except JmapRequestError as exc:
            return web.json_response(
                exc.problem(), status=400, content_type=PROBLEM_JSON, dumps=_dumps
            )
        return web.json_response(response, dumps=_dumps)

    def _parse(self, data: bytes | str) -> Any:
        """Decode one request body or frame; enforce maxSizeRequest (RFC 8620 §3.6.1)."""
        limit = self.limits.max_size_request
        size = len(data)
        if isinstance(data, str) and size * 4 > limit:
            size = len(data.encode())
        if size > limit:
            raise JmapRequestError(
                "limit", f"request of {size} octets exceeds {limit}", limit="maxSizeRequest"
            )
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise JmapRequestError("notJSON", "the request is not JSON") from exc

    async def _process(self, user: str, obj: Any) -> dict[str, Any]:
        """Count the request as in flight for ``user``, delay it if asked, then run it."""
        if self._inflight[user] >= self.limits.max_concurrent_requests:
            raise JmapRequestError(
                "limit",
                f"more than {self.limits.max_concurrent_requests} concurrent requests",
                limit="maxConcurrentRequests",
            )
        self._inflight[user] += 1
        try:
            delay = self._delay
            if delay is not None:
                await asyncio.sleep(self._rng.uniform(*delay))
            ctx = RequestContext(
                store=self.store,
                user=user,
                account_ids=frozenset({account_id_for(user)}),
                limits=self.limits,
                session_state=self.session_state(),
            )
            return process_request(obj, ctx)
        finally:
            self._inflight[user] -= 1

    # -- WebSocket: handshake and reading ----------------------------------------------------
    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        offered = request.headers.get("Sec-WebSocket-Protocol")

        def record(status: int, subprotocol: str | None = None) -> None:
            self._last_handshake = Handshake(offered, subprotocol, scheme, user, status)

        if user is None:
            record(401)
            return self._unauthorized(scheme)
        if self._stopping:
            record(503)
            return _problem(503, "Service Unavailable", "the server is shutting down")
        fail_status = self._fail_status
        if fail_status is not None:
            record(fail_status)
            response = _problem(fail_status, "Handshake refused", "fail_handshake knob")
            if fail_status == 503:
                response.headers["Retry-After"] = "1"
            return response
        ws: web.WebSocketResponse = web.WebSocketResponse(
            protocols=() if self._omit_subprotocol else ("jmap",),
            autoping=False,
            autoclose=False,
            compress=False,
            timeout=_CLOSE_TIMEOUT,
            max_msg_size=self.limits.max_size_request * 2 + 65536,
        )
        ready = ws.can_prepare(request)
        # Recorded and registered before the 101 goes out, so a client that holds the
        # handshake answer can already observe both.
        record(101 if ready.ok else 400, ready.protocol)
        conn = _Connection(
            ws=ws,
            user=user,
            account_ids=frozenset({account_id_for(user)}),
            transport=request.transport,
        )
        self._register(conn, add=True)
        try:
            try:
                await ws.prepare(request)
            except (ConnectionError, web.HTTPException) as exc:
                record(400)
                logger.debug("WebSocket handshake failed: %s", exc)
                raise
            logger.debug("WebSocket connection for %s opened", user)
            await self._read_loop(conn)
        finally:
            self._register(conn, add=False)
            for handle in (conn.flush_handle, conn.abort_handle):
                if handle is not None:
                    handle.cancel()
            for task in list(conn.tasks):
                task.cancel()
            if conn.close_sent and conn.transport is not None:
                conn.transport.close()
            conn.finished.set()
            logger.debug("WebSocket connection for %s closed (%s)", user, ws.close_code)
        return ws

    def _register(self, conn: _Connection, *, add: bool) -> None:
        if add:
            self._conns.add(conn)
        else:
            self._conns.discard(conn)
        with self._cond:
            self._conn_count = len(self._conns)
            self._cond.notify_all()

    async def _read_loop(self, conn: _Connection) -> None:
        """Read frames until the connection ends; the server answers pings itself."""
        ws = conn.ws
        running = self._running
        assert running is not None
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

    async def _wait_resumed(self, conn: _Connection) -> None:
        """Wait until :meth:`resume` or until the connection is aborted."""
        running = self._running
        assert running is not None
        waiters = [
            asyncio.ensure_future(running.wait()),
            asyncio.ensure_future(conn.gone.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _on_text(self, conn: _Connection, text: str) -> None:
        """Dispatch one text frame by its ``@type`` (RFC 8887 §4.3)."""
        try:
            obj = self._parse(text)
        except JmapRequestError as exc:
            self._spawn(conn, self._send(conn, self._error_frame(exc, {})))
            return
        kind = obj.get("@type") if isinstance(obj, dict) else None
        if kind == "Request":
            self._count_request()
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
        return _dumps(frame)

    async def _answer(self, conn: _Connection, obj: dict[str, Any]) -> None:
        """Run one Request (its own task, so answers may overtake each other)."""
        try:
            response = await self._process(conn.user, obj)
        except JmapRequestError as exc:
            await self._deliver(conn, self._error_frame(exc, obj))
            return
        if self._drop_requests:
            logger.debug("drop_requests: not answering a request from %s", conn.user)
            return
        frame: dict[str, Any] = {"@type": "Response"}
        if obj.get("id") is not None:
            frame["requestId"] = obj["id"]
        frame.update(response)
        await self._deliver(conn, _dumps(frame))

    # -- WebSocket: push ------------------------------------------------------------------
    def _push_enable(self, conn: _Connection, obj: dict[str, Any]) -> None:
        """WebSocketPushEnable (RFC 8887 §4.3.5.2), with replay from ``pushState``."""
        self._last_push_enable = obj
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
        if not self._supports_push:
            logger.debug("push requested by %s but supportsPush is false; ignored", conn.user)
            return
        if self._null_types_off and not data_types:
            # Cyrus: no dataTypes, null and [] all turn push off, an earlier enable too.
            logger.debug("WebSocketPushEnable without types from %s: push off", conn.user)
            conn.push_enabled = False
            return
        conn.push_enabled = True
        conn.data_types = None if data_types is None else frozenset(data_types)
        if push_state is None or not self._wants_notes(conn):
            return
        changed, current = self.store.changed_since_push_state(push_state, conn.account_ids)
        if changed:
            frame = {
                "@type": "StateChange",
                "changed": {a: {"Note": s} for a, s in changed.items()},
                "pushState": current,
            }
            self._spawn(conn, self._send(conn, _dumps(frame), halt_aware=True))

    @staticmethod
    def _wants_notes(conn: _Connection) -> bool:
        return conn.data_types is None or "Note" in conn.data_types

    def _broadcast_change(self, changed: dict[str, dict[str, str]], push_state: str) -> None:
        """Loop thread: send a StateChange to every push-enabled connection that may see it."""
        for conn in list(self._conns):
            if not conn.push_enabled or not self._wants_notes(conn):
                continue
            visible = {a: s for a, s in changed.items() if a in conn.account_ids}
            if visible:
                frame = {"@type": "StateChange", "changed": visible, "pushState": push_state}
                self._spawn(conn, self._send(conn, _dumps(frame), halt_aware=True))

    # -- WebSocket: sending ----------------------------------------------------------------
    def _spawn(self, conn: _Connection, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        conn.tasks.add(task)
        task.add_done_callback(self._task_done(conn))

    @staticmethod
    def _task_done(conn: _Connection) -> Callable[[asyncio.Task[Any]], None]:
        def done(task: asyncio.Task[Any]) -> None:
            conn.tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                logger.error("connection task failed", exc_info=task.exception())

        return done

    async def _deliver(self, conn: _Connection, text: str) -> None:
        """Send an answer now, or hold it for :meth:`reorder`."""
        n = self._reorder_n
        if n <= 1:
            await self._send(conn, text, halt_aware=True)
            return
        conn.held.append(text)
        if len(conn.held) >= n:
            await self._flush(conn)
        elif conn.flush_handle is None:
            conn.flush_handle = asyncio.get_running_loop().call_later(
                self._reorder_hold, lambda: self._spawn(conn, self._flush(conn))
            )

    async def _flush(self, conn: _Connection) -> None:
        if conn.flush_handle is not None:
            conn.flush_handle.cancel()
            conn.flush_handle = None
        batch, conn.held = conn.held, []
        self._rng.shuffle(batch)
        for text in batch:
            await self._send(conn, text, halt_aware=True)

    async def _flush_all(self) -> None:
        await asyncio.gather(*(self._flush(c) for c in list(self._conns) if c.held))

    async def _send(self, conn: _Connection, text: str, *, halt_aware: bool = True) -> None:
        """Send one text frame; a connection that is gone just drops it (logged)."""
        if halt_aware and self._running is not None:
            await self._running.wait()
        await self._send_frame(conn, conn.ws.send_str(text))

    async def _send_frame(self, conn: _Connection, send: Coroutine[Any, Any, None]) -> None:
        async with conn.send_lock:
            if conn.ws.closed or conn.aborted or conn.close_sent:
                send.close()
                return
            try:
                await send
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("send to %s failed: %s", conn.user, exc)

    async def _broadcast_frame(
        self,
        make: Callable[[_Connection], Awaitable[None]],
        only: Callable[[_Connection], bool] | None = None,
    ) -> None:
        """Knob helper: run ``make(conn)`` (a coroutine) on every matching open connection."""

        async def one(conn: _Connection) -> None:
            async with conn.send_lock:
                if conn.ws.closed or conn.aborted or conn.close_sent:
                    return
                try:
                    await make(conn)
                except (ConnectionError, RuntimeError) as exc:
                    logger.debug("knob frame to %s failed: %s", conn.user, exc)

        conns = [c for c in list(self._conns) if only is None or only(c)]
        await asyncio.gather(*(one(c) for c in conns))

    # -- WebSocket: closing -----------------------------------------------------------------
    async def _begin_close(self, conn: _Connection, code: int, reason: str) -> None:
        """Send our Close frame once; the reader loop awaits the peer's (RFC 6455 §5.5.1).

        aiohttp's own ``close()`` drops TCP right away when another task is reading, so the
        client's Close would hit a closed socket; this sends the frame and lets the reader
        finish the handshake, with an abort after ``_CLOSE_TIMEOUT`` if the peer is silent.
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
                self._abort(conn)
                return
        conn.abort_handle = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT, self._abort, conn)

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        """Close with ``code`` and wait (bounded) until the connection is gone."""
        await self._begin_close(conn, code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.finished.wait(), _CLOSE_TIMEOUT + 1.0)

    async def _close_all(self, code: int, reason: str) -> None:
        await asyncio.gather(*(self._close(c, code, reason) for c in list(self._conns)))

    def _abort(self, conn: _Connection) -> None:
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

    async def _reset_all(self) -> None:
        for conn in list(self._conns):
            self._abort(conn)

    async def _set_running(self, running: bool) -> None:
        event = self._running
        if event is None:
            return
        if running:
            event.set()
        else:
            event.clear()
