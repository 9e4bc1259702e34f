"""Benchmarks of jmapws_sync against its baselines (issue 7).

One command, from the repository root, with the benchmark extras installed
(``pip install -e ".[server]" -r benchmarks/requirements.txt``)::

    python benchmarks/run.py            # full run: ~5 minutes on 2 cores; writes BENCHMARKS.md
    python benchmarks/run.py --quick    # smoke run (~1 minute); prints the table only

The reference server (``benchmarks/serve.py``) runs in a process of its own, on loopback;
this process is the client. Every workload is repeated (``--reps``, 5 by default) and each
figure is the median over the repetitions with its min-max; every ratio is computed per
repetition, from measurements taken side by side in that repetition, and then summarised
the same way. The idle workload runs in a fresh child process so that its CPU time and
resident memory belong to the sessions alone.

Options: ``--output PATH`` (default ``BENCHMARKS.md``; ``-`` writes nothing), ``--plot
PATH`` (default ``benchmarks/latency.png``), ``--reps N``, ``--no-profile``, ``--only
NAMES`` (comma-separated workloads: rt, conc, push, large, idle, connect).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import logging
import math
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import clients
from clients import (
    SMALL_ARGS,
    HttpPost,
    HttpPostNewConnection,
    JmaplibClient,
    LibClient,
    LibNextFrameClient,
    WebsocketsLoop,
    WsClientLoop,
    jmaplib_status,
    request_dict,
)

import jmapws_sync as jws

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1024 * 1024
WORKLOADS = ("rt", "conc", "push", "large", "idle", "connect")


# ----------------------------------------------------------------------------- config


@dataclass
class Config:
    """Sizes of the workloads; ``--quick`` shrinks them."""

    quick: bool = False
    reps: int = 5
    rt_calls: int = 1000
    rt_warmup: int = 100
    conc_threads: tuple[int, ...] = (1, 4, 16)
    conc_seconds: float = 1.5
    push_frames: int = 100_000
    jmaplib_push_frames: int = 20_000
    large_sizes: tuple[int, ...] = (1 * MIB, 16 * MIB)
    idle_sessions: int = 200
    idle_seconds: float = 30.0
    idle_windows: int = 6
    connect_n: int = 40
    profile_calls: int = 3000
    profile_frames: int = 50_000

    @classmethod
    def make(cls, *, quick: bool, reps: int | None) -> Config:
        if not quick:
            return cls(reps=reps or 5)
        return cls(
            quick=True,
            reps=reps or 3,
            rt_calls=300,
            rt_warmup=50,
            conc_seconds=0.5,
            push_frames=20_000,
            jmaplib_push_frames=5_000,
            idle_sessions=50,
            idle_seconds=6.0,
            idle_windows=3,
            connect_n=10,
            profile_calls=1000,
            profile_frames=10_000,
        )


# ----------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Results:
    """Per-repetition samples of every figure, keyed by a dotted name."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    latencies_us: dict[str, list[float]] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def has(self, key: str) -> bool:
        return bool(self.samples.get(key))

    def median(self, key: str) -> float:
        return statistics.median(self.samples[key])

    def spread(self, key: str) -> tuple[float, float]:
        values = self.samples[key]
        return min(values), max(values)


def fmt(value: float) -> str:
    """A number with about three significant digits."""
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


# ----------------------------------------------------------------------------- server


