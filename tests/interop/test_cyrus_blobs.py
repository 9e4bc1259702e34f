"""Blob transfers against a real Cyrus IMAP 3.6 (issue 23): upload, import, download.

Every test goes through the library's public API (``upload``, ``download``, ``open_blob``
of ``WsSession`` and ``ReconnectingSession``); the standard library alone checks what
Cyrus itself advertises and answers, so that a test does not take the library's word for
it. What Cyrus 3.6 does, as found here and asserted below:

* The Session resource's ``uploadUrl`` and ``downloadUrl`` are relative
  (``/jmap/upload/{accountId}/``, ``/jmap/download/{accountId}/{blobId}/{name}?accept={type}``);
  ``maxSizeUpload`` is ``jmap_max_size_upload`` (KiB; 1 GiB by default). No RFC 9404.
* Blob ids are content addressed (``G`` and the SHA-1 of the bytes): an imported
  message's ``blobId`` is its upload's.
* An upload is kept byte for byte, bare LF included; but ``Email/import`` refuses a
  message with bare LF (``invalidEmail``, "Message contains bare newlines"), so only CRLF
  messages become Emails, and those come back byte for byte.
* Downloads answer ``Accept-Ranges: none`` and ignore ``Range`` (a full 200); the
  ``accept`` parameter becomes the Content-Type, ``name`` the Content-Disposition.
* Errors come as text/html pages, no RFC 7807: 404 for an unknown blob ("failed to find
  blob by id") and for an unknown account's upload URL, 401 with ``Basic`` for refused
  credentials, 413 for an upload over ``maxSizeUpload``, 400 for a name that is ``..``.
"""

from __future__ import annotations

import base64
import contextlib
import email.policy
import hashlib
import io
import json
import os
import socket
import threading
import time
import tracemalloc
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

import jmapws_sync as jws

from .conftest import cyrus_prefix
from .cyrus import CyrusServer

pytestmark = pytest.mark.interop

WAIT = 60.0  # a loaded CI machine: generous for every socket operation and call
MiB = 1 << 20
CORE, MAIL = jws.CORE, jws.MAIL
UPLOAD_TEMPLATE = "/jmap/upload/{accountId}/"
DOWNLOAD_TEMPLATE = "/jmap/download/{accountId}/{blobId}/{name}?accept={type}"


def auth(cyrus: CyrusServer) -> jws.BasicAuth:
    return jws.BasicAuth(cyrus.user, cyrus.password)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def ws(cyrus: CyrusServer) -> Iterator[jws.WsSession]:
    """A session to Cyrus, opened by discovery from its base URL."""
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=WAIT) as session:
        yield session


@pytest.fixture(scope="module")
def limited() -> Iterator[CyrusServer]:
    """A Cyrus that takes uploads of at most 1 MiB (``jmap_max_size_upload`` is in KiB)."""
    with CyrusServer(cyrus_prefix(), config={"jmap_max_size_upload": "1024"}) as server:
        yield server


def call(session: jws.WsSession, name: str, args: dict[str, Any]) -> dict[str, Any]:
    b = jws.RequestBuilder(using=[CORE, MAIL])
    handle = b.call(name, args)
    return session.call(b.build(), timeout=WAIT).get(handle.call_id)


