"""ReconnectingSession on the loopback reference server: backoff, retries, keepalive, resume."""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.reconnect import (
    Backoff,
    ConnectionLost,
    KeepaliveTimeout,
    ReconnectInfo,
    ReconnectingSession,
)
from jmapws_sync.testing import NOTES, ReferenceServer

from .support.threads import library_threads, wait_gone

ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"x": 1}, "c0")])
#: Quick retries for tests: a few milliseconds, reset as soon as a connection is up.
FAST = Backoff(first=(0.005, 0.02), factor=2.0, ceiling=0.1, jitter=0.2, reset_after=0.0)
WAIT = 5.0  # the bound of every wait in this module


@pytest.fixture
def server() -> Iterator[ReferenceServer]:
    """A reference server with one user, alice, by password and by token."""
    with ReferenceServer(users={"alice": "secret"}, tokens={"t1": "alice"}) as srv:
        yield srv


@contextlib.contextmanager
def reconnecting(url: str, **options: Any) -> Iterator[ReconnectingSession]:
    """A ReconnectingSession with test defaults; on the way out, its thread must be gone."""
    defaults: dict[str, Any] = {
        "auth": jws.BasicAuth("alice", "secret"),
        "backoff": FAST,
        "rng": random.Random(1),
        "ping_interval": None,
        "connect_timeout": WAIT,
        "close_timeout": 0.5,
    }
    rs = ReconnectingSession(url, **{**defaults, **options})
    try:
        yield rs
    finally:
        rs.close()
        left = wait_gone(library_threads("jmapws-reconnect"), timeout=0.0)
        assert not left, left


class Reader:
    """Reads ``rs.next_frame()`` in a thread; frames, reconnects and the end go to ``events``.

    Pass ``reader.on_reconnect`` as the session's ``on_reconnect`` so that reconnects show
    up in ``events`` exactly where they happen in the frame stream.
    """

    def __init__(self) -> None:
        self.events: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None

    def on_reconnect(self, info: ReconnectInfo) -> None:
        self.events.put(info)

    def start(self, rs: ReconnectingSession) -> Reader:
        def run() -> None:
            try:
                while True:
                    self.events.put(rs.next_frame(timeout=30))
            except BaseException as exc:
                self.events.put(exc)

        self._thread = threading.Thread(target=run, name="test-reader", daemon=True)
        self._thread.start()
        return self

    def next(self) -> object:
        return self.events.get(timeout=WAIT)

    def next_of(self, kind: type[Any]) -> Any:
        """The next event of ``kind``; every other event met on the way is a failure."""
        event = self.next()
        assert isinstance(event, kind), event
        return event

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(WAIT)
        assert not self._thread.is_alive()


class CountingAuth:
    """An auth callable that hands out ``tokens`` in turn (the last one forever) and counts."""

    def __init__(self, *tokens: str) -> None:
        self._tokens = tokens
        self.calls = 0
        self._cond = threading.Condition()

    def __call__(self) -> Mapping[str, str]:
        with self._cond:
            token = self._tokens[min(self.calls, len(self._tokens) - 1)]
            self.calls += 1
            self._cond.notify_all()
        return {"Authorization": f"Bearer {token}"}

    def wait_calls(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.calls >= n, WAIT), self.calls


