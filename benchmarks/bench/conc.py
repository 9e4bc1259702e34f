"""Concurrency: 1, 4 and 16 threads calling at once, requests per second.

jmapws_sync: every thread calls ``call()`` on one shared session (a small Core/echo, as
in the round trips). HTTP POST: each thread has a keep-alive connection of its own. Each
point runs ``conc_seconds``; per repetition, the ratio of jmapws_sync's requests/s with
the most threads to those with one thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clients import SMALL_ARGS, HttpPost, LibClient
from .config import Config
from .results import Results
from .stats import fmt

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess


def run_threads(fn: Callable[[], Any], threads: int, seconds: float) -> float:
    """Calls per second of ``threads`` threads calling ``fn`` for ``seconds``."""
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads
    ends = [0.0] * threads
    errors: list[BaseException] = []
    start = [0.0]

    def worker(index: int) -> None:
        barrier.wait()
        deadline = start[0] + seconds
        n = 0
        try:
            while time.perf_counter() < deadline:
                fn()
                n += 1
        except BaseException as exc:
            errors.append(exc)
        counts[index] = n
        ends[index] = time.perf_counter()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    start[0] = time.perf_counter()
    barrier.wait()
    for thread in pool:
        thread.join(seconds + 60)
    if errors:
        raise errors[0]
    return sum(counts) / (max(ends) - start[0])


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """1, 4 and 16 threads calling at once: one WsSession vs one HTTP connection per thread."""
    facts = server.facts
    lib = LibClient(facts)
    most = max(cfg.conc_threads)
    https = [HttpPost(facts) for _ in range(most)]
    try:
        run_threads(lambda: lib.echo(SMALL_ARGS), 4, 0.2)  # warm-up
        for rep in range(cfg.reps):
            rps: dict[int, float] = {}
            for threads in cfg.conc_threads:
                rps[threads] = run_threads(lambda: lib.echo(SMALL_ARGS), threads, cfg.conc_seconds)
                res.add(f"conc.lib.{threads}", rps[threads])
                pool = iter(https[:threads])
                local = threading.local()

                def http_call(pool: Any = pool, local: Any = local) -> None:
                    if not hasattr(local, "client"):
                        local.client = next(pool)
                    local.client.echo(SMALL_ARGS)

                res.add(f"conc.http.{threads}", run_threads(http_call, threads, cfg.conc_seconds))
            res.add("ratio.conc.16/1", rps[most] / rps[min(cfg.conc_threads)])
            print(
                f"  concurrency rep {rep + 1}/{cfg.reps}: "
                + ", ".join(f"{t} thr {fmt(v)}/s" for t, v in rps.items()),
                flush=True,
            )
    finally:
        lib.close()
        for client in https:
            client.close()
