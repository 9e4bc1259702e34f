"""JMAP request processing for the reference server, independent of the transport.

:func:`process_request` takes one decoded Request object (RFC 8620 §3.3) and returns the
Response object (§3.4) or raises :class:`JmapRequestError` (§3.6.1); the server wraps either
for WebSocket (RFC 8887 §4.3, with ``@type`` and ``requestId``) or HTTP (problem details).
Methods: ``Core/echo`` (§4) and, for each type of the notes capability (``Note`` and
``Notebook``), ``Foo/get``, ``Foo/set``, ``Foo/changes`` and ``Foo/query`` (§5.1-5.3, §5.5)
over a :class:`~jmapws_sync.testing.store.NoteStore`; back-references per §3.7. The quirks
that change method answers (``refuse_get_all``, ``query``, ``max_changes_cap``) come in the
:class:`RequestContext`, as does the ``stall_changes`` knob.

With a :class:`~jmapws_sync.testing.blobs.BlobStore` in the context, the blob capability
(:data:`BLOB`, RFC 9404) is served too: ``Blob/upload`` (§4.1) and ``Blob/get`` (§4.2),
over the same blobs as the HTTP upload and download endpoints. Without one, ``BLOB`` is an
unknown capability and ``Blob/upload`` and ``Blob/get`` unknown methods.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from jmapws_sync.testing.blobs import DEFAULT_TYPE, Blob, BlobBuffer, BlobStore
from jmapws_sync.testing.state import Quirks
from jmapws_sync.testing.store import (
    DATA_TYPES,
    AnchorNotFound,
    CannotCalculateChanges,
    NoteStore,
    StateMismatch,
)

_NO_QUIRKS = Quirks()

__all__ = [
    "BLOB",
    "CORE",
    "NOTES",
    "WEBSOCKET",
    "JmapRequestError",
    "Limits",
    "RequestContext",
    "process_request",
]

logger = logging.getLogger(__name__)

CORE = "urn:ietf:params:jmap:core"
WEBSOCKET = "urn:ietf:params:jmap:websocket"
NOTES = "urn:x-jmapws-sync:notes"
#: JMAP Blob management (RFC 9404).
BLOB = "urn:ietf:params:jmap:blob"
KNOWN_CAPABILITIES = frozenset({CORE, WEBSOCKET, NOTES})
#: The methods of :data:`BLOB` (``Blob/copy`` would be core's, RFC 8620 §6.3).
BLOB_METHODS = frozenset({"Blob/upload", "Blob/get", "Blob/lookup"})
#: The digests ``Blob/get`` gives (RFC 9404 §4.2), by their names in ``digest:<name>``.
DIGEST_ALGORITHMS: Mapping[str, str] = {"sha": "sha1", "sha-256": "sha256"}
ERROR_PREFIX = "urn:ietf:params:jmap:error:"


@dataclass(frozen=True)
class Limits:
    """The ``urn:ietf:params:jmap:core`` limits the server advertises and enforces."""

    max_size_upload: int = 50_000_000
    max_concurrent_upload: int = 4
    max_size_request: int = 10_000_000
    max_concurrent_requests: int = 4
    max_calls_in_request: int = 16
    max_objects_in_get: int = 500
    max_objects_in_set: int = 500
    #: The largest ``limit`` a ``Foo/query`` gets (RFC 8620 §5.5); not advertised.
    max_query_limit: int = 1000
    #: The largest blob ``Blob/upload`` makes (RFC 9404 §3.1); ``None``: no limit.
    max_size_blob_set: int | None = 1_048_576
    #: The most DataSourceObjects one ``Blob/upload`` creation may have (RFC 9404 §3.1).
    max_data_sources: int = 64

    def capability(self) -> dict[str, Any]:
        """The core capability object of the Session resource (RFC 8620 §2)."""
        return {
            "maxSizeUpload": self.max_size_upload,
            "maxConcurrentUpload": self.max_concurrent_upload,
            "maxSizeRequest": self.max_size_request,
            "maxConcurrentRequests": self.max_concurrent_requests,
            "maxCallsInRequest": self.max_calls_in_request,
            "maxObjectsInGet": self.max_objects_in_get,
            "maxObjectsInSet": self.max_objects_in_set,
            "collationAlgorithms": ["i;ascii-casemap", "i;octet"],
        }

    def blob_account_capability(self) -> dict[str, Any]:
        """The blob capability of an account (RFC 9404 §3.1), in ``accountCapabilities``."""
        return {
            "maxSizeBlobSet": self.max_size_blob_set,
            "maxDataSources": self.max_data_sources,
            "supportedTypeNames": sorted(DATA_TYPES),
            "supportedDigestAlgorithms": list(DIGEST_ALGORITHMS),
        }


class JmapRequestError(Exception):
    """A request-level error (RFC 8620 §3.6.1): the whole request is rejected."""

    def __init__(self, kind: str, detail: str, *, limit: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.limit = limit

    @property
    def type_uri(self) -> str:
        """The full error type, e.g. ``urn:ietf:params:jmap:error:notRequest``."""
        return ERROR_PREFIX + self.kind

    def problem(self) -> dict[str, Any]:
        """The RFC 7807 problem details object (without WebSocket ``@type``/``requestId``)."""
        body: dict[str, Any] = {"type": self.type_uri, "status": 400, "detail": self.detail}
        if self.limit is not None:
            body["limit"] = self.limit
        return body


class MethodError(Exception):
    """A method-level error (RFC 8620 §3.6.2): becomes ``["error", {...}, callId]``."""

    def __init__(self, kind: str, description: str | None = None) -> None:
        super().__init__(description or kind)
        self.kind = kind
        self.description = description

    def arguments(self) -> dict[str, Any]:
        """The error response's arguments."""
        args: dict[str, Any] = {"type": self.kind}
        if self.description is not None:
            args["description"] = self.description
        return args


