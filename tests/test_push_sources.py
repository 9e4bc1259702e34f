"""Push from the EventSource (RFC 8620 §7.3) through a ReconnectingSession, on the
reference server's imitations of servers whose WebSocket does not push.

The same guarantees as WebSocket push: StateChanges through changes() and events(),
reconnects reported and resumed (Last-Event-ID), the keepalive, close() ending it all.
"""

from __future__ import annotations

import gc
import queue
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.policy import Backoff
from jmapws_sync.testing import NOTES, ReferenceServer

from .conftest import ALICE, USERS
from .support.feeds import Follower

WAIT = 30.0
FAST = Backoff(first=(0.01, 0.02), factor=2.0, ceiling=0.1, jitter=0.2, reset_after=60.0)


def session(server: ReferenceServer, **options: Any) -> jws.ReconnectingSession:
    options.setdefault("push", True)
    return jws.ReconnectingSession(
        server.base_url, auth=ALICE, backoff=FAST, connect_timeout=WAIT, **options
    )


def note_changes(rs: jws.ReconnectingSession) -> Iterator[str]:
    for change in rs.changes(timeout=WAIT):
        state = change.changed.get("a-alice", {}).get("Note")
        if state is not None:
            yield state


@pytest.mark.parametrize(
    ("options", "via"),
    [
        ({}, "eventsource"),  # asked for
        ({"websocket_push_fires": False}, "eventsource"),  # jmaple: says it pushes, never does
    ],
    ids=["asked", "jmaple-like"],
)
def test_pushes_come_from_the_eventsource_when_asked(options: dict[str, Any], via: str) -> None:
    with ReferenceServer(users=USERS, **options) as server, session(server, push_via=via) as rs:
        rs.wait_connected(WAIT)
        assert rs.push_source == "eventsource"
        assert server.last_push_enable() is None  # nothing asked of the WebSocket
        server.change_note("alice", title="pushed")
        assert next(note_changes(rs)) == server.store.state("a-alice")
        request = server.last_event_source_request()
        assert request is not None
        assert (request.closeafter, request.status) == ("no", 200)
        assert rs.call(_echo(), timeout=WAIT).get("c0") == {"x": 1}  # calls: the WebSocket


def test_auto_picks_the_eventsource_where_the_websocket_does_not_push() -> None:
    with ReferenceServer(users=USERS, supports_push=False) as server, session(server) as rs:
        rs.wait_connected(WAIT)
        assert rs.push_source == "eventsource"
        server.change_note("alice", title="x")
        assert next(note_changes(rs)) == server.store.state("a-alice")


def test_auto_keeps_the_websocket_where_it_pushes(server: ReferenceServer) -> None:
    with session(server) as rs:
        rs.wait_connected(WAIT)
        assert rs.push_source == "websocket"
        assert server.last_push_enable() is not None
        assert server.event_stream_count() == 0


def test_a_reset_event_stream_resumes_with_last_event_id_and_is_reported() -> None:
    heard: queue.Queue[jws.ReconnectInfo] = queue.Queue()
    with (
        ReferenceServer(users=USERS) as server,
        session(server, push_via="eventsource", on_reconnect=heard.put) as rs,
    ):
        rs.wait_connected(WAIT)
        server.change_note("alice", title="before")
        events = rs.events(timeout=WAIT)
        assert isinstance(next(events), jws.StateChange)
        server.reset_event_streams()
        assert server.wait_for_event_streams(1, timeout=WAIT)
        made = server.change_note("alice", title="after the reset")
        info = next(events)
        assert isinstance(info, jws.ReconnectInfo)
        assert info.push_resumed
        change = next(events)
        assert isinstance(change, jws.StateChange)
        assert heard.get(timeout=WAIT) == info  # on_reconnect, in this thread, first
        request = server.last_event_source_request()
        assert request is not None
        assert request.last_event_id is not None  # resumed from the last id
        assert made


