"""What a run shows: the table and targets on the terminal, and the Markdown of BENCHMARKS.md.

The Markdown has, in order: how to reproduce, "Machine and run", "Targets", "Every
workload" (the table of :mod:`.table`, then the workload sizes and the idle details),
notes from the run, the "permessage-deflate", "Small blobs" and "Transports" sections,
"Latency distribution" (the plot), the hand-written
``benchmarks/FINDINGS.md``, "Profiles of this run" and the "Closing note".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .blobs_table import blobs_section
from .config import HERE, MIB, ROOT, Config
from .deflate_table import deflate_section
from .results import Results
from .stats import fmt
from .sync import EMAIL_PROPERTIES as SYNC_EMAIL_PROPERTIES
from .table import rows
from .targets import TARGETS
from .transports_table import transports_section


def print_table(res: Results, cfg: Config) -> None:
    """Every figure as an aligned table, then each target's status, then the notes."""
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
    details = blob_details(res, cfg)
    if details:
        print(f"\n{details}")
    section = blobs_section(res, cfg)
    if section:
        print("\n" + "\n".join(section))
    section = transports_section(res, cfg)
    if section:
        print("\n" + "\n".join(section))


def _machine_and_run(res: Results, cfg: Config, meta: dict[str, Any]) -> list[str]:
    machine = meta["machine"]
    return [
        "## Machine and run",
        "",
        f"- Python: {machine['python']} ({sys.executable.split('/bin/')[0]} venv); "
        f"OS: {machine['os']}",
        f"- CPU: {machine['cpu']}, nproc = {machine['nproc']}; memory: {machine['memory']}",
        f"- load average (1 min) before / after the run: {meta['load_before']:.2f} / "
        f"{meta['load_after']:.2f}; run took {meta['elapsed']:.0f} s; {meta['date']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- jmaplib sync WebSocket client: {meta['jmaplib']}",
        "- server: `jmapws_sync.testing.child` (the ReferenceServer, aiohttp, one event loop) in"
        " its own",
        "  process on 127.0.0.1; client: this process. Not pinned to cores: the 2 processes share",
        "  the 2 cores. Each figure is the median over "
        f"{cfg.reps} repetitions, with min - max; each ratio is",
        "  taken within a repetition (clients interleaved, order rotated) and summarised the same.",
        "",
    ]


def _targets(res: Results) -> list[str]:
    lines = ["## Targets", "", "| target | measured (median) | min - max | status |"]
    lines.append("|---|---:|---:|---|")
    for target in TARGETS:
        met = target.met(res)
        if met is None:
            lines.append(f"| {target.name} | n/a | | not measured |")
            continue
        low, high = res.spread(target.key)
        status = "**met**" if met else "**not met**"
        lines.append(
            f"| {target.name} | {fmt(res.median(target.key))} {target.unit} | "
            f"{fmt(low)} - {fmt(high)} | {status} |"
        )
    lines.append("")
    return lines


def _every_workload(res: Results, cfg: Config) -> list[str]:
    lines = ["## Every workload", "", "| workload | figure | median | min - max | unit |"]
    lines.append("|---|---|---:|---:|---|")
    lines += ["| " + " | ".join(row) + " |" for row in rows(res, cfg)]
    lines.append("")
    lines.append(
        "Workload sizes: round trip "
        f"{cfg.rt_calls} calls per client per repetition (after {cfg.rt_warmup} warm-up calls);"
        f" concurrency {fmt(cfg.conc_seconds)} s per point; push {cfg.push_frames:,} frames"
        f" (jmaplib {cfg.jmaplib_push_frames:,}); push flood {cfg.flood_changes:,} Note changes"
        " per repetition, each pushed as the server commits it, to a session nobody reads"
        " (the default compression), while another thread calls; the baseline makes the same"
        f" calls with no pushes; idle {cfg.idle_sessions} sessions for"
        f" {fmt(cfg.idle_seconds)} s in a fresh process; connect / close {cfg.connect_n} per"
        f" repetition; first sync {cfg.sync_objects:,} Notes and {cfg.sync_cyrus_objects:,}"
        " Emails, pages of 256 (the feed: 4 a request; the loop: 1), each client on a"
        " connection opened before the clock, a fresh ChangeFeed each time, after one warm-up"
        f" round; resync memory {cfg.sync_rss_objects:,} Notes, each time in a fresh process"
        f" ({cfg.sync_rss_reps} per mode); blob transfer a {cfg.blob_size // MIB} MiB file of"
        " random bytes (in the page cache) up and down by each client, uploads then"
        " downloads, order rotated, one checked round first; small uploads"
        f" {cfg.blob_small_n} per way, size and repetition; transports"
        f" {cfg.transports_changes:,} Note changes per push source and repetition, one at a"
        f" time, and bursts of {cfg.transports_burst:,}, {cfg.transports_calls:,} calls per"
        f" client, call and repetition ({cfg.transports_cyrus_calls} on Cyrus, with"
        f" {cfg.transports_cyrus_changes} changes per repetition)."
    )
    idle_out = res.extra.get("idle")
    if idle_out:
        lines.append(
            f"Idle details: {idle_out['threads']} threads in the client process; RSS "
            f"{fmt(idle_out['rss_before_kib'] / 1024)} MiB before the sessions, "
            f"{fmt(idle_out['rss_after_kib'] / 1024)} MiB with them; opening them took "
            f"{fmt(idle_out['open_s'])} s; closing them: p50 {fmt(idle_out['close_p50_ms'])} ms,"
            f" max {fmt(idle_out['close_max_ms'])} ms; server process CPU over the idle run "
            f"(opening included): {fmt(res.extra.get('idle.server_cpu_s', float('nan')))} s."
        )
    if res.has("sync.ref.feed.s"):
        details = (
            "Sync details: the Notes have 3 properties (id, title and a body of about 100"
            " characters: ~150 bytes of JSON each), all fetched"
        )
        sync_cyrus = res.extra.get("sync.cyrus")
        if sync_cyrus:
            details += (
                f"; the Emails 5 and id ({', '.join(SYNC_EMAIL_PROPERTIES)});"
                f" {sync_cyrus['messages']:,} messages appended to Cyrus {sync_cyrus['version']}"
                f" over IMAP in {fmt(sync_cyrus['append_s'])} s ({sync_cyrus['append_how']})"
            )
        lines.append(details + ".")
    blobs = blob_details(res, cfg)
    if blobs:
        lines.append(blobs)
    lines.append("")
    if res.notes:
        lines += ["Notes from the run:", "", *(f"- {note}" for note in res.notes), ""]
    return lines


