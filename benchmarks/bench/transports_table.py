"""The "Transports" section of the report: why the WebSocket, and push by source.

Two small tables from the ``transports`` workload: ``call()`` p50 over HTTP
(``transport="http"``) against over the WebSocket, per server and call, with the ratio
taken within each repetition; then the StateChange latency and the client's CPU per push,
EventSource against WebSocket push.
"""

from __future__ import annotations

from .config import Config
from .results import Results
from .table import cell


def ratio_cell(res: Results, key: str) -> str:
    if not res.has(key):
        return "n/a"
    median, spread = cell(res, key)
    return f"{median} x ({spread})"


def value(res: Results, key: str) -> str:
    return cell(res, key)[0]


def transports_section(res: Results, cfg: Config) -> list[str]:
    """The Markdown lines of the section; none when the workload did not run."""
    if not res.has("transports.calls.ref.echo.ws.p50"):
        return []
    cyrus = res.extra.get("transports.cyrus", {})
    calls = res.extra.get("transports.calls", {})
    lines = [
        "## Transports: why the WebSocket",
        "",
        '`call()` on a `ReconnectingSession` opened already, over HTTP (`transport="http"`:'
        " a POST to apiUrl per call, on the library's keep-alive pool) and over the WebSocket"
        ' (`transport="websocket"`, the default compression); p50 (p99) in us; the ratio'
        " HTTP / WebSocket of the p50s is taken within each repetition (median, min - max).",
        "",
        "| server | call | HTTP | WebSocket | HTTP / WebSocket"
        " | WebSocket, no compression (context) | `http.client` keep-alive POST (context) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for server, label in (("ref", "reference server"), ("cyrus", f"Cyrus {cyrus.get('version')}")):
        get = "Note/get" if server == "ref" else "Mailbox/get"
        for method, call in (("echo", "Core/echo"), ("get", get)):
            base = f"transports.calls.{server}.{method}"
            if not res.has(f"{base}.ws.p50"):
                continue
            size = calls.get(server, {}).get("answer_bytes", {}).get(method)
            what = f"{call} ({size:,} bytes)" if size else call

            def both(client: str, base: str = base) -> str:
                return (
                    f"{value(res, f'{base}.{client}.p50')} ({value(res, f'{base}.{client}.p99')})"
                )

            lines.append(
                f"| {label} | {what} | {both('http')} | {both('ws')}"
                f" | {ratio_cell(res, f'ratio.{base}.http/ws')}"
                f" | {both('ws_plain')} | {both('http_keep')} |"
            )
    lines += [
        "",
        "Byte counts are of the answer's JSON (the method's arguments). Sizes:"
        f" {cfg.transports_calls:,} calls per client, call and repetition on the reference"
        f" server, {cfg.transports_cyrus_calls:,} on Cyrus, after {cfg.rt_warmup} unrecorded,"
        " the clients interleaved in blocks of 50 calls in a rotated order.",
        "",
    ]
    if res.has("transports.push.ws.p50"):
        lines += [
            'Push by source: a session with `push_via="websocket"` and one with'
            ' `push_via="eventsource"` (the default compression), a user each; latency from'
            " just before the pipe call that makes one change to the StateChange coming out"
            " of `rs.changes()` (us), one change at a time; client CPU per push over bursts"
            f" of {cfg.transports_burst:,} changes (the session's threads and the reading"
            " thread, less a baseline of no-op pipe calls); ratios within each repetition.",
            "",
            "| server | figure | WebSocket push | EventSource | EventSource / WebSocket"
            " | WebSocket push, no compression (context) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for figure, key, ratio in (
            ("latency p50", "transports.push.{k}.p50", "ratio.transports.push.es/ws.p50"),
            ("latency p99", "transports.push.{k}.p99", "ratio.transports.push.es/ws.p99"),
            (
                "latency p50 less the pipe's round trip",
                "transports.push.{k}.net_p50",
                "ratio.transports.push.es/ws.net_p50",
            ),
            ("client CPU per push (us)", "transports.cpu.{k}.us", "ratio.transports.cpu.es/ws"),
            (
                "server CPU per change (us)",
                "transports.cpu.{k}.server_us",
                "ratio.transports.cpu.es/ws.server",
            ),
            ("StateChanges read per change in a burst (%)", "transports.cpu.{k}.received_pct", ""),
        ):
            lines.append(
                f"| reference server | {figure} | {value(res, key.format(k='ws'))}"
                f" | {value(res, key.format(k='es'))}"
                f" | {ratio_cell(res, ratio) if ratio else ''}"
                f" | {value(res, key.format(k='ws_plain'))} |"
            )
        if res.has("transports.cyrus_push.ws.p50"):
            label = f"Cyrus {cyrus.get('version')}, jmap_pushpoll {cyrus.get('pushpoll')}"
            for stat in ("p50", "max"):
                key = f"transports.cyrus_push.{{k}}.{stat}"
                ratio = "ratio.transports.cyrus_push.es/ws.p50" if stat == "p50" else ""
                lines.append(
                    f"| {label} | latency {stat} (ms) | {value(res, key.format(k='ws'))}"
                    f" | {value(res, key.format(k='es'))}"
                    f" | {ratio_cell(res, ratio) if ratio else ''} | |"
                )
        pipe = value(res, "transports.push.pipe.p50")
        lines += [
            "",
            f"The pipe's round trip (a no-op call, p50) was {pipe} us: the change is committed"
            " inside it, so the latency is an upper bound of the push's and the latency less"
            f" the round trip a lower bound. Sizes: {cfg.transports_changes:,} changes per"
            " source and repetition, interleaved change by change"
            + (
                f"; on Cyrus {cfg.transports_cyrus_changes} per repetition (an IMAP APPEND"
                " each, after a random pause of up to one poll interval), read by both"
                " sessions at once"
                if res.has("transports.cyrus_push.ws.p50")
                else ""
            )
            + ".",
            "",
        ]
    return lines
