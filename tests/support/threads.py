"""The library's threads (all named ``jmapws-...``), for leak checks without private attributes."""

from __future__ import annotations

import threading
import time


def library_threads(prefix: str = "jmapws-") -> set[threading.Thread]:
    """The live threads whose name starts with ``prefix``, the reference server's excepted."""
    return {
        t
        for t in threading.enumerate()
        if t.name.startswith(prefix) and not t.name.startswith("jmapws-reference-server")
    }


def wait_gone(threads: set[threading.Thread], timeout: float = 5.0) -> set[threading.Thread]:
    """Join ``threads`` within ``timeout`` (in all); return those still alive."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    return {t for t in threads if t.is_alive()}


def wait_no_readers(timeout: float = 5.0) -> None:
    """Assert that every session reader thread ends within ``timeout``."""
    left = wait_gone(library_threads("jmapws-reader"), timeout)
    assert not left, f"reader threads still alive: {sorted(t.name for t in left)}"
