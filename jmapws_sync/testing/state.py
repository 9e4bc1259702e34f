"""The reference server's state shared between the test thread and its event loop.

Plain objects with their own locks: :class:`Accounts` (the credentials), :class:`Quirks`
(fixed at construction), :class:`Knobs` (set by the test thread, read by the loop) and
:class:`Observed` (written by the loop, read and waited on by the test thread; its blob
side is summed up by :class:`BlobStats`, the last event source request by
:class:`EventSourceRequest`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

__all__ = [
    "CYRUS_QUIRKS",
    "Accounts",
    "BlobStats",
    "EventSourceRequest",
    "Handshake",
    "Knobs",
    "Observed",
    "Quirks",
]

#: The :class:`~jmapws_sync.testing.ReferenceServer` options that make it behave as Cyrus
#: IMAP 3.6 does where Cyrus departs from what a client would assume (seen against Cyrus
#: 3.6.1 and 3.10.3): ``ReferenceServer(**CYRUS_QUIRKS)``.
CYRUS_QUIRKS: Mapping[str, Any] = MappingProxyType(
    {
        "relative_urls": True,
        "hostless_ws_url": True,
        "well_known_status": 301,
        "null_data_types_mean_off": True,
        "refuse_get_all": True,
        "destroy_forgets_changes": True,
    }
)


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
    #: The HTTP status answered: 101 on success, else 401, 404 (``websocket=False``), 503,
    #: or a fail_handshake status.
    status: int
    #: The raw ``Sec-WebSocket-Extensions`` the client offered, or ``None``.
    offered_extensions: str | None = None


@dataclass(frozen=True)
class BlobStats:
    """What the upload and download endpoints saw (RFC 8620 §6.1, §6.2), at one moment."""

    #: Authenticated requests to the upload endpoint (busy, rejected and failed ones too).
    uploads: int = 0
    #: Authenticated requests to the download endpoint (busy, rejected, HEAD ones too).
    downloads: int = 0
    #: The ``Range`` header of the last such download, or ``None`` when it had none.
    last_range: str | None = None
    #: Uploads whose body is being read right now.
    uploads_in_progress: int = 0
    #: The most uploads whose bodies were being read at once, since the server was made.
    max_concurrent_uploads: int = 0


@dataclass(frozen=True)
class EventSourceRequest:
    """What one GET of ``eventSourceUrl`` carried (RFC 8620 §7.3), refused ones too.

    The query parameters are the raw decoded values (``None``: the parameter was absent);
    credentials are never kept, only the scheme.
    """

    #: The ``types`` parameter (``"*"`` or comma-separated type names), or ``None``.
    types: str | None
    #: The ``closeafter`` parameter (``"state"`` or ``"no"``), or ``None``.
    closeafter: str | None
    #: The ``ping`` parameter (seconds, as sent), or ``None``.
    ping: str | None
    #: The ``Last-Event-ID`` header's value, or ``None`` when the request had none.
    last_event_id: str | None
    #: The HTTP status answered: 200 (the stream), 400, 401 or 503.
    status: int
    #: The authenticated user, or ``None`` when authentication failed.
    user: str | None = None
    #: The ``Authorization`` scheme as sent (``"Basic"``, ``"Bearer"``...), or ``None``.
    auth_scheme: str | None = None
    #: The raw ``Accept`` header, or ``None``.
    accept: str | None = None
    #: The raw query string of the request URL (as sent, still percent-encoded).
    query_string: str = ""

    @property
    def has_last_event_id(self) -> bool:
        """Whether the request carried a ``Last-Event-ID`` header (even an empty one)."""
        return self.last_event_id is not None


@dataclass(frozen=True)
class Quirks:
    """How the server departs from what clients assume (see ``ReferenceServer``)."""

    relative_urls: bool = False
    hostless_ws_url: bool = False
    well_known_status: int = 307
    null_data_types_mean_off: bool = False
    supports_push: bool = True
    sends_push_state: bool = True
    replays: bool = True
    #: Negotiate permessage-deflate (RFC 7692) when a client offers it.
    compression: bool = True
    #: The largest server window agreed to (the client may ask for less), 9-15.
    compression_window_bits: int = 15
    #: Answer server_no_context_takeover even when the client did not ask for it.
    compression_no_context_takeover: bool = False
    #: ``Foo/get`` with ``ids: null`` is refused with requestTooLarge (Cyrus 3.10 Email/get).
    refuse_get_all: bool = False
    #: Serve ``Foo/query``; ``False`` answers unknownMethod.
    query: bool = True
    #: StateChange pushes carry strings that are not the states /get and /changes give.
    push_states_differ: bool = False
    #: At most this many changes per ``Foo/changes``, whatever maxChanges the client gives.
    max_changes_cap: int | None = None
    #: A destroy forgets the type's change log: older states get cannotCalculateChanges
    #: (Cyrus with ``expunge_mode: immediate``, "outdated sinceModseq").
    destroy_forgets_changes: bool = False
    #: Serve RFC 9404 (``urn:ietf:params:jmap:blob``: Blob/upload, Blob/get).
    blob_capability: bool = True
    #: Serve JMAP over WebSocket; ``False``: no such capability and the route answers 404.
    websocket: bool = True
    #: WebSocketPushEnable turns push on; ``False``: accepted, but no StateChange ever comes.
    websocket_push_fires: bool = True
    #: State events carry ``id:`` (the pushState); ``False``: none, Last-Event-ID ignored.
    event_ids: bool = True
    #: The ping event's ``interval`` is in milliseconds (Stalwart), not seconds.
    ping_in_milliseconds: bool = False
    #: An event source request without ``ping`` or ``closeafter`` is refused, 400 (James).
    require_ping_and_closeafter: bool = False
    #: On connect without Last-Event-ID, one state event with the current state at once.
    event_current_state: bool = False
    #: ``retry: N`` (milliseconds) at the start of every event stream; ``None``: no line.
    event_retry_ms: int | None = None
    #: Each event's JSON data pretty-printed, one ``data:`` line per JSON line.
    multiline_data: bool = False
    #: Seconds between ``: keepalive`` comments on an otherwise quiet stream; ``None``: none.
    event_keepalive: float | None = None
    #: The shortest ping interval granted (seconds); shorter requests are raised to it.
    ping_min_interval: int = 1

    def __post_init__(self) -> None:
        if self.well_known_status not in (301, 302, 303, 307, 308):
            raise ValueError("well_known_status must be a redirect status")
        if not 9 <= self.compression_window_bits <= 15:
            raise ValueError("compression_window_bits must be 9-15 (zlib cannot do 8)")
        if self.max_changes_cap is not None and self.max_changes_cap < 1:
            raise ValueError("max_changes_cap must be None or at least 1")
        if self.event_retry_ms is not None and self.event_retry_ms < 0:
            raise ValueError("event_retry_ms must be None or >= 0")
        if self.event_keepalive is not None and not self.event_keepalive > 0:
            raise ValueError("event_keepalive must be None or positive")
        if not 1 <= self.ping_min_interval <= 300:
            raise ValueError("ping_min_interval must be 1-300")


@dataclass
class Knobs:
    """Misbehaviour on purpose: plain attributes, written by the test thread.

    The one exception is the stall counter, which the loop counts down: it has its own lock.
    """

    delay: tuple[float, float] | None = None
    reorder_n: int = 0
    reorder_hold: float = 0.2
    halted: bool = False
    omit_subprotocol: bool = False
    fail_status: int | None = None
    drop_requests: bool = False
    session_delay: float = 0.0
    #: How many of the next ``Foo/changes`` calls stall (see ``take_stalled_change``).
    stalled_changes: int = 0
    _stall_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Downloads honour ``Range`` (and say ``Accept-Ranges: bytes``).
    ranges: bool = True
    #: Octets per second for download bodies / upload bodies; ``None``: as fast as possible.
    download_rate: float | None = None
    upload_rate: float | None = None
    #: ``(after_bytes, times)``: the next ``times`` download bodies are cut (see below).
    download_drops: tuple[int, int] = (0, 0)
    #: ``(count, status, retry_after)``: the next ``count`` transfers answer ``status``.
    busy: tuple[int, int, str | None] = (0, 503, None)
    #: Event streams send nothing (no event, ping or comment) while this is set.
    event_streams_silent: bool = False
    _blob_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def drop_downloads(self, after_bytes: int, times: int) -> None:
        """Cut the next ``times`` download bodies after ``after_bytes`` octets (0 stops)."""
        if after_bytes < 0:
            raise ValueError("after_bytes must not be negative")
        with self._blob_lock:
            self.download_drops = (after_bytes, max(times, 0))

    def take_download_drop(self) -> int | None:
        """After how many octets this download's body is cut, or ``None``; counts down."""
        with self._blob_lock:
            after, times = self.download_drops
            if times <= 0:
                return None
            self.download_drops = (after, times - 1)
            return after

    def set_busy(self, count: int, status: int, retry_after: str | None) -> None:
        """Make the next ``count`` uploads or downloads answer ``status`` (0 stops)."""
        if not 400 <= status <= 599:
            raise ValueError("a busy status must be 4xx or 5xx")
        with self._blob_lock:
            self.busy = (max(count, 0), status, retry_after)

    def take_busy(self) -> tuple[int, str | None] | None:
        """``(status, retry_after)`` when this transfer is refused as busy; counts down."""
        with self._blob_lock:
            count, status, retry_after = self.busy
            if count <= 0:
                return None
            self.busy = (count - 1, status, retry_after)
            return status, retry_after

    def stall_changes(self, count: int) -> None:
        """Make the next ``count`` successful ``Foo/changes`` calls stall (0 stops)."""
        with self._stall_lock:
            self.stalled_changes = max(count, 0)

    def take_stalled_change(self) -> bool:
        """Whether this ``Foo/changes`` call stalls; counts it down if so (any thread)."""
        with self._stall_lock:
            if self.stalled_changes <= 0:
                return False
            self.stalled_changes -= 1
            return True