class Server:
    """benchmarks/serve.py in a child process, driven through its stdin."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "serve.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        self.facts: dict[str, Any] = json.loads(line)

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer or answer.startswith("error"):
            raise RuntimeError(f"server command {line!r} failed: {answer!r}")
        return answer

    def flood(self, n: int, account: str) -> None:
        self.command(f"flood {n} {account}")

    def cpu(self) -> float:
        return float(self.command("cpu"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, OSError):
                self.command("quit")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(10)


# ----------------------------------------------------------------------------- workloads


def open_clients(factories: Iterable[Any], facts: dict[str, Any], res: Results) -> dict[str, Any]:
    opened: dict[str, Any] = {}
    for factory in factories:
        try:
            opened[factory.key] = factory(facts)
        except Exception as exc:
            res.notes.append(f"{factory.name}: could not connect ({type(exc).__name__}: {exc})")
    return opened


def round_trip(server: Server, cfg: Config, res: Results, with_jmaplib: bool) -> None:
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


def concurrency(facts: dict[str, Any], cfg: Config, res: Results) -> None:
    """1, 4 and 16 threads calling at once: one WsSession vs one HTTP connection per thread."""
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


class _Count(logging.Handler):
    """Counts the session's "reading paused" warnings (``max_queue`` reached) quietly."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def push_drain(server: Server, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """The server floods StateChange frames; each client drains them: frames per second.

    When the reader outruns the consumer, the session pauses reading at ``max_queue``
    frames and logs a warning: those are counted (per run) instead of printed.
    """
    facts = server.facts
    session_log = logging.getLogger("jmapws_sync.session")
    counter = _Count()
    session_log.addHandler(counter)
    session_log.propagate = False
    try:
        _push_drain(
            server, facts=facts, cfg=cfg, res=res, with_jmaplib=with_jmaplib, counter=counter
        )
    finally:
        session_log.removeHandler(counter)
        session_log.propagate = True


def _push_drain(
    server: Server,
    *,
    facts: dict[str, Any],
    cfg: Config,
    res: Results,
    with_jmaplib: bool,
    counter: _Count,
) -> None:
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
                count = client.drain(n, lambda n=n: server.flood(n, "a-flood"))
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


def big_arguments(size: int) -> dict[str, Any]:
    """Core/echo arguments whose JSON is about ``size`` bytes: a list of note-like objects."""
    item = {
        "id": "n0000000",
        "title": "Quarterly planning notes, second draft",
        "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3,
        "keywords": {"$seen": True, "work": True},
        "size": 1234,
        "receivedAt": "2025-11-25T20:00:00Z",
    }
    each = len(json.dumps(item)) + 2
    count = max(1, (size - 200) // each)
    return {"notes": [{**item, "id": f"n{i:07d}"} for i in range(count)]}


def large_answers(facts: dict[str, Any], cfg: Config, res: Results) -> None:
    """1 MiB and 16 MiB Responses: decode time, whole-call time, and peak memory."""
    lib = LibClient(facts, max_message_size=256 * MIB)
    bare = WsClientLoop(facts)
    try:
        for size in cfg.large_sizes:
            label = f"{size // MIB}MiB"
            arguments = big_arguments(size)
            bare.ws.send(json.dumps(request_dict(arguments, "capture")))
            text = bare.ws.recv()
            res.extra[f"large.{label}.bytes"] = len(text.encode())
            for _rep in range(cfg.reps):
                gc.collect()
                t_decode = clients.timed(lambda text=text: jws.decode(text))
                gc.collect()
                t_loads = clients.timed(lambda text=text: json.loads(text))
                gc.collect()
                t_lib = clients.timed(lambda a=arguments: lib.echo(a))
                gc.collect()
                t_bare = clients.timed(lambda a=arguments: bare.echo(a))
                res.add(f"large.{label}.decode_ms", t_decode * 1000)
                res.add(f"large.{label}.loads_ms", t_loads * 1000)
                res.add(f"large.{label}.lib_ms", t_lib * 1000)
                res.add(f"large.{label}.wsclient_ms", t_bare * 1000)
                res.add(f"ratio.large.{label}.decode/loads", t_decode / t_loads)
                res.add(f"ratio.large.{label}.lib/wsclient", t_lib / t_bare)
            # Peak memory: tracemalloc (every thread's Python allocations), in separate runs
            # so that its overhead stays out of the timings above. Decoding alone first
            # (what the answer costs to hold), then whole round trips (sending included).
            for key, parse in (("decode", jws.decode), ("loads", json.loads)):
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                parsed = parse(text)
                peak = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
                del parsed
                res.add(f"large.{label}.{key}_peak_mib", peak / MIB)
            for key, client in (("lib", lib), ("wsclient", bare)):
                for _ in range(min(cfg.reps, 3)):
                    gc.collect()
                    tracemalloc.start()
                    base = tracemalloc.get_traced_memory()[0]
                    answer = client.echo(arguments)
                    peak = tracemalloc.get_traced_memory()[1] - base
                    tracemalloc.stop()
                    del answer
                    res.add(f"large.{label}.{key}_peak_mib", peak / MIB)
            del arguments, text
            gc.collect()
            print(
                f"  large {label}: decode {fmt(res.median(f'large.{label}.decode_ms'))} ms"
                f" (json.loads {fmt(res.median(f'large.{label}.loads_ms'))} ms), call"
                f" {fmt(res.median(f'large.{label}.lib_ms'))} ms vs bare"
                f" {fmt(res.median(f'large.{label}.wsclient_ms'))} ms",
                flush=True,
            )
    finally:
        lib.close()
        bare.close()


def rss_kib() -> float:
    """This process's resident set size in KiB (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


