"""Faults from the network and the server: each ends in the documented exception, in time.

Every fault is injected after a Ping/Pong barrier (see :func:`faultservers.barrier`), so the
frames sent before it have provably reached the client's reader: the tests then check that
none of them is lost, that the documented exception follows, then ``SessionClosed``, and that
the reader thread is gone. test_session.py covers the contract table row by row; this module
covers what breaks in the middle of things.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.discovery import SessionResource, fetch_session

from .support.faultservers import (
    PartialHandshakeServer,
    TrickleHandshakeServer,
    barrier,
    hang_up,
    scripted_session,
)
from .support.httpfixtures import HttpServer, Reply, json_reply, redirect, session_body
from .support.rawws import CLOSE, CONT, PING, PONG, TEXT, Peer
from .support.threads import wait_no_readers

ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"x": 1}, "c0")])
BEFORE = 5  # frames sent before each fault
CORE_URN = "urn:ietf:params:jmap:core"
MAIL_URN = "urn:ietf:params:jmap:mail"
WS_URN = "urn:ietf:params:jmap:websocket"


def response(request_id: object) -> dict[str, Any]:
    return {
        "@type": "Response",
        "methodResponses": [["Core/echo", {"n": request_id}, "c0"]],
        "sessionState": "s1",
        "requestId": request_id,
    }


def send_before(peer: Peer) -> None:
    """Send BEFORE responses, then wait until the client's reader has read them all."""
    peer.send_raw(
        b"".join(peer.frame(TEXT, json.dumps(response(i)).encode()) for i in range(BEFORE))
    )
    barrier(peer)


def assert_kept_then(ws: jws.WsSession, error: type[BaseException]) -> BaseException:
    """The BEFORE frames come out in order, then ``error``, then SessionClosed; reader gone."""
    ids = [ws.next_frame(timeout=5).request_id for _ in range(BEFORE)]  # type: ignore[union-attr]
    assert ids == list(range(BEFORE))
    with pytest.raises(error) as info:
        ws.next_frame(timeout=5)
    with pytest.raises(jws.SessionClosed) as later:
        ws.next_frame(timeout=5)
    assert later.value.cause is info.value
    wait_no_readers()
    assert ws.closed
    return info.value


def close_code_sent(peer: Peer) -> int:
    """The code of the Close frame the client sent next (skipping Pongs)."""
    while True:
        opcode, _, data = peer.recv_frame()
        if opcode == CLOSE:
            code: int = struct.unpack(">H", data[:2])[0]
            return code
        assert opcode == PONG


# -- TCP faults ---------------------------------------------------------------------------


def test_tcp_reset_mid_message_keeps_earlier_frames() -> None:
    """An RST halfway through a message: earlier frames kept, then TransportError."""
    with scripted_session() as (_, ws, peer):
        send_before(peer)
        peer.send_raw(peer.frame(TEXT, json.dumps(response("cut")).encode())[:30])
        peer.reset()
        assert_kept_then(ws, jws.TransportError)


def test_tcp_reset_mid_answer_wakes_the_waiting_call() -> None:
    """A call() whose answer is cut by an RST raises TransportError at once, not a timeout."""
    with scripted_session() as (_, ws, peer):
        outcome: list[BaseException] = []

        def caller() -> None:
            try:
                ws.call(ECHO, timeout=10)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=caller)
        start = time.monotonic()
        thread.start()
        opcode, _, data = peer.recv_frame()
        assert opcode == TEXT
        answer = response(json.loads(data)["id"])
        peer.send_raw(peer.frame(TEXT, json.dumps(answer).encode())[:40])
        peer.reset()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - start < 5
        assert isinstance(outcome[0], jws.TransportError)
        assert ws.pending_calls == 0


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(1, id="one-header-byte"),
        pytest.param(5, id="inside-64-bit-length"),
        pytest.param(200, id="inside-payload"),
    ],
)
def test_partial_frame_then_silence_then_close(cut: int) -> None:
    """A partial frame, then silence (a timeout, stream alive), then FIN: TransportError."""
    with scripted_session() as (_, ws, peer):
        send_before(peer)
        big = json.dumps({**response("big"), "pad": "x" * 70000}).encode()
        peer.send_raw(peer.frame(TEXT, big)[:cut])
        for _ in range(BEFORE):
            assert isinstance(ws.next_frame(timeout=5), jws.Response)
        with pytest.raises(TimeoutError):
            ws.next_frame(timeout=0.2)
        assert not ws.closed  # silence alone is no error
        hang_up(peer)
        with pytest.raises(jws.TransportError, match="lost"):
            ws.next_frame(timeout=5)
        with pytest.raises(jws.SessionClosed):
            ws.next_frame(timeout=5)
        wait_no_readers()


