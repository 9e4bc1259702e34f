"""permessage-deflate (RFC 7692): the negotiation, both directions, the limit after inflating.

Without sockets for the rules (accept(), Inflater, FrameReader with RSV1), then on
loopback against the reference server (aiohttp's own deflate) and against a raw server
that sends exactly the bytes a test wants: compressed frames, bombs, bad answers.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync._deflate import MIN_SIZE, Deflater, Inflater, Params, accept, offer
from jmapws_sync._framing import FrameReader, Opcode
from jmapws_sync.testing import ReferenceServer

from .conftest import ALICE, USERS
from .support.faultservers import barrier
from .support.rawws import CLOSE, CONT, PING, TEXT, Peer, RawServer, idle, server_frame

URL = "ws://h/ws"
ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {}, "e")])
WAIT = 10.0


def deflate(data: bytes, bits: int = 12) -> bytes:
    """What a server sends for ``data``: raw deflate, sync-flushed, the tail cut."""
    z = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def compressed_frame(data: bytes, *, fin: bool = True) -> bytes:
    """A server frame with RSV1 set (rsv=4 is the RSV1 bit)."""
    return server_frame(TEXT, deflate(data), rsv=4, fin=fin)


# -- the negotiation, without sockets ------------------------------------------------------------


def test_the_offer_asks_for_the_windows_chosen_by_measurement() -> None:
    assert offer() == ("permessage-deflate; server_max_window_bits=14; client_max_window_bits=11")


@pytest.mark.parametrize(
    ("answer", "params"),
    [
        ("permessage-deflate", Params("permessage-deflate")),
        (
            "permessage-deflate; server_max_window_bits=12",
            Params("permessage-deflate; server_max_window_bits=12", server_bits=12),
        ),
        (
            "Permessage-Deflate; server_no_context_takeover; client_no_context_takeover;"
            ' client_max_window_bits="9"; server_max_window_bits=8',
            Params(
                "Permessage-Deflate; server_no_context_takeover; client_no_context_takeover;"
                ' client_max_window_bits="9"; server_max_window_bits=8',
                server_bits=8,
                client_bits=9,
                server_no_context_takeover=True,
                client_no_context_takeover=True,
            ),
        ),
    ],
)
def test_every_parameter_a_server_may_answer_is_read(answer: str, params: Params) -> None:
    """RFC 7692 §7.1: both no_context_takeovers and both max_window_bits, quoted or not."""
    assert accept(answer, URL) == params


@pytest.mark.parametrize(
    "answer",
    [
        "x-webkit-deflate-frame",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; server_max_window_bits=15",  # more than offered
        "permessage-deflate; client_max_window_bits=12",  # more than offered
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=x",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; mystery=1",
    ],
)
def test_an_answer_the_offer_did_not_allow_is_a_handshake_error(answer: str) -> None:
    """RFC 7692 §5.1: the client fails the connection."""
    with pytest.raises(jws.HandshakeError):
        accept(answer, URL)


# -- inflating and deflating, without sockets -----------------------------------------------------


def reader(data: bytes, params: Params | None, limit: int = 1 << 20) -> FrameReader:
    stream = io.BytesIO(data)

    def read_exact(n: int) -> bytes:
        chunk = stream.read(n)
        if len(chunk) != n:
            raise EOFError
        return chunk

    return FrameReader(
        read_exact, max_message_size=limit, inflater=Inflater(params) if params else None
    )


PARAMS = Params("permessage-deflate", server_bits=12)


def test_compressed_messages_share_their_context() -> None:
    """Context takeover: the second message refers to the first one's bytes, and inflates."""
    z = zlib.compressobj(6, zlib.DEFLATED, -12)
    texts = [
        json.dumps({"@type": "StateChange", "changed": {"a": {"Email": str(n)}}}) for n in range(3)
    ]
    data = b""
    for text in texts:
        payload = z.compress(text.encode()) + z.flush(zlib.Z_SYNC_FLUSH)
        data += server_frame(TEXT, payload[:-4], rsv=4)
    frames = reader(data, PARAMS)
    assert [frames.read() for _ in texts] == [(Opcode.TEXT, t) for t in texts]


