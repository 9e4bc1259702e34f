"""Soak run: calls and pushes through forced reconnects, with memory and threads sampled.

Outside the test suite; run it on demand from a checkout (the ``server`` extra installed)::

    python scripts/soak.py              # 10 minutes
    python scripts/soak.py --quick      # 30 seconds
    python scripts/soak.py --duration 3600 --callers 8 --reconnect-every 2

The reference server runs in a child process (:class:`jmapws_sync.testing.child.ServerProcess`),
so that the memory, threads and file descriptors sampled are the client's alone. This
process drives it over a pipe: ``change_note`` makes Note changes, ``reset_all`` and
``close_all`` break connections, ``store.state`` gives the final state.

In this process, one ReconnectingSession with push on serves ``--callers`` threads doing
Core/echo calls in a loop and one consumer draining ``changes()``; a changer thread creates
a Note every 100 ms. A second ReconnectingSession, the quiet listener, pings every 10 ms
(hours of its 20 s default, compressed) and reads every frame with ``next_frame()``. The
run goes through four phases, each a share of ``--duration``:

* churn (40 %): every ``--reconnect-every`` seconds the server drops every connection,
  alternating a TCP reset with a Close 1012 ("service restart");
* quiet (20 %): no calls, no changes, no drops: nothing but keepalive;
* slow consumer (20 %): Notes change every 10 ms while the consumer stops reading for
  seconds at a time; the calls must go on being answered;
* two consumers (20 %): a second thread does ``send_request()`` + ``next_frame()`` round
  trips beside the consumer in ``changes()``.

Calls that end in ConnectionLost or TimeoutError around a forced reconnect are counted,
not fatal; a TimeoutError outside the churn phase, any other error, or an answer that is
not the caller's own, is.

Every 5 s a sample is printed: resident memory (VmRSS) of this process and of the server,
threads (all, and those named ``jmapws-``), open file descriptors, calls answered, calls
failed, StateChanges seen and reconnects. The library's log records at WARNING and above
are counted (one per reconnect is expected) and shown with ``-v``. The verdict at the end
(exit status 1 if any part fails, 2 if the server child failed):

* memory flat: after the warm-up, the median RSS of the last third of the samples is at
  most 4 MiB above the median of the first third;
* threads flat: at most 3 ``jmapws-`` threads (the supervisor, a reader, an old reader
  exiting) and never more threads than at the first sample plus 1;
* push complete and in order: the last state seen equals the server's final state, and
  states never went backwards;
* nothing left: after ``close()``, no ``jmapws-`` thread and no more fds than before;
* phases: the quiet listener raised nothing and ended on the server's last state, its
  Pings reached the server; no call timed out and nothing reconnected outside the churn
  phase; every round trip of the second consumer was answered.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import statistics
import sys
import threading
import time

import jmapws_sync as jws
from jmapws_sync.testing.child import ServerProcess

USER = "alice"
PASSWORD = secrets.token_urlsafe(16)  # handed to the server child over its pipe
SAMPLE_EVERY = 5.0
CHANGE_EVERY = 0.1
CONTROL_TIMEOUT = 15.0  # seconds the server child may take to answer one command
MEMORY_SLACK_KIB = 4 * 1024
MAX_LIBRARY_THREADS = 6  # two sessions: a supervisor and a reader each, old readers exiting
PHASES = (("churn", 0.4), ("quiet", 0.2), ("slow consumer", 0.2), ("two consumers", 0.2))

log = logging.getLogger("soak")


# ----------------------------------------------------------------------------- server child


def start_server() -> ServerProcess:
    """The reference server in a child process, with the soak user and its password."""
    return ServerProcess(timeout=CONTROL_TIMEOUT, host="127.0.0.1", users={USER: PASSWORD})


# ----------------------------------------------------------------------------- measuring


def rss_kib(pid: int | str = "self") -> int:
    """VmRSS of a process in KiB, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def library_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("jmapws-"))


