"""The reference server (jmapws_sync.testing), driven by websocket-client and urllib.

Everything runs on real sockets on 127.0.0.1 port 0; nothing here uses jmapws_sync's own
client, so these tests pin the server down independently of it.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from jmapws_sync.testing import NOTES, NoteStore, ReferenceServer, evaluate_pointer

CORE = "urn:ietf:params:jmap:core"
WS_CAP = "urn:ietf:params:jmap:websocket"
USING = [CORE, NOTES]
ALICE = "a-alice"
ERR = "urn:ietf:params:jmap:error:"
BAD_CALL = '{"@type": "Request", "id": 5, "using": [], "methodCalls": [["a", 1, "c"]]}'
QUIET = 0.3  # how long "nothing arrives" is watched for


# -- helpers ------------------------------------------------------------------------------
def basic(user: str = "alice", password: str = "secret") -> str:
    """An Authorization header value for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def connect(
    srv: ReferenceServer,
    auth: str | None = None,
    subprotocols: list[str] | None = None,
    **kwargs: Any,
) -> websocket.WebSocket:
    """A websocket-client connection to the server's WebSocket endpoint."""
    return websocket.create_connection(
        srv.ws_url,
        subprotocols=["jmap"] if subprotocols is None else subprotocols,
        header=[f"Authorization: {auth or basic()}"],
        timeout=5,
        **kwargs,
    )


def request(calls: list[list[Any]], rid: Any = "r1", using: list[str] | None = None) -> str:
    """A WebSocket Request frame."""
    frame: dict[str, Any] = {"@type": "Request", "using": using or USING, "methodCalls": calls}
    if rid is not None:
        frame["id"] = rid
    return json.dumps(frame)


def recv(ws: websocket.WebSocket, timeout: float = 5.0) -> dict[str, Any]:
    """The next text frame, decoded."""
    ws.settimeout(timeout)
    data = ws.recv()
    assert isinstance(data, str)
    result: dict[str, Any] = json.loads(data)
    return result


def call(ws: websocket.WebSocket, calls: list[list[Any]], rid: Any = "r1") -> dict[str, Any]:
    """Send one Request and return the next frame (the answer, unless push interferes)."""
    ws.send(request(calls, rid))
    return recv(ws)


