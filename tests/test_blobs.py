"""Blobs: upload and download beside the WebSocket (RFC 8620 §6), RFC 9404 on it.

Against the reference server over loopback, whose knobs really cut a download
mid-body, ignore ranges, answer 503 with Retry-After or go slowly; and small raw HTTP
servers for what it will not do (redirects to another origin, a resource naming
another origin). Every transfer is checked by sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync._http import HttpSettings, expand
from jmapws_sync.blobs import Blobs
from jmapws_sync.policy import Backoff
from jmapws_sync.resource import parse_session_json
from jmapws_sync.testing import ReferenceServer
from jmapws_sync.testing.child import ServerProcess

from .conftest import ALICE, USERS
from .support.httpfixtures import HttpServer, Reply, Seen, session_body

WAIT = 30.0
MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 1) -> bytes:
    """Bytes that do not compress to nothing and differ by position."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def ws(server: ReferenceServer) -> Iterator[jws.WsSession]:
    with jws.connect(server.base_url, auth=ALICE, timeout=WAIT) as session:
        yield session


class Sink(io.RawIOBase):
    """A stream written once, that cannot seek (a pipe): a download into it cannot start
    again."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)


class OneWay(io.RawIOBase):
    """A stream that cannot seek (a pipe, a socket): its size is not known in advance."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5 * MiB + 3])
def test_bytes_go_up_and_come_back_equal(
    server: ReferenceServer, ws: jws.WsSession, tmp_path: Path, size: int
) -> None:
    data = payload(size)
    blob = ws.upload(data, type="application/x-test", via="http")
    assert (blob.size, blob.type, blob.account_id) == (size, "application/x-test", "a-alice")
    assert server.blob("alice", blob.blob_id) == data
    out = tmp_path / "out.bin"
    assert ws.download(blob.blob_id, to=out) == size
    assert sha(out.read_bytes()) == sha(data)
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]  # no temporary file left


def test_a_path_a_file_and_a_stream_that_cannot_seek_upload_alike(
    server: ReferenceServer, ws: jws.WsSession, tmp_path: Path
) -> None:
    data = payload(300_000, seed=2)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    with path.open("rb") as file:
        from_file = ws.upload(file, via="http")
    from_path = ws.upload(path, via="http")
    from_pipe = ws.upload(OneWay(data), via="http")  # sent chunked
    assert from_file.blob_id == from_path.blob_id == from_pipe.blob_id
    assert server.blob("alice", from_pipe.blob_id) == data


def test_progress_is_reported_up_to_the_size(ws: jws.WsSession, tmp_path: Path) -> None:
    data = payload(1 * MiB)
    sent: list[tuple[int, int | None]] = []
    blob = ws.upload(data, progress=lambda done, total: sent.append((done, total)))
    got: list[tuple[int, int | None]] = []
    ws.download(blob.blob_id, to=tmp_path / "x", progress=lambda d, t: got.append((d, t)))
    for seen in (sent, got):
        assert seen[-1] == (len(data), len(data))
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_open_blob_reads_on_the_fly(ws: jws.WsSession) -> None:
    data = payload(700_000, seed=3)
    blob = ws.upload(data)
    with ws.open_blob(blob.blob_id) as stream:
        first = stream.read(10)
        rest = stream.read()
    assert first + rest == data


def test_a_reconnecting_session_transfers_too(server: ReferenceServer, tmp_path: Path) -> None:
    data = payload(200_000, seed=4)
    with jws.ReconnectingSession(server.base_url, auth=ALICE) as rs:
        blob = rs.upload(data)
        assert rs.download(blob.blob_id, to=tmp_path / "x") == len(data)
    assert (tmp_path / "x").read_bytes() == data


def test_relative_urls_like_cyrus_are_resolved() -> None:
    with (
        ReferenceServer(users=USERS, relative_urls=True) as cyrus_like,
        jws.connect(cyrus_like.base_url, auth=ALICE, timeout=WAIT) as session,
    ):
        blob = session.upload(b"relative", via="http")
        target = io.BytesIO()
        session.download(blob.blob_id, to=target)
    assert target.getvalue() == b"relative"


# -- limits -------------------------------------------------------------------------------------


