"""Round trip: sequential small ``Core/echo`` calls, the latency of every client, interleaved.

Clients: jmapws_sync ``call()``, the websocket-client loop (the floor), the websockets.sync
loop, HTTP POST on a keep-alive connection, HTTP POST on a new connection each (context),
and jmaplib's WebSocketClient when it is installed. In each repetition every client makes
``rt_warmup`` calls, then ``rt_calls`` timed ones; the order of the clients rotates from one
repetition to the next. Per client and repetition: p50, p99 and mean latency (us), and the
server's CPU time per call (the part of the latency that no client can remove); per
repetition, the ratio of call()'s p50 to each other client's p50.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .clients import (
    SMALL_ARGS,
    HttpPost,
    HttpPostNewConnection,
    JmaplibClient,
    LibClient,
    WebsocketsLoop,
    WsClientLoop,
)
from .config import Config
from .results import Results
from .stats import fmt, percentile

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess


def open_clients(factories: Iterable[Any], facts: dict[str, Any], res: Results) -> dict[str, Any]:
    """Connect every client it can, by key; a note for each that cannot."""
    opened: dict[str, Any] = {}
    for factory in factories:
        try:
            opened[factory.key] = factory(facts)
        except Exception as exc:
            res.notes.append(f"{factory.name}: could not connect ({type(exc).__name__}: {exc})")
    return opened


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """Sequential small Core/echo: per-call latency of every client, interleaved.

    The server's CPU time per call is recorded too: it is the part of the latency that
    no client can remove.
    """
    facts = server.facts
    factories: list[Any] = [LibClient, WsClientLoop, WebsocketsLoop, HttpPost]
    factories.append(HttpPostNewConnection)
    if with_jmaplib:
        factories.append(JmaplibClient)
    opened = open_clients(factories, facts, res)
    keys = list(opened)
    clock = time.perf_counter_ns
    try:
        for rep in range(cfg.reps):
            shift = rep % len(keys)
            p50: dict[str, float] = {}
            for key in keys[shift:] + keys[:shift]:
                echo = opened[key].echo
                for _ in range(cfg.rt_warmup):
                    echo(SMALL_ARGS)
                samples: list[float] = []
                append = samples.append
                cpu0 = server.cpu()
                for _ in range(cfg.rt_calls):
                    t0 = clock()
                    echo(SMALL_ARGS)
                    append((clock() - t0) / 1000.0)
                res.add(f"rt.{key}.server_us", (server.cpu() - cpu0) / cfg.rt_calls * 1e6)
                p50[key] = percentile(samples, 50)
                res.add(f"rt.{key}.p50", p50[key])
                res.add(f"rt.{key}.p99", percentile(samples, 99))
                res.add(f"rt.{key}.mean", statistics.fmean(samples))
                res.latencies_us.setdefault(key, []).extend(samples)
            for base in keys:
                if base != "lib":
                    res.add(f"ratio.rt.lib/{base}", p50["lib"] / p50[base])
            print(
                f"  round trip rep {rep + 1}/{cfg.reps}: "
                + ", ".join(f"{k} {fmt(v)} us" for k, v in p50.items()),
                flush=True,
            )
    finally:
        for client in opened.values():
            client.close()