def test_eof_between_messages_keeps_earlier_frames() -> None:
    """A FIN without a Close frame: earlier frames kept, then TransportError."""
    with scripted_session() as (_, ws, peer):
        send_before(peer)
        hang_up(peer)
        assert_kept_then(ws, jws.TransportError)


# -- half-open server -----------------------------------------------------------------------


def test_half_open_server_call_times_out_and_close_is_bounded() -> None:
    """A server that stops reading and answering: call() times out; close() returns in time."""
    with scripted_session(close_timeout=0.5) as (_, ws, _peer):
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.call(ECHO, timeout=0.3)
        assert 0.25 < time.monotonic() - start < 2.0
        assert ws.pending_calls == 0
        start = time.monotonic()
        ws.close()
        assert time.monotonic() - start < 0.5 + 1.0
        wait_no_readers()
        with pytest.raises(jws.SessionClosed):
            ws.next_frame(timeout=1)


def test_half_open_server_with_full_send_buffer_cannot_block_call_or_close() -> None:
    """A server that stops reading while a big request is sent: call() and close() stay bounded."""
    big = jws.Request(
        using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"x": "y" * (32 << 20)}, "c0")]
    )
    with scripted_session(close_timeout=0.5) as (_, ws, peer):
        outcome: list[BaseException] = []

        def caller() -> None:
            try:
                ws.call(big, timeout=1.0)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        thread.join(4)
        call_stuck = thread.is_alive()
        closer = threading.Thread(target=ws.close, daemon=True)
        start = time.monotonic()
        closer.start()
        closer.join(3)
        close_stuck = closer.is_alive()
        close_time = time.monotonic() - start
        # Unblock whatever is stuck before asserting, so the test never hangs.
        peer.reset()  # an RST: the blocked sendall fails
        thread.join(5)
        closer.join(5)
        assert not call_stuck, "call(timeout=1) still blocked in send after 4 s"
        assert not close_stuck, "close() still blocked after 3 s (close_timeout=0.5)"
        assert close_time < 2.0
        assert isinstance(outcome[0], TimeoutError | jws.TransportError | jws.SessionClosed)


# -- hostile length header -------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([(TEXT, True, 2**40)], id="text-2**40"),
        pytest.param([(TEXT, True, 2**63 - 1)], id="text-2**63-1"),
        pytest.param([(TEXT, False, 10), (CONT, True, 2**40)], id="continuation-2**40"),
        pytest.param([(TEXT, True, 16 * 1024 * 1024 + 1)], id="limit-plus-one"),
    ],
)
def test_hostile_length_header_does_not_allocate(frames: list[tuple[int, bool, int]]) -> None:
    """A header announcing 2**40 bytes: MessageTooLarge (close 1009), peak memory < 4 MiB."""
    with scripted_session() as (_, ws, peer):
        send_before(peer)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            for opcode, fin, length in frames:
                payload = b'{"@type":"Response",' if length > 100 else b"x" * length
                peer.send_raw(peer.frame(opcode, payload, fin=fin, length=length))
            error = assert_kept_then(ws, jws.MessageTooLarge)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
        assert error.size >= frames[-1][2]  # type: ignore[attr-defined]
        assert error.limit == jws.session.DEFAULT_MAX_MESSAGE_SIZE  # type: ignore[attr-defined]
        assert close_code_sent(peer) == 1009