def state_number(state: str | None) -> int:
    """The counter in the reference server's state strings (``"s42"`` -> 42)."""
    return int(state[1:]) if state and state[0] == "s" and state[1:].isdigit() else -1


class Counters:
    """What the worker threads did; ``cond`` also wakes the final wait for the last state."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.calls = 0
        self.lost = 0  # ConnectionLost: the connection broke while the call was in flight
        self.timeouts = 0
        self.unexpected: list[str] = []
        self.changes = 0
        self.changes_made = 0
        self.backwards = 0
        self.last_state: str | None = None
        self.phase = "churn"
        self.late_timeouts = 0  # TimeoutError outside the churn phase
        self.round_trips = 0
        self.quiet_state: str | None = None
        self.quiet_errors: list[str] = []

    def bump(self, name: str) -> None:
        with self.cond:
            setattr(self, name, getattr(self, name) + 1)

    def fail(self, what: str) -> None:
        with self.cond:
            self.unexpected.append(what)

    def seen(self, state: str | None, *, ordered: bool = True) -> None:
        """A StateChange with ``state`` was handed out; with two consumers (``ordered``
        False) the order between their threads means nothing, and the newest is kept."""
        with self.cond:
            self.changes += 1
            if state_number(state) < state_number(self.last_state):
                if ordered:
                    self.backwards += 1
            else:
                self.last_state = state
            self.cond.notify_all()


class LogTally(logging.Handler):
    """Counts the library's log records at WARNING and above; keeps a few unusual ones.

    A reconnect logs one warning ("connection lost ...; reconnecting"): those are
    expected. Anything else (a full queue, a failed Session refresh) is kept to be shown.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}
        self.unusual: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name} {record.levelname}"
        self.counts[key] = self.counts.get(key, 0) + 1
        message = record.getMessage()
        if not message.endswith("reconnecting") and len(self.unusual) < 5:
            self.unusual.append(f"{key}: {message}")


# ----------------------------------------------------------------------------- workers


def caller(
    rs: jws.ReconnectingSession,
    n: int,
    stop: threading.Event,
    counts: Counters,
    quiet: threading.Event,
) -> None:
    b = jws.RequestBuilder()
    echo = b.call("Core/echo", {"caller": n})
    request = b.build()
    while not stop.is_set():
        if quiet.is_set():
            stop.wait(0.2)  # the quiet phase: no calls
            continue
        try:
            answer = rs.call(request, timeout=5.0).get(echo.call_id)
        except jws.ConnectionLost:
            counts.bump("lost")
        except TimeoutError:
            counts.bump("timeouts" if counts.phase == "churn" else "late_timeouts")
        except jws.JmapWsError as exc:
            counts.fail(f"caller {n}: {type(exc).__name__}: {exc}")
            return
        else:
            if answer != {"caller": n}:
                counts.fail(f"caller {n} got someone else's answer: {answer!r}")
                return
            counts.bump("calls")


def consumer(
    rs: jws.ReconnectingSession,
    account: str,
    stop: threading.Event,
    counts: Counters,
    slow: threading.Event,
) -> None:
    while not stop.is_set():
        try:
            for change in rs.changes(timeout=1.0):
                counts.seen(change.changed.get(account, {}).get("Note"))
                if stop.is_set():
                    return
                if slow.is_set():
                    stop.wait(3.0)  # the slow consumer: nothing read for 3 s at a time
        except TimeoutError:
            continue
        except jws.SessionClosed:
            return
        except jws.JmapWsError as exc:
            counts.fail(f"consumer: {type(exc).__name__}: {exc}")
            return


def round_tripper(
    rs: jws.ReconnectingSession, account: str, stop: threading.Event, counts: Counters
) -> None:
    """The second consumer: its own requests, read back through next_frame()."""
    request = jws.RequestBuilder().build()
    n = 0
    while not stop.is_set():
        n += 1
        try:
            rs.send_request(request, id=f"rt{n}", timeout=5.0)
            deadline = time.monotonic() + 5.0
            while True:  # StateChanges may come this way too: each frame goes to one reader
                frame = rs.next_frame(timeout=max(deadline - time.monotonic(), 0.0))
                if isinstance(frame, jws.Response) and frame.request_id == f"rt{n}":
                    counts.bump("round_trips")
                    break
                if isinstance(frame, jws.StateChange):
                    counts.seen(frame.changed.get(account, {}).get("Note"), ordered=False)
        except (jws.JmapWsError, TimeoutError) as exc:
            counts.fail(f"round trip {n}: {type(exc).__name__}: {exc}")
            return


