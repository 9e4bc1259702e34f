"""Benchmarks of jmapws_sync against its baselines (issue 7).

One command, from the repository root, with the benchmark extras installed
(``pip install -e ".[server]" -r benchmarks/requirements.txt``)::

    python benchmarks/run.py            # full run: ~5 minutes on 2 cores; writes BENCHMARKS.md
    python benchmarks/run.py --quick    # smoke run (~1 minute); prints the table only

The reference server (:class:`jmapws_sync.testing.child.ServerProcess`) runs in a process
of its own, on loopback; this process is the client. Every workload is repeated
(``--reps``, 5 by default) and each figure is the median over the repetitions with its
min-max; every ratio is computed per repetition, from measurements taken side by side in
that repetition, and then summarised the same way. The idle workload runs in a fresh child
process (this script with ``--idle-worker``) so that its CPU time and resident memory
belong to the sessions alone; so does the sync workload's resync whose peak RSS is
measured (``--sync-worker``). The workloads, the statistics and the report are in the
``bench`` package beside this file.

Options: ``--output PATH`` (default ``BENCHMARKS.md``; ``-`` writes nothing), ``--plot
PATH`` (default ``benchmarks/latency.png``), ``--reps N``, ``--no-profile``, ``--only
NAMES`` (comma-separated workloads: rt, conc, push, flood, large, deflate, idle,
connect, sync, blobs, transports), ``--render JSON`` (rewrite the report from a saved
run, measuring nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import blobs, conc, connect, deflate, flood, idle, large, push, rt, sync, transports
from bench import server as bench_server
from bench.clients import jmaplib_status
from bench.config import HERE, ROOT, WORKLOADS, Config
from bench.machine import machine_facts, package_versions
from bench.plot import plot
from bench.profiling import profile_hot_path
from bench.report import markdown, print_table
from bench.results import Results, dump, load

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

Measure = Callable[["ServerProcess", Config, Results, bool], None]
#: The workloads in the order they run (idle last: it takes longest and needs a quiet client).
STEPS: tuple[tuple[str, Measure], ...] = (
    ("rt", rt.measure),
    ("conc", conc.measure),
    ("push", push.measure),
    ("flood", flood.measure),
    ("large", large.measure),
    ("deflate", deflate.measure),
    ("connect", connect.measure),
    ("sync", sync.measure),
    ("blobs", blobs.measure),
    ("transports", transports.measure),
    ("idle", idle.measure),
)


def render(saved: Path, args: argparse.Namespace) -> int:
    """Rewrite the Markdown report (and plot) from a results file of an earlier run."""
    res, cfg, meta, plot_path = load(saved.read_text())
    if plot_path is not None and res.latencies_us:
        plot(res, plot_path)
    output = args.output or "BENCHMARKS.md"
    path = Path(output) if Path(output).is_absolute() else ROOT / output
    path.write_text(markdown(res, cfg, meta, plot_path))
    print(f"rewrote {path} from {saved}")
    return 0


def measure(
    cfg: Config, only: set[str], *, profile: bool, res: Results, with_jmaplib: bool
) -> None:
    """Run the chosen workloads (and the profiles) against one server child."""
    with bench_server.start() as server:
        for name, step in STEPS:
            if name in only:
                step(server, cfg, res, with_jmaplib)
        if profile:
            profile_hot_path(server, cfg, res)


def write_report(
    res: Results, cfg: Config, args: argparse.Namespace, output: str, meta: dict[str, Any]
) -> None:
    """The plot, the Markdown at ``output`` and the saved results beside it."""
    plot_path: Path | None = None
    if res.latencies_us:
        plot_path = Path(args.plot).resolve()
        if not plot(res, plot_path):
            plot_path = None
    path = Path(output)
    if not path.is_absolute():
        path = ROOT / path
    path.write_text(markdown(res, cfg, meta, plot_path))
    saved = path.with_suffix(".json") if path.suffix == ".md" else Path(f"{path}.json")
    if path == ROOT / "BENCHMARKS.md":
        saved = HERE / "results.json"
    saved.write_text(dump(res, cfg, meta, plot_path))
    print(f"wrote {path}, {saved}" + (f" and {plot_path}" if plot_path else ""))


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
    parser.add_argument("--sync-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.render is not None:
        return render(Path(args.render), args)

    if args.idle_worker is not None:
        print(json.dumps(idle.idle_worker(json.loads(args.idle_worker))))
        return 0

    if args.sync_worker is not None:
        print(json.dumps(sync.rss_worker(json.loads(args.sync_worker))))
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
    measure(cfg, only, profile=not args.no_profile, res=res, with_jmaplib=with_jmaplib)
    elapsed = time.perf_counter() - started
    print_table(res, cfg)
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
        write_report(res, cfg, args, output, meta)
    print(f"took {elapsed:.0f} s; load average {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
