"""The latency plot: the cumulative distribution of every sequential round trip, per client.

All repetitions of the round-trip workload pooled, log x axis (microseconds), cut a
little past the slowest client's p99.9; lines at 50 % and (dashed) 99 %. Needs
matplotlib (Agg backend, no display).
"""

from __future__ import annotations

from pathlib import Path

from .results import Results
from .stats import fmt, percentile
from .targets import NAMES

#: Client key: (colour, line width), in legend order.
STYLES = {
    "lib": ("#d62728", 2.4),
    "wsclient": ("#1f77b4", 1.5),
    "websockets": ("#2ca02c", 1.5),
    "http": ("#7f7f7f", 1.5),
    "http_new": ("#bcbd22", 1.2),
    "jmaplib": ("#9467bd", 1.5),
}


def plot(res: Results, path: Path) -> bool:
    """Draw the plot to ``path``; False (and a note) if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        res.notes.append("matplotlib is not installed: no plot")
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for key, (color, width) in STYLES.items():
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
    pooled = [v for key in STYLES for v in res.latencies_us.get(key, [])]
    tails = [percentile(res.latencies_us[key], 99.9) for key in STYLES if res.latencies_us.get(key)]
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