@dataclass(frozen=True)
class RequestContext:
    """Who asks, against which data, within which limits, in which session state."""

    store: NoteStore
    user: str
    account_ids: Collection[str]
    limits: Limits
    session_state: str
    quirks: Quirks = _NO_QUIRKS
    #: Called by each ``Foo/changes`` about to succeed: True makes it stall (the knob).
    stall_changes: Callable[[], bool] = lambda: False
    #: The blobs, for ``Blob/upload`` and ``Blob/get``; ``None``: no blob capability.
    blobs: BlobStore | None = None


Method = Callable[[RequestContext, dict[str, Any], dict[str, str]], dict[str, Any]]


def process_request(obj: object, ctx: RequestContext) -> dict[str, Any]:
    """Run one JMAP Request object; return the Response object (without ``@type``).

    Raises :class:`JmapRequestError` for ``notRequest``, ``unknownCapability`` and the
    ``maxCallsInRequest`` limit; method-level problems end up inside the response.
    """
    using, calls, created_ids_in = _validate(obj)
    if len(calls) > ctx.limits.max_calls_in_request:
        raise JmapRequestError(
            "limit",
            f"{len(calls)} method calls; at most {ctx.limits.max_calls_in_request} allowed",
            limit="maxCallsInRequest",
        )
    known = KNOWN_CAPABILITIES if ctx.blobs is None else KNOWN_CAPABILITIES | {BLOB}
    unknown = [c for c in using if c not in known]
    if unknown:
        raise JmapRequestError("unknownCapability", f"unknown capabilities: {unknown}")
    for name, _, _ in calls:
        needed = _capability_of(name)
        if needed not in known:
            continue  # Blob/* without the blob capability: unknownMethod, below
        if needed is not None and needed not in using:
            raise JmapRequestError(
                "unknownCapability", f"{name} needs {needed!r} in the 'using' property"
            )
    created_ids = dict(created_ids_in) if created_ids_in is not None else {}
    responses: list[list[Any]] = []
    for name, args, call_id in calls:
        try:
            resolved = _resolve_references(args, responses)
            method = _METHODS.get(name, _unknown)
            if ctx.blobs is None and name in BLOB_METHODS:
                method = _unknown
            result = method(ctx, resolved, created_ids)
        except MethodError as exc:
            responses.append(["error", exc.arguments(), call_id])
        except Exception:
            logger.exception("method %s failed", name)
            responses.append(["error", {"type": "serverFail"}, call_id])
        else:
            responses.append([name, result, call_id])
    response: dict[str, Any] = {
        "methodResponses": responses,
        "sessionState": ctx.session_state,
    }
    if created_ids_in is not None:
        response["createdIds"] = created_ids
    return response


