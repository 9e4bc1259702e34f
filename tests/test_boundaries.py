"""Hostile input and misuse at every boundary (issue 14): each refused before any I/O, with
an exception that names the problem and never the secret.

Header values, a fork, call ids, close codes and reasons, Ping payloads, forgotten
sessions, the server's Close frame, timeouts, NaN in the server's JSON. The command line's
usage errors are in test_cli.py.
"""

from __future__ import annotations

import gc
import json
import math
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.testing import ReferenceServer

from .conftest import ALICE, USERS
from .support.faultservers import barrier, open_fds, scripted_session
from .support.rawws import CLOSE, TEXT, Peer, RawServer, idle
from .support.threads import library_threads, wait_gone

ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {}, "e")])
SECRET = "s3cret-TOKEN-value"
WAIT = 10.0


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A TCP listener that records nothing but whether anybody connected."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock, f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def nobody_connected(sock: socket.socket) -> bool:
    return not select.select([sock], [], [], 0.2)[0]


# -- 1. header values ---------------------------------------------------------------------------


def test_a_bearer_token_with_a_trailing_newline_is_refused_without_showing_it() -> None:
    """BearerAuth("...\\n"), as read from a mounted secret: ValueError, the token not in it."""
    with pytest.raises(ValueError, match="line break") as info:
        jws.BearerAuth(SECRET + "\n")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [f"Bearer {SECRET}\n", f"Bearer {SECRET}\r\nX-Injected: 1", f" Bearer {SECRET}", "a\x00b"],
)
def test_bad_header_values_are_refused_before_any_io(
    value: str, listener: tuple[socket.socket, str]
) -> None:
    """CR/LF, NUL or surrounding whitespace in a header: ValueError, nobody connected to."""
    sock, address = listener

    def auth() -> dict[str, str]:
        return {"Authorization": value}

    for attempt in (
        lambda: jws.fetch_session(f"http://{address}", auth=auth, timeout=2),
        lambda: jws.connect(f"http://{address}", auth=auth, timeout=2),
        lambda: jws.WsSession.open(f"ws://{address}/ws", auth=auth, timeout=2),
        lambda: jws.WsSession.open(f"ws://{address}/ws", headers={"X-Trace": value}, timeout=2),
    ):
        with pytest.raises(ValueError, match="not shown") as info:
            attempt()
        assert SECRET not in str(info.value)
    assert nobody_connected(sock)


def test_a_bad_header_name_is_refused(listener: tuple[socket.socket, str]) -> None:
    """A header name that is not a token (a space, a colon): ValueError before connecting."""
    sock, address = listener
    for name in ("X Trace", "X:Trace", ""):
        with pytest.raises(ValueError, match="name"):
            jws.WsSession.open(f"ws://{address}/ws", headers={name: "v"}, timeout=2)
    assert nobody_connected(sock)


# -- 2. fork -------------------------------------------------------------------------------------