def quiet_listener(
    rs: jws.ReconnectingSession, account: str, stop: threading.Event, counts: Counters
) -> None:
    """Reads every frame with next_frame(): a StarvationError would be raised here."""
    while not stop.is_set():
        try:
            frame = rs.next_frame(timeout=1.0)
        except TimeoutError:
            continue
        except jws.SessionClosed:
            return
        except jws.JmapWsError as exc:
            counts.quiet_errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if isinstance(frame, jws.StateChange):
            with counts.cond:
                counts.quiet_state = frame.changed.get(account, {}).get("Note")
                counts.cond.notify_all()


def changer(
    server: ServerProcess, stop: threading.Event, counts: Counters, every: list[float]
) -> None:
    serial = 0
    while not stop.wait(min(every[0], 0.2)):
        if every[0] >= 1e6:  # the quiet phase
            continue
        serial += 1
        try:
            server.call("change_note", USER, title=f"soak {serial}")
        except (RuntimeError, TimeoutError, OSError) as exc:
            counts.fail(f"changer: {exc}")
            return
        counts.bump("changes_made")


# ----------------------------------------------------------------------------- the run

Sample = tuple[float, int, int, int, int, int, int, int, int, int]
HEADER = "   t s  rss KiB  srv KiB  threads  jmapws-  fds    calls  failed  changes  reconn"


def show(s: Sample) -> str:
    return (
        f"{s[0]:6.0f} {s[1]:8d} {s[2]:8d} {s[3]:8d} {s[4]:8d} {s[5]:4d} "
        f"{s[6]:8d} {s[7]:7d} {s[8]:8d} {s[9]:7d}"
    )


