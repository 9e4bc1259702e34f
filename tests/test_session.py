"""WsSession against a byte-exact WebSocket server on loopback: the contract table, row by row."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

import jmapws_sync as jws
from jmapws_sync.session import MAX_CONSECUTIVE_NON_TEXT

from .support.faultservers import scripted_session
from .support.rawws import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Peer,
    RawServer,
    echo_requests,
    idle,
)
from .support.threads import wait_no_readers

ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"x": 1}, "c0")])


def response(request_id: object = None, state: str = "s1") -> dict[str, object]:
    body: dict[str, object] = {
        "@type": "Response",
        "methodResponses": [["Core/echo", {"x": 1}, "c0"]],
        "sessionState": state,
    }
    if request_id is not None:
        body["requestId"] = request_id
    return body


@pytest.fixture
def scripted() -> Iterator[tuple[RawServer, jws.WsSession, Peer]]:
    """A session to a raw server whose peer the test drives by hand."""
    with scripted_session() as triple:
        yield triple


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jmapws-reader")]


# -- handshake ----------------------------------------------------------------------------


def test_handshake_offers_jmap_subprotocol_and_auth() -> None:
    """The upgrade carries Sec-WebSocket-Protocol: jmap and the auth header."""
    with RawServer(idle) as server:
        with jws.WsSession.open(server.url, auth=jws.BearerAuth("tok"), timeout=5):
            peer = server.next_peer()
        assert peer.headers["sec-websocket-protocol"] == "jmap"
        assert peer.headers["authorization"] == "Bearer tok"


def test_missing_subprotocol_is_refused_by_default() -> None:
    """A server that does not echo 'jmap' fails the handshake unless tolerated."""
    with RawServer(idle, subprotocol=None) as server:
        with pytest.raises(jws.HandshakeError, match="subprotocol"):
            jws.WsSession.open(server.url, timeout=5)
        with jws.WsSession.open(server.url, timeout=5, require_subprotocol=False) as ws:
            assert not ws.closed


def test_wrong_subprotocol_is_refused() -> None:
    """A server that picks another subprotocol fails the handshake."""
    with RawServer(idle, subprotocol="chat") as server, pytest.raises(jws.HandshakeError):
        jws.WsSession.open(server.url, timeout=5, require_subprotocol=False)


def test_handshake_401_is_authentication_error_without_secret() -> None:
    """HTTP 401 at the upgrade raises AuthenticationError naming the scheme, not the secret."""
    challenge = 'WWW-Authenticate: Basic realm="x"\r\n'
    with (
        RawServer(idle, status=401, extra_headers=challenge) as s,
        pytest.raises(jws.AuthenticationError) as info,
    ):
        jws.WsSession.open(s.url, auth=jws.BasicAuth("u", "s3cr3t-pw"), timeout=5)
    assert info.value.status == 401
    assert info.value.scheme == "Basic"
    assert "s3cr3t-pw" not in str(info.value) + repr(info.value)


def test_handshake_500_is_handshake_error_with_status() -> None:
    """Another status raises HandshakeError carrying it."""
    with RawServer(idle, status=503) as server, pytest.raises(jws.HandshakeError) as info:
        jws.WsSession.open(server.url, timeout=5)
    assert info.value.status == 503


def test_refused_connection_is_transport_error() -> None:
    """Nothing listening: TransportError."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(jws.TransportError):
        jws.WsSession.open(f"ws://127.0.0.1:{port}/", timeout=5)


def test_handshake_that_never_finishes_times_out() -> None:
    """A server that never answers the upgrade: TimeoutError within the timeout."""
    with RawServer(idle, handshake=False) as server, pytest.raises(TimeoutError):
        jws.WsSession.open(server.url, timeout=0.3)


def test_not_a_websocket_url() -> None:
    """An http URL is a ValueError, not a connection attempt."""
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        jws.WsSession.open("http://127.0.0.1:1/")


# -- next_frame rows ----------------------------------------------------------------------


def test_send_request_adds_type_and_id_and_response_comes_back() -> None:
    """send_request adds @type Request and the id; the echoed requestId is kept as sent."""
    with RawServer(echo_requests) as server, jws.WsSession.open(server.url, timeout=5) as ws:
        ws.send_request(ECHO, id="r1")
        ws.send_request(ECHO, id=7)
        ws.send_request(ECHO)
        frames = [ws.next_frame(timeout=5) for _ in range(3)]
    assert [f.request_id for f in frames] == ["r1", 7, None]  # type: ignore[union-attr]
    assert all(isinstance(f, jws.Response) for f in frames)