def echo_barrier(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """Every frame that arrives before the answer to a fresh Core/echo (a sync point)."""
    ws.send(request([["Core/echo", {"barrier": True}, "b"]], rid="barrier"))
    before = []
    while True:
        frame = recv(ws)
        if frame.get("requestId") == "barrier":
            return before
        before.append(frame)


def assert_silent(ws: websocket.WebSocket) -> None:
    """Nothing arrives for a short while."""
    ws.settimeout(QUIET)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()


def exchange(
    srv: ReferenceServer,
    method: str,
    path: str,
    auth: str | None = None,
    body: bytes | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One raw HTTP exchange (no redirects followed): status, headers, body."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        headers = {"Authorization": auth} if auth else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def api(srv: ReferenceServer, obj: Any, auth: str | None = None) -> tuple[int, str, Any]:
    """POST to apiUrl: status, content type, decoded body."""
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    status, headers, data = exchange(srv, "POST", "/jmap/api", auth or basic(), body)
    return status, headers.get_content_type(), json.loads(data)


@pytest.fixture
def srv() -> Iterator[ReferenceServer]:
    """A running server with two users and one bearer token."""
    with ReferenceServer(
        users={"alice": "secret", "bob": "hunter2"}, tokens={"tok-alice": "alice"}, seed=1
    ) as server:
        yield server


# -- discovery and auth -----------------------------------------------------------------------
def test_well_known_redirects_to_session(srv: ReferenceServer) -> None:
    """/.well-known/jmap answers 307 to the session URL, and urllib follows it."""
    status, headers, _ = exchange(srv, "GET", "/.well-known/jmap", basic())
    assert status == 307
    assert headers["Location"] == srv.session_url
    req = urllib.request.Request(srv.well_known_url, headers={"Authorization": basic()})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.url == srv.session_url
        assert json.load(resp)["username"] == "alice"


def test_session_resource_fields(srv: ReferenceServer) -> None:
    """The Session resource has the RFC 8620 §2 fields with absolute URLs."""
    status, headers, body = exchange(srv, "GET", "/jmap/session", "Bearer tok-alice")
    assert status == 200
    assert headers.get_content_type() == "application/json"
    session = json.loads(body)
    caps = session["capabilities"]
    assert caps[CORE]["maxCallsInRequest"] == 16
    assert caps[CORE]["maxConcurrentRequests"] == 4
    assert caps[CORE]["maxSizeRequest"] == 10_000_000
    assert caps[CORE]["maxObjectsInGet"] == 500
    assert {"maxSizeUpload", "maxConcurrentUpload", "maxObjectsInSet"} <= caps[CORE].keys()
    assert caps[CORE]["collationAlgorithms"]
    assert caps[WS_CAP] == {"url": srv.ws_url, "supportsPush": True}
    assert caps[NOTES] == {}
    assert session["accounts"] == {
        ALICE: {
            "name": "alice",
            "isPersonal": True,
            "isReadOnly": False,
            "accountCapabilities": {
                NOTES: {},
                "urn:ietf:params:jmap:blob": {  # RFC 9404
                    "maxSizeBlobSet": 1048576,
                    "maxDataSources": 64,
                    "supportedTypeNames": ["Note", "Notebook"],
                    "supportedDigestAlgorithms": ["sha", "sha-256"],
                },
            },
        }
    }
    assert session["primaryAccounts"] == {NOTES: ALICE}
    assert session["username"] == "alice"
    assert session["apiUrl"] == srv.api_url
    assert session["downloadUrl"].startswith(srv.base_url)
    assert "{accountId}" in session["downloadUrl"]
    assert "{blobId}" in session["downloadUrl"]
    assert "{accountId}" in session["uploadUrl"]
    assert session["eventSourceUrl"].startswith(srv.base_url)
    state = session["state"]
    assert srv.bump_session_state() != state
    assert json.loads(exchange(srv, "GET", "/jmap/session", basic())[2])["state"] != state


def test_session_relative_urls() -> None:
    """relative_urls=True advertises relative references, as some servers do."""
    with ReferenceServer(relative_urls=True, supports_push=False) as srv:
        status, headers, _ = exchange(srv, "GET", "/.well-known/jmap", basic())
        assert (status, headers["Location"]) == (307, "/jmap/session")
        session = json.loads(exchange(srv, "GET", "/jmap/session", basic())[2])
        assert session["apiUrl"] == "/jmap/api"
        assert session["capabilities"][WS_CAP] == {"url": "/jmap/ws", "supportsPush": False}
        assert session["uploadUrl"].startswith("/jmap/")


@pytest.mark.parametrize(
    "auth",
    [
        None,
        basic("alice", "wrong"),
        basic("mallory", "secret"),
        "Basic !!!not-base64",
        "Bearer tok-unknown",
        "Digest whatever",
    ],
)
@pytest.mark.parametrize("path", ["/.well-known/jmap", "/jmap/session", "/jmap/ws"])
def test_auth_failures_get_401_with_challenge(
    srv: ReferenceServer, auth: str | None, path: str
) -> None:
    """Missing or wrong credentials get 401, a Basic+Bearer challenge and a problem body."""
    status, headers, body = exchange(srv, "GET", path, auth)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="jmap", Bearer realm="jmap"'
    assert headers.get_content_type() == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 401
    assert "secret" not in body.decode()
    assert "wrong" not in body.decode()


def test_ws_upgrade_needs_auth_and_tokens_can_be_revoked(srv: ReferenceServer) -> None:
    """A WebSocket upgrade with bad credentials fails with 401; revoked tokens stop working."""
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(srv, auth=basic("alice", "nope"))
    assert info.value.status_code == 401
    handshake = srv.last_handshake()
    assert handshake is not None
    assert (handshake.status, handshake.auth_scheme, handshake.user) == (401, "Basic", None)
    srv.set_token("tok-alice", None)
    assert exchange(srv, "GET", "/jmap/session", "Bearer tok-alice")[0] == 401
    srv.set_password("carol", "pw")
    assert json.loads(exchange(srv, "GET", "/jmap/session", basic("carol", "pw"))[2])["accounts"]


# -- requests ----------------------------------------------------------------------------
def test_core_echo_over_websocket(srv: ReferenceServer) -> None:
    """Core/echo over WebSocket returns its arguments, with the jmap subprotocol agreed."""
    ws = connect(srv, auth="Bearer tok-alice")
    try:
        assert ws.getsubprotocol() == "jmap"
        handshake = srv.last_handshake()
        assert handshake is not None
        assert handshake.offered_subprotocols == "jmap"
        assert handshake.subprotocol == "jmap"
        assert handshake.auth_scheme == "Bearer"
        assert handshake.user == "alice"
        args = {"hello": True, "n": [1, 2, {"x": None}], "ü": "ß"}
        answer = call(ws, [["Core/echo", args, "c0"]], rid="r1")
        assert answer == {
            "@type": "Response",
            "requestId": "r1",
            "methodResponses": [["Core/echo", args, "c0"]],
            "sessionState": srv.session_state(),
        }
        assert srv.requests_seen() == 1
    finally:
        ws.close()


def test_core_echo_over_http(srv: ReferenceServer) -> None:
    """POST /jmap/api answers a Response object without @type."""
    obj = {"using": [CORE], "methodCalls": [["Core/echo", {"a": 1}, "c0"]]}
    status, ctype, body = api(srv, obj)
    assert (status, ctype) == (200, "application/json")
    assert body == {
        "methodResponses": [["Core/echo", {"a": 1}, "c0"]],
        "sessionState": srv.session_state(),
    }


@pytest.mark.parametrize("rid", ["r-1", 42, 0, None])
def test_request_id_is_echoed_exactly(srv: ReferenceServer, rid: Any) -> None:
    """requestId is the id exactly as sent (string or number), and absent without one."""
    ws = connect(srv)
    try:
        answer = call(ws, [["Core/echo", {}, "c0"]], rid=rid)
        if rid is None:
            assert "requestId" not in answer
        else:
            assert answer["requestId"] == rid
            assert type(answer["requestId"]) is type(rid)
    finally:
        ws.close()


@pytest.mark.parametrize(
    ("frame", "kind", "rid"),
    [
        ("{not json", "notJSON", None),
        ('{"@type": "Request", "id": "x", "using": []}', "notRequest", "x"),
        (BAD_CALL, "notRequest", 5),
        ('{"@type": "Chat", "id": "u"}', "notRequest", "u"),
        ('["@type", "Request"]', "notRequest", None),
        (request([["Core/echo", {}, "c"]], "uc", [CORE, "urn:x:nope"]), "unknownCapability", "uc"),
        (request([["Note/get", {"accountId": "x"}, "c"]], "nc", [CORE]), "unknownCapability", "nc"),
    ],
)  # fmt: skip
def test_websocket_request_errors(
    srv: ReferenceServer, frame: str, kind: str, rid: str | None
) -> None:
    """Request-level problems answer a RequestError (RFC 8620 §3.6.1, RFC 8887 §4.3.4)."""
    ws = connect(srv)
    try:
        ws.send(frame)
        error = recv(ws)
        assert error["@type"] == "RequestError"
        assert error["type"] == ERR + kind
        assert error["status"] == 400
        assert error["detail"]
        assert error.get("requestId") == rid
        assert echo_barrier(ws) == []  # the connection is still usable
    finally:
        ws.close()


def test_limit_errors() -> None:
    """maxCallsInRequest and maxSizeRequest answer limit errors naming the limit."""
    with ReferenceServer(max_calls_in_request=2, max_size_request=2000) as srv:
        ws = connect(srv)
        try:
            answer = call(ws, [["Core/echo", {}, f"c{i}"] for i in range(3)], rid="many")
            assert (answer["type"], answer["limit"]) == (ERR + "limit", "maxCallsInRequest")
            assert answer["requestId"] == "many"
            answer = call(ws, [["Core/echo", {"pad": "x" * 3000}, "c0"]])
            assert (answer["type"], answer["limit"]) == (ERR + "limit", "maxSizeRequest")
            assert call(ws, [["Core/echo", {"pad": "x" * 100}, "c0"]])["@type"] == "Response"
        finally:
            ws.close()
        status, ctype, body = api(
            srv, {"using": [CORE], "methodCalls": [["Core/echo", {}, "c"]] * 3}
        )
        assert (status, ctype, body["limit"]) == (
            400,
            "application/problem+json",
            "maxCallsInRequest",
        )


def test_max_concurrent_requests_counts_across_connections_and_http() -> None:
    """The in-flight limit is per user, across every connection and HTTP."""
    with ReferenceServer(max_concurrent_requests=2, seed=3) as srv:
        srv.delay(1.0)
        ws1, ws2 = connect(srv), connect(srv)
        try:
            for rid in ("a", "b", "c"):  # one connection reads in order: a and b are in flight
                ws1.send(request([["Core/echo", {}, "c"]], rid=rid))
            error = recv(ws1)
            assert (error["requestId"], error["limit"]) == ("c", "maxConcurrentRequests")
            assert error["type"] == ERR + "limit"
            status, ctype, body = api(srv, {"using": [CORE], "methodCalls": []})
            assert (status, ctype) == (400, "application/problem+json")
            assert body["limit"] == "maxConcurrentRequests"
            ws2.send(request([["Core/echo", {}, "c"]], rid="d"))
            assert recv(ws2)["requestId"] == "d"  # rejected at once, not delayed
            assert sorted(recv(ws1)["requestId"] for _ in range(2)) == ["a", "b"]
        finally:
            ws1.close()
            ws2.close()


def test_http_request_errors(srv: ReferenceServer) -> None:
    """Over HTTP, request-level errors are 400 application/problem+json."""
    cases: list[tuple[Any, str]] = [
        (b"{nope", "notJSON"),
        ({"using": [CORE]}, "notRequest"),
        ({"using": ["urn:x:nope"], "methodCalls": []}, "unknownCapability"),
        ({"using": [CORE], "methodCalls": [["Note/get", {}, "c"]]}, "unknownCapability"),
    ]
    for obj, kind in cases:
        status, ctype, body = api(srv, obj)
        assert (status, ctype) == (400, "application/problem+json"), kind
        assert (body["type"], body["status"]) == (ERR + kind, 400)
    status, _, body = api(srv, {"using": [CORE], "methodCalls": []}, auth=basic("bob", "x"))
    assert status == 401


def test_method_errors(srv: ReferenceServer) -> None:
    """Unknown methods, bad arguments, foreign accounts and unknown states are method errors."""
    ws = connect(srv)
    try:
        answer = call(
            ws,
            [
                ["Note/frobnicate", {}, "c0"],
                ["Note/get", {"accountId": ALICE, "ids": "n1"}, "c1"],
                ["Note/get", {"accountId": "a-bob"}, "c2"],
                ["Note/changes", {"accountId": ALICE, "sinceState": "bogus"}, "c3"],
                ["Note/get", {"accountId": ALICE, "properties": ["colour"]}, "c4"],
                ["Note/changes", {"accountId": ALICE, "sinceState": "s0", "maxChanges": 0}, "c5"],
                ["Note/set", {"accountId": ALICE, "ifInState": "s999"}, "c6"],
                ["Core/echo", {"ok": 1}, "c7"],
            ],
        )
        kinds = [(r[0], r[1].get("type"), r[2]) for r in answer["methodResponses"]]
        assert kinds == [
            ("error", "unknownMethod", "c0"),
            ("error", "invalidArguments", "c1"),
            ("error", "accountNotFound", "c2"),
            ("error", "cannotCalculateChanges", "c3"),
            ("error", "invalidArguments", "c4"),
            ("error", "invalidArguments", "c5"),
            ("error", "stateMismatch", "c6"),
            ("Core/echo", None, "c7"),
        ]
    finally:
        ws.close()


def test_note_set_get_and_changes(srv: ReferenceServer) -> None:
    """Note/set creates, updates and destroys with #creationId refs; /changes pages them."""
    ws = connect(srv)
    try:
        answer = call(
            ws,
            [
                [
                    "Note/set",
                    {
                        "accountId": ALICE,
                        "create": {
                            "k1": {"title": "one", "body": "b1"},
                            "k2": {"title": "two"},
                            "bad": {"id": "x", "colour": "red"},
                        },
                    },
                    "c0",
                ],
                ["Note/set", {"accountId": ALICE, "update": {"#k1": {"body": "B1"}}}, "c1"],
                ["Note/get", {"accountId": ALICE, "ids": ["#k1", "nope"]}, "c2"],
            ],
        )
        assert "createdIds" not in answer
        set0, set1, get2 = (r[1] for r in answer["methodResponses"])
        n1, n2 = set0["created"]["k1"]["id"], set0["created"]["k2"]["id"]
        assert set0["oldState"] == "s0"
        assert set0["newState"] != "s0"
        assert set0["notCreated"]["bad"]["type"] == "invalidProperties"
        assert sorted(set0["notCreated"]["bad"]["properties"]) == ["colour", "id"]
        assert set0["updated"] is None
        assert set0["destroyed"] is None
        assert set1["updated"] == {n1: None}
        assert set1["oldState"] == set0["newState"]
        assert get2["list"] == [{"id": n1, "title": "one", "body": "B1"}]
        assert get2["notFound"] == ["nope"]
        assert get2["state"] == set1["newState"]

        ws.send(
            json.dumps(
                {
                    "@type": "Request",
                    "id": "r2",
                    "using": USING,
                    "createdIds": {"old": n2},
                    "methodCalls": [
                        ["Note/set", {"accountId": ALICE, "destroy": ["#old", "n404"]}, "c0"],
                        ["Note/set", {"accountId": ALICE, "create": {"k3": {}}}, "c1"],
                        ["Note/get", {"accountId": ALICE, "properties": ["title"]}, "c2"],
                    ],
                }
            )
        )
        answer = recv(ws)
        destroy, create, get = (r[1] for r in answer["methodResponses"])
        assert destroy["destroyed"] == [n2]
        assert destroy["notDestroyed"] == {"n404": {"type": "notFound"}}
        n3 = create["created"]["k3"]["id"]
        assert answer["createdIds"] == {"old": n2, "k3": n3}
        assert sorted(get["list"], key=lambda n: n["id"]) == sorted(
            [{"id": n1, "title": "one"}, {"id": n3, "title": ""}], key=lambda n: n["id"]
        )

        answer = call(ws, [["Note/changes", {"accountId": ALICE, "sinceState": "s0"}, "c"]])
        changes = answer["methodResponses"][0][1]
        assert changes["oldState"] == "s0"
        assert changes["newState"] == create["newState"]
        assert (changes["created"], changes["updated"], changes["destroyed"]) == ([n1, n3], [], [])
        assert changes["hasMoreChanges"] is False

        page = {"accountId": ALICE, "sinceState": "s0", "maxChanges": 2}
        first = call(ws, [["Note/changes", page, "c"]])["methodResponses"][0][1]
        assert first["hasMoreChanges"] is True
        assert (first["created"], first["updated"], first["destroyed"]) == ([n1, n2], [], [])
        page["sinceState"] = first["newState"]
        second = call(ws, [["Note/changes", page, "c"]])["methodResponses"][0][1]
        assert (second["updated"], second["destroyed"]) == ([n1], [n2])
        page["sinceState"] = second["newState"]
        third = call(ws, [["Note/changes", page, "c"]])["methodResponses"][0][1]
        assert (third["created"], third["hasMoreChanges"]) == ([n3], False)
        assert third["newState"] == create["newState"]

        srv.store.compact_changes(ALICE)
        answer = call(ws, [["Note/changes", {"accountId": ALICE, "sinceState": "s0"}, "c"]])
        assert answer["methodResponses"][0][1]["type"] == "cannotCalculateChanges"
    finally:
        ws.close()


def test_back_references(srv: ReferenceServer) -> None:
    """#name arguments resolve ResultReferences with JSON Pointer and the * wildcard."""
    for title in ("a", "b"):
        srv.change_note("alice", title=title)
    ws = connect(srv)
    try:
        ref = {"resultOf": "c0", "name": "Note/get", "path": "/list/*/id"}
        answer = call(
            ws,
            [
                ["Note/get", {"accountId": ALICE, "properties": ["title"]}, "c0"],
                ["Note/get", {"accountId": ALICE, "#ids": ref}, "c1"],
                ["Core/echo", {"#t": {**ref, "path": "/list/*/title"}}, "c2"],
                ["Note/get", {"accountId": ALICE, "#ids": {**ref, "name": "Note/set"}}, "c3"],
                ["Note/get", {"accountId": ALICE, "#ids": {**ref, "path": "/nope"}}, "c4"],
                ["Note/get", {"accountId": ALICE, "#ids": {**ref, "resultOf": "zz"}}, "c5"],
                ["Note/get", {"accountId": ALICE, "ids": [], "#ids": ref}, "c6"],
            ],
        )
        r = answer["methodResponses"]
        ids = [n["id"] for n in r[0][1]["list"]]
        assert [n["id"] for n in r[1][1]["list"]] == ids
        assert r[2] == ["Core/echo", {"t": ["a", "b"]}, "c2"]
        assert [x[1]["type"] for x in r[3:6]] == ["invalidResultReference"] * 3
        assert r[6][1]["type"] == "invalidArguments"
    finally:
        ws.close()


def test_json_pointer_wildcard_flattens() -> None:
    """The * wildcard maps over arrays and flattens array results (RFC 8620 §3.7)."""
    doc = {"a": [{"b": [1, 2]}, {"b": [3]}, {"b": 4}], "x~/y": 5}
    assert evaluate_pointer(doc, "/a/*/b") == [1, 2, 3, 4]
    assert evaluate_pointer(doc, "/a/1/b/0") == 3
    assert evaluate_pointer(doc, "/x~0~1y") == 5
    assert evaluate_pointer(doc, "") is doc
    for bad in ("/a/9", "/a/01", "/q", "a", "/a/0/b/x"):
        with pytest.raises(LookupError):
            evaluate_pointer(doc, bad)


# -- push ---------------------------------------------------------------------------------
def test_state_change_reaches_push_enabled_connections(srv: ReferenceServer) -> None:
    """A change from WS, HTTP or Python pushes StateChange to push-enabled connections only."""
    pusher, other_types, writer, bobs = (
        connect(srv),
        connect(srv),
        connect(srv),
        connect(srv, auth=basic("bob", "hunter2")),
    )
    try:
        pusher.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None}))
        other_types.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Mailbox"]}))
        bobs.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Note"]}))
        for ws in (pusher, other_types, bobs):
            assert echo_barrier(ws) == []
        created = call(writer, [["Note/set", {"accountId": ALICE, "create": {"k": {}}}, "c"]])
        state = created["methodResponses"][0][1]["newState"]
        change = recv(pusher)
        assert change["@type"] == "StateChange"
        assert change["changed"] == {ALICE: {"Note": state}}
        assert isinstance(change["pushState"], str)
        first_push_state = change["pushState"]

        status, _, body = api(
            srv,
            {
                "using": USING,
                "methodCalls": [["Note/set", {"accountId": ALICE, "create": {"h": {}}}, "c"]],
            },
        )
        assert status == 200
        change = recv(pusher)
        assert change["changed"][ALICE]["Note"] == body["methodResponses"][0][1]["newState"]
        assert change["pushState"] != first_push_state

        srv.change_note("alice", title="from python")
        assert recv(pusher)["changed"][ALICE]["Note"] == srv.store.state(ALICE)
        srv.change_note("bob", title="bob's")
        assert recv(bobs)["changed"] == {"a-bob": {"Note": srv.store.state("a-bob")}}

        assert echo_barrier(pusher) == []  # bob's change is not alice's business
        assert echo_barrier(other_types) == []
        assert echo_barrier(writer) == []  # never enabled push
    finally:
        for ws in (pusher, other_types, writer, bobs):
            ws.close()


