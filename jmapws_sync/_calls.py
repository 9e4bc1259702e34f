"""Call correlation: which waiting ``call()`` an answer belongs to (RFC 8887 §4.3.1).

Each ``call()`` sends its Request with an id of the form ``jws<N>.<M>`` (``N`` numbers the
session, ``M`` the call), registers a :class:`Waiter` under it, and blocks; the reader
thread hands a Response or RequestError whose ``requestId`` carries the session's prefix
to that waiter and to nobody else. Answers to other ids go to the inbox.

Pure threading, no I/O.
"""

from __future__ import annotations

import itertools
import threading
from typing import Final

from .errors import SessionClosed
from .frames import RequestError, Response

__all__ = ["CALL_ID_PATTERN", "Calls", "Waiter"]

#: The form of the ids ``call()`` uses; ``send_request()`` ids should not look like it.
CALL_ID_PATTERN: Final = r"jws\d+\..*"

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
    """The calls of one connection that wait for their answers.

    ``number`` makes the ids unique among the sessions of this process.
    """

    def __init__(self, number: int) -> None:
        self.prefix = f"jws{number}."
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[str, Waiter] = {}
        self._ended: BaseException | None = None
        self._cause: BaseException | None = None
        #: Answers that arrived after their call had timed out (and were dropped).
        self.late_answers = 0

    def __len__(self) -> int:
        return len(self._pending)

    def new_id(self) -> str:
        """A request id no other call of this process uses."""
        return f"{self.prefix}{next(self._ids)}"

    def owns(self, request_id: object) -> bool:
        """Whether ``request_id`` has the form of this connection's call ids."""
        return type(request_id) is str and request_id.startswith(self.prefix)

    def register(self, request_id: str) -> Waiter:
        """A waiter for ``request_id``; raises the error that ended the connection, if any."""
        waiter = Waiter()
        with self._lock:
            if self._ended is not None:
                raise SessionClosed(cause=self._cause)
            self._pending[request_id] = waiter
        return waiter

    def resolve(self, request_id: str, answer: Response | RequestError) -> None:
        """The reader thread: hand ``answer`` to its caller, or count it as late."""
        with self._lock:
            waiter = self._pending.pop(request_id, None)
            if waiter is None:
                self.late_answers += 1
                return
        waiter.set(answer)

    def forget(self, request_id: str) -> bool:
        """The caller gives up (timeout, failed send); False if the answer is being set."""
        with self._lock:
            return self._pending.pop(request_id, None) is not None

    def end(self, error: BaseException, cause: BaseException | None) -> None:
        """The connection ended: every waiting call gets ``error``; later ones
        :class:`SessionClosed` with ``cause``."""
        with self._lock:
            self._ended, self._cause = error, cause
            pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.set(error)
