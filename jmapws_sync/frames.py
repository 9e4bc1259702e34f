"""Typed JMAP-over-WebSocket frames (RFC 8887 §4.3) and the JMAP objects inside them.

Pure data: no I/O, no JSON. :mod:`jmapws_sync.codec` owns the wire names (``@type``,
camelCase) and turns these classes into text and back. Method arguments and results stay
plain ``dict`` objects, exactly as the server sent them.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .errors import MethodError

__all__ = [
    "ALL_TYPES",
    "CALENDARS",
    "CONTACTS",
    "CORE",
    "MAIL",
    "SUBMISSION",
    "VACATION_RESPONSE",
    "WEBSOCKET",
    "AllTypes",
    "Frame",
    "Invocation",
    "Request",
    "RequestBuilder",
    "RequestError",
    "Response",
    "ResultReference",
    "StateChange",
    "UnknownFrame",
    "WebSocketPushDisable",
    "WebSocketPushEnable",
]

# Capability URNs (RFC 8620 §2, RFC 8887 §4.1, RFC 8621 §1.3, RFC 9610, RFC 8984 family).
CORE = "urn:ietf:params:jmap:core"
WEBSOCKET = "urn:ietf:params:jmap:websocket"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
VACATION_RESPONSE = "urn:ietf:params:jmap:vacationresponse"
CONTACTS = "urn:ietf:params:jmap:contacts"
CALENDARS = "urn:ietf:params:jmap:calendars"


def _tuple_of_str(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings, got a single string")
    return tuple(value)


def _invocations(value: Iterable[Invocation]) -> tuple[Invocation, ...]:
    return tuple(value)


@attrs.frozen
class Invocation:
    """One method call or method response: ``[name, arguments, call_id]`` on the wire."""

    name: str
    arguments: dict[str, Any]
    call_id: str


@attrs.frozen
class ResultReference:
    """A back-reference to an earlier call's result (RFC 8620 §3.7).

    Used as the value of a ``#``-prefixed argument; :class:`RequestBuilder` adds the
    prefix for you.
    """

    result_of: str
    name: str
    path: str

    def to_wire(self) -> dict[str, str]:
        """The JSON object form: ``{"resultOf": ..., "name": ..., "path": ...}``."""
        return {"resultOf": self.result_of, "name": self.name, "path": self.path}


@attrs.frozen
class Request:
    """A JMAP request (RFC 8620 §3.3); sent as an RFC 8887 ``Request`` frame."""

    using: tuple[str, ...] = attrs.field(converter=_tuple_of_str)
    method_calls: tuple[Invocation, ...] = attrs.field(converter=_invocations)
    created_ids: dict[str, str] | None = None


@attrs.frozen
class Response:
    """A JMAP response (RFC 8620 §3.4) as an RFC 8887 ``Response`` frame.

    ``request_id`` is the ``requestId`` the server echoed: a string, or a number when
    the request's ``id`` was one, or ``None`` when the request had no ``id``.
    """

    method_responses: tuple[Invocation, ...] = attrs.field(converter=_invocations)
    session_state: str
    created_ids: dict[str, str] | None = None
    request_id: str | int | None = None

    def invocations(self, call_id: str) -> list[Invocation]:
        """Every method response for ``call_id``, in order (a call may yield several)."""
        return [inv for inv in self.method_responses if inv.call_id == call_id]

    def get(self, call_id: str, name: str | None = None) -> dict[str, Any]:
        """The arguments of the response to ``call_id``.

        With ``name``, the response with that method name (for calls that produce more
        than one response, such as an implicit ``/set``). Raises :class:`MethodError`
        when the server answered that call with ``["error", {...}, call_id]`` and
        :class:`KeyError` when there is no response for it.
        """
        for inv in self.method_responses:
            if inv.call_id != call_id:
                continue
            if inv.name == "error":
                raise MethodError(call_id, inv.arguments)
            if name is None or inv.name == name:
                return inv.arguments
        raise KeyError(call_id)

    def errors(self) -> list[MethodError]:
        """A :class:`MethodError` for each ``error`` method response, in order."""
        return [
            MethodError(inv.call_id, inv.arguments)
            for inv in self.method_responses
            if inv.name == "error"
        ]

    def raise_for_errors(self) -> None:
        """Raise the first method error in this response, if there is one."""
        errors = self.errors()
        if errors:
            raise errors[0]


@attrs.frozen
class RequestError:
    """A request-level error (RFC 8620 §3.6.1): an RFC 7807 problem details object.

    ``extra`` keeps any other members the server sent.
    """

    type: str
    status: int | None = None
    title: str | None = None
    detail: str | None = None
    limit: str | None = None
    request_id: str | int | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class StateChange:
    """A push notification (RFC 8620 §7.1, RFC 8887 §4.3.5).

    ``changed`` maps account id to data type name to the new state string;
    ``push_state`` is the token to resume from after a reconnect, if the server sent one.
    """

    changed: dict[str, dict[str, str]]
    push_state: str | None = None

    def merge(self, newer: StateChange) -> StateChange:
        """This change and a ``newer`` one as one StateChange, with no meaning lost.

        ``changed`` is the union, each account and type keeping the newer state; the
        ``push_state`` is the newer one (this one's if the newer has none). A StateChange
        only says "these types are now at these states", so two in a row say no more
        than this one does (RFC 8620 §7.1).
        """
        changed = {account: dict(types) for account, types in self.changed.items()}
        for account, types in newer.changed.items():
            changed.setdefault(account, {}).update(types)
        push_state = newer.push_state if newer.push_state is not None else self.push_state
        return StateChange(changed, push_state)


class AllTypes(enum.Enum):
    """The type of :data:`ALL_TYPES`."""

    ALL_TYPES = "all types"


#: ``enable_push(ALL_TYPES)`` sends ``"dataTypes": null`` as RFC 8887 §4.3.5.2 writes it
#: ("all types"), for a server that follows the RFC and has types this library does not
#: know. ``enable_push()`` with no types sends an explicit list instead (see README).
ALL_TYPES: Final = AllTypes.ALL_TYPES


@attrs.frozen
class WebSocketPushEnable:
    """Ask the server to push StateChange frames (RFC 8887 §4.3.5.2).

    ``data_types`` is sent as it is, always (the RFC makes the member required):
    ``None`` is ``"dataTypes": null``, "all types" in the RFC's words (some servers,
    Cyrus among them, take it as "push off"; ``enable_push()`` sends an explicit list).
    ``push_state`` asks the server to replay the changes since that state.
    """

    data_types: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_tuple_of_str)
    )
    push_state: str | None = None


@attrs.frozen
class WebSocketPushDisable:
    """Ask the server to stop pushing (RFC 8887 §4.3.5.3)."""


@attrs.frozen
class UnknownFrame:
    """A frame whose ``@type`` is unknown, missing, or whose body does not fit its type.

    Kept whole for extensions (``raw`` is the decoded JSON object). ``raw`` is left out
    of ``repr`` because it may carry private data.
    """

    type_name: str | None
    raw: dict[str, Any] = attrs.field(repr=False)
    #: Why a known ``@type`` did not fit (a fixed text naming the member, never a value).
    problem: str | None = attrs.field(default=None, eq=False)


#: What :meth:`WsSession.next_frame` can return.
Frame = Response | RequestError | StateChange | UnknownFrame


class _CallHandle:
    """What :meth:`RequestBuilder.call` returns: the call id and a way to refer to it."""

    __slots__ = ("call_id", "name")

    def __init__(self, name: str, call_id: str) -> None:
        self.name = name
        self.call_id = call_id

    def ref(self, path: str, *, name: str | None = None) -> ResultReference:
        """A back-reference to this call's result at JSON Pointer ``path`` (RFC 6901)."""
        return ResultReference(result_of=self.call_id, name=name or self.name, path=path)

    def __repr__(self) -> str:
        return f"<call {self.name} {self.call_id}>"


