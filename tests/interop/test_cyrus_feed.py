"""ChangeFeed on a real Cyrus (issue 22): 500 messages, changes made while no feed runs,
paging, and the resync that Cyrus forces after an expunge.

Mail arrives over IMAP as in real life; changes are made through JMAP by another session.
The feed keeps a replica, compared at the end with what Cyrus holds (Email/query and
Email/get), so a missed, stale or ghost object fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.cli import main

from ..support.feeds import Follower, Replica
from .conftest import cyrus_prefix
from .cyrus import CyrusServer, message

pytestmark = pytest.mark.interop

WAIT = 60.0  # a loaded CI machine, and Cyrus polls its push every second here
TYPES = ["Mailbox", "Email"]
EMAIL_PROPERTIES = ["subject", "keywords", "mailboxIds", "receivedAt", "size"]


def append(cyrus: CyrusServer, n: int, tag: str) -> None:
    """``n`` messages into INBOX over one IMAP connection."""
    with cyrus.imap() as conn:
        for k in range(n):
            typ, resp = conn.append("INBOX", None, None, message(f"{tag} {k}"))
            assert typ == "OK", resp


def call(session: jws.WsSession, name: str, args: dict[str, Any]) -> dict[str, Any]:
    b = jws.RequestBuilder(using=[jws.CORE, jws.MAIL])
    handle = b.call(name, args)
    return session.call(b.build(), timeout=WAIT).get(handle.call_id)


def server_emails(session: jws.WsSession, account: str) -> dict[str, dict[str, Any]]:
    """Every Email as Cyrus has it, with the feed's properties."""
    ids = call(session, "Email/query", {"accountId": account, "limit": 100_000})["ids"]
    got = call(
        session,
        "Email/get",
        {"accountId": account, "ids": ids, "properties": ["id", *EMAIL_PROPERTIES]},
    )
    return {obj["id"]: obj for obj in got["list"]}


def auth(cyrus: CyrusServer) -> jws.BasicAuth:
    return jws.BasicAuth(cyrus.user, cyrus.password)


@pytest.fixture(scope="module")
def delayed() -> Iterator[CyrusServer]:
    """A Cyrus that expunges later (``expunge_mode: delayed``, as most deployments do), so
    that it can give the changes across a destroy."""
    with CyrusServer(cyrus_prefix(), config={"expunge_mode": "delayed"}) as server:
        yield server


def test_500_messages_then_exactly_what_changed_while_no_feed_ran(
    delayed: CyrusServer, tmp_path: Path
) -> None:
    append(delayed, 500, "first")
    store = jws.FileStateStore(tmp_path / "cyrus.state")
    replica = Replica()
    with jws.connect(delayed.http_url, auth=auth(delayed), timeout=WAIT) as ws:
        account = ws.session.primary_account(jws.MAIL)  # type: ignore[union-attr]
        feed = jws.ChangeFeed(ws, TYPES, properties={"Email": EMAIL_PROPERTIES}, store=store)
        first = list(feed.catch_up(timeout=WAIT))
        for delta in first:
            replica.apply(delta)
        assert first[0].data_type == "Mailbox"  # the types' order
        assert all(d.resync for d in first)
        assert len(replica.objects["Email"]) == 500
        assert replica.objects["Email"] == server_emails(ws, account)

        # The feed is stopped; meanwhile keywords change on 50, 20 go, 30 arrive.
        ids = sorted(replica.objects["Email"])
        flagged, destroyed = ids[:50], ids[50:70]
        done = call(
            ws,
            "Email/set",
            {
                "accountId": account,
                "update": {i: {"keywords/$flagged": True} for i in flagged},
                "destroy": destroyed,
            },
        )
        assert len(done["updated"]) == 50
        assert sorted(done["destroyed"]) == destroyed
        append(delayed, 30, "while stopped")
        arrived = set(server_emails(ws, account)) - set(ids)
        assert len(arrived) == 30

    with jws.connect(delayed.http_url, auth=auth(delayed), timeout=WAIT) as ws:
        feed = jws.ChangeFeed(
            ws, TYPES, properties={"Email": EMAIL_PROPERTIES}, store=jws.FileStateStore(store.path)
        )
        deltas = list(feed.catch_up(timeout=WAIT))
        emails = [d for d in deltas if d.data_type == "Email"]
        assert not any(d.resync for d in deltas)
        assert {i for d in emails for i in d.created} == arrived
        assert {i for d in emails for i in d.updated} == set(flagged)
        assert {i for d in emails for i in d.destroyed} == set(destroyed)
        (inbox,) = [d for d in deltas if d.data_type == "Mailbox"]
        assert inbox.updated_properties  # Cyrus says only the counts changed
        assert set(inbox.updated_properties) <= {
            "totalEmails",
            "unreadEmails",
            "totalThreads",
            "unreadThreads",
        }
        for delta in deltas:
            replica.apply(delta)
        assert replica.objects["Email"] == server_emails(ws, account)
        assert all(
            obj["keywords"].get("$flagged")
            for i, obj in replica.objects["Email"].items()
            if i in flagged
        )


