"""The reference server's blobs: upload and download (RFC 8620 §6) and RFC 9404.

Everything runs on real sockets on 127.0.0.1 port 0, with http.client, raw sockets and
websocket-client only: nothing here uses jmapws_sync's own client, so these tests pin the
server down independently of it (tests/test_blobs.py drives the client against it).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import threading
import time
import tracemalloc
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from jmapws_sync.testing import NOTES, ReferenceServer
from jmapws_sync.testing.blobs import BlobBuffer, BlobStore, blob_id_for
from jmapws_sync.testing.transfer import UNSATISFIABLE, parse_range

from .conftest import USERS

pytestmark = pytest.mark.timeout(60)

CORE = "urn:ietf:params:jmap:core"
BLOB = "urn:ietf:params:jmap:blob"
ERR = "urn:ietf:params:jmap:error:"
ALICE = "a-alice"
MiB = 1 << 20
UPLOAD = f"/jmap/upload/{ALICE}/"


# -- helpers ------------------------------------------------------------------------------
def basic(user: str = "alice") -> str:
    """An Authorization header value for HTTP Basic, with the conftest password."""
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    return "Basic " + token


def payload(size: int, seed: int = 1) -> bytes:
    """``size`` octets that differ by position."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Answer:
    """One HTTP response: status, headers, and the body as far as it came."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.body = b""
        self.error: BaseException | None = None
        try:
            while chunk := resp.read1(65536):
                self.body += chunk
        except (ConnectionError, http.client.IncompleteRead) as exc:
            self.error = exc

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    srv: ReferenceServer,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    auth: str | None = "alice",
    chunked: bool = False,
) -> Answer:
    """One request on a fresh connection; the body is read until it ends or breaks."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = basic(auth)
        conn.request(method, path, body=body, headers=sent, encode_chunked=chunked)
        return Answer(conn.getresponse())
    finally:
        conn.close()


def upload(
    srv: ReferenceServer, data: bytes, content_type: str | None = None, **kwargs: Any
) -> Answer:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return exchange(srv, "POST", UPLOAD, body=data, headers=headers, **kwargs)


