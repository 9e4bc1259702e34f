"""The targets the library is held to, and the display names of the clients.

Each target is one figure's median (mostly a ratio taken within a repetition) against a
limit: at most or at least.
"""

from __future__ import annotations

from dataclasses import dataclass

from .results import Results


@dataclass
class Target:
    """``key``'s median must be at most (``at_most``) or at least ``limit``."""

    name: str
    key: str
    limit: float
    at_most: bool
    unit: str = "x"

    def met(self, res: Results) -> bool | None:
        """Whether it is met; None when the figure was not measured."""
        if not res.has(self.key):
            return None
        value = res.median(self.key)
        return value <= self.limit if self.at_most else value >= self.limit


TARGETS = [
    Target("call() p50 <= 1.25 x bare websocket-client loop", "ratio.rt.lib/wsclient", 1.25, True),
    Target("call() p50 <= 0.33 x HTTP POST", "ratio.rt.lib/http", 0.33, True),
    Target(
        "push drain (changes()) >= 0.75 x bare loop frames/s",
        "ratio.push.lib/wsclient",
        0.75,
        False,
    ),
    Target("16 threads >= 1.5 x one thread (requests/s)", "ratio.conc.16/1", 1.5, False),
    Target(
        "idle: <= 0.5 % of one core, all sessions together", "idle.cpu_total_pct", 0.5, True, "%"
    ),
    Target("idle: <= 100 KiB resident per session", "idle.rss_per_session_kib", 100.0, True, "KiB"),
    Target("close() p99 <= 50 ms", "conn.close.p99", 50.0, True, "ms"),
    Target(
        "deflate: Email/get of 200 >= 5 x fewer bytes (aiohttp, level 1)",
        "ratio.deflate.bytes_email",
        5.0,
        False,
    ),
    Target(
        "deflate: Email/get of 200 >= 5 x fewer bytes (as Cyrus deflates)",
        "ratio.deflate.cyrus_email",
        5.0,
        False,
    ),
    Target("deflate: call() p50 <= 1.15 x without", "ratio.deflate.p50", 1.15, True),
    Target(
        "deflate: <= 64 KiB more per used idle session",
        "deflate.idle_extra_kib",
        64.0,
        True,
        "KiB",
    ),
    Target(
        "sync: 100,000-Note resync <= 64 MiB peak RSS above the idle process",
        "sync.rss.drop_mib",
        64.0,
        True,
        "MiB",
    ),
    *(
        Target(
            f"blobs: {word} of a big file >= 0.9 x curl MiB/s ({label})",
            f"ratio.blobs.{server}.{direction}.lib/curl",
            0.9,
            False,
        )
        for server, label in (("ref", "reference server"), ("cyrus", "Cyrus"))
        for direction, word in (("up", "upload"), ("down", "download"))
    ),
]

#: Client keys (as in the result keys) to the names the report shows.
NAMES = {
    "lib": "jmapws_sync `call()`",
    "lib_next": "jmapws_sync `next_frame()`",
    "wsclient": "websocket-client loop (floor)",
    "websockets": "websockets.sync loop",
    "http": "HTTP POST, keep-alive",
    "http_new": "HTTP POST, new connection each (context)",
    "jmaplib": "jmaplib WebSocketClient",
}