def test_max_changes_seven_pages_the_changes(delayed: CyrusServer) -> None:
    with jws.connect(delayed.http_url, auth=auth(delayed), timeout=WAIT) as ws:
        feed = jws.ChangeFeed(ws, ["Email"], properties=["subject"], max_changes=7)
        list(feed.catch_up(timeout=WAIT))
        append(delayed, 17, "paged")
        deltas = list(feed.catch_up(timeout=WAIT))
    assert len(deltas) >= 3
    assert all(len(d.created) + len(d.updated) + len(d.destroyed) <= 7 for d in deltas)
    assert [d.more for d in deltas] == [True] * (len(deltas) - 1) + [False]
    assert [d.old_state for d in deltas[1:]] == [d.new_state for d in deltas[:-1]]
    assert sum(len(d.created) for d in deltas) == 17


def test_an_outdated_state_resyncs_through_email_query(cyrus: CyrusServer) -> None:
    """The session's Cyrus expunges at once: a destroy makes every older Email state
    'outdated sinceModseq' (cannotCalculateChanges), and the feed pages through
    Email/query again (Cyrus refuses Email/get with ids: null)."""
    append(cyrus, 40, "resync")
    replica = Replica()
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=WAIT) as ws:
        account = ws.session.primary_account(jws.MAIL)  # type: ignore[union-attr]
        refused = ws.call(
            jws.Request(
                using=[jws.CORE, jws.MAIL],
                method_calls=[
                    jws.Invocation("Email/get", {"accountId": account, "ids": None}, "c")
                ],
            ),
            timeout=WAIT,
        )
        assert refused.errors()[0].type == "requestTooLarge"
        feed = jws.ChangeFeed(ws, ["Email"], properties=EMAIL_PROPERTIES, page_size=16)
        for delta in feed.catch_up(timeout=WAIT):
            replica.apply(delta)
        victim = sorted(replica.objects["Email"])[0]
        call(ws, "Email/set", {"accountId": account, "destroy": [victim]})
        old = feed.states["Email"]
        stale = call(ws, "Email/get", {"accountId": account, "ids": []})["state"]
        assert stale != old
        deltas = list(feed.catch_up(timeout=WAIT))
        assert deltas[0].resync
        assert not deltas[-1].more
        for delta in deltas:
            replica.apply(delta)
        assert victim not in replica.objects["Email"]
        assert replica.objects["Email"] == server_emails(ws, account)


def test_follow_hears_new_mail_through_cyrus_push(cyrus: CyrusServer) -> None:
    with jws.ReconnectingSession(cyrus.http_url, auth=auth(cyrus), connect_timeout=WAIT) as rs:
        follower = Follower(jws.ChangeFeed(rs, ["Email"], properties=["subject"]), WAIT)
        follower.past_the_first_catch_up()  # a resync of what the session's tests left
        append(cyrus, 1, "pushed to a feed")
        delta = follower.next()
        assert [obj["subject"] for obj in delta.created.values()] == ["pushed to a feed 0"]
    follower.thread.join(WAIT)
    assert isinstance(follower.out.get(timeout=WAIT), jws.SessionClosed)


def test_the_sync_command_on_cyrus(
    cyrus: CyrusServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("JMAP_PASSWORD", cyrus.password)
    argv = ["sync", cyrus.http_url, "--user", cyrus.user, "--types", "Mailbox,Email"]
    argv += ["--state-file", str(tmp_path / "s.json"), "--once", "--timeout", str(WAIT)]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["dataType"] == "Mailbox"
    assert {line["dataType"] for line in lines} == {"Mailbox", "Email"}
    append(cyrus, 2, "between syncs")
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    emails = [line for line in lines if line["dataType"] == "Email"]
    assert sum(len(line["created"]) for line in emails) == 2
