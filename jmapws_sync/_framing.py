"""RFC 6455 framing for a client, with no I/O: frames in, messages out.

:class:`FrameReader` pulls bytes from a ``read_exact(n)`` callable (which returns exactly
``n`` bytes or raises, e.g. at the end of the stream), checks each frame header before it
reads any payload (a frame announcing 2**40 bytes is refused before a byte of it is
buffered), reassembles fragmented messages, checks UTF-8 once, strictly, in C, and returns
one :data:`Event` per frame read. A frame that breaks the rules raises one of the framing
errors of :mod:`jmapws_sync.errors`, each carrying the ``close_code`` to fail the connection
with (RFC 6455 §7.1.7): :class:`~jmapws_sync.errors.WebSocketProtocolError` (1002, or 1007
for bad UTF-8) or :class:`~jmapws_sync.errors.MessageTooLarge` (1009).

:func:`encode_frame` writes one client frame (masked, RFC 6455 §5.3); :func:`close_payload`
and :func:`parse_close` write and read the body of a Close frame (§5.5.1).
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import Final

from ._deflate import Inflater
from .errors import MessageTooLarge, WebSocketProtocolError

__all__ = [
    "MAX_CONTROL_PAYLOAD",
    "CloseCode",
    "Event",
    "FrameReader",
    "Opcode",
    "close_payload",
    "encode_frame",
    "parse_close",
    "valid_close_code",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 §7.4.1; 1012-1014 from the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: the Close frame had no code
    ABNORMAL = 1006  # never on the wire: the connection dropped without a Close
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008  # RFC 8887 §4.2: the credentials expired
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


#: A control frame's payload is at most this long (RFC 6455 §5.5).
MAX_CONTROL_PAYLOAD: Final = 125

#: What :meth:`FrameReader.read` returns: the opcode and the payload. TEXT carries the
#: whole message as ``str``, BINARY as ``bytes``; CONT stands for a fragment that did not
#: complete its message (its payload says whether it carried data); PING, PONG and CLOSE
#: carry their raw payload.
Event = tuple[Opcode, "str | bytes"]

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_unpack_short = struct.Struct(">H").unpack
_unpack_long = struct.Struct(">Q").unpack
_pack_header_16 = struct.Struct(">BBH").pack
_pack_header_64 = struct.Struct(">BBQ").pack
_OPCODES: Final = {int(op): op for op in Opcode}


def _protocol_error(message: str) -> WebSocketProtocolError:
    return WebSocketProtocolError(message, close_code=CloseCode.PROTOCOL_ERROR)


class FrameReader:
    """Reads RFC 6455 frames from a server and turns them into :data:`Event` s.

    ``read_exact(n)`` returns exactly ``n`` bytes or raises. ``max_message_size`` bounds a
    message, fragments added up; it is checked against the lengths the headers announce.
    Not thread-safe: one reader thread owns it.
    """

    __slots__ = (
        "_compressed",
        "_fragments",
        "_fragments_opcode",
        "_fragments_size",
        "_inflater",
        "_limit",
        "_read",
    )

    def __init__(
        self,
        read_exact: Callable[[int], bytes],
        *,
        max_message_size: int,
        inflater: Inflater | None = None,
    ) -> None:
        self._read = read_exact
        self._limit = max_message_size
        self._inflater = inflater  # permessage-deflate was negotiated (RFC 7692)
        # The message being reassembled: one buffer, however many fragments it comes in
        # (a list of them cost ~56 bytes of heap per payload byte in 1-byte fragments).
        self._fragments: bytearray | None = None
        self._fragments_opcode = _TEXT
        self._fragments_size = 0
        self._compressed = False

    def read(self) -> Event:
        """Read one frame; return what it amounts to (see :data:`Event`)."""
        read = self._read
        first, second = read(2)
        length = second & 0x7F
        opcode = _OPCODES.get(first & 0x0F)
        if opcode is None:
            raise _protocol_error(f"unknown opcode {first & 0x0F}")
        rsv = first & 0x70
        # RFC 7692 §6.1: RSV1 marks a compressed message, on its first frame only.
        if rsv and (rsv != 0x40 or self._inflater is None or opcode is _CONT or opcode >= 8):
            raise _protocol_error("frame with reserved bits set")
        if second & 0x80:  # RFC 6455 §5.1: a server never masks
            raise _protocol_error("masked frame from the server")
        if length == 126:
            (length,) = _unpack_short(read(2))
        elif length == 127:
            (length,) = _unpack_long(read(8))
        fin = first & 0x80

        if opcode >= Opcode.CLOSE:  # control frame, RFC 6455 §5.5
            if length > MAX_CONTROL_PAYLOAD or not fin:
                raise _protocol_error("invalid control frame")
            return opcode, read(length) if length else b""

        fragments = self._fragments
        if opcode is _CONT:
            if fragments is None:
                raise _protocol_error("continuation of nothing")
            size = self._fragments_size + length
            if size > self._limit:
                raise MessageTooLarge(size, self._limit)
            self._fragments_size = size
            data = read(length) if length else b""
            if self._compressed:
                fragments += self._inflate(data, fin)
            elif length:
                fragments += data
            if not fin:
                return _CONT, data
            self._fragments = None
            opcode = self._fragments_opcode
            message: bytes | bytearray = fragments
        else:
            if fragments is not None:
                raise _protocol_error("new message inside a fragmented one")
            if length > self._limit:
                raise MessageTooLarge(length, self._limit)
            data = read(length) if length else b""
            self._compressed = bool(rsv)
            message = self._inflate(data, fin) if rsv else data
            if not fin:
                self._fragments = bytearray(message)
                self._fragments_opcode = opcode
                self._fragments_size = length
                return _CONT, data

        if opcode is _BINARY:
            return _BINARY, bytes(message)
        try:
            return _TEXT, message.decode("utf-8")
        except UnicodeDecodeError:
            pass  # raised outside, so that no __context__ carries the payload along
        raise WebSocketProtocolError(
            "text message is not valid UTF-8", close_code=CloseCode.INVALID_DATA
        )

    def _inflate(self, data: bytes, fin: int) -> bytes:
        inflater = self._inflater
        assert inflater is not None  # read() accepts RSV1 only when there is one
        return inflater.feed(data, self._limit, bool(fin))


def encode_frame(opcode: Opcode, payload: bytes, *, compressed: bool = False) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2; §5.3: a client always masks);
    ``compressed`` sets RSV1 (RFC 7692 §6: a permessage-deflate payload).

    websocket-client's ABNF does the same through several layers of Python (~5 us more
    per small message); here the XOR runs on two big integers, in C.
    """
    n = len(payload)
    head = (0xC0 if compressed else 0x80) | opcode
    if n < 126:
        header = bytes((head, 0x80 | n))
    elif n < 65536:
        header = _pack_header_16(head, 0xFE, n)
    else:
        header = _pack_header_64(head, 0xFF, n)
    key = os.urandom(4)
    if not n:
        return header + key
    stream = key * (n >> 2) + key[: n & 3]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
    return header + key + masked.to_bytes(n, "little")