def test_a_silent_stream_is_found_dead_by_its_pings_even_in_milliseconds() -> None:
    """Stalwart says its ping interval in milliseconds: read as such, two missed pings
    (and a second) end the stream, and a new one is opened."""
    with (
        ReferenceServer(users=USERS, ping_in_milliseconds=True) as server,
        session(server, push_via="eventsource", ping_interval=1.0) as rs,
    ):
        rs.wait_connected(WAIT)
        events = rs.events(timeout=WAIT)
        server.silence_event_streams(True)
        done = threading.Event()

        def unsilence() -> None:  # the next stream must speak again
            server.wait_for_event_streams(2, timeout=WAIT) or done.wait(0)
            server.silence_event_streams(False)

        helper = threading.Thread(target=unsilence, daemon=True)
        helper.start()
        info = next(events)
        helper.join(WAIT)
        assert isinstance(info, jws.ReconnectInfo)
        assert isinstance(info.cause, TimeoutError | OSError)


def test_a_stalwart_like_stream_without_ids_still_delivers() -> None:
    with (
        ReferenceServer(users=USERS, event_ids=False, replays=False) as server,
        session(server, push_via="eventsource") as rs,
    ):
        rs.wait_connected(WAIT)
        server.change_note("alice", title="no id")
        assert next(note_changes(rs)) == server.store.state("a-alice")


def test_a_change_feed_follows_the_eventsource_across_its_reconnects() -> None:
    with (
        ReferenceServer(users=USERS, event_ids=False) as server,
        session(server, push_via="eventsource") as rs,
    ):
        follower = Follower(jws.ChangeFeed(rs, ["Note"]), WAIT)
        assert follower.next().resync
        server.silence_event_streams(True)  # pushes held back...
        made = server.change_note("alice", title="while unheard")
        server.reset_event_streams()  # ...and the stream lost: no id to resume from
        server.silence_event_streams(False)
        assert made in follower.next().created
    follower.thread.join(WAIT)


def test_close_ends_the_eventsource_thread(server: ReferenceServer) -> None:
    rs = session(server, push_via="eventsource")
    rs.wait_connected(WAIT)
    assert server.wait_for_event_streams(1, timeout=WAIT)
    rs.close(timeout=WAIT)
    assert server.wait_for_event_streams(0, timeout=WAIT)
    assert not [t for t in threading.enumerate() if t.name.startswith("jmapws-eventsource")]


def test_refused_credentials_on_the_eventsource_end_the_session() -> None:
    calls = {"n": 0}

    def auth() -> dict[str, str]:  # good for the handshake, stale for the EventSource
        calls["n"] += 1
        password = USERS["alice"] if calls["n"] == 1 else "stale"
        return jws.BasicAuth("alice", password)()

    with ReferenceServer(users=USERS) as server:
        rs = jws.ReconnectingSession(
            server.base_url,
            auth=auth,
            push=True,
            push_via="eventsource",
            backoff=FAST,
            connect_timeout=5.0,
        )
        try:
            with pytest.raises(jws.AuthenticationError):
                rs.wait_connected(WAIT)
            with pytest.raises((jws.AuthenticationError, jws.SessionClosed)):
                rs.next_frame(timeout=WAIT)
        finally:
            rs.close(timeout=WAIT)


def _echo() -> jws.Request:
    return jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"x": 1}, "c0")])


# -- no WebSocket at all: calls over HTTP, push from the EventSource (Fastmail) --------------