# -- validation ------------------------------------------------------------------------
def _validate(
    obj: object,
) -> tuple[list[str], list[tuple[str, dict[str, Any], str]], dict[str, str] | None]:
    """Check the Request shape (RFC 8620 §3.3); raise ``notRequest`` if it does not fit."""
    if not isinstance(obj, dict):
        raise JmapRequestError("notRequest", "the request is not a JSON object")
    using = obj.get("using")
    if not isinstance(using, list) or not all(isinstance(c, str) for c in using):
        raise JmapRequestError("notRequest", "'using' must be an array of strings")
    raw_calls = obj.get("methodCalls")
    if not isinstance(raw_calls, list):
        raise JmapRequestError("notRequest", "'methodCalls' must be an array")
    calls: list[tuple[str, dict[str, Any], str]] = []
    for item in raw_calls:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not isinstance(item[1], dict)
            or not isinstance(item[2], str)
        ):
            raise JmapRequestError(
                "notRequest", "each method call must be [name, arguments object, call id]"
            )
        calls.append((item[0], item[1], item[2]))
    created_ids = obj.get("createdIds")
    if created_ids is not None and (
        not isinstance(created_ids, dict)
        or not all(isinstance(v, str) for v in created_ids.values())
    ):
        raise JmapRequestError("notRequest", "'createdIds' must map ids to ids")
    return using, calls, created_ids


def _capability_of(name: str) -> str | None:
    """The capability a method belongs to, or ``None`` for methods we do not know."""
    if name.startswith("Core/"):
        return CORE
    if name in BLOB_METHODS:
        return BLOB
    if name.partition("/")[0] in DATA_TYPES:
        return NOTES
    return None


# -- back-references (RFC 8620 §3.7) -------------------------------------------------------
def _resolve_references(args: dict[str, Any], responses: list[list[Any]]) -> dict[str, Any]:
    """Replace every ``#name`` argument by the value its ResultReference points to."""
    if not any(k.startswith("#") for k in args):
        return args
    resolved = dict(args)
    for key, ref in args.items():
        if not key.startswith("#"):
            continue
        plain = key[1:]
        if plain in args:
            raise MethodError("invalidArguments", f"both {key!r} and {plain!r} given")
        if (
            not isinstance(ref, dict)
            or not isinstance(ref.get("resultOf"), str)
            or not isinstance(ref.get("name"), str)
            or not isinstance(ref.get("path"), str)
        ):
            raise MethodError("invalidResultReference", f"{key!r} is not a ResultReference")
        target = next((r for r in responses if r[2] == ref["resultOf"]), None)
        if target is None or target[0] != ref["name"]:
            raise MethodError(
                "invalidResultReference",
                f"no {ref['name']!r} response with call id {ref['resultOf']!r}",
            )
        try:
            value = evaluate_pointer(target[1], ref["path"])
        except LookupError as exc:
            raise MethodError("invalidResultReference", f"path {ref['path']!r}: {exc}") from exc
        del resolved[key]
        resolved[plain] = value
    return resolved


def evaluate_pointer(doc: Any, pointer: str) -> Any:
    """Evaluate a JSON Pointer (RFC 6901) with JMAP's ``*`` wildcard (RFC 8620 §3.7).

    ``*`` on an array applies the rest of the pointer to every item; results that are arrays
    are flattened into one array. Raises ``LookupError`` when the path does not resolve.
    """
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        raise LookupError("a pointer must be empty or start with '/'")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    return _walk(doc, tokens)


def _walk(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    token, rest = tokens[0], tokens[1:]
    if isinstance(doc, list):
        if token == "*":  # noqa: S105 - the RFC 8620 §3.7 wildcard, not a secret
            out: list[Any] = []
            for item in doc:
                value = _walk(item, rest)
                if isinstance(value, list):
                    out.extend(value)
                else:
                    out.append(value)
            return out
        if not token.isdigit() or (token.startswith("0") and len(token) > 1):
            raise LookupError(f"{token!r} is not an array index")
        index = int(token)
        if index >= len(doc):
            raise LookupError(f"index {index} out of range")
        return _walk(doc[index], rest)
    if isinstance(doc, dict):
        if token not in doc:
            raise LookupError(f"no member {token!r}")
        return _walk(doc[token], rest)
    raise LookupError(f"cannot descend into a {type(doc).__name__} with {token!r}")


# -- methods -----------------------------------------------------------------------------
def _unknown(
    ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]
) -> dict[str, Any]:
    """Any method we do not serve (RFC 8620 §3.6.2)."""
    raise MethodError("unknownMethod")