def cpu_seconds() -> float:
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
    for i in range(n):
        sessions.append(jws.WsSession.open(spec["ws_url"], auth=auth, proxy=""))
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


def idle(server: Server, cfg: Config, res: Results) -> None:
    """200 open sessions doing nothing for 30 s, in a fresh child process."""
    spec = {
        "ws_url": server.facts["ws_url"],
        "n": cfg.idle_sessions,
        "seconds": cfg.idle_seconds,
        "windows": cfg.idle_windows,
    }
    server_cpu0 = server.cpu()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--idle-worker", json.dumps(spec)],
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


def connect_close(facts: dict[str, Any], cfg: Config, res: Results) -> None:
    """connect() by discovery and close(): latency; a bare handshake + close as the floor."""
    import websocket

    auth = jws.BasicAuth("alice", "secret")
    header = [f"Authorization: {clients.basic_header('alice')}"]
    for _rep in range(cfg.reps):
        opens, closes, bare_opens, bare_closes = [], [], [], []
        for _ in range(cfg.connect_n):
            t0 = time.perf_counter()
            ws = jws.connect(facts["session_url"], auth=auth, proxy="")
            t1 = time.perf_counter()
            ws.close()
            t2 = time.perf_counter()
            opens.append((t1 - t0) * 1000)
            closes.append((t2 - t1) * 1000)
            t0 = time.perf_counter()
            raw = websocket.create_connection(
                facts["ws_url"], header=header, subprotocols=["jmap"], timeout=10
            )
            t1 = time.perf_counter()
            raw.close()
            t2 = time.perf_counter()
            bare_opens.append((t1 - t0) * 1000)
            bare_closes.append((t2 - t1) * 1000)
        for name, values in (
            ("connect", opens),
            ("close", closes),
            ("bare_open", bare_opens),
            ("bare_close", bare_closes),
        ):
            res.add(f"conn.{name}.p50", percentile(values, 50))
            res.add(f"conn.{name}.p99", percentile(values, 99))
        res.add(
            "ratio.conn.connect/bare_open",
            percentile(opens, 50) / percentile(bare_opens, 50),
        )
    print(
        f"  connect p50 {fmt(res.median('conn.connect.p50'))} ms,"
        f" close p99 {fmt(res.median('conn.close.p99'))} ms",
        flush=True,
    )


# ----------------------------------------------------------------------------- profiling


def _profile_table(prof: cProfile.Profile, top: int = 12) -> str:
    """The ``top`` functions by own time, as a Markdown table."""
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    total = 0.0
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
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


def profile_hot_path(server: Server, cfg: Config, res: Results) -> None:
    """cProfile both threads of the client: the caller/consumer and the reader thread."""
    facts = server.facts
    reader_profiles: list[cProfile.Profile] = []
    original = jws.WsSession._run

    def profiled_run(self: jws.WsSession) -> None:
        prof = cProfile.Profile()
        reader_profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    jws.WsSession._run = profiled_run  # type: ignore[method-assign]
    try:
        lib = LibClient(facts)
        caller = cProfile.Profile()
        caller.enable()
        for _ in range(cfg.profile_calls):
            lib.echo(SMALL_ARGS)
        caller.disable()
        lib.close()
        res.profiles["call() - calling thread"] = _profile_table(caller)
        res.profiles["call() - reader thread"] = _profile_table(reader_profiles[-1])

        lib = LibClient(facts, user="flood")
        consumer = cProfile.Profile()
        consumer.enable()
        lib.drain(cfg.profile_frames, lambda: server.flood(cfg.profile_frames, "a-flood"))
        consumer.disable()
        lib.close()
        res.profiles["push drain - consumer thread (changes())"] = _profile_table(consumer)
        res.profiles["push drain - reader thread"] = _profile_table(reader_profiles[-1])
    finally:
        jws.WsSession._run = original  # type: ignore[method-assign]
    print("  profiles taken", flush=True)


