"""Attachments: blob upload and download (RFC 8620 §6) beside the WebSocket, RFC 9404 on it.

RFC 8887 leaves binary data to HTTP: the Session resource's ``uploadUrl`` takes a POST of
the bytes, its ``downloadUrl`` template (RFC 6570 level 1) names a GET. :class:`Blobs`
does both for a session, with its TLS settings, proxy and credentials (which go only to
the origin the user named, or where the Session resource that origin served says:
:class:`~jmapws_sync._http.HttpSettings`), streaming in 64 KiB pieces so memory stays
flat whatever the size:

* an upload from a path or a file is read as it is sent; a size known in advance that is
  over ``maxSizeUpload`` is refused before a byte goes out, and at most
  ``maxConcurrentUpload`` uploads run at once per session (the others wait their turn);
* a download to a path is written under a temporary name beside it and renamed at the
  end, so a half file never bears the final name; one cut mid-body goes on with
  ``Range`` from what it has (with the reconnect backoff, a bounded number of tries),
  starts again if the server ignores ranges, and its length is checked;
* redirects are followed within the origin only; 429 and 503 are waited out as
  ``Retry-After`` says, within the backoff's ceiling; other errors are
  :class:`~jmapws_sync.BlobError` (:class:`~jmapws_sync.BlobNotFound`,
  :class:`~jmapws_sync.BlobTooLarge`) with the server's RFC 7807 problem details, or
  :class:`~jmapws_sync.AuthenticationError`.

Where the Session resource advertises RFC 9404 (``urn:ietf:params:jmap:blob``), small
uploads go over the WebSocket as ``Blob/upload`` (``via="auto"``), which saves the HTTP
connection; :meth:`Blobs.read` reads a range with ``Blob/get``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

import attrs

from ._http import HttpSettings, connect, expand, redirect_target, status_error
from ._net import resolve_proxy, safe_url, same_origin
from .errors import (
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    MethodError,
    RequestFailed,
    TransportError,
    translate,
)
from .frames import CORE, Request, RequestBuilder, Response
from .policy import Backoff
from .resource import SessionResource

__all__ = [
    "BLOB_CAPABILITY",
    "JMAP_UPLOAD_LIMIT",
    "Blob",
    "BlobReader",
    "Blobs",
    "Progress",
]

log = logging.getLogger(__name__)

#: RFC 9404's capability (jmaple, Cyrus 3.12+, Stalwart).
BLOB_CAPABILITY: Final = "urn:ietf:params:jmap:blob"
#: ``via="auto"`` sends an upload of at most this many bytes as ``Blob/upload`` when the
#: server has RFC 9404. Measured (BENCHMARKS.md, "Small blobs"): on a session with the
#: default compression Blob/upload beats an HTTP upload only up to about 4.8 KiB (base64
#: in deflated JSON frames costs more than an HTTP exchange beyond it; without
#: compression the crossover is about 80 KiB), so 4 KiB, where it never lost.
JMAP_UPLOAD_LIMIT: Final = 4 * 1024
#: Bytes read or written at a time.
CHUNK: Final = 64 * 1024
#: Tries of one download (the first included) when the connection drops mid-body, and
#: of an upload that the server answered 429 or 503.
MAX_TRIES: Final = 5
_MAX_REDIRECTS: Final = 5
_RETRY_STATUSES: Final = frozenset({429, 503})

#: ``progress(done, total)``: bytes moved so far, and the total when it is known.
Progress = Callable[[int, int | None], object]
Source = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO


@attrs.frozen
class Blob:
    """An uploaded blob: what the server answered (RFC 8620 §6.1)."""

    blob_id: str
    size: int
    type: str
    account_id: str


class Blobs:
    """The blob transfers of one session; every method is safe from any thread.

    ``settings`` are the session's HTTP settings, ``resource`` gives its Session resource
    (None: none known, and no URL to go to), ``call`` makes a JMAP call over the session
    (for RFC 9404), ``backoff`` spaces the retries.
    """

    def __init__(
        self,
        settings: HttpSettings,
        resource: Callable[[], SessionResource | None],
        call: Callable[[Request, float | None], Response] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._settings = settings
        self._resource = resource
        self._call = call
        self._backoff = backoff or Backoff(first=(0.2, 1.0), ceiling=10.0)
        self._rng = random.Random()  # noqa: S311 - jitter, not secrets
        self._lock = threading.Lock()
        self._uploads: threading.BoundedSemaphore | None = None

    @property
    def settings(self) -> HttpSettings:
        """The HTTP settings transfers use."""
        return self._settings

    # ------------------------------------------------------------------ upload

    def upload(
        self,
        data: Source,
        *,
        type: str = "application/octet-stream",  # noqa: A002 - RFC 8620's name
        account_id: str | None = None,
        timeout: float | None = 60.0,
        progress: Progress | None = None,
        via: str = "auto",
    ) -> Blob:
        """Upload ``data`` (bytes, a path, or a binary file object read from where it is)
        and return the :class:`Blob` the server made of it.

        ``via``: ``"http"`` (RFC 8620 §6.1), ``"jmap"`` (RFC 9404 ``Blob/upload`` over the
        session, for servers that advertise it) or ``"auto"``: ``"jmap"`` for at most
        :data:`JMAP_UPLOAD_LIMIT` bytes where the server has it, else ``"http"``.
        ``timeout`` bounds each socket operation; ``progress(sent, total)`` is called as
        the bytes go out. Raises :class:`~jmapws_sync.BlobTooLarge` before sending when
        the size is known and over ``maxSizeUpload``.
        """
        if via not in ("auto", "http", "jmap"):
            raise ValueError('via is "auto", "http" or "jmap"')
        resource = self._need_resource()
        account = account_id or resource.primary_account()
        with _opened(data) as (stream, size):
            limit = resource.core.max_size_upload
            if size is not None and size > limit:
                raise BlobTooLarge(
                    f"{size} bytes is over the server's maxSizeUpload ({limit}): not sent"
                )
            jmap = via == "jmap" or (
                via == "auto"
                and self._call is not None
                and self._has_blob_capability(resource, account)
                and size is not None
                and size <= JMAP_UPLOAD_LIMIT
            )
            if jmap:
                return self._upload_jmap(
                    stream,
                    type=type,
                    account=account,
                    timeout=timeout,
                    progress=progress,
                    size=size,
                )
            with self._upload_slot(resource, timeout):
                return self._upload_http(
                    resource,
                    stream,
                    size,
                    type=type,
                    account=account,
                    timeout=timeout,
                    progress=progress,
                )

    def _upload_slot(
        self, resource: SessionResource, timeout: float | None
    ) -> contextlib.AbstractContextManager[None]:
        """At most ``maxConcurrentUpload`` uploads at once; the others wait for a turn."""
        with self._lock:
            if self._uploads is None:
                self._uploads = threading.BoundedSemaphore(
                    max(1, resource.core.max_concurrent_upload)
                )
            slots = self._uploads

        @contextlib.contextmanager
        def slot() -> Iterator[None]:
            if not slots.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError(f"no upload slot free within {timeout} s")
            try:
                yield
            finally:
                slots.release()

        return slot()

    def _upload_http(
        self,
        resource: SessionResource,
        stream: BinaryIO,
        size: int | None,
        *,
        type: str,  # noqa: A002
        account: str,
        timeout: float | None,
        progress: Progress | None,
    ) -> Blob:
        url = expand(resource.upload_url, {"accountId": account})
        start = stream.tell() if _seekable(stream) else None
        for attempt in range(1, MAX_TRIES + 1):
            if attempt > 1 and start is not None:
                stream.seek(start)
            response, conn = self._send(
                "POST",
                url,
                timeout=timeout,
                headers={"Content-Type": type},
                body=(stream, size, progress),
            )
            try:
                retry = response.status in _RETRY_STATUSES and start is not None
                if retry and attempt < MAX_TRIES:
                    self._wait(status_error(response, url, action="uploading"), attempt)
                    continue
                if not 200 <= response.status < 300:
                    raise status_error(response, url, action="uploading")
                try:
                    answer = json.loads(response.read(1 << 20))
                except (ValueError, OSError, http.client.HTTPException) as exc:
                    raise BlobError(f"the upload to {safe_url(url)} answered no JSON") from exc
            finally:
                conn.close()
            return _blob(answer, account, type)
        raise AssertionError("unreachable")

    def _upload_jmap(
        self,
        stream: BinaryIO,
        *,
        type: str,  # noqa: A002
        account: str,
        timeout: float | None,
        progress: Progress | None,
        size: int | None,
    ) -> Blob:
        if self._call is None:
            raise BlobError("this session cannot make calls: upload with via='http'")
        resource = self._need_resource()
        if not self._has_blob_capability(resource, account):
            raise BlobError(f"the server does not advertise {BLOB_CAPABILITY} (RFC 9404)")
        data = stream.read()
        encoded = base64.b64encode(data).decode("ascii")
        builder = RequestBuilder([CORE, BLOB_CAPABILITY])
        handle = builder.call(
            "Blob/upload",
            {
                "accountId": account,
                "create": {"b": {"data": [{"data:asBase64": encoded}], "type": type}},
            },
        )
        response = self._call(builder.build(), timeout)
        answer = response.get(handle.call_id)
        created = (answer.get("created") or {}).get("b")
        if not isinstance(created, dict):
            problem = (answer.get("notCreated") or {}).get("b") or {}
            kind = problem.get("type") if isinstance(problem, dict) else None
            error = BlobTooLarge if kind == "tooLarge" else BlobError
            raise error(f"Blob/upload refused the blob: {kind or 'no reason given'}")
        if progress is not None:
            progress(len(data), size)
        return Blob(
            blob_id=str(created.get("id")),
            size=int(created.get("size", len(data))),
            type=str(created.get("type") or type),
            account_id=account,
        )

    # ------------------------------------------------------------------ download

    def download(
        self,
        blob_id: str,
        *,
        to: str | os.PathLike[str] | BinaryIO,
        name: str | None = None,
        type: str | None = None,  # noqa: A002
        account_id: str | None = None,
        timeout: float | None = 60.0,
        progress: Progress | None = None,
    ) -> int:
        """Download blob ``blob_id`` into ``to`` (a path, or a binary file object written
        from where it is); return the number of bytes written.

        To a path, the bytes go to a temporary file beside it, renamed over ``to`` only
        once complete. A connection cut mid-body goes on with ``Range`` (bounded tries,
        with backoff); the length is checked against what the server announced.
        ``name`` and ``type`` fill the download URL template (default: the blob id,
        ``application/octet-stream``). ``timeout`` bounds each socket operation.
        """
        transfer = self._transfer(blob_id, name, type, account_id, timeout)
        if isinstance(to, str | os.PathLike):
            target = Path(to)
            fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    written = transfer.copy(file, progress)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
            return written
        return transfer.copy(to, progress)

    def open(
        self,
        blob_id: str,
        *,
        name: str | None = None,
        type: str | None = None,  # noqa: A002
        account_id: str | None = None,
        timeout: float | None = 60.0,
    ) -> BlobReader:
        """A readable binary stream of the blob (a context manager), resumed with
        ``Range`` when the connection drops, as :meth:`download` does."""
        return BlobReader(self._transfer(blob_id, name, type, account_id, timeout))

    def read(
        self,
        blob_id: str,
        *,
        offset: int = 0,
        length: int | None = None,
        account_id: str | None = None,
        timeout: float | None = 60.0,
    ) -> bytes:
        """Bytes of a blob, ``length`` of them from ``offset``, by RFC 9404 ``Blob/get``
        over the session (the server must advertise ``urn:ietf:params:jmap:blob``)."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if self._call is None:
            raise BlobError("this session cannot make calls")
        resource = self._need_resource()
        account = account_id or resource.primary_account()
        if not self._has_blob_capability(resource, account):
            raise BlobError(f"the server does not advertise {BLOB_CAPABILITY} (RFC 9404)")
        args: dict[str, Any] = {
            "accountId": account,
            "ids": [blob_id],
            "properties": ["data:asBase64", "size"],
            "offset": offset,
        }
        if length is not None:
            args["length"] = length
        builder = RequestBuilder([CORE, BLOB_CAPABILITY])
        handle = builder.call("Blob/get", args)
        try:
            answer = self._call(builder.build(), timeout).get(handle.call_id)
        except (MethodError, RequestFailed) as exc:
            raise BlobError(f"Blob/get failed: {exc}") from exc
        found = [b for b in answer.get("list") or [] if isinstance(b, dict)]
        if not found:
            raise BlobNotFound(f"no blob {blob_id!r} in account {account!r}")
        encoded = found[0].get("data:asBase64")
        if not isinstance(encoded, str):
            raise BlobError("Blob/get answered without data:asBase64")
        return base64.b64decode(encoded)

    # ------------------------------------------------------------------ plumbing

    def _transfer(
        self,
        blob_id: str,
        name: str | None,
        type: str | None,  # noqa: A002
        account_id: str | None,
        timeout: float | None,
    ) -> _Transfer:
        if not isinstance(blob_id, str) or not blob_id:
            raise ValueError("blob_id must be a non-empty string")
        resource = self._need_resource()
        account = account_id or resource.primary_account()
        url = expand(
            resource.download_url,
            {
                "accountId": account,
                "blobId": blob_id,
                "name": name or blob_id,
                "type": type or "application/octet-stream",
            },
        )
        return _Transfer(self, url, blob_id, timeout)

    def _need_resource(self) -> SessionResource:
        resource = self._resource()
        if resource is None:
            raise BlobError(
                "no Session resource is known, so no upload or download URL: open the"
                " session with connect() (by discovery), or give WsSession.open() session="
            )
        return resource

    @staticmethod
    def _has_blob_capability(resource: SessionResource, account: str) -> bool:
        if BLOB_CAPABILITY in resource.capabilities:
            return True
        known = resource.accounts.get(account)
        return known is not None and BLOB_CAPABILITY in known.account_capabilities

    def _send(
        self,
        method: str,
        url: str,
        *,
        timeout: float | None,
        headers: dict[str, str],
        body: tuple[BinaryIO, int | None, Progress | None] | None = None,
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """One request, following redirects within the origin; the response and its
        connection (the caller closes it)."""
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            conn, target, extra = connect(
                current,
                proxy=resolve_proxy(current, self._settings.proxy),
                context=self._settings.ssl_context,
                timeout=timeout,
            )
            send = {
                "User-Agent": "jmapws-sync",
                **headers,
                **extra,
                **self._settings.credentials_for(current),
            }
            try:
                if body is None:
                    conn.request(method, target, headers=send)
                else:
                    stream, size, progress = body
                    chunked = size is None
                    if not chunked:
                        send["Content-Length"] = str(size)
                    conn.request(
                        method,
                        target,
                        body=_chunks(stream, size, progress),
                        headers=send,
                        encode_chunked=chunked,
                    )
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise _transport_error(exc, current, method) from exc
            except BaseException:
                conn.close()
                raise
            if response.status not in (301, 302, 303, 307, 308):
                return response, conn
            location = redirect_target(current, response.getheader("Location"))
            conn.close()
            if location is None or not same_origin(location, current):
                raise BlobError(
                    f"{safe_url(current)} redirected (HTTP {response.status}) to"
                    f" {'another origin' if location else 'an invalid URL'}: not followed",
                    status=response.status,
                )
            if body is not None and response.status in (301, 302, 303):
                raise BlobError(f"{safe_url(current)} redirected an upload with a GET")
            if body is not None:
                stream = body[0]
                if not _seekable(stream):
                    raise BlobError("the upload was redirected and its stream cannot rewind")
                stream.seek(0)
            current = location
        raise BlobError(f"more than {_MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _wait(self, error: Exception, attempt: int) -> None:
        """Before try ``attempt + 1``: the backoff's delay, or what Retry-After asked."""
        delay = 0.0
        base: float | None = None
        for _ in range(attempt):
            delay, base = self._backoff.step(base, self._rng)
        asked = getattr(error, "retry_after", None)
        if asked is not None:
            delay = max(delay, min(asked, self._backoff.ceiling))
        log.info("%s; trying again in %.1f s", error, delay)
        time.sleep(delay)


class _Transfer:
    """One download: its URL, what was received so far, and the resumes."""

    def __init__(self, blobs: Blobs, url: str, blob_id: str, timeout: float | None) -> None:
        self._blobs = blobs
        self.url = url
        self.blob_id = blob_id
        self.timeout = timeout
        self.done = 0
        self.total: int | None = None
        self._etag: str | None = None

    def copy(self, file: IO[bytes], progress: Progress | None) -> int:
        """Write every byte into ``file``; start again from zero (rewinding ``file``) if a
        resume got the whole body again."""
        origin = file.tell() if _seekable(file) else None
        for chunk in self.chunks():
            if chunk is _RESTART:
                if origin is None:
                    raise BlobError(
                        "the server ignores ranges and the file cannot rewind: download"
                        " to a path to be able to start again"
                    )
                file.seek(origin)
                file.truncate()
                continue
            file.write(chunk)
            if progress is not None:
                progress(self.done, self.total)
        return self.done

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces, across resumes; ``_RESTART`` when it starts again from 0."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response, conn = self._open()
            except (TransportError, TimeoutError) as exc:
                if attempt >= MAX_TRIES or not self.done:
                    raise  # nothing received yet: the server is not there, not cut off
                self._blobs._wait(BlobError(f"resuming the download failed ({exc})"), attempt)
                continue
            try:
                if response.status in _RETRY_STATUSES and attempt < MAX_TRIES:
                    self._blobs._wait(
                        status_error(response, self.url, action="downloading"), attempt
                    )
                    continue
                if response.status == 416 and self.total is not None and self.done == self.total:
                    return
                if response.status not in (200, 206):
                    raise status_error(
                        response, self.url, action="downloading", blob_id=self.blob_id
                    )
                if response.status == 200 and self.done:
                    log.info("%s ignored the Range: starting again", safe_url(self.url))
                    self.done = 0
                    yield _RESTART
                self._learn(response)
                try:
                    while True:
                        piece = response.read(CHUNK)
                        if not piece:
                            break
                        self.done += len(piece)
                        yield piece
                except (OSError, http.client.HTTPException) as exc:
                    if attempt >= MAX_TRIES:
                        raise BlobError(
                            f"downloading {self.blob_id!r}: the connection was lost at"
                            f" {self.done} of {self.total} bytes, {attempt} times"
                        ) from exc
                    self._blobs._wait(
                        BlobError(f"the download broke at {self.done} bytes ({exc})"), attempt
                    )
                    continue
            finally:
                conn.close()
            if self.total is not None and self.done != self.total:
                if attempt >= MAX_TRIES:
                    raise BlobError(
                        f"downloading {self.blob_id!r}: {self.done} bytes of {self.total}"
                    )
                continue  # a clean end of stream before the end: resume
            return

    def _open(self) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        headers = {"Accept": "*/*"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
            if self._etag:
                headers["If-Range"] = self._etag
        return self._blobs._send("GET", self.url, timeout=self.timeout, headers=headers)

    def _learn(self, response: http.client.HTTPResponse) -> None:
        """The total length and validator, from a 200 or a 206 that starts where we are."""
        etag = response.getheader("ETag")
        if etag and not etag.startswith("W/"):
            self._etag = etag
        if response.status == 206:
            start, total = _content_range(response.getheader("Content-Range"))
            if start != self.done:
                raise BlobError(f"{safe_url(self.url)} resumed at byte {start}, not {self.done}")
            if total is not None:
                self.total = total
            return
        length = response.getheader("Content-Length")
        self.total = int(length) if length and length.isdigit() else None


#: A sentinel piece, told apart by identity: the body starts again from byte 0.
_RESTART: Final = bytes(bytearray(b"restart"))


class BlobReader(io.RawIOBase):
    """A blob as a readable binary stream (``with ws.open_blob(id) as f: f.read(n)``).

    Resumes with ``Range`` when the connection drops, as a download does; a server that
    ignores ranges after bytes were read is an error, since they cannot be taken back.
    """

    def __init__(self, transfer: _Transfer) -> None:
        super().__init__()
        self._transfer = transfer
        self._chunks: Iterator[bytes] | None = None
        self._buffer = memoryview(b"")

    @property
    def total(self) -> int | None:
        """The blob's size, once the server said it."""
        return self._transfer.total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read of a closed blob stream")
        view = memoryview(buffer).cast("B")
        while not self._buffer:
            if self._chunks is None:
                self._chunks = self._transfer.chunks()
            piece = next(self._chunks, None)
            if piece is None:
                return 0
            if piece is _RESTART:
                raise BlobError("the server ignored the Range of a resume: cannot go on")
            self._buffer = memoryview(piece)
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        if self._chunks is not None and hasattr(self._chunks, "close"):
            self._chunks.close()
        super().close()


# ---------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _opened(data: Source) -> Iterator[tuple[BinaryIO, int | None]]:
    """``data`` as a binary stream, and its size when it can be known before sending."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data) if not isinstance(data, bytes) else data
        yield io.BytesIO(raw), len(raw)
        return
    if isinstance(data, str | os.PathLike):
        with open(data, "rb") as file:
            yield file, os.fstat(file.fileno()).st_size
        return
    if not hasattr(data, "read"):
        raise TypeError("data is bytes, a path, or a binary file object")
    size: int | None = None
    if _seekable(data):
        here = data.tell()
        size = data.seek(0, os.SEEK_END) - here
        data.seek(here)
    yield data, size


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _chunks(stream: BinaryIO, size: int | None, progress: Progress | None) -> Iterator[bytes]:
    """The body of an upload, read as it is sent (``size`` bytes when known)."""
    sent = 0
    while size is None or sent < size:
        want = CHUNK if size is None else min(CHUNK, size - sent)
        piece = stream.read(want)
        if not piece:
            break
        sent += len(piece)
        if progress is not None:
            progress(sent, size)
        yield piece
    if size is not None and sent != size:
        raise BlobError(f"the upload's stream ended at {sent} of {size} bytes")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` of ``bytes start-end/total`` (total None for ``*``)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.partition("-")[0].strip()
    return (
        int(start) if start.isdigit() else None,
        int(total) if total.strip().isdigit() else None,
    )


def _blob(answer: Any, account: str, type: str) -> Blob:  # noqa: A002
    if not isinstance(answer, dict) or not isinstance(answer.get("blobId"), str):
        raise BlobError("the upload's answer has no blobId")
    size = answer.get("size")
    return Blob(
        blob_id=answer["blobId"],
        size=size if isinstance(size, int) else -1,
        type=str(answer.get("type") or type),
        account_id=str(answer.get("accountId") or account),
    )


def _transport_error(exc: BaseException, url: str, method: str) -> Exception:
    if isinstance(exc, TimeoutError):
        return TimeoutError(f"{method} {safe_url(url)} timed out")
    action = "uploading to" if method == "POST" else "downloading from"
    return translate(exc, safe_url(url), action=action)
