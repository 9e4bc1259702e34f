"""Delivery guarantees under real use, compressed in time (issue 13).

A quiet listener over hours of keepalive, a server that pings slowly, a consumer that stops
reading, two consumers, a flood of pushes, malformed answers, a reconnect while frames are
being read, a close() during a stalled connection attempt, calls bounded by their timeout,
and Ctrl-C in the middle of a send. Each test fails on the code before the fix it backs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.testing import ReferenceServer

from .conftest import ALICE, USERS
from .support.faultservers import barrier, hang_up
from .support.rawws import BINARY, CLOSE, PING, Peer, RawServer, echo_requests, idle
from .support.threads import library_threads, wait_gone

ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {}, "e")])
FAST = jws.Backoff(first=(0.01, 0.02), factor=1.5, ceiling=0.1, reset_after=0.0)
WAIT = 10.0


def reconnecting(url: str, **options: Any) -> jws.ReconnectingSession:
    defaults: dict[str, Any] = {
        "auth": ALICE,
        "backoff": FAST,
        "rng": random.Random(1),
        "connect_timeout": WAIT,
        "close_timeout": 0.5,
    }
    return jws.ReconnectingSession(url, **{**defaults, **options})


def numbered(n: int) -> dict[str, Any]:
    """A frame no StateChange merges with: an extension's, numbered."""
    return {"@type": "X-Numbered", "n": n}


# -- 1. a quiet listener is not starved by keepalive ------------------------------------------


def test_hours_of_keepalive_never_starve_a_quiet_listener(server: ReferenceServer) -> None:
    """Keepalive every 5 ms for 3 s (the Pongs of hours at 20 s): no StarvationError."""
    with reconnecting(server.base_url, push=True, ping_interval=0.005, ping_timeout=2.0) as rs:
        rs.wait_connected(WAIT)
        threading.Event().wait(3.0)  # the scenario: nothing but keepalive for a while
        server.change_note("alice", title="at last")
        frame = rs.next_frame(timeout=WAIT)  # a StarvationError would be raised here
        assert isinstance(frame, jws.StateChange)
        assert rs.reconnects == 0
    assert server.pings_seen() > 200  # 200 Pongs: 67 minutes of keepalive at 20 s


def test_an_application_pinging_a_quiet_session_is_never_starved(server: ReferenceServer) -> None:
    """A WsSession the application pings every 10 ms for 3 s: its Pongs never count."""
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:
        ws.enable_push()
        ws.call(ECHO, timeout=5)
        pace = threading.Event()
        for n in range(300):
            ws.ping(b"app-%d" % n)
            pace.wait(0.01)  # the application's keepalive period, compressed
        server.change_note("alice", title="at last")
        assert isinstance(ws.next_frame(timeout=WAIT), jws.StateChange)


def slow_pinger(count: int, interval: float) -> Any:
    """A server that pings every ``interval`` seconds, ``count`` times, then says hello."""

    def handler(peer: Peer) -> None:
        stop = threading.Event()
        for i in range(count):
            peer.send_frame(PING, b"%d" % i)
            stop.wait(interval)  # the server's pace: the scenario, not a synchronisation
        peer.send_json(numbered(0))
        idle(peer)

    return handler


def test_a_server_pinging_every_20_ms_never_starves_a_plain_session() -> None:
    """150 Pings 20 ms apart (a server pinging every 30 s, for 75 minutes): no starvation."""
    with (
        RawServer(slow_pinger(150, 0.02)) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=0.5) as ws,
    ):
        frame = ws.next_frame(timeout=WAIT)
        assert isinstance(frame, jws.UnknownFrame)
        assert frame.raw == numbered(0)


def test_a_ping_burst_is_still_starvation() -> None:
    """65 data-less messages within a second still raise StarvationError, once; usable after."""
    with (
        RawServer(slow_pinger(65, 0.0)) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=0.5) as ws,
    ):
        with pytest.raises(jws.StarvationError):
            ws.next_frame(timeout=WAIT)
        assert isinstance(ws.next_frame(timeout=WAIT), jws.UnknownFrame)


# -- 2. changes() goes on past what the stream survives ------------------------------------


