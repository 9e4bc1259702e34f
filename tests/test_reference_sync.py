"""The reference server's sync surface: Note and Notebook, /changes, /query, bulk data, quirks.

What a sync layer over ``Foo/changes``, ``Foo/get`` and ``Foo/query`` (RFC 8620 §5.1-5.5)
relies on, and the departures of real servers it must survive. Like
tests/test_reference_server.py, everything runs on real sockets on 127.0.0.1 port 0 and is
driven by websocket-client, never by jmapws_sync's own client.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from jmapws_sync.testing import NOTES, NoteStore, ReferenceServer
from jmapws_sync.testing.store import _CreationOrder, skewed_state

CORE = "urn:ietf:params:jmap:core"
USING = [CORE, NOTES]
ALICE = "a-alice"
PASSWORD = "secret"


# -- helpers ------------------------------------------------------------------------------
def connect(srv: ReferenceServer, user: str = "alice") -> websocket.WebSocket:
    """A websocket-client connection for ``user`` (Basic auth)."""
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return websocket.create_connection(
        srv.ws_url, subprotocols=["jmap"], header=[f"Authorization: Basic {token}"], timeout=5
    )


def recv(ws: websocket.WebSocket) -> dict[str, Any]:
    """The next text frame, decoded."""
    ws.settimeout(5)
    data = ws.recv()
    assert isinstance(data, str)
    frame: dict[str, Any] = json.loads(data)
    return frame


def call(ws: websocket.WebSocket, calls: list[list[Any]]) -> list[list[Any]]:
    """Send one Request; its method responses (frames before the answer must not come)."""
    ws.send(json.dumps({"@type": "Request", "id": "r", "using": USING, "methodCalls": calls}))
    frame = recv(ws)
    assert frame["@type"] == "Response", frame
    responses: list[list[Any]] = frame["methodResponses"]
    return responses


def one(ws: websocket.WebSocket, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """One method call on alice's account; the response's arguments (or the error's)."""
    [[_, result, _]] = call(ws, [[name, {"accountId": ALICE, **args}, "c"]])
    assert isinstance(result, dict)
    return result


def enable_push(ws: websocket.WebSocket, **enable: Any) -> None:
    """WebSocketPushEnable, then a barrier so that it has been handled."""
    ws.send(json.dumps({"@type": "WebSocketPushEnable", **enable}))
    assert barrier(ws) == []


def barrier(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """Every frame that arrives before the answer to a fresh Core/echo (a sync point)."""
    request = {"@type": "Request", "id": "barrier", "using": USING}
    ws.send(json.dumps({**request, "methodCalls": [["Core/echo", {}, "b"]]}))
    before: list[dict[str, Any]] = []
    while True:
        frame = recv(ws)
        if frame.get("requestId") == "barrier":
            return before
        before.append(frame)


def query(ws: websocket.WebSocket, data_type: str = "Note", **args: Any) -> dict[str, Any]:
    """One ``Foo/query`` on alice's account."""
    return one(ws, f"{data_type}/query", args)


def all_changes(
    ws: websocket.WebSocket, since: str, data_type: str = "Note", **args: Any
) -> tuple[list[dict[str, Any]], str]:
    """Every page of ``Foo/changes`` from ``since``; the pages and the final state."""
    pages = []
    while True:
        page = one(ws, f"{data_type}/changes", {"sinceState": since, **args})
        assert "type" not in page, page
        pages.append(page)
        since = page["newState"]
        if not page["hasMoreChanges"]:
            return pages, since


@pytest.fixture
def srv() -> Iterator[ReferenceServer]:
    """A running server with users alice and bob."""
    with ReferenceServer(users={"alice": PASSWORD, "bob": PASSWORD}, seed=1) as server:
        yield server


@pytest.fixture
def ws(srv: ReferenceServer) -> Iterator[websocket.WebSocket]:
    """Alice's connection to ``srv``."""
    conn = connect(srv)
    try:
        yield conn
    finally:
        conn.close()


# -- the index behind /query (no sockets) -------------------------------------------------------
def test_creation_order_agrees_with_a_plain_list() -> None:
    """Random appends and removals: positions, pages and lengths are those of a list."""
    rng = random.Random(7)
    order, expected = _CreationOrder(), list[str]()
    for step in range(5000):
        if expected and rng.random() < 0.45:
            gone = expected.pop(rng.randrange(len(expected)))
            order.remove(gone)
        else:
            expected.append(f"n{step}")
            order.append(f"n{step}")
        if step % 37 == 0:
            assert len(order) == len(expected)
            for _ in range(4):
                start = rng.randrange(len(expected) + 3)
                limit = rng.choice([None, 0, 1, 7, 100])
                want = expected[start:] if limit is None else expected[start : start + limit]
                assert order.page(start, limit) == want
            if expected:
                probe = rng.randrange(len(expected))
                assert order.index(expected[probe]) == probe
    assert order.index("never") is None


def test_store_query_and_bulk_create_without_a_server() -> None:
    """bulk_create commits once with one notification; query pages in creation order."""
    store = NoteStore(["alice"])
    heard: list[tuple[dict[str, dict[str, str]], str]] = []
    store.subscribe(lambda changed, push_state: heard.append((changed, push_state)))
    ids = store.bulk_create(ALICE, "Note", ({"title": str(i)} for i in range(50)))
    assert len(ids) == len(set(ids)) == 50
    assert heard == [({ALICE: {"Note": store.state(ALICE)}}, store.push_state())]
    assert store.state(ALICE) == "s50"
    assert store.state(ALICE, "Notebook") == "s0"
    assert store.notes(ALICE)[ids[3]] == {"id": ids[3], "title": "3", "body": ""}
    with pytest.raises(ValueError, match="object 1"):
        store.bulk_create(ALICE, "Note", [{"title": "ok"}, {"colour": "red"}])
    assert len(store.notes(ALICE)) == 50  # all or nothing
    assert store.bulk_create(ALICE, "Note", []) == []
    assert len(heard) == 1
    store.destroy_note(ALICE, ids[0])
    page = store.query(ALICE, "Note", position=-3, limit=2)
    assert (page.position, page.ids, page.total) == (46, ids[47:49], 49)
    page = store.query(ALICE, "Note", anchor=ids[10], anchor_offset=-2, limit=3)
    assert (page.position, page.ids) == (7, ids[8:11])
    books = store.bulk_create(ALICE, "Notebook", [{"name": "a"}, {}])
    assert [b[0] for b in books] == ["b", "b"]
    assert store.objects(ALICE, "Notebook")[books[1]] == {"id": books[1], "name": ""}
    with pytest.raises(KeyError):
        store.state(ALICE, "Mailbox")


# -- two types, two states ------------------------------------------------------------------------
def test_each_type_has_its_own_state_ids_and_change_log(
    srv: ReferenceServer, ws: websocket.WebSocket
) -> None:
    """Note and Notebook: own states, own /changes; the seq behind them is store-wide."""
    responses = call(
        ws,
        [
            ["Note/set", {"accountId": ALICE, "create": {"n": {"title": "t"}}}, "c0"],
            ["Notebook/set", {"accountId": ALICE, "create": {"b": {"name": "work"}}}, "c1"],
            ["Notebook/set", {"accountId": ALICE, "create": {"x": {"title": "no"}}}, "c2"],
            ["Notebook/get", {"accountId": ALICE, "ids": ["#b"]}, "c3"],
            ["Note/get", {"accountId": ALICE, "properties": ["title"]}, "c4"],
            ["Notebook/get", {"accountId": ALICE, "properties": ["body"]}, "c5"],
        ],
    )
    note_set, book_set, bad_set, book_get, note_get, bad_get = (r[1] for r in responses)
    note, book = note_set["created"]["n"]["id"], book_set["created"]["b"]["id"]
    assert note.startswith("n")
    assert book.startswith("b")
    assert (note_set["oldState"], note_set["newState"]) == ("s0", "s1")
    assert (book_set["oldState"], book_set["newState"]) == ("s0", "s2")
    assert bad_set["notCreated"]["x"]["type"] == "invalidProperties"
    assert bad_set["newState"] == "s2"
    assert book_get == {
        "accountId": ALICE,
        "state": "s2",
        "list": [{"id": book, "name": "work"}],
        "notFound": [],
    }
    assert note_get["state"] == "s1"
    assert note_get["list"] == [{"id": note, "title": "t"}]
    assert bad_get["type"] == "invalidArguments"
    assert srv.store.state(ALICE) == srv.store.state(ALICE, "Note") == "s1"
    assert srv.store.state(ALICE, "Notebook") == "s2"

    srv.change_note("alice", note, body="b")  # s3, Note only
    renamed = srv.change_notebook("alice", book, name="home")  # s4, Notebook only
    assert renamed == book
    notes = one(ws, "Note/changes", {"sinceState": "s1"})
    assert (notes["newState"], notes["updated"], notes["created"]) == ("s3", [note], [])
    books = one(ws, "Notebook/changes", {"sinceState": "s2"})
    assert (books["newState"], books["updated"], books["created"]) == ("s4", [book], [])
    books = one(ws, "Notebook/changes", {"sinceState": "s0"})
    assert (books["created"], books["updated"]) == ([book], [])
    assert one(ws, "Notebook/changes", {"sinceState": "s9"})["type"] == "cannotCalculateChanges"
    stale = one(ws, "Notebook/set", {"ifInState": "s3", "destroy": [book]})
    assert stale["type"] == "stateMismatch"

    srv.store.compact_changes(ALICE, "Notebook")
    assert one(ws, "Notebook/changes", {"sinceState": "s2"})["type"] == "cannotCalculateChanges"
    assert one(ws, "Note/changes", {"sinceState": "s1"})["updated"] == [note]
    srv.destroy_notebook("alice", book)
    books = one(ws, "Notebook/changes", {"sinceState": "s4"})
    assert (books["destroyed"], books["newState"]) == ([book], "s5")
    with pytest.raises(KeyError):
        srv.destroy_notebook("alice", book)
    with pytest.raises(KeyError):
        srv.change_notebook("alice", "b404", name="x")
    assert one(ws, "Notebook/get", {})["list"] == []


def test_pushes_name_the_types_that_changed(srv: ReferenceServer) -> None:
    """StateChange carries the types that changed, within each connection's dataTypes."""
    every, books_only, notes_only = connect(srv), connect(srv), connect(srv)
    try:
        enable_push(every, dataTypes=None)
        enable_push(books_only, dataTypes=["Notebook"])
        enable_push(notes_only, dataTypes=["Note"])

        srv.change_note("alice", title="a")
        change = recv(every)
        assert change["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
        token = change["pushState"]
        assert recv(notes_only)["changed"] == change["changed"]
        assert barrier(books_only) == []

        book = srv.change_notebook("alice", name="n")
        change = recv(every)
        assert change["changed"] == {ALICE: {"Notebook": srv.store.state(ALICE, "Notebook")}}
        assert change["pushState"] != token  # pushState is store-wide
        assert recv(books_only)["changed"] == change["changed"]
        assert barrier(notes_only) == []
        srv.destroy_notebook("alice", book)
        srv.change_note("alice", title="b")
        book_state, note_state = srv.store.state(ALICE, "Notebook"), srv.store.state(ALICE)
        assert [f["changed"] for f in barrier(every)] == [
            {ALICE: {"Notebook": book_state}},
            {ALICE: {"Note": note_state}},
        ]
        assert [f["changed"] for f in barrier(books_only)] == [{ALICE: {"Notebook": book_state}}]
        assert [f["changed"] for f in barrier(notes_only)] == [{ALICE: {"Note": note_state}}]
        both = {ALICE: {"Note": note_state, "Notebook": book_state}}
    finally:
        for conn in (every, books_only, notes_only):
            conn.close()

    # Both types changed since the token: a replay names both (within dataTypes).
    again, again_notes = connect(srv), connect(srv)
    try:
        again.send(json.dumps({"@type": "WebSocketPushEnable", "pushState": token}))
        replay = recv(again)
        assert replay["changed"] == both
        assert replay["pushState"] == srv.store.push_state()
        again_notes.send(
            json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Note"], "pushState": token})
        )
        assert recv(again_notes)["changed"] == {ALICE: {"Note": both[ALICE]["Note"]}}
    finally:
        again.close()
        again_notes.close()


# -- /query --------------------------------------------------------------------------------------
def test_query_pages_by_position(srv: ReferenceServer, ws: websocket.WebSocket) -> None:
    """Creation order; negative positions count from the end; past the end is empty."""
    ids = srv.fill_notes("alice", 10, title="t{i}")
    assert len(ids) == 10
    first = query(ws, limit=3, calculateTotal=True)
    assert first == {
        "accountId": ALICE,
        "queryState": srv.store.state(ALICE),
        "canCalculateChanges": False,
        "position": 0,
        "ids": ids[:3],
        "total": 10,
    }
    assert query(ws, position=3, limit=3)["ids"] == ids[3:6]
    assert "total" not in query(ws, position=3, limit=3)
    tail = query(ws, position=-3)
    assert (tail["position"], tail["ids"]) == (7, ids[7:])
    assert "limit" in tail  # no limit given: the server's maximum applies and is said
    clamped = query(ws, position=-100, limit=2)
    assert (clamped["position"], clamped["ids"]) == (0, ids[:2])
    beyond = query(ws, position=10, limit=5)
    assert (beyond["position"], beyond["ids"]) == (10, [])
    assert query(ws, position=2, limit=0)["ids"] == []
    assert query(ws, filter={}, sort=[], position=9)["ids"] == ids[9:]
    assert query(ws, filter=None, sort=None, limit=1)["ids"] == ids[:1]
    assert one(ws, "Note/get", {"ids": ids[:2]})["list"][1]["title"] == "t1"

    empty = query(ws, "Notebook", calculateTotal=True)
    assert (empty["ids"], empty["total"], empty["queryState"]) == ([], 0, "s0")


def test_query_by_anchor_across_inserts_and_deletes(
    srv: ReferenceServer, ws: websocket.WebSocket
) -> None:
    """The anchor's index plus anchorOffset, clamped; position is then ignored."""
    ids = srv.fill_notes("alice", 8)
    page = query(ws, anchor=ids[4], limit=2)
    assert (page["position"], page["ids"]) == (4, ids[4:6])
    page = query(ws, anchor=ids[4], anchorOffset=-1, limit=2, position=0)
    assert (page["position"], page["ids"]) == (3, ids[3:5])
    page = query(ws, anchor=ids[1], anchorOffset=-5, limit=2)
    assert (page["position"], page["ids"]) == (0, ids[:2])
    page = query(ws, anchor=ids[7], anchorOffset=3)
    assert (page["position"], page["ids"]) == (10, [])
    state = page["queryState"]

    srv.destroy_note("alice", ids[0])
    srv.destroy_note("alice", ids[2])
    newer = srv.change_note("alice", title="newest")
    page = query(ws, anchor=ids[4], limit=3, calculateTotal=True)
    assert (page["position"], page["ids"], page["total"]) == (2, [ids[4], ids[5], ids[6]], 7)
    assert page["queryState"] != state
    page = query(ws, anchor=ids[7], anchorOffset=1)
    assert (page["position"], page["ids"]) == (6, [newer])
    missing = query(ws, anchor=ids[2])
    assert missing["type"] == "anchorNotFound"
    assert query(ws, anchor="b1")["type"] == "anchorNotFound"


def test_query_limit_is_capped_and_the_cap_is_reported() -> None:
    """A limit above the server's maximum (or none) is reduced; the response says to what."""
    with ReferenceServer(users={"alice": PASSWORD}, max_query_limit=4) as srv:
        ids = srv.fill_notes("alice", 10)
        ws = connect(srv)
        try:
            for limit in (None, 5, 1000):
                args: dict[str, Any] = {} if limit is None else {"limit": limit}
                page = query(ws, **args)
                assert (page["ids"], page["limit"]) == (ids[:4], 4)
            for limit in (4, 3):
                page = query(ws, limit=limit)
                assert page["ids"] == ids[:limit]
                assert "limit" not in page
            assert query(ws, position=8, limit=9)["ids"] == ids[8:]
        finally:
            ws.close()
    with pytest.raises(ValueError, match="max_query_limit"):
        ReferenceServer(max_query_limit=0)


def test_query_argument_errors(ws: websocket.WebSocket) -> None:
    """Filters and sorts are not supported; bad arguments are invalidArguments."""
    for data_type in ("Note", "Notebook"):
        assert query(ws, data_type, filter={"text": "x"})["type"] == "unsupportedFilter"
        assert query(ws, data_type, filter=[])["type"] == "unsupportedFilter"
        sort = [{"property": "title"}]
        assert query(ws, data_type, sort=sort)["type"] == "unsupportedSort"
        for bad in (
            {"limit": -1},
            {"limit": 1.5},
            {"limit": True},
            {"position": "0"},
            {"anchorOffset": None, "anchor": 5},
            {"calculateTotal": "yes"},
            {"collapseThreads": True},
        ):
            assert query(ws, data_type, **bad)["type"] == "invalidArguments", bad
    [[kind, error, _]] = call(ws, [["Note/query", {"accountId": "a-bob"}, "c"]])
    assert (kind, error["type"]) == ("error", "accountNotFound")


def test_query_result_feeds_get_by_back_reference(
    srv: ReferenceServer, ws: websocket.WebSocket
) -> None:
    """Note/get with #ids pointing at Note/query's /ids (RFC 8620 §3.7)."""
    ids = srv.fill_notes("alice", 6, title="t{i}", body="b{i}")
    books = [srv.change_notebook("alice", name=n) for n in ("x", "y")]
    responses = call(
        ws,
        [
            ["Note/query", {"accountId": ALICE, "position": 2, "limit": 3}, "q"],
            [
                "Note/get",
                {
                    "accountId": ALICE,
                    "#ids": {"resultOf": "q", "name": "Note/query", "path": "/ids"},
                    "properties": ["title"],
                },
                "g",
            ],
            ["Notebook/query", {"accountId": ALICE}, "bq"],
            [
                "Notebook/get",
                {
                    "accountId": ALICE,
                    "#ids": {"resultOf": "bq", "name": "Notebook/query", "path": "/ids"},
                },
                "bg",
            ],
            [
                "Note/get",
                {
                    "accountId": ALICE,
                    "#ids": {"resultOf": "bq", "name": "Note/query", "path": "/ids"},
                },
                "bad",
            ],
        ],
    )
    (_, q, _), (_, got, _), (_, _, _), (_, book_got, _), (kind, bad, _) = responses
    assert q["ids"] == ids[2:5]
    assert got["list"] == [{"id": i, "title": f"t{n}"} for n, i in enumerate(ids[2:5], 2)]
    assert got["notFound"] == []
    assert [b["name"] for b in book_got["list"]] == ["x", "y"]
    assert [b["id"] for b in book_got["list"]] == books
    assert (kind, bad["type"]) == ("error", "invalidResultReference")


@pytest.mark.timeout(120)
def test_bulk_create_100000_notes_and_page_through_them(srv: ReferenceServer) -> None:
    """fill_notes commits 100,000 notes with one push; limit-500 pages see each id once."""
    ws = connect(srv)
    try:
        enable_push(ws)
        ids = srv.fill_notes("alice", 100_000)
        assert len(ids) == 100_000
        change = recv(ws)
        assert change["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
        assert barrier(ws) == []  # one commit, one StateChange
        seen: list[str] = []
        position, total = 0, None
        while True:
            page = query(ws, position=position, limit=500, calculateTotal=True)
            assert "limit" not in page
            assert page["position"] == position
            total = page["total"]
            if not page["ids"]:
                break
            assert len(page["ids"]) <= 500
            seen += page["ids"]
            position += len(page["ids"])
        assert total == 100_000
        assert len(seen) == len(set(seen)) == 100_000
        assert seen == ids
        got = one(ws, "Note/get", {"ids": seen[-500:], "properties": ["title"]})
        assert got["list"][-1] == {"id": ids[-1], "title": "note 99999"}
        pages, state = all_changes(ws, "s0", maxChanges=50_000)
        assert [len(p["created"]) for p in pages] == [50_000, 50_000]
        assert state == srv.store.state(ALICE)
    finally:
        ws.close()


# -- quirks ---------------------------------------------------------------------------------------
def test_refuse_get_all() -> None:
    """ids: null is refused with requestTooLarge, as Cyrus 3.10 does for Email/get."""
    with ReferenceServer(users={"alice": PASSWORD}, refuse_get_all=True) as srv:
        note = srv.change_note("alice", title="x")
        ws = connect(srv)
        try:
            for data_type in ("Note", "Notebook"):
                for args in ({}, {"ids": None}):
                    error = one(ws, f"{data_type}/get", args)
                    assert error == {
                        "type": "requestTooLarge",
                        "description": "ids must be specified",
                    }
            assert one(ws, "Note/get", {"ids": [note]})["list"][0]["title"] == "x"
        finally:
            ws.close()


def test_query_false_means_unknown_method() -> None:
    """A server without /query answers unknownMethod; the other methods still work."""
    with ReferenceServer(users={"alice": PASSWORD}, query=False) as srv:
        ws = connect(srv)
        try:
            for data_type in ("Note", "Notebook"):
                assert query(ws, data_type) == {"type": "unknownMethod"}
                assert one(ws, f"{data_type}/get", {})["state"] == "s0"
        finally:
            ws.close()


def test_push_states_differ_from_the_states_of_get_and_changes() -> None:
    """Pushed states are not /get's (old Cyrus); /changes takes only the real ones."""
    with ReferenceServer(users={"alice": PASSWORD}, push_states_differ=True) as srv:
        ws = connect(srv)
        try:
            enable_push(ws)
            pushed = []
            for title in ("a", "b"):
                srv.change_note("alice", title=title)
                pushed.append(recv(ws)["changed"][ALICE]["Note"])
            real = one(ws, "Note/get", {})["state"]
            assert pushed[0] != pushed[1]
            assert pushed[1] != real
            assert pushed[1] == skewed_state(real)
            assert one(ws, "Note/changes", {"sinceState": pushed[0]})["type"] == (
                "cannotCalculateChanges"
            )
            assert one(ws, "Note/changes", {"sinceState": real})["newState"] == real
            srv.change_notebook("alice", name="x")
            book_push = recv(ws)["changed"][ALICE]["Notebook"]
            assert book_push != srv.store.state(ALICE, "Notebook")
        finally:
            ws.close()
        replayed = connect(srv)
        try:
            replayed.send(json.dumps({"@type": "WebSocketPushEnable", "pushState": "p0"}))
            types = recv(replayed)["changed"][ALICE]
            assert types == {
                "Note": skewed_state(srv.store.state(ALICE)),
                "Notebook": skewed_state(srv.store.state(ALICE, "Notebook")),
            }
        finally:
            replayed.close()


def test_replays_false_ignores_the_push_state() -> None:
    """Stalwart: a pushState in WebSocketPushEnable replays nothing; live pushes still come."""
    with ReferenceServer(users={"alice": PASSWORD}, replays=False) as srv:
        srv.change_note("alice", title="before")
        ws = connect(srv)
        try:
            enable_push(ws, pushState="p0")  # the barrier sees no replay
            srv.change_note("alice", title="after")
            assert recv(ws)["changed"] == {ALICE: {"Note": srv.store.state(ALICE)}}
        finally:
            ws.close()


def test_max_changes_cap_pages_every_changes_call() -> None:
    """At most max_changes_cap ids per /changes, even with a larger or no maxChanges."""
    with ReferenceServer(users={"alice": PASSWORD}, max_changes_cap=2) as srv:
        ids = srv.fill_notes("alice", 5)
        ws = connect(srv)
        try:
            for args in ({}, {"maxChanges": 10}, {"maxChanges": None}):
                first = one(ws, "Note/changes", {"sinceState": "s0", **args})
                assert (first["created"], first["hasMoreChanges"]) == (ids[:2], True)
                assert first["newState"] not in ("s0", srv.store.state(ALICE))
            smaller = one(ws, "Note/changes", {"sinceState": "s0", "maxChanges": 1})
            assert smaller["created"] == ids[:1]
            pages, state = all_changes(ws, "s0")
            assert [p["created"] for p in pages] == [ids[:2], ids[2:4], ids[4:]]
            assert state == srv.store.state(ALICE)
        finally:
            ws.close()
    with pytest.raises(ValueError, match="max_changes_cap"):
        ReferenceServer(max_changes_cap=0)


def test_stall_changes(srv: ReferenceServer, ws: websocket.WebSocket) -> None:
    """Stalled /changes answer "more to come" without moving (James); errors do not count."""
    note = srv.change_note("alice", title="x")
    book = srv.change_notebook("alice", name="y")
    srv.stall_changes(2)
    for data_type in ("Note", "Notebook"):
        stalled = one(ws, f"{data_type}/changes", {"sinceState": "s0"})
        assert stalled == {
            "accountId": ALICE,
            "oldState": "s0",
            "newState": "s0",
            "hasMoreChanges": True,
            "created": [],
            "updated": [],
            "destroyed": [],
        }
    assert one(ws, "Note/changes", {"sinceState": "s0"})["created"] == [note]

    srv.stall_changes()
    assert one(ws, "Note/changes", {"sinceState": "bogus"})["type"] == "cannotCalculateChanges"
    assert one(ws, "Notebook/changes", {"sinceState": "s0"})["newState"] == "s0"  # the stall
    assert one(ws, "Notebook/changes", {"sinceState": "s0"})["created"] == [book]

    srv.stall_changes(5)
    srv.stall_changes(0)
    assert one(ws, "Note/changes", {"sinceState": "s0"})["hasMoreChanges"] is False


def test_forget_changes(srv: ReferenceServer, ws: websocket.WebSocket) -> None:
    """Older states get cannotCalculateChanges, per type or for all (Cyrus's outdated state)."""
    srv.change_note("alice", title="x")
    srv.change_notebook("alice", name="y")
    note_state, book_state = srv.store.state(ALICE), srv.store.state(ALICE, "Notebook")
    srv.change_note("alice", title="z")
    srv.change_notebook("alice", name="w")
    srv.forget_changes("alice", "Note")
    assert one(ws, "Note/changes", {"sinceState": note_state})["type"] == "cannotCalculateChanges"
    current = srv.store.state(ALICE)
    assert one(ws, "Note/changes", {"sinceState": current})["created"] == []
    assert len(one(ws, "Notebook/changes", {"sinceState": book_state})["created"]) == 1
    srv.forget_changes("alice")
    error = one(ws, "Notebook/changes", {"sinceState": book_state})
    assert error["type"] == "cannotCalculateChanges"
    newer = srv.change_note("alice", title="after")
    assert one(ws, "Note/changes", {"sinceState": current})["created"] == [newer]
