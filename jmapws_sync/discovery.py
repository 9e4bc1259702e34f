"""The JMAP Session resource (RFC 8620 §2): fetch it over HTTPS, read it, connect from it.

Users know their server's address and credentials, not its WebSocket URL. :func:`fetch_session`
turns ``https://host`` (which means ``https://host/.well-known/jmap``, RFC 8620 §2.2) or a full
session URL into a :class:`SessionResource`; :func:`connect` then opens a
:class:`~jmapws_sync.session.WsSession` to the URL the resource advertises under
``urn:ietf:params:jmap:websocket`` (RFC 8887 §3), refusing a downgrade from https to ``ws://``.

Rules the fetch follows, and why:

* Redirects (301, 302, 303, 307, 308) are followed here, not by a library, so that each rule
  is enforced: at most ``max_redirects`` of them, no loop, never from https to http (that
  would expose the credentials and the resource to anyone on the path), and the credentials
  go only to the origin (scheme, host, port) of the first URL: a cross-origin redirect drops
  every header ``auth`` returned.
* ``timeout`` bounds the whole fetch, redirects included, not each socket operation: a
  watchdog shuts the socket down at the deadline, so a server that trickles bytes cannot
  hold the caller longer. Timeouts raise the builtin :class:`TimeoutError`.
* Proxies: ``proxy="http://[user:pass@]host:port"``, or (``proxy=None``) ``https_proxy`` /
  ``http_proxy`` from the environment; ``proxy=""`` means none. ``no_proxy`` from the
  environment applies to both, as websocket-client (which opens the WebSocket) does it, so
  that discovery and the WebSocket always take the same path. https targets go through an
  HTTP CONNECT tunnel; http targets are requested in absolute form.
* TLS verification is on by default (:func:`ssl.create_default_context`); ``cafile``,
  ``certfile``/``keyfile`` (a client certificate) or a whole ``ssl_context`` change it.
"""

# Why the standard library (http.client) and no HTTP library: the Session resource is one
# small GET per connect. http.client does TLS with the ssl module's verification, and HTTP
# CONNECT tunnels through proxies; what it does not do (bounded redirects that drop
# credentials across origins, refuse https -> http, a deadline for the whole fetch) we must
# control ourselves anyway, and a dependency would add weight and a second TLS/proxy
# configuration that could disagree with the one the WebSocket uses.

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit, urlunsplit

import attrs

from .auth import Auth
from .errors import AuthenticationError, SessionError, TransportError, WebSocketUnavailable
from .frames import CALENDARS, CONTACTS, CORE, MAIL, SUBMISSION, VACATION_RESPONSE, WEBSOCKET

if TYPE_CHECKING:
    from .session import WsSession

__all__ = [
    "MAX_SESSION_SIZE",
    "PUSH_DATA_TYPES",
    "WELL_KNOWN_PATH",
    "Account",
    "CoreCapability",
    "InsecureWebSocketUrl",
    "SessionResource",
    "WebSocketCapability",
    "connect",
    "fetch_session",
    "make_ssl_context",
    "websocket_url",
]

log = logging.getLogger(__name__)

#: Where a server publishes its Session resource (RFC 8620 §2.2).
WELL_KNOWN_PATH: Final = "/.well-known/jmap"
#: The largest Session resource accepted: 16 MiB, far above any real one.
MAX_SESSION_SIZE: Final = 16 * 1024 * 1024

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Which proxy environment variable serves which scheme (ws rides on http, wss on https).
_PROXY_KEYS: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
# Characters left as they are when a request target is made ASCII: RFC 3986 reserved and
# unreserved characters, and "%" so that existing escapes stay escapes.
_URL_SAFE: Final = "/:?#[]@!$&'()*+,;=%~-._"
_MAX_UINT: Final = 2**53 - 1  # RFC 8620 §1.3 UnsignedInt


