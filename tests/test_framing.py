"""RFC 6455 framing without sockets: FrameReader over io.BytesIO, encode_frame, Close bodies.

Every rule the reader enforces is checked here byte for byte, and random byte streams
(hypothesis) must give events or the documented framing errors, nothing else, and never
make the reader ask for more payload than the size limit allows.
"""

from __future__ import annotations

import io
import struct
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings

import jmapws_sync as jws
from jmapws_sync._framing import (
    CloseCode,
    FrameReader,
    Opcode,
    close_payload,
    encode_frame,
    parse_close,
)

from .support.rawws import BINARY, CLOSE, CONT, PING, PONG, TEXT
from .support.rawws import server_frame as frame
from .support.strategies import byte_streams

RUNS: Counter[str] = Counter()


class Stream:
    """``read_exact`` over bytes: EOFError when short; remembers the largest read asked."""

    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)
        self.largest = 0

    def read_exact(self, n: int) -> bytes:
        self.largest = max(self.largest, n)
        data = self._io.read(n)
        if len(data) != n:
            raise EOFError
        return data


def reader(data: bytes, limit: int = 1 << 20) -> tuple[FrameReader, Stream]:
    stream = Stream(data)
    return FrameReader(stream.read_exact, max_message_size=limit), stream


def events(data: bytes, limit: int = 1 << 20) -> list[tuple[Opcode, str | bytes]]:
    """Every event until the bytes run out."""
    frames, _ = reader(data, limit)
    out = []
    while True:
        try:
            out.append(frames.read())
        except EOFError:
            return out


# -- messages ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_of_every_length_class_is_one_event(size: int) -> None:
    """7-bit, 16-bit and 64-bit lengths: one TEXT event with the whole string."""
    text = "é" * (size // 2) + "x" * (size % 2)
    assert events(frame(TEXT, text.encode())) == [(Opcode.TEXT, text)]


def test_binary_and_control_frames_carry_their_payload() -> None:
    """BINARY is bytes; PING, PONG and CLOSE carry their raw payload."""
    data = frame(BINARY, b"\x00\xff") + frame(PING, b"p") + frame(PONG, b"q")
    data += frame(CLOSE, b"\x03\xe8bye")
    assert events(data) == [
        (Opcode.BINARY, b"\x00\xff"),
        (Opcode.PING, b"p"),
        (Opcode.PONG, b"q"),
        (Opcode.CLOSE, b"\x03\xe8bye"),
    ]


def test_fragments_are_reassembled_around_control_frames() -> None:
    """Fragments give CONT events, a ping between them its own, the last one the message."""
    data = frame(TEXT, b'{"a":', fin=False) + frame(PING, b"x") + frame(CONT, b"", fin=False)
    data += frame(CONT, b" 1}")
    assert events(data) == [
        (Opcode.CONT, b'{"a":'),
        (Opcode.PING, b"x"),
        (Opcode.CONT, b""),
        (Opcode.TEXT, '{"a": 1}'),
    ]


def test_a_character_split_across_fragments_is_fine() -> None:
    """UTF-8 is checked on the whole message, not per fragment."""
    encoded = "€".encode()
    data = frame(TEXT, encoded[:1], fin=False) + frame(CONT, encoded[1:])
    assert events(data)[-1] == (Opcode.TEXT, "€")


# -- what is refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (frame(TEXT, b"{}", rsv=4), "reserved"),
        (frame(TEXT, b"{}", mask=True), "masked"),
        (frame(0x3, b""), "opcode"),
        (frame(0xB, b""), "opcode"),
        (frame(PING, b"x" * 126), "control"),
        (frame(PING, b"x", fin=False), "control"),
        (frame(CONT, b"x"), "continuation"),
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), "inside"),
    ],
)
def test_framing_violations_are_protocol_errors_with_1002(data: bytes, words: str) -> None:
    """Each RFC 6455 §5 violation raises WebSocketProtocolError carrying close code 1002."""
    frames, _ = reader(data)
    if data.startswith(frame(TEXT, b"a", fin=False)):
        frames.read()  # the first fragment is fine
    with pytest.raises(jws.WebSocketProtocolError, match=words) as info:
        frames.read()
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_invalid_utf8_is_1007_and_carries_no_payload() -> None:
    """Bad UTF-8: close code 1007, and no __context__ that would drag the bytes along."""
    frames, _ = reader(frame(TEXT, b'{"secret": "\xff"}'))
    with pytest.raises(jws.WebSocketProtocolError) as info:
        frames.read()
    assert info.value.close_code == CloseCode.INVALID_DATA
    assert info.value.__context__ is None
    assert info.value.__cause__ is None


