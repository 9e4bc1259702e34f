"""Push drain: the server floods StateChange frames; each client drains them, frames/s.

Clients: jmapws_sync through ``changes()`` and through ``next_frame()``, the
websocket-client loop (the floor), the websockets.sync loop, and jmaplib's
WebSocketClient (fewer frames: it is much slower). Each client connects as the "flood"
user, the server sends ``push_frames`` frames as fast as it can, and the clock runs from
asking for the flood to the last frame read. Per client and repetition: frames/s, the
server process's CPU share over the drain, and for jmapws_sync how often its reader paused
at ``max_queue``; per repetition, the ratios of jmapws_sync to the two bare loops.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from . import server as bench_server
from .clients import JmaplibClient, LibClient, LibNextFrameClient, WebsocketsLoop, WsClientLoop
from .config import Config
from .results import Results
from .stats import fmt

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

#: What the library's warning says when the reader pauses at ``max_queue``.
PAUSED = "reading paused"


class PauseCounter(logging.Handler):
    """Counts the library's "reading paused" warnings (``max_queue`` reached) quietly.

    Attached to the package logger ``jmapws_sync``, whichever module logs it; any other
    record at WARNING or above is still printed on stderr.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if PAUSED in message:
            self.count += 1
        else:
            print(f"{record.name}: {message}", file=sys.stderr, flush=True)


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """The server floods StateChange frames; each client drains them: frames per second.

    When the reader outruns the consumer, the session pauses reading at ``max_queue``
    frames and logs a warning: those are counted (per run) instead of printed.
    """
    library_log = logging.getLogger("jmapws_sync")
    counter = PauseCounter()
    library_log.addHandler(counter)
    library_log.propagate = False
    try:
        _drain_all(server, cfg=cfg, res=res, with_jmaplib=with_jmaplib, counter=counter)
    finally:
        library_log.removeHandler(counter)
        library_log.propagate = True


def _drain_all(
    server: ServerProcess,
    *,
    cfg: Config,
    res: Results,
    with_jmaplib: bool,
    counter: PauseCounter,
) -> None:
    facts = server.facts
    factories: list[tuple[Any, int]] = [
        (LibClient, cfg.push_frames),
        (LibNextFrameClient, cfg.push_frames),
        (WsClientLoop, cfg.push_frames),
        (WebsocketsLoop, cfg.push_frames),
    ]
    if with_jmaplib:
        factories.append((JmaplibClient, cfg.jmaplib_push_frames))
    failed: set[str] = set()
    for rep in range(cfg.reps):
        shift = rep % len(factories)
        fps: dict[str, float] = {}
        for factory, n in factories[shift:] + factories[:shift]:
            if factory.key in failed:
                continue
            try:
                client = factory(facts, user="flood")
            except Exception as exc:
                failed.add(factory.key)
                res.notes.append(f"push: {factory.name} could not connect: {exc}")
                continue
            try:
                counter.count = 0
                cpu0 = server.cpu()
                t0 = time.perf_counter()
                count = client.drain(n, lambda n=n: bench_server.flood(server, n))
                elapsed = time.perf_counter() - t0
                server_cpu = server.cpu() - cpu0
            except Exception as exc:
                failed.add(factory.key)
                res.notes.append(f"push: {factory.name} failed: {type(exc).__name__}: {exc}")
                continue
            finally:
                client.close()
            if count != n:
                res.notes.append(f"push: {factory.name} got {count} of {n} frames")
            fps[factory.key] = count / elapsed
            res.add(f"push.{factory.key}.fps", fps[factory.key])
            res.add(f"push.{factory.key}.server_busy", 100.0 * server_cpu / elapsed)
            if factory.key.startswith("lib"):
                res.add(f"push.{factory.key}.pauses", counter.count)
        if "lib" in fps and "wsclient" in fps:
            res.add("ratio.push.lib/wsclient", fps["lib"] / fps["wsclient"])
        if "lib_next" in fps and "wsclient" in fps:
            res.add("ratio.push.lib_next/wsclient", fps["lib_next"] / fps["wsclient"])
        if "lib" in fps and "websockets" in fps:
            res.add("ratio.push.lib/websockets", fps["lib"] / fps["websockets"])
        print(
            f"  push rep {rep + 1}/{cfg.reps}: "
            + ", ".join(f"{k} {fmt(v)}/s" for k, v in fps.items()),
            flush=True,
        )