def test_changes_goes_on_past_binary_and_non_json_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A binary and a non-JSON message between two StateChanges: both changes, two warnings."""

    def handler(peer: Peer) -> None:
        peer.send_json({"@type": "StateChange", "changed": {"a": {"Email": "1"}}})
        peer.send_frame(BINARY, b"\x00")
        peer.send_text("not json")
        peer.send_json({"@type": "StateChange", "changed": {"a": {"Email": "2"}}})
        idle(peer)

    with (
        caplog.at_level(logging.WARNING, logger="jmapws_sync"),
        RawServer(handler) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=0.5) as ws,
    ):
        changes = ws.changes(timeout=WAIT)
        assert next(changes).changed == {"a": {"Email": "1"}}
        assert next(changes).changed == {"a": {"Email": "2"}}
    passed = [r.getMessage() for r in caplog.records if "passed over" in r.getMessage()]
    assert len(passed) == 2


# -- 3. order across a reconnect -----------------------------------------------------------------


def test_frames_keep_their_order_across_a_reconnect_noticed_by_a_call() -> None:
    """20,000 frames, the connection lost while they are read, a call notices it: in order."""
    first, total = 20_000, 20_100
    connections = iter(range(2))

    def handler(peer: Peer) -> None:
        if next(connections) == 0:
            frames = (peer.frame(0x1, json.dumps(numbered(n)).encode()) for n in range(first))
            peer.send_raw(b"".join(frames))
            hang_up(peer)  # FIN, no Close (a reset would discard what is still in flight)
            idle(peer)
            return
        for n in range(first, total):
            peer.send_json(numbered(n))
        echo_requests(peer)

    seen: list[int] = []
    with (
        RawServer(handler) as server,
        reconnecting(server.url, ping_interval=None, max_queue=0) as rs,
    ):
        done = threading.Event()

        def caller() -> None:
            while not done.is_set():
                with contextlib.suppress(jws.ConnectionLost, TimeoutError, jws.SessionClosed):
                    rs.call(ECHO, timeout=0.5)

        thread = threading.Thread(target=caller)
        thread.start()
        try:
            while len(seen) < total:
                frame = rs.next_frame(timeout=WAIT)
                if isinstance(frame, jws.UnknownFrame):
                    seen.append(frame.raw["n"])
                    sum(range(5000))  # the consumer works on each frame: many are unread
        finally:
            done.set()
            thread.join(WAIT)
    assert seen == list(range(total))


# -- 4. a slow consumer is not a dead peer, and loses nothing ----------------------------------


def test_a_slow_consumer_loses_nothing_and_is_not_declared_dead(server: ReferenceServer) -> None:
    """max_queue=10, 100 frames unread for 1 s, keepalive every 20 ms: all there, no reconnect."""
    with reconnecting(server.base_url, max_queue=10, ping_interval=0.02, ping_timeout=0.1) as rs:
        rs.wait_connected(WAIT)
        rs.send_request(ECHO, id="waited-for")
        for n in range(100):
            server.send_raw_text(json.dumps(numbered(n)))
        threading.Event().wait(1.0)  # the scenario: the application is busy elsewhere
        frames = [rs.next_frame(timeout=WAIT) for _ in range(101)]
        assert rs.reconnects == 0
    answers = [f for f in frames if isinstance(f, jws.Response)]
    assert [a.request_id for a in answers] == ["waited-for"]
    assert [f.raw["n"] for f in frames if isinstance(f, jws.UnknownFrame)] == list(range(100))


# -- 5. a flood of pushes neither fills the queue nor stalls call() ------------------------------


def test_ten_thousand_unread_pushes_merge_and_calls_go_on(server: ReferenceServer) -> None:
    """Nothing read while 10,000 changes are pushed: call()s from another thread go on and
    are answered, the pushes merge instead of queueing, and the last one has the final state.

    How long each call takes is not asserted: the reference server runs in this process,
    where it and this thread's 10,000 change_note() compete with the client for the GIL,
    and nearly all of a slow call's time is spent before the server's loop reads the
    request or while its answer waits behind the server's queued pushes. The latency of
    call() during a flood, the server in a process of its own, is a benchmark instead
    (benchmarks/bench/flood.py, "call() in a push flood" in BENCHMARKS.md).
    """
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:
        ws.enable_push()
        ws.call(ECHO, timeout=5)
        answered = 0
        failures: list[BaseException] = []
        calling, done = threading.Event(), threading.Event()

        def caller() -> None:
            nonlocal answered
            calling.set()
            while not done.is_set():
                try:
                    ws.call(ECHO, timeout=30)
                except (TimeoutError, jws.JmapWsError) as exc:
                    failures.append(exc)
                    return
                answered += 1

        thread = threading.Thread(target=caller)
        thread.start()
        try:
            assert calling.wait(WAIT)  # the first call starts before the flood does
            for n in range(10_000):
                server.change_note("alice", title=f"flood {n}")
            ws.call(ECHO, timeout=30)  # every push has been read by now
        finally:
            done.set()
            thread.join(40)  # a call in flight has up to 30 s
        assert not thread.is_alive()
        assert not failures
        assert answered > 0  # the calls made during the flood were answered
        assert ws.pending_frames < 10  # merged, not queued one by one
        last = None
        with contextlib.suppress(TimeoutError):
            while True:
                last = ws.next_frame(timeout=0)
        assert isinstance(last, jws.StateChange)
        account = server.account_id("alice")
        assert last.changed[account]["Note"] == server.store.state(account)
        assert last.push_state == server.store.push_state()


# -- 6. a malformed answer to a call is an error for that caller, at once ------------------------


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            {"@type": "RequestError", "type": "about:blank", "status": "429"},
            "status",
        ),
        ({"@type": "Response", "methodResponses": []}, "sessionState"),
    ],
)
def test_a_malformed_answer_fails_its_call_at_once(answer: dict[str, Any], words: str) -> None:
    """The answer names a pending call but does not fit: ParseError now, even with no timeout."""

    def handler(peer: Peer) -> None:
        for opcode, data in peer.messages():
            if opcode == CLOSE:
                return
            peer.send_json({**answer, "requestId": json.loads(data)["id"]})

    outcome: queue.Queue[BaseException | jws.Response] = queue.Queue()
    with (
        RawServer(handler) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=0.5) as ws,
    ):

        def call() -> None:
            try:
                outcome.put(ws.call(ECHO, timeout=None))
            except BaseException as exc:
                outcome.put(exc)

        threading.Thread(target=call, daemon=True).start()
        result = outcome.get(timeout=WAIT)
        assert isinstance(result, jws.ParseError), result
        assert words in str(result)
        assert ws.pending_frames == 0  # it did not go to the queue either


# -- 7. two consumers ----------------------------------------------------------------------------


def test_two_consumers_changes_and_next_frame_get_their_frames(server: ReferenceServer) -> None:
    """One thread in changes(), one doing send_request() + next_frame(): 20 of 20 answered."""
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:
        ws.enable_push()
        ws.call(ECHO, timeout=5)
        changes: list[jws.StateChange] = []
        stop = threading.Event()

        def listener() -> None:
            with contextlib.suppress(jws.SessionClosed, TimeoutError):
                for change in ws.changes(timeout=WAIT):
                    changes.append(change)
                    if stop.is_set():
                        return

        thread = threading.Thread(target=listener)
        thread.start()
        try:
            for k in range(20):
                server.change_note("alice", title=f"two {k}")
                ws.send_request(ECHO, id=f"k{k}")
                while True:  # StateChanges may come this way too: each frame to one consumer
                    frame = ws.next_frame(timeout=2)
                    if isinstance(frame, jws.Response):
                        assert frame.request_id == f"k{k}"
                        break
        finally:
            stop.set()
            server.change_note("alice", title="wake the listener")
            thread.join(WAIT)
        assert changes


# -- 8. push_state is what the application was handed -----------------------------------------


def test_push_state_is_that_of_the_last_change_handed_out() -> None:
    """Three unread frames (SC p1, X, SC p2): after taking the first, push_state is p1."""
    all_read = threading.Event()

    def handler(peer: Peer) -> None:
        peer.send_json({"@type": "StateChange", "changed": {}, "pushState": "p1"})
        peer.send_json(numbered(0))
        peer.send_json({"@type": "StateChange", "changed": {}, "pushState": "p2"})
        barrier(peer)  # the client's Pong: its reader has read all three
        all_read.set()
        idle(peer)

    with (
        RawServer(handler) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=0.5) as ws,
    ):
        assert all_read.wait(WAIT)  # else next_frame() may return p1 before p2 is read
        first = ws.next_frame(timeout=WAIT)
        assert isinstance(first, jws.StateChange)
        assert ws.push_state == "p1"  # p2 has arrived too, but nobody has handled it yet
        assert ws.received_push_state == "p2"
        assert isinstance(ws.next_frame(timeout=WAIT), jws.UnknownFrame)
        assert ws.push_state == "p1"
        assert next(ws.changes(timeout=WAIT)).push_state == "p2"
        assert ws.push_state == "p2"


# -- 9. what changes() passes over is bounded too ----------------------------------------------


def test_frames_changes_passes_over_count_toward_max_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """max_queue=10 and 1,000 frames before a StateChange: at most 10 held; nothing lost."""

    def handler(peer: Peer) -> None:
        for n in range(1000):
            peer.send_json(numbered(n))
        peer.send_json({"@type": "StateChange", "changed": {}, "pushState": "end"})
        idle(peer)

    with (
        caplog.at_level(logging.WARNING, logger="jmapws_sync"),
        RawServer(handler) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=0.5, max_queue=10) as ws,
    ):
        with pytest.raises(TimeoutError):
            next(ws.changes(timeout=0.5))  # the frames before it must be read first
        assert ws.pending_frames <= 10
        ns = [ws.next_frame(timeout=WAIT).raw["n"] for _ in range(1000)]  # type: ignore[union-attr]
        assert ns == list(range(1000))
        assert next(ws.changes(timeout=WAIT)).push_state == "end"
    assert any("reading paused" in r.getMessage() for r in caplog.records)


# -- 10. close() aborts a stalled connection attempt -------------------------------------------


@contextlib.contextmanager
def stalled_http() -> Iterator[str]:
    """An HTTP server that accepts and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        for sock in accepted:
            sock.close()


