"""permessage-deflate: the same workloads with ``compression="deflate"`` and with ``None``.

Every figure is taken for both modes in the same repetition, the order of the two rotated
from one repetition to the next; each ratio is deflate / none within the repetition.

* Bytes on the wire: a session goes through a byte-counting relay (:mod:`.relay`) and
  asks for what an ``Email/get`` of 200 messages and a ``Mailbox/get`` of 25 mailboxes
  return (realistic shapes from :mod:`.jmapdata`, echoed by ``Core/echo``: the reference
  server keeps no mail); the answer's bytes (server to client) are counted, the
  handshake not. The reference server runs on aiohttp, which deflates at zlib's level 1;
  Cyrus deflates at level 6 with memLevel 9, so the same answers are also deflated here
  as Cyrus would, with the window negotiated, and counted. Then a stream of StateChanges:
  another connection makes ``deflate_changes`` Note/set changes one by one, each pushed
  to the relayed session.
* ``call()`` p50 of the small round-trip request, the two sessions interleaved in blocks.
* Push drain: ``changes()`` frames/s of a flood (the server's cost too: aiohttp deflates
  each frame), and the client's receive path alone (a :class:`FrameReader` over
  StateChanges, each with its own states, deflated as Cyrus would, then ``jws.decode``).
* A 16 MiB answer: the client's receive path alone (a :class:`FrameReader` over the
  answer's bytes as the server sent them, inflated or not, then ``jws.decode``) and its
  peak traced memory, and a whole ``call()`` of it.
* Idle KiB per session, each mode, after one call, so that each session's zlib streams
  exist: a fresh worker process each (:func:`.idle.idle_worker`).
"""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jmapws_sync as jws
from jmapws_sync._deflate import Inflater, Params, accept, offer
from jmapws_sync._framing import FrameReader

from . import server as bench_server
from .clients import SMALL_ARGS, WAIT
from .config import MIB, RUN_PY, Config
from .jmapdata import email_get, mailbox_get
from .large import big_arguments
from .relay import Relay
from .results import Results
from .stats import fmt, percentile

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

#: (result key, the ``compression`` argument).
MODES: tuple[tuple[str, str | None], ...] = (("deflate", "deflate"), ("none", None))
#: The wire and drain sessions: the flood user's (push_flood reaches all its sessions).
AUTH = jws.BasicAuth("flood", "secret")
#: The long-lived sessions of the timings: another user, so that no flood reaches them
#: (their readers would inflate it in the background of every later timing).
TIMED = jws.BasicAuth("alice", "secret")
ACCOUNT = bench_server.FLOOD_ACCOUNT
#: The reference server's Notes capability (what Note/set needs in ``using``).
NOTES = "urn:x-jmapws-sync:notes"


def _echo(arguments: dict[str, Any]) -> jws.Request:
    return jws.Request(
        using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", arguments, "c0")]
    )


def _open(url: str, compression: str | None, auth: jws.BasicAuth = AUTH) -> jws.WsSession:
    return jws.WsSession.open(
        url, auth=auth, proxy="", compression=compression, max_message_size=256 * MIB
    )


def _wire(
    relay: Relay, url: str, direct: str, compression: str | None, cfg: Config
) -> dict[str, float]:
    """Answer bytes of Email/get and Mailbox/get, and bytes per pushed StateChange."""
    out: dict[str, float] = {}
    with _open(url, compression) as ws, _open(direct, None) as writer:
        for name, arguments in (("email", email_get(200)), ("mailbox", mailbox_get(25))):
            down0 = relay.counts()[1]
            ws.call(_echo(arguments), timeout=WAIT)
            out[name] = relay.counts()[1] - down0
            out[f"{name}_json"] = len(json.dumps(arguments, separators=(",", ":")))
        ws.enable_push(["Note"])
        down0 = relay.counts()[1]
        state = ""
        for i in range(cfg.deflate_changes):
            create = {"n": {"title": f"note {i}", "body": "x"}}
            reply = writer.call(
                jws.Request(
                    using=[jws.CORE, NOTES],
                    method_calls=[
                        jws.Invocation("Note/set", {"accountId": ACCOUNT, "create": create}, "s")
                    ],
                ),
                timeout=WAIT,
            )
            state = reply.get("s")["newState"]
        for change in ws.changes(timeout=WAIT):
            if change.changed.get(ACCOUNT, {}).get("Note") == state:
                break
        out["push"] = (relay.counts()[1] - down0) / cfg.deflate_changes
    return out