def run(
    duration: float, callers: int, reconnect_every: float, warmup: float, tally: LogTally
) -> int:
    counts = Counters()
    server = start_server()
    base_url = server.facts["base_url"]
    account = f"a-{USER}"
    baseline_fds = open_fds()
    auth = jws.BasicAuth(USER, PASSWORD)
    # Forced drops every few seconds: come back fast, and start the backoff afresh once a
    # connection has lasted 2 s (the default, 60 s, would never be reached).
    backoff = jws.Backoff(first=(0.05, 0.2), factor=2.0, ceiling=1.0, reset_after=2.0)
    rs = jws.ReconnectingSession(
        base_url, auth=auth, push=True, backoff=backoff, ping_interval=5.0, ping_timeout=5.0
    )
    listener = jws.ReconnectingSession(
        base_url, auth=auth, push=True, backoff=backoff, ping_interval=0.01, ping_timeout=5.0
    )
    rs.wait_connected(timeout=15.0)
    listener.wait_connected(timeout=15.0)

    stop, stop_changes = threading.Event(), threading.Event()
    quiet, slow, stop_trips = threading.Event(), threading.Event(), threading.Event()
    change_every = [CHANGE_EVERY]
    threads = [
        threading.Thread(target=caller, args=(rs, i, stop, counts, quiet), name=f"soak-caller-{i}")
        for i in range(callers)
    ]
    threads += [
        threading.Thread(target=consumer, args=(rs, account, stop, counts, slow), name="soak-cons"),
        threading.Thread(
            target=quiet_listener, args=(listener, account, stop, counts), name="soak-quiet"
        ),
        threading.Thread(
            target=changer, args=(server, stop_changes, counts, change_every), name="soak-changer"
        ),
    ]
    tripper = threading.Thread(
        target=round_tripper, args=(rs, account, stop_trips, counts), name="soak-rt"
    )
    for t in threads:
        t.start()

    ends = []
    at = 0.0
    for name, share in PHASES:
        at += share * duration
        ends.append((name, at))
    reconnects_after_churn: int | None = None
    samples: list[Sample] = []
    breaks = 0
    start = time.monotonic()
    next_sample, next_break = start, start + reconnect_every
    print(
        f"soak: {duration:g} s, {callers} callers, a forced reconnect every"
        f" {reconnect_every:g} s in the churn phase, server child pid {server.proc.pid}",
        flush=True,
    )
    print(HEADER, flush=True)
    try:
        while True:  # bounded: ends when `duration` has passed
            now = time.monotonic()
            phase = next((name for name, end in ends if now - start < end), ends[-1][0])
            if phase != counts.phase:
                counts.phase = phase
                print(f"-- phase: {phase}", flush=True)
                if reconnects_after_churn is None:
                    reconnects_after_churn = rs.reconnects + listener.reconnects
                quiet.set() if phase == "quiet" else quiet.clear()
                slow.set() if phase == "slow consumer" else slow.clear()
                change_every[0] = {"quiet": 1e6, "slow consumer": 0.01}.get(phase, CHANGE_EVERY)
                if phase == "two consumers":
                    tripper.start()
            if now >= next_sample:
                sample: Sample = (
                    now - start,
                    rss_kib(),
                    rss_kib(server.proc.pid),
                    threading.active_count(),
                    library_threads(),
                    open_fds(),
                    counts.calls,
                    counts.lost + counts.timeouts + counts.late_timeouts,
                    counts.changes,
                    rs.reconnects,
                )
                samples.append(sample)
                print(show(sample), flush=True)
                next_sample += SAMPLE_EVERY
                if now - start >= duration:
                    break
            if now >= next_break:
                if phase == "churn":
                    if breaks % 2:
                        server.call("close_all", 1012, "soak")
                    else:
                        server.call("reset_all")
                    breaks += 1
                next_break += reconnect_every
            phase_end = next((start + end for _, end in ends if now - start < end), next_sample)
            stop.wait(max(0.0, min(next_sample, next_break, phase_end) - time.monotonic()))

        # Push completeness: no more changes, then the last one must arrive, at both.
        stop_trips.set()
        stop_changes.set()
        threads[-1].join(CONTROL_TIMEOUT)
        final_state = server.call("store.state", account)
        pings = server.call("pings_seen")
        with counts.cond:
            counts.cond.wait_for(
                lambda: counts.last_state == final_state == counts.quiet_state, timeout=15.0
            )
    finally:
        stop.set()
        stop_changes.set()
        stop_trips.set()
        for t in [*threads, tripper]:
            if t.ident is not None:
                t.join(15.0)
        rs.close()
        listener.close()
        # Counted before the child's pipes close, so they cannot hide a leaked socket.
        leftover_threads = library_threads()
        leftover_fds = open_fds() - baseline_fds
        server.stop()

    late_reconnects = rs.reconnects + listener.reconnects - (reconnects_after_churn or 0)
    phase_checks = [
        (
            f"quiet listener: {pings} Pings reached the server, {len(counts.quiet_errors)}"
            f" errors, last state {counts.quiet_state}"
            + "".join(f"\n      {e}" for e in counts.quiet_errors[:3]),
            not counts.quiet_errors and counts.quiet_state == final_state and pings > 0,
        ),
        (
            f"outside the churn phase: {counts.late_timeouts} calls timed out,"
            f" {late_reconnects} reconnects",
            counts.late_timeouts == 0 and late_reconnects == 0,
        ),
        (
            f"two consumers: {counts.round_trips} round trips through next_frame() answered",
            counts.round_trips > 0,
        ),
    ]
    return verdict(
        samples,
        counts,
        reconnects=rs.reconnects,
        breaks=breaks,
        final_state=final_state,
        warmup=warmup,
        leftover_threads=leftover_threads,
        leftover_fds=leftover_fds,
        tally=tally,
        extra=phase_checks,
    )