# ----------------------------------------------------------------------------- machine


def machine_facts() -> dict[str, str]:
    facts = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "nproc": str(len(os.sched_getaffinity(0))),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ]
        facts["cpu"] = models[0] if models else "unknown"
    except OSError:
        facts["cpu"] = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        facts["memory"] = "unknown"
    return facts


def package_versions() -> dict[str, str]:
    names = [
        "jmapws-sync",
        "websocket-client",
        "websockets",
        "aiohttp",
        "cattrs",
        "attrs",
        "orjson",
        "jmaplib",
        "httpx-ws",
        "matplotlib",
    ]
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# ----------------------------------------------------------------------------- report


@dataclass
class Target:
    name: str
    key: str
    limit: float
    at_most: bool
    unit: str = "x"

    def met(self, res: Results) -> bool | None:
        if not res.has(self.key):
            return None
        value = res.median(self.key)
        return value <= self.limit if self.at_most else value >= self.limit


TARGETS = [
    Target("call() p50 <= 1.25 x bare websocket-client loop", "ratio.rt.lib/wsclient", 1.25, True),
    Target("call() p50 <= 0.33 x HTTP POST", "ratio.rt.lib/http", 0.33, True),
    Target(
        "push drain (changes()) >= 0.75 x bare loop frames/s",
        "ratio.push.lib/wsclient",
        0.75,
        False,
    ),
    Target("16 threads >= 1.5 x one thread (requests/s)", "ratio.conc.16/1", 1.5, False),
    Target(
        "idle: <= 0.5 % of one core, all sessions together", "idle.cpu_total_pct", 0.5, True, "%"
    ),
    Target("idle: <= 100 KiB resident per session", "idle.rss_per_session_kib", 100.0, True, "KiB"),
    Target("close() p99 <= 50 ms", "conn.close.p99", 50.0, True, "ms"),
]

NAMES = {
    "lib": "jmapws_sync `call()`",
    "lib_next": "jmapws_sync `next_frame()`",
    "wsclient": "websocket-client loop (floor)",
    "websockets": "websockets.sync loop",
    "http": "HTTP POST, keep-alive",
    "http_new": "HTTP POST, new connection each (context)",
    "jmaplib": "jmaplib WebSocketClient",
}


def cell(res: Results, key: str, scale: float = 1.0) -> tuple[str, str]:
    if not res.has(key):
        return "n/a", ""
    low, high = res.spread(key)
    return fmt(res.median(key) * scale), f"{fmt(low * scale)} - {fmt(high * scale)}"