def in_child(work: Any) -> int:
    """Fork; run ``work()`` in the child, which exits with what it returns (99 on an
    exception, 98 if it hangs); return the child's status. Bounded in time."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 99
        try:
            threading.Timer(5.0, lambda: os._exit(98)).start()
            status = work()
        finally:
            os._exit(status)
    waited: list[int] = []
    waiter = threading.Thread(target=lambda: waited.append(os.waitpid(pid, 0)[1]))
    waiter.start()
    waiter.join(WAIT)
    if waiter.is_alive():
        os.kill(pid, 9)
        waiter.join(WAIT)
    return os.waitstatus_to_exitcode(waited[0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads running
def test_after_fork_the_child_cannot_use_the_session_and_the_parent_does_not_notice(
    server: ReferenceServer,
) -> None:
    """The child's call, next_frame and send raise at once; its close() writes nothing."""
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:
        ws.call(ECHO, timeout=5)
        seen = server.requests_seen()

        def child() -> int:
            for use in (
                lambda: ws.call(ECHO, timeout=1),
                lambda: ws.next_frame(timeout=1),
                lambda: ws.send_request(ECHO),
                ws.ping,
            ):
                try:
                    use()
                except jws.SessionClosed as exc:
                    if "fork" not in str(exc):
                        return 2
                else:
                    return 1
            ws.close()  # returns at once, writes no Close to the parent's socket
            return 0 if ws.closed else 3

        assert in_child(child) == 0
        # The parent: nothing was sent by the child, and the session goes on.
        assert isinstance(ws.call(ECHO, timeout=5), jws.Response)
        assert server.requests_seen() == seen + 1
        assert not ws.closed


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_after_fork_a_reconnecting_session_is_the_parents(server: ReferenceServer) -> None:
    """A forked ReconnectingSession: every use raises, close() returns at once."""
    with jws.ReconnectingSession(server.base_url, auth=ALICE, push=True) as rs:
        rs.wait_connected(WAIT)

        def child() -> int:
            for use in (
                lambda: rs.call(ECHO, timeout=1),
                lambda: rs.next_frame(timeout=1),
                lambda: rs.wait_connected(timeout=1),
            ):
                try:
                    use()
                except jws.SessionClosed:
                    continue
                return 1
            rs.close()
            return 0

        assert in_child(child) == 0
        assert isinstance(rs.call(ECHO, timeout=5), jws.Response)
        assert rs.reconnects == 0


# -- 3. call ids ---------------------------------------------------------------------------------


def test_automatic_call_ids_never_repeat_an_explicit_one() -> None:
    """An explicit c1, then automatic ids: c0 and c2, never a second c1."""
    b = jws.RequestBuilder()
    b.call("Core/echo", {"n": 1}, call_id="c1")
    b.call("Core/echo", {"n": 2})
    b.call("Core/echo", {"n": 3})
    assert [inv.call_id for inv in b.build().method_calls] == ["c1", "c0", "c2"]
    with pytest.raises(ValueError, match="already used"):
        b.call("Core/echo", {}, call_id="c0")


def test_send_request_refuses_ids_reserved_for_call(ws: jws.WsSession) -> None:
    """An id of the form call() uses would be taken by (or lost to) a pending call."""
    for reserved in ("jws1.1", "jws42.x"):
        with pytest.raises(ValueError, match="reserved"):
            ws.send_request(ECHO, id=reserved)
    ws.send_request(ECHO, id="jwsx.1")  # not of that form: fine
    assert isinstance(ws.next_frame(timeout=5), jws.Response)


# -- 5. close() and ping() arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [(70000, ""), (1005, ""), (999, ""), (1002, ""), (2000, ""), (5000, ""), (1000, "é" * 62)],
)
def test_close_refuses_codes_and_reasons_rfc_6455_forbids(
    code: int, reason: str, ws: jws.WsSession
) -> None:
    """Only 1000 and 3000-4999, a reason of at most 123 bytes: ValueError, still usable."""
    with pytest.raises(ValueError):
        ws.close(code, reason)
    assert not ws.closed
    assert isinstance(ws.call(ECHO, timeout=5), jws.Response)


def test_ping_payload_over_125_bytes_is_refused(ws: jws.WsSession) -> None:
    """A Ping payload is at most 125 bytes (RFC 6455 §5.5)."""
    with pytest.raises(ValueError, match="125"):
        ws.ping(b"x" * 126)
    ws.ping(b"x" * 125)
    assert isinstance(ws.call(ECHO, timeout=5), jws.Response)


def test_an_application_close_code_and_a_123_byte_reason_go_out() -> None:
    """close(4000, 123 bytes) is sent as it is."""
    with scripted_session() as (_, ws, peer):
        ws.close(4000, "r" * 123, timeout=0)
        opcode, _fin, data = peer.recv_frame()
    assert opcode == CLOSE
    assert data == struct.pack(">H", 4000) + b"r" * 123


# -- 6. a forgotten session ------------------------------------------------------------------------


