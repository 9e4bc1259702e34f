"""Hypothesis properties: the codec and the frame reader never do anything undocumented.

* ``codec.decode`` on any text returns a frame or raises ``ParseError``; on any JSON object it
  returns a frame (typed when the body fits, ``UnknownFrame`` otherwise), never raises.
* ``encode`` then ``decode`` gives back the frame, for every encodable frame type.
* The session's reader thread, fed random byte streams by a raw server after the
  handshake, always ends with frames, documented exceptions and a finished stream; never a
  hang, never an undocumented exception, and its thread always exits. (The framing rules
  themselves are fuzzed without sockets, with many more examples, in test_framing.py.)

Each property counts the examples it ran and prints the count (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import socket
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import jmapws_sync as jws
from jmapws_sync import codec
from jmapws_sync._framing import parse_close, valid_close_code
from jmapws_sync._net import MAX_TIMEOUT, check_headers, check_timeout

from .support.rawws import Peer, RawServer, echo_requests
from .support.strategies import (
    byte_streams,
    invocations,
    json_objects,
    json_values,
    plausible_members,
    string_maps,
)
from .support.threads import wait_no_readers

RUNS: Counter[str] = Counter()


def frame(opcode: int, payload: bytes = b"", **kw: Any) -> bytes:
    """The bytes of one server frame (rawws.Peer.frame needs no connection)."""
    return Peer.frame(None, opcode, payload, **kw)  # type: ignore[arg-type]


FRAME_TYPES = (jws.Response, jws.RequestError, jws.StateChange, jws.UnknownFrame)
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------


@st.composite
def plausible_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object with a server @type and a random subset of plausible members."""
    names = draw(st.lists(st.sampled_from(sorted(plausible_members)), unique=True, max_size=6))
    body: dict[str, Any] = {name: draw(plausible_members[name]) for name in names}
    body.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    body["@type"] = draw(
        st.sampled_from(["Response", "RequestError", "StateChange", "Request", "X-Other"])
        | json_values
    )
    return body


requests = st.builds(
    jws.Request,
    using=st.lists(st.text(max_size=20), max_size=3),
    method_calls=st.lists(invocations, max_size=3),
    created_ids=st.none() | string_maps,
)
responses = st.builds(
    jws.Response,
    method_responses=st.lists(invocations, max_size=3),
    session_state=st.text(max_size=10),
    created_ids=st.none() | string_maps,
    request_id=st.none() | st.text(max_size=10) | st.integers(),
)
state_changes = st.builds(
    jws.StateChange,
    changed=st.dictionaries(st.text(max_size=6), string_maps, max_size=3),
    push_state=st.none() | st.text(max_size=10),
)
push_enables = st.builds(
    jws.WebSocketPushEnable,
    data_types=st.none() | st.lists(st.text(max_size=10), max_size=3),
    push_state=st.none() | st.text(max_size=10),
)


def check_frame(frame: object, obj: dict[str, Any] | None = None) -> None:
    """Whatever decode returned is a frame whose attributes have their documented types."""
    assert isinstance(frame, FRAME_TYPES)
    if isinstance(frame, jws.UnknownFrame):
        if obj is not None:
            assert frame.raw is obj or frame.raw == obj
        assert "raw=" not in repr(frame)
    elif isinstance(frame, jws.Response):
        assert type(frame.session_state) is str
        assert frame.request_id is None or type(frame.request_id) in (str, int)
        for inv in frame.method_responses:
            assert (type(inv.name), type(inv.arguments), type(inv.call_id)) == (str, dict, str)
    elif isinstance(frame, jws.RequestError):
        assert type(frame.type) is str
        assert frame.status is None or type(frame.status) is int
    elif isinstance(frame, jws.StateChange):
        assert all(type(v) is str for types in frame.changed.values() for v in types.values())
        assert frame.push_state is None or type(frame.push_state) is str


# -- codec.decode --------------------------------------------------------------------------


@SETTINGS
@given(st.text() | json_values.map(json.dumps) | json_objects.map(lambda o: json.dumps(o)[:-1]))
@example("")
@example("{" * 100_000)
@example("[" * 100_000 + "]" * 100_000)
@example('{"a": NaN}')
def test_decode_arbitrary_text_gives_frame_or_parse_error(text: str) -> None:
    """Any text decodes to a frame or raises ParseError, nothing else."""
    RUNS["decode-text"] += 1
    try:
        frame = codec.decode(text)
    except jws.ParseError as exc:
        message = str(exc)
    else:
        check_frame(frame)
        return
    assert text not in message or len(text) < 30  # the payload stays out of the message