def _echo(ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]) -> dict[str, Any]:
    """``Core/echo`` (RFC 8620 §4): the arguments, unchanged."""
    return args


def _account(ctx: RequestContext, args: Mapping[str, Any]) -> str:
    account_id = args.get("accountId")
    if not isinstance(account_id, str):
        raise MethodError("invalidArguments", "'accountId' must be a string")
    if account_id not in ctx.account_ids or not ctx.store.has_account(account_id):
        raise MethodError("accountNotFound", f"no account {account_id!r} for this user")
    return account_id


def _check_args(args: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise MethodError("invalidArguments", f"unknown arguments: {unknown}")


def _string_list(args: Mapping[str, Any], name: str) -> list[str] | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MethodError("invalidArguments", f"{name!r} must be null or an array of strings")
    return value


def _int_arg(args: Mapping[str, Any], name: str, default: int) -> int:
    value = args.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise MethodError("invalidArguments", f"{name!r} must be an integer")
    return value


def _get(
    data_type: str, ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]
) -> dict[str, Any]:
    """``Foo/get`` (RFC 8620 §5.1); ``#creationId`` ids are resolved from createdIds."""
    _check_args(args, frozenset({"accountId", "ids", "properties"}))
    account_id = _account(ctx, args)
    ids = _string_list(args, "ids")
    properties = _string_list(args, "properties")
    known = DATA_TYPES[data_type].properties
    if properties is not None:
        unknown = sorted(set(properties) - set(known))
        if unknown:
            raise MethodError("invalidArguments", f"unknown properties: {unknown}")
        properties = [p for p in known if p in properties and p != "id"]
    if ids is None:
        if ctx.quirks.refuse_get_all:
            raise MethodError("requestTooLarge", "ids must be specified")
    else:
        if len(ids) > ctx.limits.max_objects_in_get:
            raise MethodError(
                "requestTooLarge", f"at most {ctx.limits.max_objects_in_get} ids per get"
            )
        ids = [created_ids.get(i[1:], i) if i.startswith("#") else i for i in ids]
    state, found, not_found = ctx.store.get_objects(account_id, data_type, ids, properties)
    return {"accountId": account_id, "state": state, "list": found, "notFound": not_found}


def _set(
    data_type: str, ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]
) -> dict[str, Any]:
    """``Foo/set`` (RFC 8620 §5.3); new creation ids go into the request's createdIds."""
    _check_args(args, frozenset({"accountId", "ifInState", "create", "update", "destroy"}))
    account_id = _account(ctx, args)
    if_in_state = args.get("ifInState")
    if if_in_state is not None and not isinstance(if_in_state, str):
        raise MethodError("invalidArguments", "'ifInState' must be null or a string")
    create = args.get("create")
    update = args.get("update")
    if create is not None and not isinstance(create, dict):
        raise MethodError("invalidArguments", "'create' must be null or an object")
    if update is not None and not isinstance(update, dict):
        raise MethodError("invalidArguments", "'update' must be null or an object")
    destroy = _string_list(args, "destroy")
    count = len(create or {}) + len(update or {}) + len(destroy or [])
    if count > ctx.limits.max_objects_in_set:
        raise MethodError(
            "requestTooLarge", f"at most {ctx.limits.max_objects_in_set} objects per set"
        )
    try:
        result = ctx.store.set_objects(
            account_id,
            data_type,
            create=create,
            update=update,
            destroy=destroy,
            if_in_state=if_in_state,
            created_ids=created_ids,
        )
    except StateMismatch as exc:
        raise MethodError("stateMismatch", f"ifInState {exc} is not the current state") from exc
    for creation_id, info in result.created.items():
        created_ids[creation_id] = info["id"]
    if result.destroyed and ctx.quirks.destroy_forgets_changes:
        ctx.store.compact_changes(account_id, data_type)
    return {
        "accountId": account_id,
        "oldState": result.old_state,
        "newState": result.new_state,
        "created": result.created or None,
        "updated": result.updated or None,
        "destroyed": result.destroyed or None,
        "notCreated": result.not_created or None,
        "notUpdated": result.not_updated or None,
        "notDestroyed": result.not_destroyed or None,
    }