# -- invalid UTF-8 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([b'{"a":"\xe2\x82"}'], id="truncated-sequence"),
        pytest.param([b'{"a":"\xc0\xaf"}'], id="overlong"),
        pytest.param([b'{"a":"\xed\xa0\x80"}'], id="encoded-surrogate"),
        pytest.param([b'{"a":"\xf4\x90\x80\x80"}'], id="above-U+10FFFF"),
        pytest.param([b'{"a":"\xe2', b'("}'], id="broken-across-fragments"),
        pytest.param([b'{"a":"x"}\xe2\x82'], id="truncated-at-end"),
    ],
)
def test_invalid_utf8_keeps_earlier_frames_and_closes_1007(parts: list[bytes]) -> None:
    """Invalid UTF-8 in a text message: earlier frames kept, WebSocketProtocolError, close 1007."""
    with scripted_session() as (_, ws, peer):
        send_before(peer)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            peer.send_frame(TEXT if i == 0 else CONT, part, fin=last)
        assert_kept_then(ws, jws.WebSocketProtocolError)
        assert close_code_sent(peer) == 1007


def test_multibyte_character_split_across_fragments_is_fine() -> None:
    """A 4-byte character split over three fragments is valid UTF-8 once joined."""
    with scripted_session() as (_, ws, peer):
        text = json.dumps(response("\U0001f600"), ensure_ascii=False).encode()
        at = text.index("\U0001f600".encode())
        peer.send_frame(TEXT, text[: at + 1], fin=False)
        peer.send_frame(CONT, text[at + 1 : at + 3], fin=False)
        peer.send_frame(CONT, text[at + 3 :])
        assert ws.next_frame(timeout=5).request_id == "\U0001f600"  # type: ignore[union-attr]


# -- fragmentation and control frames ----------------------------------------------------------


def test_fragments_interleaved_with_pings_arrive_whole_and_every_ping_is_answered() -> None:
    """30 fragments with a distinct ping between each: one message, 29 pongs in order."""
    with scripted_session() as (_, ws, peer):
        text = json.dumps(response("frag")).encode()
        step = -(-len(text) // 30)
        chunks = [text[i : i + step] for i in range(0, len(text), step)]
        data = bytearray(peer.frame(TEXT, chunks[0], fin=False))
        for n, chunk in enumerate(chunks[1:], 1):
            data += peer.frame(PING, b"p%d" % n)
            data += peer.frame(CONT, chunk, fin=n == len(chunks) - 1)
        peer.send_raw(bytes(data))
        assert ws.next_frame(timeout=5).request_id == "frag"  # type: ignore[union-attr]
        pongs = [peer.recv_frame() for _ in chunks[1:]]
        assert pongs == [(PONG, True, b"p%d" % n) for n in range(1, len(chunks))]


def test_long_fragmented_message_with_pings_between_is_not_starvation() -> None:
    """200 non-empty fragments each followed by a ping make progress: no StarvationError."""
    with scripted_session() as (_, ws, peer):
        text = json.dumps({**response("long"), "pad": "y" * 400}).encode()
        chunks = [text[i : i + 2] for i in range(0, 400, 2)] + [text[400:]]
        data = bytearray(peer.frame(TEXT, chunks[0], fin=False))
        for n, chunk in enumerate(chunks[1:], 1):
            data += peer.frame(PING, b"")
            data += peer.frame(CONT, chunk, fin=n == len(chunks) - 1)
        peer.send_raw(bytes(data))
        assert ws.next_frame(timeout=5).request_id == "long"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        pytest.param(
            lambda p: p.frame(TEXT, b'{"a":', fin=False) + p.frame(TEXT, b"{}"),
            "inside a fragmented",
            id="new-message-inside-fragmented",
        ),
        pytest.param(lambda p: p.frame(CONT, b"{}"), "continuation", id="orphan-continuation"),
        pytest.param(lambda p: p.frame(PING, b"x", fin=False), "control", id="fragmented-ping"),
        pytest.param(lambda p: p.frame(PING, b"x" * 126), "control", id="ping-over-125"),
    ],
)
def test_framing_faults_keep_earlier_frames_and_close_1002(
    build: Callable[[Peer], bytes], match: str
) -> None:
    """Broken fragmentation or control frames: earlier frames kept, error, close 1002."""
    with scripted_session() as (_, ws, peer):
        send_before(peer)
        peer.send_raw(build(peer))
        error = assert_kept_then(ws, jws.WebSocketProtocolError)
        assert match in str(error)
        assert close_code_sent(peer) == 1002