def blob_details(res: Results, cfg: Config) -> str:
    """One line on the blob workload's servers and curl; empty when it did not run."""
    facts = res.extra.get("blobs")
    if not facts:
        return ""
    out = (
        f"Blob details: {facts['size'] / MIB:g} MiB file; the reference server's maxSizeUpload"
        f" {facts.get('ref_max_size_upload', 0):,} bytes (the benchmark raises its default,"
        " 50,000,000)"
    )
    cyrus = res.extra.get("blobs.cyrus")
    if cyrus:
        out += (
            f"; Cyrus {cyrus['version']} with jmap_max_size_upload:"
            f" {cyrus['jmap_max_size_upload_kib']:,} (KiB), maxSizeUpload"
            f" {cyrus['max_size_upload']:,} bytes in its Session resource"
        )
    if facts.get("curl"):
        out += f"; {facts['curl']}"
    return out + "."


def _latency_plot(plot_path: Path) -> list[str]:
    rel = plot_path.relative_to(ROOT) if plot_path.is_relative_to(ROOT) else plot_path
    return [
        "## Latency distribution",
        "",
        f"![call() latency vs baselines]({rel})",
        "",
        "Cumulative distribution of every sequential round trip of the run (all repetitions"
        " pooled): the further left, the faster; the dashed line is p99; the x axis stops"
        " a little past the slowest client's p99.9.",
        "",
    ]


def _profiles(res: Results) -> list[str]:
    lines = [
        "## Profiles of this run",
        "",
        "cProfile of the client process (`profile_hot_path()` in"
        " `benchmarks/bench/profiling.py`): the calling thread and the reader thread are"
        " profiled separately; own time is inflated by cProfile, compare shares, not absolute"
        " values.",
        "",
    ]
    for title, table in res.profiles.items():
        lines += [f"### {title}", "", table, ""]
    return lines


def markdown(res: Results, cfg: Config, meta: dict[str, Any], plot_path: Path | None) -> str:
    """The whole of BENCHMARKS.md for this run."""
    lines = [
        "# Benchmarks",
        "",
        "Produced by the command below; re-run it to refresh every figure, table and the plot",
        "(the file is written by `benchmarks/run.py`: edit `benchmarks/FINDINGS.md` for prose).",
        "",
        "```sh",
        'pip install -e ".[server]" -r benchmarks/requirements.txt',
        meta["command"],
        "```",
        "",
        "The blob workload (`blobs`) also needs `curl` on the PATH (Debian: `apt-get install"
        " curl`); without it, it leaves out the curl rows, with a note.",
        "",
    ]
    lines += _machine_and_run(res, cfg, meta)
    lines += _targets(res)
    lines += _every_workload(res, cfg)
    lines += deflate_section(res, cfg)
    lines += blobs_section(res, cfg)
    lines += transports_section(res, cfg)
    if plot_path is not None:
        lines += _latency_plot(plot_path)
    findings = HERE / "FINDINGS.md"
    if findings.exists():
        lines += [findings.read_text().rstrip(), ""]
    if res.profiles:
        lines += _profiles(res)
    lines += ["## Closing note", "", closing_note(res), ""]
    return "\n".join(lines)


def closing_note(res: Results) -> str:
    """One sentence: every measured target, its median and whether it is met."""
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
