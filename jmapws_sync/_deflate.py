"""permessage-deflate (RFC 7692) for a client, with no I/O: the offer, the answer, zlib.

:func:`offer` is the ``Sec-WebSocket-Extensions`` value the handshake sends;
:func:`accept` reads the server's answer into :class:`Params`, refusing one the offer did
not allow (RFC 7692 §5.1: the client then fails the connection). An :class:`Inflater`
inflates one message at a time, incrementally, and stops as soon as the inflated size
passes the limit, so a small message that inflates to gigabytes never gets to; a
:class:`Deflater` compresses outgoing messages.

The sizes come from measurements (BENCHMARKS.md, "permessage-deflate"): answers are
what is worth compressing, so the server may use a 16 KiB window (14 bits), in which
zlib's default level takes a 200-message Email/get to 4.5x fewer bytes, where 4 KiB gets
3.8x and 32 KiB 4.7x. Requests are small, and a 2 KiB window with memLevel 4 compresses a
stream of them as well as zlib's defaults do. A session that has compressed and inflated
some traffic then holds about 60 KiB more than one without compression, measured with
tracemalloc: 46 KiB of zlib state and the 16 KiB window the inflater keeps for servers
that end messages with BFINAL (websockets' defaults, 12 bits each way and memLevel 5, take
60 KiB of zlib state, zlib's own, 15 bits and memLevel 8, about 240 KiB). Both streams are
made at their first use, so a session that has compressed and inflated nothing costs
nothing.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

import attrs

from .errors import HandshakeError, MessageTooLarge, WebSocketProtocolError

__all__ = ["MIN_SIZE", "Deflater", "Inflater", "Params", "accept", "check_compression", "offer"]

#: The window (log2 of bytes) asked of the server: what our inflater keeps (16 KiB).
SERVER_WINDOW_BITS: Final = 14
#: The window our deflater uses, and tells the server it will (2 KiB: a JMAP request is
#: rarely longer, so the one before it is still in reach).
CLIENT_WINDOW_BITS: Final = 11
#: zlib's memLevel for our deflater (1-9; zlib's default is 8, which takes 8 times more).
MEM_LEVEL: Final = 4
#: Messages shorter than this go out uncompressed (RFC 7692 §6 allows it): compressing
#: them costs more than the few bytes it would save.
MIN_SIZE: Final = 128
_EMPTY_BLOCK: Final = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: the tail a sync flush leaves

_PARAM: Final = re.compile(r"\s*([A-Za-z0-9_!#$%&'*+.^`|~-]+)\s*(?:=\s*(\"?)([^\";,]*)\2)?\s*")


def check_compression(value: object) -> bool:
    """Whether the ``compression`` option asks for permessage-deflate; ValueError unless
    it is ``"deflate"`` or None (checked before any I/O, wherever the option is taken)."""
    if value not in ("deflate", None):
        raise ValueError('compression is "deflate" or None')
    return value is not None


def offer() -> str:
    """What the client offers: the windows above, context takeover both ways."""
    return (
        f"permessage-deflate; server_max_window_bits={SERVER_WINDOW_BITS};"
        f" client_max_window_bits={CLIENT_WINDOW_BITS}"
    )


@attrs.frozen
class Params:
    """What was agreed: each side's window and whether it keeps its context."""

    #: The negotiated header value, as the server wrote it.
    header: str
    server_bits: int = 15
    client_bits: int = CLIENT_WINDOW_BITS
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False


def _bits(name: str, value: str | None, url: str) -> int:
    if value is None or not value.isdigit() or not 8 <= int(value) <= 15:
        raise HandshakeError(f"{url} answered permessage-deflate with an invalid {name}")
    return int(value)


