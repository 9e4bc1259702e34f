"""The rows of the "Every workload" table: (workload, figure, median, min - max, unit).

One function per workload, in the order the table shows them; a figure that was not
measured has no row (except a push client's "server busy", shown "n/a" beside its rate).
"""

from __future__ import annotations

from .config import MIB, Config
from .results import Results
from .stats import fmt
from .targets import NAMES

Row = tuple[str, str, str, str, str]
#: The round-trip clients, in table order; the ratios are call() against the others.
RT_KEYS = ("lib", "wsclient", "websockets", "http", "http_new", "jmaplib")
PUSH_KEYS = ("lib", "lib_next", "wsclient", "websockets", "jmaplib")
#: The rows of one large-answer size: (figure, key with ``{label}`` for the size, unit).
LARGE_FIGURES = (
    ("`jws.decode(text)`", "large.{label}.decode_ms", "ms"),
    ("`json.loads(text)` (floor)", "large.{label}.loads_ms", "ms"),
    ("ratio decode / json.loads", "ratio.large.{label}.decode/loads", "x"),
    ("whole call(): encode, send, server, recv, decode", "large.{label}.lib_ms", "ms"),
    ("whole bare websocket-client round trip", "large.{label}.wsclient_ms", "ms"),
    ("ratio call() / bare", "ratio.large.{label}.lib/wsclient", "x"),
    ("peak traced memory, `jws.decode(text)`", "large.{label}.decode_peak_mib", "MiB"),
    ("peak traced memory, `json.loads(text)`", "large.{label}.loads_peak_mib", "MiB"),
    ("peak traced memory, whole call()", "large.{label}.lib_peak_mib", "MiB"),
    ("peak traced memory, whole bare round trip", "large.{label}.wsclient_peak_mib", "MiB"),
)


def cell(res: Results, key: str, scale: float = 1.0) -> tuple[str, str]:
    """The median and the "min - max" of ``key``, formatted; "n/a" if not measured."""
    if not res.has(key):
        return "n/a", ""
    low, high = res.spread(key)
    return fmt(res.median(key) * scale), f"{fmt(low * scale)} - {fmt(high * scale)}"


def row(res: Results, workload: str, figure: str, key: str, unit: str) -> Row:
    return (workload, figure, *cell(res, key), unit)


def round_trip_rows(res: Results) -> list[Row]:
    wl = "round trip"
    out = [
        row(res, wl, f"{NAMES[key]} {stat}", f"rt.{key}.{stat}", "us")
        for key in RT_KEYS
        for stat in ("p50", "p99")
        if res.has(f"rt.{key}.{stat}")
    ]
    out += [
        row(res, wl, f"  server CPU per call, {NAMES[key]}", f"rt.{key}.server_us", "us")
        for key in RT_KEYS
        if res.has(f"rt.{key}.server_us")
    ]
    out += [
        row(res, wl, f"ratio p50 call() / {NAMES[base]}", f"ratio.rt.lib/{base}", "x")
        for base in RT_KEYS[1:]
        if res.has(f"ratio.rt.lib/{base}")
    ]
    return out


def concurrency_rows(res: Results, cfg: Config) -> list[Row]:
    wl = "concurrency"
    out = [
        row(res, wl, f"jmapws_sync, {n} threads, one session", f"conc.lib.{n}", "req/s")
        for n in cfg.conc_threads
        if res.has(f"conc.lib.{n}")
    ]
    out += [
        row(res, wl, f"HTTP POST, {n} threads, a connection each", f"conc.http.{n}", "req/s")
        for n in cfg.conc_threads
        if res.has(f"conc.http.{n}")
    ]
    if res.has("ratio.conc.16/1"):
        out.append(
            row(res, wl, "ratio 16 threads / 1 thread (jmapws_sync)", "ratio.conc.16/1", "x")
        )
    return out


