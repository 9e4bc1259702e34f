"""The sizes of the workloads (``--quick`` shrinks them), their names, and the paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: ``benchmarks/``: FINDINGS.md, latency.png, results.json and run.py live there.
HERE = Path(__file__).resolve().parent.parent
#: The repository root: BENCHMARKS.md is written there by default.
ROOT = HERE.parent
#: The entry point; the idle workload runs it again as ``--idle-worker``.
RUN_PY = HERE / "run.py"
MIB = 1024 * 1024
#: The workloads ``--only`` can name.
WORKLOADS = (
    "rt",
    "conc",
    "push",
    "flood",
    "large",
    "deflate",
    "idle",
    "connect",
    "sync",
    "blobs",
    "transports",
)
KIB = 1024


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
    deflate_changes: int = 500
    deflate_idle_sessions: int = 100
    profile_calls: int = 3000
    profile_frames: int = 50_000
    flood_changes: int = 10_000
    sync_objects: int = 10_000
    sync_cyrus_objects: int = 10_000
    sync_rss_objects: int = 100_000
    sync_rss_reps: int = 3
    blob_size: int = 256 * MIB
    blob_small_sizes: tuple[int, ...] = tuple(k * KIB for k in (1, 4, 8, 16, 32, 64, 256, 1024))
    blob_small_n: int = 60
    transports_changes: int = 1000
    transports_burst: int = 2000
    transports_calls: int = 1000
    transports_cyrus_calls: int = 300
    transports_cyrus_changes: int = 10

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
            deflate_changes=100,
            deflate_idle_sessions=30,
            profile_calls=1000,
            profile_frames=10_000,
            flood_changes=2_000,
            sync_objects=2_000,
            sync_cyrus_objects=1_000,
            sync_rss_objects=20_000,
            sync_rss_reps=1,
            blob_size=16 * MIB,
            blob_small_n=15,
            transports_changes=200,
            transports_burst=500,
            transports_calls=200,
            transports_cyrus_calls=100,
            transports_cyrus_changes=3,
        )