@SETTINGS
@given(json_objects | plausible_frames())
def test_decode_any_json_object_gives_a_frame(obj: dict[str, Any]) -> None:
    """Any JSON object decodes to a typed frame or an UnknownFrame holding it; never raises."""
    RUNS["decode-object"] += 1
    check_frame(codec.decode(json.dumps(obj)), obj)


@SETTINGS
@given(json_objects | plausible_frames(), st.sampled_from(["Request", "WebSocketPushEnable"]))
def test_decode_client_frames_never_raises_on_objects(obj: dict[str, Any], kind: str) -> None:
    """With accept=CLIENT_FRAMES a JSON object gives a client frame or an UnknownFrame."""
    RUNS["decode-client"] += 1
    obj = {**obj, "@type": kind} if len(obj) % 2 else obj
    frame = codec.decode(json.dumps(obj), accept=codec.CLIENT_FRAMES)
    assert isinstance(frame, jws.Request | jws.WebSocketPushEnable | jws.UnknownFrame)


def test_decode_integer_too_long_to_convert_is_parse_error() -> None:
    """A 5,000-digit integer (over Python's int conversion limit) is a ParseError."""
    with pytest.raises(jws.ParseError):
        codec.decode('{"@type": "X", "n": ' + "1" * 5000 + "}")


# -- encode / decode round trips ---------------------------------------------------------------


@SETTINGS
@given(requests, st.none() | st.text(max_size=10) | st.integers())
def test_request_round_trip(request: jws.Request, request_id: str | int | None) -> None:
    """encode(Request, id) decodes (CLIENT_FRAMES) to an equal Request carrying the id."""
    RUNS["round-trip-request"] += 1
    text = codec.encode(request, request_id)
    text.encode("utf-8")  # sendable as a WebSocket text message
    assert codec.decode(text, accept=codec.CLIENT_FRAMES) == request
    assert json.loads(text).get("id") == request_id


@SETTINGS
@given(responses | state_changes)
def test_server_frame_round_trip(frame: jws.Response | jws.StateChange) -> None:
    """encode(Response / StateChange) decodes back to an equal frame."""
    RUNS["round-trip-server"] += 1
    assert codec.decode(codec.encode(frame)) == frame


@SETTINGS
@given(push_enables | st.just(jws.WebSocketPushDisable()))
def test_push_frame_round_trip(frame: jws.WebSocketPushEnable | jws.WebSocketPushDisable) -> None:
    """WebSocketPushEnable / Disable round-trip through CLIENT_FRAMES."""
    RUNS["round-trip-push"] += 1
    assert codec.decode(codec.encode(frame), accept=codec.CLIENT_FRAMES) == frame


def test_encode_rejects_lone_surrogates_with_value_error() -> None:
    """A lone surrogate in an argument: encode raises ValueError instead of unsendable text."""
    bad = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("X", {"s": "\ud800"}, "c")])
    try:
        text = codec.encode(bad)
    except ValueError:
        return
    text.encode("utf-8")


def test_call_with_unsendable_text_leaves_no_pending_waiter() -> None:
    """call() with a lone surrogate raises ValueError, leaves nothing pending, stream usable."""
    bad = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("X", {"s": "\ud800"}, "c")])
    with RawServer(echo_requests) as server:
        ws = jws.WsSession.open(server.url, timeout=5)
        with ws:
            with pytest.raises(ValueError):
                ws.call(bad, timeout=5)
            assert ws.pending_calls == 0
            ok = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("X", {}, "c")])
            assert ws.call(ok, timeout=5).get("c") == {}


# -- the session's frame reader over random byte streams ------------------------------------------


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _serve_from(streams: queue.Queue[bytes]) -> Any:
    def handler(peer: Peer) -> None:
        data = streams.get(timeout=5)
        peer.sock.settimeout(5)
        peer.send_raw(data)
        peer.sock.shutdown(socket.SHUT_WR)
        while peer.sock.recv(65536):  # drain what the client says until it hangs up
            pass

    return handler


def _consume(ws: jws.WsSession) -> list[object]:
    """Read until the stream is finished; return what came out (frames and exceptions)."""
    seen: list[object] = []
    for _ in range(10_000):
        try:
            frame = ws.next_frame(timeout=5)
        except TimeoutError:
            pytest.fail(f"the reader hung after {seen!r}")
        except (jws.ProtocolViolation, jws.ParseError) as exc:  # stream still usable
            seen.append(exc)
            continue
        except (jws.TransportError, jws.AuthenticationError) as exc:  # stream finished
            seen.append(exc)
            with pytest.raises(jws.SessionClosed):
                ws.next_frame(timeout=5)
            return seen
        if frame is None:
            assert ws.next_frame(timeout=5) is None
            return seen
        assert isinstance(frame, FRAME_TYPES)
        seen.append(frame)
    pytest.fail("the stream never ended")