def test_push_replay_from_push_state_and_disable(srv: ReferenceServer) -> None:
    """pushState replays what changed since; WebSocketPushDisable stops the flow."""
    ws = connect(srv)
    try:
        ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Note"]}))
        assert echo_barrier(ws) == []
        srv.change_note("alice", title="1")
        token = recv(ws)["pushState"]
        ws.send(json.dumps({"@type": "WebSocketPushDisable"}))
        assert echo_barrier(ws) == []
        note = srv.change_note("alice", title="2")
        srv.change_note("alice", note, body="more")
        assert echo_barrier(ws) == []
    finally:
        ws.close()
    again = connect(srv)
    try:
        again.send(json.dumps({"@type": "WebSocketPushEnable", "pushState": token}))
        replay = recv(again)
        assert replay["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
        assert replay["pushState"] == srv.store.push_state() != token
        again.send(json.dumps({"@type": "WebSocketPushEnable", "pushState": replay["pushState"]}))
        assert echo_barrier(again) == []  # nothing changed since: nothing replayed
        again.send(json.dumps({"@type": "WebSocketPushEnable", "pushState": "p999999"}))
        # A token the server never gave: every type's state, the unchanged Notebook's too.
        assert recv(again)["changed"] == {
            ALICE: {"Note": srv.store.state(ALICE), "Notebook": srv.store.state(ALICE, "Notebook")}
        }
    finally:
        again.close()


def test_push_flood(srv: ReferenceServer) -> None:
    """push_flood sends n StateChange frames to the account's connections."""
    ws, bobs = connect(srv), connect(srv, auth=basic("bob", "hunter2"))
    try:
        srv.push_flood(200, account=ALICE)
        frames = [recv(ws) for _ in range(200)]
        assert {f["@type"] for f in frames} == {"StateChange"}
        assert frames[0]["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
        assert echo_barrier(ws) == []
        assert echo_barrier(bobs) == []
    finally:
        ws.close()
        bobs.close()


# -- knobs --------------------------------------------------------------------------------
def test_send_binary_raw_text_and_ping_flood(srv: ReferenceServer) -> None:
    """send_binary, send_raw_text and ping_flood put those frames on the wire."""
    ws = connect(srv)
    try:
        srv.send_binary(b"\x00\xff")
        opcode, data = ws.recv_data(control_frame=True)
        assert (opcode, data) == (websocket.ABNF.OPCODE_BINARY, b"\x00\xff")
        srv.send_raw_text("{not json")
        assert ws.recv() == "{not json"
        srv.ping_flood(5, payload=b"hi")
        pings = [ws.recv_data_frame(control_frame=True) for _ in range(5)]
        assert {(f.opcode, f.data) for _, f in pings} == {(websocket.ABNF.OPCODE_PING, b"hi")}
        assert echo_barrier(ws) == []
    finally:
        ws.close()


def test_client_binary_frame_is_closed_with_1003(srv: ReferenceServer) -> None:
    """A binary frame from the client is answered with Close 1003 (RFC 8887 §4.3)."""
    ws = connect(srv)
    try:
        ws.send_binary(b"\x01\x02")
        ws.send(request([["Core/echo", {}, "c"]]))  # after the Close: discarded
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", data[:2])[0] == 1003  # websocket-client answered it
        assert srv.wait_for_connections(0, timeout=5)
        ws.sock.settimeout(5)
        assert ws.sock.recv(16) == b""  # then a clean FIN: the closing handshake completed
    finally:
        ws.shutdown()


def test_close_all_sends_the_code(srv: ReferenceServer) -> None:
    """close_all sends a Close frame with the given code and reason."""
    ws1, ws2 = connect(srv), connect(srv)
    try:
        assert srv.wait_for_connections(2, timeout=5)
        closer = threading.Thread(target=srv.close_all, args=(1008, "credentials expired"))
        closer.start()
        for ws in (ws1, ws2):
            opcode, data = ws.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert struct.unpack("!H", data[:2])[0] == 1008
            assert data[2:] == b"credentials expired"  # websocket-client answered it
        closer.join(timeout=5)
        assert not closer.is_alive()
        assert srv.wait_for_connections(0, timeout=5)
    finally:
        ws1.shutdown()
        ws2.shutdown()


def test_reset_all_sends_rst(srv: ReferenceServer) -> None:
    """reset_all aborts the TCP connection: the client's read fails with ECONNRESET."""
    ws = connect(srv)
    try:
        assert srv.wait_for_connections(1, timeout=5)
        srv.reset_all()
        with pytest.raises(ConnectionResetError):
            ws.recv()
        assert srv.wait_for_connections(0, timeout=5)
    finally:
        ws.shutdown()


def test_halt_and_resume(srv: ReferenceServer) -> None:
    """halt() leaves the socket open but answers nothing, not even pings; resume() catches up."""
    ws = connect(srv)
    try:
        srv.halt()
        ws.ping(b"anyone?")
        ws.send(request([["Core/echo", {}, "c"]], rid="held"))
        srv.change_note("alice", title="while halted")
        assert_silent(ws)
        assert srv.connection_count() == 1
        late = connect(srv)  # handshakes still complete while halted
        srv.resume()
        ws.settimeout(5)
        opcode, data = ws.recv_data(control_frame=True)
        assert (opcode, data) == (websocket.ABNF.OPCODE_PONG, b"anyone?")
        assert recv(ws)["requestId"] == "held"
        assert call(late, [["Core/echo", {}, "c"]], rid="late")["requestId"] == "late"
        late.close()
    finally:
        ws.close()


def test_omit_subprotocol_and_fail_handshake(srv: ReferenceServer) -> None:
    """omit_subprotocol drops the jmap echo; fail_handshake answers the upgrade with a status."""
    srv.omit_subprotocol(True)
    with pytest.raises(websocket.WebSocketException):
        connect(srv)  # websocket-client insists on the subprotocol it asked for
    ws = connect(srv, subprotocols=[])
    handshake = srv.last_handshake()
    assert handshake is not None
    assert handshake.subprotocol is None
    assert ws.getsubprotocol() is None
    ws.close()
    srv.omit_subprotocol(False)
    for status in (500, 503):
        srv.fail_handshake(status)
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            connect(srv)
        assert info.value.status_code == status
    srv.fail_handshake(None)
    ws = connect(srv)
    assert ws.getsubprotocol() == "jmap"
    ws.close()


def test_drop_requests(srv: ReferenceServer) -> None:
    """drop_requests reads requests and never answers; pings are still answered."""
    ws = connect(srv)
    try:
        srv.drop_requests(True)
        ws.send(request([["Core/echo", {}, "c"]], rid="lost"))
        ws.ping(b"p")
        opcode, _ = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PONG
        assert_silent(ws)
        assert srv.requests_seen() == 1
        srv.drop_requests(False)
        assert echo_barrier(ws) == []
    finally:
        ws.close()


def test_delay_and_reorder() -> None:
    """delay() slows answers down; reorder(n) shuffles batches and flushes leftovers."""
    with ReferenceServer(seed=7, max_concurrent_requests=16) as srv:
        ws = connect(srv)
        try:
            srv.delay(0.2)
            start = time.monotonic()
            assert call(ws, [["Core/echo", {}, "c"]])["@type"] == "Response"
            assert time.monotonic() - start >= 0.2
            srv.delay((0.0, 0.01))
            srv.reorder(8)
            for i in range(8):
                ws.send(request([["Core/echo", {"i": i}, "c"]], rid=i))
            order = [recv(ws)["requestId"] for _ in range(8)]
            assert sorted(order) == list(range(8))
            assert order != list(range(8))
            srv.delay(None)
            srv.reorder(5, hold=0.05)
            for i in range(2):
                ws.send(request([["Core/echo", {}, "c"]], rid=f"left{i}"))
            assert sorted(recv(ws)["requestId"] for _ in range(2)) == ["left0", "left1"]
            srv.reorder(0)
            assert echo_barrier(ws) == []
        finally:
            ws.close()


# -- lifecycle ----------------------------------------------------------------------------
def test_restart_on_same_port_with_same_store() -> None:
    """A new server on the old port with the old store keeps notes, states and pushState."""
    store = NoteStore()
    first = ReferenceServer(store=store).start()
    port = first.port
    try:
        ws = connect(first)
        ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None}))
        assert echo_barrier(ws) == []
        note = first.change_note("alice", title="survivor")
        token = recv(ws)["pushState"]
        state = store.state(ALICE)
        stopper = threading.Thread(target=first.stop, name="stopper")
        stopper.start()
        opcode, data = ws.recv_data(control_frame=True)  # the server says goodbye with 1001
        assert (opcode, struct.unpack("!H", data[:2])[0]) == (websocket.ABNF.OPCODE_CLOSE, 1001)
        stopper.join(5)
        assert not stopper.is_alive()
        ws.shutdown()
    finally:
        first.stop()
    store.create_note(ALICE, title="while down")
    with ReferenceServer(store=store, port=port) as second:
        assert second.port == port
        ws = connect(second)
        try:
            answer = call(
                ws,
                [
                    ["Note/get", {"accountId": ALICE, "ids": [note]}, "c0"],
                    ["Note/changes", {"accountId": ALICE, "sinceState": state}, "c1"],
                ],
            )
            got, changes = (r[1] for r in answer["methodResponses"])
            assert got["list"][0]["title"] == "survivor"
            assert len(changes["created"]) == 1
            ws.send(json.dumps({"@type": "WebSocketPushEnable", "pushState": token}))
            assert recv(ws)["changed"] == {ALICE: {"Note": store.state(ALICE)}}
        finally:
            ws.close()
    again = ReferenceServer(store=store, port=port)
    again.start()  # the same object can be started again after stop, on the same port
    again.stop()
    again.start()
    assert again.port == port
    again.stop()