def download(
    srv: ReferenceServer,
    blob_id: str,
    name: str = "file.bin",
    query: str = "",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Answer:
    path = f"/jmap/download/{ALICE}/{blob_id}/{urllib.parse.quote(name)}{query}"
    return exchange(srv, "GET", path, headers=headers, **kwargs)


def api(srv: ReferenceServer, calls: list[list[Any]], using: list[str] | None = None) -> Any:
    """POST one Request to apiUrl; the decoded body (a Response or a problem)."""
    obj = {"using": [CORE, BLOB] if using is None else using, "methodCalls": calls}
    answer = exchange(
        srv,
        "POST",
        "/jmap/api",
        body=json.dumps(obj).encode(),
        headers={"Content-Type": "application/json"},
    )
    return answer.json()


def one(srv: ReferenceServer, name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One method call over HTTP: the response's name and arguments."""
    name_out, args_out, _ = api(srv, [[name, {"accountId": ALICE, **args}, "c"]])[
        "methodResponses"
    ][0]
    return name_out, args_out


def session(srv: ReferenceServer) -> dict[str, Any]:
    result: dict[str, Any] = exchange(srv, "GET", "/jmap/session").json()
    return result


class PartialUpload:
    """An upload whose headers and first octets are out, the rest held back."""

    def __init__(self, srv: ReferenceServer, data: bytes, sent: int) -> None:
        self.data, self.sent = data, sent
        self.conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        self.conn.putrequest("POST", UPLOAD)
        self.conn.putheader("Authorization", basic())
        self.conn.putheader("Content-Length", str(len(data)))
        self.conn.endheaders()
        self.conn.send(data[:sent])

    def finish(self) -> Answer:
        try:
            self.conn.send(self.data[self.sent :])
            return Answer(self.conn.getresponse())
        finally:
            self.conn.close()


@pytest.fixture
def srv() -> Iterator[ReferenceServer]:
    with ReferenceServer(users=USERS, seed=1) as server:
        yield server


# -- upload and download round trips ------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 5 * MiB])
def test_upload_then_download_round_trip(srv: ReferenceServer, size: int) -> None:
    """201 with accountId, blobId, type, size; the download gives the same octets."""
    data = payload(size)
    answer = upload(srv, data, "application/x-test")
    assert answer.status == 201
    assert answer.headers.get_content_type() == "application/json"
    created = answer.json()
    assert created == {
        "accountId": ALICE,
        "blobId": "G" + sha(data)[:40],
        "type": "application/x-test",
        "size": size,
    }
    got = download(srv, created["blobId"], "my file ü.bin")
    assert got.status == 200
    assert got.error is None
    assert sha(got.body) == sha(data)
    assert got.headers["Content-Length"] == str(size)
    assert got.headers["Content-Type"] == "application/x-test"
    assert got.headers["Accept-Ranges"] == "bytes"
    assert got.headers["ETag"] == f'"{created["blobId"]}"'
    assert got.headers["Content-Disposition"] == (
        "attachment; filename*=UTF-8''my%20file%20%C3%BC.bin"
    )
    assert srv.blob("alice", created["blobId"]) == data


def test_upload_types_and_download_type_parameters(srv: ReferenceServer) -> None:
    """No Content-Type is octet-stream; ?type= (or Cyrus's ?accept=) sets the download's."""
    created = upload(srv, b"untyped").json()
    assert created["type"] == "application/octet-stream"
    blob_id = created["blobId"]
    assert download(srv, blob_id).headers["Content-Type"] == "application/octet-stream"
    typed = download(srv, blob_id, query="?type=text/plain")
    assert (typed.headers["Content-Type"], typed.body) == ("text/plain", b"untyped")
    cyrus = download(srv, blob_id, query="?accept=image%2Fpng")
    assert cyrus.headers["Content-Type"] == "image/png"
    head = exchange(srv, "HEAD", f"/jmap/download/{ALICE}/{blob_id}/x")
    assert (head.status, head.headers["Content-Length"], head.body) == (200, "7", b"")


def test_the_same_octets_get_the_same_id_and_python_side_helpers(srv: ReferenceServer) -> None:
    """Ids are content addresses; add_blob and blob reach the same store as HTTP."""
    blob_id = srv.add_blob("alice", b"from python", type="text/plain")
    assert blob_id == blob_id_for(b"from python") == "G" + sha(b"from python")[:40]
    assert upload(srv, b"from python").json()["blobId"] == blob_id
    assert download(srv, blob_id).body == b"from python"
    assert srv.blob("alice", blob_id) == b"from python"
    assert srv.blob("bob", blob_id) is None  # another account
    assert srv.blob("alice", "Gnothere") is None


def test_auth_and_unknown_accounts_and_blobs(srv: ReferenceServer) -> None:
    """401 with a challenge without credentials; 404 problems for others' accounts."""
    blob_id = srv.add_blob("alice", b"secret")
    for answer in (
        upload(srv, b"x", auth=None),
        download(srv, blob_id, auth=None),
    ):
        assert answer.status == 401
        assert "Basic" in answer.headers["WWW-Authenticate"]
    for answer in (
        exchange(srv, "POST", "/jmap/upload/a-bob/", body=b"x"),
        exchange(srv, "POST", "/jmap/upload/a-nobody/", body=b"x"),
        exchange(srv, "GET", f"/jmap/download/a-bob/{blob_id}/x"),
        download(srv, blob_id, auth="bob"),
        download(srv, "Gnothere"),
    ):
        assert answer.status == 404
        assert answer.headers.get_content_type() == "application/problem+json"
        assert answer.json()["status"] == 404
    assert srv.blob_stats().uploads == 2  # authenticated ones only


def test_blobs_survive_a_restart() -> None:
    """ReferenceServer(blobs=old.blobs) serves the same blobs on the same port."""
    with ReferenceServer(users=USERS) as first:
        blob_id = upload(first, b"kept").json()["blobId"]
        port, blobs, store = first.port, first.blobs, first.store
    with ReferenceServer(users=USERS, port=port, blobs=blobs, store=store) as again:
        assert again.blobs is blobs
        assert download(again, blob_id).body == b"kept"


def test_a_big_upload_is_kept_in_the_buffer_it_arrived_in() -> None:
    """An upload costs about its size once: not one copy per step (tracemalloc)."""
    size = 16 * MiB
    data = payload(size, seed=9)
    with ReferenceServer(users=USERS, max_size_upload=64 * MiB) as server:
        for chunked in (False, True):
            body: Any = data if not chunked else (data[i : i + MiB] for i in range(0, size, MiB))
            tracemalloc.start()
            try:
                answer = upload(server, body, chunked=chunked)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert answer.status == 201
            server.blobs.delete(ALICE, answer.json()["blobId"])
            assert peak < 1.5 * size, (chunked, peak / size)


def test_blob_buffer_and_store_keep_one_copy() -> None:
    """The store keeps the upload's buffer behind a read-only view."""
    store = BlobStore()
    buffer = BlobBuffer(6)
    buffer.write(b"abc")
    buffer.write(memoryview(b"defgh"))  # more than announced
    blob = store.put_buffer("acc", buffer, "text/plain")
    assert (blob.view.tobytes(), blob.size, blob.id) == (b"abcdefgh", 8, blob_id_for(b"abcdefgh"))
    assert blob.view.readonly
    with pytest.raises(RuntimeError):
        buffer.write(b"x")
    again = store.put("acc", bytearray(b"abcdefgh"), "application/x-again")
    assert again.view is blob.view  # the same octets: one copy, the newer type
    assert store.get("acc", blob.id) is again
    assert again.type == "application/x-again"
    assert [c.tobytes() for c in blob.chunks(1, 8, 3)] == [b"bcd", b"efg", b"h"]


# -- maxSizeUpload and maxConcurrentUpload ---------------------------------------------------
def test_a_content_length_over_max_size_upload_is_refused_before_the_body() -> None:
    """413 (limit maxSizeUpload) answered to the headers alone; at the limit is fine."""
    with ReferenceServer(users=USERS, max_size_upload=1000) as server:
        caps = session(server)["capabilities"][CORE]
        assert (caps["maxSizeUpload"], caps["maxConcurrentUpload"]) == (1000, 4)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            conn.putrequest("POST", UPLOAD)
            conn.putheader("Authorization", basic())
            conn.putheader("Content-Length", str(10**9))
            conn.endheaders()  # and not a byte of the body
            refused = Answer(conn.getresponse())
        finally:
            conn.close()
        assert refused.status == 413
        assert refused.headers.get_content_type() == "application/problem+json"
        problem = refused.json()
        assert (problem["type"], problem["limit"], problem["status"]) == (
            ERR + "limit",
            "maxSizeUpload",
            413,
        )
        assert refused.headers["Connection"] == "close"
        assert upload(server, b"x" * 1000).status == 201
        assert upload(server, b"x" * 1001).status == 413
        assert server.blob_stats().max_concurrent_uploads == 1  # the refused never started


def test_a_chunked_body_growing_past_max_size_upload_is_413() -> None:
    """Without a Content-Length, the limit is enforced as the body arrives."""
    with ReferenceServer(users=USERS, max_size_upload=1000) as server:
        small = upload(server, iter([b"a" * 600, b"b" * 400]), chunked=True)
        assert (small.status, small.json()["size"]) == (201, 1000)
        big = upload(server, iter([b"a" * 600, b"b" * 600]), chunked=True)
        assert (big.status, big.json()["limit"]) == (413, "maxSizeUpload")


def _expecting(server: ReferenceServer, length: int) -> tuple[socket.socket, bytes]:
    """Send the head of an upload with Expect: 100-continue; the first answer's head."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(
        (
            f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic()}\r\n"
            f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def test_expect_100_continue_is_refused_or_invited_before_the_body() -> None:
    """A client that waits for 100 Continue learns of a 413 without sending the body."""
    with ReferenceServer(users=USERS, max_size_upload=1000) as server:
        sock, head = _expecting(server, 5000)
        sock.close()
        assert head.startswith(b"HTTP/1.1 413")
        sock, head = _expecting(server, 5)
        try:
            assert head.startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(b"hello")
            final = b""
            while b"}" not in final:
                final += sock.recv(4096)
        finally:
            sock.close()
        assert final.startswith(b"HTTP/1.1 201")
        assert server.blob("alice", blob_id_for(b"hello")) == b"hello"
        assert server.blob_stats().uploads == 2  # counted once each


def test_max_concurrent_upload_refuses_one_more_with_429() -> None:
    """Four bodies on their way: a fifth upload is 429 (maxConcurrentUpload)."""
    with ReferenceServer(users=USERS) as server:
        data = [payload(1000, seed=n) for n in range(4)]
        held = [PartialUpload(server, d, 10) for d in data]
        try:
            assert server.wait_for_blob_stats(lambda s: s.uploads_in_progress == 4, timeout=10)
            refused = upload(server, b"one too many")
            assert refused.status == 429
            problem = refused.json()
            assert (problem["type"], problem["limit"]) == (ERR + "limit", "maxConcurrentUpload")
            assert refused.headers["Connection"] == "close"
            assert server.blob_stats().uploads_in_progress == 4  # the refused never started
            other = server.add_blob("alice", b"d")
            assert download(server, other).body == b"d"  # downloads are not limited
        finally:
            answers = [h.finish() for h in held]
        assert [a.status for a in answers] == [201] * 4
        assert [server.blob("alice", a.json()["blobId"]) for a in answers] == data
        stats = server.blob_stats()
        assert (stats.max_concurrent_uploads, stats.uploads_in_progress) == (4, 0)
        assert upload(server, b"room again").status == 201


def test_the_concurrency_limit_is_per_user() -> None:
    """Bob may upload while alice has maxConcurrentUpload uploads going."""
    with ReferenceServer(users=USERS, max_concurrent_upload=1) as server:
        held = PartialUpload(server, b"0123456789", 3)
        try:
            assert server.wait_for_blob_stats(lambda s: s.uploads_in_progress == 1, timeout=10)
            assert upload(server, b"alice again").status == 429
            bob = exchange(server, "POST", "/jmap/upload/a-bob/", body=b"bob", auth="bob")
            assert bob.status == 201
            assert server.blob_stats().max_concurrent_uploads == 2
        finally:
            assert held.finish().status == 201


# -- ranges ------------------------------------------------------------------------------
def test_range_requests_answer_206(srv: ReferenceServer) -> None:
    """bytes=N-M, bytes=N- and bytes=-K give 206 with Content-Range; the last is noted."""
    data = payload(1000)
    blob_id = srv.add_blob("alice", data)
    for spec, start, end in (
        ("bytes=10-19", 10, 20),
        ("bytes=990-", 990, 1000),
        ("bytes=900-5000", 900, 1000),
        ("bytes=-5", 995, 1000),
        ("bytes=0-0", 0, 1),
    ):
        got = download(srv, blob_id, headers={"Range": spec})
        assert got.status == 206, spec
        assert got.body == data[start:end], spec
        assert got.headers["Content-Range"] == f"bytes {start}-{end - 1}/1000", spec
        assert got.headers["Content-Length"] == str(end - start)
        assert srv.blob_stats().last_range == spec
    download(srv, blob_id)
    assert srv.blob_stats().last_range is None


def test_unsatisfiable_ranges_answer_416(srv: ReferenceServer) -> None:
    """A range starting at or past the end: 416 with Content-Range bytes */TOTAL."""
    blob_id = srv.add_blob("alice", b"0123456789")
    empty = srv.add_blob("alice", b"")
    for which, spec, total in (
        (blob_id, "bytes=10-", 10),
        (blob_id, "bytes=50-60", 10),
        (blob_id, "bytes=-0", 10),
        (empty, "bytes=0-", 0),
    ):
        got = download(srv, which, headers={"Range": spec})
        assert got.status == 416, spec
        assert got.headers["Content-Range"] == f"bytes */{total}"
        assert got.json()["status"] == 416


def test_ignored_ranges_and_if_range(srv: ReferenceServer) -> None:
    """Several ranges, bad syntax and a stale If-Range get the whole blob (200)."""
    data = b"0123456789"
    blob_id = srv.add_blob("alice", data)
    etag = f'"{blob_id}"'
    for headers in (
        {"Range": "bytes=0-1,4-5"},
        {"Range": "bytes=5-2"},
        {"Range": "lines=1-2"},
        {"Range": "bytes=2-3", "If-Range": '"Gsomethingelse"'},
    ):
        got = download(srv, blob_id, headers=headers)
        assert (got.status, got.body) == (200, data), headers
    fresh = download(srv, blob_id, headers={"Range": "bytes=2-3", "If-Range": etag})
    assert (fresh.status, fresh.body) == (206, b"23")


def test_parse_range() -> None:
    """The Range parser on its own."""
    assert parse_range("bytes=0-", 5) == (0, 5)
    assert parse_range("Bytes = 1-2", 5) == (1, 3)
    assert parse_range("bytes=-10", 5) == (0, 5)
    assert parse_range("bytes=5-", 5) == UNSATISFIABLE
    assert parse_range("bytes=-", 5) is None
    assert parse_range("bytes=a-b", 5) is None
    assert parse_range("bytes=1-2,3-4", 5) is None


# -- knobs -------------------------------------------------------------------------------
def test_drop_downloads_cuts_the_connection_mid_body(srv: ReferenceServer) -> None:
    """The client gets the headers and after_bytes octets, then a reset: not a clean end."""
    data = payload(2 * MiB, seed=3)
    blob_id = srv.add_blob("alice", data)
    srv.drop_downloads(700_000, times=2)
    for _ in range(2):
        cut = download(srv, blob_id)
        assert cut.status == 200
        assert cut.headers["Content-Length"] == str(len(data))
        assert cut.body == data[:700_000]
        assert isinstance(cut.error, ConnectionResetError | http.client.IncompleteRead)
    whole = download(srv, blob_id)
    assert (whole.body == data, whole.error) == (True, None)
    # What a resuming client does: the rest by Range, also cut when asked.
    srv.drop_downloads(1000)
    first = download(srv, blob_id)
    rest = download(srv, blob_id, headers={"Range": f"bytes={len(first.body)}-"})
    assert (len(first.body), rest.status) == (1000, 206)
    assert sha(first.body + rest.body) == sha(data)


def test_drop_downloads_at_zero_sends_headers_only_and_skips_error_answers(
    srv: ReferenceServer,
) -> None:
    """after_bytes=0 cuts before the body; 404s and HEADs do not use up a drop."""
    blob_id = srv.add_blob("alice", b"abcdef")
    srv.drop_downloads(0)
    assert download(srv, "Gnothere").status == 404
    assert exchange(srv, "HEAD", f"/jmap/download/{ALICE}/{blob_id}/x").status == 200
    cut = download(srv, blob_id)
    assert (cut.status, cut.body) == (200, b"")
    assert cut.error is not None
    assert download(srv, blob_id).body == b"abcdef"


def test_ranges_false_ignores_range(srv: ReferenceServer) -> None:
    """ranges(False): 200 with the whole body and no Accept-Ranges; True restores."""
    blob_id = srv.add_blob("alice", b"0123456789")
    srv.ranges(False)
    got = download(srv, blob_id, headers={"Range": "bytes=2-3"})
    assert (got.status, got.body) == (200, b"0123456789")
    assert "Accept-Ranges" not in got.headers
    assert "Content-Range" not in got.headers
    assert srv.blob_stats().last_range == "bytes=2-3"  # seen, not honoured
    srv.ranges(True)
    again = download(srv, blob_id, headers={"Range": "bytes=2-3"})
    assert (again.status, again.body, again.headers["Accept-Ranges"]) == (206, b"23", "bytes")


def test_busy_answers_status_with_retry_after(srv: ReferenceServer) -> None:
    """busy(): the next count transfers get the status, Retry-After and a problem."""
    blob_id = srv.add_blob("alice", b"later")
    srv.busy(2, status=503, retry_after="7")
    for answer in (upload(srv, b"x"), download(srv, blob_id)):
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "7"
        assert answer.headers.get_content_type() == "application/problem+json"
        assert answer.json()["status"] == 503
    assert download(srv, blob_id).body == b"later"
    srv.busy(1, status=429, retry_after=None)
    refused = upload(srv, b"x")
    assert (refused.status, refused.headers["Retry-After"]) == (429, None)
    assert upload(srv, b"x").status == 201
    srv.busy(1)
    assert download(srv, blob_id, auth=None).status == 401  # credentials first
    assert download(srv, blob_id).headers["Retry-After"] == "1"  # the defaults: 503, "1"
    with pytest.raises(ValueError):
        srv.busy(1, status=200)


def test_throttles_slow_transfers_down(srv: ReferenceServer) -> None:
    """throttle_downloads / throttle_uploads: bytes still arrive whole, at the pace asked."""
    data = payload(100_000, seed=4)
    blob_id = srv.add_blob("alice", data)
    srv.throttle_downloads(200_000)
    start = time.monotonic()
    got = download(srv, blob_id)
    assert time.monotonic() - start >= 0.4  # 100 kB at 200 kB/s
    assert got.body == data
    srv.throttle_downloads(None)
    srv.throttle_uploads(200_000)
    start = time.monotonic()
    created = upload(srv, payload(100_000, seed=5))
    assert time.monotonic() - start >= 0.4
    assert created.json()["size"] == 100_000
    srv.throttle_uploads(None)
    start = time.monotonic()
    assert download(srv, blob_id).body == data
    with pytest.raises(ValueError):
        srv.throttle_uploads(0)


def test_knobs_act_on_a_server_in_another_thread_while_transfers_run(
    srv: ReferenceServer,
) -> None:
    """Knob calls from several threads while downloads run: nothing is lost or stuck."""
    blob_id = srv.add_blob("alice", payload(300_000))
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            for _ in range(3):
                assert download(srv, blob_id).status == 200
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for rate in (1_000_000.0, None, 2_000_000.0, None):
        srv.throttle_downloads(rate)
        srv.ranges(rate is None)
    for thread in threads:
        thread.join(30)
    assert not errors
    assert srv.blob_stats().downloads == 9


# -- RFC 9404 ------------------------------------------------------------------------------
def test_the_blob_capability_is_advertised() -> None:
    """capabilities[blob] is {}; each account has the RFC 9404 §3.1 limits."""
    with ReferenceServer(users=USERS, max_size_blob_set=5000) as server:
        resource = session(server)
        assert resource["capabilities"][BLOB] == {}
        account = resource["accounts"][ALICE]["accountCapabilities"]
        assert account[BLOB] == {
            "maxSizeBlobSet": 5000,
            "maxDataSources": 64,
            "supportedTypeNames": ["Note", "Notebook"],
            "supportedDigestAlgorithms": ["sha", "sha-256"],
        }
        assert account[NOTES] == {}
        assert resource["uploadUrl"] == server.base_url + "/jmap/upload/{accountId}/"
        assert resource["downloadUrl"] == (
            server.base_url + "/jmap/download/{accountId}/{blobId}/{name}?type={type}"
        )
    with ReferenceServer(users=USERS, max_size_blob_set=None, relative_urls=True) as server:
        resource = session(server)
        assert resource["accounts"][ALICE]["accountCapabilities"][BLOB]["maxSizeBlobSet"] is None
        assert resource["uploadUrl"] == "/jmap/upload/{accountId}/"
        assert resource["downloadUrl"].startswith("/jmap/download/{accountId}/")


def test_blob_capability_false_turns_rfc_9404_off_but_not_http() -> None:
    """Not advertised, an unknown capability in using, Blob/get an unknown method."""
    with ReferenceServer(users=USERS, blob_capability=False) as server:
        resource = session(server)
        assert BLOB not in resource["capabilities"]
        assert BLOB not in resource["accounts"][ALICE]["accountCapabilities"]
        problem = api(server, [["Core/echo", {}, "c"]])
        assert problem["type"] == ERR + "unknownCapability"
        answer = api(server, [["Blob/get", {"accountId": ALICE, "ids": []}, "c"]], [CORE])
        assert answer["methodResponses"][0][:2] == ["error", {"type": "unknownMethod"}]
        blob_id = upload(server, b"http still works").json()["blobId"]
        assert download(server, blob_id).body == b"http still works"


def test_blob_methods_need_the_capability_in_using(srv: ReferenceServer) -> None:
    problem = api(srv, [["Blob/get", {"accountId": ALICE, "ids": []}, "c"]], [CORE])
    assert problem["type"] == ERR + "unknownCapability"
    assert problem["status"] == 400


def test_blob_upload_from_each_data_source(srv: ReferenceServer) -> None:
    """data:asText, data:asBase64 and blobId ranges, concatenated; #creationId works."""
    base = srv.add_blob("alice", b"0123456789")
    response = api(
        srv,
        [
            [
                "Blob/upload",
                {
                    "accountId": ALICE,
                    "create": {
                        "t": {"data": [{"data:asText": "héllo "}], "type": "text/plain"},
                        "b": {"data": [{"data:asBase64": base64.b64encode(b"\x00\xff").decode()}]},
                        "r": {
                            "data": [
                                {"blobId": base, "offset": 2, "length": 3},
                                {"blobId": base, "offset": 8},
                                {"blobId": "#t"},
                                {"blobId": base, "length": 1},
                            ]
                        },
                        "empty": {"data": []},
                    },
                },
                "up",
            ],
            ["Blob/get", {"accountId": ALICE, "ids": ["#r"], "properties": ["data"]}, "get"],
        ],
    )
    (name, up, _), (_, got, _) = response["methodResponses"]
    assert name == "Blob/upload"
    assert up["notCreated"] is None
    created = up["created"]
    text = "héllo ".encode()
    assert created["t"] == {"id": blob_id_for(text), "type": "text/plain", "size": len(text)}
    assert created["b"] == {
        "id": blob_id_for(b"\x00\xff"),
        "type": "application/octet-stream",
        "size": 2,
    }
    combined = b"234" + b"89" + text + b"0"
    assert created["r"]["id"] == blob_id_for(combined)
    assert created["empty"]["size"] == 0
    assert got["list"] == [{"id": created["r"]["id"], "data:asText": combined.decode()}]
    assert srv.blob("alice", created["b"]["id"]) == b"\x00\xff"
    # the HTTP download serves what Blob/upload made
    assert download(srv, created["t"]["id"]).headers["Content-Type"] == "text/plain"
    assert download(srv, created["r"]["id"]).body == combined


def test_blob_upload_creation_ids_go_into_created_ids(srv: ReferenceServer) -> None:
    obj = {
        "using": [CORE, BLOB],
        "methodCalls": [
            [
                "Blob/upload",
                {"accountId": ALICE, "create": {"x": {"data": [{"data:asText": "x"}]}}},
                "c",
            ]
        ],
        "createdIds": {},
    }
    answer = exchange(srv, "POST", "/jmap/api", body=json.dumps(obj).encode()).json()
    assert answer["createdIds"] == {"x": blob_id_for(b"x")}


def test_blob_upload_errors(srv: ReferenceServer) -> None:
    """Bad base64 and bad sources are invalidProperties, unknown blobs blobNotFound."""
    base = srv.add_blob("alice", b"0123456789")
    _, up = one(
        srv,
        "Blob/upload",
        {
            "create": {
                "badb64": {"data": [{"data:asBase64": "not base64!"}]},
                "two": {"data": [{"data:asText": "a", "data:asBase64": "YQ=="}]},
                "past": {"data": [{"blobId": base, "offset": 5, "length": 6}]},
                "offtext": {"data": [{"data:asText": "a", "offset": 1}]},
                "missing": {"data": [{"blobId": "Gnothere"}]},
                "extra": {"data": [], "name": "x"},
                "nodata": {"type": "text/plain"},
                "badtype": {"data": [], "type": "text/plain\r\nX-Evil: 1"},
                "ok": {"data": [{"blobId": base, "offset": 10}]},
            }
        },
    )
    errors = up["notCreated"]
    for cid in ("badb64", "two", "past", "offtext", "nodata", "badtype"):
        assert errors[cid]["type"] == "invalidProperties", cid
    assert errors["extra"] == {
        "type": "invalidProperties",
        "description": errors["extra"]["description"],
        "properties": ["name"],
    }
    assert errors["missing"]["type"] == "blobNotFound"
    assert errors["missing"]["notFound"] == ["Gnothere"]
    assert up["created"] == {
        "ok": {"id": blob_id_for(b""), "type": "application/octet-stream", "size": 0}
    }
    name, args = one(srv, "Blob/upload", {"create": None})
    assert (name, args["type"]) == ("error", "invalidArguments")
    name, args = one(srv, "Blob/upload", {"accountId": "a-bob", "create": {}})
    assert (name, args["type"]) == ("error", "accountNotFound")


def test_blob_upload_limits() -> None:
    """Over maxSizeBlobSet is tooLarge; over maxDataSources invalidProperties."""
    with ReferenceServer(users=USERS, max_size_blob_set=10) as server:
        _, up = one(
            server,
            "Blob/upload",
            {
                "create": {
                    "fits": {"data": [{"data:asText": "0123456789"}]},
                    "big": {"data": [{"data:asText": "01234"}, {"data:asText": "567890"}]},
                    "many": {"data": [{"data:asText": ""}] * 65},
                }
            },
        )
        assert up["created"]["fits"]["size"] == 10
        assert up["notCreated"]["big"]["type"] == "tooLarge"
        assert up["notCreated"]["many"]["type"] == "invalidProperties"
        assert server.blobs.ids(ALICE) == [up["created"]["fits"]["id"]]


def test_blob_get_properties(srv: ReferenceServer) -> None:
    """Each property; data is text when the octets are UTF-8, else base64."""
    text_id = srv.add_blob("alice", "ünïcode".encode())
    binary = b"\xff\x00\xfe"
    binary_id = srv.add_blob("alice", binary)
    _, got = one(srv, "Blob/get", {"ids": [text_id, binary_id, "Gnothere"]})
    assert got["accountId"] == ALICE
    assert got["notFound"] == ["Gnothere"]
    assert got["list"] == [  # the default properties: data and size
        {"id": text_id, "data:asText": "ünïcode", "size": len("ünïcode".encode())},
        {
            "id": binary_id,
            "data:asBase64": base64.b64encode(binary).decode(),
            "isEncodingProblem": True,
            "size": 3,
        },
    ]
    props = ["data:asText", "data:asBase64", "digest:sha", "digest:sha-256", "size"]
    _, got = one(srv, "Blob/get", {"ids": [binary_id], "properties": props})
    assert got["list"] == [
        {
            "id": binary_id,
            "data:asText": None,
            "data:asBase64": base64.b64encode(binary).decode(),
            "isEncodingProblem": True,
            "digest:sha": base64.b64encode(hashlib.sha1(binary).digest()).decode(),
            "digest:sha-256": base64.b64encode(hashlib.sha256(binary).digest()).decode(),
            "size": 3,
        }
    ]
    _, got = one(srv, "Blob/get", {"ids": [text_id], "properties": ["size"]})
    assert got["list"] == [{"id": text_id, "size": len("ünïcode".encode())}]
    name, error = one(srv, "Blob/get", {"ids": [text_id], "properties": ["digest:md5"]})
    assert (name, error["type"]) == ("error", "invalidArguments")
    name, error = one(srv, "Blob/get", {"ids": None})
    assert (name, error["type"]) == ("error", "invalidArguments")


def test_blob_get_offset_length_and_truncation(srv: ReferenceServer) -> None:
    """A range of the data; isTruncated when it runs past the end; size stays whole."""
    blob_id = srv.add_blob("alice", b"0123456789")

    def get(**args: Any) -> dict[str, Any]:
        props = ["data:asText", "size", "digest:sha-256"]
        _, got = one(srv, "Blob/get", {"ids": [blob_id], "properties": props, **args})
        entry: dict[str, Any] = got["list"][0]
        return entry

    assert get(offset=2, length=3)["data:asText"] == "234"
    assert "isTruncated" not in get(offset=2, length=3)
    assert get(offset=2, length=3)["size"] == 10
    assert get(offset=2, length=3)["digest:sha-256"] == (
        base64.b64encode(hashlib.sha256(b"234").digest()).decode()
    )
    assert get(offset=7) == {**get(offset=7), "data:asText": "789"}
    assert "isTruncated" not in get(offset=7)  # no length: to the end, not truncated
    truncated = get(offset=8, length=5)
    assert (truncated["data:asText"], truncated["isTruncated"]) == ("89", True)
    past = get(offset=20)
    assert (past["data:asText"], past["isTruncated"]) == ("", True)
    assert get(offset=10)["data:asText"] == ""
    assert "isTruncated" not in get(offset=10)
    # a range that splits a UTF-8 sequence is an encoding problem
    wide = srv.add_blob("alice", "é".encode())
    _, got = one(srv, "Blob/get", {"ids": [wide], "length": 1})
    assert got["list"][0]["isEncodingProblem"] is True
    assert got["list"][0]["data:asBase64"] == base64.b64encode(b"\xc3").decode()
    name, error = one(srv, "Blob/get", {"ids": [blob_id], "offset": -1})
    assert (name, error["type"]) == ("error", "invalidArguments")


def test_http_uploads_are_seen_by_blob_get_over_websocket(srv: ReferenceServer) -> None:
    """One store: an HTTP upload read back with Blob/get on a WebSocket."""
    blob_id = upload(srv, b"over the socket").json()["blobId"]
    ws = websocket.create_connection(
        srv.ws_url, subprotocols=["jmap"], header=[f"Authorization: {basic()}"], timeout=10
    )
    try:
        ws.send(
            json.dumps(
                {
                    "@type": "Request",
                    "id": "r1",
                    "using": [CORE, BLOB],
                    "methodCalls": [
                        ["Blob/get", {"accountId": ALICE, "ids": [blob_id]}, "c1"],
                    ],
                }
            )
        )
        answer = json.loads(ws.recv())
    finally:
        ws.close()
    assert answer["@type"] == "Response"
    assert answer["methodResponses"][0][1]["list"] == [
        {"id": blob_id, "data:asText": "over the socket", "size": 15}
    ]
    assert srv.blob_stats().uploads == 1  # Blob/get is no HTTP transfer