def push_rows(res: Results, cfg: Config) -> list[Row]:
    wl = "push drain"
    names = {**NAMES, "lib": "jmapws_sync `changes()`"}
    out: list[Row] = []
    for key in PUSH_KEYS:
        if not res.has(f"push.{key}.fps"):
            continue
        n = cfg.jmaplib_push_frames if key == "jmaplib" else cfg.push_frames
        out.append(row(res, wl, f"{names[key]} ({n:,} frames)", f"push.{key}.fps", "frames/s"))
        if res.has(f"push.{key}.pauses"):
            figure = f"  reader paused at max_queue, {names[key]}"
            out.append(row(res, wl, figure, f"push.{key}.pauses", "times"))
        figure = f"  server process busy during {names[key]}"
        out.append(row(res, wl, figure, f"push.{key}.server_busy", "% core"))
    for key, label in (("lib", "changes()"), ("lib_next", "next_frame()")):
        if res.has(f"ratio.push.{key}/wsclient"):
            figure = f"ratio {label} / websocket-client loop"
            out.append(row(res, wl, figure, f"ratio.push.{key}/wsclient", "x"))
    if res.has("ratio.push.lib/websockets"):
        figure = "ratio changes() / websockets.sync loop"
        out.append(row(res, wl, figure, "ratio.push.lib/websockets", "x"))
    return out


def flood_rows(res: Results, cfg: Config) -> list[Row]:
    """``call()`` while Note changes are pushed unread, and the same calls without."""
    wl = "call() in a push flood"
    out = [
        row(res, wl, f"`call()` {stat}, {cfg.flood_changes:,} changes pushed", key, "us")
        for stat in ("p50", "p99", "max")
        if res.has(key := f"flood.lib.{stat}")
    ]
    out += [
        row(res, wl, f"`call()` {stat}, no pushes (baseline)", key, "us")
        for stat in ("p50", "p99", "max")
        if res.has(key := f"flood.base.{stat}")
    ]
    out += [
        row(res, wl, f"ratio {stat} flood / baseline", key, "x")
        for stat in ("p50", "p99", "max")
        if res.has(key := f"ratio.flood.{stat}")
    ]
    for figure, key, unit in (
        ("  calls made during the flood", "flood.lib.calls", "calls"),
        ("  calls made during the baseline", "flood.base.calls", "calls"),
        ("  changes pushed per second", "flood.lib.rate", "changes/s"),
        ("  frames waiting unread after the flood (merged)", "flood.lib.pending", "frames"),
        ("  last StateChange had the final state", "flood.lib.last_ok", "% of reps"),
    ):
        if res.has(key):
            out.append(row(res, wl, figure, key, unit))
    return out


def large_rows(res: Results, cfg: Config) -> list[Row]:
    out: list[Row] = []
    for size in cfg.large_sizes:
        label = f"{size // MIB}MiB"
        nbytes = res.extra.get(f"large.{label}.bytes")
        if nbytes is None:
            continue
        wl = f"large answer {nbytes / MIB:.1f} MiB"
        for figure, key, unit in LARGE_FIGURES:
            out.append(row(res, wl, figure, key.format(label=label), unit))
    return out


def idle_rows(res: Results, cfg: Config) -> list[Row]:
    if not res.has("idle.cpu_total_pct"):
        return []
    wl = "idle"
    period = f"{cfg.idle_sessions} sessions, {fmt(cfg.idle_seconds)} s: client CPU, whole period"
    window = f"  per {fmt(cfg.idle_seconds / cfg.idle_windows)} s window"
    return [
        row(res, wl, period, "idle.cpu_total_pct", "% core"),
        row(res, wl, window, "idle.cpu_pct", "% core"),
        row(res, wl, "resident memory per session (all-in)", "idle.rss_per_session_kib", "KiB"),
        row(
            res,
            wl,
            "resident memory per session (marginal, after the 10th)",
            "idle.rss_marginal_kib",
            "KiB",
        ),
    ]