def test_stop_is_idempotent_and_leaves_no_thread() -> None:
    """stop() closes every connection, joins the thread, and can be called twice."""
    before = set(threading.enumerate())
    srv = ReferenceServer().start()
    assert any(t.name.startswith("jmapws-reference-server") for t in threading.enumerate())
    ws = connect(srv)
    srv.halt()  # even a halted server stops promptly
    srv.stop()
    srv.stop()
    assert set(threading.enumerate()) <= before
    ws.settimeout(5)
    with pytest.raises((ConnectionResetError, websocket.WebSocketConnectionClosedException)):
        ws.recv()
    ws.shutdown()
    assert srv.connection_count() == 0


def test_serve_forever_returns_after_stop() -> None:
    """serve_forever blocks until stop() is called from another thread."""
    srv = ReferenceServer().start()
    runner = threading.Thread(target=srv.serve_forever, name="serve-forever-test", daemon=True)
    runner.start()
    ws = connect(srv)
    assert call(ws, [["Core/echo", {}, "c"]])["@type"] == "Response"
    ws.close()
    assert runner.is_alive()
    srv.stop()
    runner.join(5)
    assert not runner.is_alive()


def test_connection_count_and_wait(srv: ReferenceServer) -> None:
    """connection_count and wait_for_connections follow opens and closes."""
    assert srv.connection_count() == 0
    sockets = [connect(srv) for _ in range(3)]
    assert srv.wait_for_connections(3, timeout=5)
    assert not srv.wait_for_connections(4, timeout=0.05)
    for ws in sockets:
        ws.close()
    assert srv.wait_for_connections(0, timeout=5)


