"""The eight defects of issue 21, each in the scenario an outside attacker (or an unlucky
deployment) would create, against real sockets on 127.0.0.1; each failed before its fix.

1. credentials sent to an origin that discovery had refused them to;
2. a reconnect storm after close 1008 with an ``auth`` that mints fresh headers;
3. a send blocked on a peer that stopped reading hid the dead peer from the keepalive;
4. large finite timeouts raised OverflowError (or killed the supervisor);
5. a message in tiny fragments took ~56 bytes of heap per payload byte;
6. compressed messages after one ending in a BFINAL block were lost;
7. Retry-After on 429/503 was ignored by the reconnect backoff;
8. reconnect markers piled up in the inbox of a call-only ReconnectingSession.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import gc
import json
import random
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync import policy
from jmapws_sync._connection import Connection
from jmapws_sync._deflate import Inflater, Params
from jmapws_sync._framing import FrameReader
from jmapws_sync.errors import retry_after
from jmapws_sync.policy import Backoff
from jmapws_sync.testing import ReferenceServer

from .conftest import ALICE as USER_AUTH
from .support.httpfixtures import HttpServer, Reply, Seen, json_reply, redirect, session_body
from .support.rawws import (
    CLOSE,
    CONT,
    TEXT,
    Peer,
    RawServer,
    echo_requests,
    idle,
    server_frame,
)

PASSWORD = "pw-4b1e-attack-SECRET"
ALICE = jws.BasicAuth("alice", PASSWORD)
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {}, "c0")])
WAIT = 30.0  # generous: a loaded 2-core machine stretches every wait
FAST = Backoff(first=(0.01, 0.02), factor=2.0, ceiling=0.1, jitter=0.2, reset_after=60.0)


def _ws_session(port: int) -> dict[str, Any]:
    """A Session resource whose WebSocket is ws://127.0.0.1:port/jmap/ws."""
    body = session_body()
    body["capabilities"]["urn:ietf:params:jmap:websocket"] = {
        "url": f"ws://127.0.0.1:{port}/jmap/ws",
        "supportsPush": True,
    }
    return body


# -- 1. credentials never reach an origin the user did not name ---------------------------


@contextlib.contextmanager
def _elsewhere() -> Iterator[tuple[HttpServer, RawServer]]:
    """A (the origin the user names) redirects discovery to B (another port), which
    serves the Session resource without asking for credentials and advertises
    ws://B/jmap/ws: the WebSocket is on B's origin."""
    with RawServer(echo_requests) as b:
        b.routes["/jmap/session"] = _ws_session(b.port)
        with HttpServer(
            {"/.well-known/jmap": redirect(f"http://127.0.0.1:{b.port}/jmap/session")}
        ) as a:
            yield a, b


def test_1_credentials_are_not_sent_in_the_handshake_to_another_origin() -> None:
    with _elsewhere() as (a, b), jws.connect(a.origin, auth=ALICE, timeout=WAIT) as ws:
        ws.call(ECHO, timeout=WAIT)
    assert a.requests[0].headers["authorization"] == BASIC  # the origin the user named
    assert [path for path, _ in b.requests] == ["/jmap/session", "/jmap/ws"]
    for _, headers in b.requests:
        assert "authorization" not in headers
        assert PASSWORD not in json.dumps(headers)


def test_1_a_reconnecting_session_withholds_them_too() -> None:
    with _elsewhere() as (a, b), jws.ReconnectingSession(a.origin, auth=ALICE) as rs:
        rs.call(ECHO, timeout=WAIT)
    assert b.requests
    assert all("authorization" not in headers for _, headers in b.requests)


def test_1_a_refusal_there_says_why_no_credentials_were_sent() -> None:
    with RawServer(idle, status=401) as b:
        b.routes["/jmap/session"] = _ws_session(b.port)
        target = f"http://127.0.0.1:{b.port}/jmap/session"
        with HttpServer({"/jmap/session": Reply(200)}) as a:
            a.routes["/.well-known/jmap"] = redirect(target)
            with pytest.raises(jws.AuthenticationError, match="another origin") as info:
                jws.connect(a.origin, auth=ALICE, timeout=WAIT)
    assert PASSWORD not in str(info.value)
    assert all("authorization" not in headers for _, headers in b.requests)