def _as_cyrus_sends(arguments: dict[str, Any], bits: int) -> int:
    """The bytes of the echo's answer deflated as Cyrus 3.6 deflates (imap/http_ws.c: zlib
    level 6, memLevel 9) with a ``bits`` window, frame header included: aiohttp, which the
    reference server runs on, compresses at level 1, so its bytes are not every server's."""
    text = json.dumps(
        {
            "@type": "Response",
            "methodResponses": [["Core/echo", arguments, "c0"]],
            "sessionState": "s",
            "requestId": "r1",
        }
    ).encode()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -bits, 9)
    return len(_server_frame(deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH), True)) - 4


def _server_frame(payload: bytes, compressed: bool) -> bytes:
    """One final unmasked text frame, as a server writes it (RSV1 when compressed)."""
    head = 0xC1 if compressed else 0x81
    n = len(payload)
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return bytes((head, 126)) + n.to_bytes(2, "big") + payload
    return bytes((head, 127)) + n.to_bytes(8, "big") + payload


def _receive_path(text: str) -> dict[str, bytes]:
    """The 16 MiB answer's wire bytes per mode: deflated the way the server does (zlib's
    default level, the 12-bit window we ask for), or plain."""
    raw = text.encode()
    deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12)
    packed = deflater.compress(raw) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return {"deflate": _server_frame(packed[:-4], True), "none": _server_frame(raw, False)}


def _push_wire(n: int, bits: int) -> dict[str, bytes]:
    """``n`` StateChange frames per mode, each with its own state, as a server sends them."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -bits, 9)
    out: dict[str, list[bytes]] = {"deflate": [], "none": []}
    for i in range(n):
        text = json.dumps(
            {
                "@type": "StateChange",
                "changed": {ACCOUNT: {"Email": f"J{100_000 + i}", "Mailbox": f"m{i // 7}"}},
                "pushState": f"p{1_000_000 + i}",
            }
        ).encode()
        packed = deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH)
        out["deflate"].append(_server_frame(packed[:-4], True))
        out["none"].append(_server_frame(text, False))
    return {key: b"".join(frames) for key, frames in out.items()}


def _read_pushes(wire: bytes, n: int, compressed: bool, bits: int) -> float:
    """Frames/s of the client's receive path alone: read, inflate, decode ``n`` frames."""
    inflater = Inflater(Params(header=offer(), server_bits=bits)) if compressed else None
    read = FrameReader(io.BytesIO(wire).read, max_message_size=MIB, inflater=inflater).read
    decode = jws.decode
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        decode(read()[1])  # type: ignore[arg-type]
    return n / (time.perf_counter() - t0)


def _read_and_decode(wire: bytes, compressed: bool) -> Any:
    inflater = Inflater(Params(header=offer(), server_bits=12)) if compressed else None
    reader = FrameReader(io.BytesIO(wire).read, max_message_size=256 * MIB, inflater=inflater)
    _opcode, text = reader.read()
    assert isinstance(text, str)
    return jws.decode(text)


def _timed(fn: Any) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _peak_mib(fn: Any) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return peak / MIB