def test_start_on_a_busy_port_raises(srv: ReferenceServer) -> None:
    """Binding a port in use raises OSError from start() and leaves no thread."""
    before = set(threading.enumerate())
    with pytest.raises(OSError):
        ReferenceServer(port=srv.port).start()
    assert set(threading.enumerate()) <= before


def test_tls_serves_https_and_wss() -> None:
    """With an ssl_context the server speaks https and wss."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with ReferenceServer(ssl_context=server_ctx) as srv:
        assert srv.ws_url.startswith("wss://")
        assert srv.base_url.startswith("https://")
        req = urllib.request.Request(srv.session_url, headers={"Authorization": basic()})
        with urllib.request.urlopen(req, timeout=5, context=client_ctx) as resp:
            session = json.load(resp)
        assert session["capabilities"][WS_CAP]["url"] == srv.ws_url
        ws = connect(srv, sslopt={"context": client_ctx})
        try:
            assert call(ws, [["Core/echo", {"tls": True}, "c"]])["methodResponses"][0][1] == {
                "tls": True
            }
            srv.reset_all()
            with pytest.raises((ConnectionResetError, ssl.SSLError, websocket.WebSocketException)):
                ws.recv()
        finally:
            ws.shutdown()


def test_client_close_is_echoed(srv: ReferenceServer) -> None:
    """A client's Close is answered with the same code, then the server closes TCP."""
    ws = connect(srv)
    try:
        ws.send_close(status=4000, reason=b"done")
        # Read raw bytes: websocket-client would answer the echoed Close with another one.
        ws.sock.settimeout(5)
        received = b""
        while chunk := ws.sock.recv(64):
            received += chunk
        assert received == b"\x88\x02" + struct.pack("!H", 4000)  # the echo, then a clean FIN
        assert srv.wait_for_connections(0, timeout=5)
    finally:
        ws.shutdown()
