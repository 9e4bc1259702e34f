"""ChangeFeed: a local copy that never misses a change, on the reference server's quirks.

Every test keeps a local copy the way an application would (``Replica`` below applies
the Deltas) and compares it with what the server holds at the end: the one assertion
that fails whatever the feed got wrong (a missed object, a stale one, a ghost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.policy import Backoff
from jmapws_sync.testing import CYRUS_QUIRKS, ReferenceServer
from jmapws_sync.testing import NOTES as NOTES_CAPABILITY

from .conftest import ALICE, USERS
from .support.feeds import Follower, Replica

WAIT = 30.0  # generous: a loaded 2-core machine stretches every wait
FAST = Backoff(first=(0.01, 0.02), factor=2.0, ceiling=0.1, jitter=0.2, reset_after=60.0)
NOTES = ["Note"]


def server_notes(server: ReferenceServer, user: str = "alice") -> dict[str, dict[str, Any]]:
    return server.store.notes(server.account_id(user))


def fill(server: ReferenceServer, n: int, user: str = "alice") -> list[str]:
    account = server.account_id(user)
    return server.store.bulk_create(
        account, "Note", ({"title": f"note {k}", "body": f"body {k}"} for k in range(n))
    )


def sync(feed: jws.ChangeFeed, replica: Replica) -> list[jws.Delta]:
    got = list(feed.catch_up(timeout=WAIT))
    for delta in got:
        replica.apply(delta)
    return got


@pytest.fixture
def ws(server: ReferenceServer) -> Iterator[jws.WsSession]:
    with jws.connect(server.base_url, auth=ALICE, timeout=WAIT) as session:
        yield session


# -- a first sync, then changes -------------------------------------------------------------


def test_a_first_sync_pages_through_query_and_then_only_changes_come(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    fill(server, 1000)
    feed = jws.ChangeFeed(ws, NOTES, page_size=100)
    replica = Replica()
    first = sync(feed, replica)
    assert all(d.resync for d in first)
    assert [d.more for d in first] == [True] * (len(first) - 1) + [False]
    assert max(len(d.created) for d in first) <= 100  # in pages, never whole
    assert replica.notes() == server_notes(server)
    assert feed.states == {"Note": server.store.state(server.account_id("alice"))}

    account = server.account_id("alice")
    ids = list(server_notes(server))
    server.store.update_note(account, ids[0], title="changed")
    server.store.destroy_note(account, ids[1])
    new = server.store.create_note(account, title="new")
    (delta,) = sync(feed, replica)
    assert not delta.resync
    assert (set(delta.created), set(delta.updated), delta.destroyed) == (
        {new},
        {ids[0]},
        (ids[1],),
    )
    assert delta.old_state == first[-1].new_state
    assert replica.notes() == server_notes(server)
    assert sync(feed, replica) == []  # nothing new: nothing handed out


def test_an_empty_account_still_ends_its_resync(server: ReferenceServer, ws: jws.WsSession) -> None:
    feed = jws.ChangeFeed(ws, NOTES)
    (delta,) = feed.catch_up(timeout=WAIT)
    assert (delta.resync, delta.more, delta.empty) == (True, False, True)
    assert delta.new_state == server.store.state(server.account_id("alice"))


def test_max_changes_pages_the_changes(server: ReferenceServer, ws: jws.WsSession) -> None:
    feed = jws.ChangeFeed(ws, NOTES, max_changes=7)
    replica = Replica()
    sync(feed, replica)
    fill(server, 20)
    deltas = sync(feed, replica)
    assert [len(d.created) for d in deltas] == [7, 7, 6]
    assert [d.more for d in deltas] == [True, True, False]
    assert [d.old_state for d in deltas[1:]] == [d.new_state for d in deltas[:-1]]
    assert replica.notes() == server_notes(server)


def test_a_server_cap_on_changes_is_followed(server: ReferenceServer) -> None:
    with ReferenceServer(users=USERS, max_changes_cap=5) as capped:
        with jws.connect(capped.base_url, auth=ALICE, timeout=WAIT) as session:
            feed = jws.ChangeFeed(session, NOTES)
            replica = Replica()
            sync(feed, replica)
            fill(capped, 12)
            deltas = sync(feed, replica)
        assert [len(d.created) for d in deltas] == [5, 5, 2]
        assert replica.notes() == server_notes(capped)


# -- resyncs ----------------------------------------------------------------------------------


def test_cannot_calculate_changes_resyncs_and_drops_what_is_gone(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    ids = fill(server, 50)
    feed = jws.ChangeFeed(ws, NOTES, page_size=20)
    replica = Replica()
    sync(feed, replica)
    account = server.account_id("alice")
    for note_id in ids[:10]:
        server.store.destroy_note(account, note_id)
    server.forget_changes("alice")  # Cyrus: "outdated sinceState"
    deltas = sync(feed, replica)
    assert deltas[0].resync
    assert not deltas[-1].more
    assert replica.notes() == server_notes(server)
    assert not set(ids[:10]) & set(replica.notes())


def test_james_has_more_changes_with_the_same_state_resyncs(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    feed = jws.ChangeFeed(ws, NOTES)
    replica = Replica()
    sync(feed, replica)
    fill(server, 5)
    server.stall_changes(1)
    deltas = sync(feed, replica)
    assert deltas[0].resync
    assert replica.notes() == server_notes(server)


def test_objects_that_come_and_go_during_a_resync_are_neither_missed_nor_kept(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    """Between two pages, objects already handed out are destroyed and new ones created:
    counting by position would skip the unchanged ones that moved back."""
    ids = fill(server, 500)
    account = server.account_id("alice")
    feed = jws.ChangeFeed(ws, NOTES, page_size=50)
    replica = Replica()
    pages = feed.catch_up(timeout=WAIT)
    for n, delta in enumerate(pages):
        replica.apply(delta)
        if n in (0, 3):
            for note_id in ids[n * 50 : n * 50 + 30]:
                server.store.destroy_note(account, note_id)
            fill(server, 10)
    sync(feed, replica)  # what changed during the resync
    assert replica.notes() == server_notes(server)


def test_get_all_refused_like_cyrus_is_never_needed(server: ReferenceServer) -> None:
    with ReferenceServer(users=USERS, refuse_get_all=True) as cyrus_like:
        fill(cyrus_like, 30)
        with jws.connect(cyrus_like.base_url, auth=ALICE, timeout=WAIT) as session:
            replica = Replica()
            sync(jws.ChangeFeed(session, NOTES, page_size=8), replica)
        assert replica.notes() == server_notes(cyrus_like)


def test_a_type_without_query_is_fetched_whole(server: ReferenceServer) -> None:
    with ReferenceServer(users=USERS, query=False) as no_query:
        fill(no_query, 30)
        with jws.connect(no_query.base_url, auth=ALICE, timeout=WAIT) as session:
            (delta,) = jws.ChangeFeed(session, NOTES).catch_up(timeout=WAIT)
        assert (delta.resync, delta.more, len(delta.created)) == (True, False, 30)


def test_no_query_and_no_get_all_is_a_clear_error(server: ReferenceServer) -> None:
    with (
        ReferenceServer(users=USERS, query=False, refuse_get_all=True) as neither,
        jws.connect(neither.base_url, auth=ALICE, timeout=WAIT) as session,
    ):
        feed = jws.ChangeFeed(session, NOTES)
        with pytest.raises(jws.MethodError) as info:
            list(feed.catch_up(timeout=WAIT))
    assert info.value.type == "requestTooLarge"


# -- several types, properties, errors ----------------------------------------------------------


def test_types_are_caught_up_in_their_order(server: ReferenceServer, ws: jws.WsSession) -> None:
    feed = jws.ChangeFeed(ws, ["Notebook", "Note"])
    replica = Replica()
    sync(feed, replica)
    server.change_note("alice", title="first the note")
    server.change_notebook("alice", name="then its notebook")
    deltas = sync(feed, replica)
    assert [d.data_type for d in deltas] == ["Notebook", "Note"]
    assert set(feed.states) == {"Notebook", "Note"}


def test_properties_are_asked_for_and_id_always_comes(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    fill(server, 3)
    feed = jws.ChangeFeed(ws, NOTES, properties=["title"])
    (delta,) = feed.catch_up(timeout=WAIT)
    assert all(set(obj) == {"id", "title"} for obj in delta.created.values())


def test_an_unknown_data_type_is_a_clear_error(ws: jws.WsSession) -> None:
    feed = jws.ChangeFeed(ws, ["Nonsense"])
    with pytest.raises(jws.SyncError, match="Nonsense"):
        list(feed.catch_up(timeout=WAIT))


def test_an_unknown_account_is_a_clear_error(ws: jws.WsSession) -> None:
    with pytest.raises(jws.SyncError, match="account"):
        list(jws.ChangeFeed(ws, NOTES, account_id="a-nobody").catch_up(timeout=WAIT))


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((), {}, TypeError),
        (([],), {}, ValueError),
        (("Note",), {}, TypeError),
        ((["Note", "Note"],), {}, ValueError),
        ((NOTES,), {"max_changes": 0}, ValueError),
        ((NOTES,), {"page_size": True}, ValueError),
        ((NOTES,), {"properties": "title"}, TypeError),
        ((NOTES,), {"properties": {"Email": ["x"]}}, ValueError),
        ((NOTES,), {"store": object()}, TypeError),
    ],
)
def test_bad_arguments_are_refused_up_front(
    ws: jws.WsSession, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        jws.ChangeFeed(ws, *args, **kwargs)


# -- at least once: states advance only when a Delta was taken ---------------------------------


def test_a_delta_not_taken_comes_again_and_a_committed_one_does_not(
    server: ReferenceServer, ws: jws.WsSession, tmp_path: Path
) -> None:
    path = tmp_path / "states.json"
    first = jws.ChangeFeed(ws, NOTES, store=jws.FileStateStore(path))
    sync(first, Replica())
    server.change_note("alice", title="one")
    delta = next(first.catch_up(timeout=WAIT))  # received, not handled: the process dies
    again = jws.ChangeFeed(ws, NOTES, store=jws.FileStateStore(path))
    (redelivered,) = again.catch_up(timeout=WAIT)
    assert redelivered.created == delta.created
    third = jws.ChangeFeed(ws, NOTES, store=jws.FileStateStore(path))
    assert list(third.catch_up(timeout=WAIT)) == []  # exhausting the iterator committed it


def test_commit_saves_at_once(server: ReferenceServer, ws: jws.WsSession, tmp_path: Path) -> None:
    store = jws.FileStateStore(tmp_path / "states.json")
    feed = jws.ChangeFeed(ws, NOTES, store=store)
    delta = next(feed.catch_up(timeout=WAIT))
    assert jws.FileStateStore(store.path).load(server.account_id("alice"), "Note") is None
    feed.commit()
    assert jws.FileStateStore(store.path).load(server.account_id("alice"), "Note") == (
        delta.new_state
    )


def test_a_resync_cut_short_starts_again_instead_of_skipping_pages(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    fill(server, 60)
    store = jws.MemoryStateStore()
    feed = jws.ChangeFeed(ws, NOTES, page_size=20, store=store)
    pages = feed.catch_up(timeout=WAIT)
    next(pages)
    next(pages)  # page 1 taken, page 2 in hand: the process stops here
    assert feed.states == {"Note": None}  # a resync counts only once finished
    replica = Replica()
    sync(jws.ChangeFeed(ws, NOTES, page_size=20, store=store), replica)
    assert replica.notes() == server_notes(server)


_CHILD = """
import json, os, sys
import jmapws_sync as jws
url, user, password, path = sys.argv[1:5]
with jws.connect(url, auth=jws.BasicAuth(user, password), timeout=30) as ws:
    feed = jws.ChangeFeed(ws, ["Note"], store=jws.FileStateStore(path))
    for delta in feed.catch_up(timeout=30):
        print(json.dumps(delta.to_json()), flush=True)
        if not delta.resync:
            os._exit(9)  # killed between receiving a change and handling it