@pytest.mark.parametrize("announced", [1025, 2**16, 2**40, 2**64 - 1])
def test_announced_length_over_the_limit_is_refused_before_reading_it(announced: int) -> None:
    """A header announcing more than the limit raises at once; no payload read is asked."""
    frames, stream = reader(frame(TEXT, b"", length=announced), limit=1024)
    with pytest.raises(jws.MessageTooLarge) as info:
        frames.read()
    assert info.value.close_code == 1009
    assert info.value.size == announced
    assert stream.largest <= 8  # the header only


def test_fragments_adding_up_over_the_limit_are_refused() -> None:
    """The limit is on the message: 3 fragments of 400 against 1000 fail at the third header."""
    data = frame(TEXT, b"a" * 400, fin=False) + frame(CONT, b"b" * 400, fin=False)
    data += frame(CONT, b"c" * 400)
    frames, stream = reader(data, limit=1000)
    frames.read()
    frames.read()
    with pytest.raises(jws.MessageTooLarge):
        frames.read()
    assert stream.largest == 400


def test_end_of_stream_mid_frame_is_the_callers_eof() -> None:
    """read_exact's own exception (here EOFError) comes through untouched."""
    frames, _ = reader(frame(TEXT, b"hello")[:4])
    with pytest.raises(EOFError):
        frames.read()


# -- writing ---------------------------------------------------------------------------------


def unmask(data: bytes) -> tuple[int, bool, bytes]:
    """(opcode, masked, payload) of one client frame."""
    first, second = data[0], data[1]
    n, offset = second & 0x7F, 2
    if n == 126:
        (n,) = struct.unpack(">H", data[2:4])
        offset = 4
    elif n == 127:
        (n,) = struct.unpack(">Q", data[2:10])
        offset = 10
    key = data[offset : offset + 4]
    body = data[offset + 4 :]
    assert len(body) == n
    assert first & 0x80  # FIN
    return first & 0x0F, bool(second & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 3, 125, 126, 65535, 65536])
def test_encode_frame_masks_every_length_class(size: int) -> None:
    """A client frame is final, masked (RFC 6455 §5.3), and unmasks to the payload."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    opcode, masked, body = unmask(encode_frame(Opcode.TEXT, payload))
    assert (opcode, masked, body) == (Opcode.TEXT, True, payload)


def test_close_bodies_round_trip_and_no_code_is_1005() -> None:
    """close_payload and parse_close agree; an empty body means 1005."""
    assert parse_close(close_payload(4001, "gone ✓")) == (4001, "gone ✓")
    assert parse_close(b"") == (CloseCode.NO_STATUS, "")


# -- random byte streams ------------------------------------------------------------------------


# 2,000 examples take 20 s on a quiet 2-core machine and twice that beside a loaded one
# (seen: over the 60 s default, which ended a whole suite run): a bound with room.
@pytest.mark.timeout(300)
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(byte_streams)
@example(b"")
@example(frame(TEXT, b"{}", length=2**40))
@example(frame(CLOSE, b"\x03\xf0closing"))
@example(frame(PING, b"") * 200)
def test_random_byte_streams_give_events_or_documented_errors(data: bytes) -> None:
    """Events, then EOFError or one framing error with a close code; never anything else."""
    RUNS["streams"] += 1
    frames, stream = reader(data, limit=4096)
    reads = 0
    codes: list[int] = []
    while True:
        try:
            opcode, payload = frames.read()
        except EOFError:
            RUNS["eof"] += 1
            break
        except (jws.WebSocketProtocolError, jws.MessageTooLarge) as exc:
            codes.append(exc.close_code)
            break
        reads += 1
        assert reads <= len(data)  # every event consumed at least two bytes
        assert isinstance(opcode, Opcode)
        assert isinstance(payload, str if opcode is Opcode.TEXT else bytes)
        RUNS[opcode.name] += 1
    assert set(codes) <= {1002, 1007, 1009}
    RUNS.update(f"close-{code}" for code in codes)
    assert stream.largest <= 4096