def test_1_the_same_origin_still_gets_them() -> None:
    """The WebSocket on the origin the user named (ws:// counts as http://) gets them."""
    with RawServer(echo_requests) as b:
        b.routes["/.well-known/jmap"] = _ws_session(b.port)
        with jws.connect(f"http://127.0.0.1:{b.port}", auth=ALICE, timeout=WAIT) as ws:
            ws.call(ECHO, timeout=WAIT)
    assert [headers.get("authorization") for _, headers in b.requests] == [BASIC, BASIC]


def test_1_a_session_resource_the_named_origin_serves_vouches_for_its_websocket() -> None:
    """RFC 8620 clients follow the URLs their server's Session resource names: when the
    origin the user named (which got the credentials) serves it, its WebSocket elsewhere
    gets them too. Only a resource reached through a cross-origin redirect is not trusted."""
    with RawServer(echo_requests) as b, HttpServer({"/.well-known/jmap": Reply(200)}) as a:
        a.routes["/.well-known/jmap"] = json_reply(_ws_session(b.port))
        with jws.connect(a.origin, auth=ALICE, timeout=WAIT) as ws:
            ws.call(ECHO, timeout=WAIT)
    assert [headers.get("authorization") for _, headers in b.requests] == [BASIC]


# -- 2. close 1008 after every handshake: one try with fresh credentials, no storm ----------


def _expire_at_once(peer: Peer) -> None:
    """Accept the handshake, then close at once with 1008 (credentials expired)."""
    peer.send_close(1008, "expired")
    for opcode, _ in peer.messages():
        if opcode == CLOSE:
            return


