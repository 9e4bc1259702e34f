"""Idle: ``idle_sessions`` open sessions doing nothing for ``idle_seconds``, CPU and memory.

The sessions live in a fresh child process (``run.py --idle-worker SPEC``, which calls
:func:`idle_worker`), so that its CPU time and resident memory belong to them alone. The
worker measures its RSS before the sessions, after the 10th and after all of them (after
a second's rest; with ``"warm"`` each session makes one call first), then its CPU share
over ``idle_windows`` windows and over the whole period, then how long each ``close()``
takes; it prints the whole as one JSON line. The parent records the CPU share (% of one
core), the RSS per session (all-in, and marginal after the 10th) and the server process's
CPU over the run.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import jmapws_sync as jws

from .config import RUN_PY, Config
from .jmapdata import email_get
from .results import Results
from .stats import fmt, percentile

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess


def rss_kib() -> float:
    """This process's resident set size in KiB (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


def cpu_seconds() -> float:
    """This process's CPU seconds so far (user + system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def idle_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: open ``n`` sessions, sit idle, report CPU, RSS and close times."""
    auth = jws.BasicAuth("idle", "secret")
    n = spec["n"]
    gc.collect()
    rss0 = rss_kib()
    sessions = []
    t0 = time.perf_counter()
    rss10 = rss0
    compression = spec.get("compression", "deflate")
    # "warm": one call each first, of an Email/get-like answer larger than any window
    # (about 45 KB each way), so that a compressed session's zlib streams exist (they are
    # made at first use) and every page of their windows has been touched.
    warm = jws.Request(
        using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", email_get(30), "c0")]
    )
    for i in range(n):
        session = jws.WsSession.open(spec["ws_url"], auth=auth, proxy="", compression=compression)
        if spec.get("warm"):
            session.call(warm, timeout=30)
        sessions.append(session)
        if i == 9:
            gc.collect()
            rss10 = rss_kib()
    open_s = time.perf_counter() - t0
    gc.collect()
    time.sleep(1.0)
    rss1 = rss_kib()
    threads = threading.active_count()
    window = spec["seconds"] / spec["windows"]
    windows = []
    total0 = cpu_seconds()
    for _ in range(spec["windows"]):
        c0, w0 = cpu_seconds(), time.perf_counter()
        time.sleep(window)
        windows.append(100.0 * (cpu_seconds() - c0) / (time.perf_counter() - w0))
    total_cpu = cpu_seconds() - total0
    rss2 = rss_kib()
    closes = []
    for session in sessions:
        c0 = time.perf_counter()
        session.close()
        closes.append((time.perf_counter() - c0) * 1000)
    return {
        "n": n,
        "open_s": open_s,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "rss_end_kib": rss2,
        "rss_per_session_kib": (rss1 - rss0) / n,
        "rss_marginal_kib": (rss1 - rss10) / max(n - 10, 1),
        "threads": threads,
        "cpu_windows_pct": windows,
        "cpu_total_s": total_cpu,
        "seconds": spec["seconds"],
        "close_p50_ms": percentile(closes, 50),
        "close_max_ms": max(closes),
    }


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """200 open sessions doing nothing for 30 s, in a fresh child process."""
    spec = {
        "ws_url": server.facts["ws_url"],
        "n": cfg.idle_sessions,
        "seconds": cfg.idle_seconds,
        "windows": cfg.idle_windows,
    }
    server_cpu0 = server.cpu()
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--idle-worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=cfg.idle_seconds + 180,
        check=False,
    )
    server_cpu = server.cpu() - server_cpu0
    if proc.returncode != 0:
        res.notes.append(f"idle worker failed: {proc.stderr.strip()[-400:]}")
        return
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for pct in out["cpu_windows_pct"]:
        res.add("idle.cpu_pct", pct)
    res.add("idle.cpu_total_pct", 100.0 * out["cpu_total_s"] / out["seconds"])
    res.add("idle.rss_per_session_kib", out["rss_per_session_kib"])
    res.add("idle.rss_marginal_kib", out["rss_marginal_kib"])
    res.extra["idle"] = out
    res.extra["idle.server_cpu_s"] = server_cpu
    print(
        f"  idle: {out['n']} sessions, {fmt(out['cpu_total_s'])} CPU s in"
        f" {fmt(out['seconds'])} s, {fmt(out['rss_per_session_kib'])} KiB/session",
        flush=True,
    )
