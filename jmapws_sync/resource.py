"""The JMAP Session resource (RFC 8620 §2) as data: the model and its strict parser.

Pure: no I/O. :mod:`jmapws_sync.discovery` fetches the resource over HTTP and hands the
decoded JSON to :meth:`SessionResource.from_json`, which checks every member it reads and
makes every URL absolute against where the resource came from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urljoin, urlsplit, urlunsplit

import attrs

from ._net import safe_url
from .errors import InsecureWebSocketUrl, SessionError, WebSocketUnavailable
from .frames import CALENDARS, CONTACTS, CORE, MAIL, SUBMISSION, VACATION_RESPONSE, WEBSOCKET

__all__ = [
    "PUSH_DATA_TYPES",
    "Account",
    "CoreCapability",
    "SessionResource",
    "WebSocketCapability",
    "parse_session_json",
    "websocket_url",
]

log = logging.getLogger(__name__)

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
        "urn:x-jmapws-sync:notes": ("Notebook", "Note"),
    }
)


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
    url: str = attrs.field(repr=safe_url)
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
                f"the server at {safe_url(self.url)} does not offer JMAP over WebSocket"
                f" (no {WEBSOCKET} capability)",
                field=f"capabilities.{WEBSOCKET}",
            )
        return self.websocket

    def push_data_types(self) -> tuple[str, ...]:
        """The data types of every capability this server advertises, for push.

        Read from :data:`PUSH_DATA_TYPES` for the capabilities of the resource, of its
        accounts and of its primary accounts (Cyrus names its calendars and contacts only
        there), in that table's order, each once; empty when none is known. This is what
        ``enable_push()`` with no types sends as ``dataTypes``.
        """
        advertised = set(self.capabilities) | set(self.primary_accounts)
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


def parse_session_json(body: bytes, url: str) -> SessionResource:
    """Decode and read a Session resource body fetched from ``url``; strict JSON (RFC 8259)."""
    try:
        obj = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, depth
        raise SessionError(f"the Session resource at {safe_url(url)} is not valid JSON") from exc
    return _parse_session(obj, url)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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
            f" URL {safe_url(url)}; refusing the downgrade",
            field=f"capabilities.{WEBSOCKET}.url",
        )
    return url
