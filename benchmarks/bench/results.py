"""What a run measured: per-repetition samples of every figure, keyed by a dotted name.

Keys: ``rt.<client>.p50|p99|mean|server_us``, ``conc.lib|http.<threads>``,
``push.<client>.fps|server_busy|pauses``, ``flood.lib|base.p50|p99|max|calls`` and
``flood.lib.rate|pending|last_ok``, ``large.<size>.*``, ``idle.*``,
``conn.<what>.p50|p99``, ``sync.ref|cyrus.<client>.s|rt|ops|cpu|server_cpu`` and
``sync.rss.drop|keep_mib`` (with ``sync.rss.<mode>.idle_mib|end_mib|s|rt``),
``blobs.ref|cyrus.up|down.<client>.mibs|cpu|server_cpu|rss_mib``,
``blobs.small.<bytes>.<way>.p50`` and ``blobs.small.crossover.<way>_kib``,
``transports.push.<source>.p50|p99|net_p50`` (with ``transports.push.pipe.p50|p99``),
``transports.cpu.<source>.us|process_us|server_us|received_pct|rate``,
``transports.cyrus_push.<source>.p50|max`` and
``transports.calls.ref|cyrus.echo|get.<client>.p50|p99|server_us``, and
``ratio.<workload>.<a>/<b>`` for the ratios. A run is saved as JSON beside its report
(:func:`dump`), so that ``run.py --render`` can rewrite the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import Config
from .stats import median, spread


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
        return median(self.samples[key])

    def spread(self, key: str) -> tuple[float, float]:
        return spread(self.samples[key])


def dump(res: Results, cfg: Config, meta: dict[str, Any], plot_path: Path | None) -> str:
    """The JSON of a run (config, meta, results, plot path) that ``--render`` reads back."""
    data = {
        "config": asdict(cfg),
        "meta": meta,
        "results": {
            **asdict(res),
            "latencies_us": {k: [round(v, 1) for v in vs] for k, vs in res.latencies_us.items()},
        },
        "plot": str(plot_path) if plot_path else None,
    }
    return json.dumps(data)


def load(text: str) -> tuple[Results, Config, dict[str, Any], Path | None]:
    """What :func:`dump` wrote: the results, the config, the meta and the plot path."""
    data = json.loads(text)
    cfg_fields = data["config"]
    cfg_fields["conc_threads"] = tuple(cfg_fields["conc_threads"])
    cfg_fields["large_sizes"] = tuple(cfg_fields["large_sizes"])
    if "blob_small_sizes" in cfg_fields:
        cfg_fields["blob_small_sizes"] = tuple(cfg_fields["blob_small_sizes"])
    plot_path = Path(data["plot"]) if data["plot"] else None
    return Results(**data["results"]), Config(**cfg_fields), data["meta"], plot_path