def test_ten_thousand_unknown_frames_arrive_in_order() -> None:
    """10,000 unknown frames in a row (three shapes) each arrive as UnknownFrame, in order."""
    shapes: list[Callable[[int], dict[str, Any]]] = [
        lambda n: {"@type": "X-Extension", "n": n},
        lambda n: {"n": n},  # no @type at all
        lambda n: {"@type": "Response", "n": n},  # a known type whose body does not fit
    ]
    with scripted_session() as (_, ws, peer):
        data = b"".join(
            peer.frame(TEXT, json.dumps(shapes[n % 3](n)).encode()) for n in range(10_000)
        )
        sender = threading.Thread(target=peer.send_raw, args=(data,))
        sender.start()
        frames = [ws.next_frame(timeout=5) for _ in range(10_000)]
        sender.join(5)
        peer.send_close(1000)
        assert ws.next_frame(timeout=5) is None
    assert all(type(f) is jws.UnknownFrame for f in frames)
    assert [f.raw["n"] for f in frames] == list(range(10_000))  # type: ignore[union-attr]
    assert [f.type_name for f in frames[:3]] == ["X-Extension", None, "Response"]  # type: ignore[union-attr]


# -- handshakes that never finish ------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"HTTP/1.1 101 Switch", id="half-status-line"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", id="no-end"),
    ],
)
def test_handshake_that_stops_midway_times_out_in_time(answer: bytes) -> None:
    """An upgrade answer that stops partway: TimeoutError within the timeout."""
    with PartialHandshakeServer(answer) as server:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            jws.WsSession.open(server.url, timeout=0.5)
        assert time.monotonic() - start < 1.5


def test_handshake_to_a_listener_that_never_accepts_times_out() -> None:
    """A TCP listener that never accepts (only its backlog does): TimeoutError in time."""
    with socket.create_server(("127.0.0.1", 0), backlog=4) as listener:
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            jws.WsSession.open(f"ws://127.0.0.1:{port}/", timeout=0.5)
        assert time.monotonic() - start < 1.5


def test_trickling_handshake_cannot_stretch_the_timeout() -> None:
    """A 101 answer trickled a byte every 50 ms: open() still ends within its timeout."""
    outcome: list[BaseException | jws.WsSession] = []

    def opener(url: str) -> None:
        try:
            outcome.append(jws.WsSession.open(url, timeout=0.5))
        except BaseException as exc:
            outcome.append(exc)

    with TrickleHandshakeServer() as server:
        thread = threading.Thread(target=opener, args=(server.url,), daemon=True)
        start = time.monotonic()
        thread.start()
        thread.join(3)
        elapsed = time.monotonic() - start
    thread.join(5)  # the server stopped trickling: the handshake fails now, whatever it was
    assert elapsed < 1.5, "open(timeout=0.5) still in the handshake after 3 s"
    assert isinstance(outcome[0], TimeoutError)


# -- discovery: redirect loops and wrong types -----------------------------------------------


def test_redirect_to_itself_is_a_loop() -> None:
    """A resource that redirects to its own URL is a loop, reported after one request."""
    with HttpServer() as http:
        http.routes["/a"] = redirect("/a", 307)
        with pytest.raises(jws.SessionError, match="loop"):
            fetch_session(http.url("/a"), timeout=5)
    assert len(http.requests) == 1


@pytest.mark.parametrize(
    "spelling",
    ["/./a", "/b/../a", "/a#fragment", "{origin}/a", "HTTP://127.0.0.1:{port}/a"],
)
def test_redirect_loop_spelled_differently_is_still_a_loop(spelling: str) -> None:
    """/a -> /b -> the same /a spelled another way: a loop, found on the second request."""
    with HttpServer() as http:
        http.routes["/a"] = redirect("/b", 302)
        http.routes["/b"] = redirect(spelling.format(origin=http.origin, port=http.port), 302)
        with pytest.raises(jws.SessionError, match="loop"):
            fetch_session(http.url("/a"), timeout=5, max_redirects=50)
    assert len(http.requests) == 2


def test_endless_redirect_chain_stops_at_the_limit() -> None:
    """A chain of ever-new URLs (no loop) stops at max_redirects with SessionError."""

    def onward(seen: Any) -> Reply:
        n = int(seen.target.rsplit("=", 1)[1])
        return redirect(f"/r?n={n + 1}")

    with (
        HttpServer({"/r": onward}) as http,
        pytest.raises(jws.SessionError, match="more than 5 redirects"),
    ):
        fetch_session(http.url("/r?n=0"), timeout=5)
    assert len(http.requests) == 6