def test_forgotten_sessions_are_collected_with_a_resource_warning(server: ReferenceServer) -> None:
    """20 sessions dropped without close(): collected, warned about, threads and fds freed."""
    fds = open_fds()
    refs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(20):
            session = jws.connect(server.base_url, auth=ALICE, timeout=5)
            refs.append(weakref.ref(session))
        del session
        gc.collect()
    assert sum(issubclass(w.category, ResourceWarning) for w in caught) >= 20
    del caught  # a warning's source is the session: the record kept it alive
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert not wait_gone(library_threads(), timeout=WAIT)
    assert server.wait_for_connections(0, timeout=WAIT)
    assert open_fds() <= fds


@pytest.mark.parametrize("kind", ["WsSession", "ReconnectingSession"])
def test_a_process_that_exits_without_close_exits_at_once(
    server: ReferenceServer, kind: str
) -> None:
    """A script that ends with sessions open (in module globals, in a list, in a frame)
    exits with status 0 in seconds: on Python 3.11 it hung for ever, its finalizer
    starting a thread that could never run."""
    script = f"""
import sys
import jmapws_sync as jws
auth = jws.BasicAuth("alice", sys.argv[2])
if "{kind}" == "WsSession":
    ws = jws.connect(sys.argv[1], auth=auth, timeout=5)
    many = [jws.connect(sys.argv[1], auth=auth, timeout=5) for _ in range(20)]
else:
    ws = jws.ReconnectingSession(sys.argv[1], auth=auth, push=True)
    ws.wait_connected(timeout=5)
    many = [jws.ReconnectingSession(sys.argv[1], auth=auth) for _ in range(5)]
ws.call(jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {{}}, "c0")]),
        timeout=5)
print("done", flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, server.base_url, USERS["alice"]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"


def test_an_idle_session_keeps_no_message_alive(ws: jws.WsSession) -> None:
    """Once the application drops what next_frame() gave it, nothing in the session holds
    it: the reader thread, blocked on the next message, must not keep the last one (a
    16 MiB answer stayed resident for as long as the session was quiet)."""
    for request_id in ("r1", "r2"):  # the first frame of a session and a later one
        ws.send_request(
            jws.Request(
                using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"a": 1}, "c0")]
            ),
            id=request_id,
        )
        frame = ws.next_frame(timeout=WAIT)
        assert isinstance(frame, jws.Response)
        ref = weakref.ref(frame)
        del frame
        gc.collect()
        assert ref() is None


def test_a_forgotten_reconnecting_session_stops_reconnecting(server: ReferenceServer) -> None:
    """A ReconnectingSession dropped without close() is collected and its supervisor ends."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        rs = jws.ReconnectingSession(server.base_url, auth=ALICE, push=True)
        rs.wait_connected(WAIT)
        ref = weakref.ref(rs)
        del rs
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    del caught  # a warning's source is the session: the record kept it alive
    gc.collect()
    assert ref() is None
    assert not wait_gone(library_threads(), timeout=WAIT)
    assert server.wait_for_connections(0, timeout=WAIT)


# -- 7. the server's Close frame ------------------------------------------------------------------


def close_code_sent(peer: Peer) -> int:
    """The code of the Close the client answers with."""
    while True:
        opcode, _fin, data = peer.recv_frame()
        if opcode == CLOSE:
            return int(struct.unpack(">H", data[:2])[0])


@pytest.mark.parametrize(
    "payload",
    [struct.pack(">H", code) for code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)]
    + [b"\x03"],
    ids=lambda p: f"code-{int.from_bytes(p, 'big') if len(p) == 2 else 'one-byte'}",
)
def test_a_close_frame_rfc_6455_forbids_is_a_protocol_error(payload: bytes) -> None:
    """Reserved or impossible codes, a one-byte body: WebSocketProtocolError, we close 1002."""
    with scripted_session() as (_, ws, peer):
        peer.send_frame(CLOSE, payload)
        with pytest.raises(jws.WebSocketProtocolError) as info:
            ws.next_frame(timeout=WAIT)
        assert info.value.close_code == 1002
        assert close_code_sent(peer) == 1002