def _fuzz_reader(data: bytes, server: RawServer, streams: queue.Queue[bytes]) -> None:
    errors = _Errors()
    logging.getLogger("jmapws_sync").addHandler(errors)
    try:
        streams.put(data)
        ws = jws.WsSession.open(server.url, timeout=5, close_timeout=0.5)
        try:
            seen = _consume(ws)
        finally:
            ws.close()
        wait_no_readers()
    finally:
        logging.getLogger("jmapws_sync").removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    for item in seen:
        RUNS[f"reader-saw-{type(item).__name__}"] += 1
        assert "reader thread failed" not in str(item)


def test_frame_reader_over_random_byte_streams() -> None:
    """Random byte streams after the handshake end in frames and documented errors, no hang."""
    streams: queue.Queue[bytes] = queue.Queue()
    before = {t for t in threading.enumerate() if t.name.startswith("jmapws-reader")}
    with RawServer(_serve_from(streams)) as server:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(byte_streams)
        @example(b"")
        @example(frame(0x1, b"{}", length=2**40))
        @example(frame(0x8, b"\x03\xf0closing"))
        @example(frame(0x9, b"") * 200)
        def run(data: bytes) -> None:
            RUNS["reader-streams"] += 1
            _fuzz_reader(data, server, streams)

        run()
    after = {t for t in threading.enumerate() if t.name.startswith("jmapws-reader")}
    assert after <= before
    assert not server.errors
    print(f"\nhypothesis examples run: {dict(RUNS)}")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_frame_reader_survives_an_integer_too_long_to_convert() -> None:
    """A frame with a 5,000-digit integer is a ParseError; the next frame still arrives."""
    streams: queue.Queue[bytes] = queue.Queue()
    frames = frame(0x1, b'{"n": ' + b"1" * 5000 + b"}")
    frames += frame(0x1, b'{"@type": "X"}')
    with RawServer(_serve_from(streams)) as server:
        streams.put(frames)
        with jws.WsSession.open(server.url, timeout=5, close_timeout=0.5) as ws:
            with pytest.raises(jws.ParseError):
                ws.next_frame(timeout=5)
            assert isinstance(ws.next_frame(timeout=5), jws.UnknownFrame)


# -- values at the boundaries: header values, close frames, timeouts (issue 14) -------------


def _refusal(headers: dict[str, str]) -> str:
    try:
        check_headers(headers)
    except ValueError as exc:
        return str(exc)
    raise AssertionError("not refused")


#: The fixed texts of the refusals, without a header name.
_HEADER_MESSAGES = f"{_refusal({'X': chr(10)}).replace('X', '')} {_refusal({' ': 'v'})}"


@SETTINGS
@given(st.text(max_size=30), st.text(max_size=30))
def test_a_header_is_accepted_only_if_it_cannot_break_the_request_head(
    name: str, value: str
) -> None:
    """check_headers accepts a header only without CR, LF, NUL or non-Latin-1; else a
    ValueError that never shows the value."""
    RUNS["headers"] += 1
    message = ""
    try:
        check_headers({name: value})
    except ValueError as exc:
        message = str(exc)
    if message:
        # The value is not shown: it appears only if the fixed text happens to hold it.
        fixed = message.replace(name, "") if name else message
        assert value not in fixed or value in _HEADER_MESSAGES
        return
    line = f"{name}: {value}".encode("latin-1")
    assert not set(line) & {0x0, 0xA, 0xD}
    assert name
    assert ":" not in name
    assert " " not in name


@SETTINGS
@given(st.binary(max_size=125))
def test_any_close_body_is_read_or_refused_with_its_close_code(payload: bytes) -> None:
    """parse_close gives a sendable code and a UTF-8 reason, or a 1002/1007 framing error."""
    RUNS["close-bodies"] += 1
    refused: int | None = None
    try:
        code, reason = parse_close(payload)
    except jws.WebSocketProtocolError as exc:
        refused = exc.close_code
    if refused is not None:
        assert refused in (1002, 1007)
        return
    assert code == 1005 or valid_close_code(code)
    assert isinstance(reason, str)


@SETTINGS
@given(st.floats() | st.integers(-(10**6), 10**6) | st.none())
def test_any_timeout_is_no_limit_a_number_or_a_value_error(timeout: float | None) -> None:
    """None, inf and anything above MAX_TIMEOUT (the platform's longest wait): no limit;
    NaN and negatives: ValueError; the rest: that many seconds."""
    RUNS["timeouts"] += 1
    if timeout is not None and (math.isnan(timeout) or timeout < 0):
        with pytest.raises(ValueError, match="timeout"):
            check_timeout(timeout)
        return
    result = check_timeout(timeout)
    assert result == (None if timeout is None or timeout > MAX_TIMEOUT else timeout)