#: The data types a StateChange can name, by the capability that brings them: the entries
#: of IANA's "JMAP Data Types" registry marked "can use for state change", the types of
#: Cyrus's own capabilities, and the ``Note`` type of the reference server
#: (:mod:`jmapws_sync.testing`). :meth:`SessionResource.push_data_types` reads it to turn
#: "every type" into the explicit list that servers such as Cyrus need (they take
#: ``dataTypes: null`` as "push off"). Unknown names are ignored by servers (RFC 8887
#: §4.3.5.2 names the types "the client is interested in"), so listing too many is safe.
PUSH_DATA_TYPES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        MAIL: ("Mailbox", "Thread", "Email", "EmailDelivery"),
        SUBMISSION: ("Identity", "EmailSubmission"),
        VACATION_RESPONSE: ("VacationResponse",),
        CONTACTS: ("AddressBook", "ContactCard"),
        CALENDARS: (
            "Calendar",
            "CalendarEvent",
            "CalendarEventNotification",
            "ParticipantIdentity",
        ),
        "urn:ietf:params:jmap:quota": ("Quota",),
        "urn:ietf:params:jmap:sieve": ("SieveScript",),
        "urn:ietf:params:jmap:principals": ("Principal", "ShareNotification"),
        # Cyrus IMAP's vendor capabilities (3.6-3.10).
        "https://cyrusimap.org/ns/jmap/contacts": ("AddressBook", "Contact", "ContactGroup"),
        "https://cyrusimap.org/ns/jmap/calendars": (
            "Calendar",
            "CalendarEvent",
            "CalendarEventNotification",
            "CalendarPreferences",
            "ParticipantIdentity",
        ),
        "https://cyrusimap.org/ns/jmap/notes": ("Note",),
        "https://cyrusimap.org/ns/jmap/sieve": ("SieveScript",),
        "https://cyrusimap.org/ns/jmap/quota": ("Quota",),
        # The reference server's notes (jmapws_sync.testing.NOTES).
        "urn:x-jmapws-sync:notes": ("Note",),
    }
)


class InsecureWebSocketUrl(SessionError):
    """The Session resource came over https but advertises a ``ws://`` (cleartext) URL.

    Following it would send the credentials, and every request, unencrypted: a downgrade
    an attacker on the path could not otherwise force. ``ws://`` is accepted only when the
    Session resource itself came over plain http (local development).
    """


# ---------------------------------------------------------------------------- data


@attrs.frozen
class CoreCapability:
    """The ``urn:ietf:params:jmap:core`` capability: the server's limits (RFC 8620 §2)."""

    max_size_upload: int
    max_concurrent_upload: int
    max_size_request: int
    max_concurrent_requests: int
    max_calls_in_request: int
    max_objects_in_get: int
    max_objects_in_set: int
    collation_algorithms: tuple[str, ...]


@attrs.frozen
class Account:
    """One account the user can access (RFC 8620 §2); capabilities stay raw dicts."""

    name: str
    is_personal: bool
    is_read_only: bool
    account_capabilities: dict[str, dict[str, Any]] = attrs.field(repr=False)


@attrs.frozen
class WebSocketCapability:
    """The ``urn:ietf:params:jmap:websocket`` capability (RFC 8887 §3), URL resolved."""

    url: str
    supports_push: bool


