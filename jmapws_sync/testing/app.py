"""The reference server's aiohttp application: HTTP routes, authentication, the upgrade.

* ``GET /.well-known/jmap`` -> a redirect to ``/jmap/session`` (RFC 8620 §2.2), both
  authenticated;
* ``GET /jmap/session`` -> the Session resource (RFC 8620 §2);
* ``POST /jmap/api`` -> JMAP over HTTP (RFC 8620 §3), request errors as RFC 7807 problems;
* ``GET /jmap/ws`` -> JMAP over WebSocket (RFC 8887), subprotocol ``jmap``; the open
  connections are the :class:`~jmapws_sync.testing.hub.Hub`'s (404 under the
  ``websocket=False`` quirk, which also drops the capability from the Session resource);
* ``GET /jmap/eventsource/?types=...&closeafter=...&ping=...`` -> push as server-sent
  events (RFC 8620 §7.3), the streams of :class:`~jmapws_sync.testing.events.EventStreams`;
* ``POST /jmap/upload/{accountId}/`` -> a blob upload (RFC 8620 §6.1): 201 with
  ``{"accountId", "blobId", "type", "size"}``, 413 over maxSizeUpload, 429 over
  maxConcurrentUpload;
* ``GET`` and ``HEAD /jmap/download/{accountId}/{blobId}/{name}?type=...`` (or
  ``accept=``) -> a blob download (RFC 8620 §6.2), one ``Range`` answered 206 (416 when
  unsatisfiable), ``If-Range`` against the ``ETag``.

The two blob routes are :class:`~jmapws_sync.testing.transfer.Transfers`'; the blobs are
a :class:`~jmapws_sync.testing.blobs.BlobStore`, which ``Blob/upload`` and ``Blob/get``
(RFC 9404, in :mod:`~jmapws_sync.testing.jmap`) share. Refusals over HTTP (401, 404,
413, 429, 503...) are RFC 7807 problems (``application/problem+json``).

Everything here runs in the server's loop thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from jmapws_sync.testing.blobs import BlobStore
from jmapws_sync.testing.events import EVENT_SOURCE_TEMPLATE, EVENTSOURCE_PATH, EventStreams
from jmapws_sync.testing.hub import CLOSE_TIMEOUT, Connection, DeflatingResponse, Hub, dumps
from jmapws_sync.testing.jmap import (
    BLOB,
    CORE,
    NOTES,
    WEBSOCKET,
    JmapRequestError,
    Limits,
    RequestContext,
    process_request,
)
from jmapws_sync.testing.state import Accounts, Handshake, Knobs, Observed, Quirks
from jmapws_sync.testing.store import NoteStore, account_id_for
from jmapws_sync.testing.transfer import (
    DOWNLOAD_PATH,
    PROBLEM_JSON,
    UPLOAD_PATH,
    Transfers,
    problem,
)

__all__ = [
    "API_PATH",
    "DOWNLOAD_PATH",
    "EVENTSOURCE_PATH",
    "SESSION_PATH",
    "UPLOAD_PATH",
    "WELL_KNOWN_PATH",
    "WS_PATH",
    "JmapApp",
]

logger = logging.getLogger(__name__)

SESSION_PATH = "/jmap/session"
API_PATH = "/jmap/api"
WS_PATH = "/jmap/ws"
WELL_KNOWN_PATH = "/.well-known/jmap"
CHALLENGE = 'Basic realm="jmap", Bearer realm="jmap"'


class JmapApp:
    """The routes of one reference server; ``urls()`` gives its (base, ws) URLs."""

    def __init__(
        self,
        *,
        store: NoteStore,
        blobs: BlobStore,
        accounts: Accounts,
        limits: Limits,
        quirks: Quirks,
        knobs: Knobs,
        observed: Observed,
        rng: random.Random,
        session_state: Callable[[], str],
        urls: Callable[[], tuple[str, str]],
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._accounts = accounts
        self._limits = limits
        self._quirks = quirks
        self._knobs = knobs
        self._observed = observed
        self._rng = rng
        self._session_state = session_state
        self._urls = urls
        self._inflight: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.hub = Hub(
            store=store,
            quirks=quirks,
            knobs=knobs,
            observed=observed,
            rng=rng,
            parse=self._parse,
            process=self._process,
        )
        self.events = EventStreams(
            store=store,
            quirks=quirks,
            knobs=knobs,
            observed=observed,
            authenticate=self._authenticate,
            unauthorized=self._unauthorized,
        )
        self.transfers = Transfers(
            blobs=blobs,
            store=store,
            limits=limits,
            knobs=knobs,
            observed=observed,
            authenticate=self._authenticate,
            unauthorized=self._unauthorized,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Bind and serve; return the bound port."""
        app = web.Application(client_max_size=self._limits.max_size_request * 2 + 65536)
        app.router.add_get(WELL_KNOWN_PATH, self._handle_well_known)
        app.router.add_get(SESSION_PATH, self._handle_session)
        app.router.add_post(API_PATH, self._handle_api)
        app.router.add_get(WS_PATH, self._handle_ws)
        self.events.add_routes(app.router)
        self.transfers.add_routes(app.router)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        loop = asyncio.get_running_loop()
        self._unsubscribe = self._store.subscribe(self._on_store_change(loop))
        return int(site.port)

    async def stop(self) -> None:
        """Close every connection (1001), end every event stream cleanly, stop listening."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        await asyncio.gather(self.hub.shutdown(), self.events.shutdown())
        if self._runner is not None:
            await self._runner.cleanup()

    def _on_store_change(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[dict[str, dict[str, str]], str], None]:
        def changed(states: dict[str, dict[str, str]], push_state: str) -> None:
            """Store listener (any thread): hand the change over to the loop."""
            if loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(self._broadcast_change, states, push_state)
            except RuntimeError:
                logger.debug("state change after the loop closed; not pushed")

        return changed

    def _broadcast_change(self, states: dict[str, dict[str, str]], push_state: str) -> None:
        """Loop thread: push one commit to the WebSockets and the event streams."""
        self.hub.broadcast_change(states, push_state)
        self.events.broadcast_change(states, push_state)

    # -- authentication ----------------------------------------------------------------------
    def _authenticate(self, request: web.Request) -> tuple[str | None, str | None]:
        return self._accounts.authenticate(request.headers.get("Authorization"))

    @staticmethod
    def _unauthorized(scheme: str | None) -> web.Response:
        detail = "credentials required" if scheme is None else "credentials rejected"
        response = problem(401, "Unauthorized", detail)
        response.headers["WWW-Authenticate"] = CHALLENGE
        return response

    # -- HTTP --------------------------------------------------------------------------------
    async def _handle_well_known(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        base, _ = self._urls()
        location = SESSION_PATH if self._quirks.relative_urls else base + SESSION_PATH
        response = web.Response(status=self._quirks.well_known_status)
        response.headers["Location"] = location
        return response

    async def _handle_session(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        if self._knobs.session_delay > 0:
            await asyncio.sleep(self._knobs.session_delay)  # the fault itself: a slow server
        return web.json_response(self.session_resource(user), dumps=dumps)

    def session_resource(self, user: str) -> dict[str, Any]:
        """The Session resource (RFC 8620 §2) that ``user`` gets from ``/jmap/session``."""
        account_id = self._store.ensure_account(user)
        quirks = self._quirks
        base_url, ws_absolute = self._urls()
        base = "" if quirks.relative_urls else base_url
        if quirks.hostless_ws_url:
            ws_url = "wss:" + WS_PATH  # Cyrus 3.6: "wss:/jmap/ws/", over http as well
        else:
            ws_url = WS_PATH if quirks.relative_urls else ws_absolute
        capabilities: dict[str, Any] = {CORE: self._limits.capability()}
        if quirks.websocket:
            capabilities[WEBSOCKET] = {"url": ws_url, "supportsPush": quirks.supports_push}
        capabilities[NOTES] = {}
        account_capabilities: dict[str, Any] = {NOTES: {}}
        if quirks.blob_capability:
            capabilities[BLOB] = {}  # RFC 9404 §3.1: the limits are per account
            account_capabilities[BLOB] = self._limits.blob_account_capability()
        return {
            "capabilities": capabilities,
            "accounts": {
                account_id: {
                    "name": user,
                    "isPersonal": True,
                    "isReadOnly": False,
                    "accountCapabilities": account_capabilities,
                }
            },
            "primaryAccounts": {NOTES: account_id},
            "username": user,
            "apiUrl": base + API_PATH,
            "downloadUrl": base + "/jmap/download/{accountId}/{blobId}/{name}?type={type}",
            "uploadUrl": base + "/jmap/upload/{accountId}/",
            "eventSourceUrl": base + EVENT_SOURCE_TEMPLATE,
            "state": self._session_state(),
        }

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        self._observed.count_request()
        body = await request.read()
        try:
            response = await self._process(user, self._parse(body))
        except JmapRequestError as exc:
            return web.json_response(
                exc.problem(), status=400, content_type=PROBLEM_JSON, dumps=dumps
            )
        return web.json_response(response, dumps=dumps)

    def _parse(self, data: bytes | str) -> Any:
        """Decode one request body or frame; enforce maxSizeRequest (RFC 8620 §3.6.1)."""
        limit = self._limits.max_size_request
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
        limits = self._limits
        if self._inflight[user] >= limits.max_concurrent_requests:
            raise JmapRequestError(
                "limit",
                f"more than {limits.max_concurrent_requests} concurrent requests",
                limit="maxConcurrentRequests",
            )
        self._inflight[user] += 1
        try:
            delay = self._knobs.delay
            if delay is not None:
                await asyncio.sleep(self._rng.uniform(*delay))
            ctx = RequestContext(
                store=self._store,
                user=user,
                account_ids=frozenset({account_id_for(user)}),
                limits=limits,
                session_state=self._session_state(),
                quirks=self._quirks,
                stall_changes=self._knobs.take_stalled_change,
                blobs=self._blobs if self._quirks.blob_capability else None,
            )
            return process_request(obj, ctx)
        finally:
            self._inflight[user] -= 1

    # -- WebSocket handshake -----------------------------------------------------------------
    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        offered = request.headers.get("Sec-WebSocket-Protocol")
        extensions = request.headers.get("Sec-WebSocket-Extensions")
        observed = self._observed

        def record(status: int, subprotocol: str | None = None) -> None:
            observed.last_handshake = Handshake(
                offered, subprotocol, scheme, user, status, extensions
            )

        if not self._quirks.websocket:
            record(404)  # no such endpoint (Fastmail): not even authentication is checked
            return problem(404, "Not Found", "this server has no JMAP over WebSocket")
        if user is None:
            record(401)
            return self._unauthorized(scheme)
        if self.hub.stopping:
            record(503)
            return problem(503, "Service Unavailable", "the server is shutting down")
        fail_status = self._knobs.fail_status
        if fail_status is not None:
            record(fail_status)
            response = problem(fail_status, "Handshake refused", "fail_handshake knob")
            if fail_status == 503:
                response.headers["Retry-After"] = "1"
            return response
        ws: web.WebSocketResponse = DeflatingResponse(
            self._quirks,
            protocols=() if self._knobs.omit_subprotocol else ("jmap",),
            autoping=False,
            autoclose=False,
            timeout=CLOSE_TIMEOUT,
            max_msg_size=self._limits.max_size_request * 2 + 65536,
        )
        ready = ws.can_prepare(request)
        # Recorded and registered before the 101 goes out, so a client that holds the
        # handshake answer can already observe both.
        record(101 if ready.ok else 400, ready.protocol)
        conn = Connection(
            ws=ws,
            user=user,
            account_ids=frozenset({account_id_for(user)}),
            transport=request.transport,
        )
        self.hub.register(conn)
        try:
            try:
                await ws.prepare(request)
            except (ConnectionError, web.HTTPException) as exc:
                record(400)
                logger.debug("WebSocket handshake failed: %s", exc)
                raise
            logger.debug("WebSocket connection for %s opened", user)
            await self.hub.serve(conn)
        finally:
            self.hub.unregister(conn)
        return ws
