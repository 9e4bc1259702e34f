"""The blobs behind the reference server (RFC 8620 §6, RFC 9404), per account, in memory.

A :class:`BlobStore` is separate from the server, like the
:class:`~jmapws_sync.testing.store.NoteStore`, so that it can outlive one:
``ReferenceServer(blobs=old.blobs, port=old.port)`` serves the same blobs again.

Blob ids are content addresses: ``"G"`` followed by the first 40 hex digits of the SHA-256
of the data (:func:`blob_id_for`), so the same octets always get the same id, in every
account and across restarts. Storing data that is already there keeps the one copy and
takes the newer media type.

Big blobs are cheap: an upload is gathered by a :class:`BlobBuffer` into one ``bytearray``
(allocated once from the announced size, else grown in place), hashed chunk by chunk as it
arrives, and that very buffer becomes the stored blob, behind a read-only ``memoryview``.
Nothing is copied between the socket's chunks and the store, and a download hands out
slices of the view (no copy either). Only :meth:`BlobStore.data` (for tests) makes a copy.

Thread-safe: one lock guards the maps; the data themselves are immutable once stored.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TYPE",
    "Blob",
    "BlobBuffer",
    "BlobStore",
    "blob_id_for",
]

#: The media type of a blob whose upload named none (RFC 8620 §6.1).
DEFAULT_TYPE = "application/octet-stream"
#: How many hex digits of the SHA-256 a blob id carries after its ``"G"``.
_ID_HEX_DIGITS = 40

_Bytes = bytes | bytearray | memoryview


def _id_from_digest(digest: str) -> str:
    return "G" + digest[:_ID_HEX_DIGITS]


def blob_id_for(data: _Bytes) -> str:
    """The id that ``data`` gets: ``"G"`` + the first 40 hex digits of its SHA-256."""
    return _id_from_digest(hashlib.sha256(data).hexdigest())


@dataclass(frozen=True, eq=False)
class Blob:
    """One stored blob: its id, its media type and its octets (a read-only view)."""

    id: str
    type: str
    #: The octets, read-only; slice it to read a range without copying.
    view: memoryview

    @property
    def size(self) -> int:
        """The number of octets."""
        return self.view.nbytes

    def chunks(self, start: int, end: int, size: int) -> Iterator[memoryview]:
        """Slices of at most ``size`` octets covering ``[start, end)`` (no copy)."""
        for pos in range(start, end, size):
            yield self.view[pos : min(pos + size, end)]


class BlobBuffer:
    """One blob being received: chunks go into one buffer, hashed as they arrive.

    ``expected`` (the announced Content-Length, say) sizes the buffer at once; without it
    the buffer grows in place. Hand the finished buffer to :meth:`BlobStore.put_buffer`,
    which keeps it as the blob (no copy). Not thread-safe: one writer at a time.
    """

    def __init__(self, expected: int | None = None) -> None:
        self._buf = bytearray(expected) if expected else bytearray()
        self._expected = expected if expected else None
        self._size = 0
        self._sha256 = hashlib.sha256()
        self._done = False

    @property
    def size(self) -> int:
        """How many octets have been written so far."""
        return self._size

    def write(self, chunk: _Bytes) -> None:
        """Append ``chunk``."""
        if self._done:
            raise RuntimeError("the blob is finished")
        if isinstance(chunk, memoryview) and chunk.format != "B":
            chunk = chunk.cast("B")
        n = len(chunk)
        if not n:
            return
        end = self._size + n
        if self._expected is not None and end <= self._expected:
            self._buf[self._size : end] = chunk
        else:
            if self._expected is not None:  # more than announced: drop the unused tail
                del self._buf[self._size :]
                self._expected = None
            self._buf += chunk
        self._sha256.update(chunk)
        self._size = end

    def finish(self) -> tuple[str, memoryview]:
        """The blob id and the read-only octets; the buffer may not be written again."""
        if self._expected is not None and self._size < self._expected:
            del self._buf[self._size :]  # fewer octets than announced
        self._expected = None
        self._done = True
        view = memoryview(self._buf).toreadonly()
        return _id_from_digest(self._sha256.hexdigest()), view


class BlobStore:
    """The blobs of every account of one reference server (or several); thread-safe.

    Accounts are plain ids (``"a-alice"``) and need no creating: the server checks who may
    use which account before it gets here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, dict[str, Blob]] = {}

    def put(self, account_id: str, data: _Bytes, type: str = DEFAULT_TYPE) -> Blob:  # noqa: A002
        """Store ``data`` with media ``type``; return the blob.

        ``bytes`` are kept as they are (they are immutable); other buffers are copied once.
        """
        if isinstance(data, bytes):
            return self._put(account_id, blob_id_for(data), memoryview(data), type)
        buffer = BlobBuffer(data.nbytes if isinstance(data, memoryview) else len(data))
        buffer.write(data)
        return self.put_buffer(account_id, buffer, type)

    def put_buffer(self, account_id: str, buffer: BlobBuffer, type: str = DEFAULT_TYPE) -> Blob:  # noqa: A002
        """Store what ``buffer`` received, keeping that buffer (no copy); return the blob."""
        blob_id, view = buffer.finish()
        return self._put(account_id, blob_id, view, type)

    def _put(self, account_id: str, blob_id: str, view: memoryview, type_: str) -> Blob:
        with self._lock:
            blobs = self._accounts.setdefault(account_id, {})
            old = blobs.get(blob_id)
            if old is not None:
                view = old.view  # the same octets: keep the one copy already stored
            blob = Blob(blob_id, type_, view)
            blobs[blob_id] = blob
            return blob

    def get(self, account_id: str, blob_id: str) -> Blob | None:
        """The blob ``blob_id`` of ``account_id``, or ``None``."""
        with self._lock:
            return self._accounts.get(account_id, {}).get(blob_id)

    def data(self, account_id: str, blob_id: str) -> bytes | None:
        """A copy of the octets of ``blob_id``, or ``None`` when there is no such blob."""
        blob = self.get(account_id, blob_id)
        return None if blob is None else blob.view.tobytes()

    def ids(self, account_id: str) -> list[str]:
        """The ids of the blobs of ``account_id`` (in the order they were first stored)."""
        with self._lock:
            return list(self._accounts.get(account_id, {}))

    def delete(self, account_id: str, blob_id: str) -> bool:
        """Forget blob ``blob_id`` of ``account_id``; whether it was there."""
        with self._lock:
            return self._accounts.get(account_id, {}).pop(blob_id, None) is not None
