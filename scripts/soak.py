"""Soak run: calls and pushes through forced reconnects, with memory and threads sampled.

Outside the test suite; run it on demand::

    python scripts/soak.py              # 10 minutes
    python scripts/soak.py --quick      # 30 seconds

A reference server runs in this process (its own thread and event loop) so that the soak
can break connections at will (``reset_all`` alternating with ``close_all(1012)``). One
ReconnectingSession with push on serves four caller threads doing Core/echo calls and one
consumer draining ``changes()``, while a changer thread creates a Note every 100 ms. Every
5 s it samples the process's resident memory, its threads (and those named ``jmapws-``),
and its open file descriptors. Resident memory includes the server's, which is small and
flat too; the thread and descriptor counts are what tell a leak.

At the end it prints the samples and a verdict, and exits 1 when memory or threads grew,
or when the last pushed state is not the server's final state.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time

import jmapws_sync as jws
from jmapws_sync.testing import ReferenceServer

USER, PASSWORD = "alice", "soak-password"
SAMPLE_EVERY = 5.0


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def library_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("jmapws-"))


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.call_errors = 0
        self.changes = 0
        self.last_state: str | None = None

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--quick", action="store_true", help="30 seconds")
    parser.add_argument("--reconnect-every", type=float, default=4.0, help="seconds")
    parser.add_argument("--callers", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # reconnect warnings would drown the table
    duration = 30.0 if args.quick else args.duration

    stop = threading.Event()
    counts = Counters()
    server = ReferenceServer(users={USER: PASSWORD}).start()
    account = server.account_id(USER)
    rs = jws.ReconnectingSession(
        server.base_url,
        auth=jws.BasicAuth(USER, PASSWORD),
        push=True,
        backoff=jws.Backoff(first=(0.05, 0.2), factor=2.0, ceiling=1.0, reset_after=2.0),
        ping_interval=2.0,
        ping_timeout=2.0,
    )
    rs.wait_connected(timeout=10)

    def caller(n: int) -> None:
        b = jws.RequestBuilder()
        echo = b.call("Core/echo", {"n": n})
        request = b.build()
        while not stop.is_set():
            try:
                assert rs.call(request, timeout=5).get(echo.call_id) == {"n": n}
                counts.add("calls")
            except (jws.TransportError, jws.SessionClosed, TimeoutError):
                counts.add("call_errors")  # a reconnect under way: expected, counted
                stop.wait(0.05)

    def consumer() -> None:
        while not stop.is_set():
            try:
                for change in rs.changes(timeout=1.0):
                    counts.add("changes")
                    counts.last_state = change.changed.get(account, {}).get("Note")
                    if stop.is_set():
                        return
            except TimeoutError:
                continue
            except jws.SessionClosed:
                return

    def changer() -> None:
        n = 0
        while not stop.wait(0.1):
            server.change_note(USER, title=f"soak {n}")
            n += 1

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
    workers += [threading.Thread(target=consumer), threading.Thread(target=changer)]
    for w in workers:
        w.start()

    samples: list[tuple[float, int, int, int, int, int, int, int]] = []
    start = time.monotonic()
    next_break = start + args.reconnect_every
    next_sample = start
    breaks = 0
    print(f"soak: {duration:.0f} s, reconnect every {args.reconnect_every:g} s", flush=True)
    print(" time   rss KiB  threads  jmapws-  fds    calls  errors  changes  reconnects")
    while True:
        now = time.monotonic()
        if now >= next_sample:
            row = (
                now - start,
                rss_kib(),
                threading.active_count(),
                library_threads(),
                open_fds(),
                counts.calls,
                counts.changes,
                rs.reconnects,
            )
            samples.append(row)
            print(
                f"{row[0]:5.0f} {row[1]:9d} {row[2]:8d} {row[3]:8d} {row[4]:4d} "
                f"{row[5]:8d} {counts.call_errors:7d} {row[6]:8d} {row[7]:11d}",
                flush=True,
            )
            next_sample += SAMPLE_EVERY
        if now - start >= duration:
            break
        if now >= next_break:
            if breaks % 2:
                server.close_all(1012)  # "service restart"
            else:
                server.reset_all()  # the network fails
            breaks += 1
            next_break += args.reconnect_every
        stop.wait(min(next_sample, next_break) - time.monotonic())

    # Let the last change arrive before judging push completeness.
    final_state = server.store.state(account)
    deadline = time.monotonic() + 15
    stop.set()
    while counts.last_state != server.store.state(account) and time.monotonic() < deadline:
        final_state = server.store.state(account)
        time.sleep(0.1)  # a script, not a test: a short poll for the tail end is fine
    rs.close()
    for w in workers:
        w.join(10)
    server.stop()

    third = max(len(samples) // 3, 1)
    early = [s[1] for s in samples[1 : third + 1]] or [samples[0][1]]
    late = [s[1] for s in samples[-third:]]
    growth = statistics.median(late) - statistics.median(early)
    max_lib_threads = max(s[3] for s in samples)
    fds = [s[4] for s in samples]
    print()
    print(f"forced reconnects: {breaks}; reconnects seen: {rs.reconnects}")
    print(f"calls: {counts.calls} answered, {counts.call_errors} failed around reconnects")
    print(f"changes: {counts.changes}; last state seen {counts.last_state}, final {final_state}")
    print(
        f"rss median first third {statistics.median(early):.0f} KiB, "
        f"last third {statistics.median(late):.0f} KiB (growth {growth:+.0f} KiB)"
    )
    print(f"jmapws- threads at most {max_lib_threads}; fds {min(fds)}..{max(fds)}")
    flat_memory = growth < 8 * 1024
    flat_threads = max_lib_threads <= 4
    complete = counts.last_state == final_state
    ok = flat_memory and flat_threads and complete and counts.calls > 0
    print("verdict:", "flat and complete" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
