"""JMAP answers of realistic shape for the compression workload, deterministic per seed.

The reference server keeps Notes, not mail, so the compression workload asks it to echo
(``Core/echo``) what a mail server's ``Email/get`` and ``Mailbox/get`` would return:
for Email, the properties RFC 8621 §4.2 returns when a client asks for none in
particular (addresses, subject, preview, dates, the body structure, no body values), for
Mailbox all of them. Values come from a seeded random source, so that no two messages
repeat each other more than real mail does: ids are random hex, as Cyrus's are (hashes,
which deflate cannot shrink); subjects and previews are random runs of common English
words; names and addresses come from small lists, as in a real mailbox.
"""

from __future__ import annotations

import random
from typing import Any

#: The words subjects and previews are made of.
_PROSE = """the of and to in is you that it he was for on are as with his they at be this have
    from or one had by word but not what all were we when your can said there use an
    each which she do how their if will up other about out many then them these so some
    her would make like him into time has look two more write go see number no way could
    people my than first water been call who oil its now find long down day did get come
    made may part meeting project invoice update report review schedule team budget plan
    draft notes agenda weekly friday monday contract proposal delivery order shipping
    account password reset newsletter offer sale ticket build release deploy server
    backup question answer lunch dinner travel flight hotel booking receipt payment
    reminder holiday family photos birthday party school"""
_WORDS = tuple(_PROSE.split())
_NAMES = (
    "Alice Martin", "Bob Chen", "Carol Diaz", "Dan Okafor", "Eve Novak", "Frank Weber",
    "Grace Kim", "Hiro Tanaka", "Ivy Patel", "Jon Berg", "Kara Singh", "Liam Walsh",
    "Mia Rossi", "Noah Levi", "Olga Petrova", "Paul Dubois", "Quinn Hale", "Rosa Lima",
    "Sam Ito", "Tara Nolan", "Uma Rao", "Victor Hugo", "Wen Li", "Yara Haddad",
)  # fmt: skip
_DOMAINS = ("example.com", "example.org", "mail.example.net", "corp.example", "lists.example")
_MAILBOXES = (
    "Inbox", "Archive", "Drafts", "Sent", "Junk", "Trash", "Receipts", "Travel", "Work",
    "Family", "Newsletters", "Projects", "Projects/Alpha", "Projects/Beta", "Clients",
    "Clients/Acme", "Clients/Globex", "Finance", "Finance/Taxes", "Photos", "Lists",
    "Lists/python-dev", "Lists/jmap", "Someday", "Follow up",
)  # fmt: skip


def _hex(rng: random.Random, prefix: str, n: int) -> str:
    """An id as Cyrus writes them: a letter and ``n`` hex digits (random: they are
    hashes, deflate cannot shrink them below 4 bits a digit)."""
    return prefix + f"{rng.getrandbits(4 * n):0{n}x}"


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _address(rng: random.Random) -> dict[str, str]:
    name = rng.choice(_NAMES)
    local = name.lower().replace(" ", ".")
    return {"name": name, "email": f"{local}@{rng.choice(_DOMAINS)}"}


def _part(rng: random.Random, part_id: str, kind: str, name: str | None = None) -> dict[str, Any]:
    """An EmailBodyPart with the default bodyProperties (RFC 8621 §4.2)."""
    return {
        "partId": part_id,
        "blobId": _hex(rng, "G", 40),
        "size": rng.randint(200, 90_000),
        "name": name,
        "type": kind,
        "charset": "utf-8" if kind.startswith("text/") else None,
        "disposition": "attachment" if name else None,
        "cid": None,
        "language": None,
        "location": None,
    }


def email_get(n: int, seed: int = 1) -> dict[str, Any]:
    """The arguments of an ``Email/get`` answer for ``n`` messages, with the properties
    RFC 8621 §4.2 returns when ``properties`` is null (no body values fetched)."""
    rng = random.Random(seed)
    mailbox_ids = [_hex(rng, "P", 24) for _ in range(8)]
    threads = [_hex(rng, "T", 16) for _ in range(max(1, n * 3 // 5))]
    emails = []
    for _ in range(n):
        subject = _text(rng, 3, 9).capitalize()
        reply = rng.random() < 0.4
        received = (
            f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        )
        parent = [f"{_hex(rng, '', 20)}@{rng.choice(_DOMAINS)}"] if reply else None
        attachments = [
            _part(rng, str(3 + i), "application/pdf", f"{rng.choice(_WORDS)}-{i}.pdf")
            for i in range(1 if rng.random() < 0.2 else 0)
        ]
        emails.append(
            {
                "id": _hex(rng, "M", 24),
                "blobId": _hex(rng, "G", 40),
                "threadId": rng.choice(threads),
                "mailboxIds": {rng.choice(mailbox_ids): True},
                "keywords": {k: True for k in ("$seen", "$flagged") if rng.random() < 0.5},
                "size": rng.randint(2_000, 200_000),
                "receivedAt": received,
                "messageId": [f"{_hex(rng, '', 20)}@{rng.choice(_DOMAINS)}"],
                "inReplyTo": parent,
                "references": parent,
                "sender": None,
                "from": [_address(rng)],
                "to": [_address(rng) for _ in range(rng.randint(1, 3))],
                "cc": [_address(rng) for _ in range(rng.randint(0, 2))] or None,
                "bcc": None,
                "replyTo": None,
                "subject": f"Re: {subject}" if reply else subject,
                "sentAt": received.replace("Z", "+01:00"),
                "hasAttachment": bool(attachments),
                "preview": _text(rng, 25, 40)[:256],
                "bodyValues": {},
                "textBody": [_part(rng, "1", "text/plain")],
                "htmlBody": [_part(rng, "2", "text/html")],
                "attachments": attachments,
            }
        )
    return {
        "accountId": "uaf2b9c4d",
        "state": str(rng.randint(10_000, 99_999)),
        "list": emails,
        "notFound": [],
    }


def mailbox_get(n: int = 25, seed: int = 2) -> dict[str, Any]:
    """The arguments of a ``Mailbox/get`` answer listing ``n`` mailboxes (RFC 8621 §2)."""
    rng = random.Random(seed)
    ids: dict[str, str] = {}
    mailboxes = []
    for name in _MAILBOXES[:n]:
        parent, _, leaf = name.rpartition("/")
        ids[name] = _hex(rng, "P", 24)
        total = rng.randint(0, 40_000)
        mailboxes.append(
            {
                "id": ids[name],
                "name": leaf,
                "parentId": ids.get(parent),
                "role": leaf.lower() if leaf in ("Inbox", "Archive", "Drafts", "Sent") else None,
                "sortOrder": rng.randint(0, 20) * 10,
                "totalEmails": total,
                "unreadEmails": rng.randint(0, total // 10 + 1),
                "totalThreads": total * 3 // 4,
                "unreadThreads": rng.randint(0, total // 12 + 1),
                "myRights": {
                    right: True
                    for right in (
                        "mayReadItems",
                        "mayAddItems",
                        "mayRemoveItems",
                        "maySetSeen",
                        "maySetKeywords",
                        "mayCreateChild",
                        "mayRename",
                        "mayDelete",
                        "maySubmit",
                    )
                },
                "isSubscribed": rng.random() < 0.8,
            }
        )
    return {"accountId": "u1a2b3c4d", "state": "m" + str(rng.randint(100, 999)), "list": mailboxes}