def valid_close_code(code: int) -> bool:
    """Whether ``code`` may be sent in a Close frame (RFC 6455 §7.4.1-7.4.2, the IANA
    registry): 1000-1003, 1007-1014 and the application range 3000-4999."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_payload(code: int, reason: str = "") -> bytes:
    """The body of a Close frame: the code, then the reason in UTF-8 (RFC 6455 §5.5.1).

    :class:`ValueError` for a code no endpoint may send or a reason over 123 bytes (a
    control frame's payload is at most 125).
    """
    if not isinstance(code, int) or isinstance(code, bool) or not valid_close_code(code):
        raise ValueError(f"{code!r} is not a close code that may be sent (RFC 6455 §7.4)")
    try:
        data = reason.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the close reason is not valid Unicode") from None
    if len(data) > MAX_CONTROL_PAYLOAD - 2:
        raise ValueError(f"the close reason is {len(data)} bytes of UTF-8; at most 123")
    return struct.pack(">H", code) + data


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a server's Close frame; 1005 when it has no code.

    A one-byte body or a code that may not be sent is a
    :class:`~jmapws_sync.errors.WebSocketProtocolError` (1002); a reason that is not
    UTF-8 one with 1007 (RFC 6455 §5.5.1, §7.4).
    """
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) < 2:
        raise _protocol_error("a Close frame with a one-byte body")
    (code,) = _unpack_short(payload[:2])
    if not valid_close_code(code):
        raise _protocol_error(f"a Close frame with code {code}, which may not be sent")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised outside, so that no __context__ carries the reason along
    raise WebSocketProtocolError(
        "a Close frame whose reason is not UTF-8", close_code=CloseCode.INVALID_DATA
    )
