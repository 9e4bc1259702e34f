"""The "permessage-deflate" section of the report: each figure with and without, side by side.

Rows are (figure, key suffix, unit, scale); each row shows the median of
``deflate.deflate.<suffix>`` and of ``deflate.none.<suffix>`` and the median of the
ratio taken within each repetition (``ratio.deflate.<ratio>``), when there is one.
"""

from __future__ import annotations

from .config import Config
from .results import Results
from .stats import fmt
from .table import cell

#: (figure, key suffix, ratio key suffix or None, unit).
FIGURES: tuple[tuple[str, str, str | None, str], ...] = (
    ("Email/get, 200 messages: answer bytes on the wire", "bytes_email", None, "bytes"),
    ("Mailbox/get, 25 mailboxes: answer bytes on the wire", "bytes_mailbox", None, "bytes"),
    ("StateChange stream: bytes per pushed change", "bytes_push", None, "bytes"),
    ("`call()` p50, small request", "p50", "p50", "us"),
    ("push drain, `changes()` over a flood (server deflates too)", "fps", "fps", "frames/s"),
    ("push: the client's receive path alone", "client_fps", "client_fps", "frames/s"),
    ("16 MiB answer: read, inflate and decode", "decode16_ms", "decode16", "ms"),
    ("16 MiB answer: peak traced memory of that", "decode16_peak_mib", None, "MiB"),
    ("16 MiB echo: whole `call()` (the request is compressed too)", "call16_ms", None, "ms"),
    ("idle session after one call: resident memory", "idle_kib", None, "KiB"),
)


def deflate_section(res: Results, cfg: Config) -> list[str]:
    """The Markdown lines of the section; none when the workload did not run."""
    if not res.has("deflate.deflate.p50"):
        return []
    lines = [
        "## permessage-deflate: with and without",
        "",
        f"Negotiated with the reference server: `{res.extra.get('deflate.negotiated')}`."
        " Each ratio is deflate / none, taken within a repetition (bytes: none / deflate).",
        "",
        "| figure | deflate | none | ratio (min - max) | unit |",
        "|---|---:|---:|---:|---|",
    ]
    for figure, suffix, ratio, unit in FIGURES:
        with_, _ = cell(res, f"deflate.deflate.{suffix}")
        without, _ = cell(res, f"deflate.none.{suffix}")
        ratio_key = f"ratio.deflate.{ratio or suffix}"
        if res.has(ratio_key):
            median, spread = cell(res, ratio_key)
            ratio_cell = f"{median} x ({spread})"
        else:
            ratio_cell = ""
        lines.append(f"| {figure} | {with_} | {without} | {ratio_cell} | {unit} |")
    share = _idle_share(res)
    lines += ["", *_cyrus_lines(res), *share, ""]
    lines.append(
        f"Sizes: {cfg.deflate_changes} pushed changes, {cfg.push_frames // 2:,} flood frames,"
        f" {cfg.deflate_idle_sessions} idle sessions per mode, each in a fresh process after"
        " one call of a 45 KB Email/get-like answer (so that its windows are filled)."
    )
    return [*lines, ""]


def _cyrus_lines(res: Results) -> list[str]:
    out = []
    for name, label in (("email", "Email/get"), ("mailbox", "Mailbox/get")):
        nbytes = res.extra.get(f"deflate.cyrus.{name}")
        key = f"ratio.deflate.cyrus_{name}"
        if nbytes is None or not res.has(key):
            continue
        out.append(
            f"- {label} deflated as Cyrus would (zlib level 6, memLevel 9, the negotiated"
            f" window; aiohttp uses level 1): {nbytes:,} bytes, {cell(res, key)[0]} x fewer."
        )
    return out


def _idle_share(res: Results) -> list[str]:
    if not res.has("deflate.idle_extra_kib"):
        return []
    extra = res.median("deflate.idle_extra_kib")
    return [f"- What compression adds to an idle session that has been used: {fmt(extra)} KiB."]