@pytest.mark.parametrize("stage", ["discovery", "handshake", "push barrier"])
def test_close_aborts_a_stalled_connection_attempt(stage: str, server: ReferenceServer) -> None:
    """close() during a stalled attempt returns within 0.5 s; a second later nothing is left."""
    with contextlib.ExitStack() as stack:
        if stage == "discovery":
            url = stack.enter_context(stalled_http())
        elif stage == "handshake":
            url = stack.enter_context(RawServer(idle, handshake=False)).url
        else:
            server.halt()  # handshakes complete, nothing is answered
            url = server.base_url
        rs = reconnecting(url, push=True, connect_timeout=30.0)
        with pytest.raises(TimeoutError):
            rs.wait_connected(timeout=0.5)  # the attempt is under way, and stuck
        start = time.monotonic()
        rs.close()
        assert time.monotonic() - start < 0.5
        left = wait_gone(library_threads(), timeout=1.0)
        assert not left, left
        if stage == "push barrier":
            server.resume()


# -- 11. call(timeout=T) bounds all it does -----------------------------------------------------


def test_a_session_refresh_does_not_hold_the_call(server: ReferenceServer) -> None:
    """A new sessionState while the Session resource is slow: call(timeout=1) is still quick."""
    with reconnecting(server.base_url, ping_interval=None, connect_timeout=8.0) as rs:
        rs.wait_connected(WAIT)
        server.delay_session(3.0)
        server.bump_session_state()
        start = time.monotonic()
        rs.call(ECHO, timeout=1.0)
        assert time.monotonic() - start < 1.0
        server.delay_session(0)
        fresh = rs.fresh_session(timeout=WAIT)
        assert fresh is not None
        assert fresh.state == server.session_state()


