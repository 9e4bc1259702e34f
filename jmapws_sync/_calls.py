"""Call correlation: which waiting ``call()`` an answer belongs to (RFC 8887 §4.3.1).

Each ``call()`` sends its Request with an id of the form ``jws<N>.<M>`` (``N`` numbers the
session, ``M`` the call), registers a :class:`Waiter` under it, and blocks; the reader
thread hands a Response or RequestError whose ``requestId`` carries the session's prefix
to that waiter and to nobody else. Answers to other ids go to the inbox.

With a concurrency limit (the Session resource's ``maxConcurrentRequests``) a call holds a
slot from before it is sent until its answer arrives, late or not, or the connection ends:
a call that timed out is still running on the server, and freeing its slot early would
let the next caller trip the server's limit, which the slots exist to prevent.

Pure threading, no I/O.
"""

from __future__ import annotations

import itertools
import threading

from .errors import SessionClosed
from .frames import RequestError, Response

__all__ = ["Calls", "Waiter"]

_Result = Response | RequestError | BaseException


class Waiter:
    """One pending ``call()``: a pre-acquired lock that the reader releases with the answer."""

    __slots__ = ("_lock", "result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.result: _Result | None = None

    def set(self, result: _Result) -> None:
        """Hand over the answer (or the error that ended the connection); once."""
        self.result = result
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until :meth:`set` or ``timeout``; True if the answer is there."""
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(timeout, 0.0))


class Calls:
    """The calls of one connection that wait for their answers, and their slots.

    ``number`` makes the ids unique among the sessions of this process; ``limit`` is the
    number of calls that may be in flight at once (None: no limit).
    """

    def __init__(self, number: int, limit: int | None = None) -> None:
        self.prefix = f"jws{number}."
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[str, Waiter] = {}
        self._late: set[str] = set()  # timed out, still holding their slots
        self._slots = threading.BoundedSemaphore(limit) if limit else None
        self._ended = False
        self._cause: BaseException | None = None
        #: Answers that arrived after their call had timed out (and were dropped).
        self.late_answers = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Calls whose answers have not arrived yet, timed-out ones included."""
        return len(self._pending) + len(self._late)

    def new_id(self) -> str:
        """A request id no other call of this process uses."""
        return f"{self.prefix}{next(self._ids)}"

    def owns(self, request_id: object) -> bool:
        """Whether ``request_id`` has the form of this connection's call ids."""
        return type(request_id) is str and request_id.startswith(self.prefix)

    def acquire_slot(self, timeout: float | None) -> bool:
        """Wait for a free slot (always True without a limit); False after ``timeout``."""
        if self._slots is None:
            return True
        return self._slots.acquire(timeout=None if timeout is None else max(timeout, 0.0))

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def register(self, request_id: str) -> Waiter:
        """A waiter for ``request_id``, which holds a slot; after the end SessionClosed."""
        waiter = Waiter()
        with self._lock:
            if self._ended:
                self._release_slot()
                raise SessionClosed(cause=self._cause)
            self._pending[request_id] = waiter
        return waiter

    def resolve(self, request_id: str, answer: Response | RequestError | BaseException) -> None:
        """The reader thread: hand ``answer`` (or an error about it) to its caller."""
        with self._lock:
            waiter = self._pending.pop(request_id, None)
            if waiter is None:
                if request_id in self._late:
                    self._late.discard(request_id)
                    self._release_slot()
                self.late_answers += 1
                return
        waiter.set(answer)  # the caller first: the slot's release costs microseconds
        self._release_slot()

    def give_up(self, request_id: str, *, sent: bool) -> bool:
        """The caller stops waiting; False if the answer is being set right now.

        A request that was ``sent`` keeps its slot until its late answer or the end.
        """
        with self._lock:
            if self._pending.pop(request_id, None) is None:
                return False
            if sent and not self._ended:
                self._late.add(request_id)
            else:
                self._release_slot()
            return True

    def end(self, error: BaseException, cause: BaseException | None) -> None:
        """The connection ended: every waiting call gets ``error``; later ones
        :class:`SessionClosed` with ``cause``; every slot is free again."""
        with self._lock:
            self._ended, self._cause = True, cause
            pending, self._pending = self._pending, {}
            for _ in range(len(pending) + len(self._late)):
                self._release_slot()
            self._late.clear()
        for waiter in pending.values():
            waiter.set(error)