def rows(res: Results, cfg: Config) -> list[tuple[str, str, str, str, str]]:
    """(workload, client/metric, median, min - max, unit) for every figure measured."""
    out: list[tuple[str, str, str, str, str]] = []
    for key in ("lib", "wsclient", "websockets", "http", "http_new", "jmaplib"):
        for stat in ("p50", "p99"):
            if res.has(f"rt.{key}.{stat}"):
                out.append(
                    ("round trip", f"{NAMES[key]} {stat}", *cell(res, f"rt.{key}.{stat}"), "us")
                )
    for key in ("lib", "wsclient", "websockets", "http", "http_new", "jmaplib"):
        if res.has(f"rt.{key}.server_us"):
            out.append(
                (
                    "round trip",
                    f"  server CPU per call, {NAMES[key]}",
                    *cell(res, f"rt.{key}.server_us"),
                    "us",
                )
            )
    for base in ("wsclient", "websockets", "http", "http_new", "jmaplib"):
        if res.has(f"ratio.rt.lib/{base}"):
            out.append(
                (
                    "round trip",
                    f"ratio p50 call() / {NAMES[base]}",
                    *cell(res, f"ratio.rt.lib/{base}"),
                    "x",
                )
            )
    for threads in cfg.conc_threads:
        if res.has(f"conc.lib.{threads}"):
            out.append(
                (
                    "concurrency",
                    f"jmapws_sync, {threads} threads, one session",
                    *cell(res, f"conc.lib.{threads}"),
                    "req/s",
                )
            )
    for threads in cfg.conc_threads:
        if res.has(f"conc.http.{threads}"):
            out.append(
                (
                    "concurrency",
                    f"HTTP POST, {threads} threads, a connection each",
                    *cell(res, f"conc.http.{threads}"),
                    "req/s",
                )
            )
    if res.has("ratio.conc.16/1"):
        out.append(
            (
                "concurrency",
                "ratio 16 threads / 1 thread (jmapws_sync)",
                *cell(res, "ratio.conc.16/1"),
                "x",
            )
        )
    push_names = {**NAMES, "lib": "jmapws_sync `changes()`"}
    for key in ("lib", "lib_next", "wsclient", "websockets", "jmaplib"):
        if res.has(f"push.{key}.fps"):
            n = cfg.jmaplib_push_frames if key == "jmaplib" else cfg.push_frames
            out.append(
                (
                    "push drain",
                    f"{push_names[key]} ({n:,} frames)",
                    *cell(res, f"push.{key}.fps"),
                    "frames/s",
                )
            )
            if res.has(f"push.{key}.pauses"):
                out.append(
                    (
                        "push drain",
                        f"  reader paused at max_queue, {push_names[key]}",
                        *cell(res, f"push.{key}.pauses"),
                        "times",
                    )
                )
            out.append(
                (
                    "push drain",
                    f"  server process busy during {push_names[key]}",
                    *cell(res, f"push.{key}.server_busy"),
                    "% core",
                )
            )
    for key, label in (("lib", "changes()"), ("lib_next", "next_frame()")):
        if res.has(f"ratio.push.{key}/wsclient"):
            out.append(
                (
                    "push drain",
                    f"ratio {label} / websocket-client loop",
                    *cell(res, f"ratio.push.{key}/wsclient"),
                    "x",
                )
            )
    if res.has("ratio.push.lib/websockets"):
        out.append(
            (
                "push drain",
                "ratio changes() / websockets.sync loop",
                *cell(res, "ratio.push.lib/websockets"),
                "x",
            )
        )
    for size in cfg.large_sizes:
        label = f"{size // MIB}MiB"
        nbytes = res.extra.get(f"large.{label}.bytes")
        if nbytes is None:
            continue
        wl = f"large answer {nbytes / MIB:.1f} MiB"
        out += [
            (wl, "`jws.decode(text)`", *cell(res, f"large.{label}.decode_ms"), "ms"),
            (wl, "`json.loads(text)` (floor)", *cell(res, f"large.{label}.loads_ms"), "ms"),
            (wl, "ratio decode / json.loads", *cell(res, f"ratio.large.{label}.decode/loads"), "x"),
            (
                wl,
                "whole call(): encode, send, server, recv, decode",
                *cell(res, f"large.{label}.lib_ms"),
                "ms",
            ),
            (
                wl,
                "whole bare websocket-client round trip",
                *cell(res, f"large.{label}.wsclient_ms"),
                "ms",
            ),
            (wl, "ratio call() / bare", *cell(res, f"ratio.large.{label}.lib/wsclient"), "x"),
            (
                wl,
                "peak traced memory, `jws.decode(text)`",
                *cell(res, f"large.{label}.decode_peak_mib"),
                "MiB",
            ),
            (
                wl,
                "peak traced memory, `json.loads(text)`",
                *cell(res, f"large.{label}.loads_peak_mib"),
                "MiB",
            ),
            (
                wl,
                "peak traced memory, whole call()",
                *cell(res, f"large.{label}.lib_peak_mib"),
                "MiB",
            ),
            (
                wl,
                "peak traced memory, whole bare round trip",
                *cell(res, f"large.{label}.wsclient_peak_mib"),
                "MiB",
            ),
        ]
    if res.has("idle.cpu_total_pct"):
        n = cfg.idle_sessions
        out += [
            (
                "idle",
                f"{n} sessions, {fmt(cfg.idle_seconds)} s: client CPU, whole period",
                *cell(res, "idle.cpu_total_pct"),
                "% core",
            ),
            (
                "idle",
                f"  per {fmt(cfg.idle_seconds / cfg.idle_windows)} s window",
                *cell(res, "idle.cpu_pct"),
                "% core",
            ),
            (
                "idle",
                "resident memory per session (all-in)",
                *cell(res, "idle.rss_per_session_kib"),
                "KiB",
            ),
            (
                "idle",
                "resident memory per session (marginal, after the 10th)",
                *cell(res, "idle.rss_marginal_kib"),
                "KiB",
            ),
        ]
    for name, label in (
        ("connect", "jmapws_sync `connect()` by discovery"),
        ("close", "jmapws_sync `close()`"),
        ("bare_open", "bare websocket-client handshake (no discovery)"),
        ("bare_close", "bare websocket-client close"),
    ):
        for stat in ("p50", "p99"):
            if res.has(f"conn.{name}.{stat}"):
                out.append(
                    ("connect / close", f"{label} {stat}", *cell(res, f"conn.{name}.{stat}"), "ms")
                )
    return out


