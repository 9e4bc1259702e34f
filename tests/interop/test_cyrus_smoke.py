"""Smoke tests of the Cyrus interop server itself: discovery, JMAP over WebSocket, push.

These use only the standard library and websocket-client, not jmapws_sync, so they check the
server and the fixture whatever state the library is in.
"""

from __future__ import annotations

import base64
import http.client
import json
import struct
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from .cyrus import CyrusServer

pytestmark = pytest.mark.interop

WS_CAPABILITY = "urn:ietf:params:jmap:websocket"
CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
TIMEOUT = 10.0


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _session(cyrus: CyrusServer) -> dict[str, Any]:
    request = urllib.request.Request(
        cyrus.http_url + "/.well-known/jmap",
        headers={"Authorization": _auth(cyrus.user, cyrus.password)},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:  # follows the redirect
        assert resp.status == 200
        assert resp.headers.get_content_type() == "application/json"
        session: dict[str, Any] = json.loads(resp.read())
    return session


def _ws_url(cyrus: CyrusServer) -> str:
    """The advertised WebSocket URL, on the server's own host and port.

    Cyrus 3.6 advertises ``"wss:/jmap/ws/"``: a scheme and a path, no authority, and ``wss``
    even over plain HTTP. Only its path is usable here.
    """
    url = _session(cyrus)["capabilities"][WS_CAPABILITY]["url"]
    path = urllib.parse.urlsplit(url).path
    assert path.startswith("/")
    return f"ws://{cyrus.host}:{cyrus.http_port}{path}"


@pytest.fixture
def ws(cyrus: CyrusServer) -> Iterator[websocket.WebSocket]:
    """A WebSocket to Cyrus's JMAP endpoint, subprotocol ``jmap``, as the test user."""
    conn = websocket.create_connection(
        _ws_url(cyrus),
        subprotocols=["jmap"],
        header=["Authorization: " + _auth(cyrus.user, cyrus.password)],
        timeout=TIMEOUT,
    )
    try:
        yield conn
    finally:
        conn.close(timeout=2)


def _request(ws: websocket.WebSocket, method_calls: list[Any], request_id: str) -> Any:
    ws.send(
        json.dumps(
            {
                "@type": "Request",
                "id": request_id,
                "using": [CORE, MAIL],
                "methodCalls": method_calls,
            }
        )
    )
    return json.loads(ws.recv())


def _message(subject: str) -> bytes:
    return (
        "From: Sender <sender@example.com>\r\n"
        "To: test@localhost\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{time.monotonic_ns()}@jmapws.test>\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        "\r\n"
        "Hello.\r\n"
    ).encode()


def test_well_known_redirects_to_session(cyrus: CyrusServer) -> None:
    conn = http.client.HTTPConnection(cyrus.host, cyrus.http_port, timeout=TIMEOUT)
    try:
        conn.request(
            "GET",
            "/.well-known/jmap",
            headers={"Authorization": _auth(cyrus.user, cyrus.password)},
        )
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 301
    assert resp.getheader("Location") == f"{cyrus.http_url}/jmap"

    session = _session(cyrus)
    assert session["username"] == cyrus.user
    assert session["apiUrl"] == "/jmap/"
    assert CORE in session["capabilities"]
    ws_cap = session["capabilities"][WS_CAPABILITY]
    assert ws_cap["supportsPush"] is True
    assert urllib.parse.urlsplit(ws_cap["url"]).path == "/jmap/ws/"
    assert session["primaryAccounts"][MAIL] == cyrus.user
    assert session["accounts"][cyrus.user]["isPersonal"] is True


def test_wrong_password_is_401(cyrus: CyrusServer) -> None:
    conn = http.client.HTTPConnection(cyrus.host, cyrus.http_port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/jmap/", headers={"Authorization": _auth(cyrus.user, "wrong")})
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(
            _ws_url(cyrus),
            subprotocols=["jmap"],
            header=["Authorization: " + _auth(cyrus.user, "wrong")],
            timeout=TIMEOUT,
        )
    assert info.value.status_code == 401


def test_core_echo_over_websocket(ws: websocket.WebSocket) -> None:
    assert ws.getsubprotocol() == "jmap"
    ws.send(
        json.dumps(
            {
                "@type": "Request",
                "id": "r1",
                "using": [CORE],
                "methodCalls": [["Core/echo", {"a": 1}, "c0"]],
            }
        )
    )
    response = json.loads(ws.recv())
    assert response["@type"] == "Response"
    assert response["requestId"] == "r1"
    assert response["methodResponses"] == [["Core/echo", {"a": 1}, "c0"]]
    assert "sessionState" in response


def test_not_json_is_a_request_error(ws: websocket.WebSocket) -> None:
    ws.send("hello")
    error = json.loads(ws.recv())
    assert error["@type"] == "RequestError"
    assert error["type"] == "urn:ietf:params:jmap:error:notJSON"
    assert error["status"] == 400


def test_binary_frame_closes_with_1003(ws: websocket.WebSocket) -> None:
    ws.send_binary(b"\x00\x01")
    opcode, frame = ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    (code,) = struct.unpack("!H", frame.data[:2])
    assert code == 1003
    assert frame.data[2:] == b"406 Not Acceptable"


def test_push_state_change_after_append(cyrus: CyrusServer, ws: websocket.WebSocket) -> None:
    ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Email", "Mailbox"]}))
    # Cyrus sends nothing in answer to WebSocketPushEnable; this round trip makes sure it has
    # been handled before the message is appended.
    assert _request(ws, [["Core/echo", {}, "c0"]], "sync")["requestId"] == "sync"
    cyrus.append_message(cyrus.user, _message("push me"))

    deadline = time.monotonic() + 5
    change = None
    while change is None:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no StateChange within 5 s of the APPEND"
        ws.settimeout(remaining)
        message = json.loads(ws.recv())
        if message.get("@type") == "StateChange":
            change = message
    assert "Email" in change["changed"][cyrus.user]
    assert isinstance(change["pushState"], str)

    ws.settimeout(TIMEOUT)
    response = _request(ws, [["Email/get", {"accountId": cyrus.user, "ids": []}, "g"]], "st")
    assert response["methodResponses"][0][1]["state"] == change["changed"][cyrus.user]["Email"]


def test_restart_keeps_ports_and_data(cyrus: CyrusServer) -> None:
    url = cyrus.http_url
    subject = f"smoke restart {time.monotonic_ns()}"  # the server is shared: a unique subject
    cyrus.append_message(cyrus.user, _message(subject), index=True)
    cyrus.restart()
    assert cyrus.http_url == url
    conn = websocket.create_connection(
        _ws_url(cyrus),
        subprotocols=["jmap"],
        header=["Authorization: " + _auth(cyrus.user, cyrus.password)],
        timeout=TIMEOUT,
    )
    try:
        response = _request(
            conn,
            [
                [
                    "Email/query",
                    {"accountId": cyrus.user, "filter": {"subject": subject}},
                    "q",
                ]
            ],
            "after",
        )
    finally:
        conn.close(timeout=2)
    assert response["methodResponses"][0][0] == "Email/query"
    assert len(response["methodResponses"][0][1]["ids"]) == 1