def verdict(
    samples: list[Sample],
    counts: Counters,
    *,
    reconnects: int,
    breaks: int,
    final_state: str,
    warmup: float,
    leftover_threads: int,
    leftover_fds: int,
    tally: LogTally,
    extra: list[tuple[str, bool]],
) -> int:
    steady = [s for s in samples if s[0] >= warmup] or samples
    third = max(len(steady) // 3, 1)
    early = statistics.median(s[1] for s in steady[:third])
    late = statistics.median(s[1] for s in steady[-third:])
    max_lib = max(s[4] for s in samples)
    max_threads = max(s[3] for s in samples)
    fds = [s[5] for s in samples]
    elapsed = samples[-1][0]

    checks: list[tuple[str, bool]] = [
        (
            f"memory flat: RSS median {early / 1024:.1f} MiB after warm-up ({warmup:g} s),"
            f" {late / 1024:.1f} MiB in the last third ({late - early:+.0f} KiB;"
            f" at most +{MEMORY_SLACK_KIB} KiB)",
            late - early <= MEMORY_SLACK_KIB,
        ),
        (
            f"threads flat: {samples[0][3]} at start, at most {max_threads};"
            f" jmapws- threads at most {max_lib} (limit {MAX_LIBRARY_THREADS})",
            max_lib <= MAX_LIBRARY_THREADS and max_threads <= samples[0][3] + 1,
        ),
        (
            f"push complete: last state seen {counts.last_state}, server's final state"
            f" {final_state}; {counts.backwards} went backwards",
            counts.last_state == final_state and counts.backwards == 0,
        ),
        (
            f"nothing left after close(): {leftover_threads} jmapws- threads,"
            f" {leftover_fds:+d} fds against the start",
            leftover_threads == 0 and leftover_fds == 0,
        ),
        (
            f"no unexpected error: {len(counts.unexpected)}"
            + "".join(f"\n      {u}" for u in counts.unexpected[:5]),
            not counts.unexpected and counts.calls > 0,
        ),
        *extra,
    ]
    print()
    print(
        f"ran {elapsed:.0f} s: {counts.calls} calls answered"
        f" ({counts.calls / max(elapsed, 1):.0f}/s), {counts.lost} ConnectionLost and"
        f" {counts.timeouts} TimeoutError around reconnects; {breaks} forced drops,"
        f" {reconnects} reconnects; {counts.changes_made} Note changes made,"
        f" {counts.changes} StateChanges seen; fds {min(fds)}..{max(fds)};"
        f" client RSS {samples[0][1] / 1024:.1f} -> {samples[-1][1] / 1024:.1f} MiB"
    )
    logged = ", ".join(f"{n} {key}" for key, n in sorted(tally.counts.items())) or "none"
    print(f"library log records at WARNING and above: {logged}")
    for line in tally.unusual:
        print(f"  unusual: {line}")
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")
    good = all(ok for _, ok in checks)
    print("verdict:", "flat and complete" if good else "NOT OK")
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Soak run of jmapws_sync.ReconnectingSession against the reference server."
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--quick", action="store_true", help="30 seconds (overrides --duration)")
    parser.add_argument("--callers", type=int, default=4, help="calling threads (default 4)")
    parser.add_argument(
        "--reconnect-every", type=float, default=4.0, help="seconds between drops (default 4)"
    )
    parser.add_argument(
        "--warmup", type=float, help="seconds left out of the memory check (default 10%%)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also print the library's warnings"
    )
    args = parser.parse_args(argv)
    tally = LogTally()
    library_log = logging.getLogger("jmapws_sync")
    library_log.setLevel(logging.WARNING)
    library_log.addHandler(tally)
    if args.verbose:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    else:
        library_log.propagate = False  # counted, shown in the summary
    duration = 30.0 if args.quick else args.duration
    warmup = args.warmup if args.warmup is not None else max(SAMPLE_EVERY, duration / 10)
    try:
        return run(duration, args.callers, args.reconnect_every, warmup, tally)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"soak: aborted, the server child failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
