"""The benchmark server: jmapws_sync's ReferenceServer in a process of its own.

Run by ``benchmarks/run.py``; usable alone too::

    python benchmarks/serve.py

It listens on 127.0.0.1 on a free port and prints one JSON line on stdout with the
port and URLs. Then it reads commands from stdin, one per line, and answers each with
one line on stdout:

* ``flood N ACCOUNT`` - start ``push_flood(N, ACCOUNT)`` (returns at once) -> ``ok``;
* ``ping`` -> ``ok`` (to check the control channel);
* ``cpu`` -> the server process's CPU seconds so far (all threads);
* ``quit``, or stdin closing, or SIGTERM -> stop and exit.

Each benchmark workload uses its own user, so that a push flood reaches one session.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from jmapws_sync.testing import ReferenceServer

#: Users (password "secret") and what they are for.
USERS = {
    "alice": "secret",  # round trips, concurrency, large answers, connect/close
    "flood": "secret",  # the push-drain workload: push_flood goes to this user only
    "idle": "secret",  # the 200 idle sessions
}
#: Big enough for a 16 MiB Core/echo (the request carries the payload too).
MAX_SIZE_REQUEST = 64 * 1024 * 1024
#: Large enough that the Session resource does not cap 16 threads calling at once.
MAX_CONCURRENT_REQUESTS = 64


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = ReferenceServer(
        users=USERS,
        max_size_request=MAX_SIZE_REQUEST,
        max_concurrent_requests=MAX_CONCURRENT_REQUESTS,
        max_calls_in_request=16,
    )
    server.start()
    done = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        done.set()
        server.stop()

    signal.signal(signal.SIGTERM, on_term)
    facts = {
        "port": server.port,
        "base_url": server.base_url,
        "session_url": server.session_url,
        "api_url": server.api_url,
        "ws_url": server.ws_url,
        "pid": os.getpid(),
    }
    print(json.dumps(facts), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            command = words[0]
            if command == "quit":
                break
            if command == "ping":
                answer = "ok"
            elif command == "flood" and len(words) == 3:
                server.push_flood(int(words[1]), words[2], wait=False)
                answer = "ok"
            elif command == "cpu":
                answer = f"{time.process_time():.6f}"
            else:
                answer = f"error unknown command {line.strip()!r}"
            print(answer, flush=True)
    finally:
        if not done.is_set():
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
