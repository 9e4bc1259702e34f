"""jmapws_sync against a real Cyrus IMAP 3.6 (issue 11): what a new user does, on real mail.

Every test talks to the session-scoped ``cyrus`` fixture through the library's public API;
mail arrives the way it does in real life, appended over IMAP. Tests share one server, so
each one looks only at what it caused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest

import jmapws_sync as jws
from jmapws_sync._framing import Opcode
from jmapws_sync.cli import main

from ..support.children import cli_argv
from .cyrus import CyrusServer, message

pytestmark = pytest.mark.interop

TIMEOUT = 10.0
CORE, MAIL = jws.CORE, jws.MAIL


def auth(cyrus: CyrusServer, password: str | None = None) -> jws.BasicAuth:
    return jws.BasicAuth(cyrus.user, cyrus.password if password is None else password)


@pytest.fixture
def ws(cyrus: CyrusServer) -> Iterator[jws.WsSession]:
    """A session to Cyrus, opened by discovery from its base URL."""
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=TIMEOUT) as session:
        yield session


def email_changes(session: jws.WsSession | jws.ReconnectingSession) -> Iterator[str]:
    """The Email states of the account's StateChanges, as they arrive."""
    for change in session.changes(timeout=TIMEOUT):
        for types in change.changed.values():
            if "Email" in types:
                yield types["Email"]


def email_state(session: jws.WsSession | jws.ReconnectingSession, account: str) -> str:
    b = jws.RequestBuilder(using=[CORE, MAIL])
    get = b.call("Email/get", {"accountId": account, "ids": []})
    state: str = session.call(b.build(), timeout=TIMEOUT).get(get.call_id)["state"]
    return state


# -- discovery ---------------------------------------------------------------------------------


def test_connect_by_discovery_through_the_301_and_host_less_url(cyrus: CyrusServer) -> None:
    """/.well-known/jmap answers 301; apiUrl is relative; the WebSocket is "wss:/jmap/ws/"."""
    resource = jws.fetch_session(cyrus.http_url, auth=auth(cyrus), timeout=TIMEOUT)
    assert resource.raw["capabilities"][jws.WEBSOCKET]["url"] == "wss:/jmap/ws/"
    assert resource.raw["apiUrl"] == "/jmap/"
    assert resource.api_url == f"{cyrus.http_url}/jmap/"
    assert resource.websocket == jws.WebSocketCapability(
        f"ws://{cyrus.host}:{cyrus.http_port}/jmap/ws/", True
    )
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=TIMEOUT) as ws:
        b = jws.RequestBuilder()
        echo = b.call("Core/echo", {"hello": "cyrus"})
        assert ws.call(b.build(), timeout=TIMEOUT).get(echo.call_id) == {"hello": "cyrus"}


def test_wrong_password_is_an_authentication_error(cyrus: CyrusServer) -> None:
    """401 from discovery and from the upgrade: AuthenticationError, the password nowhere."""
    wrong = auth(cyrus, "not-the-password")
    with pytest.raises(jws.AuthenticationError) as info:
        jws.connect(cyrus.http_url, auth=wrong, timeout=TIMEOUT)
    assert info.value.status == 401
    assert info.value.scheme == "Basic"
    ws_url = f"ws://{cyrus.host}:{cyrus.http_port}/jmap/ws/"
    with pytest.raises(jws.AuthenticationError) as upgrade:
        jws.WsSession.open(ws_url, auth=wrong, timeout=TIMEOUT)
    assert upgrade.value.status == 401
    assert "not-the-password" not in f"{info.value} {upgrade.value!r}"


# -- calls on real mail -------------------------------------------------------------------------


def test_back_references_on_real_mail(cyrus: CyrusServer, ws: jws.WsSession) -> None:
    """Email/query then Email/get of its ids (RFC 8620 §3.7), one round trip, real messages."""
    subjects = {f"backref {uuid.uuid4().hex[:8]}" for _ in range(3)}
    for subject in subjects:
        cyrus.append_message(cyrus.user, message(subject))
    account = ws.session.primary_account(MAIL) if ws.session else ""
    b = jws.RequestBuilder(using=[CORE, MAIL])
    query = b.call(
        "Email/query",
        {"accountId": account, "sort": [{"property": "receivedAt", "isAscending": False}]},
    )
    get = b.call(
        "Email/get",
        {"accountId": account, "ids": query.ref("/ids"), "properties": ["subject"]},
    )
    reply = ws.call(b.build(), timeout=TIMEOUT)
    assert subjects <= {email["subject"] for email in reply.get(get.call_id)["list"]}