def _changes(
    data_type: str, ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]
) -> dict[str, Any]:
    """``Foo/changes`` (RFC 8620 §5.2), with the ``max_changes_cap`` and stall knobs."""
    _check_args(args, frozenset({"accountId", "sinceState", "maxChanges"}))
    account_id = _account(ctx, args)
    since = args.get("sinceState")
    if not isinstance(since, str):
        raise MethodError("invalidArguments", "'sinceState' must be a string")
    max_changes = args.get("maxChanges")
    if max_changes is not None and (
        not isinstance(max_changes, int) or isinstance(max_changes, bool) or max_changes < 1
    ):
        raise MethodError("invalidArguments", "'maxChanges' must be null or a positive integer")
    cap = ctx.quirks.max_changes_cap
    if cap is not None:
        max_changes = cap if max_changes is None else min(max_changes, cap)
    try:
        result = ctx.store.changes(account_id, since, max_changes, data_type)
    except CannotCalculateChanges as exc:
        raise MethodError("cannotCalculateChanges", f"unknown state {since!r}") from exc
    if ctx.stall_changes():
        # James: "more to come" without moving on, an implicit cannotCalculateChanges.
        return {
            "accountId": account_id,
            "oldState": since,
            "newState": since,
            "hasMoreChanges": True,
            "created": [],
            "updated": [],
            "destroyed": [],
        }
    return {
        "accountId": account_id,
        "oldState": result.old_state,
        "newState": result.new_state,
        "hasMoreChanges": result.has_more_changes,
        "created": result.created,
        "updated": result.updated,
        "destroyed": result.destroyed,
    }


_QUERY_ARGUMENTS = frozenset(
    {"accountId", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal"}
)


def _query(
    data_type: str, ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]
) -> dict[str, Any]:
    """``Foo/query`` (RFC 8620 §5.5): every object in creation order, no filter, no sort."""
    if not ctx.quirks.query:
        raise MethodError("unknownMethod")
    _check_args(args, _QUERY_ARGUMENTS)
    account_id = _account(ctx, args)
    if args.get("filter") not in (None, {}):
        raise MethodError("unsupportedFilter", "only a null or empty filter is supported")
    if args.get("sort") not in (None, []):
        raise MethodError("unsupportedSort", "only a null or empty sort is supported")
    position = _int_arg(args, "position", 0)
    anchor_offset = _int_arg(args, "anchorOffset", 0)
    anchor = args.get("anchor")
    if anchor is not None and not isinstance(anchor, str):
        raise MethodError("invalidArguments", "'anchor' must be null or an id")
    limit = args.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise MethodError("invalidArguments", "'limit' must be null or a non-negative integer")
    calculate_total = args.get("calculateTotal", False)
    if not isinstance(calculate_total, bool):
        raise MethodError("invalidArguments", "'calculateTotal' must be a boolean")
    cap = ctx.limits.max_query_limit
    capped = limit is None or limit > cap
    try:
        result = ctx.store.query(
            account_id,
            data_type,
            position=position,
            anchor=anchor,
            anchor_offset=anchor_offset,
            limit=cap if capped else limit,
        )
    except AnchorNotFound as exc:
        raise MethodError("anchorNotFound", f"{anchor!r} is not in the results") from exc
    response: dict[str, Any] = {
        "accountId": account_id,
        "queryState": result.query_state,
        "canCalculateChanges": False,
        "position": result.position,
        "ids": result.ids,
    }
    if calculate_total:
        response["total"] = result.total
    if capped:
        response["limit"] = cap  # RFC 8620 §5.5: the client learns the limit it got
    return response


# -- blobs (RFC 9404) ------------------------------------------------------------------------
class _NotCreated(Exception):
    """One ``Blob/upload`` creation fails with this SetError (RFC 8620 §5.3)."""

    def __init__(self, kind: str, description: str, **extra: Any) -> None:
        super().__init__(description)
        self.error: dict[str, Any] = {"type": kind, "description": description, **extra}


def _invalid(description: str, *properties: str) -> _NotCreated:
    return _NotCreated("invalidProperties", description, properties=list(properties))


def _blobs(ctx: RequestContext) -> BlobStore:
    if ctx.blobs is None:  # not reached: process_request answers unknownMethod first
        raise MethodError("unknownMethod")
    return ctx.blobs


def _blob_ref(blob_id: str, created_ids: Mapping[str, str]) -> str:
    """A blob id, or ``#creationId`` of a blob created earlier (RFC 8620 §5.3)."""
    return created_ids.get(blob_id[1:], blob_id) if blob_id.startswith("#") else blob_id


