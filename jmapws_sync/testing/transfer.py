"""The reference server's upload and download endpoints (RFC 8620 §6.1, §6.2).

* ``POST /jmap/upload/{accountId}/`` streams the body into the
  :class:`~jmapws_sync.testing.blobs.BlobStore` (one buffer, hashed as it arrives) and
  answers 201 with ``{"accountId", "blobId", "type", "size"}``;
* ``GET`` (and ``HEAD``) ``/jmap/download/{accountId}/{blobId}/{name}?type=...`` (or
  ``accept=``, as Cyrus names it) streams a blob in 64 KiB chunks, with one ``Range``
  (RFC 9110 §14) answered 206, ``If-Range`` against the ``ETag`` (the blob id, quoted).

Both authenticate like the API (401 with a challenge), and every refusal is an RFC 7807
problem (``application/problem+json``): 404 for an account that is not the user's or an
unknown blob, 413 for a body over ``maxSizeUpload`` (seen in Content-Length before a byte
of the body is read, or as a chunked body grows past it), 429 for an upload beyond
``maxConcurrentUpload`` of one user, 416 for an unsatisfiable range, and the ``busy``
knob's status. The knobs (:class:`~jmapws_sync.testing.state.Knobs`) cut download bodies
short with a TCP reset, ignore ranges, and pace either direction; the loop never blocks.

Everything here runs in the server's loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from jmapws_sync.testing.blobs import DEFAULT_TYPE, Blob, BlobBuffer, BlobStore
from jmapws_sync.testing.hub import dumps
from jmapws_sync.testing.jmap import ERROR_PREFIX, Limits
from jmapws_sync.testing.state import Knobs, Observed
from jmapws_sync.testing.store import NoteStore, account_id_for

if sys.platform != "win32":
    import fcntl
    import termios

__all__ = [
    "CHUNK_SIZE",
    "DOWNLOAD_PATH",
    "LIMIT_PROBLEM",
    "PROBLEM_JSON",
    "UNSATISFIABLE",
    "UPLOAD_PATH",
    "Transfers",
    "parse_range",
    "problem",
]

logger = logging.getLogger(__name__)

UPLOAD_PATH = "/jmap/upload/{accountId}/"
DOWNLOAD_PATH = "/jmap/download/{accountId}/{blobId}/{name}"
PROBLEM_JSON = "application/problem+json"
#: The problem type of a refusal over a limit (RFC 8620 §3.6.1), with a ``limit`` member.
LIMIT_PROBLEM = ERROR_PREFIX + "limit"
#: The size of the pieces a body is read and written in.
CHUNK_SIZE = 64 * 1024
#: Set by the Expect handler: whose upload passed the checks already.
_UPLOAD_USER: Final = web.RequestKey("jmapws.upload_user", str)
#: How long a cut download waits for its octets to leave the kernel before the reset.
_CUT_WAIT = 5.0


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    type: str = "about:blank",  # noqa: A002 - RFC 7807's name
    **extra: Any,
) -> web.Response:
    """An RFC 7807 problem details response."""
    body = {"type": type, "title": title, "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status, content_type=PROBLEM_JSON, dumps=dumps)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


#: What :func:`parse_range` answers for a range that no octet of the blob satisfies.
UNSATISFIABLE: Final = "unsatisfiable"


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """The ``[start, end)`` one ``Range`` header selects of ``size`` octets (RFC 9110 §14).

    ``bytes=N-``, ``bytes=N-M`` and ``bytes=-K`` (the last K octets) are understood;
    :data:`UNSATISFIABLE` when none of the blob is selected; ``None`` (serve it whole)
    for anything else, several ranges included (RFC 9110 §14.2 lets a server ignore them).
    """
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # a suffix: the last K octets
        count = int(last)
        if count == 0 or size == 0:
            return UNSATISFIABLE
        return max(size - count, 0), size
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        return UNSATISFIABLE
    end = size if not last else min(int(last) + 1, size)
    return start, end


def _chunk_size(rate: float | None) -> int:
    """64 KiB, or for a throttled transfer about a twentieth of a second's worth."""
    if rate is None:
        return CHUNK_SIZE
    return max(1, min(CHUNK_SIZE, int(rate / 20)))


