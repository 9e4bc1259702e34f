"""The reference server's event source (RFC 8620 §7.3) and its quirks, over real sockets.

Event streams are read from a raw socket: the request is written by hand and the chunked
body decoded here, so a socket timeout while watching for silence leaves the reader intact
and a clean end (the last chunk) can be told from a cut. Nothing here uses jmapws_sync's
client. Waits are socket timeouts and the server's own observation (``wait_for_...``);
the few quiet windows only watch that nothing arrives.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import websocket

from jmapws_sync.testing import NOTES, ReferenceServer
from jmapws_sync.testing.child import ServerProcess
from jmapws_sync.testing.server import EventSourceRequest

CORE = "urn:ietf:params:jmap:core"
WS_CAP = "urn:ietf:params:jmap:websocket"
ALICE = "a-alice"
PATH = "/jmap/eventsource/"
TEMPLATE = PATH + "?types={types}&closeafter={closeafter}&ping={ping}"
QUIET = 0.5  # how long "nothing arrives" is watched for
TIMEOUT = 5.0  # how long anything that should arrive may take


def basic(user: str = "alice", password: str = "secret") -> str:
    """An Authorization header value for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def query(types: str = "*", closeafter: str = "no", ping: int | str = 0) -> str:
    """The event source path with the template's three variables expanded."""
    return TEMPLATE.format(types=types, closeafter=closeafter, ping=ping)


@dataclass
class Block:
    """One block of an event stream: its lines up to a blank line, as (field, value)."""

    fields: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """The last value of field ``name`` (WHATWG: a later one wins), or ``None``."""
        values = [v for f, v in self.fields if f == name]
        return values[-1] if values else None

    @property
    def event(self) -> str | None:
        return self.get("event")

    @property
    def id(self) -> str | None:
        return self.get("id")

    @property
    def data(self) -> str:
        """The data lines joined with LF, as an EventSource hands them over."""
        return "\n".join(v for f, v in self.fields if f == "data")

    def json(self) -> Any:
        return json.loads(self.data)

    def names(self) -> list[str]:
        return [f for f, _ in self.fields]