class RequestBuilder:
    """Builds a :class:`Request` without hand-written JSON.

    Call ids are numbered ``c0``, ``c1``, ...; an argument whose value is a
    :class:`ResultReference` is sent as a back-reference (its key gets the ``#``
    prefix, RFC 8620 §3.7)::

        b = RequestBuilder(using=[CORE, MAIL])
        q = b.call("Email/query", {"accountId": acc, "limit": 10})
        b.call("Email/get", {"accountId": acc, "ids": q.ref("/ids")})
        request = b.build()

    Not thread-safe: build each request in one thread.
    """

    def __init__(self, using: Iterable[str] = (CORE,)) -> None:
        self._using = list(_tuple_of_str(using))
        self._calls: list[Invocation] = []
        self._ids = itertools.count()
        self._taken: set[str] = set()

    def use(self, *capabilities: str) -> RequestBuilder:
        """Add capabilities to ``using`` (duplicates are ignored)."""
        for cap in capabilities:
            if cap not in self._using:
                self._using.append(cap)
        return self

    def call(
        self, name: str, arguments: Mapping[str, Any] | None = None, *, call_id: str | None = None
    ) -> _CallHandle:
        """Append a method call and return a handle for back-references to it.

        The handle has the call's ``call_id`` (to find its answer with
        :meth:`Response.get`) and its ``name``; ``handle.ref(path)`` is a
        :class:`ResultReference` to this call's result at the JSON Pointer ``path``
        (RFC 6901), to pass as an argument of a later call.

        ``call_id`` names the call; the automatic ones (``c0``, ``c1``...) never repeat
        one given here, and a ``call_id`` already used in this request is a
        :class:`ValueError` (RFC 8620 §3.2: the responses are matched by it).
        """
        if call_id is not None:
            if call_id in self._taken:
                raise ValueError(f"call id {call_id!r} is already used in this request")
            cid = call_id
        else:
            cid = f"c{next(self._ids)}"
            while cid in self._taken:
                cid = f"c{next(self._ids)}"
        self._taken.add(cid)
        args: dict[str, Any] = {}
        for key, value in (arguments or {}).items():
            if isinstance(value, ResultReference):
                args[key if key.startswith("#") else f"#{key}"] = value.to_wire()
            else:
                args[key] = value
        self._calls.append(Invocation(name, args, cid))
        return _CallHandle(name, cid)

    def build(self, *, created_ids: dict[str, str] | None = None) -> Request:
        """The :class:`Request` with every call added so far."""
        return Request(using=self._using, method_calls=self._calls, created_ids=created_ids)