def test_a_method_error_stays_in_the_response(ws: jws.WsSession) -> None:
    """Email/get on an unknown account: ["error", {"type": "accountNotFound"}], not a failure."""
    b = jws.RequestBuilder(using=[CORE, MAIL])
    get = b.call("Email/get", {"accountId": "nobody-here", "ids": []})
    reply = ws.call(b.build(), timeout=TIMEOUT)
    with pytest.raises(jws.MethodError) as info:
        reply.get(get.call_id)
    assert info.value.type == "accountNotFound"


def test_unknown_capability_is_a_request_error(ws: jws.WsSession) -> None:
    """using: an unknown capability: call() raises RequestFailed with unknownCapability."""
    request = jws.Request(
        using=[CORE, "urn:example:nope"], method_calls=[jws.Invocation("Core/echo", {}, "c0")]
    )
    with pytest.raises(jws.RequestFailed) as info:
        ws.call(request, timeout=TIMEOUT)
    assert info.value.problem.type == "urn:ietf:params:jmap:error:unknownCapability"
    assert info.value.problem.status == 400


def test_text_that_is_not_json_is_a_request_error(ws: jws.WsSession) -> None:
    """send_text("hello"): Cyrus answers a RequestError notJSON; the session goes on."""
    ws.send_text("hello")
    frame = ws.next_frame(timeout=TIMEOUT)
    assert isinstance(frame, jws.RequestError)
    assert frame.type == "urn:ietf:params:jmap:error:notJSON"
    assert isinstance(ws.call(jws.RequestBuilder().build(), timeout=TIMEOUT), jws.Response)


def test_binary_frame_is_answered_with_close_1003(ws: jws.WsSession) -> None:
    """A binary frame (RFC 8887 §4.3 forbids it): Cyrus closes 1003, reported with its reason.

    The library has no way to send one on purpose; the test writes it through the
    connection's frame writer.
    """
    ws._conn.send(Opcode.BINARY, b"\x00\x01")
    with pytest.raises(jws.ConnectionClosedError) as info:
        ws.next_frame(timeout=TIMEOUT)
    assert (info.value.code, info.value.reason) == (1003, "406 Not Acceptable")
    assert (ws.close_code, ws.close_reason) == (1003, "406 Not Acceptable")
    with pytest.raises(jws.SessionClosed):
        ws.next_frame(timeout=TIMEOUT)


# -- push ------------------------------------------------------------------------------------------


def test_push_with_no_types_hears_new_mail(cyrus: CyrusServer, ws: jws.WsSession) -> None:
    """enable_push() with no types: Cyrus pushes (it takes null as "off"; the list works)."""
    account = ws.session.primary_account(MAIL) if ws.session else ""
    ws.enable_push()
    before = email_state(ws, account)
    cyrus.append_message(cyrus.user, message("push, no types"))
    state = next(email_changes(ws))
    assert state != before
    assert state == email_state(ws, account)
    assert ws.push_state is not None


def test_push_with_types_hears_only_those(cyrus: CyrusServer, ws: jws.WsSession) -> None:
    """enable_push(["Mailbox"]): a new folder is pushed, with Mailbox in it."""
    ws.enable_push(["Mailbox"])
    ws.call(jws.RequestBuilder().build(), timeout=TIMEOUT)
    cyrus.create_mailbox(cyrus.user, f"INBOX.typed{uuid.uuid4().hex[:6]}")
    change = next(ws.changes(timeout=TIMEOUT))
    assert all(set(types) == {"Mailbox"} for types in change.changed.values())


def test_resume_from_push_state_after_a_disconnect(cyrus: CyrusServer) -> None:
    """Save push_state, disconnect, mail arrives, reconnect with it: the change is replayed."""
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=TIMEOUT) as ws:
        ws.enable_push(["Email"])
        ws.call(jws.RequestBuilder().build(), timeout=TIMEOUT)
        cyrus.append_message(cyrus.user, message("before the break"))
        next(email_changes(ws))
        saved = ws.push_state
    assert saved is not None
    cyrus.append_message(cyrus.user, message("while away"))
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=TIMEOUT) as ws:
        account = ws.session.primary_account(MAIL) if ws.session else ""
        ws.enable_push(["Email"], push_state=saved)
        replayed = next(email_changes(ws))  # no new mail: this is the replay
        assert replayed == email_state(ws, account)


