"""Push over WebSocket (RFC 8887 §4.3.5): enable, disable, changes(), pushState resume."""

from __future__ import annotations

import threading

import pytest

import jmapws_sync as jws
from jmapws_sync.testing import ReferenceServer

from .conftest import ALICE, USERS

ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {}, "e")])


def sync(ws: jws.WsSession) -> None:
    """Round-trip a call, so the server has processed everything sent before it."""
    ws.call(ECHO, timeout=5)


def test_enable_push_then_a_change_arrives_with_push_state(
    ws: jws.WsSession, server: ReferenceServer
) -> None:
    """After enable_push, a change made elsewhere arrives as a StateChange via changes()."""
    ws.enable_push()
    sync(ws)
    server.change_note("alice", title="hello")
    change = next(ws.changes(timeout=5))
    account = server.account_id("alice")
    assert change.changed[account]["Note"] == server.store.state(account)
    assert change.push_state is not None
    assert ws.push_state == change.push_state


def test_change_from_another_connection_is_pushed(
    ws: jws.WsSession, server: ReferenceServer
) -> None:
    """A Note/set on a second connection of the same account is pushed to the first."""
    ws.enable_push(data_types=["Note"])
    sync(ws)
    account = server.account_id("alice")
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as other:
        b = jws.RequestBuilder(using=[jws.CORE, "urn:x-jmapws-sync:notes"])
        setter = b.call("Note/set", {"accountId": account, "create": {"k": {"title": "t"}}})
        new_state = other.call(b.build(), timeout=5).get(setter.call_id)["newState"]
    change = next(ws.changes(timeout=5))
    assert change.changed == {account: {"Note": new_state}}


def test_other_accounts_changes_are_not_pushed(ws: jws.WsSession, server: ReferenceServer) -> None:
    """Bob's change is not pushed to Alice."""
    ws.enable_push()
    sync(ws)
    server.change_note("bob", title="private")
    ws.send_request(ECHO, id="marker")
    assert isinstance(ws.next_frame(timeout=5), jws.Response)


def test_disable_push_stops_state_changes(ws: jws.WsSession, server: ReferenceServer) -> None:
    """After disable_push no StateChange arrives for a later change."""
    ws.enable_push()
    sync(ws)
    server.change_note("alice", title="one")
    assert isinstance(next(ws.changes(timeout=5)), jws.StateChange)
    ws.disable_push()
    sync(ws)
    server.change_note("alice", title="two")
    ws.send_request(ECHO, id="marker")
    frame = ws.next_frame(timeout=5)
    assert isinstance(frame, jws.Response)
    assert frame.request_id == "marker"
    with pytest.raises(TimeoutError):
        ws.next_frame(timeout=0.2)


def test_resume_from_push_state_replays_what_was_missed(server: ReferenceServer) -> None:
    """A new connection enabling push with the last pushState gets what changed meanwhile."""
    account = server.account_id("alice")
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as first:
        first.enable_push()
        sync(first)
        server.change_note("alice", title="seen")
        next(first.changes(timeout=5))
        resume_from = first.push_state
    assert resume_from is not None
    server.change_note("alice", title="missed 1")
    server.change_note("alice", title="missed 2")
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as second:
        second.enable_push(push_state=resume_from)
        replay = next(second.changes(timeout=5))
    assert replay.changed[account]["Note"] == server.store.state(account)
    assert replay.push_state != resume_from


def test_push_unavailable_is_refused_before_sending() -> None:
    """supportsPush: false in the Session resource makes enable_push raise PushUnavailable."""
    with (
        ReferenceServer(users=USERS, supports_push=False) as srv,
        jws.connect(srv.base_url, auth=ALICE, timeout=5) as ws,
    ):
        seen = srv.requests_seen()
        with pytest.raises(jws.PushUnavailable):
            ws.enable_push()
        sync(ws)
        assert srv.requests_seen() == seen + 1  # only the sync call went out


def test_changes_sets_other_frames_aside_for_next_frame(
    ws: jws.WsSession, server: ReferenceServer
) -> None:
    """Frames met by changes() are not dropped: next_frame returns them afterwards."""
    ws.enable_push()
    sync(ws)
    ws.send_request(ECHO, id="aside")
    sync(ws)  # the Response "aside" is queued before the change is even made
    server.change_note("alice", title="x")
    frames: list[object] = []
    change = next(ws.changes(timeout=5))
    assert isinstance(change, jws.StateChange)
    try:
        while True:
            frames.append(ws.next_frame(timeout=0.3))
    except TimeoutError:
        pass
    ids = [f.request_id for f in frames if isinstance(f, jws.Response)]
    assert ids == ["aside"]


def test_changes_timeout_and_end_on_clean_close(ws: jws.WsSession, server: ReferenceServer) -> None:
    """changes(timeout) raises TimeoutError when idle, and ends when the server closes cleanly."""
    ws.enable_push()
    with pytest.raises(TimeoutError):
        next(ws.changes(timeout=0.1))
    closer = threading.Thread(target=server.close_all, args=(1000,))
    closer.start()
    assert list(ws.changes(timeout=5)) == []
    closer.join(5)
    assert ws.close_code == 1000