def _safe_url(url: str) -> str:
    """The URL without user info, query or fragment, for logs, reprs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@attrs.frozen
class SessionResource:
    """A parsed JMAP Session resource (RFC 8620 §2), with every URL made absolute.

    ``capabilities`` keeps every capability object raw, known or not; ``core`` and
    ``websocket`` are the typed views of the two this library uses. ``url`` is where the
    resource was finally fetched from (after redirects), the base its relative URLs were
    resolved against. ``raw`` is the JSON object as the server sent it.
    """

    capabilities: dict[str, dict[str, Any]] = attrs.field(repr=False)
    core: CoreCapability = attrs.field(repr=False)
    accounts: dict[str, Account] = attrs.field(repr=False)
    primary_accounts: dict[str, str]
    username: str
    api_url: str
    download_url: str
    upload_url: str
    event_source_url: str
    state: str
    websocket: WebSocketCapability | None
    url: str = attrs.field(repr=_safe_url)
    raw: dict[str, Any] = attrs.field(repr=False)

    @classmethod
    def from_json(cls, obj: object, *, url: str) -> SessionResource:
        """Read a decoded Session resource fetched from ``url``.

        Raises :class:`SessionError` whose ``field`` names the first member that is
        missing or of the wrong type (``"apiUrl"``, ``"accounts.A1.isPersonal"``,
        ``"capabilities.urn:ietf:params:jmap:core.maxSizeUpload"``).
        """
        return _parse_session(obj, url)

    def has(self, capability: str) -> bool:
        """Whether the server advertises ``capability`` (a URN such as :data:`MAIL`)."""
        return capability in self.capabilities

    def require_websocket(self) -> WebSocketCapability:
        """The WebSocket capability; :class:`WebSocketUnavailable` if the server has none."""
        if self.websocket is None:
            raise WebSocketUnavailable(
                f"the server at {_safe_url(self.url)} does not offer JMAP over WebSocket"
                f" (no {WEBSOCKET} capability)",
                field=f"capabilities.{WEBSOCKET}",
            )
        return self.websocket

    def push_data_types(self) -> tuple[str, ...]:
        """The data types of every capability this server advertises, for push.

        Read from :data:`PUSH_DATA_TYPES` for the capabilities of the resource and of its
        accounts, in that table's order, each once; empty when none is known. This is what
        ``enable_push()`` with no types sends as ``dataTypes``.
        """
        advertised = set(self.capabilities)
        for account in self.accounts.values():
            advertised.update(account.account_capabilities)
        types: dict[str, None] = {}
        for capability, names in PUSH_DATA_TYPES.items():
            if capability in advertised:
                types.update(dict.fromkeys(names))
        return tuple(types)

    def primary_account(self, capability: str | None = None) -> str:
        """The id of the user's primary account for ``capability``.

        With ``capability=None``: the primary mail account, else any primary account the
        server names, else the only account. Raises :class:`LookupError` when there is
        none, since an account id cannot be guessed.
        """
        if capability is not None:
            try:
                return self.primary_accounts[capability]
            except KeyError:
                raise LookupError(f"the server names no primary account for {capability}") from None
        if MAIL in self.primary_accounts:
            return self.primary_accounts[MAIL]
        for account_id in self.primary_accounts.values():
            return account_id
        if len(self.accounts) == 1:
            return next(iter(self.accounts))
        raise LookupError("the server names no primary account")


# ---------------------------------------------------------------------------- parsing


def _member(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise SessionError(f"invalid Session resource: {path!r} is missing", field=path)
    return obj[key]


def _wrong_type(path: str, expected: str) -> SessionError:
    return SessionError(f"invalid Session resource: {path!r} is not {expected}", field=path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(obj: Mapping[str, Any], key: str, path: str = "") -> str:
    where = _join(path, key)
    value = _member(obj, key, where)
    if not isinstance(value, str):
        raise _wrong_type(where, "a string")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str = "") -> bool:
    where = _join(path, key)
    value = _member(obj, key, where)
    if not isinstance(value, bool):
        raise _wrong_type(where, "a boolean")
    return value


def _uint(obj: Mapping[str, Any], key: str, path: str = "") -> int:
    where = _join(path, key)
    value = _member(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UINT:
        raise _wrong_type(where, "an unsigned integer")
    return value


def _object(obj: Mapping[str, Any], key: str, path: str = "") -> dict[str, Any]:
    where = _join(path, key)
    value = _member(obj, key, where)
    if not isinstance(value, dict):
        raise _wrong_type(where, "an object")
    return value


def _url(obj: Mapping[str, Any], key: str, base: str) -> str:
    # RFC 3986 §5 resolution; urljoin leaves the {braces} of URI templates alone.
    return urljoin(base, _str(obj, key))


def _capabilities(obj: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    for urn, value in obj.items():
        if not isinstance(value, dict):
            raise _wrong_type(_join(path, urn), "an object")
    return obj


def _core(capabilities: dict[str, dict[str, Any]]) -> CoreCapability:
    path = f"capabilities.{CORE}"
    core = _object(capabilities, CORE, "capabilities")
    algorithms = _member(core, "collationAlgorithms", f"{path}.collationAlgorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise _wrong_type(f"{path}.collationAlgorithms", "a list of strings")
    return CoreCapability(
        max_size_upload=_uint(core, "maxSizeUpload", path),
        max_concurrent_upload=_uint(core, "maxConcurrentUpload", path),
        max_size_request=_uint(core, "maxSizeRequest", path),
        max_concurrent_requests=_uint(core, "maxConcurrentRequests", path),
        max_calls_in_request=_uint(core, "maxCallsInRequest", path),
        max_objects_in_get=_uint(core, "maxObjectsInGet", path),
        max_objects_in_set=_uint(core, "maxObjectsInSet", path),
        collation_algorithms=tuple(algorithms),
    )


def _websocket_location(raw: str, base: str, path: str) -> str:
    """The absolute ``ws(s)://`` URL that the WebSocket capability's ``url`` names.

    A relative reference resolves against the Session resource's own URL (RFC 3986 §5). A
    URL with a scheme but no host (Cyrus 3.6 advertises ``"wss:/jmap/ws/"``, and says
    ``wss`` even when it serves plain http) is read the same way: the host *and* the
    security come from the Session resource's URL, http giving ``ws://`` and https
    ``wss://``, so an https session never yields ``ws://``. An http(s) scheme maps to ws(s),
    as the WebSocket API (WHATWG) does.
    """
    parts = urlsplit(raw)
    authority = raw[len(parts.scheme) + 1 if parts.scheme else 0 :].startswith("//")
    if not authority and parts.scheme in ("", "ws", "wss", "http", "https"):
        reference = urlunsplit(("", "", parts.path, parts.query, ""))
        resolved = urlsplit(urljoin(base, reference))
        scheme = "wss" if resolved.scheme == "https" else "ws"
    else:
        resolved = parts
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    try:
        valid = scheme in ("ws", "wss") and bool(resolved.hostname)
        valid = valid and (resolved.port is None or resolved.port > 0)
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise _wrong_type(path, "a ws:// or wss:// URL")
    return urlunsplit(resolved._replace(scheme=scheme, fragment=""))


def _websocket(capabilities: dict[str, dict[str, Any]], base: str) -> WebSocketCapability | None:
    if WEBSOCKET not in capabilities:
        return None
    path = f"capabilities.{WEBSOCKET}"
    cap = capabilities[WEBSOCKET]
    url = _websocket_location(_str(cap, "url", path), base, f"{path}.url")
    # supportsPush is required by RFC 8887 §3, but its absence only means "no push" and
    # refusing the whole server for it would help nobody; a wrong type is still an error.
    if "supportsPush" in cap:
        supports_push = _bool(cap, "supportsPush", path)
    else:
        log.debug("%s has no supportsPush; assuming false", path)
        supports_push = False
    return WebSocketCapability(url=url, supports_push=supports_push)


def _accounts(obj: dict[str, Any]) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    for account_id, value in obj.items():
        path = f"accounts.{account_id}"
        if not isinstance(value, dict):
            raise _wrong_type(path, "an object")
        caps = _capabilities(
            _object(value, "accountCapabilities", path), f"{path}.accountCapabilities"
        )
        accounts[account_id] = Account(
            name=_str(value, "name", path),
            is_personal=_bool(value, "isPersonal", path),
            is_read_only=_bool(value, "isReadOnly", path),
            account_capabilities=caps,
        )
    return accounts


def _parse_session(obj: object, url: str) -> SessionResource:
    if not isinstance(obj, dict):
        raise SessionError("invalid Session resource: not a JSON object")
    capabilities = _capabilities(_object(obj, "capabilities"), "capabilities")
    primary = _object(obj, "primaryAccounts")
    for urn, account_id in primary.items():
        if not isinstance(account_id, str):
            raise _wrong_type(f"primaryAccounts.{urn}", "a string")
    return SessionResource(
        capabilities=capabilities,
        core=_core(capabilities),
        accounts=_accounts(_object(obj, "accounts")),
        primary_accounts=primary,
        username=_str(obj, "username"),
        api_url=_url(obj, "apiUrl", url),
        download_url=_url(obj, "downloadUrl", url),
        upload_url=_url(obj, "uploadUrl", url),
        event_source_url=_url(obj, "eventSourceUrl", url),
        state=_str(obj, "state"),
        websocket=_websocket(capabilities, url),
        url=url,
        raw=obj,
    )


# ---------------------------------------------------------------------------- TLS, proxies


@functools.cache
def shared_default_context() -> ssl.SSLContext:
    """One verifying context trusting the system CAs, made once per process.

    Reading the system CA store takes tens of milliseconds; a reconnecting client would
    pay it at every connect. A context is safe to share between threads and connections.
    Treat it as read-only: pass your own ``ssl_context`` to change anything.
    """
    return ssl.create_default_context()


def make_ssl_context(
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> ssl.SSLContext:
    """The TLS context for discovery and the WebSocket alike; verification always on.

    ``ssl_context`` is returned as it is (it may carry its own CA and client
    certificate); with no option, :func:`shared_default_context`; otherwise a new context
    trusting the system CAs, or only ``cafile``,
    with the client certificate ``certfile`` (and its ``keyfile``, if separate) loaded.
    Raises :class:`ValueError` when both a context and files are given, or a file cannot
    be loaded.
    """
    return (
        _custom_context(ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile)
        or shared_default_context()
    )


def _custom_context(
    *,
    ssl_context: ssl.SSLContext | None,
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
) -> ssl.SSLContext | None:
    """The context the options ask for, or None for the shared default (made when needed)."""
    if ssl_context is not None:
        if cafile or certfile or keyfile:
            raise ValueError("pass either ssl_context or cafile/certfile/keyfile, not both")
        return ssl_context
    if keyfile and not certfile:
        raise ValueError("keyfile needs certfile")
    if not (cafile or certfile):
        return None
    try:
        context = ssl.create_default_context(cafile=cafile)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        raise ValueError(f"cannot load the TLS files: {exc.reason or exc}") from exc
    return context


@attrs.frozen
class _Proxy:
    """An HTTP proxy; ``headers`` carries Proxy-Authorization and is never shown."""

    host: str
    port: int
    headers: dict[str, str] = attrs.field(repr=False)

    @property
    def label(self) -> str:
        return f"http://{self.host}:{self.port}"


def _parse_proxy(proxy: str) -> _Proxy:
    """Read ``http://[user:pass@]host:port``; the message never repeats the URL."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("the proxy URL has an invalid port") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("only http://[user:pass@]host:port proxies are supported")
    headers: dict[str, str] = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        token = base64.b64encode(pair.encode()).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {token}"
    return _Proxy(parts.hostname, port, headers)