def _media_type(value: object) -> str:
    """A creation's ``type``: a string fit for a Content-Type header, or null."""
    if value is None:
        return DEFAULT_TYPE
    if not isinstance(value, str) or not value.isprintable() or not value.isascii():
        raise _invalid("'type' must be null or a media type", "type")
    return value


_SOURCE_KEYS = frozenset({"data:asText", "data:asBase64", "blobId", "offset", "length"})


def _optional_uint(obj: Mapping[str, Any], name: str) -> int | None:
    """``obj[name]``: null or a non-negative integer (else ``TypeError``)."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{name!r} must be null or a non-negative integer")
    return value


def _source_octets(
    index: int,
    source: object,
    account_id: str,
    blobs: BlobStore,
    created_ids: Mapping[str, str],
) -> bytes | memoryview:
    """The octets of DataSourceObject number ``index`` (RFC 9404 §4.1)."""
    where = f"data/{index}"
    if not isinstance(source, dict) or set(source) - _SOURCE_KEYS:
        raise _invalid(f"{where}: not a DataSourceObject", "data")
    kinds = [k for k in ("data:asText", "data:asBase64", "blobId") if k in source]
    if len(kinds) != 1:
        raise _invalid(f"{where}: needs one of data:asText, data:asBase64, blobId", "data")
    kind = kinds[0]
    value = source[kind]
    if not isinstance(value, str):
        raise _invalid(f"{where}: {kind!r} must be a string", "data")
    if kind != "blobId":
        if "offset" in source or "length" in source:
            raise _invalid(f"{where}: offset and length go with blobId only", "data")
        try:
            if kind == "data:asText":
                return value.encode("utf-8")
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:  # bad base64, a lone surrogate
            raise _invalid(f"{where}: {kind!r} cannot be decoded", "data") from exc
    blob = blobs.get(account_id, _blob_ref(value, created_ids))
    if blob is None:
        raise _NotCreated("blobNotFound", f"{where}: no blob {value!r}", notFound=[value])
    try:
        offset = _optional_uint(source, "offset") or 0
        length = _optional_uint(source, "length")
    except TypeError as exc:
        raise _invalid(f"{where}: {exc}", "data") from exc
    end = blob.size if length is None else offset + length
    if offset > blob.size or end > blob.size:
        raise _invalid(f"{where}: the range goes past the end of {value!r}", "data")
    return blob.view[offset:end]


def _create_blob(
    ctx: RequestContext,
    blobs: BlobStore,
    account_id: str,
    spec: object,
    created_ids: Mapping[str, str],
) -> Blob:
    """One ``Blob/upload`` creation; ``_NotCreated`` says why it fails."""
    if not isinstance(spec, dict):
        raise _invalid("an UploadObject must be an object")
    extra = sorted(set(spec) - {"data", "type"})
    if extra:
        raise _invalid(f"unknown properties {extra}", *extra)
    media_type = _media_type(spec.get("type"))
    sources = spec.get("data")
    if not isinstance(sources, list):
        raise _invalid("'data' must be an array", "data")
    limits = ctx.limits
    if len(sources) > limits.max_data_sources:
        raise _invalid(f"more than {limits.max_data_sources} data sources", "data")
    limit = limits.max_size_blob_set
    data = BlobBuffer()
    for index, source in enumerate(sources):
        octets = _source_octets(index, source, account_id, blobs, created_ids)
        if limit is not None and data.size + len(octets) > limit:
            raise _NotCreated("tooLarge", f"the blob would exceed {limit} octets")
        data.write(octets)
    return blobs.put_buffer(account_id, data, media_type)


def _blob_upload(
    ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]
) -> dict[str, Any]:
    """``Blob/upload`` (RFC 9404 §4.1): blobs made of text, base64 and ranges of blobs.

    Creations run in order, so a ``#creationId`` blobId may name an earlier one.
    """
    blobs = _blobs(ctx)
    _check_args(args, frozenset({"accountId", "create"}))
    account_id = _account(ctx, args)
    create = args.get("create")
    if not isinstance(create, dict):
        raise MethodError("invalidArguments", "'create' must be an object")
    if len(create) > ctx.limits.max_objects_in_set:
        raise MethodError(
            "requestTooLarge", f"at most {ctx.limits.max_objects_in_set} objects per upload"
        )
    created: dict[str, Any] = {}
    not_created: dict[str, Any] = {}
    for creation_id, spec in create.items():
        try:
            blob = _create_blob(ctx, blobs, account_id, spec, created_ids)
        except _NotCreated as exc:
            not_created[creation_id] = exc.error
            continue
        created[creation_id] = {"id": blob.id, "type": blob.type, "size": blob.size}
        created_ids[creation_id] = blob.id
    return {
        "accountId": account_id,
        "created": created or None,
        "notCreated": not_created or None,
    }


_BLOB_DATA = ("data", "data:asText", "data:asBase64")
_BLOB_PROPERTIES = frozenset(
    {"id", "size", *_BLOB_DATA, *(f"digest:{name}" for name in DIGEST_ALGORITHMS)}
)


def _blob_get(
    ctx: RequestContext, args: dict[str, Any], created_ids: dict[str, str]
) -> dict[str, Any]:
    """``Blob/get`` (RFC 9404 §4.2): data, size and digests of (a range of) blobs."""
    blobs = _blobs(ctx)
    _check_args(args, frozenset({"accountId", "ids", "properties", "offset", "length"}))
    account_id = _account(ctx, args)
    ids = _string_list(args, "ids")
    if ids is None:
        raise MethodError("invalidArguments", "'ids' must be given: blobs cannot be listed")
    if len(ids) > ctx.limits.max_objects_in_get:
        raise MethodError("requestTooLarge", f"at most {ctx.limits.max_objects_in_get} ids per get")
    properties = _string_list(args, "properties")
    if properties is None:
        properties = ["data", "size"]
    unknown = sorted(set(properties) - _BLOB_PROPERTIES)
    if unknown:
        raise MethodError("invalidArguments", f"unknown properties: {unknown}")
    try:
        offset = _optional_uint(args, "offset") or 0
        length = _optional_uint(args, "length")
    except TypeError as exc:
        raise MethodError("invalidArguments", str(exc)) from exc
    found: list[dict[str, Any]] = []
    not_found: list[str] = []
    for blob_id in ids:
        blob = blobs.get(account_id, _blob_ref(blob_id, created_ids))
        if blob is None:
            not_found.append(blob_id)
            continue
        size = blob.size
        # RFC 9404 §4.2: a length past the end truncates; without a length, only an offset
        # past the end does.
        end = size if length is None else offset + length
        truncated = end > size or offset > size
        octets = blob.view[min(offset, size) : min(end, size)]
        entry: dict[str, Any] = {"id": blob.id}
        if any(p in _BLOB_DATA for p in properties):
            entry.update(_blob_data(octets, properties))
            if truncated:
                entry["isTruncated"] = True
        for name, algorithm in DIGEST_ALGORITHMS.items():
            if f"digest:{name}" in properties:
                digest = hashlib.new(algorithm, octets).digest()
                entry[f"digest:{name}"] = base64.b64encode(digest).decode("ascii")
        if "size" in properties:
            entry["size"] = size
        found.append(entry)
    return {"accountId": account_id, "list": found, "notFound": not_found}


def _blob_data(octets: memoryview, properties: Collection[str]) -> dict[str, Any]:
    """The data properties of one Blob/get entry, and isEncodingProblem when it applies."""
    try:
        text: str | None = str(octets, "utf-8")
    except UnicodeDecodeError:
        text = None
    out: dict[str, Any] = {}
    if "data:asText" in properties:
        out["data:asText"] = text
    if "data:asBase64" in properties or ("data" in properties and text is None):
        out["data:asBase64"] = base64.b64encode(octets).decode("ascii")
    if "data" in properties and text is not None and "data:asText" not in out:
        out["data:asText"] = text
    if text is None and ("data" in properties or "data:asText" in properties):
        out["isEncodingProblem"] = True
    return out


def _type_methods(data_type: str) -> dict[str, Method]:
    """The ``/get``, ``/set``, ``/changes`` and ``/query`` methods of one data type."""
    return {
        f"{data_type}/{verb}": functools.partial(handler, data_type)
        for verb, handler in (
            ("get", _get),
            ("set", _set),
            ("changes", _changes),
            ("query", _query),
        )
    }


_METHODS: dict[str, Method] = {
    "Core/echo": _echo,
    "Blob/upload": _blob_upload,
    "Blob/get": _blob_get,
}
for _name in DATA_TYPES:
    _METHODS.update(_type_methods(_name))