def connect_rows(res: Results) -> list[Row]:
    return [
        row(res, "connect / close", f"{label} {stat}", f"conn.{name}.{stat}", "ms")
        for name, label in (
            ("connect", "jmapws_sync `connect()` by discovery"),
            ("close", "jmapws_sync `close()`"),
            ("bare_open", "bare websocket-client handshake (no discovery)"),
            ("bare_close", "bare websocket-client close"),
        )
        for stat in ("p50", "p99")
        if res.has(f"conn.{name}.{stat}")
    ]


#: The first-sync clients, in table order: (key, name).
SYNC_CLIENTS = (
    ("feed", "`ChangeFeed.catch_up()` over WsSession, no compression"),
    ("feed_deflate", "`ChangeFeed.catch_up()`, default compression (context)"),
    ("http", "hand-written HTTP POST loop, a page per request"),
)


def sync_rows(res: Results, cfg: Config) -> list[Row]:
    """First sync on each server (feed and loop side by side), then the resync's memory."""
    out: list[Row] = []
    cyrus = res.extra.get("sync.cyrus", {})
    for server, wl in (
        ("ref", f"first sync, {cfg.sync_objects:,} Notes (reference server)"),
        (
            "cyrus",
            f"first sync, {cyrus.get('messages', cfg.sync_cyrus_objects):,} Emails"
            f" (Cyrus {cyrus.get('version', '')})",
        ),
    ):
        clients = [(k, name) for k, name in SYNC_CLIENTS if res.has(f"sync.{server}.{k}.s")]
        for stat, label, unit in (
            ("s", "", "s"),
            ("rt", "round trips, ", "requests"),
            ("ops", "objects/s, ", "objects/s"),
            ("cpu", "  client CPU, ", "s"),
            ("server_cpu", "  server CPU, ", "s"),
        ):
            out += [
                row(res, wl, f"{label}{name}", f"sync.{server}.{key}.{stat}", unit)
                for key, name in clients
            ]
        for key, label in (("feed", "feed"), ("feed_deflate", "feed (default compression)")):
            if res.has(f"ratio.sync.{server}.{key}/http"):
                figure = f"ratio seconds {label} / HTTP loop"
                out.append(row(res, wl, figure, f"ratio.sync.{server}.{key}/http", "x"))
    if res.has("sync.rss.drop_mib"):
        wl = f"resync memory, {cfg.sync_rss_objects:,} Notes"
        for figure, key, unit in (
            ("peak RSS above the idle process, each Delta dropped", "sync.rss.drop_mib", "MiB"),
            ("peak RSS above the idle process, every object kept", "sync.rss.keep_mib", "MiB"),
            ("  RSS of the idle process (connected, feed made)", "sync.rss.drop.idle_mib", "MiB"),
            ("  RSS above idle after the resync, objects kept", "sync.rss.keep.end_mib", "MiB"),
            ("  resync seconds (dropping)", "sync.rss.drop.s", "s"),
            ("  round trips", "sync.rss.drop.rt", "requests"),
        ):
            if res.has(key):
                out.append(row(res, wl, figure, key, unit))
    return out


#: The blob-transfer clients, in table order: (key, name); "lib_file" is context.
BLOB_UPLOADERS = (
    ("lib", 'jmapws_sync `ws.upload(path, via="http")`'),
    ("curl", "curl `--data-binary @file`"),
    ("http", "`http.client` loop, 64 KiB pieces"),
)
BLOB_DOWNLOADERS = (
    ("lib", "jmapws_sync `ws.download(id, to=path)`"),
    ("lib_file", "jmapws_sync `ws.download(id, to=file)` (context: no temporary, no fsync)"),
    ("curl", "curl `-o out`"),
    ("http", "`http.client` loop, 64 KiB pieces"),
)