def accept(answer: str, url: str) -> Params:
    """Read the server's ``Sec-WebSocket-Extensions`` answer to :func:`offer`.

    Every parameter of RFC 7692 §7.1 is understood. :class:`HandshakeError` for another
    extension, more than one, an unknown or repeated parameter, a window larger than the
    one offered, or a value that is not 8-15 (RFC 7692 §5.1).
    """
    extensions = [e for e in answer.split(",") if e.strip()]
    if len(extensions) != 1:
        raise HandshakeError(f"{url} answered with extensions that were not offered")
    name, *params = extensions[0].split(";")
    if name.strip().lower() != "permessage-deflate":
        raise HandshakeError(f"{url} answered with an extension that was not offered")
    seen: dict[str, str | None] = {}
    for param in params:
        match = _PARAM.fullmatch(param)
        if match is None:
            raise HandshakeError(f"{url} answered permessage-deflate with a malformed parameter")
        key, value = match.group(1).lower(), match.group(3)
        if key in seen:
            raise HandshakeError(f"{url} answered permessage-deflate with {key} twice")
        seen[key] = value
    options: dict[str, object] = {}
    for key, value in seen.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise HandshakeError(f"{url} answered {key} with a value")
            options[key] = True
        elif key in ("server_max_window_bits", "client_max_window_bits"):
            bits = _bits(key, value, url)
            server = key.startswith("server")
            if bits > (SERVER_WINDOW_BITS if server else CLIENT_WINDOW_BITS):  # §7.1.2.1-2
                raise HandshakeError(f"{url} answered a {key} larger than offered")
            options["server_bits" if server else "client_bits"] = bits
        else:
            raise HandshakeError(f"{url} answered permessage-deflate with an unknown parameter")
    # Without server_max_window_bits the server may use any window up to 15 (§7.1.2.1):
    # our inflater must then be ready for 15.
    return Params(header=answer.strip(), **options)  # type: ignore[arg-type]


class Inflater:
    """Inflates the messages a server compressed, one at a time, within a size limit.

    A server may end a message with a block that has BFINAL set (RFC 7692 §7.2.3.4), which
    ends the zlib stream: the next message starts a new stream whose window is the last
    ``2**bits`` bytes inflated, as context takeover requires. zlib cannot hand a finished
    stream's window over, so the inflater keeps those bytes itself (16 KiB at the window
    asked of the server), and only under context takeover.
    """

    __slots__ = ("_bits", "_history", "_reset", "_zlib", "produced")

    def __init__(self, params: Params) -> None:
        self._bits = max(params.server_bits, 9)  # zlib cannot inflate with 8; 9 reads it
        self._reset = params.server_no_context_takeover
        self._zlib: zlib._Decompress | None = None  # made at the first compressed message
        self._history: bytearray | None = None  # the window, under context takeover
        #: Bytes of the current message inflated so far.
        self.produced = 0

    def feed(self, data: bytes, limit: int, last: bool) -> bytes:
        """Inflate one frame's payload; ``last`` ends the message. Raises
        :class:`MessageTooLarge` as soon as the message passes ``limit`` bytes."""
        if last:
            data += _EMPTY_BLOCK
        out = b""
        while True:
            inflater = self._zlib or self._start()
            try:
                piece = inflater.decompress(data, limit - self.produced + 1)
            except zlib.error as exc:
                raise _corrupt() from exc
            self.produced += len(piece)
            if self.produced > limit or inflater.unconsumed_tail:
                raise MessageTooLarge(self.produced, limit)
            self._remember(piece)
            out = out + piece if out else piece
            if not inflater.eof:
                break
            self._zlib = None  # BFINAL: what follows, in this frame or later, is a new stream
            data = inflater.unused_data
            if not data:
                break
        if last:
            self.produced = 0
            if self._reset:
                self._zlib = None
        return out

    def _start(self) -> zlib._Decompress:
        history = self._history
        window = 1 << self._bits
        if history:
            self._zlib = zlib.decompressobj(-self._bits, zdict=bytes(history[-window:]))
        else:
            self._zlib = zlib.decompressobj(-self._bits)
        return self._zlib

    def _remember(self, piece: bytes) -> None:
        """Keep the last window of output (with some slack, so trimming is rare)."""
        if self._reset or not piece:
            return
        window = 1 << self._bits
        history = self._history
        if history is None or len(piece) >= window:
            self._history = bytearray(piece[-window:])
            return
        history += piece
        if len(history) > window + (window >> 2):
            del history[:-window]


def _corrupt() -> Exception:
    return WebSocketProtocolError("a compressed message does not inflate", close_code=1007)


class Deflater:
    """Compresses outgoing messages (the caller holds the send lock: order matters)."""

    __slots__ = ("_bits", "_reset", "_zlib")

    def __init__(self, params: Params) -> None:
        self._bits = max(params.client_bits, 9)
        self._reset = params.client_no_context_takeover
        self._zlib: zlib._Compress | None = None  # made at the first compressed message

    def compress(self, payload: bytes) -> bytes:
        """The payload of one compressed message (RSV1 set on its frame)."""
        deflater = self._zlib
        if deflater is None or self._reset:
            deflater = self._zlib = zlib.compressobj(6, zlib.DEFLATED, -self._bits, MEM_LEVEL)
        data = deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4] if data.endswith(_EMPTY_BLOCK) else data