def test_a_fragmented_compressed_message_inflates_and_pings_may_come_between() -> None:
    """RSV1 on the first fragment only; a Ping between fragments is read as usual."""
    body = json.dumps({"pad": "abc" * 2000}).encode()
    compressed = deflate(body)
    half = len(compressed) // 2
    data = server_frame(TEXT, compressed[:half], rsv=4, fin=False)
    data += server_frame(PING, b"p") + server_frame(CONT, compressed[half:])
    frames = reader(data, PARAMS)
    assert frames.read()[0] is Opcode.CONT
    assert frames.read() == (Opcode.PING, b"p")
    assert frames.read() == (Opcode.TEXT, body.decode())


def test_no_context_takeover_inflates_each_message_on_its_own() -> None:
    """server_no_context_takeover: each message was compressed from nothing."""
    params = Params("permessage-deflate", server_bits=12, server_no_context_takeover=True)
    data = compressed_frame(b'{"a": 1}' * 50) + compressed_frame(b'{"a": 1}' * 50)
    frames = reader(data, params)
    assert frames.read() == frames.read() == (Opcode.TEXT, '{"a": 1}' * 50)


@pytest.mark.parametrize(
    ("frame", "params"),
    [
        (compressed_frame(b"{}"), None),  # RSV1 without the extension
        (server_frame(PING, b"x", rsv=4), PARAMS),  # RSV1 on a control frame
        (server_frame(TEXT, b"{", fin=False) + server_frame(CONT, b"}", rsv=4), PARAMS),
        (server_frame(TEXT, b"{}", rsv=2), PARAMS),  # RSV2: never ours
    ],
    ids=["not-negotiated", "control", "continuation", "rsv2"],
)
def test_rsv1_where_rfc_7692_forbids_it_is_a_protocol_error(
    frame: bytes, params: Params | None
) -> None:
    """RSV1 without a negotiated extension, on a control frame or a continuation: 1002."""
    frames = reader(frame, params)
    if frame.startswith(server_frame(TEXT, b"{", fin=False)):
        frames.read()  # the first fragment is fine
    with pytest.raises(jws.WebSocketProtocolError) as info:
        frames.read()
    assert info.value.close_code == 1002


def test_data_that_does_not_inflate_is_1007() -> None:
    frames = reader(server_frame(TEXT, b"\xff\xfe\xfd not deflate", rsv=4), PARAMS)
    with pytest.raises(jws.WebSocketProtocolError) as info:
        frames.read()
    assert info.value.close_code == 1007