def blob_rows(res: Results, cfg: Config) -> list[Row]:
    """Throughput of the big file on each server, then the small uploads' crossover."""
    out: list[Row] = []
    size = res.extra.get("blobs", {}).get("size", cfg.blob_size)
    cyrus = res.extra.get("blobs.cyrus", {})
    for server, label in (("ref", "reference server"), ("cyrus", f"Cyrus {cyrus.get('version')}")):
        wl = f"blob transfer, {size / MIB:g} MiB ({label})"
        if not res.has(f"blobs.{server}.up.lib.mibs"):
            continue
        for direction, word, clients in (
            ("up", "upload", BLOB_UPLOADERS),
            ("down", "download", BLOB_DOWNLOADERS),
        ):
            base = f"blobs.{server}.{direction}"
            out += [
                row(res, wl, f"{word}, {name}", f"{base}.{key}.mibs", "MiB/s")
                for key, name in clients
                if res.has(f"{base}.{key}.mibs")
            ]
        for direction, word, clients in (
            ("up", "upload", BLOB_UPLOADERS),
            ("down", "download", BLOB_DOWNLOADERS),
        ):
            out += [
                row(res, wl, f"ratio {word} {name} / curl", key, "x")
                for client, name in clients
                if res.has(key := f"ratio.blobs.{server}.{direction}.{client}/curl")
            ]
        for stat, label_, unit in (
            ("cpu", "client CPU", "s"),
            ("server_cpu", "server CPU", "s"),
            ("rss_mib", "peak RSS above the RSS before", "MiB"),
        ):
            for direction, word, clients in (
                ("up", "upload", BLOB_UPLOADERS),
                ("down", "download", BLOB_DOWNLOADERS),
            ):
                for key, name in clients:
                    if not res.has(k := f"blobs.{server}.{direction}.{key}.{stat}"):
                        continue
                    figure = f"  {label_}, {word}, {name}"
                    if stat == "rss_mib" and key == "curl":
                        figure = f"  peak RSS of the curl process (all of it), {word}"
                    out.append(row(res, wl, figure, k, unit))
        if res.has(k := f"blobs.{server}.up.lib.rss_before_mib"):
            out.append(row(res, wl, "  RSS of this process before a transfer", k, "MiB"))
    wl = "Blob/upload vs HTTP upload (reference server)"
    for way, label_ in (("jmap", "default compression"), ("jmap_plain", "no compression")):
        if res.has(key := f"blobs.small.crossover.{way}_kib"):
            figure = f'`via="jmap"` faster than `via="http"` up to, {label_}'
            out.append(row(res, wl, figure, key, "KiB"))
    return out


def rows(res: Results, cfg: Config) -> list[Row]:
    """(workload, client/metric, median, min - max, unit) for every figure measured."""
    return [
        *round_trip_rows(res),
        *concurrency_rows(res, cfg),
        *push_rows(res, cfg),
        *flood_rows(res, cfg),
        *large_rows(res, cfg),
        *idle_rows(res, cfg),
        *connect_rows(res),
        *sync_rows(res, cfg),
        *blob_rows(res, cfg),
        *transports_rows(res, cfg),
    ]


#: The push sources of the transports workload, in table order: (key, name).
PUSH_SOURCES = (
    ("ws", 'WebSocket push (`push_via="websocket"`)'),
    ("es", 'EventSource (`push_via="eventsource"`)'),
    ("ws_plain", "WebSocket push, no compression (context)"),
)
#: The call clients of the transports workload, in table order: (key, name).
CALL_CLIENTS = (
    ("http", '`transport="http"` (POST, keep-alive pool)'),
    ("ws", '`transport="websocket"`'),
    ("ws_plain", '`transport="websocket"`, no compression (context)'),
    ("http_keep", "`http.client` keep-alive POST loop (context)"),
)


