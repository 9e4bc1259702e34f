"""Cyrus's departures from what a client would assume, on the reference server's quirk knobs.

The interop suite (tests/interop/) checks the same against a real Cyrus; these keep the
behaviour covered where no Cyrus build is at hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest

import jmapws_sync as jws
from jmapws_sync.testing import CYRUS_QUIRKS, ReferenceServer

from .conftest import ALICE, USERS
from .support.children import cli_argv

ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {}, "e")])


@pytest.fixture
def cyrus_like() -> Iterator[ReferenceServer]:
    """A reference server with every Cyrus quirk turned on."""
    with ReferenceServer(users=USERS, **CYRUS_QUIRKS) as srv:
        yield srv


def _heard_a_change(ws: jws.WsSession, server: ReferenceServer) -> bool:
    """Change a note; True if a StateChange arrives before the answer to a later request."""
    ws.call(ECHO, timeout=5)  # the enable has been handled
    server.change_note("alice", title="x")
    ws.call(ECHO, timeout=5)  # the change has been pushed, if it was going to be
    ws.send_request(ECHO, id="marker")
    while True:
        frame = ws.next_frame(timeout=5)
        if isinstance(frame, jws.StateChange):
            return True
        if isinstance(frame, jws.Response) and frame.request_id == "marker":
            return False


def test_connect_by_discovery_through_301_relative_and_host_less_urls(
    cyrus_like: ReferenceServer,
) -> None:
    """301 from /.well-known/jmap, relative apiUrl, "wss:/jmap/ws" over http: connect() works."""
    resource = jws.fetch_session(cyrus_like.base_url, auth=ALICE, timeout=5)
    assert resource.raw["capabilities"][jws.WEBSOCKET]["url"] == "wss:/jmap/ws"
    assert resource.api_url == cyrus_like.api_url
    with jws.connect(cyrus_like.base_url, auth=ALICE, timeout=5) as ws:
        assert ws.session is not None
        assert ws.session.websocket is not None
        assert ws.session.websocket.url == cyrus_like.ws_url  # ws://, the resource's host
        assert isinstance(ws.call(ECHO, timeout=5), jws.Response)


def test_enable_push_without_types_sends_the_advertised_types(
    cyrus_like: ReferenceServer,
) -> None:
    """No types: the types of the advertised capabilities go on the wire, and pushes arrive."""
    with jws.connect(cyrus_like.base_url, auth=ALICE, timeout=5) as ws:
        ws.enable_push()
        assert _heard_a_change(ws, cyrus_like)
    assert cyrus_like.last_push_enable() == {
        "@type": "WebSocketPushEnable",
        "dataTypes": ["Notebook", "Note"],
    }


def test_all_types_sends_a_literal_null_which_cyrus_takes_as_off(
    cyrus_like: ReferenceServer,
) -> None:
    """ALL_TYPES is "dataTypes": null on the wire; on Cyrus it turns an earlier enable off."""
    with jws.connect(cyrus_like.base_url, auth=ALICE, timeout=5) as ws:
        ws.enable_push(["Note"])
        assert _heard_a_change(ws, cyrus_like)
        ws.enable_push(jws.ALL_TYPES, push_state=ws.push_state)
        assert not _heard_a_change(ws, cyrus_like)
    sent = cyrus_like.last_push_enable()
    assert sent is not None
    assert "dataTypes" in sent
    assert sent["dataTypes"] is None


def test_null_means_all_on_a_server_that_follows_the_rfc(server: ReferenceServer) -> None:
    """The reference server's default: null is "all types" (RFC 8887 §4.3.5.2)."""
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:
        ws.enable_push(jws.ALL_TYPES)
        assert _heard_a_change(ws, server)


def test_without_a_session_resource_no_types_is_null(server: ReferenceServer) -> None:
    """WsSession.open() knows no Session resource: dataTypes is sent, as null."""
    with jws.WsSession.open(server.ws_url, auth=ALICE, timeout=5) as ws:
        ws.enable_push()
        ws.call(ECHO, timeout=5)
    assert server.last_push_enable() == {"@type": "WebSocketPushEnable", "dataTypes": None}


def test_a_string_is_not_a_list_of_types(ws: jws.WsSession) -> None:
    """enable_push("Note") would send ["N", "o", "t", "e"]: TypeError, nothing sent."""
    with pytest.raises(TypeError):
        ws.enable_push("Note")


def test_reconnecting_session_push_without_types_hears_changes(
    cyrus_like: ReferenceServer,
) -> None:
    """ReconnectingSession(push=True) with no types hears a change on a Cyrus-like server."""
    with jws.ReconnectingSession(cyrus_like.base_url, auth=ALICE, push=True) as rs:
        rs.wait_connected(timeout=10)
        cyrus_like.change_note("alice", title="pushed")
        change = next(rs.changes(timeout=10))
        account = cyrus_like.account_id("alice")
        assert change.changed[account]["Note"] == cyrus_like.store.state(account)


def test_listen_without_types_prints_a_change(cyrus_like: ReferenceServer) -> None:
    """`jmapws-sync listen URL --user alice` (no --types) prints a StateChange line."""
    proc = subprocess.Popen(
        cli_argv("listen", cyrus_like.base_url, "--user", "alice"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "JMAP_PASSWORD": USERS["alice"]},
    )
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
        assert cyrus_like.wait_for_connections(1, timeout=10)
        line = None
        for n in range(50):  # push is on once the listener's barrier call is answered
            cyrus_like.change_note("alice", title=f"change {n}")
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.2)
                break
        assert line is not None
        assert json.loads(line)["@type"] == "StateChange"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
