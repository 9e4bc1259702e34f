"""A ReferenceServer in a child process, driven over a pipe.

For measurements of the client alone (benchmarks, soak runs): the server's threads, CPU
time and memory are then another process's. The parent writes the server's options as
one JSON line; the child starts the server and answers with one JSON line of facts
(``port``, ``base_url``, ``ws_url``, ``api_url``, ``pid``); then each JSON line
``{"call": NAME, "args": [...], "kwargs": {...}}`` runs that :class:`ReferenceServer`
method (or, with a dotted name, a method of an attribute, such as ``"store.state"``) and
is answered by ``{"ok": RESULT}`` (a dataclass, such as ``blob_stats()``'s, as an
object) or ``{"error": MESSAGE}``. ``{"call": "cpu"}`` gives the
child's CPU seconds. The child stops when its stdin closes. Options, passwords included,
go through the pipe, never the command line::

    with ServerProcess(users={"alice": "secret"}) as server:
        server.facts["base_url"]
        server.call("change_note", "alice", title="x")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from typing import IO, Any

__all__ = ["ServerProcess", "main"]

log = logging.getLogger(__name__)


class ServerProcess:
    """A reference server in a child process; :meth:`call` is safe from any thread.

    ``timeout`` bounds the start and each call.
    """

    def __init__(self, *, timeout: float = 30.0, **server_options: Any) -> None:
        self._timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jmapws_sync.testing.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._stdin: IO[str] = self.proc.stdin
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pump = threading.Thread(
            target=self._read, args=(self.proc.stdout,), name="server-child-pipe", daemon=True
        )
        self._pump.start()
        try:
            self._write(server_options)
            #: What the child said when it was up: port, base_url, ws_url, api_url, pid.
            self.facts: dict[str, Any] = json.loads(self._next_line())
        except BaseException:
            self.stop()
            raise

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._lines.put(line)
        self._lines.put(None)  # EOF: the child is gone

    def _write(self, obj: Any) -> None:
        self._stdin.write(json.dumps(obj) + "\n")
        self._stdin.flush()

    def _next_line(self) -> str:
        try:
            line = self._lines.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError("the server child did not answer in time") from None
        if line is None:
            raise RuntimeError(f"the server child exited ({self.proc.poll()})")
        return line

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run the server's method ``name`` in the child and return its (JSON) result."""
        with self._lock:
            self._write({"call": name, "args": args, "kwargs": kwargs})
            answer = json.loads(self._next_line())
        if "error" in answer:
            raise RuntimeError(f"the server child failed {name}(): {answer['error']}")
        return answer["ok"]

    def cpu(self) -> float:
        """The child's CPU seconds so far (every thread)."""
        return float(self.call("cpu"))

    def stop(self) -> None:
        """Close the pipe and wait for the child (killed if it does not exit)."""
        with self._lock:
            if not self._stdin.closed:
                self._stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _resolve(server: Any, name: str) -> Any:
    target = server
    for part in name.split("."):
        if part.startswith("_"):
            raise AttributeError(f"{name} is private")
        target = getattr(target, part)
    return target


def main() -> int:
    """The child: read the options, serve, run the commands until stdin closes."""
    from jmapws_sync.testing.server import ReferenceServer  # noqa: PLC0415 - child only

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    options = json.loads(sys.stdin.readline())
    with ReferenceServer(**options) as server:
        facts = {
            "port": server.port,
            "base_url": server.base_url,
            "ws_url": server.ws_url,
            "api_url": server.api_url,
            "session_url": server.session_url,
            "pid": os.getpid(),
        }
        print(json.dumps(facts), flush=True)
        for line in sys.stdin:  # ends at EOF: the parent closed the pipe or died
            command = json.loads(line)
            try:
                if command["call"] == "cpu":
                    result: Any = time.process_time()
                else:
                    method = _resolve(server, command["call"])
                    result = method(*command.get("args", ()), **command.get("kwargs", {}))
                    if dataclasses.is_dataclass(result) and not isinstance(result, type):
                        result = dataclasses.asdict(result)
                answer = {"ok": result}
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
