"""Call latency during a push flood: do unread pushes hold ``call()`` back?

The shape of ``tests/test_delivery.py::test_ten_thousand_unread_pushes_merge_and_calls_go_on``
with the server in its own process, so that what is timed is the client (in the test the
server, and the thread making the changes, compete with the client for one GIL). One
session (user "flooded", the default compression, as an application has it) turns push
on and nobody reads its pushes: they merge in its inbox. A second thread makes
sequential small ``call()``s while this thread asks the server child for
``flood_changes`` Note changes, one pipe call each; the server pushes each to the
session as it commits it. The baseline, in the same repetition on the same session, is
the same calls while this thread makes as many pipe calls that change nothing
(``session_state``): the same traffic on the pipe and the same work in this process, only
no pushes. The order of the two phases alternates from one repetition to the next.

Per repetition: ``call()`` p50, p99 and max (us) in each phase and their ratios (flood /
baseline), the calls made in each phase, the rate the changes were pushed at, the frames
left waiting unread after the flood (they merge: one is expected), and whether the last
StateChange carried the server's final state and pushState.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import jmapws_sync as jws

from .clients import SMALL_ARGS, WAIT
from .config import Config
from .results import Results
from .stats import fmt, percentile

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

#: The user whose Notes change: only this workload's session hears them.
USER = "flooded"
ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", SMALL_ARGS, "c0")])
#: The phases, by result key: "lib" the flood, "base" the baseline.
PHASES = ("lib", "base")


def calls_during(ws: jws.WsSession, work: Callable[[], None]) -> tuple[list[float], float]:
    """Sequential ``call()`` latencies (us) from another thread while ``work()`` runs here,
    and how long ``work()`` took (s). The call in flight when it ends is counted too."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def caller() -> None:
        clock = time.perf_counter_ns
        append = latencies.append
        try:
            while not done.is_set():
                t0 = clock()
                ws.call(ECHO, timeout=WAIT)
                append((clock() - t0) / 1000.0)
        except BaseException as exc:  # reported below, in the measuring thread
            errors.append(exc)

    thread = threading.Thread(target=caller, name="bench-flood-caller")
    thread.start()
    started = time.perf_counter()
    try:
        work()
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        thread.join(WAIT)
    if errors:
        raise errors[0]
    return latencies, elapsed


def last_frame(ws: jws.WsSession) -> jws.Frame | None:
    """Take every frame waiting in the session; the last one (None if there was none)."""
    last = None
    with contextlib.suppress(TimeoutError):
        while True:
            last = ws.next_frame(timeout=0)
    return last


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """Call latency while Note changes are pushed, unread, against the same calls without."""
    n = cfg.flood_changes
    account = server.call("account_id", USER)

    def nothing() -> None:
        for _ in range(n):
            server.call("session_state")

    def changes() -> None:
        for i in range(n):
            server.call("change_note", USER, title=f"flood {i}")

    auth = jws.BasicAuth(USER, "secret")
    for rep in range(cfg.reps):
        with jws.connect(server.facts["session_url"], auth=auth, proxy="", timeout=WAIT) as ws:
            ws.enable_push(data_types=["Note"])
            for _ in range(cfg.rt_warmup):
                ws.call(ECHO, timeout=WAIT)  # the first one: push is on from here
            figures: dict[str, dict[str, float]] = {}
            order = PHASES if rep % 2 == 0 else PHASES[::-1]
            for phase in order:
                work = changes if phase == "lib" else nothing
                latencies, seconds = calls_during(ws, work)
                ws.call(ECHO, timeout=WAIT)  # its answer comes after every push
                figures[phase] = {
                    "p50": percentile(latencies, 50),
                    "p99": percentile(latencies, 99),
                    "max": max(latencies),
                    "calls": len(latencies),
                }
                if phase == "lib":
                    res.add("flood.lib.rate", n / seconds)
                    res.add("flood.lib.pending", ws.pending_frames)
                    last = last_frame(ws)
                    final = server.call("store.state", account)
                    push_state = server.call("store.push_state")
                    whole = (
                        isinstance(last, jws.StateChange)
                        and last.changed.get(account, {}).get("Note") == final
                        and last.push_state == push_state
                    )
                    res.add("flood.lib.last_ok", 100.0 if whole else 0.0)
                else:
                    last_frame(ws)
        for phase, values in figures.items():
            for stat, value in values.items():
                res.add(f"flood.{phase}.{stat}", value)
        for stat in ("p50", "p99", "max"):
            res.add(f"ratio.flood.{stat}", figures["lib"][stat] / figures["base"][stat])
        print(
            f"  flood rep {rep + 1}/{cfg.reps}: call() p50/p99/max "
            + ", ".join(
                f"{label} {fmt(figures[p]['p50'])}/{fmt(figures[p]['p99'])}/"
                f"{fmt(figures[p]['max'])} us ({figures[p]['calls']:.0f} calls)"
                for p, label in (("lib", "flood"), ("base", "without"))
            ),
            flush=True,
        )