class Minting:
    """An ``auth`` callable that mints a new token at every call, as a token refresher."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        return {"Authorization": f"Bearer token-{self.calls}"}


def test_2_close_1008_after_each_handshake_is_not_a_reconnect_storm() -> None:
    auth = Minting()
    with RawServer(_expire_at_once) as server:
        rs = jws.ReconnectingSession(server.url, auth=auth, backoff=FAST, ping_interval=None)
        try:
            with pytest.raises(jws.AuthenticationError) as info:
                rs.next_frame(timeout=WAIT)  # the stream ends with the reason it gave up
        finally:
            rs.close(timeout=WAIT)
    assert info.value.close_code == 1008
    assert server.peers.qsize() == 2  # the first credentials, then fresh ones once
    assert auth.calls == 2


# -- 3. a send to a peer that stopped reading does not hide it from the keepalive ---------


def test_3_a_peer_that_stops_reading_during_a_large_send_is_found_dead() -> None:
    """The first peer reads nothing after the handshake: a 24 MiB request fills the socket
    buffers and its send blocks holding the send lock. The keepalive must not wait on that
    lock: the peer is declared dead and a new connection made, and the blocked caller is
    released with an error."""
    release = threading.Event()
    peers = 0

    def handler(peer: Peer) -> None:
        nonlocal peers
        peers += 1
        if peers == 1:
            release.wait(WAIT)  # stop reading; the client's send fills the buffers
            return
        idle(peer)

    big = jws.Request(
        using=[jws.CORE],
        method_calls=[jws.Invocation("Core/echo", {"blob": "x" * (24 << 20)}, "c0")],
    )
    outcome: list[BaseException | None] = []
    with RawServer(handler) as server:
        rs = jws.ReconnectingSession(
            server.url, backoff=FAST, ping_interval=0.2, ping_timeout=0.5, compression=None
        )
        try:
            rs.wait_connected(timeout=WAIT)

            def send_big() -> None:
                try:
                    rs.call(big, timeout=None)
                except (jws.JmapWsError, TimeoutError) as exc:
                    outcome.append(exc)
                else:
                    outcome.append(None)

            sender = threading.Thread(target=send_big, daemon=True)
            sender.start()
            server.next_peer(timeout=WAIT)  # the first
            second = server.next_peer(timeout=WAIT)  # the reconnect: the dead peer was found
            assert second is not None
            sender.join(WAIT)
            assert not sender.is_alive()  # the caller stuck in the send was released
        finally:
            release.set()
            rs.close(timeout=WAIT)
    assert outcome
    assert isinstance(outcome[0], jws.TransportError)


# -- 4. any finite non-negative timeout works ---------------------------------------------

HUGE = [1e10, 1e300]  # above threading.TIMEOUT_MAX: OverflowError from the platform's waits


@pytest.mark.parametrize("huge", HUGE)
def test_4_huge_timeouts_work_on_a_session(server: ReferenceServer, huge: float) -> None:
    resource = jws.fetch_session(server.base_url, auth=USER_AUTH, timeout=huge)
    assert resource.websocket is not None
    ws = jws.connect(server.base_url, auth=USER_AUTH, timeout=huge)
    ws.enable_push()
    ws.call(ECHO, timeout=huge)
    server.change_note("alice", title="one")
    assert isinstance(ws.next_frame(timeout=huge), jws.StateChange)
    server.change_note("alice", title="two")
    assert next(ws.changes(timeout=huge)).changed
    ws.close(timeout=huge)
    assert ws.closed


@pytest.mark.parametrize("huge", HUGE)
def test_4_huge_timeouts_and_keepalive_work_on_a_reconnecting_session(
    server: ReferenceServer, huge: float
) -> None:
    rs = jws.ReconnectingSession(
        server.base_url,
        auth=USER_AUTH,
        push=True,
        ping_interval=huge,
        ping_timeout=huge,
        connect_timeout=huge,
        close_timeout=huge,
    )
    try:
        rs.wait_connected(timeout=huge)
        for _ in range(3):  # the supervisor died at its first keepalive wait, before
            rs.call(ECHO, timeout=huge)
        server.change_note("alice", title="three")
        assert isinstance(rs.next_frame(timeout=huge), jws.StateChange)
        assert rs.fresh_session(timeout=huge) is not None
    finally:
        rs.close(timeout=huge)


def test_4_a_huge_backoff_delay_waits_instead_of_killing_the_supervisor() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed when the block ends: connections refused
    endless = Backoff(first=(1e10, 1e10), ceiling=1e10)
    rs = jws.ReconnectingSession(f"ws://127.0.0.1:{port}/jmap/ws", backoff=endless)
    try:
        with pytest.raises(TimeoutError):  # before the fix: TransportError, supervisor failed
            rs.wait_connected(timeout=3)
    finally:
        rs.close(timeout=WAIT)


# -- 5. a message in tiny fragments costs about its size, not 56 times it ------------------


def _one_byte_fragments(size: int) -> Iterator[bytes]:
    """The reads a FrameReader makes of a ``size``-byte text message in 1-byte frames."""
    yield b"\x01\x01"  # TEXT, not final, 1 byte
    yield b"a"
    for _ in range(size - 2):
        yield b"\x00\x01"  # CONT, not final
        yield b"a"
    yield b"\x80\x01"  # CONT, final
    yield b"a"


def test_5_a_message_in_one_byte_fragments_is_reassembled_in_bounded_memory() -> None:
    size = 512 * 1024
    chunks = _one_byte_fragments(size)
    reader = FrameReader(lambda n: next(chunks), max_message_size=size)
    tracemalloc.start()
    try:
        opcode, message = reader.read()
        while opcode == CONT:
            opcode, message = reader.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == "a" * size
    assert peak < 4 * size  # one list item per fragment was ~56 bytes per payload byte


def test_5_over_a_socket_too() -> None:
    size = 256 * 1024
    payload = json.dumps({"@type": "X-Big", "p": "a" * (size - 30)}).encode()
    data = b"".join(  # built before measuring
        [b"\x01\x01" + payload[:1]]
        + [b"\x00\x01" + payload[i : i + 1] for i in range(1, len(payload) - 1)]
        + [b"\x80\x01" + payload[-1:]]
    )

    def handler(peer: Peer) -> None:
        peer.send_raw(data)
        idle(peer)

    with RawServer(handler) as server:
        tracemalloc.start()
        try:
            ws = jws.WsSession.open(server.url, timeout=WAIT, max_message_size=size)
            try:
                frame = ws.next_frame(timeout=WAIT)
            finally:
                ws.close(timeout=WAIT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(frame, jws.UnknownFrame)
    assert frame.raw["p"] == "a" * (size - 30)
    assert peak < 8 * size


# -- 6. messages that end with a BFINAL block: every one read, the window kept -------------

HELLO_BFINAL = bytes.fromhex("f348cdc9c90700")  # RFC 7692 §7.2.3.4: "Hello", BFINAL set
HELLO_BFINAL += b"\x00"  # ... and the empty stored block's header that follows it there


def _bfinal_messages(texts: list[str], bits: int = 12) -> list[bytes]:
    """Each text compressed as its own finished DEFLATE stream (BFINAL) whose window starts
    with what the messages before it inflated to: context takeover across stream ends."""
    window = 1 << bits
    history = b""
    payloads = []
    for text in texts:
        data = text.encode()
        z = zlib.compressobj(9, zlib.DEFLATED, -bits)
        if history:
            z = zlib.compressobj(9, zlib.DEFLATED, -bits, zdict=history[-window:])
        payloads.append(z.compress(data) + z.flush(zlib.Z_FINISH) + b"\x00")
        history += data
    return payloads


def _pushes(n: int) -> list[str]:
    # the same long account id in each: later messages are mostly back-references (not
    # StateChanges: unread ones would merge into one)
    account = "account-" + "0123456789abcdef" * 8
    return [json.dumps({"@type": "X-Note", "account": account, "n": k}) for k in range(n)]


def test_6_the_rfc_example_twice_and_back_references_across_bfinal_inflate() -> None:
    texts = _pushes(3)
    payloads = _bfinal_messages(texts)
    assert len(payloads[2]) < len(texts[2]) // 4  # it really refers to earlier messages
    frames = [HELLO_BFINAL, HELLO_BFINAL, *payloads, HELLO_BFINAL]
    data = b"".join(server_frame(TEXT, p, rsv=4) for p in frames)
    stream = iter([data])
    buffer = bytearray()

    def read_exact(n: int) -> bytes:
        while len(buffer) < n:
            buffer.extend(next(stream))
        chunk = bytes(buffer[:n])
        del buffer[:n]
        return chunk

    params = Params("permessage-deflate", server_bits=12)
    reader = FrameReader(read_exact, max_message_size=1 << 20, inflater=Inflater(params))
    got = [reader.read()[1] for _ in frames]
    assert got == ["Hello", "Hello", *texts, "Hello"]


def test_6_pushes_ending_in_bfinal_all_arrive_over_a_socket() -> None:
    texts = _pushes(20)
    payloads = _bfinal_messages(texts)

    def handler(peer: Peer) -> None:
        for payload in payloads:
            peer.send_raw(server_frame(TEXT, payload, rsv=4))
        idle(peer)

    header = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n"
    with (
        RawServer(handler, extra_headers=header) as server,
        jws.WsSession.open(server.url, timeout=WAIT, close_timeout=1) as ws,
    ):
        frames = [ws.next_frame(timeout=WAIT) for _ in texts]
    assert [f.raw["n"] for f in frames if isinstance(f, jws.UnknownFrame)] == list(range(20))


# -- 7. Retry-After: no retry sooner than the server asked, within the backoff's ceiling ---


def test_7_retry_after_is_read_as_seconds_or_a_date() -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    then = email.utils.parsedate_to_datetime(date).timestamp()
    assert retry_after("30") == 30.0
    assert retry_after(" 120 ") == 120.0
    assert retry_after(date, now=then - 45) == 45.0
    assert retry_after(date, now=then + 45) == 0.0  # a date in the past: at once
    for bad in (None, "", "soon", "-5", "1.5", "3e2", "٣"):
        assert retry_after(bad) is None


@pytest.mark.parametrize("status", [429, 503])
def test_7_a_handshake_refused_with_retry_after_keeps_the_figure(status: int) -> None:
    with (
        RawServer(idle, status=status, extra_headers="Retry-After: 30\r\n") as server,
        pytest.raises(jws.HandshakeError) as info,
    ):
        jws.WsSession.open(server.url, timeout=WAIT)
    assert (info.value.status, info.value.retry_after) == (status, 30.0)
    assert policy.classify(info.value) is policy.Verdict.RETRY


def test_7_the_backoff_waits_at_least_what_the_server_asked_and_no_more_than_its_ceiling() -> None:
    rng = random.Random(7)
    state = policy.RetryState(backoff=Backoff(first=(0.5, 1.0), ceiling=60.0))
    busy = jws.SessionError("busy", status=503, retry_after=30.0)
    (decision, _) = state.after(busy, rng)
    assert (decision.action, decision.delay) == (policy.Action.WAIT, 30.0)
    (decision, _) = state.after(jws.SessionClosed(cause=busy), rng)  # as the supervisor sees it
    assert decision.delay == 30.0
    (decision, _) = state.after(jws.HandshakeError("x", status=429, retry_after=3600.0), rng)
    assert decision.delay == 60.0  # capped by the ceiling
    (decision, _) = state.after(jws.SessionError("x", status=503, retry_after=0.0), rng)
    assert 0.5 <= decision.delay <= 1.0  # below the backoff: the backoff's delay stands


def test_7_a_reconnecting_session_does_not_retry_discovery_sooner_than_asked() -> None:
    seen: list[float] = []

    def discovery(request: Seen) -> Reply:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return Reply(503, {"Retry-After": "2"})
        return json_reply(_ws_session(ws_server.port))

    with (
        RawServer(echo_requests) as ws_server,
        HttpServer({"/.well-known/jmap": discovery}) as http,
        jws.ReconnectingSession(
            http.origin, backoff=Backoff(first=(0.01, 0.02), ceiling=10.0)
        ) as rs,
    ):
        rs.call(ECHO, timeout=WAIT)
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1.9  # 0.01-0.02 s from the backoff alone


# -- 8. a call-only ReconnectingSession keeps flat memory however often it reconnects -------


def _connections_to(server: RawServer) -> list[Connection]:
    """The Connection objects still alive that went to ``server`` (other tests' garbage,
    which the collector may not have reached yet, does not count)."""
    gc.collect()
    port = f":{server.port}/"
    return [o for o in gc.get_objects() if isinstance(o, Connection) and port in o.url]


def _reset_at_once(peer: Peer) -> None:
    peer.reset()


def test_8_three_hundred_resets_leave_no_marker_and_no_dead_connection_behind() -> None:
    """Nobody reads frames (call() only): each reconnect's boundary used to stay in the
    inbox for ever, and through its cause's traceback the dead connection it ended."""
    instant = Backoff(first=(0.0, 0.001), factor=1.0, ceiling=0.001, jitter=0.0)
    with RawServer(_reset_at_once) as server:
        rs = jws.ReconnectingSession(server.url, backoff=instant, connect_timeout=WAIT)
        try:
            for _ in range(300):
                server.next_peer(timeout=WAIT)
            inbox = rs._sup.inbox  # the leak was in there
            assert len(inbox) <= 1
            gc.collect()
            alive = _connections_to(server)
            assert len(alive) <= 3  # the current one, one being opened, one being dropped
        finally:
            rs.close(timeout=WAIT)
    assert rs.reconnects >= 290


