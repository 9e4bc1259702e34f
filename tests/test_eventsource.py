"""EventSource push (RFC 8620 §7.3): the client against servers that send the real bytes.

A scripted event-stream server (tests/support/sse.py) for what servers do differently
(ids or none, the ping interval in seconds or milliseconds, retry:, 204, 401, silence,
resets), then the reference server through a ReconnectingSession, whose StateChanges
must come from the EventSource exactly as they would from WebSocket push.
"""

from __future__ import annotations

import queue
import time

import pytest

import jmapws_sync as jws
from jmapws_sync._http import HttpSettings
from jmapws_sync.eventsource import EventSourcePush, ping_seconds
from jmapws_sync.policy import Backoff

from .conftest import ALICE
from .support.sse import SseServer, Stream

WAIT = 30.0
FAST = Backoff(first=(0.01, 0.02), factor=2.0, ceiling=0.1, jitter=0.2, reset_after=60.0)
A = "a-alice"


class Heard:
    """What an EventSourcePush hands over."""

    def __init__(self) -> None:
        self.changes: queue.Queue[jws.StateChange] = queue.Queue()
        self.reconnects: queue.Queue[tuple[int, BaseException | None, str | None]] = queue.Queue()
        self.fatal: queue.Queue[BaseException] = queue.Queue()

    def push(self, server: SseServer, **options: object) -> EventSourcePush:
        return EventSourcePush(
            server.url,
            settings=HttpSettings(auth=ALICE, trusted=server.url),
            types=options.pop("types", ["Note"]),  # type: ignore[arg-type]
            deliver=self.changes.put,
            on_reconnect=self.reconnects.put,
            on_fatal=self.fatal.put,
            backoff=options.pop("backoff", FAST),  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        ).start()


def test_state_events_become_state_changes_and_the_url_is_expanded() -> None:
    def handler(stream: Stream) -> None:
        stream.start()
        stream.send(b": hello\n\n")
        stream.state({A: {"Note": "s1"}}, "p1", id="p1")
        stream.state({A: {"Note": "s2", "Notebook": "s2"}}, "p2", id="p2")
        stream.hold()

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server, types=["Note", "Notebook"], ping=15)
        try:
            first = heard.changes.get(timeout=WAIT)
            second = heard.changes.get(timeout=WAIT)
        finally:
            es.close(WAIT)
    assert (first.changed, first.push_state) == ({A: {"Note": "s1"}}, "p1")
    assert second.changed == {A: {"Note": "s2", "Notebook": "s2"}}
    request = server.requests[0]
    assert request.request.startswith(
        "GET /events?types=Note%2CNotebook&closeafter=no&ping=15 HTTP/1.1"
    )
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"].startswith("Basic ")
    assert "last-event-id" not in request.headers
    assert es.last_event_id == "p2"


def test_every_reconnect_sends_the_last_event_id_and_is_told() -> None:
    def handler(stream: Stream) -> None:
        n = len(server.requests)
        stream.start()
        stream.state({A: {"Note": f"s{n}"}}, f"p{n}", id=f"p{n}")
        # then the stream ends: the client comes back

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        try:
            states = [heard.changes.get(timeout=WAIT).push_state for _ in range(3)]
            infos = [heard.reconnects.get(timeout=WAIT) for _ in range(2)]
        finally:
            es.close(WAIT)
    assert states == ["p1", "p2", "p3"]
    assert [r.headers.get("last-event-id") for r in server.requests[:3]] == [None, "p1", "p2"]
    assert [(i.count, i.resumed_from) for i in infos] == [(1, "p1"), (2, "p2")]
    assert all(i.attempts == 1 and i.lost_at > 0 for i in infos)


def test_a_stream_without_ids_resumes_without_a_last_event_id() -> None:
    def handler(stream: Stream) -> None:  # Stalwart: no id: lines
        stream.start()
        stream.state({A: {"Note": "s1"}}, "p1")

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        try:
            heard.changes.get(timeout=WAIT)
            heard.changes.get(timeout=WAIT)
        finally:
            es.close(WAIT)
    assert all("last-event-id" not in r.headers for r in server.requests)


