"""codec and frames: pure table tests from RFC 8887 §4.4 and RFC 8620 examples; no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.codec import CLIENT_FRAMES, decode, encode

# RFC 8887 §4.4 (request and response, abridged to their shape).
RFC_REQUEST = {
    "@type": "Request",
    "id": "R1",
    "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
    "methodCalls": [
        [
            "Email/query",
            {
                "accountId": "ue150411c",
                "filter": {"inMailbox": "2ea1ca41b38e"},
                "sort": [{"isAscending": False, "property": "receivedAt"}],
                "collapseThreads": True,
                "position": 0,
                "limit": 20,
                "calculateTotal": True,
            },
            "t0",
        ],
        [
            "Email/get",
            {
                "accountId": "ue150411c",
                "#ids": {"resultOf": "t0", "name": "Email/query", "path": "/ids"},
                "properties": ["threadId"],
            },
            "t1",
        ],
    ],
}
RFC_RESPONSE = {
    "@type": "Response",
    "requestId": "R1",
    "methodResponses": [
        ["Email/query", {"accountId": "ue150411c", "ids": ["Md45b47b4877521042cec0938"]}, "t0"],
        ["Email/get", {"accountId": "ue150411c", "list": [], "notFound": []}, "t1"],
    ],
    "sessionState": "75128aab4b1b",
}
RFC_REQUEST_ERROR = {
    "@type": "RequestError",
    "requestId": "R1",
    "type": "urn:ietf:params:jmap:error:notJSON",
    "status": 400,
    "detail": "The request did not parse as I-JSON.",
}
RFC_STATE_CHANGE = {
    "@type": "StateChange",
    "changed": {"a456": {"Mailbox": "d35ecb040aab", "Email": "0af7a512ce70"}},
    "pushState": "b8c7d5fe0a57",
}


def test_rfc_response_decodes_with_plain_dict_arguments() -> None:
    """The RFC 8887 §4.4 Response decodes; arguments are the parsed dicts."""
    frame = decode(json.dumps(RFC_RESPONSE))
    assert isinstance(frame, jws.Response)
    assert frame.request_id == "R1"
    assert frame.session_state == "75128aab4b1b"
    assert frame.get("t0")["ids"] == ["Md45b47b4877521042cec0938"]
    assert frame.get("t1", "Email/get")["notFound"] == []


def test_rfc_request_round_trips() -> None:
    """The RFC 8887 §4.4 Request decodes (client side) and re-encodes to the same JSON."""
    frame = decode(json.dumps(RFC_REQUEST), accept=CLIENT_FRAMES)
    assert isinstance(frame, jws.Request)
    assert frame.method_calls[1].arguments["#ids"]["path"] == "/ids"
    assert json.loads(encode(frame, id="R1")) == RFC_REQUEST


def test_request_error_keeps_problem_details_and_extras() -> None:
    """RFC 7807 members become attributes; unknown ones stay in extra."""
    frame = decode(json.dumps({**RFC_REQUEST_ERROR, "x-trace": "abc"}))
    assert isinstance(frame, jws.RequestError)
    assert (frame.type, frame.status, frame.request_id) == (
        "urn:ietf:params:jmap:error:notJSON",
        400,
        "R1",
    )
    assert frame.detail is not None
    assert frame.extra == {"x-trace": "abc"}


def test_limit_request_error() -> None:
    """The limit member of a limit error (RFC 8620 §3.6.1) is kept."""
    frame = decode(
        '{"@type":"RequestError","type":"urn:ietf:params:jmap:error:limit",'
        '"status":400,"limit":"maxCallsInRequest"}'
    )
    assert isinstance(frame, jws.RequestError)
    assert frame.limit == "maxCallsInRequest"


def test_state_change() -> None:
    """StateChange keeps changed and pushState."""
    frame = decode(json.dumps(RFC_STATE_CHANGE))
    assert frame == jws.StateChange(
        changed={"a456": {"Mailbox": "d35ecb040aab", "Email": "0af7a512ce70"}},
        push_state="b8c7d5fe0a57",
    )


@pytest.mark.parametrize("request_id", ["R1", 42, None])
def test_request_id_kept_as_it_came(request_id: object) -> None:
    """requestId echoed as a string or a number stays what it was."""
    body = dict(RFC_RESPONSE)
    body.pop("requestId")
    if request_id is not None:
        body["requestId"] = request_id
    frame = decode(json.dumps(body))
    assert isinstance(frame, jws.Response)
    assert frame.request_id == request_id


@pytest.mark.parametrize(
    "body",
    [
        {"@type": "Response", "sessionState": "s"},  # methodResponses missing
        {"@type": "Response", "methodResponses": [["a", {}]], "sessionState": "s"},
        {"@type": "Response", "methodResponses": [["a", [], "c"]], "sessionState": "s"},
        {"@type": "Response", "methodResponses": [], "sessionState": 5},  # no coercion
        {"@type": "Response", "methodResponses": [], "sessionState": "s", "requestId": 1.5},
        {"@type": "RequestError", "status": 400},  # type missing
        {"@type": "RequestError", "type": "x", "status": "400"},
        {"@type": "StateChange", "changed": {"a": {"Email": 5}}},
        {"@type": "StateChange", "changed": []},
    ],
)
def test_known_type_with_bad_body_is_unknown_frame(body: dict[str, Any]) -> None:
    """A known @type whose body does not fit becomes UnknownFrame with that type name."""
    frame = decode(json.dumps(body))
    assert isinstance(frame, jws.UnknownFrame)
    assert frame.type_name == body["@type"]
    assert frame.raw == body


@pytest.mark.parametrize(
    ("body", "type_name"),
    [
        ({"@type": "ChatStreamEvent", "x": 1}, "ChatStreamEvent"),
        ({"no": "type"}, None),
        ({"@type": 7}, None),
        ({"@type": "Request", "using": [], "methodCalls": []}, "Request"),  # not from a server
    ],
)
def test_unknown_or_missing_type(body: dict[str, Any], type_name: str | None) -> None:
    """Unknown, missing or non-string @type gives UnknownFrame, raw kept."""
    frame = decode(json.dumps(body))
    assert frame == jws.UnknownFrame(type_name, body)


def test_unknown_frame_repr_hides_raw() -> None:
    """UnknownFrame's repr never shows the payload."""
    frame = decode('{"@type": "Secret", "token": "hunter2"}')
    assert "hunter2" not in repr(frame)