def test_without_a_websocket_calls_go_over_http_and_pushes_over_the_eventsource() -> None:
    with (
        ReferenceServer(users=USERS, websocket=False) as fastmail_like,
        session(fastmail_like) as rs,
    ):
        rs.wait_connected(WAIT)
        assert (rs.transport, rs.push_source) == ("http", "eventsource")
        assert rs.call(_echo(), timeout=WAIT).get("c0") == {"x": 1}
        b = jws.RequestBuilder(using=[jws.CORE, NOTES])
        created = b.call("Note/set", {"accountId": "a-alice", "create": {"n": {"title": "t"}}})
        b.call("Note/changes", {"accountId": "a-alice", "sinceState": created.ref("/oldState")})
        reply = rs.call(b.build(), timeout=WAIT)
        assert len(reply.get("c1")["created"]) == 1  # a back-reference, over HTTP too
        assert next(note_changes(rs)) == fastmail_like.store.state("a-alice")
        with pytest.raises(jws.MethodError) as info:
            rs.call(_unknown_account(), timeout=WAIT).raise_for_errors()
        assert info.value.type == "accountNotFound"
        with pytest.raises(jws.RequestFailed):
            rs.call(jws.Request(using=["urn:x:nothing"], method_calls=[]), timeout=WAIT)
        assert fastmail_like.last_handshake() is None  # never a WebSocket


def test_send_request_over_http_answers_through_next_frame() -> None:
    with ReferenceServer(users=USERS, websocket=False) as server, session(server, push=False) as rs:
        rs.send_request(_echo(), id="r1", timeout=WAIT)
        frame = rs.next_frame(timeout=WAIT)
        assert isinstance(frame, jws.Response)
        assert frame.request_id == "r1"


def test_transport_http_can_be_asked_for_where_the_websocket_exists(
    server: ReferenceServer,
) -> None:
    with session(server, push=False, transport="http") as rs:
        rs.wait_connected(WAIT)
        assert rs.transport == "http"
        assert rs.call(_echo(), timeout=WAIT).get("c0") == {"x": 1}
    assert server.last_handshake() is None


def test_many_threads_share_the_http_pool_within_max_concurrent_requests() -> None:
    with ReferenceServer(users=USERS, websocket=False, max_concurrent_requests=2) as server:
        server.delay(0.02)
        with session(server, push=False) as rs:
            answers: list[jws.Response] = []
            errors: list[BaseException] = []

            def caller() -> None:
                try:
                    for _ in range(5):
                        answers.append(rs.call(_echo(), timeout=WAIT))
                except BaseException as exc:  # handed to the test thread
                    errors.append(exc)

            threads = [threading.Thread(target=caller) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
        assert not errors  # the server refuses a third at once: the pool never sent one
        assert len(answers) == 30


def test_a_server_restart_is_a_reconnect_over_http_too() -> None:
    first = ReferenceServer(users=USERS, websocket=False).start()
    rs = session(first, push=False)
    try:
        assert rs.call(_echo(), timeout=WAIT).get("c0") == {"x": 1}
        first.stop()
        again = ReferenceServer(
            users=USERS, websocket=False, store=first.store, port=first.port
        ).start()
        try:
            with pytest.raises(jws.ConnectionLost):  # the pooled connection was cut
                rs.call(_echo(), timeout=WAIT)
            assert rs.call(_echo(), timeout=WAIT).get("c0") == {"x": 1}
            assert rs.reconnects >= 1
        finally:
            again.stop()
    finally:
        rs.close(timeout=WAIT)
        first.stop()


def _unknown_account() -> jws.Request:
    return jws.Request(
        using=[jws.CORE, NOTES],
        method_calls=[jws.Invocation("Note/get", {"accountId": "a-nobody", "ids": []}, "c0")],
    )


def test_a_forgotten_session_pushing_over_the_eventsource_is_collected(
    server: ReferenceServer,
) -> None:
    """Neither the supervisor's thread nor the EventSource's keeps it alive; both end (the
    autouse fixture fails the test if a jmapws- thread is left)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        rs = session(server, push_via="eventsource")
        rs.wait_connected(WAIT)
        ref = weakref.ref(rs)
        del rs
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    del caught  # a recorded ResourceWarning holds its source
    gc.collect()
    assert ref() is None
    assert server.wait_for_event_streams(0, timeout=WAIT)