def bomb(inflated: int) -> bytes:
    """A compressed message of zeros: about a thousandth of ``inflated`` on the wire."""
    z = zlib.compressobj(9, zlib.DEFLATED, -12)
    chunk = bytes(1 << 20)
    out = b"".join(z.compress(chunk) for _ in range(inflated >> 20))
    return (out + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_a_deflate_bomb_stops_at_the_limit_in_bounded_memory() -> None:
    """1 MiB on the wire inflating to 1 GiB: MessageTooLarge at 16 MiB, peak under 40 MiB."""
    payload = bomb(1 << 30)
    assert len(payload) < 2 << 20
    frames = reader(server_frame(TEXT, payload, rsv=4), PARAMS, limit=16 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(jws.MessageTooLarge) as info:
            frames.read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.close_code == 1009
    assert info.value.size > 16 << 20
    assert peak < 40 << 20, peak


def test_the_deflater_skips_tiny_messages_and_round_trips_the_rest() -> None:
    """Messages under MIN_SIZE go out as they are; the rest inflate back, context shared."""
    deflater = Deflater(Params("permessage-deflate"))
    inflate = zlib.decompressobj(-12)
    for n in range(5):
        text = json.dumps({"methodCalls": [["Email/get", {"ids": [f"M{n}"] * 40}, "c0"]]})
        assert len(text) >= MIN_SIZE
        out = deflater.compress(text.encode())
        assert inflate.decompress(out + b"\x00\x00\xff\xff").decode() == text
        assert len(out) < len(text) // 3


# -- on loopback: the reference server ------------------------------------------------------------


@pytest.fixture
def deflating(request: pytest.FixtureRequest) -> Iterator[ReferenceServer]:
    options: dict[str, Any] = getattr(request, "param", {})
    with ReferenceServer(users=USERS, **options) as srv:
        yield srv


def big_echo(ws: jws.WsSession, size: int = 100_000) -> None:
    b = jws.RequestBuilder()
    call = b.call("Core/echo", {"pad": "Email/get " * (size // 10)})
    assert len(ws.call(b.build(), timeout=WAIT).get(call.call_id)["pad"]) == size


@pytest.mark.parametrize(
    "deflating",
    [
        {},
        {"compression_no_context_takeover": True},
        {"compression_window_bits": 9},
    ],
    indirect=True,
    ids=["default", "no-context-takeover", "9-bit-window"],
)
def test_calls_and_pushes_go_through_compression_both_ways(deflating: ReferenceServer) -> None:
    """Offered by default; negotiated; large calls, many small ones and a push go through."""
    with jws.connect(deflating.base_url, auth=ALICE, timeout=5) as ws:
        assert ws.compression is not None
        assert ws.compression.startswith("permessage-deflate")
        handshake = deflating.last_handshake()
        assert handshake is not None
        assert handshake.offered_extensions == offer()
        for _ in range(3):
            big_echo(ws)
        for _ in range(50):
            ws.call(ECHO, timeout=WAIT)
        ws.enable_push()
        ws.call(ECHO, timeout=WAIT)
        deflating.change_note("alice", title="compressed")
        assert isinstance(next(ws.changes(timeout=WAIT)), jws.StateChange)


def test_a_bad_compression_value_is_refused_before_any_io() -> None:
    """connect(), WsSession.open() and ReconnectingSession refuse it at once, nobody
    contacted (the supervisor used to meet it at its first attempt and end the stream)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        for bad in ("gzip", "", True):
            with pytest.raises(ValueError, match="compression"):
                jws.connect(f"http://127.0.0.1:{port}", compression=bad)
            with pytest.raises(ValueError, match="compression"):
                jws.WsSession.open(f"ws://127.0.0.1:{port}/ws", compression=bad)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="compression"):
                jws.ReconnectingSession(f"http://127.0.0.1:{port}", compression=bad)  # type: ignore[arg-type]
        assert not select.select([listener], [], [], 0.2)[0]  # nobody connected


def test_compression_none_offers_nothing(server: ReferenceServer) -> None:
    """compression=None: no offer, nothing negotiated, calls as before."""
    with jws.connect(server.base_url, auth=ALICE, timeout=5, compression=None) as ws:
        assert ws.compression is None
        big_echo(ws)
    handshake = server.last_handshake()
    assert handshake is not None
    assert handshake.offered_extensions is None


def test_a_server_that_will_not_compress_is_fine() -> None:
    with (
        ReferenceServer(users=USERS, compression=False) as srv,
        jws.connect(srv.base_url, auth=ALICE, timeout=5) as ws,
    ):
        assert ws.compression is None
        big_echo(ws)


def test_the_size_limit_applies_to_the_inflated_message(server: ReferenceServer) -> None:
    """A 200 KB answer that is 2 KB on the wire breaks a 100 KB limit: MessageTooLarge."""
    with jws.connect(server.base_url, auth=ALICE, timeout=5, max_message_size=100_000) as ws:
        b = jws.RequestBuilder()
        b.call("Core/echo", {"pad": "a" * 200_000})
        with pytest.raises(jws.MessageTooLarge) as info:
            ws.call(b.build(), timeout=WAIT)
        assert info.value.close_code == 1009


def test_reconnecting_session_and_its_compression_option(server: ReferenceServer) -> None:
    """ReconnectingSession offers it too, and compression=None turns it off."""
    for option, expected in (("deflate", True), (None, False)):
        with jws.ReconnectingSession(server.base_url, auth=ALICE, compression=option) as rs:
            rs.call(ECHO, timeout=WAIT)
            handshake = server.last_handshake()
            assert handshake is not None
            assert (handshake.offered_extensions is not None) is expected


def test_each_reconnect_starts_fresh_compression_contexts(server: ReferenceServer) -> None:
    """Context takeover lasts one connection: after each of 5 resets the next connection
    inflates and deflates from empty windows on both sides, so big answers and pushes go
    on arriving whole (a context carried over would be 1007 on one side or the other)."""
    big = jws.RequestBuilder()
    echo = big.call("Core/echo", {"notes": [f"note {i}: " + "jmap " * 40 for i in range(60)]})
    request = big.build()
    fast = jws.Backoff(first=(0.005, 0.02), factor=2.0, ceiling=0.1, jitter=0.2, reset_after=0)
    with jws.ReconnectingSession(
        server.base_url, auth=ALICE, push=True, backoff=fast, ping_interval=None
    ) as rs:
        for cycle in range(6):
            for _ in range(3):  # several messages each way: the windows fill up
                assert (
                    _call_through(rs, request)
                    .get(echo.call_id)["notes"][59]
                    .startswith("note 59: ")
                )
            server.store.create_note("a-alice", title=f"cycle {cycle}", body="x" * 500)
            change = next(c for c in rs.changes(timeout=WAIT) if "a-alice" in c.changed)
            assert change.changed["a-alice"]["Note"]
            if cycle < 5:
                server.reset_all()
        assert rs.reconnects == 5
        handshake = server.last_handshake()
        assert handshake is not None
        assert handshake.offered_extensions is not None


def _call_through(rs: jws.ReconnectingSession, request: jws.Request) -> jws.Response:
    """call(), again after a ConnectionLost (the reset was not noticed yet)."""
    for _ in range(20):
        with contextlib.suppress(jws.ConnectionLost):
            return rs.call(request, timeout=WAIT)
    raise AssertionError("no successful call in 20 tries")


# -- on loopback: a raw server that sends the bytes ------------------------------------------------


def test_what_the_client_sends_is_compressed_with_rsv1_tiny_messages_not() -> None:
    """A big request goes out with RSV1 and inflates to the request; a small one does not."""
    answer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n"
    with RawServer(idle, extra_headers=answer) as server:
        received: list[tuple[int, bytes]] = []
        server.handler = lambda peer: received.extend(_read_until_close(peer))
        with jws.WsSession.open(server.url, timeout=5, close_timeout=2) as ws:
            assert ws.compression == "permessage-deflate; server_max_window_bits=12"
            b = jws.RequestBuilder()
            b.call("Core/echo", {"pad": "x" * 5000})
            ws.send_request(b.build(), id="big")
            ws.send_request(ECHO, id="s")
    first, rsv1 = received[0]
    assert rsv1
    inflated = zlib.decompressobj(-15).decompress(first + b"\x00\x00\xff\xff")
    assert json.loads(inflated)["id"] == "big"
    assert received[1][1] is False
    assert json.loads(received[1][0])["id"] == "s"


def _read_until_close(peer: Peer) -> Iterator[tuple[bytes, bool]]:
    """The client's messages as (payload, RSV1), unmasked, until its Close."""
    while True:
        opcode, _fin, data = peer.recv_frame()
        if opcode == CLOSE:
            peer.send_frame(CLOSE, data[:2])
            return
        yield data, peer.rsv1


@pytest.mark.parametrize(
    "answer",
    [
        "permessage-deflate; client_max_window_bits=15",
        "x-webkit-deflate-frame",
        "permessage-deflate; mystery",
    ],
)
def test_the_handshake_fails_on_an_answer_not_allowed(answer: str) -> None:
    """HandshakeError, and the session is never opened."""
    header = f"Sec-WebSocket-Extensions: {answer}\r\n"
    with RawServer(idle, extra_headers=header) as server, pytest.raises(jws.HandshakeError):
        jws.WsSession.open(server.url, timeout=5)


def test_an_extension_answered_when_none_was_offered_is_a_handshake_error() -> None:
    header = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    with RawServer(idle, extra_headers=header) as server, pytest.raises(jws.HandshakeError):
        jws.WsSession.open(server.url, timeout=5, compression=None)


def test_a_bomb_from_a_server_ends_the_session_with_1009() -> None:
    """The deflate bomb over a socket: MessageTooLarge, the client closes 1009."""
    payload = bomb(1 << 30)

    def handler(peer: Peer) -> None:
        peer.send_raw(server_frame(TEXT, payload, rsv=4))
        idle(peer)

    header = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n"
    with RawServer(handler, extra_headers=header) as server:
        ws = jws.WsSession.open(server.url, timeout=5, close_timeout=1)
        with pytest.raises(jws.MessageTooLarge):
            ws.next_frame(timeout=WAIT)
        assert ws.closed
        ws.close()


def test_uncompressed_messages_are_still_accepted_after_negotiation() -> None:
    """RFC 7692 lets a server send a message without RSV1: it is read as it is."""

    def handler(peer: Peer) -> None:
        peer.send_json({"@type": "X-Plain"})
        peer.send_raw(compressed_frame(json.dumps({"@type": "X-Deflated"}).encode()))
        barrier(peer)
        idle(peer)

    header = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n"
    with (
        RawServer(handler, extra_headers=header) as server,
        jws.WsSession.open(server.url, timeout=5, close_timeout=1) as ws,
    ):
        frames = [ws.next_frame(timeout=WAIT) for _ in range(2)]
    assert [f.type_name for f in frames] == ["X-Plain", "X-Deflated"]  # type: ignore[union-attr]