def test_a_close_reason_that_is_not_utf8_is_1007() -> None:
    """A Close reason that is not UTF-8: WebSocketProtocolError, we close 1007."""
    with scripted_session() as (_, ws, peer):
        peer.send_frame(CLOSE, struct.pack(">H", 4000) + b"\xff\xfe")
        with pytest.raises(jws.WebSocketProtocolError, match="UTF-8") as info:
            ws.next_frame(timeout=WAIT)
        assert info.value.close_code == 1007
        assert close_code_sent(peer) == 1007


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1014, 3000, 4999])
def test_valid_close_codes_end_the_stream_as_before(code: int) -> None:
    """1000/1001 are clean ends; others are ConnectionClosedError with code and reason."""
    with scripted_session() as (_, ws, peer):
        peer.send_frame(CLOSE, struct.pack(">H", code) + "bye ✓".encode())
        if code in (1000, 1001):
            assert ws.next_frame(timeout=WAIT) is None
        else:
            with pytest.raises(jws.ConnectionClosedError) as info:
                ws.next_frame(timeout=WAIT)
            assert (info.value.code, info.value.reason) == (code, "bye ✓")


# -- 8. timeouts -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_infinite_timeouts_mean_no_limit(server: ReferenceServer) -> None:
    """math.inf wherever a timeout is taken: no OverflowError, no timer thread traceback."""
    inf = math.inf
    with jws.connect(server.base_url, auth=ALICE, timeout=inf, close_timeout=inf) as ws:
        assert isinstance(ws.call(ECHO, timeout=inf), jws.Response)
        ws.send_request(ECHO, id="r")
        assert isinstance(ws.next_frame(timeout=inf), jws.Response)
        ws.close(timeout=inf)
    with jws.WsSession.open(server.ws_url, auth=ALICE, timeout=inf) as ws:
        ws.call(ECHO, timeout=inf)
    rs = jws.ReconnectingSession(
        server.base_url, auth=ALICE, connect_timeout=inf, close_timeout=inf, ping_timeout=inf
    )
    try:
        rs.wait_connected(timeout=inf)
        assert isinstance(rs.call(ECHO, timeout=inf), jws.Response)
    finally:
        rs.close(timeout=inf)
    assert isinstance(
        jws.fetch_session(server.base_url, auth=ALICE, timeout=inf), jws.SessionResource
    )


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_nan_and_negative_timeouts_are_value_errors_up_front(
    bad: float, server: ReferenceServer, listener: tuple[socket.socket, str]
) -> None:
    """NaN or a negative timeout: ValueError before anything is sent or waited for."""
    sock, address = listener
    with pytest.raises(ValueError, match="timeout"):
        jws.WsSession.open(f"ws://{address}/ws", timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        jws.fetch_session(f"http://{address}", timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        jws.ReconnectingSession(f"http://{address}", connect_timeout=bad)
    assert nobody_connected(sock)
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:
        seen = server.requests_seen()
        for use in (
            lambda: ws.call(ECHO, timeout=bad),
            lambda: ws.next_frame(timeout=bad),
            lambda: next(ws.changes(timeout=bad)),
            lambda: ws.close(timeout=bad),
        ):
            with pytest.raises(ValueError, match="timeout"):
                use()
        assert server.requests_seen() == seen
        assert not ws.closed


# -- 9. JSON from the server ------------------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_from_the_server_are_parse_errors(constant: str) -> None:
    """RFC 8259 has no NaN: a frame with one is a ParseError, and the stream goes on."""

    def handler(peer: Peer) -> None:
        peer.send_frame(
            TEXT, f'{{"@type": "StateChange", "changed": {{}}, "x": {constant}}}'.encode()
        )
        peer.send_json({"@type": "X-After"})
        barrier(peer)
        idle(peer)

    with RawServer(handler) as server, jws.WsSession.open(server.url, timeout=5) as ws:
        with pytest.raises(jws.ParseError, match=constant.lstrip("-")):
            ws.next_frame(timeout=WAIT)
        frame = ws.next_frame(timeout=WAIT)
        assert isinstance(frame, jws.UnknownFrame)
        assert json.dumps(frame.raw) == '{"@type": "X-After"}'