class Accounts:
    """Who may log in: Basic passwords and Bearer tokens, compared in constant time."""

    def __init__(self, users: Mapping[str, str], tokens: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        self._users = dict(users)
        self._tokens = dict(tokens)

    def names(self) -> set[str]:
        """Every user that has a password or a token."""
        with self._lock:
            return {*self._users, *self._tokens.values()}

    def set_password(self, user: str, password: str | None) -> None:
        """Add a user, change a password, or (``None``) remove Basic access."""
        with self._lock:
            if password is None:
                self._users.pop(user, None)
            else:
                self._users[user] = password

    def set_token(self, token: str, user: str | None) -> None:
        """Add a bearer token for ``user``, or (``None``) revoke it."""
        with self._lock:
            if user is None:
                self._tokens.pop(token, None)
            else:
                self._tokens[token] = user

    def authenticate(self, header: str | None) -> tuple[str | None, str | None]:
        """``(user, scheme)`` for an Authorization header; user None when it fails."""
        if not header:
            return None, None
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        lowered = scheme.lower()
        with self._lock:
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


class Observed:
    """What the server saw, for tests to read and wait on (thread-safe)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.connections = 0
        self.requests = 0
        self.pings = 0
        self.last_handshake: Handshake | None = None
        self.last_push_enable: dict[str, Any] | None = None
        self._blobs = BlobStats()
        #: Open event streams (RFC 8620 §7.3 responses being streamed).
        self.event_streams = 0
        self.last_event_source: EventSourceRequest | None = None

    def set_connections(self, n: int) -> None:
        with self.cond:
            self.connections = n
            self.cond.notify_all()

    def set_event_streams(self, n: int) -> None:
        with self.cond:
            self.event_streams = n
            self.cond.notify_all()

    def record_event_source(self, request: EventSourceRequest) -> None:
        with self.cond:
            self.last_event_source = request
            self.cond.notify_all()

    def count_request(self) -> None:
        with self.cond:
            self.requests += 1
            self.cond.notify_all()

    # -- blobs: the loop writes, the test thread reads ------------------------------------
    def blob_stats(self) -> BlobStats:
        """What the upload and download endpoints saw so far."""
        with self.cond:
            return self._blobs

    def _update_blobs(self, **changes: Any) -> None:
        with self.cond:
            self._blobs = replace(self._blobs, **changes)
            self.cond.notify_all()

    def count_upload(self) -> None:
        with self.cond:
            self._update_blobs(uploads=self._blobs.uploads + 1)

    def count_download(self, range_header: str | None) -> None:
        with self.cond:
            self._update_blobs(downloads=self._blobs.downloads + 1, last_range=range_header)

    def upload_started(self) -> None:
        with self.cond:
            now = self._blobs.uploads_in_progress + 1
            self._update_blobs(
                uploads_in_progress=now,
                max_concurrent_uploads=max(now, self._blobs.max_concurrent_uploads),
            )

    def upload_ended(self) -> None:
        with self.cond:
            self._update_blobs(uploads_in_progress=self._blobs.uploads_in_progress - 1)

    def wait_blobs(self, predicate: Callable[[BlobStats], bool], timeout: float | None) -> bool:
        """Block until ``predicate(blob_stats())`` holds; False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self._blobs), timeout)

    def wait(self, predicate: Callable[[Observed], bool], timeout: float | None) -> bool:
        """Block until ``predicate(self)`` holds; False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout)
