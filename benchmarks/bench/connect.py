"""Connect / close: ``jws.connect()`` by discovery and ``close()``, latency in ms.

Each repetition opens and closes ``connect_n`` sessions as user "alice": ``connect()``
(Session resource fetched over HTTP, then the WebSocket handshake) and ``close()``, each
followed by a bare websocket-client handshake (no discovery) and close as the floor. Per
repetition: p50 and p99 of each, and the ratio of connect()'s p50 to the bare handshake's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import websocket

import jmapws_sync as jws

from .clients import basic_header
from .config import Config
from .results import Results
from .stats import fmt, percentile

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """connect() by discovery and close(): latency; a bare handshake + close as the floor."""
    facts = server.facts
    auth = jws.BasicAuth("alice", "secret")
    header = [f"Authorization: {basic_header('alice')}"]
    for _rep in range(cfg.reps):
        opens, closes, bare_opens, bare_closes = [], [], [], []
        for _ in range(cfg.connect_n):
            t0 = time.perf_counter()
            ws = jws.connect(facts["session_url"], auth=auth, proxy="")
            t1 = time.perf_counter()
            ws.close()
            t2 = time.perf_counter()
            opens.append((t1 - t0) * 1000)
            closes.append((t2 - t1) * 1000)
            t0 = time.perf_counter()
            raw = websocket.create_connection(
                facts["ws_url"], header=header, subprotocols=["jmap"], timeout=10
            )
            t1 = time.perf_counter()
            raw.close()
            t2 = time.perf_counter()
            bare_opens.append((t1 - t0) * 1000)
            bare_closes.append((t2 - t1) * 1000)
        for name, values in (
            ("connect", opens),
            ("close", closes),
            ("bare_open", bare_opens),
            ("bare_close", bare_closes),
        ):
            res.add(f"conn.{name}.p50", percentile(values, 50))
            res.add(f"conn.{name}.p99", percentile(values, 99))
        res.add(
            "ratio.conn.connect/bare_open",
            percentile(opens, 50) / percentile(bare_opens, 50),
        )
    print(
        f"  connect p50 {fmt(res.median('conn.connect.p50'))} ms,"
        f" close p99 {fmt(res.median('conn.close.p99'))} ms",
        flush=True,
    )