def _unsent(sock: Any) -> int:
    """Octets the kernel still holds for the peer (sent but unacknowledged included)."""
    if sys.platform == "win32" or sock is None:
        return 0
    try:
        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", out)[0])


class _Pace:
    """Sleeps (in the loop) so that what has gone through stays at ``rate`` octets/s."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._done = 0

    async def passed(self, n: int) -> None:
        self._done += n
        if self._rate is not None:
            delay = self._start + self._done / self._rate - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the knob itself: a slow server


class Transfers:
    """The upload and download routes of one reference server (loop thread only)."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        store: NoteStore,
        limits: Limits,
        knobs: Knobs,
        observed: Observed,
        authenticate: Callable[[web.Request], tuple[str | None, str | None]],
        unauthorized: Callable[[str | None], web.StreamResponse],
    ) -> None:
        self._blobs = blobs
        self._store = store
        self._limits = limits
        self._knobs = knobs
        self._observed = observed
        self._authenticate = authenticate
        self._unauthorized = unauthorized
        #: Uploads whose bodies are being read, per user (maxConcurrentUpload).
        self._uploading: Counter[str] = Counter()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the upload (POST) and download (GET and HEAD) routes."""
        router.add_post(UPLOAD_PATH, self._handle_upload, expect_handler=self._expect_upload)
        router.add_get(DOWNLOAD_PATH, self._handle_download)

    # -- shared checks -----------------------------------------------------------------------
    def _busy(self) -> web.StreamResponse | None:
        busy = self._knobs.take_busy()
        if busy is None:
            return None
        status, retry_after = busy
        response = problem(status, _reason(status), "the server is busy (busy knob)")
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def _account(self, user: str, account_id: str) -> web.StreamResponse | None:
        """404 unless ``account_id`` is ``user``'s (someone else's is not told apart)."""
        if account_id == account_id_for(user) and self._store.has_account(account_id):
            return None
        return problem(404, "Not Found", f"no account {account_id!r} for this user")

    # -- upload (RFC 8620 §6.1) --------------------------------------------------------------
    def _too_large(self, size: int | str) -> web.StreamResponse:
        limit = self._limits.max_size_upload
        response = problem(
            413,
            "Content Too Large",
            f"an upload of {size} octets exceeds maxSizeUpload ({limit})",
            type=LIMIT_PROBLEM,
            limit="maxSizeUpload",
        )
        response.force_close()  # the rest of the body is not wanted
        return response

    def _check_upload(self, request: web.Request) -> str | web.StreamResponse:
        """Everything decided before the body: the user when it may be read, else why not."""
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        self._observed.count_upload()
        refusal = self._busy() or self._account(user, request.match_info["accountId"])
        if refusal is None:
            declared = request.content_length
            if declared is not None and declared > self._limits.max_size_upload:
                refusal = self._too_large(declared)
            elif self._uploading[user] >= self._limits.max_concurrent_upload:
                refusal = problem(
                    429,
                    "Too Many Requests",
                    f"more than {self._limits.max_concurrent_upload} concurrent uploads",
                    type=LIMIT_PROBLEM,
                    limit="maxConcurrentUpload",
                )
        if refusal is None:
            return user
        refusal.force_close()  # the body is not wanted
        return refusal

    async def _expect_upload(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse before the body is sent, or invite it."""
        if request.headers.get("Expect", "").lower() != "100-continue":
            return problem(417, "Expectation Failed", "only 100-continue is understood")
        checked = self._check_upload(request)
        if not isinstance(checked, str):
            return checked
        request[_UPLOAD_USER] = checked
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        user = request.get(_UPLOAD_USER)
        if user is None:  # no Expect header: the checks have not run yet
            checked = self._check_upload(request)
            if not isinstance(checked, str):
                return checked
            user = checked
        account_id = request.match_info["accountId"]
        limit = self._limits.max_size_upload
        self._uploading[user] += 1
        self._observed.upload_started()
        try:
            buffer = BlobBuffer(request.content_length)
            async for chunk in self._read_body(request):
                if buffer.size + len(chunk) > limit:
                    return self._too_large(f"more than {limit}")
                buffer.write(chunk)
        finally:
            self._uploading[user] -= 1
            self._observed.upload_ended()
        media_type = request.headers.get("Content-Type", "").strip() or DEFAULT_TYPE
        blob = self._blobs.put_buffer(account_id, buffer, media_type)
        body = {"accountId": account_id, "blobId": blob.id, "type": blob.type, "size": blob.size}
        return web.json_response(body, status=201, dumps=dumps)

    async def _read_body(self, request: web.Request) -> AsyncIterator[bytes]:
        """The body in chunks of at most 64 KiB, at the ``throttle_uploads`` pace."""
        rate = self._knobs.upload_rate
        pace = _Pace(rate)
        size = _chunk_size(rate)
        while chunk := await request.content.read(size):
            yield chunk
            await pace.passed(len(chunk))

    # -- download (RFC 8620 §6.2) ------------------------------------------------------------
    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        user, scheme = self._authenticate(request)
        if user is None:
            return self._unauthorized(scheme)
        range_header = request.headers.get("Range")
        self._observed.count_download(range_header)
        account_id = request.match_info["accountId"]
        refusal = self._busy() or self._account(user, account_id)
        if refusal is not None:
            return refusal
        blob_id = request.match_info["blobId"]
        blob = self._blobs.get(account_id, blob_id)
        if blob is None:
            return problem(404, "Not Found", f"no blob {blob_id!r} in {account_id!r}")
        media_type = request.query.get("type") or request.query.get("accept") or blob.type
        if not media_type.isprintable() or not media_type.isascii() or "/" not in media_type:
            return problem(400, "Bad Request", f"{media_type!r} is not a media type")
        etag = f'"{blob.id}"'
        size = blob.size
        start, end, status = 0, size, 200
        ranges = self._knobs.ranges
        if_range = request.headers.get("If-Range")
        if ranges and range_header is not None and (if_range is None or if_range == etag):
            selected = parse_range(range_header, size)
            if selected == UNSATISFIABLE:
                refused = problem(416, "Range Not Satisfiable", f"the blob has {size} octets")
                refused.headers["Content-Range"] = f"bytes */{size}"
                return refused
            if isinstance(selected, tuple):
                (start, end), status = selected, 206
        response = web.StreamResponse(status=status)
        response.headers["Content-Type"] = media_type
        name = urllib.parse.quote(request.match_info["name"], safe="")
        response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{name}"
        response.headers["ETag"] = etag
        if ranges:
            response.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        cut = self._knobs.take_download_drop()
        stop = end if cut is None else min(end, start + cut)
        await self._send_body(response, blob, start, stop)
        if cut is not None:
            await self._reset(request)
        return response

    async def _send_body(
        self, response: web.StreamResponse, blob: Blob, start: int, end: int
    ) -> None:
        """``blob[start:end]`` in chunks, at the ``throttle_downloads`` pace."""
        rate = self._knobs.download_rate
        pace = _Pace(rate)
        for piece in blob.chunks(start, end, _chunk_size(rate)):
            await response.write(piece)
            await pace.passed(len(piece))

    @staticmethod
    async def _reset(request: web.Request) -> None:
        """Let what was written reach the peer, then end the connection with a TCP RST."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CUT_WAIT
        while (transport.get_write_buffer_size() or _unsent(sock)) and loop.time() < deadline:
            await asyncio.sleep(0.002)  # polling the kernel: no event says "sent"
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError as exc:
                logger.debug("SO_LINGER failed: %s", exc)
        transport.abort()
        logger.debug("download cut short by the drop_downloads knob")