def _small_calls(sessions: dict[str, jws.WsSession], cfg: Config, rep: int) -> dict[str, float]:
    """p50 of ``call()`` per mode, in interleaved blocks of 50 calls."""
    request = _echo(SMALL_ARGS)
    times: dict[str, list[float]] = {key: [] for key in sessions}
    order = list(sessions) if rep % 2 == 0 else list(reversed(sessions))
    for key in order:
        for _ in range(cfg.rt_warmup):
            sessions[key].call(request, timeout=WAIT)
    for _block in range(cfg.rt_calls // 50):
        for key in order:
            call = sessions[key].call
            out = times[key]
            for _ in range(50):
                t0 = time.perf_counter()
                call(request, timeout=WAIT)
                out.append(time.perf_counter() - t0)
    return {key: percentile(values, 50) * 1e6 for key, values in times.items()}


def _drain(server: ServerProcess, url: str, compression: str | None, n: int) -> float:
    """Frames/s of ``changes()`` over a flood of ``n`` StateChanges."""
    with _open(url, compression) as ws:
        ws.enable_push()
        t0 = time.perf_counter()
        bench_server.flood(server, n)
        for change in ws.changes(timeout=WAIT):
            if change.push_state == bench_server.FLOOD_END:
                break
        return n / (time.perf_counter() - t0)


def _idle(ws_url: str, cfg: Config, compression: str | None) -> dict[str, Any] | str:
    spec = {
        "ws_url": ws_url,
        "n": cfg.deflate_idle_sessions,
        "seconds": 2.0,
        "windows": 1,
        "compression": compression,
        "warm": True,
    }
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--idle-worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        return proc.stderr.strip()[-400:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _side_by_side(
    res: Results,
    figure: str,
    modes: tuple[tuple[str, str | None], ...],
    take: Callable[[str], float],
    *,
    ratio: bool = False,
) -> None:
    """``take(mode)`` for each mode, in ``modes``' order, as ``deflate.<mode>.<figure>``;
    with ``ratio``, also deflate / none of this repetition as ``ratio.deflate.<figure>``."""
    taken = {key: take(key) for key, _compression in modes}
    for key, value in taken.items():
        res.add(f"deflate.{key}.{figure}", value)
    if ratio:
        res.add(f"ratio.deflate.{figure.removesuffix('_ms')}", taken["deflate"] / taken["none"])


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """Each figure with compression and without, in the same repetition."""
    ws_url = server.facts["ws_url"]
    parts = urlsplit(ws_url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 80)
    relayed = f"ws://127.0.0.1:{relay.port}{parts.path}"
    sessions = {key: _open(ws_url, compression, TIMED) for key, compression in MODES}
    negotiated = sessions["deflate"].compression
    res.extra["deflate.negotiated"] = negotiated
    bits = accept(negotiated or "permessage-deflate", ws_url).server_bits
    for name, arguments in (("email", email_get(200)), ("mailbox", mailbox_get(25))):
        res.extra[f"deflate.cyrus.{name}"] = _as_cyrus_sends(arguments, bits)
    big = big_arguments(16 * MIB)
    big_text = json.dumps(
        {"@type": "Response", "methodResponses": [["Core/echo", big, "c0"]], "sessionState": "s"}
    )
    wires = _receive_path(big_text)
    n = cfg.push_frames // 2
    pushes = _push_wire(n, bits)
    # The 16 MiB answer is half a million objects: out of the collector's sight, so that a
    # full collection in the middle of a timing does not traverse them (it did: +-3x).
    gc.collect()
    gc.freeze()
    res.extra["deflate.large_bytes"] = {key: len(wire) for key, wire in wires.items()}
    try:
        for rep in range(cfg.reps):
            modes = MODES if rep % 2 == 0 else MODES[::-1]
            for key, compression in modes:
                for name, value in _wire(relay, relayed, ws_url, compression, cfg).items():
                    res.extra[f"deflate.{key}.{name}"] = value
                    if not name.endswith("_json"):
                        res.add(f"deflate.{key}.bytes_{name}", value)
            for name in ("email", "mailbox"):
                res.add(
                    f"ratio.deflate.cyrus_{name}",
                    res.samples[f"deflate.none.bytes_{name}"][-1]
                    / res.extra[f"deflate.cyrus.{name}"],
                )
            for name in ("email", "mailbox", "push"):
                res.add(
                    f"ratio.deflate.bytes_{name}",
                    res.samples[f"deflate.none.bytes_{name}"][-1]
                    / res.samples[f"deflate.deflate.bytes_{name}"][-1],
                )
            p50 = _small_calls(sessions, cfg, rep)
            _side_by_side(res, "p50", modes, p50.__getitem__, ratio=True)
            _side_by_side(
                res, "fps", modes, lambda k: _drain(server, ws_url, dict(MODES)[k], n), ratio=True
            )
            _side_by_side(
                res,
                "client_fps",
                modes,
                lambda k: _read_pushes(pushes[k], n, k == "deflate", bits),
                ratio=True,
            )
            _side_by_side(
                res,
                "decode16_ms",
                modes,
                lambda k: _timed(lambda: _read_and_decode(wires[k], k == "deflate")) * 1000,
                ratio=True,
            )
            _side_by_side(
                res,
                "call16_ms",
                modes,
                lambda k: _timed(lambda: sessions[k].call(_echo(big), timeout=WAIT)) * 1000,
            )
        for key, _compression in MODES:
            wire = wires[key]
            res.add(
                f"deflate.{key}.decode16_peak_mib",
                _peak_mib(lambda w=wire, k=key: _read_and_decode(w, k == "deflate")),
            )
    finally:
        gc.unfreeze()
        for ws in sessions.values():
            ws.close()
        relay.close()
    for key, compression in MODES:
        out = _idle(ws_url, cfg, compression)
        if isinstance(out, str):
            res.notes.append(f"deflate idle worker ({key}) failed: {out}")
            continue
        res.add(f"deflate.{key}.idle_kib", out["rss_marginal_kib"])
        res.extra[f"deflate.{key}.idle"] = out
    if res.has("deflate.deflate.idle_kib") and res.has("deflate.none.idle_kib"):
        res.add(
            "deflate.idle_extra_kib",
            res.median("deflate.deflate.idle_kib") - res.median("deflate.none.idle_kib"),
        )
    print(
        f"  deflate ({negotiated}): Email/get bytes"
        f" {fmt(res.median('deflate.none.bytes_email'))} ->"
        f" {fmt(res.median('deflate.deflate.bytes_email'))}"
        f" ({fmt(res.median('ratio.deflate.bytes_email'))}x), call() p50"
        f" {fmt(res.median('ratio.deflate.p50'))}x, drain {fmt(res.median('ratio.deflate.fps'))}x",
        flush=True,
    )