def transports_rows(res: Results, cfg: Config) -> list[Row]:
    """Push latency and CPU by source, then call() latency by transport, per server."""
    out: list[Row] = []
    wl = "push by source (reference server)"
    for stat, label in (("p50", "p50"), ("p99", "p99")):
        out += [
            row(res, wl, f"StateChange latency {label}, {name}", key, "us")
            for k, name in PUSH_SOURCES
            if res.has(key := f"transports.push.{k}.{stat}")
        ]
    out += [
        row(res, wl, f"  p50 less the pipe's round trip, {name}", key, "us")
        for k, name in PUSH_SOURCES
        if res.has(key := f"transports.push.{k}.net_p50")
    ]
    for stat in ("p50", "p99"):
        if res.has(key := f"transports.push.pipe.{stat}"):
            out.append(row(res, wl, f"  pipe round trip of a no-op call, {stat}", key, "us"))
    for stat, label in (("p50", "p50"), ("p99", "p99"), ("net_p50", "p50 less the pipe")):
        if res.has(key := f"ratio.transports.push.es/ws.{stat}"):
            out.append(row(res, wl, f"ratio latency {label} EventSource / WebSocket", key, "x"))
    for stat, label, unit in (
        ("us", "client CPU per push, the session's threads", "us"),
        ("process_us", "  client CPU per push, whole process", "us"),
        ("server_us", "  server CPU per change (commit and push)", "us"),
        (
            "received_pct",
            f"  StateChanges read per change (burst of {cfg.transports_burst:,})",
            "%",
        ),
        ("rate", "  changes per second in the burst", "changes/s"),
    ):
        out += [
            row(res, wl, f"{label}, {name}", key, unit)
            for k, name in PUSH_SOURCES
            if res.has(key := f"transports.cpu.{k}.{stat}")
        ]
    if res.has(key := "transports.cpu.base.us"):
        out.append(row(res, wl, "  the same threads per no-op pipe call (baseline)", key, "us"))
    for key, label in (
        ("ratio.transports.cpu.es/ws", "ratio client CPU per push EventSource / WebSocket"),
        (
            "ratio.transports.cpu.es/ws.server",
            "ratio server CPU per change EventSource / WebSocket",
        ),
    ):
        if res.has(key):
            out.append(row(res, wl, label, key, "x"))
    cyrus = res.extra.get("transports.cyrus", {})
    wl = f"push by source (Cyrus {cyrus.get('version')}, jmap_pushpoll {cyrus.get('pushpoll')})"
    for stat in ("p50", "max"):
        out += [
            row(res, wl, f"StateChange latency {stat}, {name}", key, "ms")
            for k, name in PUSH_SOURCES
            if res.has(key := f"transports.cyrus_push.{k}.{stat}")
        ]
    if res.has(key := "ratio.transports.cyrus_push.es/ws.p50"):
        out.append(row(res, wl, "ratio latency p50 EventSource / WebSocket", key, "x"))
    for server, label in (("ref", "reference server"), ("cyrus", f"Cyrus {cyrus.get('version')}")):
        get = "Note/get" if server == "ref" else "Mailbox/get"
        for method, call in (("echo", "Core/echo"), ("get", get)):
            base = f"transports.calls.{server}.{method}"
            if not res.has(f"{base}.ws.p50"):
                continue
            wl = f"call() by transport, {call} ({label})"
            for stat in ("p50", "p99"):
                out += [
                    row(res, wl, f"`call()` {stat}, {name}", key, "us")
                    for k, name in CALL_CLIENTS
                    if res.has(key := f"{base}.{k}.{stat}")
                ]
            out += [
                row(res, wl, f"  server CPU per call, {name}", key, "us")
                for k, name in CALL_CLIENTS
                if res.has(key := f"{base}.{k}.server_us")
            ]
            for suffix, figure in (
                ("http/ws", "ratio p50 HTTP / WebSocket"),
                ("http/ws.p99", "ratio p99 HTTP / WebSocket"),
                ("http/http_keep", "ratio p50 HTTP / `http.client` loop"),
                ("ws/ws_plain", "ratio p50 WebSocket / no compression"),
            ):
                if res.has(key := f"ratio.{base}.{suffix}"):
                    out.append(row(res, wl, figure, key, "x"))
    return out
