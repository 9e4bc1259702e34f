"""Profiling: cProfile of the client process on the two hot paths, thread by thread.

``call()``: ``profile_calls`` small Core/echo calls; push: a flood of ``profile_frames``
StateChanges drained through ``changes()``. The calling (or consuming) thread and the
session's reader thread are profiled separately: each table lists the functions with the
most own time. cProfile inflates own time: compare shares, not absolute values.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from . import server as bench_server
from .clients import SMALL_ARGS, LibClient
from .config import Config
from .results import Results

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

#: How the library names the reader thread of a session.
READER_THREAD_PREFIX = "jmapws-reader-"


def profile_table(prof: cProfile.Profile, top: int = 12) -> str:
    """The ``top`` functions by own time, as a Markdown table."""
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    total = 0.0
    entries = stats.stats.items()  # type: ignore[attr-defined]  # pstats keeps it undeclared
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in entries:
        total += tottime
        rows.append((tottime, cumtime, ncalls, filename, line, name))
    rows.sort(reverse=True)
    lines = [
        "| function | calls | own s | own % | cumulative s |",
        "|---|---:|---:|---:|---:|",
    ]
    for tottime, cumtime, ncalls, filename, line, name in rows[:top]:
        where = filename
        for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        label = f"{where}:{line} {name}" if line else name
        share = 100.0 * tottime / total if total else 0.0
        lines.append(f"| `{label}` | {ncalls} | {tottime:.3f} | {share:.0f} | {cumtime:.3f} |")
    return "\n".join(lines)


@contextmanager
def profiled_readers() -> Iterator[list[cProfile.Profile]]:
    """While open, every session reader thread that starts runs under a profiler of its own.

    The list it gives holds those profilers, in the order the threads started. The reader
    is recognised by its thread name, so that this does not depend on which private class
    of the library runs it.
    """
    profiles: list[cProfile.Profile] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        if not self.name.startswith(READER_THREAD_PREFIX):
            original(self)
            return
        prof = cProfile.Profile()
        profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    try:
        yield profiles
    finally:
        threading.Thread.run = original  # type: ignore[method-assign]


def profile_hot_path(server: ServerProcess, cfg: Config, res: Results) -> None:
    """cProfile both threads of the client: the caller/consumer and the reader thread."""
    facts = server.facts
    with profiled_readers() as reader_profiles:
        lib = LibClient(facts)
        caller = cProfile.Profile()
        caller.enable()
        for _ in range(cfg.profile_calls):
            lib.echo(SMALL_ARGS)
        caller.disable()
        lib.close()
        res.profiles["call() - calling thread"] = profile_table(caller)
        res.profiles["call() - reader thread"] = profile_table(reader_profiles[-1])

        lib = LibClient(facts, user="flood")
        consumer = cProfile.Profile()
        consumer.enable()
        lib.drain(cfg.profile_frames, lambda: bench_server.flood(server, cfg.profile_frames))
        consumer.disable()
        lib.close()
        res.profiles["push drain - consumer thread (changes())"] = profile_table(consumer)
        res.profiles["push drain - reader thread"] = profile_table(reader_profiles[-1])
    print("  profiles taken", flush=True)