@pytest.mark.parametrize("text", ["", "nope", "[]", "1", '"s"', "null", '{"a":', "[" * 100_000])
def test_not_a_json_object_is_parse_error(text: str) -> None:
    """Text that is not JSON, or JSON that is not an object: ParseError."""
    with pytest.raises(jws.ParseError):
        decode(text)


def test_encode_request_adds_type_and_optional_id() -> None:
    """encode adds @type and, only when given, id; wire names are camelCase."""
    req = jws.Request(
        using=[jws.CORE],
        method_calls=[jws.Invocation("Core/echo", {"a": 1}, "c0")],
        created_ids={"k": "v"},
    )
    assert json.loads(encode(req)) == {
        "@type": "Request",
        "using": [jws.CORE],
        "methodCalls": [["Core/echo", {"a": 1}, "c0"]],
        "createdIds": {"k": "v"},
    }
    assert json.loads(encode(req, id=3))["id"] == 3


def test_encode_push_frames() -> None:
    """Push enable/disable encode per RFC 8887 §4.3.5; dataTypes (required) is always there."""
    assert json.loads(encode(jws.WebSocketPushEnable())) == {
        "@type": "WebSocketPushEnable",
        "dataTypes": None,
    }
    assert json.loads(encode(jws.WebSocketPushEnable(data_types=["Email"], push_state="p"))) == {
        "@type": "WebSocketPushEnable",
        "dataTypes": ["Email"],
        "pushState": "p",
    }
    assert json.loads(encode(jws.WebSocketPushDisable())) == {"@type": "WebSocketPushDisable"}


@pytest.mark.parametrize(
    ("frame", "kwargs", "error"),
    [
        (jws.WebSocketPushDisable(), {"id": "x"}, ValueError),
        (
            jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("a", {"x": {1}}, "c")]),
            {},
            None,
        ),
        (
            jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("a", {"x": object()}, "c")]),
            {},
            ValueError,
        ),
        (
            jws.Request(
                using=[jws.CORE], method_calls=[jws.Invocation("a", {"x": float("nan")}, "c")]
            ),
            {},
            ValueError,
        ),
        (jws.Request(using=[jws.CORE], method_calls=[]), {"id": 1.5}, ValueError),
    ],
)
def test_encode_errors(frame: Any, kwargs: dict[str, Any], error: type[Exception] | None) -> None:
    """What cannot be encoded raises ValueError; sets become lists."""
    if error is None:
        encode(frame, **kwargs)
    else:
        with pytest.raises(error):
            encode(frame, **kwargs)


def test_using_must_not_be_a_bare_string() -> None:
    """using="urn:..." would become a tuple of characters: refused."""
    with pytest.raises(TypeError):
        jws.Request(using=jws.CORE, method_calls=[])  # type: ignore[arg-type]


def test_builder_numbers_calls_and_makes_back_references() -> None:
    """RequestBuilder numbers call ids and turns ResultReference into #-arguments."""
    b = jws.RequestBuilder(using=[jws.CORE]).use(jws.MAIL, jws.CORE)
    q = b.call("Email/query", {"accountId": "a"})
    b.call("Email/get", {"accountId": "a", "ids": q.ref("/ids"), "#x": q.ref("/y")})
    req = b.build()
    assert req.using == (jws.CORE, jws.MAIL)
    assert json.loads(encode(req))["methodCalls"] == [
        ["Email/query", {"accountId": "a"}, "c0"],
        [
            "Email/get",
            {
                "accountId": "a",
                "#ids": {"resultOf": "c0", "name": "Email/query", "path": "/ids"},
                "#x": {"resultOf": "c0", "name": "Email/query", "path": "/y"},
            },
            "c1",
        ],
    ]


def test_response_helpers_raise_method_errors() -> None:
    """Response.get raises MethodError for an error invocation and KeyError when absent."""
    frame = decode(
        json.dumps(
            {
                "@type": "Response",
                "methodResponses": [
                    ["error", {"type": "unknownMethod", "description": "no"}, "c0"],
                    ["Core/echo", {}, "c1"],
                ],
                "sessionState": "s",
            }
        )
    )
    assert isinstance(frame, jws.Response)
    with pytest.raises(jws.MethodError) as info:
        frame.get("c0")
    assert (info.value.type, info.value.description, info.value.call_id) == (
        "unknownMethod",
        "no",
        "c0",
    )
    assert frame.get("c1") == {}
    with pytest.raises(KeyError):
        frame.get("c9")
    assert [e.type for e in frame.errors()] == ["unknownMethod"]
    with pytest.raises(jws.MethodError):
        frame.raise_for_errors()