def _tracebacks(error: BaseException | None) -> list[Any]:
    found = []
    while error is not None:
        if error.__traceback__ is not None:
            found.append(error.__traceback__)
        error = error.__cause__ or error.__context__
    return found


def test_8_a_reconnect_info_kept_by_the_application_does_not_keep_its_connection() -> None:
    """An application that logs every ReconnectInfo and keeps them keeps their causes, not
    the dead connections their tracebacks' frames referred to."""
    instant = Backoff(first=(0.0, 0.001), factor=1.0, ceiling=0.001, jitter=0.0)
    kept: list[jws.ReconnectInfo] = []
    with RawServer(_reset_at_once) as server:
        rs = jws.ReconnectingSession(server.url, backoff=instant, connect_timeout=WAIT)
        try:
            for n in range(60):
                server.next_peer(timeout=WAIT)
                info = rs.last_reconnect
                if n % 5 == 4 and info is not None and info not in kept:
                    kept.append(info)
            gc.collect()
            alive = _connections_to(server)
        finally:
            rs.close(timeout=WAIT)
    assert len(kept) >= 5
    assert all(_tracebacks(info.cause) for info in kept)  # still there to be printed
    assert len(alive) <= 3


def test_8_a_reconnect_under_way_is_not_replaced_by_a_later_marker() -> None:
    """Only a marker already passed by reality may be replaced: one not ready (a WebSocket
    reconnect under way) keeps what follows it waiting, an EventSource's marker included
    (found on Cyrus, where both reconnect at a restart)."""
    from jmapws_sync._inbox import Inbox, Marker

    reached: list[Marker] = []
    inbox = Inbox(on_marker=reached.append)
    waiting, later = Marker(ready=False), Marker(ready=True)
    inbox.put_marker(waiting)
    inbox.put_marker(later)
    assert len(inbox) == 2
    with pytest.raises(TimeoutError):
        inbox.get_event(timeout=0.05)  # held at the reconnect under way
    inbox.mark_ready(waiting)
    assert inbox.get_event(timeout=WAIT) is waiting
    assert inbox.get_event(timeout=WAIT) is later
    assert reached == [waiting, later]