"""


def test_a_process_killed_between_receiving_and_saving_gets_the_change_again(
    server: ReferenceServer, tmp_path: Path
) -> None:
    path = tmp_path / "states.json"
    args = [sys.executable, "-c", _CHILD, server.base_url, "alice", USERS["alice"], str(path)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=WAIT, check=False)
    assert first.returncode == 0, first.stderr  # the first sync: a resync, saved
    note = server.change_note("alice", title="handled at least once")
    second = subprocess.run(args, capture_output=True, text=True, timeout=WAIT, check=False)
    third = subprocess.run(args, capture_output=True, text=True, timeout=WAIT, check=False)
    assert (second.returncode, third.returncode) == (9, 9)
    for run in (second, third):
        delta = json.loads(run.stdout.splitlines()[-1])
        assert list(delta["created"]) == [note]


# -- the state store --------------------------------------------------------------------------


def test_the_state_file_is_replaced_whole_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "states.json"
    store = jws.FileStateStore(path)
    assert store.load("a", "Email") is None
    store.save("a", "Email", "s1")
    store.save("a", "Mailbox", "m1")
    store.save("b", "Email", "s9")
    assert json.loads(path.read_text()) == {
        "version": 1,
        "states": {"a": {"Email": "s1", "Mailbox": "m1"}, "b": {"Email": "s9"}},
    }
    assert sorted(os.listdir(tmp_path)) == ["states.json"]  # no temporary file left
    again = jws.FileStateStore(path)
    assert (again.load("a", "Mailbox"), again.load("b", "Email")) == ("m1", "s9")


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '{"version": 2, "states": {}}', '{"version": 1, "states": {"a": {"E": 1}}}'],
)
def test_a_state_file_that_is_not_one_is_an_error_not_a_fresh_start(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "states.json"
    path.write_text(text)
    with pytest.raises(jws.SyncError, match="state file"):
        jws.FileStateStore(path).load("a", "Email")


def test_a_state_file_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    store = jws.FileStateStore(tmp_path / "missing-directory" / "states.json")
    with pytest.raises(jws.SyncError, match="cannot write"):
        store.save("a", "Email", "s1")


def test_saves_from_many_threads_keep_every_state(tmp_path: Path) -> None:
    path = tmp_path / "states.json"
    store = jws.FileStateStore(path)

    def saver(n: int) -> None:
        for k in range(20):
            store.save(f"account-{n}", "Email", f"s{k}")

    threads = [threading.Thread(target=saver, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    again = jws.FileStateStore(path)
    assert [again.load(f"account-{n}", "Email") for n in range(8)] == ["s19"] * 8


def test_any_object_with_load_and_save_is_a_store(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    class Table:
        def __init__(self) -> None:
            self.rows: dict[tuple[str, str], str] = {}

        def load(self, account_id: str, data_type: str) -> str | None:
            return self.rows.get((account_id, data_type))

        def save(self, account_id: str, data_type: str, state: str) -> None:
            self.rows[(account_id, data_type)] = state

    table = Table()
    list(jws.ChangeFeed(ws, NOTES, store=table).catch_up(timeout=WAIT))
    assert table.rows == {
        (server.account_id("alice"), "Note"): server.store.state(server.account_id("alice"))
    }


# -- follow: pushes, reconnects, servers that ignore pushState -----------------------------------


def test_follow_catches_up_after_each_push(server: ReferenceServer) -> None:
    with jws.connect(server.base_url, auth=ALICE, timeout=WAIT) as session:
        feed = jws.ChangeFeed(session, ["Notebook", "Note"])
        follower = Follower(feed, WAIT)
        out, thread = follower.out, follower.thread
        assert [follower.next().data_type for _ in range(2)] == ["Notebook", "Note"]  # resyncs
        note = server.change_note("alice", title="pushed")
        delta = follower.next()
        assert (delta.data_type, list(delta.created)) == ("Note", [note])
        book = server.change_notebook("alice", name="pushed too")
        delta = follower.next()
        assert (delta.data_type, list(delta.created)) == ("Notebook", [book])
    thread.join(WAIT)  # closing the session ends follow()
    assert not thread.is_alive()
    assert isinstance(out.get(timeout=WAIT), jws.SessionClosed)


def test_pushed_states_that_are_not_the_get_states_cost_a_no_op_at_most() -> None:
    with ReferenceServer(users=USERS, push_states_differ=True) as cyrus_like:
        with jws.connect(cyrus_like.base_url, auth=ALICE, timeout=WAIT) as session:
            feed = jws.ChangeFeed(session, NOTES)
            follower = Follower(feed, WAIT)
            out, thread = follower.out, follower.thread
            assert follower.next().resync
            for n in range(3):
                note = cyrus_like.change_note("alice", title=f"pushed {n}")
                delta = follower.next()
                assert list(delta.created) == [note]
        thread.join(WAIT)
        assert isinstance(out.get(timeout=WAIT), jws.SessionClosed)  # no Delta without a change


@pytest.mark.parametrize("replays", [True, False], ids=["replays", "ignores-push-state"])
def test_changes_made_while_disconnected_arrive_after_the_reconnect(
    tmp_path: Path, replays: bool
) -> None:
    """Stalwart ignores pushState: the catch-up after the reconnect still finds them."""
    first = ReferenceServer(users=USERS, replays=replays).start()
    rs = jws.ReconnectingSession(
        first.base_url, auth=ALICE, backoff=FAST, connect_timeout=WAIT, push=True
    )
    try:
        feed = jws.ChangeFeed(rs, NOTES, store=jws.FileStateStore(tmp_path / "s.json"))
        follower = Follower(feed, WAIT)
        out, thread = follower.out, follower.thread
        replica = Replica()
        replica.apply(follower.next())
        first.stop()
        account = first.account_id("alice")
        made = first.store.create_note(account, title="while disconnected")
        again = ReferenceServer(
            users=USERS, store=first.store, port=first.port, replays=replays
        ).start()
        try:
            delta = follower.next()
            replica.apply(delta)
            assert made in delta.created
            assert replica.notes() == server_notes(again)
        finally:
            rs.close(timeout=WAIT)
            thread.join(WAIT)
            again.stop()
    finally:
        rs.close(timeout=WAIT)
        first.stop()
    assert isinstance(out.get(timeout=WAIT), jws.SessionClosed)


def test_events_tell_a_consumer_of_reconnects_in_stream_order(server: ReferenceServer) -> None:
    with jws.ReconnectingSession(
        server.base_url, auth=ALICE, backoff=FAST, connect_timeout=WAIT, push=True
    ) as rs:
        rs.wait_connected(WAIT)
        server.change_note("alice", title="before")
        events = rs.events(timeout=WAIT)
        assert isinstance(next(events), jws.StateChange)
        server.close_all(1001)
        info = next(events)
        assert isinstance(info, jws.ReconnectInfo)
        assert info.count == rs.reconnects == 1


def test_delta_to_json_is_what_the_cli_prints(server: ReferenceServer, ws: jws.WsSession) -> None:
    fill(server, 2)
    (delta,) = jws.ChangeFeed(ws, NOTES).catch_up(timeout=WAIT)
    as_json = json.loads(json.dumps(delta.to_json()))
    assert as_json["dataType"] == "Note"
    assert as_json["resync"] is True
    assert sorted(as_json["created"]) == sorted(delta.created)


def test_on_a_cyrus_like_server_a_destroy_forces_a_resync_and_nothing_is_lost() -> None:
    """CYRUS_QUIRKS: Foo/get with ids: null is refused and a destroy makes older states
    outdated, as on Cyrus 3.6 with immediate expunge (tests/interop/test_cyrus_feed.py)."""
    with ReferenceServer(users=USERS, **CYRUS_QUIRKS) as cyrus_like:
        ids = fill(cyrus_like, 40)
        with jws.connect(cyrus_like.base_url, auth=ALICE, timeout=WAIT) as session:
            feed = jws.ChangeFeed(session, NOTES, page_size=16)
            replica = Replica()
            sync(feed, replica)
            b = jws.RequestBuilder(using=[jws.CORE, NOTES_CAPABILITY])
            b.call("Note/set", {"accountId": cyrus_like.account_id("alice"), "destroy": ids[:1]})
            session.call(b.build(), timeout=WAIT).raise_for_errors()
            deltas = sync(feed, replica)
        assert deltas[0].resync
        assert not deltas[-1].more
        assert replica.notes() == server_notes(cyrus_like)
