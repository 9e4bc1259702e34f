"""The reference JMAP-over-WebSocket server: aiohttp in its own event loop and thread.

:class:`ReferenceServer` serves one port with everything a JMAP client touches (the routes
are described in :mod:`jmapws_sync.testing.app`): the Session resource by discovery,
JMAP over HTTP, JMAP over WebSocket with push, and push over an event source.

Authentication is HTTP Basic (``users``) or Bearer (``tokens``); failures answer 401 with a
``WWW-Authenticate`` challenge for both schemes. Credentials are never logged or stored
anywhere but the maps given to the constructor.

The server runs in a named daemon thread with its own asyncio loop; every public method is
thread-safe and meant to be called from the test thread. The knobs (:meth:`delay`,
:meth:`reorder`, :meth:`halt`, :meth:`reset_all`...) make it misbehave on purpose for fault
tests; each says whether it acts on the open connections, on future ones, or both.
This module is the facade; :mod:`.app` holds the HTTP side (:mod:`.transfer` its blob
uploads and downloads, :mod:`.events` its event streams), :mod:`.hub` the WebSocket
connections, :mod:`.state` what they share with the test thread.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import random
import ssl
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from jmapws_sync.testing.app import API_PATH, SESSION_PATH, WELL_KNOWN_PATH, WS_PATH, JmapApp
from jmapws_sync.testing.blobs import DEFAULT_TYPE, BlobStore
from jmapws_sync.testing.events import EVENT_SOURCE_TEMPLATE, EventStreams
from jmapws_sync.testing.hub import Hub
from jmapws_sync.testing.jmap import Limits
from jmapws_sync.testing.loop import BackgroundLoop
from jmapws_sync.testing.state import (
    CYRUS_QUIRKS,
    Accounts,
    BlobStats,
    EventSourceRequest,
    Handshake,
    Knobs,
    Observed,
    Quirks,
)
from jmapws_sync.testing.store import NOTE, NoteStore, account_id_for

__all__ = ["CYRUS_QUIRKS", "BlobStats", "EventSourceRequest", "Handshake", "ReferenceServer"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: How long :meth:`ReferenceServer.start` waits for the port to be bound.
_START_TIMEOUT = 10.0
#: How long a knob call from the test thread may take.
_KNOB_TIMEOUT = 10.0


def _rate(bytes_per_second: float | None) -> float | None:
    if bytes_per_second is None:
        return None
    if not bytes_per_second > 0:
        raise ValueError("a throttle needs a positive rate (None turns it off)")
    return float(bytes_per_second)


class ReferenceServer:
    """A real JMAP server (HTTP + WebSocket on one port) for tests, demos and benchmarks.

    Use it as a context manager or call :meth:`start` / :meth:`stop`::

        with ReferenceServer(users={"alice": "secret"}, tokens={"tok": "alice"}) as srv:
            srv.session_url, srv.ws_url, srv.api_url

    Each user gets one account ``"a-<user>"`` holding ``Note`` and ``Notebook`` objects
    (capability :data:`~jmapws_sync.testing.NOTES`), each type with its own state and change
    log, and ``Foo/get``, ``Foo/set``, ``Foo/changes`` and ``Foo/query`` for both (see
    :mod:`jmapws_sync.testing.store`). The data live in :attr:`store`, which can be
    passed to a new server so data, states and the change logs survive a restart::

        again = ReferenceServer(store=srv.store, port=srv.port, users=...).start()

    Blobs (RFC 8620 §6) live in :attr:`blobs`, a
    :class:`~jmapws_sync.testing.blobs.BlobStore` that survives a restart the same way
    (``blobs=srv.blobs``); their ids are ``"G"`` + 40 hex digits of the data's SHA-256.
    ``uploadUrl`` (``POST /jmap/upload/{accountId}/``) takes at most ``max_size_upload``
    octets (413 otherwise, before the body when Content-Length says so) and
    ``max_concurrent_upload`` uploads per user at once (429 beyond); ``downloadUrl``
    (``GET /jmap/download/{accountId}/{blobId}/{name}?type={type}``) serves one
    ``Range`` (206, or 416) and ``If-Range`` (see :mod:`jmapws_sync.testing.transfer`).
    RFC 9404 (``urn:ietf:params:jmap:blob``: ``Blob/upload``, ``Blob/get`` over the same
    blobs) is served unless ``blob_capability=False``; each account advertises
    ``maxSizeBlobSet`` (``max_size_blob_set``, default 1 MiB, ``None`` for no limit),
    ``maxDataSources`` 64, ``supportedTypeNames`` ``["Note", "Notebook"]`` and
    ``supportedDigestAlgorithms`` ``["sha", "sha-256"]``. :meth:`add_blob` and
    :meth:`blob` reach the blobs from Python.

    Quirks of deployed servers, each off by default (:data:`CYRUS_QUIRKS` turns on those
    of Cyrus IMAP 3.6): ``relative_urls`` advertises apiUrl, the WebSocket url and the
    other URLs as relative references; ``hostless_ws_url`` advertises the WebSocket as
    ``wss:/jmap/ws`` (a scheme without a host, ``wss`` even over plain http);
    ``well_known_status`` is the redirect status of ``/.well-known/jmap`` (Cyrus: 301);
    ``null_data_types_mean_off`` makes a WebSocketPushEnable whose ``dataTypes`` is
    missing, ``null`` or ``[]`` turn push off, as Cyrus does, instead of meaning "all
    types" (RFC 8887 §4.3.5.2); ``sends_push_state=False`` leaves ``pushState`` out of
    every StateChange and ``replays=False`` ignores the ``pushState`` of a
    WebSocketPushEnable (both allowed by RFC 8887). permessage-deflate (RFC 7692) is
    negotiated when a client offers it (``compression=False`` never does), with at most
    ``compression_window_bits`` of window, and ``compression_no_context_takeover`` answers
    server_no_context_takeover whatever was asked. ``seed`` seeds the generator used by
    :meth:`delay` and :meth:`reorder` for reproducible runs.

    Sync quirks, each off by default: ``refuse_get_all`` answers ``Foo/get`` with
    ``ids: null`` by the method error requestTooLarge, "ids must be specified" (Cyrus 3.10's
    Email/get); ``query=False`` answers ``Foo/query`` with unknownMethod (a server without
    /query); ``push_states_differ`` pushes StateChanges whose states are not the strings
    ``Foo/get`` and ``Foo/changes`` give (``"s<n>"`` is pushed as ``"x<n+7>"``, see
    :func:`~jmapws_sync.testing.store.skewed_state`; Cyrus before 3.13.5 pushed a Mailbox
    state that Mailbox/get did not say), while ``Foo/changes`` still takes real states only;
    ``replays=False`` (above) is Stalwart's, which ignores ``pushState``;
    ``max_changes_cap`` returns at most that many changes per ``Foo/changes`` whatever
    ``maxChanges`` says (or when it is null), with ``hasMoreChanges`` and an intermediate
    state; ``destroy_forgets_changes`` makes every destroy forget the type's change log, so
    older states get cannotCalculateChanges (Cyrus 3.6 with ``expunge_mode: immediate``
    answers "outdated sinceModseq" after an expunge). ``max_query_limit`` is the largest
    page a ``Foo/query`` gets: a ``limit`` above it, or none, is reduced to it and the
    response's ``limit`` says so (RFC 8620 §5.5).

    Push over an event source (RFC 8620 §7.3; the wire format is described in
    :mod:`jmapws_sync.testing.events`): ``eventSourceUrl`` (:attr:`event_source_url`) is
    ``/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}``, authenticated
    like the API. It streams ``text/event-stream``: a ``state`` event per change of the
    requested types (``id:`` the pushState ``"p<seq>"``, data a StateChange with
    ``changed`` and ``pushState``), a ``ping`` event with ``{"interval": N}`` every N
    seconds of quiet (the requested ``ping`` raised to at least ``ping_min_interval``,
    default 1, and at most 300; ``ping=0``: none), and one state event at once with what
    changed since a ``Last-Event-ID`` the server gave. ``closeafter=state`` ends the
    response after the first state event. The stream works whatever the WebSocket
    quirks say (``supports_push=False`` only sets supportsPush false on the WebSocket
    capability, whose WebSocketPushEnable is then ignored).

    Quirks of servers that lack parts, each off by default: ``websocket=False`` leaves the
    ``urn:ietf:params:jmap:websocket`` capability out of the Session resource and answers
    the WebSocket route 404 (Fastmail; HTTP and the event source still work);
    ``websocket_push_fires=False`` advertises supportsPush true but makes every
    WebSocketPushEnable a no-op, so no StateChange frame ever comes (jmaple);
    ``event_ids=False`` sends state events without ``id:`` lines and ignores
    ``Last-Event-ID`` (Stalwart); ``ping_in_milliseconds`` gives the ping's interval in
    milliseconds (``{"interval": 30000}`` for 30 s, Stalwart); ``require_ping_and_closeafter``
    answers 400 (a problem details body) to a request without ``ping`` or ``closeafter``
    (James); ``event_current_state`` sends, on a connect without ``Last-Event-ID``, one
    state event with the current state of every requested type at once (James);
    ``event_retry_ms`` sends ``retry: N`` first; ``multiline_data`` pretty-prints each
    event's data, one ``data:`` line per JSON line; ``event_keepalive`` sends a
    ``: keepalive`` comment after that many seconds without a write.

    Knobs (thread-safe; those that act on open connections need a running server, else
    ``RuntimeError``): :meth:`delay`, :meth:`reorder`, :meth:`send_binary`,
    :meth:`send_raw_text`, :meth:`ping_flood`, :meth:`push_flood`, :meth:`close_all`,
    :meth:`reset_all`, :meth:`halt` / :meth:`resume`, :meth:`omit_subprotocol`,
    :meth:`fail_handshake`, :meth:`drop_requests`, :meth:`delay_session`,
    :meth:`bump_session_state`,
    :meth:`set_password`, :meth:`set_token`, :meth:`change_note`, :meth:`destroy_note`,
    :meth:`change_notebook`, :meth:`destroy_notebook`, :meth:`fill_notes`,
    :meth:`stall_changes`, :meth:`forget_changes`; for uploads and downloads
    :meth:`drop_downloads`, :meth:`ranges`, :meth:`throttle_downloads`,
    :meth:`throttle_uploads`, :meth:`busy`; for event streams :meth:`close_event_streams`,
    :meth:`reset_event_streams`, :meth:`silence_event_streams`.
    Observation: :meth:`connection_count`, :meth:`wait_for_connections`,
    :meth:`requests_seen`, :meth:`wait_for_requests`, :meth:`last_handshake`,
    :meth:`last_push_enable`, :meth:`blob_stats`, :meth:`wait_for_blob_stats`,
    :meth:`event_stream_count`, :meth:`wait_for_event_streams`,
    :meth:`last_event_source_request`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        store: NoteStore | None = None,
        blobs: BlobStore | None = None,
        ssl_context: ssl.SSLContext | None = None,
        relative_urls: bool = False,
        hostless_ws_url: bool = False,
        well_known_status: int = 307,
        null_data_types_mean_off: bool = False,
        supports_push: bool = True,
        sends_push_state: bool = True,
        replays: bool = True,
        compression: bool = True,
        compression_window_bits: int = 15,
        compression_no_context_takeover: bool = False,
        refuse_get_all: bool = False,
        query: bool = True,
        push_states_differ: bool = False,
        max_changes_cap: int | None = None,
        destroy_forgets_changes: bool = False,
        max_calls_in_request: int = 16,
        max_concurrent_requests: int = 4,
        max_size_request: int = 10_000_000,
        max_objects_in_get: int = 500,
        max_objects_in_set: int = 500,
        max_query_limit: int = 1000,
        max_size_upload: int = 50_000_000,
        max_concurrent_upload: int = 4,
        blob_capability: bool = True,
        max_size_blob_set: int | None = 1_048_576,
        websocket: bool = True,
        websocket_push_fires: bool = True,
        event_ids: bool = True,
        ping_in_milliseconds: bool = False,
        require_ping_and_closeafter: bool = False,
        event_current_state: bool = False,
        event_retry_ms: int | None = None,
        multiline_data: bool = False,
        event_keepalive: float | None = None,
        ping_min_interval: int = 1,
        seed: int | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._accounts = Accounts({"alice": "secret"} if users is None else users, tokens or {})
        self.store: NoteStore = store if store is not None else NoteStore()
        """The notes, states and change log; hand it to a new server to survive a restart."""
        for user in self._accounts.names():
            self.store.ensure_account(user)
        self.blobs: BlobStore = blobs if blobs is not None else BlobStore()
        """The uploaded blobs; hand it to a new server to keep them over a restart."""
        self._ssl_context = ssl_context
        self._quirks = Quirks(
            relative_urls=relative_urls,
            hostless_ws_url=hostless_ws_url,
            well_known_status=well_known_status,
            null_data_types_mean_off=null_data_types_mean_off,
            supports_push=supports_push,
            sends_push_state=sends_push_state,
            replays=replays,
            compression=compression,
            compression_window_bits=compression_window_bits,
            compression_no_context_takeover=compression_no_context_takeover,
            refuse_get_all=refuse_get_all,
            query=query,
            push_states_differ=push_states_differ,
            max_changes_cap=max_changes_cap,
            destroy_forgets_changes=destroy_forgets_changes,
            blob_capability=blob_capability,
            websocket=websocket,
            websocket_push_fires=websocket_push_fires,
            event_ids=event_ids,
            ping_in_milliseconds=ping_in_milliseconds,
            require_ping_and_closeafter=require_ping_and_closeafter,
            event_current_state=event_current_state,
            event_retry_ms=event_retry_ms,
            multiline_data=multiline_data,
            event_keepalive=event_keepalive,
            ping_min_interval=ping_min_interval,
        )
        if max_query_limit < 1:
            raise ValueError("max_query_limit must be at least 1")
        if max_size_upload < 0 or max_concurrent_upload < 1:
            raise ValueError("max_size_upload must be >= 0 and max_concurrent_upload >= 1")
        if max_size_blob_set is not None and max_size_blob_set < 0:
            raise ValueError("max_size_blob_set must be None or >= 0")
        self.limits = Limits(
            max_size_request=max_size_request,
            max_concurrent_requests=max_concurrent_requests,
            max_calls_in_request=max_calls_in_request,
            max_objects_in_get=max_objects_in_get,
            max_objects_in_set=max_objects_in_set,
            max_query_limit=max_query_limit,
            max_size_upload=max_size_upload,
            max_concurrent_upload=max_concurrent_upload,
            max_size_blob_set=max_size_blob_set,
        )
        self._rng = random.Random(seed)  # noqa: S311 - timing and shuffling, not secrets
        self._knobs = Knobs()
        self._observed = Observed()
        self._session_serial = 0
        self._loop = BackgroundLoop(_START_TIMEOUT)
        self._app: JmapApp | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> ReferenceServer:
        """Bind the port and serve in a background thread; return ``self``.

        A restarted server (``start`` after ``stop``) binds the port it had before.
        Raises ``OSError`` when the port cannot be bound, ``RuntimeError`` if already running.
        """
        try:
            self._loop.start(
                self._setup, self._teardown, name=f"jmapws-reference-server:{self._port}"
            )
        except RuntimeError as exc:
            raise RuntimeError("the reference server is already running") from exc
        self._loop.rename(f"jmapws-reference-server:{self._port}")
        logger.info("reference server listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Close every connection, stop listening and join the thread; idempotent.

        WebSockets get a Close (1001); event streams end cleanly (the body's last chunk).
        """
        if self._loop.running:
            self._loop.stop()
            logger.info("reference server on port %s stopped", self._port)

    def serve_forever(self) -> None:
        """Start if needed, then block until :meth:`stop` (another thread) or Ctrl-C.

        On ``KeyboardInterrupt`` the server is stopped and the call returns normally.
        """
        if not self._loop.running:
            self.start()
        try:
            self._loop.wait_stopped()
        except KeyboardInterrupt:
            logger.info("interrupted; stopping the reference server")
        finally:
            self.stop()

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = "running" if self._loop.running else "stopped"
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
    def event_source_url(self) -> str:
        """The absolute ``eventSourceUrl`` template (RFC 8620 §7.3), variables unexpanded."""
        return self.base_url + EVENT_SOURCE_TEMPLATE

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
        self._accounts.set_password(user, password)
        if password is not None:
            self.store.ensure_account(user)

    def set_token(self, token: str, user: str | None) -> None:
        """Add a bearer token for ``user``, or (``None``) revoke it; future requests only."""
        self._accounts.set_token(token, user)
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

    def change_notebook(
        self, user: str, notebook_id: str | None = None, *, name: str | None = None
    ) -> str:
        """Create (``notebook_id=None``) or rename a notebook of ``user``; return its id.

        Goes through the store like a ``Notebook/set`` (push-enabled connections are told).
        """
        account_id = self.store.ensure_account(user)
        if notebook_id is None:
            return self.store.create_notebook(account_id, name=name or "")
        self.store.update_notebook(account_id, notebook_id, name=name)
        return notebook_id

    def destroy_notebook(self, user: str, notebook_id: str) -> None:
        """Destroy a notebook of ``user`` from Python (push-enabled connections are told)."""
        self.store.destroy_notebook(self.store.ensure_account(user), notebook_id)

    def fill_notes(
        self, user: str, n: int, *, title: str = "note {i}", body: str = ""
    ) -> list[str]:
        """Create ``n`` notes of ``user`` in one commit (one StateChange); return their ids.

        ``{i}`` in ``title`` and ``body`` becomes the note's index (0 to ``n - 1``); any
        other text is kept as is. Fast enough for benchmarks (100,000 notes in about a
        second); see :meth:`NoteStore.bulk_create` for other types.
        """
        if "{i}" in title or "{i}" in body:
            notes: Iterable[dict[str, str]] = (
                {"title": title.replace("{i}", str(i)), "body": body.replace("{i}", str(i))}
                for i in range(n)
            )
        else:
            notes = itertools.repeat({"title": title, "body": body}, n)
        return self.store.bulk_create(self.store.ensure_account(user), NOTE, notes)

    def stall_changes(self, count: int = 1) -> None:
        """Make the next ``count`` ``Foo/changes`` calls (any type, any user) stall.

        A stalled call answers ``hasMoreChanges: true`` with ``newState`` equal to
        ``oldState`` and nothing created, updated or destroyed, as James does when it cannot
        calculate the changes. Only calls that would have succeeded count (an error, such as
        cannotCalculateChanges, is still answered and does not use one up); 0 cancels.
        """
        self._knobs.stall_changes(count)

    def forget_changes(self, user: str, data_type: str | None = None) -> None:
        """Forget the change log of ``user``'s ``data_type`` (``None``: every type).

        Every state but the current one then gets cannotCalculateChanges from
        ``Foo/changes``, as Cyrus answers an "outdated sinceState".
        """
        self.store.compact_changes(self.store.ensure_account(user), data_type)

    def add_blob(self, user: str, data: bytes, type: str = DEFAULT_TYPE) -> str:  # noqa: A002
        """Store ``data`` as a blob of ``user``'s account, of media ``type``; return its id.

        The same as an upload would give: the id is ``"G"`` + 40 hex digits of the SHA-256
        of ``data``, and downloads, ``Blob/get`` and ``Blob/upload`` see it at once.
        """
        return self.blobs.put(self.store.ensure_account(user), data, type).id

    def blob(self, user: str, blob_id: str) -> bytes | None:
        """The octets of blob ``blob_id`` of ``user``'s account, or ``None``."""
        return self.blobs.data(account_id_for(user), blob_id)

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
        return self._observed.connections

    def wait_for_connections(self, n: int, timeout: float | None = None) -> bool:
        """Block until exactly ``n`` WebSocket connections are open; ``False`` on timeout."""
        return self._observed.wait(lambda o: o.connections == n, timeout)

    def requests_seen(self) -> int:
        """How many JMAP Request objects arrived (WebSocket frames and HTTP API posts)."""
        return self._observed.requests

    def pings_seen(self) -> int:
        """How many WebSocket Pings arrived, on every connection."""
        return self._observed.pings

    def wait_for_requests(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` Request objects have arrived; ``False`` on timeout."""
        return self._observed.wait(lambda o: o.requests >= n, timeout)

    def last_handshake(self) -> Handshake | None:
        """The last WebSocket upgrade attempt (successful or not), or ``None``."""
        return self._observed.last_handshake

    def last_push_enable(self) -> dict[str, Any] | None:
        """The last WebSocketPushEnable object received (as sent, decoded), or ``None``."""
        return self._observed.last_push_enable

    def blob_stats(self) -> BlobStats:
        """What the upload and download endpoints saw so far (see :class:`BlobStats`).

        ``uploads`` and ``downloads`` count authenticated requests (refused ones too),
        ``last_range`` is the ``Range`` header of the last download (``None``: it had
        none), ``uploads_in_progress`` the uploads whose bodies are being read now and
        ``max_concurrent_uploads`` the most there were at once.
        """
        return self._observed.blob_stats()

    def wait_for_blob_stats(
        self, predicate: Callable[[BlobStats], bool], timeout: float | None = None
    ) -> bool:
        """Block until ``predicate(blob_stats())`` holds; ``False`` on timeout."""
        return self._observed.wait_blobs(predicate, timeout)

    def event_stream_count(self) -> int:
        """The number of open event streams (responses of ``eventSourceUrl`` being sent)."""
        return self._observed.event_streams

    def wait_for_event_streams(self, n: int, timeout: float | None = None) -> bool:
        """Block until exactly ``n`` event streams are open; ``False`` on timeout.

        A stream counts as open before its response headers go out, and until the server
        has finished with it (a stream whose client went away is noticed within 0.2 s).
        """
        return self._observed.wait(lambda o: o.event_streams == n, timeout)

    def last_event_source_request(self) -> EventSourceRequest | None:
        """The last GET of ``eventSourceUrl`` (refused ones too), or ``None``.

        An :class:`EventSourceRequest`: the raw ``types``, ``closeafter`` and ``ping``
        parameters (``None`` when absent), the ``Last-Event-ID`` header (``None`` when
        absent), the status answered, the user, the auth scheme, ``Accept`` and the query
        string.
        """
        return self._observed.last_event_source

    # -- knobs: timing --------------------------------------------------------------------
    def delay(self, seconds: float | tuple[float, float] | None) -> None:
        """Wait before processing each request (WebSocket and HTTP); ``None``/0 turns it off.

        A ``(low, high)`` pair draws each delay uniformly from the seeded generator, so
        answers on one connection come back out of order. Acts on requests that arrive
        from now on, on every connection.
        """
        if seconds is None:
            self._knobs.delay = None
        elif isinstance(seconds, tuple):
            low, high = seconds
            self._knobs.delay = (float(low), float(high))
        else:
            self._knobs.delay = (float(seconds), float(seconds)) if seconds > 0 else None

    def delay_session(self, seconds: float) -> None:
        """Answer each GET of the Session resource ``seconds`` late (0 turns it off)."""
        self._knobs.session_delay = max(float(seconds), 0.0)

    def reorder(self, n: int, *, hold: float = 0.2) -> None:
        """Hold WebSocket answers per connection until ``n`` are ready, then send them shuffled.

        Leftovers are flushed ``hold`` seconds after the first of them was held, so a caller
        that sends fewer than ``n`` requests never stalls. ``n <= 1`` turns it off and
        flushes whatever is held. Acts on every connection, open and future.
        """
        self._knobs.reorder_hold = hold
        self._knobs.reorder_n = n
        if n <= 1 and self._loop.running:
            self._call(self._hub().flush_all())

    # -- knobs: frames --------------------------------------------------------------------
    def send_binary(self, data: bytes) -> None:
        """Send one binary frame on every open connection (a violation of RFC 8887 §4.3)."""
        self._call(self._hub().broadcast_frame(lambda c: c.ws.send_bytes(data)))

    def send_raw_text(self, text: str) -> None:
        """Send ``text`` as one text frame on every open connection: invalid JSON, anything."""
        self._call(self._hub().broadcast_frame(lambda c: c.ws.send_str(text)))

    def ping_flood(self, n: int, payload: bytes = b"") -> None:
        """Send ``n`` pings (and no data) on every open connection."""
        self._call(self._hub().ping_flood(n, payload))

    def push_flood(
        self,
        n: int,
        account: str = "a-alice",
        *,
        wait: bool = True,
        timeout: float | None = 60.0,
        last_push_state: str | None = None,
    ) -> None:
        """Send ``n`` StateChange frames for ``account`` as fast as possible (benchmarks).

        They go to every open connection of the account's user, push-enabled or not, and
        carry the account's real current state and pushState; the last one carries
        ``last_push_state`` instead when it is given, so that a client that merges unread
        pushes knows when it has taken them all in. With ``wait=False`` the call returns at
        once; otherwise when every frame has been handed to the transport (which needs the
        client to keep reading: flow control applies), or ``TimeoutError``.
        """
        coro = self._hub().push_flood(n, account, last_push_state)
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
        self._call(self._hub().close_all(code, reason))

    def reset_all(self) -> None:
        """Abort every open connection with a TCP RST (SO_LINGER (1, 0), then close)."""
        self._call(self._hub().reset_all())

    def halt(self) -> None:
        """Stop reading and answering on every connection, open and future (half-open).

        Sockets stay open and handshakes still complete, but no frame is read, no ping
        answered, no answer or push sent until :meth:`resume`. Knob frames
        (:meth:`send_raw_text`, :meth:`close_all`...) still go out. HTTP is not affected,
        event streams included (:meth:`silence_event_streams` silences those).
        :meth:`stop` aborts halted connections instead of closing them.
        """
        self._knobs.halted = True
        if self._loop.running:
            self._call(self._hub().set_running(False))

    def resume(self) -> None:
        """Undo :meth:`halt`: read, answer and push again, held answers first."""
        self._knobs.halted = False
        if self._loop.running:
            self._call(self._hub().set_running(True))

    def omit_subprotocol(self, omit: bool = True) -> None:
        """Answer future handshakes without ``Sec-WebSocket-Protocol`` (RFC 8887 §4.2 breach)."""
        self._knobs.omit_subprotocol = omit

    def fail_handshake(self, status: int | None) -> None:
        """Answer future WebSocket upgrades with HTTP ``status`` (e.g. 500, 503); ``None`` stops.

        Authentication is checked first, so bad credentials still get 401.
        """
        self._knobs.fail_status = status

    def drop_requests(self, drop: bool = True) -> None:
        """Read WebSocket Request frames but never answer them (every connection, from now on).

        The requests still run (a ``Note/set`` changes data and pushes), like an answer
        lost on the way; pings are still answered. ``False`` turns it off.
        """
        self._knobs.drop_requests = drop

    # -- knobs: uploads and downloads (RFC 8620 §6) -----------------------------------------
    def drop_downloads(self, after_bytes: int, times: int = 1) -> None:
        """Cut the next ``times`` download bodies after ``after_bytes`` octets (0 stops).

        Each such response sends its headers (with the full Content-Length) and
        ``after_bytes`` octets of body, waits until the kernel has handed them to the peer,
        then resets the connection (TCP RST): the client sees a body cut short, never a
        clean end. A body no longer than ``after_bytes`` goes out whole before the reset.
        Counts responses that carry a body (not 4xx answers, not HEAD); future requests.
        """
        self._knobs.drop_downloads(after_bytes, times)

    def ranges(self, enabled: bool) -> None:
        """``False``: downloads ignore ``Range`` (200, whole body) and omit Accept-Ranges."""
        self._knobs.ranges = enabled

    def throttle_downloads(self, bytes_per_second: float | None) -> None:
        """Send download bodies at about ``bytes_per_second`` (``None``: full speed).

        Acts on downloads that start from now on; the loop sleeps between chunks, it never
        blocks.
        """
        self._knobs.download_rate = _rate(bytes_per_second)

    def throttle_uploads(self, bytes_per_second: float | None) -> None:
        """Read upload bodies at about ``bytes_per_second`` (``None``: full speed).

        Acts on uploads that start from now on; the client feels it as TCP backpressure.
        """
        self._knobs.upload_rate = _rate(bytes_per_second)

    def busy(self, count: int = 1, status: int = 503, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` uploads or downloads with ``status`` (0 stops).

        Authentication is checked first (bad credentials still get 401). The answer is a
        problem details body (type ``about:blank``) with ``Retry-After: retry_after``
        unless that is ``None``; an upload's body is not read.
        """
        self._knobs.set_busy(count, status, retry_after)

    # -- knobs: event streams (RFC 8620 §7.3) ------------------------------------------------
    def close_event_streams(self) -> None:
        """End every open event stream cleanly (the chunked body's last chunk).

        The connections stay open (keep-alive) and the client is expected to reconnect;
        returns once every stream has ended. A stream whose client does not read is
        aborted after 1 s instead.
        """
        self._call(self._events().close_all())

    def reset_event_streams(self) -> None:
        """Abort every open event stream with a TCP RST (SO_LINGER (1, 0), then close)."""
        self._call(self._events().reset_all())

    def silence_event_streams(self, silent: bool = True) -> None:
        """Make every event stream, open and future, send nothing (``False`` undoes it).

        No state event, ping or comment goes out while silenced (a dead server, as a
        client's ping watchdog sees it); the connections stay open and the changes wait.
        On ``False`` they go out, or a ping at once when one is overdue and none wait.
        """
        self._knobs.event_streams_silent = silent
        if self._loop.running:
            self._call(self._events().set_silent(silent))

    # -- thread plumbing ------------------------------------------------------------------
    def _events(self) -> EventStreams:
        app = self._app
        if not self._loop.running or app is None:
            raise RuntimeError("the reference server is not running")
        return app.events

    def _hub(self) -> Hub:
        app = self._app
        if not self._loop.running or app is None:
            raise RuntimeError("the reference server is not running")
        return app.hub

    def _submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return self._loop.submit(coro)

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = _KNOB_TIMEOUT) -> _T:
        return self._loop.call(coro, timeout)

    async def _setup(self) -> None:
        app = JmapApp(
            store=self.store,
            blobs=self.blobs,
            accounts=self._accounts,
            limits=self.limits,
            quirks=self._quirks,
            knobs=self._knobs,
            observed=self._observed,
            rng=self._rng,
            session_state=self.session_state,
            urls=lambda: (self.base_url, self.ws_url),
        )
        self._port = await app.start(self._host, self._port, self._ssl_context)
        self._app = app

    async def _teardown(self) -> None:
        if self._app is not None:
            await self._app.stop()