def test_next_frame_timeout(scripted: tuple[RawServer, jws.WsSession, Peer]) -> None:
    """No frame within the timeout raises the builtin TimeoutError."""
    _, ws, _ = scripted
    with pytest.raises(TimeoutError):
        ws.next_frame(timeout=0.05)


def test_frame_kinds(scripted: tuple[RawServer, jws.WsSession, Peer]) -> None:
    """Response, RequestError, StateChange and unknown @types arrive typed, in order."""
    _, ws, peer = scripted
    peer.send_json(response("a"))
    peer.send_json({"@type": "RequestError", "type": "urn:ietf:params:jmap:error:limit"})
    peer.send_json({"@type": "StateChange", "changed": {"a1": {"Note": "5"}}, "pushState": "p5"})
    peer.send_json({"@type": "ChatStreamEvent", "token": "secret-token"})
    frames = [ws.next_frame(timeout=5) for _ in range(4)]
    assert [type(f) for f in frames] == [
        jws.Response,
        jws.RequestError,
        jws.StateChange,
        jws.UnknownFrame,
    ]
    assert ws.push_state == "p5"
    assert frames[3].type_name == "ChatStreamEvent"  # type: ignore[union-attr]
    assert "secret-token" not in repr(frames[3])


def test_binary_message_is_protocol_violation_and_stream_survives(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """A binary message raises ProtocolViolation; the next text frame still arrives."""
    _, ws, peer = scripted
    peer.send_frame(BINARY, b"\x00\x01")
    peer.send_json(response("after"))
    with pytest.raises(jws.ProtocolViolation, match="binary"):
        ws.next_frame(timeout=5)
    assert ws.next_frame(timeout=5).request_id == "after"  # type: ignore[union-attr]


def test_fragmented_binary_is_protocol_violation(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """A binary message split in fragments is still one ProtocolViolation."""
    _, ws, peer = scripted
    peer.send_frame(BINARY, b"ab", fin=False)
    peer.send_frame(CONT, b"cd")
    peer.send_json(response("after"))
    with pytest.raises(jws.ProtocolViolation):
        ws.next_frame(timeout=5)
    assert ws.next_frame(timeout=5).request_id == "after"  # type: ignore[union-attr]


def test_64_pings_are_fine_65_is_starvation(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """Exactly 64 consecutive non-text messages pass; the 65th raises StarvationError."""
    _, ws, peer = scripted
    peer.send_raw(peer.frame(PING, b"p") * MAX_CONSECUTIVE_NON_TEXT)
    peer.send_json(response("first"))
    assert ws.next_frame(timeout=5).request_id == "first"  # type: ignore[union-attr]
    peer.send_raw(peer.frame(PONG) * (MAX_CONSECUTIVE_NON_TEXT + 1))
    peer.send_json(response("second"))
    with pytest.raises(jws.StarvationError):
        ws.next_frame(timeout=5)
    assert ws.next_frame(timeout=5).request_id == "second"  # type: ignore[union-attr]


def test_ping_flood_raises_starvation_repeatedly_and_pongs(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """A flood of 200 pings gives three StarvationErrors (the count restarts) and pongs."""
    _, ws, peer = scripted
    peer.send_raw(peer.frame(PING, b"hi") * 200)
    peer.send_json(response("end"))
    for _ in range(200 // (MAX_CONSECUTIVE_NON_TEXT + 1)):
        with pytest.raises(jws.StarvationError):
            ws.next_frame(timeout=5)
    assert ws.next_frame(timeout=5).request_id == "end"  # type: ignore[union-attr]
    opcode, fin, data = peer.recv_frame()
    assert (opcode, fin, data) == (PONG, True, b"hi")


def test_fragmented_text_interleaved_with_pings(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """A text message in fragments with pings between them arrives whole."""
    _, ws, peer = scripted
    text = json.dumps(response("frag")).encode()
    peer.send_frame(TEXT, text[:10], fin=False)
    peer.send_frame(PING, b"1")
    peer.send_frame(CONT, text[10:20], fin=False)
    peer.send_frame(PING, b"2")
    peer.send_frame(CONT, text[20:])
    assert ws.next_frame(timeout=5).request_id == "frag"  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"str"', "{"])
def test_text_that_is_not_a_json_object_is_parse_error(
    scripted: tuple[RawServer, jws.WsSession, Peer], text: str
) -> None:
    """Invalid JSON or a non-object raises ParseError; the stream stays usable."""
    _, ws, peer = scripted
    peer.send_text(text)
    peer.send_json(response("ok"))
    with pytest.raises(jws.ParseError):
        ws.next_frame(timeout=5)
    assert ws.next_frame(timeout=5).request_id == "ok"  # type: ignore[union-attr]


@pytest.mark.parametrize("code", [1000, 1001, None])
def test_clean_close_returns_none_forever(
    scripted: tuple[RawServer, jws.WsSession, Peer], code: int | None
) -> None:
    """Close 1000/1001 (or no code): queued frames first, then None on every call."""
    _, ws, peer = scripted
    peer.send_json(response("last"))
    peer.send_close(code)
    assert ws.next_frame(timeout=5).request_id == "last"  # type: ignore[union-attr]
    assert ws.next_frame(timeout=5) is None
    assert ws.next_frame(timeout=5) is None
    assert ws.close_code == (code or 1005)
    opcode, _, _data = peer.recv_frame()  # the client answered the Close
    assert opcode == CLOSE
    with pytest.raises(jws.SessionClosed):
        ws.send_request(ECHO)


def test_error_close_code_then_session_closed(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """Close 1011 raises ConnectionClosedError with code and reason once, then SessionClosed."""
    _, ws, peer = scripted
    peer.send_close(1011, "boom")
    with pytest.raises(jws.ConnectionClosedError) as info:
        ws.next_frame(timeout=5)
    assert (info.value.code, info.value.reason) == (1011, "boom")
    assert isinstance(info.value, jws.TransportError)
    with pytest.raises(jws.SessionClosed) as later:
        ws.next_frame(timeout=5)
    assert later.value.cause is info.value
    assert ws.close_code == 1011


def test_close_1008_is_authentication_error(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """Close 1008 (credentials expired, RFC 8887 §4.2) raises AuthenticationError."""
    _, ws, peer = scripted
    peer.send_close(1008, "token expired")
    with pytest.raises(jws.AuthenticationError) as info:
        ws.next_frame(timeout=5)
    assert info.value.close_code == 1008
    with pytest.raises(jws.SessionClosed):
        ws.next_frame(timeout=5)


def test_tcp_reset_is_transport_error_then_session_closed(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """An abrupt RST: frames before it are kept, then TransportError, then SessionClosed."""
    _, ws, peer = scripted
    peer.send_json(response("before"))
    assert ws.next_frame(timeout=5).request_id == "before"  # type: ignore[union-attr]
    peer.reset()
    with pytest.raises(jws.TransportError):
        ws.next_frame(timeout=5)
    with pytest.raises(jws.SessionClosed):
        ws.next_frame(timeout=5)
    with pytest.raises(jws.SessionClosed):
        ws.send_text("{}")
    wait_no_readers()


def test_eof_mid_frame_is_transport_error(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """A partial frame then a closed socket: TransportError, never a hang."""
    _, ws, peer = scripted
    peer.send_raw(peer.frame(TEXT, b"x" * 100)[:50])
    peer.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(jws.TransportError, match="lost"):
        ws.next_frame(timeout=5)


def test_hostile_length_header_is_message_too_large() -> None:
    """A header announcing 2**62 bytes ends the session with MessageTooLarge and close 1009."""
    with scripted_session(max_message_size=1024) as (_, ws, peer):
        peer.send_raw(peer.frame(TEXT, b"{}", length=2**62))
        with pytest.raises(jws.MessageTooLarge) as info:
            ws.next_frame(timeout=5)
        assert info.value.size == 2**62
        opcode, _, data = peer.recv_frame()
        assert (opcode, struct.unpack(">H", data[:2])[0]) == (CLOSE, 1009)
        with pytest.raises(jws.SessionClosed):
            ws.next_frame(timeout=5)


def test_fragments_over_the_limit_are_message_too_large() -> None:
    """Fragments that add up past max_message_size end the session."""
    with scripted_session(max_message_size=100) as (_, ws, peer):
        peer.send_frame(TEXT, b"x" * 60, fin=False)
        peer.send_frame(CONT, b"x" * 60)
        with pytest.raises(jws.MessageTooLarge):
            ws.next_frame(timeout=5)


def test_invalid_utf8_ends_session_with_1007(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """A text message that is not UTF-8 is a WebSocketProtocolError; we close with 1007."""
    _, ws, peer = scripted
    peer.send_frame(TEXT, b'{"a": "\xff\xfe"}')
    with pytest.raises(jws.WebSocketProtocolError, match="UTF-8"):
        ws.next_frame(timeout=5)
    opcode, _, data = peer.recv_frame()
    assert (opcode, struct.unpack(">H", data[:2])[0]) == (CLOSE, 1007)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"mask": True}, id="masked"),
        pytest.param({"rsv": 4}, id="reserved-bits"),
    ],
)
def test_framing_violations_end_session(
    scripted: tuple[RawServer, jws.WsSession, Peer], raw: dict[str, object]
) -> None:
    """A masked server frame or reserved bits: WebSocketProtocolError (close 1002)."""
    _, ws, peer = scripted
    peer.send_frame(TEXT, b"{}", **raw)  # type: ignore[arg-type]
    with pytest.raises(jws.WebSocketProtocolError):
        ws.next_frame(timeout=5)


def test_unknown_opcode_ends_session(scripted: tuple[RawServer, jws.WsSession, Peer]) -> None:
    """An undefined opcode (0x3) is a framing violation."""
    _, ws, peer = scripted
    peer.send_frame(0x3, b"")
    with pytest.raises(jws.WebSocketProtocolError, match="opcode"):
        ws.next_frame(timeout=5)


# -- close() ------------------------------------------------------------------------------


def test_close_wakes_blocked_next_frame_and_joins_reader() -> None:
    """close() from another thread wakes a blocked next_frame with SessionClosed."""
    with RawServer(idle) as server:
        ws = jws.WsSession.open(server.url, timeout=5)
        started = threading.Event()
        outcome: list[BaseException] = []

        def consume() -> None:
            started.set()
            try:
                ws.next_frame(timeout=10)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=consume)
        t.start()
        assert started.wait(5)
        ws.close()
        t.join(5)
        assert not t.is_alive()
        assert isinstance(outcome[0], jws.SessionClosed)
        wait_no_readers()
        ws.close()  # idempotent
        assert ws.closed


def test_close_sends_close_frame_with_code() -> None:
    """close(code, reason) sends that Close frame and the server sees it."""
    got: list[bytes] = []

    def record(peer: Peer) -> None:
        for opcode, data in peer.messages():
            if opcode == CLOSE:
                got.append(data)
                peer.send_frame(CLOSE, data[:2])
                return

    with RawServer(record) as server:
        jws.WsSession.open(server.url, timeout=5).close(4001, "bye")
    assert got == [struct.pack(">H", 4001) + b"bye"]


def test_close_against_silent_server_returns_after_close_timeout() -> None:
    """A server that never answers the Close: close() still returns and the reader exits."""
    hold = threading.Event()

    def silent(peer: Peer) -> None:
        hold.wait(10)

    with RawServer(silent) as server:
        ws = jws.WsSession.open(server.url, timeout=5, close_timeout=0.2)
        ws.close()
        hold.set()
        wait_no_readers()


def test_frames_before_local_close_are_still_returned() -> None:
    """Frames queued before close() are returned, then SessionClosed."""
    with RawServer(idle) as server:
        ws = jws.WsSession.open(server.url, timeout=5)
        peer = server.next_peer()
        peer.send_json(response("kept"))
        peer.send_json(response("barrier"))
        frames = []
        ws.close()
        while True:
            try:
                frames.append(ws.next_frame(timeout=5))
            except jws.SessionClosed:
                break
        ids = [f.request_id for f in frames]  # type: ignore[union-attr]
        # Both were sent before close(); the server's Close reply comes after them.
        assert ids == ["kept", "barrier"]


def test_no_reader_thread_outlives_sessions() -> None:
    """After 20 open/close cycles no reader thread is left."""
    before = len(reader_threads())
    with RawServer(idle) as server:
        for _ in range(20):
            with jws.WsSession.open(server.url, timeout=5):
                pass
    assert len(reader_threads()) == before


def test_send_after_close_is_session_closed(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """Every send after close() raises SessionClosed."""
    _, ws, _ = scripted
    ws.close()
    for send in (lambda: ws.send_text("{}"), lambda: ws.send_request(ECHO), ws.disable_push):
        with pytest.raises(jws.SessionClosed):
            send()


def test_unencodable_request_is_value_error(
    scripted: tuple[RawServer, jws.WsSession, Peer],
) -> None:
    """A request that cannot be encoded raises ValueError and leaves the stream usable."""
    _, ws, _ = scripted
    bad = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("X", {"a": object()}, "c")])
    with pytest.raises(ValueError, match="cannot encode"):
        ws.send_request(bad)
    ws.send_text("{}")


# -- threads and backpressure -------------------------------------------------------------


def test_sixteen_threads_sending_concurrently_every_frame_arrives_whole() -> None:
    """16 threads x 100 sends: the server reads 1600 intact JSON messages."""
    received: list[dict[str, object]] = []
    done = threading.Event()

    def collect(peer: Peer) -> None:
        for opcode, data in peer.messages():
            if opcode == TEXT:
                received.append(json.loads(data))
                if len(received) == 1600:
                    done.set()

    with RawServer(collect) as server, jws.WsSession.open(server.url, timeout=5) as ws:
        barrier = threading.Barrier(16)

        def send(n: int) -> None:
            barrier.wait(5)
            for i in range(100):
                big = jws.Invocation("Core/echo", {"pad": "x" * (i * 37)}, f"c{i}")
                ws.send_request(jws.Request(using=[jws.CORE], method_calls=[big]), id=f"{n}-{i}")

        threads = [threading.Thread(target=send, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert done.wait(30)
    ids = sorted(str(m["id"]) for m in received)
    assert ids == sorted(f"{n}-{i}" for n in range(16) for i in range(100))


def test_full_queue_pauses_reader_loudly_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With max_queue=10, 100 frames that cannot merge pause the reader (loudly); all arrive."""
    with RawServer(idle) as server:
        ws = jws.WsSession.open(server.url, timeout=5, max_queue=10)
        peer = server.next_peer()
        with caplog.at_level(logging.WARNING, logger="jmapws_sync"):
            for i in range(100):
                peer.send_json({"@type": "X-Numbered", "n": i})
            first = ws.next_frame(timeout=5)
            assert ws.pending_frames <= 10  # the reader stopped at the mark
            frames = [first] + [ws.next_frame(timeout=5) for _ in range(99)]
        ws.close()
    assert [f.raw["n"] for f in frames] == list(range(100))  # type: ignore[union-attr]
    assert any("reading paused" in r.getMessage() for r in caplog.records)


def test_close_wakes_a_reader_paused_on_a_full_queue() -> None:
    """close() returns promptly even while the reader waits for room in the queue."""
    with RawServer(idle) as server:
        ws = jws.WsSession.open(server.url, timeout=5, max_queue=4)
        peer = server.next_peer()
        for i in range(20):
            peer.send_json({"@type": "X-Numbered", "n": i})
        assert ws.next_frame(timeout=5) is not None
        ws.close()
        wait_no_readers()


def test_repr_hides_credentials_in_url() -> None:
    """The session repr shows scheme, host and path, never user info or query."""
    with RawServer(idle) as server:
        url = server.url.replace("ws://", "ws://user:pw@") + "?access_token=secret"
        with jws.WsSession.open(url, timeout=5) as ws:
            text = repr(ws)
    assert "secret" not in text
    assert "pw" not in text
    assert "/jmap/ws" in text


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 100_003])
def test_client_frames_of_every_length_class_arrive_intact(size: int) -> None:
    """Our frame writer's 7-bit, 16-bit and 64-bit lengths, masked, arrive byte-exact."""
    got: list[bytes] = []
    done = threading.Event()

    def collect(peer: Peer) -> None:
        for opcode, data in peer.messages():
            if opcode == TEXT:
                got.append(data)
                done.set()
            elif opcode == CLOSE:
                peer.send_frame(CLOSE, data[:2])

    text = "".join(chr(0x41 + i % 26) for i in range(size))
    with RawServer(collect) as server, jws.WsSession.open(server.url, timeout=5) as ws:
        ws.send_text(text)
        assert done.wait(5)
    assert got == [text.encode()]