def print_table(res: Results, cfg: Config) -> None:
    table = rows(res, cfg)
    widths = [max(len(r[i]) for r in table) for i in range(5)] if table else [0] * 5
    header = ("workload", "figure", "median", "min - max", "unit")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print()
    for row in (header, *table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print()
    for target in TARGETS:
        met = target.met(res)
        value = f"{fmt(res.median(target.key))} {target.unit}" if res.has(target.key) else "n/a"
        status = "not measured" if met is None else ("met" if met else "NOT MET")
        print(f"  [{status:>12}] {target.name}: {value}")
    for note in res.notes:
        print(f"  note: {note}")


def plot(res: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        res.notes.append("matplotlib is not installed: no plot")
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    styles = {
        "lib": ("#d62728", 2.4),
        "wsclient": ("#1f77b4", 1.5),
        "websockets": ("#2ca02c", 1.5),
        "http": ("#7f7f7f", 1.5),
        "http_new": ("#bcbd22", 1.2),
        "jmaplib": ("#9467bd", 1.5),
    }
    for key, (color, width) in styles.items():
        values = sorted(res.latencies_us.get(key, []))
        if not values:
            continue
        n = len(values)
        ys = [(i + 1) / n * 100 for i in range(n)]
        p50 = percentile(values, 50)
        ax.plot(
            values,
            ys,
            color=color,
            linewidth=width,
            label=f"{NAMES[key].replace('`', '')}: p50 {fmt(p50)} us",
        )
    ax.set_xscale("log")
    pooled = [v for key in styles for v in res.latencies_us.get(key, [])]
    tails = [percentile(res.latencies_us[key], 99.9) for key in styles if res.latencies_us.get(key)]
    if pooled:
        ax.set_xlim(min(pooled) * 0.9, max(tails) * 1.2)  # rare outliers beyond p99.9 cut off
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda value, _pos: f"{value:g}" if f"{value:g}"[0] in "25" else "")
    )
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("round-trip latency of a small Core/echo (microseconds, log scale)")
    ax.set_ylabel("calls at or below (%)")
    ax.set_ylim(0, 100.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.axhline(50, color="black", linewidth=0.6, alpha=0.5)
    ax.axhline(99, color="black", linewidth=0.6, alpha=0.5, linestyle="--")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Sequential round trips on loopback: jmapws_sync call() vs baselines")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def markdown(res: Results, cfg: Config, meta: dict[str, Any], plot_path: Path | None) -> str:
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add("Produced by the command below; re-run it to refresh every figure, table and the plot")
    add("(the file is written by `benchmarks/run.py`: edit `benchmarks/FINDINGS.md` for prose).")
    add("")
    add("```sh")
    add('pip install -e ".[server]" -r benchmarks/requirements.txt')
    add(meta["command"])
    add("```")
    add("")
    add("## Machine and run")
    add("")
    machine = meta["machine"]
    add(
        f"- Python: {machine['python']} ({sys.executable.split('/bin/')[0]} venv); "
        f"OS: {machine['os']}"
    )
    add(f"- CPU: {machine['cpu']}, nproc = {machine['nproc']}; memory: {machine['memory']}")
    add(
        f"- load average (1 min) before / after the run: {meta['load_before']:.2f} / "
        f"{meta['load_after']:.2f}; run took {meta['elapsed']:.0f} s; {meta['date']}"
    )
    add("- packages: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    add(f"- jmaplib sync WebSocket client: {meta['jmaplib']}")
    add("- server: `benchmarks/serve.py` (the ReferenceServer, aiohttp, one event loop) in its own")
    add("  process on 127.0.0.1; client: this process. Not pinned to cores: the 2 processes share")
    add(
        "  the 2 cores. Each figure is the median over "
        f"{cfg.reps} repetitions, with min - max; each ratio is"
    )
    add("  taken within a repetition (clients interleaved, order rotated) and summarised the same.")
    add("")
    add("## Targets")
    add("")
    add("| target | measured (median) | min - max | status |")
    add("|---|---:|---:|---|")
    for target in TARGETS:
        met = target.met(res)
        if met is None:
            add(f"| {target.name} | n/a | | not measured |")
            continue
        low, high = res.spread(target.key)
        status = "**met**" if met else "**not met**"
        add(
            f"| {target.name} | {fmt(res.median(target.key))} {target.unit} | "
            f"{fmt(low)} - {fmt(high)} | {status} |"
        )
    add("")
    add("## Every workload")
    add("")
    add("| workload | figure | median | min - max | unit |")
    add("|---|---|---:|---:|---|")
    for row in rows(res, cfg):
        add("| " + " | ".join(row) + " |")
    add("")
    add(
        "Workload sizes: round trip "
        f"{cfg.rt_calls} calls per client per repetition (after {cfg.rt_warmup} warm-up calls);"
        f" concurrency {fmt(cfg.conc_seconds)} s per point; push {cfg.push_frames:,} frames"
        f" (jmaplib {cfg.jmaplib_push_frames:,}); idle {cfg.idle_sessions} sessions for"
        f" {fmt(cfg.idle_seconds)} s in a fresh process; connect / close {cfg.connect_n} per"
        " repetition."
    )
    idle_out = res.extra.get("idle")
    if idle_out:
        add(
            f"Idle details: {idle_out['threads']} threads in the client process; RSS "
            f"{fmt(idle_out['rss_before_kib'] / 1024)} MiB before the sessions, "
            f"{fmt(idle_out['rss_after_kib'] / 1024)} MiB with them; opening them took "
            f"{fmt(idle_out['open_s'])} s; closing them: p50 {fmt(idle_out['close_p50_ms'])} ms,"
            f" max {fmt(idle_out['close_max_ms'])} ms; server process CPU over the idle run "
            f"(opening included): {fmt(res.extra.get('idle.server_cpu_s', float('nan')))} s."
        )
    add("")
    if res.notes:
        add("Notes from the run:")
        add("")
        for note in res.notes:
            add(f"- {note}")
        add("")
    if plot_path is not None:
        rel = plot_path.relative_to(ROOT) if plot_path.is_relative_to(ROOT) else plot_path
        add("## Latency distribution")
        add("")
        add(f"![call() latency vs baselines]({rel})")
        add("")
        add(
            "Cumulative distribution of every sequential round trip of the run (all repetitions"
            " pooled): the further left, the faster; the dashed line is p99; the x axis stops"
            " a little past the slowest client's p99.9."
        )
        add("")
    findings = HERE / "FINDINGS.md"
    if findings.exists():
        add(findings.read_text().rstrip())
        add("")
    if res.profiles:
        add("## Profiles of this run")
        add("")
        add(
            "cProfile of the client process (`profile_hot_path()` in `benchmarks/run.py`): the"
            " calling thread and the reader thread are profiled separately; own time is"
            " inflated by cProfile, compare shares, not absolute values."
        )
        add("")
        for title, table in res.profiles.items():
            add(f"### {title}")
            add("")
            add(table)
            add("")
    add("## Closing note")
    add("")
    add(closing_note(res))
    add("")
    return "\n".join(lines)


def closing_note(res: Results) -> str:
    parts = []
    for target in TARGETS:
        met = target.met(res)
        if met is None:
            continue
        parts.append(
            f"{target.name}: {fmt(res.median(target.key))} {target.unit}"
            f" ({'met' if met else 'not met'})"
        )
    return "In this run: " + "; ".join(parts) + "."


# ----------------------------------------------------------------------------- main


def render(saved: Path, args: argparse.Namespace) -> int:
    """Rewrite the Markdown report (and plot) from a results file of an earlier run."""
    dump = json.loads(saved.read_text())
    cfg_fields = dump["config"]
    cfg_fields["conc_threads"] = tuple(cfg_fields["conc_threads"])
    cfg_fields["large_sizes"] = tuple(cfg_fields["large_sizes"])
    cfg = Config(**cfg_fields)
    res = Results(**dump["results"])
    plot_path = Path(dump["plot"]) if dump["plot"] else None
    if plot_path is not None and res.latencies_us:
        plot(res, plot_path)
    output = args.output or "BENCHMARKS.md"
    path = Path(output) if Path(output).is_absolute() else ROOT / output
    path.write_text(markdown(res, cfg, dump["meta"], plot_path))
    print(f"rewrote {path} from {saved}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, prints only")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per workload")
    parser.add_argument("--output", default=None, help="Markdown report ('-' for none)")
    parser.add_argument("--plot", default=str(HERE / "latency.png"), help="PNG path")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run")
    parser.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="rewrite the report from a saved results file (no measuring)",
    )
    parser.add_argument("--idle-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.render is not None:
        return render(Path(args.render), args)

    if args.idle_worker is not None:
        print(json.dumps(idle_worker(json.loads(args.idle_worker))))
        return 0

    cfg = Config.make(quick=args.quick, reps=args.reps)
    only = set(args.only.split(","))
    output = args.output if args.output is not None else ("-" if args.quick else "BENCHMARKS.md")
    command = "python benchmarks/run.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    load_before = os.getloadavg()[0]
    print(
        f"load average {load_before:.2f}; {'quick' if cfg.quick else 'full'} run, "
        f"{cfg.reps} repetitions",
        flush=True,
    )
    if load_before > 0.7:
        print("  warning: the machine is busy; figures will be noisy", flush=True)
    started = time.perf_counter()
    res = Results()
    jmaplib = jmaplib_status()
    with_jmaplib = jmaplib.startswith("jmaplib")
    if not with_jmaplib:
        res.notes.append(f"jmaplib's sync WebSocket client: {jmaplib}")
    server = Server()
    try:
        facts = server.facts
        if "rt" in only:
            round_trip(server, cfg, res, with_jmaplib)
        if "conc" in only:
            concurrency(facts, cfg, res)
        if "push" in only:
            push_drain(server, cfg, res, with_jmaplib)
        if "large" in only:
            large_answers(facts, cfg, res)
        if "connect" in only:
            connect_close(facts, cfg, res)
        if "idle" in only:
            idle(server, cfg, res)
        if not args.no_profile:
            profile_hot_path(server, cfg, res)
    finally:
        server.stop()
    elapsed = time.perf_counter() - started
    print_table(res, cfg)
    plot_path: Path | None = None
    if output != "-" and res.latencies_us:
        plot_path = Path(args.plot).resolve()
        if not plot(res, plot_path):
            plot_path = None
    if output != "-":
        meta = {
            "command": command,
            "machine": machine_facts(),
            "versions": package_versions(),
            "jmaplib": jmaplib,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "elapsed": elapsed,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        path = Path(output)
        if not path.is_absolute():
            path = ROOT / path
        path.write_text(markdown(res, cfg, meta, plot_path))
        saved = path.with_suffix(".json") if path.suffix == ".md" else Path(f"{path}.json")
        if path == ROOT / "BENCHMARKS.md":
            saved = HERE / "results.json"
        dump = {
            "config": asdict(cfg),
            "meta": meta,
            "results": {
                **asdict(res),
                "latencies_us": {
                    k: [round(v, 1) for v in vs] for k, vs in res.latencies_us.items()
                },
            },
            "plot": str(plot_path) if plot_path else None,
        }
        saved.write_text(json.dumps(dump))
        print(f"wrote {path}, {saved}" + (f" and {plot_path}" if plot_path else ""))
    print(f"took {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
