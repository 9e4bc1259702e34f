"""Large answers: 1 MiB and 16 MiB Core/echo Responses, time and peak memory.

For each size: ``jws.decode(text)`` of the Response against ``json.loads(text)`` (the
floor), a whole ``call()`` (encode, send, server, receive, decode) against a whole bare
websocket-client round trip, and the ratios of each pair per repetition. Peak memory
(tracemalloc, every thread's Python allocations) is measured in separate runs, so that its
overhead stays out of the timings: decoding alone, then whole round trips.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import TYPE_CHECKING, Any

import jmapws_sync as jws

from .clients import LibClient, WsClientLoop, request_dict, timed
from .config import MIB, Config
from .results import Results
from .stats import fmt

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess


def big_arguments(size: int) -> dict[str, Any]:
    """Core/echo arguments whose JSON is about ``size`` bytes: a list of note-like objects."""
    item = {
        "id": "n0000000",
        "title": "Quarterly planning notes, second draft",
        "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3,
        "keywords": {"$seen": True, "work": True},
        "size": 1234,
        "receivedAt": "2025-11-25T20:00:00Z",
    }
    each = len(json.dumps(item)) + 2
    count = max(1, (size - 200) // each)
    return {"notes": [{**item, "id": f"n{i:07d}"} for i in range(count)]}


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """1 MiB and 16 MiB Responses: decode time, whole-call time, and peak memory."""
    facts = server.facts
    lib = LibClient(facts, max_message_size=256 * MIB)
    bare = WsClientLoop(facts)
    try:
        for size in cfg.large_sizes:
            label = f"{size // MIB}MiB"
            arguments = big_arguments(size)
            bare.ws.send(json.dumps(request_dict(arguments, "capture")))
            text = bare.ws.recv()
            res.extra[f"large.{label}.bytes"] = len(text.encode())
            for _rep in range(cfg.reps):
                gc.collect()
                t_decode = timed(lambda text=text: jws.decode(text))
                gc.collect()
                t_loads = timed(lambda text=text: json.loads(text))
                gc.collect()
                t_lib = timed(lambda a=arguments: lib.echo(a))
                gc.collect()
                t_bare = timed(lambda a=arguments: bare.echo(a))
                res.add(f"large.{label}.decode_ms", t_decode * 1000)
                res.add(f"large.{label}.loads_ms", t_loads * 1000)
                res.add(f"large.{label}.lib_ms", t_lib * 1000)
                res.add(f"large.{label}.wsclient_ms", t_bare * 1000)
                res.add(f"ratio.large.{label}.decode/loads", t_decode / t_loads)
                res.add(f"ratio.large.{label}.lib/wsclient", t_lib / t_bare)
            # Peak memory: tracemalloc (every thread's Python allocations), in separate runs
            # so that its overhead stays out of the timings above. Decoding alone first
            # (what the answer costs to hold), then whole round trips (sending included).
            for key, parse in (("decode", jws.decode), ("loads", json.loads)):
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                parsed = parse(text)
                peak = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
                del parsed
                res.add(f"large.{label}.{key}_peak_mib", peak / MIB)
            for key, client in (("lib", lib), ("wsclient", bare)):
                for _ in range(min(cfg.reps, 3)):
                    gc.collect()
                    tracemalloc.start()
                    base = tracemalloc.get_traced_memory()[0]
                    answer = client.echo(arguments)
                    peak = tracemalloc.get_traced_memory()[1] - base
                    tracemalloc.stop()
                    del answer
                    res.add(f"large.{label}.{key}_peak_mib", peak / MIB)
            del arguments, text
            gc.collect()
            print(
                f"  large {label}: decode {fmt(res.median(f'large.{label}.decode_ms'))} ms"
                f" (json.loads {fmt(res.median(f'large.{label}.loads_ms'))} ms), call"
                f" {fmt(res.median(f'large.{label}.lib_ms'))} ms vs bare"
                f" {fmt(res.median(f'large.{label}.wsclient_ms'))} ms",
                flush=True,
            )
    finally:
        lib.close()
        bare.close()