def slow_reader(peer: Peer) -> None:
    """Reads 64 bytes every 10 ms: a send to it always makes progress, and never ends."""
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stop = threading.Event()
    with contextlib.suppress(OSError):
        while peer.sock.recv(64):
            stop.wait(0.01)  # the fault: a slow server


def test_a_send_to_a_slow_reader_is_bounded_by_the_call_timeout() -> None:
    """A 16 MB request to a server reading 6 KB/s: call(timeout=2) ends within 2.5 s."""
    big = jws.Request(
        using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"pad": "x" * 16_000_000}, "c")]
    )
    with (
        RawServer(slow_reader) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=0.5) as ws,
    ):
        start = time.monotonic()
        with pytest.raises((jws.TransportError, TimeoutError)):
            ws.call(big, timeout=2.0)
        assert time.monotonic() - start < 2.5
        assert ws.closed  # half a frame went out: the connection cannot be used


# -- 12. a slot is held until the server is done with the request ------------------------------


def test_a_timed_out_call_holds_its_slot_until_its_late_answer(server: ReferenceServer) -> None:
    """maxConcurrentRequests=2, two calls time out: the third waits and succeeds, no limit error."""
    with ReferenceServer(users=USERS, max_concurrent_requests=2) as limited:
        limited.delay(0.5)
        with jws.connect(limited.base_url, auth=ALICE, timeout=5) as ws:
            for _ in range(2):
                with pytest.raises(TimeoutError):
                    ws.call(ECHO, timeout=0.1)
            assert isinstance(ws.call(ECHO, timeout=5), jws.Response)
            assert ws.late_answers == 2