def test_a_known_size_over_max_size_upload_is_refused_before_a_byte_is_sent(
    tmp_path: Path,
) -> None:
    with (
        ReferenceServer(users=USERS, max_size_upload=1000) as small,
        jws.connect(small.base_url, auth=ALICE, timeout=WAIT) as session,
    ):
        before = small.blob_stats().uploads
        with pytest.raises(jws.BlobTooLarge, match="maxSizeUpload"):
            session.upload(b"x" * 1001, via="http")
        assert small.blob_stats().uploads == before
        with pytest.raises(jws.BlobTooLarge):  # unknown size: the server's 413
            session.upload(OneWay(b"x" * 5000), via="http")


def test_at_most_max_concurrent_upload_run_at_once_and_the_rest_wait() -> None:
    with ReferenceServer(users=USERS, max_concurrent_upload=2) as limited:
        limited.throttle_uploads(2 * MiB)
        with jws.connect(limited.base_url, auth=ALICE, timeout=WAIT) as session:
            blobs: list[jws.Blob] = []
            errors: list[BaseException] = []

            def up(n: int) -> None:
                try:
                    blobs.append(session.upload(payload(256 * 1024, seed=n), via="http"))
                except BaseException as exc:  # handed to the test thread
                    errors.append(exc)

            threads = [threading.Thread(target=up, args=(n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
        assert not errors
        assert len(blobs) == 6
        assert limited.blob_stats().max_concurrent_uploads <= 2


# -- faults: the connection cut mid-body, no ranges, busy, slow ---------------------------------


def test_a_download_cut_mid_body_goes_on_with_range(
    server: ReferenceServer, ws: jws.WsSession, tmp_path: Path
) -> None:
    data = payload(3 * MiB, seed=5)
    blob = ws.upload(data)
    server.drop_downloads(after_bytes=700_000, times=2)
    out = tmp_path / "resumed.bin"
    assert ws.download(blob.blob_id, to=out) == len(data)
    assert sha(out.read_bytes()) == sha(data)
    assert (server.blob_stats().last_range or "").startswith("bytes=")


def test_a_server_that_ignores_ranges_is_read_again_from_the_start(
    server: ReferenceServer, ws: jws.WsSession, tmp_path: Path
) -> None:
    data = payload(2 * MiB, seed=6)
    blob = ws.upload(data)
    server.ranges(False)
    server.drop_downloads(after_bytes=500_000, times=1)
    out = tmp_path / "again.bin"
    assert ws.download(blob.blob_id, to=out) == len(data)
    assert out.read_bytes() == data
    server.drop_downloads(after_bytes=500_000, times=1)
    with pytest.raises(jws.BlobError, match="ignores ranges"):
        ws.download(blob.blob_id, to=Sink())  # type: ignore[arg-type]


def test_a_download_that_keeps_breaking_fails_and_leaves_no_file(
    server: ReferenceServer, ws: jws.WsSession, tmp_path: Path
) -> None:
    blob = ws.upload(payload(1 * MiB))
    server.drop_downloads(after_bytes=1000, times=50)
    out = tmp_path / "never.bin"
    with pytest.raises(jws.BlobError, match="connection was lost"):
        ws.download(blob.blob_id, to=out)
    assert os.listdir(tmp_path) == []  # neither the final name nor a temporary file


def test_open_blob_resumes_too(server: ReferenceServer, ws: jws.WsSession) -> None:
    data = payload(1 * MiB, seed=7)
    blob = ws.upload(data)
    server.drop_downloads(after_bytes=300_000, times=1)
    with ws.open_blob(blob.blob_id) as stream:
        assert stream.read() == data


def test_503_with_retry_after_is_waited_out(server: ReferenceServer, ws: jws.WsSession) -> None:
    blob = ws.upload(b"patience")
    server.busy(count=1, status=503, retry_after="1")
    start = time.monotonic()
    target = io.BytesIO()
    ws.download(blob.blob_id, to=target)
    assert target.getvalue() == b"patience"
    assert time.monotonic() - start >= 0.9  # not sooner than the server asked


def test_a_slow_server_is_not_a_timeout_while_bytes_move(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    data = payload(400_000, seed=8)
    blob = ws.upload(data)
    server.throttle_downloads(400_000)
    target = io.BytesIO()
    ws.download(blob.blob_id, to=target, timeout=WAIT)
    assert target.getvalue() == data


# -- errors ---------------------------------------------------------------------------------------


def test_an_unknown_blob_is_blob_not_found_with_the_problem_details(ws: jws.WsSession) -> None:
    with pytest.raises(jws.BlobNotFound) as info:
        ws.download("Gnothere", to=io.BytesIO())
    assert info.value.status == 404
    assert info.value.problem is not None


def test_refused_credentials_are_an_authentication_error(server: ReferenceServer) -> None:
    with jws.connect(server.base_url, auth=ALICE, timeout=WAIT) as session:
        server.set_password("alice", "changed")
        with pytest.raises(jws.AuthenticationError):
            session.upload(b"x", via="http")


def test_a_session_without_a_resource_says_how_to_get_one(server: ReferenceServer) -> None:
    with (
        jws.WsSession.open(server.ws_url, auth=ALICE, timeout=WAIT) as session,
        pytest.raises(jws.BlobError, match="Session resource"),
    ):
        session.upload(b"x")


@pytest.mark.parametrize("bad", ["", None, 7])
def test_a_bad_blob_id_is_a_value_error(ws: jws.WsSession, bad: Any) -> None:
    with pytest.raises(ValueError, match="blob_id"):
        ws.download(bad, to=io.BytesIO())


# -- URLs and credentials --------------------------------------------------------------------------


def test_the_download_template_is_expanded_as_rfc_6570_level_1() -> None:
    template = "/d/{accountId}/{blobId}/{name}?accept={type}&x={missing}"
    values = {"accountId": "a/1", "blobId": "G1", "name": "my file ü.txt", "type": "text/plain"}
    assert expand(template, values) == ("/d/a%2F1/G1/my%20file%20%C3%BC.txt?accept=text%2Fplain&x=")
    with pytest.raises(ValueError, match="template"):
        expand("/d/{blobId", values)


def _blob_routes(seen: list[Seen], body: bytes) -> dict[str, Any]:
    def download(request: Seen) -> Reply:
        seen.append(request)
        return Reply(200, {"Content-Type": "application/octet-stream"}, body)

    return {"/d/a/G1/G1": download}


def test_credentials_go_to_urls_the_named_origins_resource_names() -> None:
    """The user's origin served the resource: its download URL elsewhere gets them."""
    seen: list[Seen] = []
    with HttpServer(_blob_routes(seen, b"elsewhere")) as other, HttpServer({}) as named:
        body = session_body(downloadUrl=other.url("/d/{accountId}/{blobId}/{name}"))
        resource = _parse(body, named.url("/.well-known/jmap"))
        session = _offline_session(resource, trusted=named.origin, vouched=True)
        target = io.BytesIO()
        session.download("G1", to=target, account_id="a")
    assert target.getvalue() == b"elsewhere"
    assert seen[0].headers.get("authorization", "").startswith("Basic ")


def test_no_credentials_to_urls_a_foreign_resource_names() -> None:
    seen: list[Seen] = []
    with HttpServer(_blob_routes(seen, b"foreign")) as other:
        body = session_body(downloadUrl=other.url("/d/{accountId}/{blobId}/{name}"))
        parsed = _parse(body, other.url("/jmap/session"))
        session = _offline_session(parsed, trusted="http://127.0.0.1:9", vouched=False)
        session.download("G1", to=io.BytesIO(), account_id="a")
    assert "authorization" not in seen[0].headers


def test_a_redirect_to_another_origin_is_not_followed() -> None:
    seen: list[Seen] = []
    with HttpServer(_blob_routes(seen, b"x")) as other, HttpServer({}) as named:
        named.routes["/d/a/G1/G1"] = Reply(302, {"Location": other.url("/d/a/G1/G1")})
        body = session_body(downloadUrl=named.url("/d/{accountId}/{blobId}/{name}"))
        session = _offline_session(_parse(body, named.url("/s")), trusted=named.origin)
        with pytest.raises(jws.BlobError, match="another origin"):
            session.download("G1", to=io.BytesIO(), account_id="a")
    assert seen == []  # nothing reached the other origin


def test_a_redirect_within_the_origin_is_followed() -> None:
    seen: list[Seen] = []
    with HttpServer(_blob_routes(seen, b"moved")) as named:
        named.routes["/old/a/G1/G1"] = Reply(307, {"Location": "/d/a/G1/G1"})
        body = session_body(downloadUrl=named.url("/old/{accountId}/{blobId}/{name}"))
        session = _offline_session(_parse(body, named.url("/s")), trusted=named.origin)
        target = io.BytesIO()
        session.download("G1", to=target, account_id="a")
    assert target.getvalue() == b"moved"
    assert seen[0].headers.get("authorization", "").startswith("Basic ")


def _parse(body: dict[str, Any], url: str) -> jws.SessionResource:
    return parse_session_json(json.dumps(body).encode(), url)


def _offline_session(resource: jws.SessionResource, *, trusted: str, vouched: bool = False) -> Any:
    """The blob side of a session, without a WebSocket: what WsSession uses."""
    return Blobs(
        HttpSettings(auth=ALICE, trusted=trusted, vouched=vouched),
        lambda: resource,
        backoff=Backoff(first=(0.01, 0.02), ceiling=0.1),
    )


# -- RFC 9404 over the socket ----------------------------------------------------------------------


def test_small_uploads_go_over_the_socket_where_the_server_has_rfc_9404(
    server: ReferenceServer, ws: jws.WsSession
) -> None:
    before = server.blob_stats().uploads
    small = ws.upload(b"tiny attachment", type="text/plain")  # via="auto"
    assert server.blob_stats().uploads == before  # no HTTP upload
    assert server.blob("alice", small.blob_id) == b"tiny attachment"
    big = ws.upload(payload(200_000), via="auto")
    assert server.blob_stats().uploads == before + 1
    assert ws.read_blob(big.blob_id, offset=1000, length=16) == payload(200_000)[1000:1016]
    assert ws.read_blob(small.blob_id) == b"tiny attachment"


def test_without_rfc_9404_auto_uses_http_and_jmap_is_refused() -> None:
    with (
        ReferenceServer(users=USERS, blob_capability=False) as plain,
        jws.connect(plain.base_url, auth=ALICE, timeout=WAIT) as session,
    ):
        blob = session.upload(b"over http")
        assert plain.blob_stats().uploads == 1
        assert plain.blob("alice", blob.blob_id) == b"over http"
        with pytest.raises(jws.BlobError, match="9404"):
            session.upload(b"x", via="jmap")
        with pytest.raises(jws.BlobError, match="9404"):
            session.read_blob(blob.blob_id)


def test_a_blob_set_over_the_servers_limit_is_too_large() -> None:
    with (
        ReferenceServer(users=USERS, max_size_blob_set=100) as small,
        jws.connect(small.base_url, auth=ALICE, timeout=WAIT) as session,
        pytest.raises(jws.BlobTooLarge),
    ):
        session.upload(b"x" * 101, via="jmap")


# -- memory: flat whatever the size ----------------------------------------------------------


def test_a_large_upload_and_download_stream_in_bounded_memory(tmp_path: Path) -> None:
    size = 48 * MiB
    source = tmp_path / "big.bin"
    with source.open("wb") as file:
        for n in range(size // MiB):
            file.write(payload(MiB, seed=n))
    with ServerProcess(users=USERS, max_size_upload=1 << 30) as child:
        base = child.facts["base_url"]
        with jws.connect(base, auth=ALICE, timeout=WAIT) as session:
            tracemalloc.start()
            try:
                blob = session.upload(source, timeout=WAIT)
                written = session.download(blob.blob_id, to=tmp_path / "back.bin", timeout=WAIT)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert written == blob.size == size
    assert peak < 4 * MiB  # pieces of 64 KiB, never the whole 48 MiB
    with source.open("rb") as a, (tmp_path / "back.bin").open("rb") as b:
        assert hashlib.file_digest(a, "sha256").digest() == (
            hashlib.file_digest(b, "sha256").digest()
        )


def test_a_closed_blob_stream_cannot_be_read(ws: jws.WsSession) -> None:
    """io's convention: ValueError; before the fix a closed reader read on, and one closed
    before reading sent a new GET that nothing closed (found on Cyrus)."""
    blob = ws.upload(bytes(range(256)) * 100)
    stream = ws.open_blob(blob.blob_id)
    assert stream.read(4) == bytes(range(4))
    stream.close()
    with pytest.raises(ValueError, match="closed"):
        stream.read(4)
    unread = ws.open_blob(blob.blob_id)
    unread.close()
    with pytest.raises(ValueError, match="closed"):
        unread.read(4)
