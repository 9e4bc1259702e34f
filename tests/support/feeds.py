"""What the ChangeFeed tests share: a replica kept from Deltas, and follow() in a thread.

Every feed test keeps a copy the way an application would (:class:`Replica`) and compares
it with the server at the end: the one assertion that fails whatever the feed got wrong
(a missed object, a stale one, a ghost).
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Any

import jmapws_sync as jws

__all__ = ["Follower", "Replica"]


class Replica:
    """Objects by type and id, rebuilt from Deltas as an application would."""

    def __init__(self) -> None:
        self.objects: collections.defaultdict[str, dict[str, dict[str, Any]]] = (
            collections.defaultdict(dict)
        )
        self.resyncing: dict[str, set[str]] = {}
        self.deltas: list[jws.Delta] = []

    def apply(self, delta: jws.Delta) -> None:
        self.deltas.append(delta)
        kept = self.objects[delta.data_type]
        if delta.resync:
            seen = self.resyncing.setdefault(delta.data_type, set())
            seen.update(delta.created)
            if not delta.more:  # what was not seen again since the resync began is gone
                for gone in set(kept) - seen:
                    del kept[gone]
                del self.resyncing[delta.data_type]
        for object_id, obj in {**delta.created, **delta.updated}.items():
            kept[object_id] = {**kept.get(object_id, {}), **obj}
        for object_id in delta.destroyed:
            kept.pop(object_id, None)

    def notes(self) -> dict[str, dict[str, Any]]:
        return self.objects["Note"]


class Follower:
    """``feed.follow()`` in a daemon thread: its Deltas, or the error that ended it, in
    :attr:`out`; :meth:`next` takes one (raising that error)."""

    def __init__(self, feed: jws.ChangeFeed, timeout: float) -> None:
        self.out: queue.Queue[jws.Delta | BaseException] = queue.Queue()
        self._timeout = timeout
        self.thread = threading.Thread(target=self._run, args=(feed,), daemon=True)
        self.thread.start()

    def _run(self, feed: jws.ChangeFeed) -> None:
        try:
            for delta in feed.follow():
                self.out.put(delta)
        except BaseException as exc:  # handed to the test thread
            self.out.put(exc)

    def next(self) -> jws.Delta:
        item = self.out.get(timeout=self._timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def past_the_first_catch_up(self) -> None:
        """Take the Deltas of the first catch-up, up to its last page."""
        while self.next().more:
            pass