# -- 13. Ctrl-C in the middle of a send ------------------------------------------------------------


def test_an_interrupted_send_ends_the_connection_instead_of_corrupting_it() -> None:
    """KeyboardInterrupt during an 8 MB send: the session ends; nothing else is sent into it."""
    with RawServer(slow_reader) as server:
        ws = jws.WsSession.open(server.url, timeout=5, close_timeout=0.5)

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                ws.send_text("x" * 8_000_000)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        with pytest.raises(jws.TransportError, match="interrupted"):
            ws.next_frame(timeout=WAIT)
        with pytest.raises(jws.SessionClosed):
            ws.send_request(ECHO)
        ws.close()


# -- what a reconnect's push_resumed means ---------------------------------------------------


def test_push_resumed_is_false_when_the_server_never_sends_a_push_state() -> None:
    """A server without pushState: push_resumed is False, so the application fetches /changes."""
    with ReferenceServer(users=USERS, sends_push_state=False) as srv:
        infos: queue.Queue[jws.ReconnectInfo] = queue.Queue()
        with reconnecting(srv.base_url, push=True, on_reconnect=infos.put) as rs:
            rs.wait_connected(WAIT)
            srv.change_note("alice", title="one")
            assert next(rs.changes(timeout=WAIT)).push_state is None
            srv.reset_all()
            assert srv.wait_for_connections(0, timeout=WAIT)
            for _ in range(20):  # until the new connection is up (and push is on again)
                with contextlib.suppress(jws.ConnectionLost):
                    rs.call(ECHO, timeout=WAIT)
                    break
            srv.change_note("alice", title="two")
            next(rs.changes(timeout=WAIT))
            info = infos.get(timeout=WAIT)
    assert (info.push_resumed, info.push_state) == (False, None)


def test_push_resumed_only_says_a_replay_was_asked_for() -> None:
    """A server that ignores pushState: push_resumed is True (asked), yet nothing is replayed."""
    with ReferenceServer(users=USERS, replays=False) as srv:
        infos: queue.Queue[jws.ReconnectInfo] = queue.Queue()
        with reconnecting(srv.base_url, push=True, on_reconnect=infos.put) as rs:
            rs.wait_connected(WAIT)
            srv.change_note("alice", title="one")
            next(rs.changes(timeout=WAIT))
            srv.halt()
            srv.change_note("alice", title="missed")  # made while the connection is dead
            srv.reset_all()
            srv.resume()
            for _ in range(20):  # the reset may not have been noticed yet: ConnectionLost
                with contextlib.suppress(jws.ConnectionLost):
                    rs.send_request(ECHO, id="after", timeout=WAIT)
                    break
            frames = [rs.next_frame(timeout=WAIT)]
            while not isinstance(frames[-1], jws.Response):
                frames.append(rs.next_frame(timeout=WAIT))
            info = infos.get(timeout=WAIT)
    assert info.push_resumed
    assert not [f for f in frames if isinstance(f, jws.StateChange)]  # no replay came