def _resolve_proxy(url: str, proxy: str | None) -> str:
    """The proxy URL to reach ``url`` through, ``""`` for a direct connection.

    ``proxy`` (``None``: the environment's ``https_proxy`` / ``http_proxy``), unless the
    environment's ``no_proxy`` lists the host.
    """
    parts = urlsplit(url)
    if proxy is None:
        proxy = urllib.request.getproxies().get(_PROXY_KEYS.get(parts.scheme, parts.scheme), "")
    if not proxy:
        return ""
    host = (parts.hostname or "").lower()
    key = f"{host}:{parts.port}" if parts.port and ":" not in host else host
    if urllib.request.proxy_bypass(key):
        log.debug("no_proxy: connecting to %s directly", host)
        return ""
    return proxy


# ---------------------------------------------------------------------------- HTTP


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS[scheme]


def _session_url(url: str) -> str:
    """``url`` itself, or its ``/.well-known/jmap`` when it names just a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {_safe_url(url)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("put credentials in auth=, not in the URL")
    _origin(parts)  # raises ValueError for a port that is not a number
    if parts.path in ("", "/"):
        parts = parts._replace(path=WELL_KNOWN_PATH)
    return urlunsplit(parts._replace(fragment=""))


@attrs.frozen
class _Reply:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


class _Watchdog:
    """Shuts a connection's socket down at the deadline of the whole fetch.

    A socket timeout bounds each read only; a server that sends a byte now and then would
    keep the caller forever. Shutting the raw socket down (not the TLS layer, which is not
    thread-safe) wakes the blocked read, which then fails; ``fired`` says why.
    """

    def __init__(self, conn: http.client.HTTPConnection, delay: float | None) -> None:
        self.fired = False
        self._conn = conn
        self._timer: threading.Timer | None = None
        if delay is not None:
            self._timer = threading.Timer(delay, self._fire)
            self._timer.name = "jmapws-discovery-deadline"
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self._conn.sock
        if sock is None:
            return  # still connecting: the socket timeout bounds that
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError as exc:
            log.debug("deadline: the socket was already closed (%s)", exc)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("fetching the JMAP Session resource timed out")
    return left


def _request_target(parts: SplitResult, *, absolute: bool) -> str:
    """Origin form (``/path?query``), or absolute form for a proxy; ASCII only."""
    path = parts.path or "/"
    target = f"{path}?{parts.query}" if parts.query else path
    if absolute:
        target = urlunsplit((parts.scheme, parts.netloc, target, "", ""))
    return quote(target, safe=_URL_SAFE)


def _failure(exc: Exception, safe: str, *, timed_out: bool, timeout: float | None) -> Exception:
    """Translate an ssl / socket / http.client exception into ours."""
    if timed_out or isinstance(exc, TimeoutError):
        limit = f" after {timeout:g} s" if timeout is not None else ""
        return TimeoutError(f"fetching the JMAP Session resource from {safe} timed out{limit}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError(
            f"TLS certificate verification failed for {safe} (certificate or host name not"
            f" trusted): {exc.verify_message}"
        )
    if isinstance(exc, ssl.SSLError):
        return TransportError(f"TLS failure with {safe}: {exc.reason or exc}")
    if isinstance(exc, http.client.HTTPException):
        return TransportError(f"invalid HTTP response from {safe}: {type(exc).__name__}")
    return TransportError(f"cannot fetch the JMAP Session resource from {safe}: {exc}")


def _get(
    parts: SplitResult,
    headers: Mapping[str, str],
    *,
    proxy: _Proxy | None,
    context: ssl.SSLContext | None,
    deadline: float | None,
    timeout: float | None,
) -> _Reply:
    """One GET, bounded by ``deadline``; the body is read only for a 2xx answer."""
    safe = _safe_url(urlunsplit(parts))
    host, port = parts.hostname or "", _origin(parts)[2]
    left = _remaining(deadline)
    conn: http.client.HTTPConnection
    send = dict(headers)
    if parts.scheme == "https":
        context = context or shared_default_context()
        if proxy is None:
            conn = http.client.HTTPSConnection(host, port, timeout=left, context=context)
        else:
            conn = http.client.HTTPSConnection(
                proxy.host, proxy.port, timeout=left, context=context
            )
            conn.set_tunnel(host, port, headers=proxy.headers)  # HTTP CONNECT
        target = _request_target(parts, absolute=False)
    else:
        if proxy is None:
            conn = http.client.HTTPConnection(host, port, timeout=left)
        else:
            conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=left)
            send.update(proxy.headers)
        target = _request_target(parts, absolute=proxy is not None)
    log.debug("GET %s%s", safe, f" via proxy {proxy.label}" if proxy else "")
    watchdog = _Watchdog(conn, left)
    try:
        conn.request("GET", target, headers=send)
        if watchdog.fired:  # it fired while connecting, before there was a socket to shut
            raise TimeoutError
        response = conn.getresponse()
        body = b""
        if 200 <= response.status < 300:
            body = response.read(MAX_SESSION_SIZE + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # A plain ValueError: a TLS socket whose raw socket the watchdog shut down mid-read
        # (ssl.SSLCertVerificationError is a ValueError too, but also an OSError).
        if not isinstance(exc, OSError | http.client.HTTPException) and not watchdog.fired:
            raise
        raise _failure(exc, safe, timed_out=watchdog.fired, timeout=timeout) from exc
    finally:
        watchdog.cancel()
        conn.close()
    if watchdog.fired:  # the shutdown can look like a clean end of stream: trust no answer
        raise TimeoutError(f"fetching the JMAP Session resource from {safe} timed out")
    return _Reply(response.status, response.reason, response.headers, body)


def _redirect_target(current: str, reply: _Reply) -> str:
    """The absolute URL a redirect points to; :class:`SessionError` if there is none."""
    location = reply.headers.get("Location")
    if not location or not location.strip():
        raise SessionError(
            f"{_safe_url(current)} redirected (HTTP {reply.status}) without a Location",
            status=reply.status,
        )
    target = urlunsplit(urlsplit(urljoin(current, location.strip()))._replace(fragment=""))
    parts = urlsplit(target)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        valid = valid and parts.username is None  # credentials in a URL: never
        if valid:
            _origin(parts)  # raises ValueError for a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise SessionError(
            f"{_safe_url(current)} redirected to an invalid URL", status=reply.status
        )
    return target


def fetch_session(
    url: str,
    *,
    auth: Auth | None = None,
    timeout: float | None = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    proxy: str | None = None,
    max_redirects: int = 5,
) -> SessionResource:
    """Fetch and read the JMAP Session resource (RFC 8620 §2).

    ``url`` is a base URL (``https://host`` or ``https://host/``: the resource is then at
    ``/.well-known/jmap``) or the full URL of the resource. ``auth`` is called once; its
    headers go only to the first URL's origin. ``timeout`` bounds the whole fetch
    (``None``: no bound). TLS and proxy options are described in the module docstring.

    The result does not require WebSocket support: see
    :meth:`SessionResource.require_websocket` and :func:`websocket_url`.

    Raises :class:`AuthenticationError` (HTTP 401/403; ``scheme`` from the server's
    challenge), :class:`SessionError` (another status, too many redirects, an https to http
    redirect, a body that is not a valid Session resource: ``field`` names the member),
    :class:`TransportError` (refused, unreachable, TLS verification failed, proxy refused)
    or :class:`TimeoutError`; :class:`ValueError` for a URL or option that makes no sense.
    """
    current = _session_url(url)
    context = _custom_context(
        ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    credentials = dict(auth()) if auth is not None else {}
    first_origin = _origin(urlsplit(current))
    seen = {current}
    while True:
        parts = urlsplit(current)
        headers = {"Accept": "application/json", "User-Agent": "jmapws-sync"}
        if credentials and _origin(parts) == first_origin:
            headers.update(credentials)
        resolved = _resolve_proxy(current, proxy)
        reply = _get(
            parts,
            headers,
            proxy=_parse_proxy(resolved) if resolved else None,
            context=context,
            deadline=deadline,
            timeout=timeout,
        )
        if reply.status not in _REDIRECTS:
            break
        target = _redirect_target(current, reply)
        safe_from, safe_to = _safe_url(current), _safe_url(target)
        if parts.scheme == "https" and urlsplit(target).scheme != "https":
            raise SessionError(
                f"{safe_from} redirected to {safe_to}: refusing a redirect from https to http",
                status=reply.status,
            )
        if target in seen:
            raise SessionError(f"redirect loop at {safe_to}", status=reply.status)
        if len(seen) > max_redirects:
            raise SessionError(
                f"more than {max_redirects} redirects fetching {_safe_url(url)}",
                status=reply.status,
            )
        if credentials and _origin(urlsplit(target)) != first_origin:
            log.debug("redirect to another origin (%s): credentials not sent there", safe_to)
        log.debug("HTTP %s: %s -> %s", reply.status, safe_from, safe_to)
        seen.add(target)
        current = target
    return _read_reply(current, reply)


def _read_reply(url: str, reply: _Reply) -> SessionResource:
    """Turn the final answer into a :class:`SessionResource` or the matching error."""
    safe = _safe_url(url)
    status = reply.status
    if status in (401, 403):
        challenge = reply.headers.get("WWW-Authenticate", "") or ""
        scheme = challenge.split(None, 1)[0].rstrip(",") if challenge.strip() else None
        raise AuthenticationError(
            f"{safe} refused the credentials (HTTP {status})", status=status, scheme=scheme
        )
    if not 200 <= status < 300:
        raise SessionError(f"{safe} answered HTTP {status} {reply.reason}".rstrip(), status=status)
    if len(reply.body) > MAX_SESSION_SIZE:
        raise SessionError(f"the Session resource at {safe} is larger than {MAX_SESSION_SIZE}")
    try:
        obj = json.loads(reply.body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, depth
        raise SessionError(f"the Session resource at {safe} is not valid JSON") from exc
    return _parse_session(obj, url)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ---------------------------------------------------------------------------- WebSocket


def websocket_url(resource: SessionResource) -> str:
    """The WebSocket URL to connect to, no weaker than where ``resource`` came from.

    From a resource fetched over https only a ``wss://`` URL is returned; a ``ws://`` one
    raises :class:`InsecureWebSocketUrl`. ``ws://`` is accepted for a resource fetched over
    plain http. Raises :class:`~jmapws_sync.errors.WebSocketUnavailable` when the server
    offers no WebSocket at all.
    """
    url = resource.require_websocket().url
    if urlsplit(resource.url).scheme == "https" and urlsplit(url).scheme != "wss":
        raise InsecureWebSocketUrl(
            f"the Session resource came over https but advertises the cleartext WebSocket"
            f" URL {_safe_url(url)}; refusing the downgrade",
            field=f"capabilities.{WEBSOCKET}.url",
        )
    return url


def connect(
    url: str,
    *,
    auth: Auth | None = None,
    timeout: float | None = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    proxy: str | None = None,
    require_subprotocol: bool = True,
    max_redirects: int = 5,
    **session_options: Any,
) -> WsSession:
    """Discover the server's WebSocket from ``url`` and open a session to it.

    Fetches the Session resource (:func:`fetch_session`), picks its WebSocket URL
    (:func:`websocket_url`: no downgrade from https to ws) and opens a
    :class:`~jmapws_sync.session.WsSession` whose ``session`` attribute holds the
    resource. The same TLS context and proxy serve both steps; ``auth`` is called for
    each. ``timeout`` bounds discovery and handshake together. ``session_options`` go to
    :meth:`WsSession.open <jmapws_sync.session.WsSession.open>` (``max_message_size``,
    ``max_queue``, ``headers``...).

    Raises what :func:`fetch_session` and ``WsSession.open`` raise, plus
    :class:`~jmapws_sync.errors.WebSocketUnavailable` and :class:`InsecureWebSocketUrl`.
    """
    from .session import WsSession  # noqa: PLC0415  (session.py imports this module's types)

    context = _custom_context(
        ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    resource = fetch_session(
        url,
        auth=auth,
        timeout=timeout,
        ssl_context=context,
        proxy=proxy,
        max_redirects=max_redirects,
    )
    ws_url = websocket_url(resource)
    return WsSession.open(
        ws_url,
        auth=auth,
        timeout=_remaining(deadline),
        ssl_context=context,
        proxy=_resolve_proxy(ws_url, proxy),
        require_subprotocol=require_subprotocol,
        session=resource,
        **session_options,
    )