class SignallingRandom(random.Random):
    """A seeded random source that says when the backoff draws its first delay."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.drawn = threading.Event()

    def uniform(self, a: float, b: float) -> float:
        self.drawn.set()
        return super().uniform(a, b)


def call_through(rs: ReconnectingSession, request: jws.Request = ECHO) -> jws.Response:
    """call(), again after each ConnectionLost (the old connection was not noticed dead yet)."""
    for _ in range(20):
        with contextlib.suppress(ConnectionLost):
            return rs.call(request, timeout=WAIT)
    raise AssertionError("no successful call in 20 tries")


def note_changes(srv: ReferenceServer) -> tuple[str, str]:
    """alice's current Note state and the store's pushState."""
    return srv.store.state(srv.account_id("alice")), srv.store.push_state()


def test_invalid_url_is_refused() -> None:
    """Only http(s) and ws(s) URLs are accepted, and nothing is started for others."""
    with pytest.raises(ValueError, match="URL"):
        ReconnectingSession("ftp://127.0.0.1/")


# -- restart, resume, order -----------------------------------------------------------------


def test_listener_survives_server_restart_and_gets_changes_made_while_down(
    server: ReferenceServer,
) -> None:
    """Server stopped and started on the same port: missed changes arrive, replayed by pushState."""
    reader = Reader()
    with reconnecting(server.base_url, push=True, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        reader.start(rs)
        server.change_note("alice", title="before")
        first = reader.next_of(jws.StateChange)
        assert first.push_state == server.store.push_state()
        port = server.port

        server.stop()
        note = server.change_note("alice", title="while down")
        server.change_note("alice", note, body="still down")
        state, push_state = note_changes(server)
        server.start()
        assert server.port == port

        info = reader.next_of(ReconnectInfo)
        assert info.cause is None
        assert info.close_code == 1001
        assert info.push_resumed
        assert info.push_state == first.push_state
        replay = reader.next_of(jws.StateChange)
        assert replay.changed == {"a-alice": {"Note": state}}
        assert replay.push_state == push_state
        assert rs.reconnects == 1
        assert rs.last_reconnect is info
        server.change_note("alice", title="after")
        assert reader.next_of(jws.StateChange).push_state == server.store.push_state()
    assert isinstance(reader.next(), jws.SessionClosed)
    reader.join()


def test_frames_received_before_a_break_come_before_on_reconnect(server: ReferenceServer) -> None:
    """Unread frames of a broken connection come first, then the reconnect, then new ones."""
    reader = Reader()
    with reconnecting(server.ws_url, push=True, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        rs.call(ECHO, timeout=WAIT)  # the server has handled the push enable before this answer
        for i in range(3):
            server.change_note("alice", title=f"n{i}")
        rs.call(ECHO, timeout=WAIT)  # its answer comes after the three pushes: they are queued
        server.close_all(1012)  # service restart
        reader.start(rs)
        old = reader.next_of(jws.StateChange)  # the three unread ones, merged
        assert old.push_state == "p3"
        assert old.changed == {"a-alice": {"Note": "s3"}}
        info = reader.next_of(ReconnectInfo)
        assert isinstance(info.cause, jws.ConnectionClosedError)
        assert info.cause.code == 1012
        assert info.push_state == "p3"
        server.change_note("alice", title="new")
        assert reader.next_of(jws.StateChange).push_state == "p4"


def test_push_state_given_at_start_replays_what_changed_since(server: ReferenceServer) -> None:
    """push_state= resumes from a token saved by an earlier run (RFC 8887 §4.3.5.2)."""
    server.change_note("alice", title="seen")
    saved = server.store.push_state()
    server.change_note("alice", title="missed")
    state, current = note_changes(server)
    with reconnecting(server.ws_url, push=True, push_state=saved) as rs:
        change = next(rs.changes(timeout=WAIT))
        assert change.changed == {"a-alice": {"Note": state}}
        assert change.push_state == current == rs.push_state


def test_push_enabled_later_is_enabled_again_after_a_reconnect(server: ReferenceServer) -> None:
    """enable_push() on a running session is remembered for the next connections."""
    reader = Reader()
    with reconnecting(server.ws_url, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        rs.enable_push(["Note"])
        reader.start(rs)
        rs.call(ECHO, timeout=WAIT)  # the server has handled the enable before this answer
        server.change_note("alice", title="one")
        assert reader.next_of(jws.StateChange).push_state == "p1"
        server.close_all(1011)
        info = reader.next_of(ReconnectInfo)
        assert info.push_resumed
        assert info.push_state == "p1"
        server.change_note("alice", title="two")
        assert reader.next_of(jws.StateChange).push_state == "p2"


def test_server_clean_close_is_followed_by_a_reconnect(server: ReferenceServer) -> None:
    """A server's 1000 does not end a long-lived session: it reconnects."""
    reader = Reader()
    with reconnecting(server.ws_url, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        reader.start(rs)
        server.close_all(1000)
        info = reader.next_of(ReconnectInfo)
        assert info.cause is None
        assert info.close_code == 1000
        assert not info.push_resumed
        assert info.push_state is None
        assert call_through(rs).method_responses[0].arguments == {"x": 1}


def test_changes_sets_other_frames_aside_for_next_frame(server: ReferenceServer) -> None:
    """changes() yields StateChange only; a Response met on the way waits for next_frame()."""
    with reconnecting(server.ws_url, push=True) as rs:
        rs.send_request(ECHO, id="r1", timeout=WAIT)
        rs.call(ECHO, timeout=WAIT)  # r1's answer is queued now
        server.change_note("alice", title="x")
        change = next(rs.changes(timeout=WAIT))
        assert isinstance(change, jws.StateChange)
        answer = rs.next_frame(timeout=WAIT)
        assert isinstance(answer, jws.Response)
        assert answer.request_id == "r1"


# -- calls in flight, Session resource --------------------------------------------------------


def test_call_in_flight_fails_with_connection_lost_and_is_not_resent(
    server: ReferenceServer,
) -> None:
    """A call whose connection breaks raises ConnectionLost; the request is not sent again."""
    ran = threading.Event()
    unsubscribe = server.store.subscribe(lambda changed, push_state: ran.set())
    account = server.account_id("alice")
    create = jws.Request(
        using=[jws.CORE, NOTES],
        method_calls=[
            jws.Invocation("Note/set", {"accountId": account, "create": {"k": {}}}, "c0")
        ],
    )
    outcome: queue.Queue[BaseException | jws.Response] = queue.Queue()

    def worker(rs: ReconnectingSession) -> None:
        try:
            outcome.put(rs.call(create, timeout=WAIT))
        except BaseException as exc:
            outcome.put(exc)

    try:
        with reconnecting(server.ws_url) as rs:
            rs.wait_connected(WAIT)
            server.drop_requests(True)  # it runs, but the answer is "lost on the way"
            thread = threading.Thread(target=worker, args=(rs,), daemon=True)
            thread.start()
            assert ran.wait(WAIT)
            server.drop_requests(False)
            server.reset_all()
            error = outcome.get(timeout=WAIT)
            thread.join(WAIT)
            assert isinstance(error, ConnectionLost)
            assert isinstance(error.__cause__, jws.TransportError)
            assert "not re-sent" in str(error)
            call_through(rs)
            assert server.requests_seen() == 2  # the Note/set once, the echo once
            assert len(server.store.notes(account)) == 1
    finally:
        unsubscribe()


def test_session_resource_is_fetched_again_when_session_state_changes(
    server: ReferenceServer,
) -> None:
    """A Response whose sessionState differs from the resource's state refreshes it."""
    with reconnecting(server.base_url) as rs:
        rs.wait_connected(WAIT)
        assert rs.session is not None
        assert rs.session.state == server.session_state()
        new_state = server.bump_session_state()
        response = rs.call(ECHO, timeout=WAIT)
        assert response.session_state == new_state
        fresh = rs.fresh_session(timeout=WAIT)
        assert fresh is not None
        assert fresh.state == new_state
        assert rs.session is fresh


def test_ws_url_connects_without_discovery(server: ReferenceServer) -> None:
    """A ws:// URL is used as it is: no Session resource, calls work."""
    with reconnecting(server.ws_url) as rs:
        assert rs.call(ECHO, timeout=WAIT).method_responses[0].name == "Core/echo"
        assert rs.session is None
        assert rs.connected
        assert "connected" in repr(rs)
        assert "secret" not in repr(rs)


# -- what is not retried ----------------------------------------------------------------------


def test_close_1008_is_not_retried_with_the_same_credentials(server: ReferenceServer) -> None:
    """Close 1008 with BasicAuth: no new handshake; the consumer gets AuthenticationError."""
    reader = Reader()
    with reconnecting(server.ws_url, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        handshake = server.last_handshake()
        reader.start(rs)
        server.close_all(1008, "credentials expired")
        error = reader.next_of(jws.AuthenticationError)
        assert error.close_code == 1008
        reader.join()
        assert server.last_handshake() is handshake  # never tried again
        assert server.connection_count() == 0
        with pytest.raises(jws.AuthenticationError):
            rs.wait_connected(WAIT)
        with pytest.raises(jws.AuthenticationError):
            rs.call(ECHO, timeout=WAIT)
        with pytest.raises(jws.SessionClosed) as closed:
            rs.next_frame(timeout=WAIT)
        assert closed.value.cause is error
        assert rs.closed
        assert rs.reconnects == 0


def test_close_1008_retries_once_with_fresh_credentials(server: ReferenceServer) -> None:
    """A callable auth that returns a new token after 1008 gets one immediate retry, which works."""
    server.set_token("t2", "alice")
    auth = CountingAuth("t1", "t2")
    reader = Reader()
    with reconnecting(server.ws_url, auth=auth, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        reader.start(rs)
        server.set_token("t1", None)
        server.close_all(1008)
        info = reader.next_of(ReconnectInfo)
        assert isinstance(info.cause, jws.AuthenticationError)
        assert info.attempts == 1
        assert auth.calls == 2  # the first connect, then the fresh credentials
        assert call_through(rs).session_state


def test_fresh_credentials_refused_too_is_fatal(server: ReferenceServer) -> None:
    """When the fresh credentials are refused as well, the session gives up with 401."""
    auth = CountingAuth("t1", "revoked")
    reader = Reader()
    with reconnecting(server.ws_url, auth=auth, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        reader.start(rs)
        server.close_all(1008)
        error = reader.next_of(jws.AuthenticationError)
        assert error.status == 401
        handshake = server.last_handshake()
        assert handshake is not None
        assert handshake.status == 401
        assert auth.calls == 2
        reader.join()


def test_bad_credentials_at_first_connect_are_fatal(server: ReferenceServer) -> None:
    """Wrong password at discovery: wait_connected() raises AuthenticationError, no retries."""
    auth = jws.BasicAuth("alice", "wrong")
    with reconnecting(server.base_url, auth=auth) as rs:
        with pytest.raises(jws.AuthenticationError) as refused:
            rs.wait_connected(WAIT)
        assert refused.value.status == 401
        assert "wrong" not in str(refused.value)


def test_fatal_close_code_ends_the_session(server: ReferenceServer) -> None:
    """Close 1002 (we broke the protocol, says the server) is not retried."""
    reader = Reader()
    with reconnecting(server.ws_url, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        reader.start(rs)
        server.close_all(1002)
        assert reader.next_of(jws.ConnectionClosedError).code == 1002
        reader.join()
        with pytest.raises(jws.ConnectionClosedError):
            rs.wait_connected(WAIT)


def test_handshake_5xx_is_retried_with_backoff(server: ReferenceServer) -> None:
    """503 answers to the upgrade are retried until the server accepts again."""
    auth = CountingAuth("t1")
    reader = Reader()
    with reconnecting(server.ws_url, auth=auth, on_reconnect=reader.on_reconnect) as rs:
        rs.wait_connected(WAIT)
        reader.start(rs)
        server.fail_handshake(503)
        server.close_all(1013)
        auth.wait_calls(4)  # the first connect, two refused attempts, and a third begins
        server.fail_handshake(None)
        info = reader.next_of(ReconnectInfo)
        assert info.attempts >= 3
        assert isinstance(info.cause, jws.ConnectionClosedError)
        assert info.cause.code == 1013


# -- keepalive, close, threads -----------------------------------------------------------------


def test_half_open_connection_is_detected_within_the_keepalive_timeout(
    server: ReferenceServer,
) -> None:
    """A server that stops answering is declared dead within ping_interval + ping_timeout."""
    interval, timeout = 0.2, 0.3
    reader = Reader()
    with reconnecting(
        server.ws_url,
        ping_interval=interval,
        ping_timeout=timeout,
        on_reconnect=reader.on_reconnect,
    ) as rs:
        rs.wait_connected(WAIT)
        reader.start(rs)
        halted_at = time.monotonic()
        server.halt()
        info = reader.next_of(ReconnectInfo)  # the replacement is halted too, but it is up
        server.resume()
        detection = info.disconnected_at - halted_at
        assert isinstance(info.cause, KeepaliveTimeout)
        silent = info.cause.silent_for
        print(
            f"\ndead peer detected {detection:.3f} s after halt() "
            f"(silent for {silent:.3f} s; ping_interval={interval}, ping_timeout={timeout})"
        )
        assert timeout <= silent <= interval + timeout + 0.25
        assert detection <= interval + timeout + 0.25
        assert call_through(rs).session_state


def test_close_during_backoff_returns_at_once(server: ReferenceServer) -> None:
    """close() while the session waits 30 s before retrying returns at once, waking waiters."""
    rng = SignallingRandom(3)
    server.fail_handshake(503)
    slow = Backoff(first=(30.0, 30.0), ceiling=30.0)
    with reconnecting(server.ws_url, backoff=slow, rng=rng) as rs:
        assert rng.drawn.wait(WAIT)  # the first attempt failed; the 30 s wait begins
        waiter: queue.Queue[BaseException | None] = queue.Queue()

        def wait() -> None:
            try:
                rs.wait_connected(WAIT)
                waiter.put(None)
            except BaseException as exc:
                waiter.put(exc)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        started = time.monotonic()
        rs.close()
        elapsed = time.monotonic() - started
        assert elapsed < 0.2, elapsed
        assert not wait_gone(library_threads("jmapws-reconnect"), timeout=0.0)
        assert isinstance(waiter.get(timeout=WAIT), jws.SessionClosed)
        thread.join(WAIT)
        rs.close()  # idempotent


def test_no_threads_leaked_after_100_reconnect_cycles(server: ReferenceServer) -> None:
    """100 connection resets and reconnects (with discovery) leave no thread behind."""
    before = set(threading.enumerate())
    with reconnecting(server.base_url, ping_interval=5.0) as rs:
        call_through(rs)
        for cycle in range(1, 101):
            server.reset_all()
            call_through(rs)
            assert rs.reconnects == cycle
            readers = [t for t in threading.enumerate() if t.name.startswith("jmapws-reader")]
            assert len(readers) <= 2, readers
    for thread in set(threading.enumerate()) - before:
        thread.join(WAIT)  # threads that are just finishing (timers of the discovery fetch)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