def test_deeply_nested_session_body_is_session_error() -> None:
    """A body of 100,000 nested arrays is a SessionError, not a RecursionError."""
    with HttpServer() as http:
        http.routes["/s"] = Reply(200, {"Content-Type": "application/json"}, b"[" * 100_000)
        with pytest.raises(jws.SessionError):
            fetch_session(http.url("/s"), timeout=5)


_STR, _BOOL, _UINT, _OBJ, _STRLIST = "str", "bool", "uint", "obj", "strlist"
_WRONG: dict[str, list[Any]] = {
    _STR: [None, True, 7, 1.5, [], {}],
    _BOOL: [None, 1, 0, "true", [], {}],
    _UINT: [None, True, -1, 1.5, "7", [], {}, 2**53],
    _OBJ: [None, True, 1, "s", [], ["x"]],
    _STRLIST: [None, "i;ascii", [1], {}, [None]],
}
_A = ("accounts", "A13824")
_PATHS: list[tuple[tuple[str, ...], str]] = [
    *(((key,), _STR) for key in ("apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl")),
    (("state",), _STR),
    (("username",), _STR),
    ((*_A, "name"), _STR),
    (("primaryAccounts", MAIL_URN), _STR),
    (("capabilities", WS_URN, "url"), _STR),
    ((*_A, "isPersonal"), _BOOL),
    ((*_A, "isReadOnly"), _BOOL),
    (("capabilities", WS_URN, "supportsPush"), _BOOL),
    *(
        (("capabilities", CORE_URN, key), _UINT)
        for key in (
            "maxSizeUpload",
            "maxConcurrentUpload",
            "maxSizeRequest",
            "maxConcurrentRequests",
            "maxCallsInRequest",
            "maxObjectsInGet",
            "maxObjectsInSet",
        )
    ),
    (("capabilities", CORE_URN, "collationAlgorithms"), _STRLIST),
    (("capabilities",), _OBJ),
    (("accounts",), _OBJ),
    (("primaryAccounts",), _OBJ),
    (("capabilities", CORE_URN), _OBJ),
    (("capabilities", MAIL_URN), _OBJ),
    (("capabilities", WS_URN), _OBJ),
    (_A, _OBJ),
    ((*_A, "accountCapabilities"), _OBJ),
    ((*_A, "accountCapabilities", MAIL_URN), _OBJ),
]
_CASES = [
    pytest.param(path, value, id=f"{'.'.join(path)}={value!r}")
    for path, kind in _PATHS
    for value in _WRONG[kind]
]


@pytest.mark.parametrize(("path", "value"), _CASES)
def test_every_member_of_the_wrong_type_is_named(path: tuple[str, ...], value: Any) -> None:
    """Each typed member of the Session resource, given each wrong JSON type, is named."""
    body = session_body()
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jws.SessionError) as info:
        SessionResource.from_json(body, url="https://example.com/.well-known/jmap")
    assert info.value.field == ".".join(path)
    assert not isinstance(info.value, jws.WebSocketUnavailable)


def test_wrong_type_over_http_names_the_field() -> None:
    """Fetched over HTTP, a nested member of the wrong type is named too."""
    body = session_body()
    body["capabilities"][CORE_URN]["maxConcurrentRequests"] = "8"
    with HttpServer({"/s": json_reply(body)}) as http, pytest.raises(jws.SessionError) as info:
        fetch_session(http.url("/s"), timeout=5)
    assert info.value.field == f"capabilities.{CORE_URN}.maxConcurrentRequests"


def test_no_reader_thread_is_left_after_the_faults() -> None:
    """After a reset, a FIN and a framing fault on three sessions, no reader thread is left."""
    before = {t for t in threading.enumerate() if t.name.startswith("jmapws-reader")}
    faults: list[Callable[[Peer], None]] = [
        lambda p: p.reset(),
        hang_up,
        lambda p: p.send_frame(0x3, b""),
    ]
    for fault in faults:
        with scripted_session() as (_, ws, peer):
            fault(peer)
            with pytest.raises(jws.TransportError):
                ws.next_frame(timeout=5)
    after = {t for t in threading.enumerate() if t.name.startswith("jmapws-reader")}
    assert after <= before
