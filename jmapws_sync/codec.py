"""Text <-> frame conversion for JMAP over WebSocket (RFC 8887 §4.3).

Pure functions, no I/O. One cattrs converter owns the wire names (``@type``, camelCase);
the frame classes in :mod:`jmapws_sync.frames` only know snake_case. Method arguments are
handed over as the ``dict`` objects that :func:`json.loads` produced, never copied.

``decode`` never crashes on what a server sends: text that is not a JSON object raises
:class:`~jmapws_sync.errors.ParseError`; an object with a missing or unknown ``@type``,
or a known one whose body does not fit, becomes an :class:`~jmapws_sync.frames.UnknownFrame`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import ParseError
from .frames import (
    Invocation,
    Request,
    RequestError,
    Response,
    ResultReference,
    StateChange,
    UnknownFrame,
    WebSocketPushDisable,
    WebSocketPushEnable,
)

__all__ = [
    "CLIENT_FRAMES",
    "SERVER_FRAMES",
    "Decoded",
    "Encodable",
    "converter",
    "decode",
    "decode_body",
    "encode",
    "encode_body",
    "encode_bytes",
]

#: Anything :func:`decode` can return.
Decoded = (
    Response
    | RequestError
    | StateChange
    | UnknownFrame
    | Request
    | WebSocketPushEnable
    | WebSocketPushDisable
)
#: Anything :func:`encode` accepts.
Encodable = Request | WebSocketPushEnable | WebSocketPushDisable | Response | StateChange

#: The converter that knows the wire names. Strict: a wrong JSON type is an error, never
#: coerced (cattrs would otherwise turn ``123`` into ``"123"``).
converter = cattrs.Converter(detailed_validation=False)

_ID = str | int | None
_STRUCTURE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, cattrs.BaseValidationError)


class _Misfit(TypeError):
    """A member of a known frame is missing its shape; the text names it, never its value."""


def _strict_str(value: Any, _: Any) -> str:
    if type(value) is not str:
        raise _Misfit("expected a JSON string")
    return value


def _strict_id(value: Any, _: Any) -> str | int | None:
    # RFC 8887 §4.3.1: ids are strings, but real servers echo a number when one was sent.
    if value is None or type(value) is str or type(value) is int:
        return value
    raise _Misfit("expected a string or a number")


def _plain_object(value: Any, _: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Misfit("expected a JSON object")
    return value


def _invocation(value: Any, _: Any) -> Invocation:
    # RFC 8620 §3.2: [name, arguments, call id]; the arguments dict is handed over as is.
    if type(value) is not list or len(value) != 3:
        raise _Misfit("an invocation is a 3-element array")
    name, arguments, call_id = value
    if type(name) is not str or type(arguments) is not dict or type(call_id) is not str:
        raise _Misfit("an invocation is [string, object, string]")
    return Invocation(name, arguments, call_id)


def _changed(value: Any, _: Any) -> dict[str, dict[str, str]]:
    if type(value) is not dict:
        raise _Misfit("changed must be an object")
    for types in value.values():
        if type(types) is not dict or any(type(s) is not str for s in types.values()):
            raise _Misfit("changed maps account ids to objects of type name -> state")
    return value


def _string_map(value: Any, _: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if type(value) is not dict or any(type(v) is not str for v in value.values()):
        raise _Misfit("expected an object of strings")
    return value


_REQUEST_ERROR_FIELDS = {
    "type": "type",
    "status": "status",
    "title": "title",
    "detail": "detail",
    "limit": "limit",
    "requestId": "request_id",
}


def _request_error(value: dict[str, Any], _: Any) -> RequestError:
    # RFC 7807 problem details: known members become attributes, the rest is kept.
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, item in value.items():
        if key == "@type":
            continue
        attr = _REQUEST_ERROR_FIELDS.get(key)
        if attr is None:
            extra[key] = item
        else:
            known[attr] = item
    kind = known.get("type")
    status = known.get("status")
    if type(kind) is not str:
        raise _Misfit("a problem needs a string type")
    if status is not None and type(status) is not int:
        raise _Misfit("status must be a number")
    for attr in ("title", "detail", "limit"):
        if known.get(attr) is not None and type(known[attr]) is not str:
            raise _Misfit(f"{attr} must be a string")
    known["request_id"] = _strict_id(known.get("request_id"), None)
    return RequestError(**known, extra=extra)


converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook(Invocation, _invocation)
converter.register_structure_hook_func(lambda t: t == _ID, _strict_id)
converter.register_structure_hook_func(lambda t: t == dict[str, Any], _plain_object)
converter.register_structure_hook_func(lambda t: t == dict[str, dict[str, str]], _changed)
converter.register_structure_hook_func(lambda t: t == (dict[str, str] | None), _string_map)
converter.register_structure_hook(RequestError, _request_error)

_CAMEL = {
    "method_calls": "methodCalls",
    "method_responses": "methodResponses",
    "created_ids": "createdIds",
    "session_state": "sessionState",
    "request_id": "requestId",
    "push_state": "pushState",
    "data_types": "dataTypes",
}


def _renames(cls: type) -> dict[str, Any]:
    return {a.name: override(rename=_CAMEL[a.name]) for a in attrs.fields(cls) if a.name in _CAMEL}


# Before the class hooks below: they look the Invocation hook up when generated.
converter.register_unstructure_hook(Invocation, lambda inv: [inv.name, inv.arguments, inv.call_id])
for _cls in (Request, Response, StateChange, WebSocketPushEnable, WebSocketPushDisable):
    converter.register_structure_hook(
        _cls, make_dict_structure_fn(_cls, converter, **_renames(_cls))
    )
    converter.register_unstructure_hook(
        _cls,
        make_dict_unstructure_fn(_cls, converter, _cattrs_omit_if_default=True, **_renames(_cls)),
    )


def _unstructure_push_enable(frame: WebSocketPushEnable) -> dict[str, Any]:
    # RFC 8887 §4.3.5.2: dataTypes is required (String[]|null), so null goes on the wire.
    types = frame.data_types
    body: dict[str, Any] = {"dataTypes": None if types is None else list(types)}
    if frame.push_state is not None:
        body["pushState"] = frame.push_state
    return body


converter.register_unstructure_hook(WebSocketPushEnable, _unstructure_push_enable)


def _state_change(obj: dict[str, Any], _: Any) -> StateChange:
    # Hand-written for the push hot path; the same checks as the generated hook.
    push_state = obj.get("pushState")
    if push_state is not None and type(push_state) is not str:
        raise _Misfit("pushState must be a string")
    return StateChange(_changed(obj["changed"], None), push_state)


def _response(obj: dict[str, Any], _: Any) -> Response:
    # Hand-written for the call() hot path; the same checks as the generated hook.
    calls = obj["methodResponses"]
    if type(calls) is not list:
        raise _Misfit("methodResponses must be an array")
    created = obj.get("createdIds")
    return Response(
        tuple([_invocation(call, None) for call in calls]),
        _strict_str(obj["sessionState"], None),
        None if created is None else _string_map(created, None),
        _strict_id(obj.get("requestId"), None),
    )


converter.register_structure_hook(StateChange, _state_change)
converter.register_structure_hook(Response, _response)

#: The ``@type`` values a server sends (RFC 8887 §4.3), and their classes.
SERVER_FRAMES: Mapping[str, type] = {
    "Response": Response,
    "RequestError": RequestError,
    "StateChange": StateChange,
}
#: The ``@type`` values a client sends; for servers and tests.
CLIENT_FRAMES: Mapping[str, type] = {
    "Request": Request,
    "WebSocketPushEnable": WebSocketPushEnable,
    "WebSocketPushDisable": WebSocketPushDisable,
}
_TYPE_OF: dict[type, str] = {
    cls: name for table in (SERVER_FRAMES, CLIENT_FRAMES) for name, cls in table.items()
}


def _default(value: Any) -> Any:
    # Only called for objects json does not know: back-references left inside arguments.
    if isinstance(value, ResultReference):
        return value.to_wire()
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


_dumps = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default
).encode


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# RFC 8259 has no NaN or Infinity: json.loads accepts them unless told otherwise. (The C
# scanner calls parse_constant only when it meets one, so this costs nothing otherwise.)
_loads = functools.partial(json.loads, parse_constant=_no_constant)


def _body(frame: Encodable, id: str | int | None) -> tuple[str, dict[str, Any]]:  # noqa: A002
    type_name = _TYPE_OF.get(type(frame))
    if type_name is None:
        raise TypeError(f"cannot encode a {type(frame).__name__} frame")
    body: dict[str, Any] = {"@type": type_name}
    body.update(converter.unstructure(frame))
    if id is not None:
        if type_name != "Request":
            raise ValueError("only a Request carries an id")
        if type(id) is not str and type(id) is not int:
            raise ValueError("a request id is a string (or an integer)")
        body["id"] = id
    return type_name, body


def encode(frame: Encodable, id: str | int | None = None) -> str:  # noqa: A002 - RFC name
    """Serialise ``frame`` to the text of one WebSocket message.

    ``"@type"`` is added from the frame's class; for a :class:`Request`, ``id`` becomes
    the request ``id`` that the server echoes as ``requestId`` (RFC 8887 §4.3.1).
    Raises :class:`ValueError` for a frame that cannot be encoded (a method argument that
    is not JSON-serialisable, a NaN, a string with a lone surrogate).
    """
    data = encode_bytes(frame, id)
    return data.decode("utf-8")


def encode_body(request: Request) -> bytes:
    """``request`` as the body of an HTTP POST to ``apiUrl`` (RFC 8620 §3.3): the members
    of its frame without ``@type``."""
    _, body = _body(request, None)
    del body["@type"]
    try:
        return _dumps(body).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot encode Request: {exc}") from exc


def encode_bytes(frame: Encodable, id: str | int | None = None) -> bytes:  # noqa: A002
    """:func:`encode`, as the UTF-8 bytes that go on the wire (what the session sends)."""
    type_name, body = _body(frame, id)
    try:
        return _dumps(body).encode("utf-8")  # a lone surrogate passes json, fails here
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValueError(f"cannot encode {type_name}: {exc}") from exc


def decode(text: str, *, accept: Mapping[str, type] = SERVER_FRAMES) -> Decoded:
    """Parse the text of one WebSocket message into a frame.

    Raises :class:`ParseError` when ``text`` is not a JSON object. Never raises for the
    object's content: an unknown or missing ``@type``, or a body that does not fit the
    type, gives an :class:`UnknownFrame` with the whole object.

    ``accept`` names the frame types to recognise: by default those a server sends
    (:data:`SERVER_FRAMES`); a server decodes with :data:`CLIENT_FRAMES`. Any other
    ``@type`` is unknown to this call.
    """
    obj = _object(text)
    type_name = obj.get("@type")
    if type(type_name) is not str:
        return UnknownFrame(None, obj)
    return _structure(obj, type_name, accept)


def decode_body(data: str | bytes, type_name: str) -> Decoded:
    """Parse an HTTP body that is a JMAP object with no ``@type`` (RFC 8620 §3.4: a
    Response; RFC 7807: a problem details object, ``"RequestError"``) as ``type_name``.

    The checks of :func:`decode`: :class:`ParseError` for what is not a JSON object, an
    :class:`UnknownFrame` for a body that does not fit the type.
    """
    obj = _object(data)
    obj.setdefault("@type", type_name)
    return _structure(obj, type_name, SERVER_FRAMES)


def _object(text: str | bytes) -> dict[str, Any]:
    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"text message is not JSON ({exc.msg})") from None
    except ValueError as exc:  # NaN/Infinity, or an integer beyond int's digit limit
        reason = str(exc) if str(exc).endswith("is not JSON") else "a number too long"
        raise ParseError(f"text message is not acceptable JSON ({reason})") from None
    except RecursionError:
        raise ParseError("text message is nested too deeply") from None
    if type(obj) is not dict:
        raise ParseError(f"text message is JSON but not an object ({type(obj).__name__})")
    return obj


def _structure(obj: dict[str, Any], type_name: str, accept: Mapping[str, type]) -> Decoded:
    cls = accept.get(type_name)
    if cls is None:
        return UnknownFrame(type_name, obj)
    try:
        frame: Decoded = converter.structure(obj, cls)
    except KeyError as exc:
        return UnknownFrame(type_name, obj, f"missing member {exc}")
    except _STRUCTURE_ERRORS as exc:
        return UnknownFrame(type_name, obj, _problem(exc))
    return frame


def _problem(exc: Exception) -> str:
    """What our own structuring hooks said; cattrs' and Python's texts may quote values."""
    return str(exc) if isinstance(exc, _Misfit) else "a member of the wrong type or shape"
