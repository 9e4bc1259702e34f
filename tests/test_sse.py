"""The text/event-stream parser (WHATWG "Server-sent events"), on bytes, with no sockets.

As tests/test_framing.py does for RFC 6455: the rules one by one, the examples of the
specification, and a property that any cutting of a stream into pieces gives the same
events as the stream whole.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmapws_sync._sse import Event, EventStreamError, EventStreamParser


def events(*pieces: bytes, **options: int) -> list[Event]:
    parser = EventStreamParser(**options)
    out: list[Event] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


def test_a_state_event_as_rfc_8620_sends_it() -> None:
    stream = b'event: state\nid: p7\ndata: {"@type": "StateChange", "changed": {}}\n\n'
    assert events(stream) == [Event("state", '{"@type": "StateChange", "changed": {}}', "p7")]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_end_is_a_line_end(end: bytes) -> None:
    stream = end.join([b"data: one", b"data: two", b"", b"event: ping", b"data: {}", b"", b""])
    assert events(stream) == [Event("message", "one\ntwo"), Event("ping", "{}")]


def test_a_crlf_split_between_two_pieces_is_one_line_end() -> None:
    assert events(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [Event("message", "a\nb")]
    # found by the property below: an empty piece between the CR and its LF
    assert events(b"data\r", b"", b"\n") == []


def test_a_bom_at_the_start_is_dropped_and_only_there() -> None:
    assert events(b"\xef\xbb\xbfdata: x\n\n") == [Event("message", "x")]
    assert events(b"\xef\xbb", b"\xbfdata: x\n\n") == [Event("message", "x")]
    # Later, U+FEFF is part of the field name: "\ufeffdata" is no field, no event.
    assert events(b"data: x\n\n\xef\xbb\xbfdata: y\n\n") == [Event("message", "x")]


def test_comments_unknown_fields_and_data_without_a_blank_line_are_not_events() -> None:
    assert events(b": keepalive\n\nfoo: bar\n\ndata: pending") == []


def test_one_space_after_the_colon_is_dropped_and_no_more() -> None:
    assert events(b"data:x\n\ndata:  y\n\ndata\n\n") == [
        Event("message", "x"),
        Event("message", " y"),
        Event("message", ""),
    ]


def test_the_last_event_id_carries_over_and_an_empty_one_resets_it() -> None:
    parser = EventStreamParser()
    got = parser.feed(b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
    assert [e.id for e in got] == ["1", "1", None]
    assert parser.last_event_id is None
    parser.feed(b"id: 9\n\n")  # no data: not an event, but the id is kept
    assert parser.last_event_id == "9"


def test_an_id_with_a_nul_is_ignored() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")[1].id == "1"


@pytest.mark.parametrize(("line", "retry"), [(b"retry: 3000", 3000), (b"retry: 3s", None)])
def test_retry_takes_digits_only(line: bytes, retry: int | None) -> None:
    parser = EventStreamParser()
    parser.feed(line + b"\n\n")
    assert parser.retry == retry


def test_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    assert events(b"data: \xff\xfe\n\n") == [Event("message", "\ufffd\ufffd")]
    assert events(b"data: \xc3", b"\xa9\n\n") == [Event("message", "\xe9")]  # split char


def test_the_whatwg_examples() -> None:
    stream = (
        b"data: YHOO\ndata: +2\ndata: 10\n\n"
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n"
    )
    assert events(stream) == [
        Event("message", "YHOO\n+2\n10"),
        Event("message", "first event", "1"),
        Event("message", "second event"),
        Event("message", " third event"),
    ]


def test_a_line_or_data_over_the_limit_is_an_error() -> None:
    with pytest.raises(EventStreamError, match="line"):
        events(b"data: " + b"x" * 200, max_size=100)
    with pytest.raises(EventStreamError, match="data"):
        events(b"data: xxxxxxxxxx\n" * 20, max_size=100)


_lines = st.lists(
    st.one_of(
        st.sampled_from(["", ": c", "event: state", "id: p1", "retry: 5", "data", "id"]),
        st.builds(lambda s: f"data: {s}", st.text(max_size=12)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(_lines, st.sampled_from(["\n", "\r\n", "\r"]), st.data())
def test_any_cutting_into_pieces_gives_the_events_of_the_whole(
    lines: list[str], end: str, data: st.DataObject
) -> None:
    stream = end.join(lines).encode() + end.encode()
    whole = EventStreamParser()
    expected = whole.feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    parser = EventStreamParser()
    got: list[Event] = []
    for piece in pieces:
        got += parser.feed(piece)
    if end == "\r":  # a CR at the very end waits for a possible LF: feed one more byte
        got += parser.feed(b"x")
        expected += whole.feed(b"x")
    assert got == expected
    assert (parser.last_event_id, parser.retry) == (whole.last_event_id, whole.retry)
