"""Load and concurrency: 32 threads x 500 call() against a server that delays and reorders.

The server (a :class:`RawServer` handler) hands each Request to a pool of workers that wait
a random 0-2 ms (seeded) before answering, so answers leave in another order than requests
came in. Every call must get its own answer (checked by the echoed content); with a
``close()`` at a random moment, every call ends with its answer or a documented error, and
nothing hangs. Afterwards no thread and no file descriptor is left, counted from the process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import jmapws_sync as jws

from .support.faultservers import live_threads, open_fds
from .support.rawws import CLOSE, Peer, RawServer
from .support.threads import wait_no_readers

THREADS = 32
CALLS = 500
WORKERS = 8
MAX_DELAY = 0.002  # seconds a server worker waits before answering
SEED = 8887


class ShufflingServer:
    """A handler that answers Requests from a pool of workers with random small delays.

    ``received`` and ``answered`` record request ids in the order they came in and went out.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.received: list[str] = []
        self.answered: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, peer: Peer) -> None:
        jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        workers = [
            threading.Thread(target=self._work, args=(peer, jobs, n), name=f"load-server-{n}")
            for n in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        try:
            for opcode, data in peer.messages():
                if opcode == CLOSE:
                    peer.send_frame(CLOSE, data[:2])
                    return
                msg = json.loads(data)
                with self.lock:
                    self.received.append(msg["id"])
                jobs.put(msg)
        finally:
            for _ in workers:
                jobs.put(None)
            for worker in workers:
                worker.join(10)

    def _work(self, peer: Peer, jobs: queue.Queue[dict[str, Any] | None], n: int) -> None:
        rng = random.Random(self.seed * 100 + n)
        broken = False
        while (msg := jobs.get()) is not None:
            if broken:
                continue
            # A bounded delay inside the server: the fault being simulated, not a sync.
            time.sleep(rng.uniform(0, MAX_DELAY))
            answer = {
                "@type": "Response",
                "methodResponses": msg["methodCalls"],
                "sessionState": "s1",
                "requestId": msg["id"],
            }
            try:
                peer.send_json(answer)
            except OSError:
                broken = True  # the client went away; keep draining the jobs
                continue
            with self.lock:
                self.answered.append(msg["id"])


@contextlib.contextmanager
def load_server(seed: int) -> Iterator[tuple[RawServer, ShufflingServer]]:
    """A RawServer running a ShufflingServer; on exit every peer's file is closed too."""
    handler = ShufflingServer(seed)
    server = RawServer(handler)
    with server:
        yield server, handler
    while not server.peers.empty():  # rawws keeps each peer's file (and so its fd) open
        server.peers.get_nowait()._rfile.close()


def run_callers(
    ws: jws.WsSession, *, on_done: Callable[[int], None] = lambda n: None
) -> list[list[tuple[str, Any]]]:
    """THREADS threads each make CALLS call()s; per thread, (kind, detail) for each call."""
    outcomes: list[list[tuple[str, Any]]] = [[] for _ in range(THREADS)]
    start = threading.Barrier(THREADS)
    count = [0]
    count_lock = threading.Lock()

    def caller(t: int) -> None:
        rng = random.Random(SEED + t)
        start.wait(10)
        for i in range(CALLS):
            args = {"t": t, "i": i, "nonce": rng.random()}
            request = jws.Request(
                using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", args, "c0")]
            )
            try:
                reply = ws.call(request, timeout=20)
            except (jws.SessionClosed, jws.TransportError) as exc:
                outcomes[t].append(("closed", exc))
            except BaseException as exc:
                outcomes[t].append(("undocumented", exc))
            else:
                ok = reply.get("c0") == args
                outcomes[t].append(("answer" if ok else "wrong", reply))
            with count_lock:
                count[0] += 1
                done = count[0]
            on_done(done)

    threads = [
        threading.Thread(target=caller, args=(t,), name=f"caller-{t}") for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(45)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    return outcomes


def settle() -> None:
    """Close files that only garbage collection would close (earlier tests' leftovers)."""
    gc.collect()


def test_32_threads_x_500_calls_all_answers_correct() -> None:
    """16,000 concurrent calls, answered late and out of order: each gets its own answer."""
    settle()
    threads_before, fds_before = live_threads(), open_fds()
    start = time.monotonic()
    with load_server(SEED) as (server, handler):
        ws = jws.WsSession.open(server.url, timeout=5)
        with ws:
            outcomes = run_callers(ws)
            assert ws.late_answers == 0
            assert ws.pending_calls == 0
    elapsed = time.monotonic() - start
    kinds = [kind for per_thread in outcomes for kind, _ in per_thread]
    assert kinds.count("answer") == THREADS * CALLS, {k: kinds.count(k) for k in set(kinds)}
    assert handler.answered != handler.received  # the server really reordered
    assert sorted(handler.answered) == sorted(handler.received)
    settle()
    assert live_threads() <= threads_before
    assert open_fds() <= fds_before
    print(
        f"\n{THREADS * CALLS} calls in {elapsed:.1f} s; fds {fds_before}->{open_fds()},"
        f" threads {len(threads_before)}->{len(live_threads())}"
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_close_at_a_random_moment_under_load(seed: int) -> None:
    """close() from another thread mid-load: every call ends with its answer or a documented
    error, nothing hangs, and no thread or file descriptor is left."""
    rng = random.Random(seed)
    close_after = rng.randrange(1, THREADS * CALLS)
    reached = threading.Event()
    settle()
    threads_before, fds_before = live_threads(), open_fds()
    start = time.monotonic()
    with load_server(seed) as (server, _handler):
        ws = jws.WsSession.open(server.url, timeout=5, close_timeout=2)

        def closer() -> None:
            if reached.wait(45):
                ws.close()

        closing = threading.Thread(target=closer, name="closer")
        closing.start()

        def on_done(done: int) -> None:
            if done >= close_after:
                reached.set()

        outcomes = run_callers(ws, on_done=on_done)
        reached.set()
        closing.join(10)
        assert not closing.is_alive(), "close() hung"
        ws.close()
        wait_no_readers()
        assert ws.pending_calls == 0
    elapsed = time.monotonic() - start
    flat = [kind for per_thread in outcomes for kind, _ in per_thread]
    counts = {kind: flat.count(kind) for kind in set(flat)}
    assert set(counts) <= {"answer", "closed"}, counts
    assert len(flat) == THREADS * CALLS
    assert counts.get("answer", 0) >= close_after  # every call finished before close() was answered
    for per_thread in outcomes:
        kinds = [kind for kind, _ in per_thread]
        if "closed" in kinds:  # once closed, closed for good
            assert set(kinds[kinds.index("closed") :]) == {"closed"}
    settle()
    assert live_threads() <= threads_before
    assert open_fds() <= fds_before
    print(
        f"\nseed {seed}: close after {close_after}: {counts} in {elapsed:.1f} s;"
        f" fds {fds_before}->{open_fds()}, threads {len(threads_before)}->{len(live_threads())}"
    )