def test_retry_is_waited_before_reconnecting() -> None:
    opened: list[float] = []

    def handler(stream: Stream) -> None:
        opened.append(time.monotonic())
        stream.start()
        stream.send(b"retry: 1500\n\n")
        stream.state({A: {"Note": "s1"}}, "p1", id="p1")

    heard = Heard()
    roomy = Backoff(first=(0.01, 0.02), ceiling=5.0)  # retry: is honoured within the ceiling
    with SseServer(handler) as server:
        es = heard.push(server, backoff=roomy)
        try:
            assert server.wait_requests(2)
        finally:
            es.close(WAIT)
    assert opened[1] - opened[0] >= 1.4  # the backoff alone would be 0.01-0.02 s


def test_pings_are_the_keepalive_and_a_silent_stream_is_replaced() -> None:
    """The server says ping every second, then goes silent: the stream is dead after two
    missed intervals (and a second), and a new one is opened."""

    def handler(stream: Stream) -> None:
        stream.start()
        stream.event("ping", {"interval": 1})
        stream.hold()  # silence, with the connection open

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server, ping=20)
        try:
            reopened = heard.reconnects.get(timeout=WAIT)
        finally:
            es.close(WAIT)
    assert reopened.count == 1
    assert isinstance(reopened.cause, TimeoutError | OSError)


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [(30, 30.0), (30000, 30.0), (1.5, 1.5), (600, 600.0), (601, 0.601), (0, None), ("x", None)],
)
def test_a_ping_interval_that_is_clearly_milliseconds_is_read_as_such(
    interval: object, seconds: float | None
) -> None:
    assert ping_seconds(interval) == seconds


def test_refused_credentials_end_the_push() -> None:
    def handler(stream: Stream) -> None:
        stream.send(
            b'HTTP/1.1 401 X\r\nWWW-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n'
        )

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        error = heard.fatal.get(timeout=WAIT)
        es.close(WAIT)
    assert isinstance(error, jws.AuthenticationError)
    assert len(server.requests) == 1  # not retried with the same credentials


def test_204_means_no_push_and_stops() -> None:
    """WHATWG: 204 says stop; Cyrus answers it when it pushes nothing (its WebSocket off)."""

    def handler(stream: Stream) -> None:
        stream.send(b"HTTP/1.1 204 X\r\nContent-Length: 0\r\n\r\n")

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        error = heard.fatal.get(timeout=WAIT)
        es.close(WAIT)
        assert not es._thread.is_alive()
    assert isinstance(error, jws.PushUnavailable)
    assert es.settled.is_set()
    assert len(server.requests) == 1


def test_a_reopening_says_when_the_stream_was_lost_and_how_many_tries_it_took() -> None:
    def handler(stream: Stream) -> None:
        n = len(server.requests)
        if n == 1:
            stream.start()
            stream.state({A: {"Note": "s1"}}, "p1", id="p1")
        elif n < 4:  # two refused tries
            stream.send(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n")
        else:
            stream.start()
            stream.hold()

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        try:
            reopened = heard.reconnects.get(timeout=WAIT)
        finally:
            es.close(WAIT)
    assert (reopened.count, reopened.attempts, reopened.resumed_from) == (1, 3, "p1")
    assert isinstance(reopened.cause, jws.JmapWsError)  # the end of the first stream
    assert reopened.lost_at > 0


def test_a_server_error_and_a_reset_are_retried() -> None:
    def handler(stream: Stream) -> None:
        n = len(server.requests)
        if n == 1:
            stream.send(b"HTTP/1.1 503 X\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")
        elif n == 2:
            stream.start()
            stream.reset()
        else:
            stream.start()
            stream.state({A: {"Note": "s3"}}, "p3", id="p3")
            stream.hold()

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        try:
            assert heard.changes.get(timeout=WAIT).push_state == "p3"
        finally:
            es.close(WAIT)
    assert heard.fatal.empty()


def test_an_answer_that_is_not_an_event_stream_is_retried_not_parsed() -> None:
    def handler(stream: Stream) -> None:
        if len(server.requests) == 1:
            stream.start(content_type="text/html")
            stream.send(b"<html>login</html>")
            return
        stream.start()
        stream.state({A: {"Note": "s2"}}, "p2")
        stream.hold()

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        try:
            assert heard.changes.get(timeout=WAIT).push_state == "p2"
        finally:
            es.close(WAIT)


def test_close_ends_the_thread_even_while_it_waits_for_bytes() -> None:
    def handler(stream: Stream) -> None:
        stream.start()
        stream.hold()

    heard = Heard()
    with SseServer(handler) as server:
        es = heard.push(server)
        assert es.connected.wait(WAIT)
        es.close(WAIT)
        assert not es._thread.is_alive()
