"""The "Small blobs" section of the report: Blob/upload over the WebSocket against HTTP.

One row per size: the p50 latency of each way (``blobs.small.<bytes>.<way>.p50``) and the
ratios jmap / http taken within each repetition; then where ``Blob/upload`` stops being
the faster way, against what ``jmapws_sync.blobs.JMAP_UPLOAD_LIMIT`` is now.
"""

from __future__ import annotations

from .config import Config
from .results import Results
from .stats import fmt
from .table import cell

KIB = 1024
#: (result key of the way, column heading).
WAYS = (
    ("jmap", '`via="jmap"`, default compression'),
    ("jmap_plain", '`via="jmap"`, no compression'),
    ("http", '`via="http"`'),
    ("http_keep", "`http.client` keep-alive POST (context)"),
)
#: (ratio key suffix, column heading).
RATIOS = (
    ("jmap/http", "jmap / http, default compression"),
    ("jmap_plain/http", "jmap / http, no compression"),
)


def size_label(size: int) -> str:
    return f"{size // KIB} KiB" if size < KIB * KIB else f"{size // (KIB * KIB)} MiB"


def ratio_cell(res: Results, key: str) -> str:
    if not res.has(key):
        return "n/a"
    median, spread = cell(res, key)
    return f"{median} x ({spread})"


def blobs_section(res: Results, cfg: Config) -> list[str]:
    """The Markdown lines of the section; none when the workload did not run."""
    facts = res.extra.get("blobs.small")
    if not facts:
        return []
    lines = [
        "## Small blobs: Blob/upload over the WebSocket against HTTP upload",
        "",
        "p50 latency of one upload (us) on a session opened already, reference server;"
        " each ratio is taken within a repetition (median, min - max).",
        "",
        "| size | "
        + " | ".join(h for _, h in WAYS)
        + " | "
        + " | ".join(h for _, h in RATIOS)
        + " |",
        "|---|" + "---:|" * (len(WAYS) + len(RATIOS)),
    ]
    for size in facts["sizes"]:
        cells = [cell(res, f"blobs.small.{size}.{way}.p50")[0] for way, _ in WAYS]
        cells += [ratio_cell(res, f"ratio.blobs.small.{size}.{r}") for r, _ in RATIOS]
        lines.append(f"| {size_label(size)} | " + " | ".join(cells) + " |")
    lines.append("")
    for way, label in (("jmap", "the default compression"), ("jmap_plain", "no compression")):
        key = f"blobs.small.crossover.{way}_kib"
        if res.has(key):
            median, spread = cell(res, key)
            lines.append(
                f"- `Blob/upload` is the faster way up to {median} KiB ({spread}) with {label}"
                " (where the ratio crosses 1, log-linear between the sizes around it)."
            )
    limit = facts["limit_now"]
    lines.append(
        f"- `jmapws_sync.blobs.JMAP_UPLOAD_LIMIT` in this run: {limit:,} bytes"
        f" ({fmt(limit / KIB)} KiB)."
    )
    blob_set = facts["max_size_blob_set"]
    lines.append(
        f"- The server's maxSizeBlobSet: {blob_set:,} bytes, on the decoded octets, so a 1 MiB"
        f" blob fits; its base64 (1.33 MiB) counts against maxSizeRequest"
        f" ({facts['max_size_request']:,} bytes here)."
        if blob_set is not None
        else "- The server sets no maxSizeBlobSet."
    )
    lines += [
        "",
        f"Sizes: {cfg.blob_small_n} uploads per way, size and repetition (after a few"
        " unrecorded), the ways interleaved upload by upload in a rotated order; the same"
        " random bytes for every upload of one size.",
        "",
    ]
    return lines