class Stream:
    """One GET of the event source over a raw socket, its chunked body decoded here."""

    def __init__(
        self,
        srv: ReferenceServer,
        path: str,
        auth: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.sock = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
        lines = [f"GET {path} HTTP/1.1", f"Host: {srv.host}:{srv.port}"]
        lines.append(f"Authorization: {auth or basic()}")
        lines.append("Accept: text/event-stream")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._raw = b""
        self._body = b""
        self._chunk_left: int | None = None  # None: a size line is due; -1: a CRLF
        self.ended = False  # the last chunk arrived: a clean end
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        assert self.headers.get("transfer-encoding") == "chunked" or self.status != 200

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- bytes ---------------------------------------------------------------------------
    def _recv(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the connection closed")
        self._raw += data

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._raw:
            self._recv(TIMEOUT)
        head, _, self._raw = self._raw.partition(marker)
        return head

    def _decode(self) -> None:
        """Move what has arrived of the chunked body into ``_body``."""
        while not self.ended:
            if self._chunk_left is None:  # a size line is due
                if b"\r\n" not in self._raw:
                    return
                size_line, _, self._raw = self._raw.partition(b"\r\n")
                self._chunk_left = int(size_line.split(b";")[0], 16)
                if self._chunk_left == 0:
                    self.ended = True  # the last chunk (a blank trailer line may follow)
                    return
            elif self._chunk_left > 0:  # data
                take = self._raw[: self._chunk_left]
                if not take:
                    return
                self._body += take
                self._raw = self._raw[len(take) :]
                self._chunk_left -= len(take)
                if self._chunk_left == 0:
                    self._chunk_left = -1
            else:  # -1: the CRLF after a chunk's data is due
                if len(self._raw) < 2:
                    return
                assert self._raw[:2] == b"\r\n", f"no CRLF after a chunk: {self._raw[:10]!r}"
                self._raw = self._raw[2:]
                self._chunk_left = None

    def line(self, timeout: float = TIMEOUT) -> str | None:
        """The next line of the body (without its LF), or ``None`` after a clean end."""
        deadline = time.monotonic() + timeout
        while True:
            self._decode()
            if b"\n" in self._body:
                line, _, self._body = self._body.partition(b"\n")
                return line.decode("utf-8")
            if self.ended:
                assert not self._body, f"a partial line before the end: {self._body!r}"
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line in time")
            self._recv(left)

    def block(self, timeout: float = TIMEOUT) -> Block | None:
        """The next non-empty block of the body, or ``None`` after a clean end."""
        fields: list[tuple[str, str]] = []
        while True:
            text = self.line(timeout)
            if text is None:
                assert not fields, "the body ended inside a block"
                return None
            if text == "":
                if fields:
                    return Block(fields)
                continue
            name, colon, value = text.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            fields.append((name, value))

    def event(self, timeout: float = TIMEOUT) -> Block:
        """The next block that is an event (comments and retry-only blocks skipped)."""
        while True:
            block = self.block(timeout)
            assert block is not None, "the stream ended"
            if "data" in block.names():
                return block

    def state(self, timeout: float = TIMEOUT) -> Block:
        """The next event, asserted to be a state event."""
        block = self.event(timeout)
        assert block.event == "state", block
        return block

    def assert_quiet(self, seconds: float = QUIET) -> None:
        """Nothing more of the body arrives for ``seconds``."""
        self._decode()
        assert not self._body, f"unexpected: {self._body!r}"
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected: {data!r}")

    def assert_clean_end(self, timeout: float = TIMEOUT) -> None:
        """The body ends with its last chunk after whatever blocks are left."""
        while self.block(timeout) is not None:
            pass
        assert self.ended


def exchange(
    srv: ReferenceServer, method: str, path: str, auth: str | None = None, body: bytes = b""
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One plain HTTP exchange: status, headers, body."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=TIMEOUT)
    try:
        headers = {"Authorization": auth} if auth else {}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def session(srv: ReferenceServer) -> dict[str, Any]:
    status, _, body = exchange(srv, "GET", "/jmap/session", basic())
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def open_stream(srv: ReferenceServer, path: str, **kwargs: Any) -> Stream:
    """A stream that the server counts as open, so changes from now on reach it.

    The server registers a stream before its response headers go out, so a 200 read here
    is the sync point.
    """
    stream = Stream(srv, path, **kwargs)
    assert stream.status == 200
    return stream


@pytest.fixture
def srv() -> Iterator[ReferenceServer]:
    with ReferenceServer(users={"alice": "secret", "bob": "hunter2"}, seed=1) as server:
        yield server


# -- the Session resource and the request ------------------------------------------------------
def test_session_advertises_the_event_source_template(srv: ReferenceServer) -> None:
    """eventSourceUrl has the three variables of RFC 8620 §7.3; WebSocket is there too."""
    resource = session(srv)
    assert resource["eventSourceUrl"] == srv.base_url + TEMPLATE
    assert srv.event_source_url == srv.base_url + TEMPLATE
    assert resource["capabilities"][WS_CAP] == {"url": srv.ws_url, "supportsPush": True}


def test_the_stream_needs_credentials(srv: ReferenceServer) -> None:
    """401 with a challenge, as the API answers; the attempt is recorded."""
    for auth in (None, basic("alice", "wrong")):
        status, headers, body = exchange(srv, "GET", query(), auth)
        assert status == 401
        assert "Basic" in headers["WWW-Authenticate"]
        assert "Bearer" in headers["WWW-Authenticate"]
        assert headers.get_content_type() == "application/problem+json"
        assert json.loads(body)["status"] == 401
    seen = srv.last_event_source_request()
    assert seen is not None
    assert (seen.status, seen.user, seen.auth_scheme) == (401, None, "Basic")
    assert srv.event_stream_count() == 0


def test_headers_and_the_request_as_seen(srv: ReferenceServer) -> None:
    """text/event-stream, no-cache, chunked; the parameters and Last-Event-ID are kept."""
    with open_stream(srv, query("Note,Notebook", "no", 30)) as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache"
        assert srv.event_stream_count() == 1  # counted before the headers went out
        seen = srv.last_event_source_request()
        assert seen == EventSourceRequest(
            types="Note,Notebook",
            closeafter="no",
            ping="30",
            last_event_id=None,
            status=200,
            user="alice",
            auth_scheme="Basic",
            accept="text/event-stream",
            query_string="types=Note,Notebook&closeafter=no&ping=30",
        )
        assert not seen.has_last_event_id
        stream.assert_quiet()  # no event before a change (and no ping before 30 s)
    with open_stream(srv, query(), headers={"Last-Event-ID": "p0"}):
        seen = srv.last_event_source_request()
        assert seen is not None
        assert (seen.last_event_id, seen.has_last_event_id) == ("p0", True)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        (query(closeafter="maybe"), "closeafter"),
        (query(ping="-1"), "ping"),
        (query(ping="soon"), "ping"),
        (query(types=""), "types"),
        (query(types="Note,,Notebook"), "types"),
    ],
)
def test_malformed_parameters_are_refused(srv: ReferenceServer, path: str, detail: str) -> None:
    """400 with a problem details body naming the parameter."""
    status, headers, body = exchange(srv, "GET", path, basic())
    assert status == 400
    assert headers.get_content_type() == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 400
    assert detail in problem["detail"]
    seen = srv.last_event_source_request()
    assert seen is not None
    assert seen.status == 400


def test_missing_parameters_default_to_all_types_no_close_no_ping(srv: ReferenceServer) -> None:
    """A bare GET is types=*, closeafter=no, ping=0 (James would refuse it, see below)."""
    with open_stream(srv, PATH) as stream:
        srv.change_notebook("alice", name="nb")
        assert stream.state().json()["changed"] == {
            ALICE: {"Notebook": srv.store.state(ALICE, "Notebook")}
        }
        srv.change_note("alice", title="n")
        assert stream.state().json()["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}


# -- state events -----------------------------------------------------------------------------
def test_state_events_carry_the_state_change_and_the_push_state_as_id(
    srv: ReferenceServer,
) -> None:
    """Each change is one state event: id = pushState, data = the StateChange object."""
    with open_stream(srv, query()) as stream:
        note = srv.change_note("alice", title="one")
        first = stream.state()
        assert first.names() == ["event", "id", "data"]
        assert first.id == srv.store.push_state()
        assert first.json() == {
            "@type": "StateChange",
            "changed": {ALICE: {"Note": srv.store.state(ALICE)}},
            "pushState": first.id,
        }
        srv.change_note("alice", note, body="two")
        srv.destroy_note("alice", note)
        second, third = stream.state(), stream.state()
        ids = [first.id, second.id, third.id]
        assert all(i is not None and i.startswith("p") for i in ids)
        assert [int(i[1:]) for i in ids if i] == sorted({int(i[1:]) for i in ids if i})
        assert third.json()["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}


def test_a_set_over_http_is_pushed_too(srv: ReferenceServer) -> None:
    """A Note/set through the API reaches the stream, like a change from Python."""
    with open_stream(srv, query()) as stream:
        body = json.dumps(
            {
                "using": [CORE, NOTES],
                "methodCalls": [
                    ["Note/set", {"accountId": ALICE, "create": {"k": {"title": "t"}}}, "c"]
                ],
            }
        ).encode()
        status, _, answer = exchange(srv, "POST", "/jmap/api", basic(), body)
        assert status == 200
        new_state = json.loads(answer)["methodResponses"][0][1]["newState"]
        assert stream.state().json()["changed"] == {ALICE: {"Note": new_state}}


def test_the_types_filter(srv: ReferenceServer) -> None:
    """Only the requested types are pushed, and only those inside the TypeState object."""
    with (
        open_stream(srv, query("Notebook")) as notebooks,
        open_stream(srv, query("Note")) as notes,
    ):
        srv.change_note("alice", title="not for notebooks")
        srv.change_notebook("alice", name="nb")
        assert notebooks.state().json()["changed"] == {
            ALICE: {"Notebook": srv.store.state(ALICE, "Notebook")}
        }
        first = notes.state().json()
        assert set(first["changed"][ALICE]) == {"Note"}
        # Each stream sees its own type's changes only, in order.
        srv.store.bulk_create(ALICE, "Note", [{"title": "x"}])
        srv.change_notebook("alice", name="nb2")
        assert set(notebooks.state().json()["changed"][ALICE]) == {"Notebook"}
        assert set(notes.state().json()["changed"][ALICE]) == {"Note"}
        notes.assert_quiet()


def test_unknown_types_never_match(srv: ReferenceServer) -> None:
    """types=Email on a server without Email: the next event is a ping, not a state."""
    with open_stream(srv, query("Email", ping=1)) as stream:
        srv.change_note("alice", title="x")
        assert stream.event().event == "ping"


def test_other_users_changes_are_not_seen(srv: ReferenceServer) -> None:
    """Bob's change is not on Alice's stream; Alice's next change is its first event."""
    with (
        open_stream(srv, query()) as alice,
        open_stream(srv, query(), auth=basic("bob", "hunter2")) as bob,
    ):
        srv.change_note("bob", title="bob's")
        srv.change_note("alice", title="alice's")
        assert alice.state().json()["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
        assert list(bob.state().json()["changed"]) == ["a-bob"]


def test_closeafter_state_ends_after_the_first_state_event(srv: ReferenceServer) -> None:
    """closeafter=state: one state event, then the body's last chunk; not counted after."""
    with open_stream(srv, query(closeafter="state", ping=1)) as stream:
        srv.change_note("alice", title="x")
        srv.change_note("alice", title="y")
        events = []
        while (block := stream.block()) is not None:
            events.append(block)
        assert [b.event for b in events if b.event == "state"] == ["state"]
        assert stream.ended
    assert srv.wait_for_event_streams(0, TIMEOUT)


def test_the_connection_is_kept_alive_after_a_clean_end(srv: ReferenceServer) -> None:
    """After closeafter=state the same connection serves the next request (a pool reuses it)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=TIMEOUT)
    try:
        srv.change_note("alice", title="before")
        conn.request(
            "GET",
            query(closeafter="state"),
            headers={
                "Authorization": basic(),
                "Last-Event-ID": "p0",
            },
        )
        resp = conn.getresponse()
        assert resp.status == 200
        body = resp.read()  # the replay, then the end
        assert b"event: state\n" in body
        sock = conn.sock
        conn.request("GET", "/jmap/session", headers={"Authorization": basic()})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        assert conn.sock is sock
    finally:
        conn.close()


# -- pings ------------------------------------------------------------------------------------
def test_pings_come_at_the_interval_without_ids(srv: ReferenceServer) -> None:
    """ping=1: ping events with {"interval": 1} about a second apart, no id (§7.3)."""
    with open_stream(srv, query(ping=1)) as stream:
        start = time.monotonic()
        first = stream.event()
        second = stream.event()
        elapsed = time.monotonic() - start
        for ping in (first, second):
            assert ping.event == "ping"
            assert ping.names() == ["event", "data"]
            assert ping.json() == {"interval": 1}
        assert 1.5 <= elapsed <= 4 * TIMEOUT  # two intervals, bounded generously


def test_a_state_event_restarts_the_ping_timer(srv: ReferenceServer) -> None:
    """A ping follows the previous event by the interval, a state event included."""
    with open_stream(srv, query(ping=2)) as stream:
        srv.change_note("alice", title="x")
        stream.state()
        after_state = time.monotonic()
        assert stream.event().event == "ping"
        assert time.monotonic() - after_state >= 1.5


def test_ping_intervals_are_clamped_and_reported() -> None:
    """A ping below the server's minimum is raised to it, and the data says so."""
    with ReferenceServer(ping_min_interval=2) as srv, open_stream(srv, query(ping=1)) as stream:
        start = time.monotonic()
        assert stream.event().json() == {"interval": 2}
        assert time.monotonic() - start >= 1.5


def test_ping_zero_sends_no_pings() -> None:
    """ping=0: no ping events (watched over more than the smallest interval)."""
    with ReferenceServer() as srv, open_stream(srv, query(ping=0)) as stream:
        stream.assert_quiet(1.5)


def test_ping_in_milliseconds() -> None:
    """Stalwart's quirk: the interval is given in milliseconds."""
    with (
        ReferenceServer(ping_in_milliseconds=True) as srv,
        open_stream(srv, query(ping=1)) as stream,
    ):
        ping = stream.event()
        assert (ping.event, ping.json()) == ("ping", {"interval": 1000})


# -- Last-Event-ID ------------------------------------------------------------------------------
def test_last_event_id_replays_what_changed_since(srv: ReferenceServer) -> None:
    """A reconnect with the last id gets one state event at once with the changes since."""
    with open_stream(srv, query()) as stream:
        srv.change_note("alice", title="seen")
        last_id = stream.state().id
    assert last_id is not None
    srv.change_notebook("alice", name="missed")
    srv.change_note("alice", title="missed too")
    with open_stream(srv, query(), headers={"Last-Event-ID": last_id}) as stream:
        replay = stream.state()
        assert replay.id == srv.store.push_state()
        assert replay.json()["changed"] == {
            ALICE: {
                "Note": srv.store.state(ALICE),
                "Notebook": srv.store.state(ALICE, "Notebook"),
            }
        }
        stream.assert_quiet()  # one event, not one per change
    with open_stream(srv, query("Notebook"), headers={"Last-Event-ID": last_id}) as stream:
        assert stream.state().json()["changed"] == {
            ALICE: {"Notebook": srv.store.state(ALICE, "Notebook")}
        }


def test_last_event_id_with_nothing_new_sends_nothing_at_first(srv: ReferenceServer) -> None:
    """The current pushState as Last-Event-ID: the first event is the next change."""
    srv.change_note("alice", title="x")
    current = srv.store.push_state()
    with open_stream(srv, query(), headers={"Last-Event-ID": current}) as stream:
        stream.assert_quiet()
        srv.change_notebook("alice", name="next")
        event = stream.state()
        assert event.json()["changed"] == {ALICE: {"Notebook": srv.store.state(ALICE, "Notebook")}}
        assert event.id == srv.store.push_state() != current


def test_an_unknown_last_event_id_replays_every_type(srv: ReferenceServer) -> None:
    """An id this server never gave: every requested type's current state (safe resync)."""
    with open_stream(srv, query(), headers={"Last-Event-ID": "p999999"}) as stream:
        assert stream.state().json()["changed"] == {
            ALICE: {
                "Note": srv.store.state(ALICE),
                "Notebook": srv.store.state(ALICE, "Notebook"),
            }
        }


def test_replay_and_closeafter_state(srv: ReferenceServer) -> None:
    """closeafter=state with a replay: the replay is the one state event."""
    srv.change_note("alice", title="x")
    with Stream(srv, query(closeafter="state"), headers={"Last-Event-ID": "p0"}) as stream:
        assert stream.state().id == srv.store.push_state()
        stream.assert_clean_end()


# -- quirks -------------------------------------------------------------------------------------
def test_event_ids_false_sends_no_ids_and_ignores_last_event_id() -> None:
    """Stalwart: no id lines, and a Last-Event-ID gets no replay."""
    with ReferenceServer(event_ids=False) as srv:
        srv.change_note("alice", title="before")
        with open_stream(srv, query(), headers={"Last-Event-ID": "p0"}) as stream:
            stream.assert_quiet()
            srv.change_note("alice", title="after")
            event = stream.state()
            assert event.names() == ["event", "data"]
            assert event.json()["pushState"] == srv.store.push_state()


def test_require_ping_and_closeafter() -> None:
    """James: a request without ping or closeafter is a 400 problem; with both, a stream."""
    with ReferenceServer(require_ping_and_closeafter=True) as srv:
        for path in (PATH, PATH + "?types=*&ping=0", PATH + "?types=*&closeafter=no"):
            status, headers, body = exchange(srv, "GET", path, basic())
            assert status == 400, path
            assert headers.get_content_type() == "application/problem+json"
            assert json.loads(body)["status"] == 400
        with open_stream(srv, PATH + "?closeafter=no&ping=0"):
            pass
        with open_stream(srv, query()):
            pass


def test_event_current_state_sends_the_state_at_once() -> None:
    """James: on connect, one state event with the current state of the requested types."""
    with ReferenceServer(event_current_state=True) as srv:
        srv.change_note("alice", title="x")
        with open_stream(srv, query()) as stream:
            event = stream.state()
            assert event.id == srv.store.push_state()
            assert event.json()["changed"] == {
                ALICE: {
                    "Note": srv.store.state(ALICE),
                    "Notebook": srv.store.state(ALICE, "Notebook"),
                }
            }
            srv.change_note("alice", title="y")
            assert stream.state().json()["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
        with open_stream(srv, query("Notebook")) as stream:
            assert stream.state().json()["changed"] == {ALICE: {"Notebook": "s0"}}
        with Stream(srv, query(closeafter="state")) as stream:
            stream.state()
            stream.assert_clean_end()
        # A Last-Event-ID wins: only what changed since.
        current = srv.store.push_state()
        with open_stream(srv, query(), headers={"Last-Event-ID": current}) as stream:
            stream.assert_quiet()


def test_event_retry_ms_comes_first() -> None:
    """retry: N is the body's first line, in a block of its own."""
    with ReferenceServer(event_retry_ms=2500) as srv, open_stream(srv, query()) as stream:
        assert stream.line() == "retry: 2500"
        assert stream.line() == ""
        srv.change_note("alice", title="x")
        assert stream.state().event == "state"


def test_multiline_data_splits_the_json_over_data_lines() -> None:
    """multiline_data: one data: line per line of pretty-printed JSON; joined, the same."""
    with ReferenceServer(multiline_data=True) as srv, open_stream(srv, query(ping=1)) as stream:
        srv.change_note("alice", title="x")
        event = stream.state()
        assert event.names().count("data") > 3
        assert event.json() == {
            "@type": "StateChange",
            "changed": {ALICE: {"Note": srv.store.state(ALICE)}},
            "pushState": event.id,
        }
        ping = stream.event()
        assert ping.names().count("data") == 3
        assert ping.json() == {"interval": 1}


def test_keepalive_comments() -> None:
    """event_keepalive: ': keepalive' comment lines on a quiet stream (not events)."""
    with ReferenceServer(event_keepalive=0.2) as srv, open_stream(srv, query()) as stream:
        assert stream.line() == ": keepalive"
        assert stream.line() == ""
        srv.change_note("alice", title="x")
        assert stream.state().event == "state"  # comments in between are skipped


def test_push_quirks_apply_to_the_stream() -> None:
    """sends_push_state=False leaves pushState out of the data (the id still has it);
    push_states_differ skews the pushed states as on the WebSocket."""
    with (
        ReferenceServer(sends_push_state=False, push_states_differ=True) as srv,
        open_stream(srv, query()) as stream,
    ):
        srv.change_note("alice", title="x")
        event = stream.state()
        assert event.id == srv.store.push_state()
        data = event.json()
        assert "pushState" not in data
        assert data["changed"][ALICE]["Note"] != srv.store.state(ALICE)


# -- servers that lack parts ---------------------------------------------------------------------
def test_websocket_false_removes_the_capability_and_the_route() -> None:
    """Fastmail: no WebSocket capability, the route answers 404; HTTP and events work."""
    with ReferenceServer(websocket=False) as srv:
        resource = session(srv)
        assert WS_CAP not in resource["capabilities"]
        assert {CORE, NOTES} <= resource["capabilities"].keys()
        assert resource["eventSourceUrl"] == srv.base_url + TEMPLATE
        with pytest.raises(websocket.WebSocketBadStatusException) as caught:
            websocket.create_connection(
                srv.ws_url, subprotocols=["jmap"], header=[f"Authorization: {basic()}"], timeout=5
            )
        assert caught.value.status_code == 404
        handshake = srv.last_handshake()
        assert handshake is not None
        assert handshake.status == 404
        body = json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {"a": 1}, "c"]]})
        status, _, answer = exchange(srv, "POST", "/jmap/api", basic(), body.encode())
        assert status == 200
        assert json.loads(answer)["methodResponses"] == [["Core/echo", {"a": 1}, "c"]]
        with open_stream(srv, query()) as stream:
            srv.change_note("alice", title="x")
            assert stream.state().id == srv.store.push_state()


def ws_connect(srv: ReferenceServer) -> websocket.WebSocket:
    return websocket.create_connection(
        srv.ws_url, subprotocols=["jmap"], header=[f"Authorization: {basic()}"], timeout=5
    )


def ws_frames_before_echo(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """Every frame that arrives before the answer to a fresh Core/echo (a sync point)."""
    ws.send(
        json.dumps(
            {
                "@type": "Request",
                "id": "barrier",
                "using": [CORE],
                "methodCalls": [["Core/echo", {}, "b"]],
            }
        )
    )
    before: list[dict[str, Any]] = []
    while True:
        frame = json.loads(ws.recv())
        if frame.get("requestId") == "barrier":
            return before
        before.append(frame)


@pytest.mark.parametrize(
    ("options", "supports_push"),
    [({"supports_push": False}, False), ({"websocket_push_fires": False}, True)],
)
def test_websocket_push_missing_but_the_event_source_pushes(
    options: dict[str, Any], supports_push: bool
) -> None:
    """supportsPush false, or true but silent (jmaple): no StateChange frame; events come."""
    with ReferenceServer(**options) as srv:
        assert session(srv)["capabilities"][WS_CAP]["supportsPush"] is supports_push
        ws = ws_connect(srv)
        try:
            ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None}))
            with open_stream(srv, query()) as stream:
                ws_frames_before_echo(ws)  # the enable has been read
                srv.change_note("alice", title="x")
                assert stream.state().json()["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
                assert ws_frames_before_echo(ws) == []
                assert srv.last_push_enable() == {"@type": "WebSocketPushEnable", "dataTypes": None}
        finally:
            ws.close()


# -- the end of a stream -------------------------------------------------------------------------
def test_close_event_streams_ends_them_cleanly(srv: ReferenceServer) -> None:
    """close_event_streams: every stream gets its last chunk; none is counted after."""
    with open_stream(srv, query(ping=1)) as one, open_stream(srv, query("Note")) as two:
        srv.close_event_streams()
        assert srv.event_stream_count() == 0
        one.assert_clean_end()
        two.assert_clean_end()
    with open_stream(srv, query()) as again:  # a reconnect works
        srv.change_note("alice", title="x")
        again.state()


def test_stopping_the_server_ends_streams_cleanly() -> None:
    """stop(): the body's last chunk, then the connection closes."""
    srv = ReferenceServer().start()
    try:
        stream = open_stream(srv, query(ping=1))
    finally:
        srv.stop()
    with stream:
        stream.assert_clean_end()
        with pytest.raises(EOFError):
            stream._recv(TIMEOUT)


def test_reset_event_streams_resets_the_connection(srv: ReferenceServer) -> None:
    """reset_event_streams: a TCP RST, not a clean end."""
    with open_stream(srv, query()) as stream:
        srv.reset_event_streams()
        with pytest.raises(ConnectionResetError):
            stream.block()
        assert not stream.ended
    assert srv.wait_for_event_streams(0, TIMEOUT)


def test_a_client_that_goes_away_is_no_longer_counted(srv: ReferenceServer) -> None:
    """The server notices a stream's client closing its socket."""
    stream = open_stream(srv, query())
    stream.close()
    assert srv.wait_for_event_streams(0, TIMEOUT)


def test_silence_event_streams_holds_everything(srv: ReferenceServer) -> None:
    """Silenced: no event or ping; on resume the held change comes."""
    with open_stream(srv, query(ping=1)) as stream:
        srv.silence_event_streams()
        try:
            srv.change_note("alice", title="held")
            stream.assert_quiet(1.5)
        finally:
            srv.silence_event_streams(False)
        assert stream.state().json()["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}


def test_knobs_need_a_running_server() -> None:
    """The stream knobs raise on a stopped server; silence is kept for the next start."""
    srv = ReferenceServer()
    with pytest.raises(RuntimeError):
        srv.close_event_streams()
    with pytest.raises(RuntimeError):
        srv.reset_event_streams()
    srv.silence_event_streams()  # the knob is kept for the next start
    srv.silence_event_streams(False)
    assert srv.last_event_source_request() is None


@pytest.mark.parametrize(
    "options",
    [
        {"event_retry_ms": -1},
        {"event_keepalive": 0},
        {"ping_min_interval": 0},
        {"ping_min_interval": 301},
    ],
)
def test_bad_quirk_values_are_refused(options: dict[str, Any]) -> None:
    """Out-of-range event source options fail at construction."""
    with pytest.raises(ValueError, match=next(iter(options))):
        ReferenceServer(**options)


# -- the HTTP API beside it ----------------------------------------------------------------------
def test_http_api_keeps_connections_alive_and_runs_requests_concurrently() -> None:
    """Several API requests in flight at once (a pool); the in-flight limit is honoured."""
    with ReferenceServer(max_concurrent_requests=2, seed=2) as srv:
        body = json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, "c"]]}).encode()
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=TIMEOUT)
        try:
            socks = []
            for _ in range(2):
                conn.request("POST", "/jmap/api", body=body, headers={"Authorization": basic()})
                resp = conn.getresponse()
                assert resp.status == 200
                resp.read()
                socks.append(conn.sock)
            assert socks[0] is socks[1] is not None  # one keep-alive connection for both
        finally:
            conn.close()
        srv.delay(2.0)
        results: list[int] = []

        def post() -> None:
            results.append(exchange(srv, "POST", "/jmap/api", basic(), body)[0])

        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        assert srv.wait_for_requests(4, TIMEOUT)  # both delayed ones have arrived
        status, headers, answer = exchange(srv, "POST", "/jmap/api", basic(), body)
        assert (status, headers.get_content_type()) == (400, "application/problem+json")
        assert json.loads(answer)["limit"] == "maxConcurrentRequests"
        for thread in threads:
            thread.join(TIMEOUT * 2)
        assert results == [200, 200]


def test_the_child_process_reports_event_source_requests() -> None:
    """ServerProcess: the quirks pass through and the observation comes back as an object."""
    with ServerProcess(websocket=False, event_ids=False) as child:
        base = child.facts["base_url"]
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
        try:
            conn.request("GET", query(closeafter="state"), headers={"Authorization": basic()})
            assert conn.getresponse().status == 200
            assert child.call("wait_for_event_streams", 1, TIMEOUT) is True
            seen = child.call("last_event_source_request")
            assert (seen["closeafter"], seen["status"], seen["last_event_id"]) == (
                "state",
                200,
                None,
            )
        finally:
            conn.close()
