"""EventSource push and calls over HTTP against a real Cyrus IMAP 3.6 (issue 24).

The standard library alone first looks at what Cyrus serves on its event stream, so that
the tests below do not take the library's word for it; then a ReconnectingSession hears
mail (appended over IMAP, as in real life) through it, resumes it across a restart with
``Last-Event-ID``, and makes its calls over HTTP. What Cyrus 3.6.1 does, as found here
(and in its source, ``imap/http_jmap.c``: ``jmap_eventsource()`` and ``es_push()``):

* ``eventSourceUrl`` is relative and a level-1 template:
  ``/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}``.
* The stream is ``200`` ``text/event-stream``, ``Cache-Control: no-cache``, with neither
  a length nor chunking: it ends when the connection does.
* A ``state`` event carries an ``id:`` line, the account's highest modseq (a decimal
  number), and a StateChange with no ``pushState``; a ``ping`` event has no id and
  says ``{"interval": N}``, N the ``ping`` asked for, in seconds, sent after N seconds
  without an event. Cyrus sends no ``retry:`` field and, without ``Last-Event-ID``, no
  event at the start.
* ``Last-Event-ID`` is taken as a modseq: what changed since it is sent at once.
* ``websocket_timeout: 0`` (imapd.conf(5): "The minimum value is 0, which will disable
  WebSockets") removes the ``urn:ietf:params:jmap:websocket`` capability, but it also
  turns EventSource push off: ``jmap_pushpoll`` is only read when WebSockets are on, so
  the event stream answers ``204 No Content``. Cyrus 3.6.1 cannot push on its event
  stream without a WebSocket, so pushes to a session calling over HTTP are tested with
  ``transport="http"`` on the normal Cyrus instead.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import queue
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.cli import main

from ..support.feeds import Follower
from .conftest import cyrus_prefix
from .cyrus import CyrusServer, message

pytestmark = pytest.mark.interop

WAIT = 60.0  # a loaded CI machine; Cyrus looks for changes to push every second here
CORE, MAIL = jws.CORE, jws.MAIL
EVENT_SOURCE_TEMPLATE = "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}"
FAST = jws.Backoff(first=(0.05, 0.1), factor=1.5, ceiling=0.5)


def auth(cyrus: CyrusServer) -> jws.BasicAuth:
    return jws.BasicAuth(cyrus.user, cyrus.password)


def basic(cyrus: CyrusServer) -> dict[str, str]:
    token = base64.b64encode(f"{cyrus.user}:{cyrus.password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def session_json(cyrus: CyrusServer) -> dict[str, Any]:
    """The Session resource, fetched with urllib (which follows Cyrus's 301)."""
    request = urllib.request.Request(cyrus.http_url + "/.well-known/jmap", headers=basic(cyrus))
    with urllib.request.urlopen(request, timeout=WAIT) as resp:
        assert resp.status == 200
        raw: dict[str, Any] = json.loads(resp.read())
    return raw


def event_source_url(cyrus: CyrusServer, types: str, ping: int) -> str:
    """The advertised template, filled by hand, resolved against the Session resource."""
    template: str = session_json(cyrus)["eventSourceUrl"]
    path = (
        template.replace("{types}", types)
        .replace("{closeafter}", "no")
        .replace("{ping}", str(ping))
    )
    return urllib.parse.urljoin(cyrus.http_url + "/jmap/", path)


def call(rs: jws.ReconnectingSession, name: str, args: dict[str, Any]) -> dict[str, Any]:
    b = jws.RequestBuilder(using=[CORE, MAIL])
    handle = b.call(name, args)
    return rs.call(b.build(), timeout=WAIT).get(handle.call_id)


def email_changes(rs: jws.ReconnectingSession, account: str) -> Iterator[str]:
    """The Email states of the account's StateChanges, as they arrive."""
    for change in rs.changes(timeout=WAIT):
        types = change.changed.get(account, {})
        if "Email" in types:
            yield types["Email"]


class EventStream:
    """One raw event stream read line by line (urllib; the socket timeout bounds a read)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        request = urllib.request.Request(url, headers={**headers, "Accept": "text/event-stream"})
        self.response = urllib.request.urlopen(request, timeout=WAIT)
        self.opened = time.monotonic()
        self.lines: list[str] = []  # every line read, for the assertions on fields

    def event(self) -> tuple[dict[str, str], float]:
        """The next event's fields (name to value) and when its blank line arrived."""
        fields: dict[str, str] = {}
        while True:
            raw = self.response.readline()
            assert raw, "the event stream ended"
            line = raw.decode("utf-8").rstrip("\r\n")
            self.lines.append(line)
            if line == "":
                if fields:
                    return fields, time.monotonic()
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    def until(self, kind: str) -> tuple[dict[str, str], float]:
        """The next event of type ``kind``."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            fields, at = self.event()
            if fields.get("event") == kind:
                return fields, at
        raise AssertionError(f"no {kind} event within {WAIT} s")

    def close(self) -> None:
        self.response.close()


# -- 1. Cyrus's event stream ----------------------------------------------------------------


def test_cyrus_event_stream_on_the_wire(cyrus: CyrusServer) -> None:
    """What Cyrus 3.6 sends on its event stream, read with the standard library only."""
    raw = session_json(cyrus)
    assert raw["eventSourceUrl"] == EVENT_SOURCE_TEMPLATE  # relative, RFC 6570 level 1
    assert raw["capabilities"][jws.WEBSOCKET]["supportsPush"] is True

    stream = EventStream(event_source_url(cyrus, "Email", ping=2), basic(cyrus))
    try:
        resp = stream.response
        assert resp.status == 200
        assert resp.headers.get_content_type() == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        # Neither a length nor chunks: the stream ends with the connection.
        assert resp.headers["Content-Length"] is None
        assert resp.headers["Transfer-Encoding"] is None

        # Without Last-Event-ID nothing comes at the start: the first event is a ping,
        # after the two seconds asked for (Cyrus counts whole seconds: one or more).
        first, at = stream.event()
        assert first == {"event": "ping", "data": '{"interval":2}'}  # no id: line
        assert json.loads(first["data"]) == {"interval": 2}  # seconds, as asked
        assert 0.9 <= at - stream.opened <= WAIT
        second, then = stream.until("ping")
        assert second == first
        assert then - at >= 0.9  # one ping per interval, not a flood

        cyrus.append_message(cyrus.user, message("on the wire"))
        state, _ = stream.until("state")
        assert set(state) == {"id", "event", "data"}  # an id: line, no retry:
        change = json.loads(state["data"])
        assert change["@type"] == "StateChange"
        assert "pushState" not in change  # unlike its WebSocket pushes
        email = change["changed"][cyrus.user]["Email"]
        # The id is the account's highest modseq, a decimal number, never below the
        # Email state (a modseq too).
        assert state["id"].isdigit()
        assert email.isdigit()
        assert int(state["id"]) >= int(email)
        assert not any(line.startswith("retry") for line in stream.lines)  # never a retry:
    finally:
        stream.close()

    # Last-Event-ID is read as a modseq: the change after it comes at once, same id.
    before = str(int(state["id"]) - 1)
    resumed = EventStream(
        event_source_url(cyrus, "Email", ping=2), {**basic(cyrus), "Last-Event-ID": before}
    )
    try:
        replay, _ = resumed.event()
        assert replay["event"] == "state"  # first, before any ping
        assert replay["id"] == state["id"]
        assert json.loads(replay["data"])["changed"][cyrus.user]["Email"] == email
    finally:
        resumed.close()


def test_reconnecting_session_hears_new_mail_over_the_eventsource(cyrus: CyrusServer) -> None:
    with jws.ReconnectingSession(
        cyrus.http_url, auth=auth(cyrus), push=True, push_via="eventsource", connect_timeout=WAIT
    ) as rs:
        rs.wait_connected(timeout=WAIT)
        assert rs.push_source == "eventsource"
        assert rs.transport == "websocket"  # the calls still go over Cyrus's WebSocket
        account = cyrus.user
        before = call(rs, "Email/get", {"accountId": account, "ids": []})["state"]
        cyrus.append_message(cyrus.user, message("pushed over the event stream"))
        changes = rs.changes(timeout=WAIT)
        change = next(changes)
        while "Email" not in change.changed.get(account, {}):
            change = next(changes)
        assert change.push_state is None  # Cyrus's event stream sends none
        state = change.changed[account]["Email"]
        assert state != before
        assert state == call(rs, "Email/get", {"accountId": account, "ids": []})["state"]


# -- 2. Last-Event-ID across a restart ------------------------------------------------------


class RecordingRelay:
    """A TCP relay to Cyrus that records, for each event stream it carries, the request
    head and the ``id:`` lines Cyrus sent on it. While Cyrus is down, it closes what it
    accepts (as a refused connection would end)."""

    def __init__(self, host: str, port: int) -> None:
        self._to = (host, port)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._streams: list[tuple[bytes, bytearray]] = []  # (head, what Cyrus answered)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="recording-relay", daemon=True).start()

    def streams(self) -> list[tuple[bytes, list[str]]]:
        """Each event stream so far: its request head and the ids Cyrus sent on it."""
        with self._lock:
            return [
                (head, re.findall(r"(?m)^id: ?([^\r\n]*)$", bytes(body).decode(errors="replace")))
                for head, body in self._streams
            ]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._to, timeout=WAIT)
            except OSError:  # Cyrus is down
                self._shut(client)
                continue
            server.settimeout(None)  # idle streams and WebSockets stay up
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._serve, args=(client, server), daemon=True).start()

    def _serve(self, client: socket.socket, server: socket.socket) -> None:
        try:
            head = client.recv(65536)
            if head:
                server.sendall(head)
        except OSError:
            head = b""
        if not head:
            self._shut(client, server)
            return
        tap: bytearray | None = None
        if head.startswith(b"GET /jmap/eventsource/"):
            tap = bytearray()
            with self._lock:
                self._streams.append((head, tap))
        threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
        self._pipe(server, client, tap)

    def _pipe(self, source: socket.socket, sink: socket.socket, tap: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if tap is not None:
                    with self._lock:
                        tap += data
                sink.sendall(data)
        except OSError:
            pass
        self._shut(source, sink)

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            self._shut(*self._sockets)


def last_event_id(head: bytes) -> str | None:
    match = re.search(rb"(?im)^last-event-id: *([^\r\n]*)\r?$", head)
    return None if match is None else match.group(1).decode()


@pytest.mark.timeout(300)
def test_last_event_id_resumes_across_a_cyrus_restart_and_nothing_is_missed(
    cyrus: CyrusServer,
) -> None:
    relay = RecordingRelay(cyrus.host, cyrus.http_port)
    infos: queue.Queue[jws.ReconnectInfo] = queue.Queue()
    tag = uuid.uuid4().hex[:8]
    seen: set[str] = set()

    def wait_for(subjects: set[str]) -> None:
        deadline = time.monotonic() + WAIT
        while not subjects <= seen:
            item = out.get(timeout=max(0.0, deadline - time.monotonic()))
            assert isinstance(item, jws.Delta), item
            seen.update(obj["subject"] for obj in item.created.values())

    try:
        # Through the relay: the Session resource's relative URLs resolve to it, so the
        # WebSocket and the event stream both go through it.
        with jws.ReconnectingSession(
            relay.url,
            auth=auth(cyrus),
            push=True,
            push_via="eventsource",
            data_types=["Email"],  # the feed's types: it keeps this EventSource
            backoff=FAST,
            on_reconnect=infos.put,
            connect_timeout=WAIT,
        ) as rs:
            rs.wait_connected(timeout=WAIT)
            assert rs.push_source == "eventsource"
            follower = Follower(jws.ChangeFeed(rs, ["Email"], properties=["subject"]), WAIT)
            out = follower.out
            follower.past_the_first_catch_up()  # a resync of what the session's tests left

            # One change heard over the event stream: it now has an id to resume from.
            cyrus.append_message(cyrus.user, message(f"{tag} before"))
            wait_for({f"{tag} before"})
            ((head, ids),) = relay.streams()
            assert last_event_id(head) is None  # nothing to resume from at the start
            assert ids
            assert ids[-1].isdigit()
            resume_from = ids[-1]

            cyrus.restart()  # the event stream and the WebSocket drop
            around = {f"{tag} around {n}" for n in range(3)}
            with cyrus.imap() as conn:  # at once: before or after the client is back
                for subject in sorted(around):
                    typ, resp = conn.append("INBOX", None, None, message(subject))
                    assert typ == "OK", resp
            wait_for(around)  # nothing missed

            # The stream after the restart: live again.
            cyrus.append_message(cyrus.user, message(f"{tag} after"))
            wait_for({f"{tag} after"})

            streams = relay.streams()
            assert len(streams) >= 2
            reopened = streams[1][0]
            assert reopened.startswith(b"GET /jmap/eventsource/?types=Email&closeafter=no")
            assert last_event_id(reopened) == resume_from  # the last id Cyrus sent before
            # The EventSource's reconnect reached on_reconnect, with the id it sent.
            reported = []
            while not infos.empty():
                reported.append(infos.get_nowait())
            assert any(i.push_resumed and i.push_state == resume_from for i in reported), reported
            assert rs.push_source == "eventsource"
        follower.thread.join(WAIT)
        assert isinstance(out.get(timeout=WAIT), jws.SessionClosed)
    finally:
        relay.close()


@pytest.mark.timeout(300)
def test_the_eventsource_reconnect_info_tells_how_long_it_was_down(cyrus: CyrusServer) -> None:
    """Cyrus down for two seconds: the EventSource's ReconnectInfo should say so."""
    with jws.ReconnectingSession(
        cyrus.http_url,
        auth=auth(cyrus),
        push=True,
        push_via="eventsource",
        data_types=["Email"],
        backoff=FAST,
        connect_timeout=WAIT,
    ) as rs:
        rs.wait_connected(timeout=WAIT)
        events = rs.events(timeout=WAIT)
        cyrus.append_message(cyrus.user, message("before a stop"))
        heard = next(events)
        assert isinstance(heard, jws.StateChange)  # the stream has an id to resume from
        cyrus.stop()
        stopped = time.monotonic()  # the stream was lost before this
        time.sleep(2.0)  # the EventSource tries again meanwhile (backoff under 0.5 s)
        cyrus.start()
        # The WebSocket's reconnect may come too (push_resumed False: it pushes nothing
        # here); the EventSource's is the one that sent Last-Event-ID.
        info = next(e for e in events if isinstance(e, jws.ReconnectInfo) and e.push_resumed)
        assert info.push_state is not None
        assert info.push_state.isdigit()
        assert info.cause is not None
        assert info.disconnected_at <= stopped
        assert info.downtime >= 2.0
        assert info.attempts > 1


# -- 3. Calls over HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_websocket() -> Iterator[CyrusServer]:
    """A Cyrus with JMAP over WebSocket turned off (``websocket_timeout: 0``)."""
    with CyrusServer(cyrus_prefix(), config={"websocket_timeout": "0"}) as server:
        yield server


def test_websocket_off_leaves_no_websocket_capability_and_no_event_stream(
    no_websocket: CyrusServer,
) -> None:
    """The standard library's view: no WebSocket capability; the event stream is still
    advertised, but answers 204 (Cyrus reads jmap_pushpoll only with WebSockets on)."""
    raw = session_json(no_websocket)
    assert jws.WEBSOCKET not in raw["capabilities"]
    assert CORE in raw["capabilities"]
    assert MAIL in raw["capabilities"]
    assert raw["eventSourceUrl"] == EVENT_SOURCE_TEMPLATE
    request = urllib.request.Request(
        event_source_url(no_websocket, "*", ping=2),
        headers={**basic(no_websocket), "Accept": "text/event-stream"},
    )
    with urllib.request.urlopen(request, timeout=WAIT) as resp:
        assert resp.status == 204
        assert resp.read() == b""


def test_calls_over_http_on_a_cyrus_without_websocket(no_websocket: CyrusServer) -> None:
    subjects = {f"over http {uuid.uuid4().hex[:8]}" for _ in range(3)}
    for subject in subjects:
        no_websocket.append_message(no_websocket.user, message(subject))
    with jws.ReconnectingSession(
        no_websocket.http_url, auth=auth(no_websocket), connect_timeout=WAIT
    ) as rs:
        rs.wait_connected(timeout=WAIT)
        assert rs.transport == "http"  # "auto": the Session resource has no WebSocket
        assert rs.push_source is None  # push was not asked for
        assert rs.session is not None
        account = rs.session.primary_account(MAIL)
        assert account == no_websocket.user
        check_calls(rs, account, subjects)


def check_calls(rs: jws.ReconnectingSession, account: str, subjects: set[str]) -> None:
    """Core/echo, Mailbox/get, back-references, errors, send_request: over ``rs``."""
    b = jws.RequestBuilder()
    echo = b.call("Core/echo", {"hello": "over http", "n": [1, 2]})
    assert rs.call(b.build(), timeout=WAIT).get(echo.call_id) == {
        "hello": "over http",
        "n": [1, 2],
    }

    mailboxes = call(rs, "Mailbox/get", {"accountId": account, "ids": None})
    assert "inbox" in {m["role"] for m in mailboxes["list"]}

    # Email/query, then Email/get of its ids through a result reference (RFC 8620 §3.7).
    b = jws.RequestBuilder(using=[CORE, MAIL])
    query = b.call(
        "Email/query",
        {"accountId": account, "sort": [{"property": "receivedAt", "isAscending": False}]},
    )
    get = b.call(
        "Email/get", {"accountId": account, "ids": query.ref("/ids"), "properties": ["subject"]}
    )
    reply = rs.call(b.build(), timeout=WAIT)
    assert subjects <= {e["subject"] for e in reply.get(get.call_id)["list"]}

    # A method error stays in the response; .get() raises it.
    b = jws.RequestBuilder(using=[CORE, MAIL])
    bad = b.call("Email/get", {"accountId": "nobody-here", "ids": []})
    with pytest.raises(jws.MethodError) as info:
        rs.call(b.build(), timeout=WAIT).get(bad.call_id)
    assert info.value.type == "accountNotFound"

    # A request-level error (RFC 7807 over HTTP) is RequestFailed, and the session goes on.
    unknown = jws.Request(
        using=[CORE, "urn:example:nope"], method_calls=[jws.Invocation("Core/echo", {}, "c0")]
    )
    with pytest.raises(jws.RequestFailed) as failed:
        rs.call(unknown, timeout=WAIT)
    assert failed.value.problem.type == "urn:ietf:params:jmap:error:unknownCapability"
    assert failed.value.problem.status == 400

    # send_request(): the answer comes through next_frame(), with its id.
    rs.send_request(
        jws.Request(using=[CORE], method_calls=[jws.Invocation("Core/echo", {"k": 1}, "e")]),
        id="r1",
        timeout=WAIT,
    )
    frame = rs.next_frame(timeout=WAIT)
    assert isinstance(frame, jws.Response)
    assert frame.request_id == "r1"
    assert frame.get("e") == {"k": 1}


@pytest.mark.timeout(120)
def test_push_on_a_cyrus_whose_event_stream_answers_204(no_websocket: CyrusServer) -> None:
    """push=True where the only push source says 204 ("stop"): the session should say
    so (PushUnavailable) or go on without push; it must not hang in retries."""
    with jws.ReconnectingSession(
        no_websocket.http_url, auth=auth(no_websocket), push=True, connect_timeout=5
    ) as rs:
        try:
            rs.wait_connected(timeout=20)
        except jws.PushUnavailable:
            return  # an explicit answer will do
        assert rs.transport == "http"
        b = jws.RequestBuilder()
        echo = b.call("Core/echo", {"still": "calling"})
        assert rs.call(b.build(), timeout=WAIT).get(echo.call_id) == {"still": "calling"}


def test_http_calls_and_eventsource_pushes_on_cyrus(cyrus: CyrusServer) -> None:
    """HTTP calls and EventSource push through one ReconnectingSession: transport="http"
    on the normal Cyrus, since no Cyrus 3.6 pushes on its event stream without a
    WebSocket (see the module docstring)."""
    subjects = {f"http transport {uuid.uuid4().hex[:8]}" for _ in range(2)}
    for subject in subjects:
        cyrus.append_message(cyrus.user, message(subject))
    with jws.ReconnectingSession(
        cyrus.http_url,
        auth=auth(cyrus),
        push=True,
        data_types=["Email"],
        transport="http",
        connect_timeout=WAIT,
    ) as rs:
        rs.wait_connected(timeout=WAIT)
        assert rs.transport == "http"
        assert rs.push_source == "eventsource"  # "auto": calls over HTTP push over it
        account = cyrus.user
        check_calls(rs, account, subjects)

        before = call(rs, "Email/get", {"accountId": account, "ids": []})["state"]
        cyrus.append_message(cyrus.user, message("pushed to an http session"))
        state = next(email_changes(rs, account))
        assert state != before
        assert state == call(rs, "Email/get", {"accountId": account, "ids": []})["state"]


def test_cli_call_on_a_cyrus_without_websocket(
    no_websocket: CyrusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jmapws-sync call` finds no WebSocket and makes the same call over HTTP."""
    monkeypatch.setenv("JMAP_PASSWORD", no_websocket.password)
    account = no_websocket.user
    request = {
        "using": [CORE, MAIL],
        "methodCalls": [
            ["Core/echo", {"from": "cli"}, "c0"],
            ["Mailbox/get", {"accountId": account, "ids": None, "properties": ["role"]}, "c1"],
        ],
    }
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    out = io.StringIO()
    argv = ["call", no_websocket.http_url, "--user", no_websocket.user, "--timeout", str(WAIT)]
    assert main(argv, out=out) == 0
    answer = json.loads(out.getvalue())
    echo, mailboxes = answer["methodResponses"]
    assert echo == ["Core/echo", {"from": "cli"}, "c0"]
    assert mailboxes[0] == "Mailbox/get"
    assert mailboxes[2] == "c1"
    assert "inbox" in {m["role"] for m in mailboxes[1]["list"]}
