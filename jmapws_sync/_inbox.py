"""The inbox: frames a reader thread has received and no consumer has taken yet.

One :class:`Inbox` per :class:`~jmapws_sync.WsSession`, or one shared by every connection
of a :class:`~jmapws_sync.ReconnectingSession`, which then stitches the connections into
one stream with :class:`Marker` items between them. Items stay in arrival order in one
deque, under one lock:

* :meth:`Inbox.get` (``next_frame()``) takes the first item; :meth:`Inbox.get_change`
  (``changes()``) takes the first StateChange and leaves the frames before it where they
  are, for ``get`` (so a thread blocked in ``next_frame()`` is woken by them too);
* the end of the stream (:meth:`Inbox.finish`) comes after every frame that arrived
  before it, and stays: every later call sees it;
* a StateChange that arrives while the last unread item is a StateChange is merged into
  it (:meth:`StateChange.merge <jmapws_sync.StateChange.merge>`: nothing is lost, order is
  kept), so a flood of pushes takes one place;
* the other frames and the recoverable errors count toward ``max_queue``; at that many
  the reader is made to wait in :meth:`Inbox.put` (TCP then slows the server down) until
  the consumers have taken half of them. Nothing is ever dropped.

Pure threading, no I/O: the reader thread puts, any thread takes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from .errors import SessionClosed
from .frames import Frame, RequestError, Response, StateChange, UnknownFrame

__all__ = ["DEFAULT_MAX_QUEUE", "Inbox", "Marker"]

log = logging.getLogger(__name__)

#: Frames held for the consumers before the reader pauses (see ``max_queue``).
DEFAULT_MAX_QUEUE: Final = 4096


class Marker:
    """An item between frames that a consumer hands to the inbox's ``on_marker`` when it
    reaches it (a reconnect). Until :attr:`ready`, nothing behind it is handed out."""

    __slots__ = ("ready",)

    def __init__(self, *, ready: bool = True) -> None:
        self.ready = ready


class _End:
    """The end of the stream: ``error`` None and not ``local`` is a clean close by the
    server; ``local``: closed here; ``raised``: the error was raised once already."""

    __slots__ = ("error", "local", "raised")

    def __init__(self, error: BaseException | None, local: bool) -> None:
        self.error = error
        self.local = local
        self.raised = False


_Item = Frame | BaseException | Marker
_PLAIN_FRAMES: Final = frozenset({Response, RequestError, UnknownFrame})


class Inbox:
    """Frames between a reader thread and any number of consumer threads.

    ``max_queue`` (0: no limit) is where the reader pauses; ``name`` (a safe URL) is for
    log lines; ``on_marker`` runs, in the consumer's thread, for each :class:`Marker`.
    """

    def __init__(
        self,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        name: str = "",
        on_marker: Callable[[Marker], object] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # consumers wait here
        self._room = threading.Condition(self._lock)  # the paused reader waits here
        self._items: collections.deque[_Item] = collections.deque()
        self._max = max_queue
        self._name = name
        self._on_marker = on_marker
        self._end: _End | None = None
        self._unblocked = False
        self._push_state: str | None = None
        self._counted = 0  # items that count toward max_queue: all but StateChanges, markers
        self._waiting = 0  # consumers waiting on _arrived
        #: True while the reader waits for room (see the module docstring).
        self.paused = False

    # ------------------------------------------------------------------ the reader's side

    def put(self, item: Frame | BaseException | Marker) -> None:
        """Add a frame, a recoverable error for the consumers, or a marker, at the end.

        Blocks while the inbox is full, until the consumers have taken half of it or
        :meth:`unblock` is called.
        """
        with self._lock:
            items = self._items
            if type(item) is StateChange:
                if items and type(items[-1]) is StateChange:
                    items[-1] = items[-1].merge(item)
                else:
                    items.append(item)
            else:
                items.append(item)
                self._counted += 1
            if self._waiting:  # Condition.notify_all costs microseconds even with no waiter
                self._arrived.notify_all()
            if self._max and self._counted >= self._max and not self._unblocked:
                self._wait_for_room()

    def _wait_for_room(self) -> None:
        log.warning(
            "%s: %d frames are waiting for next_frame(); reading paused until the"
            " application catches up (answers to call() wait too)",
            self._name,
            self._counted,
        )
        low = self._max // 2
        self.paused = True
        try:
            while self._counted > low and not self._unblocked:
                self._room.wait()
        finally:
            self.paused = False
        log.info("%s: reading resumed", self._name)

    def put_marker(self, marker: Marker) -> None:
        """Add ``marker`` at the end; never waits for room (the supervisor calls it).

        A marker right behind a ready one, with no frame between them, takes its place: a
        consumer would pass both at once, and an application that reads no frames (call()
        only) would otherwise keep one per reconnect for ever. One that is not ready yet
        (a reconnect under way) stays: what comes after it must still wait for it.
        """
        with self._lock:
            items = self._items
            if items and isinstance(items[-1], Marker) and items[-1].ready:
                items[-1] = marker
            else:
                items.append(marker)
            self._arrived.notify_all()

    def unblock(self) -> None:
        """Let the reader through :meth:`put` from now on (the session is closing)."""
        with self._lock:
            self._unblocked = True
            self._room.notify_all()

    def finish(self, error: BaseException | None = None, *, local: bool = False) -> None:
        """End the stream after the items already in; the first end recorded wins.

        ``error`` None: a clean end (:meth:`get` returns None); ``local``: closed here
        (:class:`SessionClosed`); else the error is raised once, then SessionClosed.
        Markers that never became ready are dropped; the frames behind them are not.
        """
        with self._lock:
            if self._end is not None:
                return
            self._end = _End(error, local)
            if any(isinstance(item, Marker) and not item.ready for item in self._items):
                kept = [i for i in self._items if not (isinstance(i, Marker) and not i.ready)]
                self._items = collections.deque(kept)
            self._unblocked = True
            self._room.notify_all()
            self._arrived.notify_all()

    def mark_ready(self, marker: Marker) -> None:
        """The stream may go on past ``marker`` now."""
        with self._lock:
            marker.ready = True
            self._arrived.notify_all()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        """True once :meth:`finish` was called."""
        return self._end is not None

    # ------------------------------------------------------------------ the consumers' side

    @property
    def push_state(self) -> str | None:
        """The ``pushState`` of the last StateChange handed out that had one."""
        return self._push_state

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame (``next_frame()``): None at a clean end, and on every call after.

        Raises :class:`TimeoutError`, a recoverable error queued by :meth:`put`, or the
        end's error (once; then :class:`SessionClosed`).
        """
        return self._take(timeout, changes_only=False)  # type: ignore[return-value]

    def get_change(self, timeout: float | None = None) -> StateChange | None:
        """The next StateChange (``changes()``); other frames before it stay for :meth:`get`.

        Recoverable errors met on the way (a binary or non-JSON message) are logged at
        WARNING and passed over: the stream goes on. None at a clean end.
        """
        return self._take(timeout, changes_only=True)  # type: ignore[return-value]

    def changes(self, timeout: float | None = None) -> Iterator[StateChange]:
        """Iterate over StateChanges until a clean end; ``timeout`` bounds each wait."""
        while True:
            change = self.get_change(timeout)
            if change is None:
                return
            yield change

    def get_event(self, timeout: float | None = None) -> StateChange | Marker | None:
        """As :meth:`get_change`, and a :class:`Marker` is returned too, where it is in
        the stream, once ``on_marker`` has run for it."""
        return self._take(timeout, changes_only=True, markers=True)  # type: ignore[return-value]

    def _take(
        self, timeout: float | None, *, changes_only: bool, markers: bool = False
    ) -> Frame | Marker | None:
        # The hot path first: a frame is waiting at the head.
        with self._lock:
            items = self._items
            if items:
                head = items[0]
                kind = type(head)
                if kind is StateChange:
                    items.popleft()
                    if head.push_state is not None:  # type: ignore[union-attr]
                        self._push_state = head.push_state  # type: ignore[union-attr]
                    return head  # type: ignore[return-value]
                if kind in _PLAIN_FRAMES and not changes_only:
                    items.popleft()
                    self._counted -= 1
                    if self.paused and self._counted <= self._max // 2:
                        self._room.notify()
                    return head  # type: ignore[return-value]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                while True:
                    item, index = self._first(changes_only)
                    if item is not None or self._end is not None:
                        break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"nothing arrived within {timeout} s")
                    self._waiting += 1
                    try:
                        self._arrived.wait(left)
                    finally:
                        self._waiting -= 1
                if item is None:
                    self._raise_end()
                    return None
                if index:
                    del self._items[index]
                else:
                    self._items.popleft()
                kind = type(item)
                if kind is StateChange:
                    if item.push_state is not None:  # type: ignore[union-attr]
                        self._push_state = item.push_state  # type: ignore[union-attr]
                    return item  # type: ignore[return-value]
                if not isinstance(item, Marker):
                    self._counted -= 1
                    if self.paused and self._counted <= self._max // 2:
                        self._room.notify()
            if isinstance(item, Marker):
                if self._on_marker is not None:
                    self._on_marker(item)
                if markers:
                    return item
                continue
            if isinstance(item, BaseException):
                if changes_only:  # changes() goes on past what the stream survives
                    log.warning(
                        "%s: changes() passed over %s: %s", self._name, type(item).__name__, item
                    )
                    continue
                raise item
            return item

    def _first(self, changes_only: bool) -> tuple[_Item | None, int]:
        """Under the lock: the item to take and its index, or (None, 0) if none yet.

        ``changes_only`` passes over frames other than StateChanges, but stops at errors
        and markers, which keep their place in the stream.
        """
        for index, item in enumerate(self._items):
            if isinstance(item, Marker):
                return (item, index) if item.ready else (None, 0)
            if not changes_only or type(item) is StateChange or isinstance(item, BaseException):
                return item, index
        return None, 0

    def _raise_end(self) -> None:
        """Under the lock: raise what the end of the stream means; return at a clean end."""
        end = self._end
        assert end is not None
        if end.local:
            raise SessionClosed()
        if end.error is None:
            return
        if end.raised:
            raise SessionClosed(cause=end.error)
        end.raised = True
        raise end.error