def test_reconnecting_session_across_a_cyrus_restart(cyrus: CyrusServer) -> None:
    """Cyrus restarts (close 1001): a ReconnectingSession reconnects, resumes and hears mail."""
    infos: queue.Queue[jws.ReconnectInfo] = queue.Queue()
    with jws.ReconnectingSession(
        cyrus.http_url,
        auth=auth(cyrus),
        push=True,
        backoff=jws.Backoff(first=(0.05, 0.1), factor=1.5, ceiling=0.5),
        on_reconnect=infos.put,
    ) as rs:
        rs.wait_connected(timeout=TIMEOUT)
        cyrus.append_message(cyrus.user, message("before restart"))
        changes = email_changes(rs)
        next(changes)
        cyrus.restart()
        cyrus.append_message(cyrus.user, message("after restart"))
        account = rs.session.primary_account(MAIL) if rs.session else ""
        latest = next(changes)
        info = infos.get(timeout=TIMEOUT)
        assert info.close_code == 1001
        assert info.push_resumed
        while latest != email_state(rs, account):
            latest = next(changes)
        assert rs.reconnects == 1


# -- the command line -------------------------------------------------------------------------


def run_cli(argv: list[str], cyrus: CyrusServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("JMAP_PASSWORD", cyrus.password)
    out = io.StringIO()
    assert main([*argv, "--user", cyrus.user, "--timeout", "10"], out=out) == 0
    return out.getvalue()


def test_cli_session_and_call(cyrus: CyrusServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """`jmapws-sync session` prints Cyrus's resource; `call` runs a request from a file."""
    text = run_cli(["session", cyrus.http_url], cyrus, monkeypatch)
    assert f"websocket:    ws://{cyrus.host}:{cyrus.http_port}/jmap/ws/ (push supported)" in text
    request = {"using": [CORE], "methodCalls": [["Core/echo", {"from": "cli"}, "c0"]]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    answer = json.loads(run_cli(["call", cyrus.http_url], cyrus, monkeypatch))
    assert answer["methodResponses"] == [["Core/echo", {"from": "cli"}, "c0"]]


def test_cli_listen_without_types_prints_a_cyrus_state_change(cyrus: CyrusServer) -> None:
    """`jmapws-sync listen URL --user test` (no --types) prints the StateChange of new mail."""
    proc = subprocess.Popen(
        cli_argv("listen", cyrus.http_url, "--user", cyrus.user),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "JMAP_PASSWORD": cyrus.password},
    )
    try:
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
        line = None
        for n in range(20):  # push is on once the listener is connected: retry until then
            cyrus.append_message(cyrus.user, message(f"listen {n}"))
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=1.5)
                break
        assert line is not None
        change = json.loads(line)
        assert change["@type"] == "StateChange"
        assert "Email" in change["changed"][cyrus.user]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


# -- permessage-deflate (issue 15) -------------------------------------------------------------


def test_cyrus_negotiates_deflate_and_a_call_and_a_push_go_through(cyrus: CyrusServer) -> None:
    """Cyrus answers the offer with the window asked of it; calls and pushes inflate."""
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=TIMEOUT) as ws:
        assert ws.compression == "permessage-deflate; server_max_window_bits=14"
        account = ws.session.primary_account(MAIL) if ws.session else ""
        b = jws.RequestBuilder()
        echo = b.call("Core/echo", {"pad": "Email/get " * 5000})  # compressed both ways
        assert ws.call(b.build(), timeout=TIMEOUT).get(echo.call_id)["pad"].count("Email") == 5000
        ws.enable_push(["Email"])
        before = email_state(ws, account)
        cyrus.append_message(cyrus.user, message("compressed push"))
        assert next(email_changes(ws)) != before


def test_cyrus_without_compression_when_asked(cyrus: CyrusServer) -> None:
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=TIMEOUT, compression=None) as ws:
        assert ws.compression is None
        assert isinstance(ws.call(jws.RequestBuilder().build(), timeout=TIMEOUT), jws.Response)