def inbox_id(session: jws.WsSession, account: str) -> str:
    """The INBOX, by Mailbox/query on its role and Mailbox/get of what it found."""
    b = jws.RequestBuilder(using=[CORE, MAIL])
    query = b.call("Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}})
    get = b.call(
        "Mailbox/get",
        {"accountId": account, "ids": query.ref("/ids"), "properties": ["name", "role"]},
    )
    found = session.call(b.build(), timeout=WAIT).get(get.call_id)["list"]
    assert [m["role"] for m in found] == ["inbox"], found
    mailbox: str = found[0]["id"]
    return mailbox


def leaves(part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The body parts of a bodyStructure that are not multipart, in order."""
    if part.get("subParts"):
        for sub in part["subParts"]:
            yield from leaves(sub)
    else:
        yield part


def sha256_file(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class NotSeekable(io.RawIOBase):
    """A stream whose size cannot be known before it is read (as a pipe's): the library
    sends it chunked."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        piece = self._data.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


def unsized(data: bytes) -> io.BufferedReader:
    """``data`` as a file of unknown size, as a pipe's."""
    return io.BufferedReader(NotSeekable(data))


def read_to_end(stream: io.RawIOBase) -> int:
    """Read ``stream`` in 64 KiB pieces to its end; the bytes read."""
    count = 0
    while piece := stream.read(64 * 1024):
        count += len(piece)
    return count


class SwitchableAuth:
    """Basic credentials whose password can change after connecting (as when it is
    changed or revoked meanwhile); the library asks for the headers at every request."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password

    def __call__(self) -> dict[str, str]:
        return basic(self.user, self.password)


# -- the Session resource's URLs ---------------------------------------------------------------


def test_relative_upload_and_download_urls_work_as_advertised(cyrus: CyrusServer) -> None:
    """Cyrus names its blob URLs relative to itself; transfers go through them."""
    request = urllib.request.Request(
        cyrus.http_url + "/.well-known/jmap", headers=basic(cyrus.user, cyrus.password)
    )
    with urllib.request.urlopen(request, timeout=WAIT) as resp:  # follows Cyrus's 301
        raw = json.loads(resp.read())
    assert raw["uploadUrl"] == UPLOAD_TEMPLATE
    assert raw["downloadUrl"] == DOWNLOAD_TEMPLATE
    core = raw["capabilities"][CORE]
    assert core["maxSizeUpload"] == 1024 * MiB  # jmap_max_size_upload's default, 1048576 KiB
    assert core["maxConcurrentUpload"] >= 1
    assert "urn:ietf:params:jmap:blob" not in raw["capabilities"]  # RFC 9404 is 3.12+

    resource = jws.fetch_session(cyrus.http_url, auth=auth(cyrus), timeout=WAIT)
    assert resource.raw["uploadUrl"] == UPLOAD_TEMPLATE
    assert resource.raw["downloadUrl"] == DOWNLOAD_TEMPLATE
    # Resolved against the Session resource's own URL (http://host:port/jmap/).
    assert resource.upload_url == cyrus.http_url + UPLOAD_TEMPLATE
    assert resource.download_url == cyrus.http_url + DOWNLOAD_TEMPLATE

    data = os.urandom(100_000)
    with jws.connect(cyrus.http_url, auth=auth(cyrus), timeout=WAIT) as ws:
        assert ws.session is not None
        assert ws.session.upload_url == resource.upload_url
        blob = ws.upload(data, type="application/x-test", via="http")
        assert blob.size == len(data)
        assert blob.type == "application/x-test"
        assert blob.account_id == cyrus.user
        copy = io.BytesIO()
        assert ws.download(blob.blob_id, to=copy) == len(data)
        assert copy.getvalue() == data

    # The same bytes POSTed by hand to the advertised upload URL: the same blob (Cyrus's
    # ids are content addressed), so the library went where the template says.
    base = cyrus.http_url + "/jmap/"  # where the Session resource was served from
    upload = urllib.parse.urljoin(base, raw["uploadUrl"].replace("{accountId}", cyrus.user))
    post = urllib.request.Request(
        upload,
        data=data,
        method="POST",
        headers={**basic(cyrus.user, cyrus.password), "Content-Type": "application/x-test"},
    )
    with urllib.request.urlopen(post, timeout=WAIT) as resp:
        assert resp.status == 201
        answer = json.loads(resp.read())
    assert answer["blobId"] == blob.blob_id == "G" + hashlib.sha1(data).hexdigest()
    assert answer["size"] == len(data)

    # And the download template, filled by hand: accept= is the Content-Type Cyrus
    # answers with, name the file name it suggests (RFC 8187 for non-ASCII).
    values = {
        "accountId": cyrus.user,
        "blobId": blob.blob_id,
        "name": "résumé 2026.bin",
        "type": "application/x-test; v=1",
    }
    path = DOWNLOAD_TEMPLATE
    for key, value in values.items():
        path = path.replace("{" + key + "}", urllib.parse.quote(value, safe=""))
    get = urllib.request.Request(
        urllib.parse.urljoin(base, path), headers=basic(cyrus.user, cyrus.password)
    )
    with urllib.request.urlopen(get, timeout=WAIT) as resp:
        assert resp.read() == data
        assert resp.headers["Content-Type"] == "application/x-test; v=1"
        assert resp.headers["Content-Disposition"] == (
            "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%202026.bin"
        )
        assert resp.headers["Accept-Ranges"] == "none"
    # Cyrus ignores a Range: a full 200, so a cut download can only start again.
    ranged = urllib.request.Request(
        get.full_url, headers={**basic(cyrus.user, cyrus.password), "Range": "bytes=10-19"}
    )
    with urllib.request.urlopen(ranged, timeout=WAIT) as resp:
        assert resp.status == 200
        assert resp.read() == data


# -- a message with an attachment ---------------------------------------------------------------


def message_with_attachment(text: str, attachment: bytes) -> bytes:
    """An RFC 5322 message (CRLF line ends): a text body and one base64 attachment."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "test@localhost"
    msg["Subject"] = "the figures, attached"
    msg["Message-ID"] = f"<{os.urandom(8).hex()}@example.com>"
    msg["Date"] = "Wed, 02 Dec 2026 08:00:00 +0000"
    msg.set_content(text)
    msg.add_attachment(
        attachment, maintype="application", subtype="octet-stream", filename="figures.bin"
    )
    body, payload = msg.iter_parts()
    assert body["Content-Transfer-Encoding"] == "7bit"
    assert payload["Content-Transfer-Encoding"] == "base64"
    return msg.as_bytes()


def test_a_5_mib_message_uploaded_imported_and_its_attachment_downloaded(
    ws: jws.WsSession, tmp_path: Path
) -> None:
    attachment = os.urandom(3 * MiB + MiB // 2)
    text = "".join(f"Line {n:06d} of the report: nothing to see here.\n" for n in range(6000))
    raw = message_with_attachment(text, attachment)
    assert 4.5 * MiB < len(raw) < 6 * MiB
    assert b"\n" not in raw.replace(b"\r\n", b"")  # every line ends in CRLF

    blob = ws.upload(raw, type="message/rfc822", via="http", timeout=WAIT)
    assert blob.size == len(raw)
    assert blob.type == "message/rfc822"
    account = blob.account_id

    imported = call(
        ws,
        "Email/import",
        {
            "accountId": account,
            "emails": {
                "m1": {
                    "blobId": blob.blob_id,
                    "mailboxIds": {inbox_id(ws, account): True},
                    "keywords": {},
                }
            },
        },
    )
    assert imported["notCreated"] == {}, imported
    created = imported["created"]["m1"]
    try:
        got = call(
            ws,
            "Email/get",
            {
                "accountId": account,
                "ids": [created["id"]],
                "properties": ["blobId", "size", "bodyStructure", "attachments"],
                "bodyProperties": ["partId", "blobId", "type", "size", "name", "subParts"],
            },
        )
        (mail,) = got["list"]
        parts = list(leaves(mail["bodyStructure"]))
        assert [p["type"] for p in parts] == ["text/plain", "application/octet-stream"]
        text_part, file_part = parts
        assert mail["attachments"] == [file_part]
        assert file_part["name"] == "figures.bin"
        assert file_part["size"] == len(attachment)  # the decoded size, not the base64's

        # The attachment: its part's blob is the decoded bytes.
        target = tmp_path / "figures.bin"
        written = ws.download(
            file_part["blobId"],
            to=target,
            name=file_part["name"],
            type=file_part["type"],
            timeout=WAIT,
        )
        assert written == len(attachment)
        assert sha256_file(target) == hashlib.sha256(attachment).hexdigest()

        # The text part (7bit): its lines as the message has them, in CRLF.
        body = io.BytesIO()
        ws.download(text_part["blobId"], to=body, name="body.txt", type="text/plain")
        assert body.getvalue() == text.replace("\n", "\r\n").encode()

        # The whole message: Cyrus changes nothing in a CRLF message, and since its blob
        # ids are content addressed the Email's blob is the one uploaded.
        assert mail["blobId"] == created["blobId"] == blob.blob_id
        assert mail["size"] == len(raw)
        whole = tmp_path / "message.eml"
        assert ws.download(mail["blobId"], to=whole, name="message.eml", type="message/rfc822")
        assert whole.read_bytes() == raw
    finally:
        destroyed = call(ws, "Email/set", {"accountId": account, "destroy": [created["id"]]})
        assert destroyed["destroyed"] == [created["id"]]


def test_bare_lf_is_kept_by_upload_and_refused_by_import(ws: jws.WsSession) -> None:
    """Cyrus does not normalise line ends: an upload comes back as sent, LF and all, and
    Email/import will not make an Email of a message with bare LF."""
    msg = EmailMessage()  # the default policy: "\n" line ends
    msg["From"] = "alice@example.com"
    msg["To"] = "test@localhost"
    msg["Subject"] = "bare newlines"
    msg.set_content("one\ntwo\n")
    raw = msg.as_bytes()
    assert b"\r\n" not in raw

    blob = ws.upload(raw, type="message/rfc822", via="http")
    back = io.BytesIO()
    ws.download(blob.blob_id, to=back, type="message/rfc822")
    assert back.getvalue() == raw

    account = blob.account_id
    imported = call(
        ws,
        "Email/import",
        {
            "accountId": account,
            "emails": {
                "m1": {
                    "blobId": blob.blob_id,
                    "mailboxIds": {inbox_id(ws, account): True},
                    "keywords": {},
                }
            },
        },
    )
    assert not imported.get("created")
    refused = imported["notCreated"]["m1"]
    assert refused["type"] == "invalidEmail"
    assert "bare newlines" in refused["description"]


# -- 100 MiB in bounded memory ------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_100_mib_upload_and_download_by_path_in_bounded_memory(
    ws: jws.WsSession, tmp_path: Path
) -> None:
    size = 100 * MiB
    assert ws.session is not None
    assert ws.session.core.max_size_upload >= size  # 1 GiB: no server of our own needed
    source, target = tmp_path / "big.bin", tmp_path / "copy.bin"
    try:
        with open(source, "wb") as file:
            for _ in range(size // MiB):
                file.write(os.urandom(MiB))
        moved = [0, 0]  # progress: the last count, each way

        def sent(done: int, total: int | None) -> None:
            moved[0] = done

        def received(done: int, total: int | None) -> None:
            moved[1] = done

        # Only this process's Python allocations count: Cyrus is another process.
        tracemalloc.start()
        try:
            began = time.monotonic()
            blob = ws.upload(source, type="application/octet-stream", timeout=WAIT, progress=sent)
            up = time.monotonic() - began
            up_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            began = time.monotonic()
            written = ws.download(
                blob.blob_id, to=target, name="big.bin", timeout=WAIT, progress=received
            )
            down = time.monotonic() - began
            down_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

        print(
            f"\n100 MiB on Cyrus: upload {up:.2f} s ({100 / up:.0f} MiB/s, peak"
            f" {up_peak / MiB:.2f} MiB traced), download {down:.2f} s ({100 / down:.0f}"
            f" MiB/s, peak {down_peak / MiB:.2f} MiB traced)"
        )
        assert blob.size == size
        assert written == size
        assert moved == [size, size]
        assert up_peak < 8 * MiB
        assert down_peak < 8 * MiB
        assert sha256_file(target) == sha256_file(source)
        # No temporary file is left beside the copy.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "copy.bin"]
    finally:  # 200 MiB: not left for pytest's kept temporary directories
        source.unlink(missing_ok=True)
        target.unlink(missing_ok=True)


# -- errors -------------------------------------------------------------------------------------


def test_an_unknown_blob_is_blob_not_found(ws: jws.WsSession, tmp_path: Path) -> None:
    """Cyrus answers 404 (a text/html page, "failed to find blob by id"): BlobNotFound,
    with no problem details, and no file, not even a temporary one, is left."""
    unknown = "G" + hashlib.sha1(os.urandom(16)).hexdigest()
    for blob_id in (unknown, "no-such-blob"):
        with pytest.raises(jws.BlobNotFound) as info:
            ws.download(blob_id, to=tmp_path / "missing.bin", name="missing.bin")
        assert info.value.status == 404
        assert info.value.problem is None
        assert blob_id in str(info.value)
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(jws.BlobNotFound), ws.open_blob(blob_id) as stream:
            stream.read()


def test_refused_credentials_on_upload_and_download(cyrus: CyrusServer) -> None:
    """The password changes once the WebSocket is open: each transfer sends the current
    credentials, Cyrus answers 401 (``Basic``), an AuthenticationError."""
    credentials = SwitchableAuth(cyrus.user, cyrus.password)
    with jws.connect(cyrus.http_url, auth=credentials, timeout=WAIT) as ws:
        blob = ws.upload(b"kept", type="text/plain")
        credentials.password = "not the password"
        with pytest.raises(jws.AuthenticationError) as up:
            ws.upload(b"refused", type="text/plain")
        assert up.value.status == 401
        assert up.value.scheme == "Basic"
        assert "not the password" not in str(up.value)
        with pytest.raises(jws.AuthenticationError) as down:
            ws.download(blob.blob_id, to=io.BytesIO())
        assert down.value.status == 401
        # The WebSocket was authenticated at its handshake and goes on.
        assert call(ws, "Core/echo", {"still": "here"}) == {"still": "here"}
        credentials.password = cyrus.password
        copy = io.BytesIO()
        ws.download(blob.blob_id, to=copy)
        assert copy.getvalue() == b"kept"


def test_upload_to_an_unknown_account_is_a_404(ws: jws.WsSession) -> None:
    with pytest.raises(jws.BlobError) as info:
        ws.upload(b"nowhere", account_id="nobody", type="text/plain")
    assert type(info.value) is jws.BlobError  # not BlobNotFound: no blob was named
    assert info.value.status == 404


def test_over_max_size_upload(limited: CyrusServer) -> None:
    """``jmap_max_size_upload: 1024`` (KiB): 1 MiB is taken, a known size over it is
    refused before a byte is sent, a stream of unknown size is refused by Cyrus (413)."""
    with jws.connect(limited.http_url, auth=auth(limited), timeout=WAIT) as ws:
        assert ws.session is not None
        assert ws.session.core.max_size_upload == MiB
        assert ws.upload(os.urandom(MiB), via="http").size == MiB
        assert ws.upload(unsized(os.urandom(MiB))).size == MiB  # chunked

        calls: list[int] = []
        with pytest.raises(jws.BlobTooLarge) as early:
            ws.upload(os.urandom(MiB + 1), progress=lambda done, total: calls.append(done))
        assert calls == []  # refused before sending
        assert early.value.status is None

        with pytest.raises(jws.BlobTooLarge) as late:
            ws.upload(unsized(os.urandom(2 * MiB)), timeout=WAIT)
        assert late.value.status == 413
        assert late.value.problem is None  # Cyrus's 413 is a text/html page
        # The session is fine afterwards.
        assert ws.upload(b"small", type="text/plain").size == 5


def test_no_rfc_9404_on_cyrus_3_6(ws: jws.WsSession) -> None:
    """Without ``urn:ietf:params:jmap:blob`` a small upload goes over HTTP (``auto``);
    ``via="jmap"`` and ``read_blob`` say why they cannot."""
    blob = ws.upload(b"tiny", type="text/plain")  # via="auto"
    assert blob.blob_id == "G" + hashlib.sha1(b"tiny").hexdigest()
    with pytest.raises(jws.BlobError, match="urn:ietf:params:jmap:blob"):
        ws.upload(b"tiny", via="jmap")
    with pytest.raises(jws.BlobError, match="urn:ietf:params:jmap:blob"):
        ws.read_blob(blob.blob_id, offset=1, length=2)


def test_download_names_and_types_fill_the_template(ws: jws.WsSession) -> None:
    """Names and types with reserved and non-ASCII characters reach Cyrus encoded; only
    ``..`` cannot be a name there: Cyrus refuses the target (400, "Illegal request
    target"), percent-encoded (``%2E%2E``) or not."""
    data = b"the same bytes under any name"
    blob = ws.upload(data, type="text/plain")
    names = [
        "a/b.txt",
        "q?x=1&y=2.txt",
        "h#1.txt",
        "p%41.txt",
        "sp ace+plus.txt",
        ".",
        "日本語.txt",
    ]
    for name in names:
        for kind in (None, "text/plain", 'image/png; name="x y"'):
            copy = io.BytesIO()
            assert ws.download(blob.blob_id, to=copy, name=name, type=kind) == len(data), name
            assert copy.getvalue() == data
    with pytest.raises(jws.BlobError) as info:
        ws.download(blob.blob_id, to=io.BytesIO(), name="..")
    assert info.value.status == 400


# -- streams and ReconnectingSession ------------------------------------------------------------


def test_open_blob_reads_in_pieces(ws: jws.WsSession) -> None:
    data = os.urandom(200_003)  # more than three of the library's 64 KiB pieces
    blob = ws.upload(data, via="http")
    with ws.open_blob(blob.blob_id, name="pieces.bin") as stream:
        assert stream.total is None  # nothing asked yet
        got = bytearray()
        for want in (1, 7, 1000, 64 * 1024, 100_000):
            piece = stream.read(want)
            assert 0 < len(piece) <= want  # a raw stream may return less
            got += piece
        assert stream.total == len(data)  # Cyrus's Content-Length
        got += stream.read()  # the rest
        assert stream.read(10) == b""
    assert bytes(got) == data

    # Buffered, reads are exact; closing early is fine.
    with io.BufferedReader(ws.open_blob(blob.blob_id)) as buffered:
        assert buffered.read(70_000) == data[:70_000]
        assert buffered.read(3) == data[70_000:70_003]
    with ws.open_blob(blob.blob_id) as stream:
        view = bytearray(16)
        assert stream.readinto(view) == 16
        assert bytes(view) == data[:16]
    assert stream.closed


def test_reconnecting_session_transfers_across_a_cyrus_restart(cyrus: CyrusServer) -> None:
    """Upload before Cyrus restarts; download, upload and stream after the reconnect."""
    before, after = os.urandom(150_000), os.urandom(70_001)
    with jws.ReconnectingSession(
        cyrus.http_url,
        auth=auth(cyrus),
        backoff=jws.Backoff(first=(0.05, 0.1), factor=1.5, ceiling=0.5),
    ) as rs:
        rs.wait_connected(timeout=WAIT)
        first = rs.upload(before, type="application/octet-stream", timeout=WAIT)
        assert first.size == len(before)
        copy = io.BytesIO()
        assert rs.download(first.blob_id, to=copy, timeout=WAIT) == len(before)
        assert copy.getvalue() == before

        cyrus.restart()
        event = next(rs.events(timeout=WAIT))  # no push: the reconnect is the only event
        assert isinstance(event, jws.ReconnectInfo)
        assert event.close_code == 1001
        assert rs.reconnects == 1

        copy = io.BytesIO()  # uploads outlive a restart
        assert rs.download(first.blob_id, to=copy, name="before.bin", timeout=WAIT)
        assert copy.getvalue() == before
        second = rs.upload(after, type="application/octet-stream", timeout=WAIT)
        assert second.size == len(after)
        with rs.open_blob(second.blob_id, timeout=WAIT) as stream:
            got = bytearray()
            while piece := stream.read(10_000):
                assert len(piece) <= 10_000
                got += piece
        assert bytes(got) == after


# -- a download cut mid-body, from a server that ignores Range ----------------------------------


class CuttingRelay:
    """A TCP relay to Cyrus that cuts the first ``cuts`` downloads after ``after`` bytes of
    the answer, and records the request heads of the downloads."""

    def __init__(self, host: str, port: int, *, after: int, cuts: int) -> None:
        self._to = (host, port)
        self._after = after
        self._cuts = cuts
        self._lock = threading.Lock()
        self.downloads: list[bytes] = []
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="cutting-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._to, timeout=WAIT)
            except OSError:
                client.close()
                continue
            server.settimeout(None)  # an idle WebSocket through the relay stays up
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._serve, args=(client, server), daemon=True).start()

    def _serve(self, client: socket.socket, server: socket.socket) -> None:
        try:
            head = client.recv(65536)
        except OSError:
            head = b""
        if not head:
            self._shut(client, server)
            return
        limit = None
        if head.startswith(b"GET /jmap/download/"):
            with self._lock:
                self.downloads.append(head)
                if self._cuts:
                    self._cuts -= 1
                    limit = self._after
        server.sendall(head)
        threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
        self._pipe(server, client, limit)

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: limit - sent])
                    break  # the cut
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        self._shut(source, sink)

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut_next(self, cuts: int) -> None:
        """Cut the next ``cuts`` downloads too."""
        with self._lock:
            self._cuts = cuts

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self._listener.close()
        with self._lock:
            self._shut(*self._sockets)


def test_a_cut_download_starts_again_since_cyrus_ignores_range(
    cyrus: CyrusServer, tmp_path: Path
) -> None:
    """Cut mid-body, the download asks for the rest with Range; Cyrus sends all of it
    again (200), so the file is rewritten from the start, and comes out whole."""
    data = os.urandom(2 * MiB)
    relay = CuttingRelay(cyrus.host, cyrus.http_port, after=300_000, cuts=1)
    try:
        # Through the relay: the Session resource's relative URLs resolve to it.
        with jws.connect(relay.url, auth=auth(cyrus), timeout=WAIT) as ws:
            assert ws.session is not None
            assert ws.session.download_url.startswith(relay.url + "/jmap/download/")
            blob = ws.upload(data, via="http")
            target = tmp_path / "whole.bin"
            assert ws.download(blob.blob_id, to=target, timeout=WAIT) == len(data)
            assert target.read_bytes() == data
            assert len(relay.downloads) == 2
            assert b"\r\nrange: bytes=" not in relay.downloads[0].lower()
            assert b"\r\nrange: bytes=" in relay.downloads[1].lower()

            # A stream cannot take back what it gave: the same cut is an error there.
            relay.cut_next(1)
            with (
                ws.open_blob(blob.blob_id, timeout=WAIT) as stream,
                pytest.raises(jws.BlobError, match="ignored the Range"),
            ):
                read_to_end(stream)
    finally:
        relay.close()
    assert [p.name for p in tmp_path.iterdir()] == ["whole.bin"]


def test_a_closed_blob_stream_cannot_be_read(cyrus: CyrusServer) -> None:
    relay = CuttingRelay(cyrus.host, cyrus.http_port, after=0, cuts=0)  # counts, cuts nothing
    try:
        with jws.connect(relay.url, auth=auth(cyrus), timeout=WAIT) as ws:
            blob = ws.upload(os.urandom(1000), via="http")
            never_read = ws.open_blob(blob.blob_id)
            never_read.close()
            with pytest.raises(ValueError, match="closed"):
                never_read.read(4)
            assert relay.downloads == []  # nothing asked of Cyrus after close()
            read_once = ws.open_blob(blob.blob_id)
            read_once.read(4)
            read_once.close()
            with pytest.raises(ValueError, match="closed"):
                read_once.read(4)
    finally:
        relay.close()
