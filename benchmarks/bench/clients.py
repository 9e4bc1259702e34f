"""The clients under test: jmapws_sync and the baselines, behind one small interface.

Every client offers ``echo(arguments)`` (one ``Core/echo`` round trip, answer parsed into
Python objects), ``drain(n, start)`` (read ``n`` pushed StateChange frames after calling
``start()``, which asks the server to flood) and ``close()``. The baselines do the least
work their stack allows, so that they are a floor, not a straw man:

* ``websocket-client``: ``send(json.dumps(request))``, ``json.loads(recv())``; UTF-8
  validation off (we check UTF-8 in C ourselves, and its Python check costs ~0.4 s/MiB);
* ``websockets``: the same loop on ``websockets.sync.client``;
* ``HTTP POST``: ``http.client`` on one keep-alive connection to the ``apiUrl``;
* ``jmaplib``: ``jmap.push.websocket_client.WebSocketClient`` (httpx-ws underneath).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import websocket

import jmapws_sync as jws

from .server import FLOOD_END

CORE = "urn:ietf:params:jmap:core"
#: The small request of the round-trip workloads.
SMALL_ARGS: dict[str, Any] = {"hello": True, "n": 1, "text": "ping"}
#: Bound on every single wait, so that a stuck server cannot hang the run.
WAIT = 60.0


def basic_header(user: str, password: str = "secret") -> str:
    """The Authorization header value for HTTP Basic."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def request_dict(arguments: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """A JMAP request with one Core/echo call; with an id, as an RFC 8887 Request frame."""
    body: dict[str, Any] = {"using": [CORE], "methodCalls": [["Core/echo", arguments, "c0"]]}
    if request_id is not None:
        body = {"@type": "Request", **body, "id": request_id}
    return body


class LibClient:
    """jmapws_sync: ``connect()`` by discovery, then ``WsSession.call()``.

    Without compression unless ``compression="deflate"`` is passed: the baselines send
    plain frames, and a ratio against them measures the library only when it sends the
    same bytes (the cost of compression has a workload of its own, ``deflate``).
    """

    name = "jmapws_sync call()"
    key = "lib"

    def __init__(self, facts: dict[str, Any], *, user: str = "alice", **options: Any) -> None:
        options.setdefault("compression", None)
        self.ws = jws.connect(
            facts["session_url"], auth=jws.BasicAuth(user, "secret"), proxy="", **options
        )

    @staticmethod
    def request(arguments: dict[str, Any]) -> jws.Request:
        return jws.Request(
            using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", arguments, "c0")]
        )

    def echo(self, arguments: dict[str, Any]) -> Any:
        reply = self.ws.call(self.request(arguments), timeout=WAIT)
        return reply.get("c0")

    def drain(self, n: int, start: Callable[[], None]) -> int:
        """Through ``changes()``, the documented way to read push.

        Unread StateChanges merge (nothing is lost: each says "these types are now at
        these states"), so the drain ends when the flood's last frame, whose pushState is
        ``FLOOD_END``, has been handed out: all ``n`` have been read and taken in by then.
        """
        self.ws.enable_push()
        start()
        for change in self.ws.changes(timeout=WAIT):
            if change.push_state == FLOOD_END:
                return n
        return 0

    def close(self) -> None:
        self.ws.close()


class LibNextFrameClient(LibClient):
    """jmapws_sync, push read through ``next_frame()`` instead of ``changes()``."""

    name = "jmapws_sync next_frame()"
    key = "lib_next"

    def drain(self, n: int, start: Callable[[], None]) -> int:
        self.ws.enable_push()
        start()
        next_frame = self.ws.next_frame
        while True:
            frame = next_frame(WAIT)
            if type(frame) is jws.StateChange and frame.push_state == FLOOD_END:
                return n
            if frame is None:
                return 0


class WsClientLoop:
    """The floor: websocket-client's blocking send / recv and json, nothing else."""

    name = "websocket-client loop"
    key = "wsclient"

    def __init__(self, facts: dict[str, Any], *, user: str = "alice") -> None:
        self.ws = websocket.create_connection(
            facts["ws_url"],
            header=[f"Authorization: {basic_header(user)}"],
            subprotocols=["jmap"],
            skip_utf8_validation=True,
            timeout=WAIT,
        )
        self._ids = 0

    def echo(self, arguments: dict[str, Any]) -> Any:
        self._ids += 1
        self.ws.send(json.dumps(request_dict(arguments, f"r{self._ids}")))
        reply = json.loads(self.ws.recv())
        return reply["methodResponses"][0][1]

    def drain(self, n: int, start: Callable[[], None]) -> int:
        start()
        recv = self.ws.recv
        loads = json.loads
        for _ in range(n):
            loads(recv())
        return n

    def close(self) -> None:
        self.ws.close()


class WebsocketsLoop:
    """The same loop on python-websockets' synchronous client."""

    name = "websockets.sync loop"
    key = "websockets"

    def __init__(self, facts: dict[str, Any], *, user: str = "alice") -> None:
        from websockets.sync.client import connect

        self.ws = connect(
            facts["ws_url"],
            subprotocols=["jmap"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic_header(user)},
            compression=None,
            proxy=None,
            max_size=None,
            max_queue=None,
            ping_interval=None,
        )
        self._ids = 0

    def echo(self, arguments: dict[str, Any]) -> Any:
        self._ids += 1
        self.ws.send(json.dumps(request_dict(arguments, f"r{self._ids}")))
        reply = json.loads(self.ws.recv(WAIT))
        return reply["methodResponses"][0][1]

    def drain(self, n: int, start: Callable[[], None]) -> int:
        start()
        recv = self.ws.recv
        loads = json.loads
        for _ in range(n):
            loads(recv(WAIT))
        return n

    def close(self) -> None:
        self.ws.close()


class HttpPost:
    """JMAP over HTTP: POST to the apiUrl on one keep-alive ``http.client`` connection."""

    name = "HTTP POST (keep-alive)"
    key = "http"

    def __init__(self, facts: dict[str, Any], *, user: str = "alice") -> None:
        parts = urlsplit(facts["api_url"])
        self.path = parts.path
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT)
        self.headers = {
            "Authorization": basic_header(user),
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def echo(self, arguments: dict[str, Any]) -> Any:
        body = json.dumps(request_dict(arguments, None)).encode()
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        reply = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {reply}")
        return reply["methodResponses"][0][1]

    def close(self) -> None:
        self.conn.close()


class HttpPostNewConnection(HttpPost):
    """JMAP over HTTP without keep-alive: a new TCP connection per request (context only)."""

    name = "HTTP POST (new connection each)"
    key = "http_new"

    def echo(self, arguments: dict[str, Any]) -> Any:
        self.conn.close()
        return super().echo(arguments)


class JmaplibClient:
    """jmaplib's synchronous WebSocket client (one thread at a time, by its docs)."""

    name = "jmaplib WebSocketClient"
    key = "jmaplib"

    def __init__(self, facts: dict[str, Any], *, user: str = "alice") -> None:
        import httpx
        from jmap.client import JMAPClient
        from jmap.push.websocket_client import WebSocketClient

        self.client = JMAPClient.connect(
            facts["session_url"], auth=httpx.BasicAuth(user, "secret"), timeout=WAIT
        )
        self.ws = WebSocketClient(self.client, max_message_bytes=64 * 1024 * 1024)
        self.ws.open()

    def echo(self, arguments: dict[str, Any]) -> Any:
        with self.ws.batch() as batch:
            handle = batch.add("Core/echo", arguments)
        return handle.result

    def drain(self, n: int, start: Callable[[], None]) -> int:
        self.ws.enable_push()
        start()
        count = 0
        for _change in self.ws.notifications():
            count += 1
            if count >= n:
                break
        return count

    def close(self) -> None:
        self.ws.close()
        self.client.close()


def jmaplib_status() -> str:
    """Whether jmaplib's sync WebSocket client is importable, and its version."""
    try:
        from importlib.metadata import version

        import httpx_ws  # noqa: F401
        from jmap.push.websocket_client import WebSocketClient  # noqa: F401
    except ImportError as exc:
        return f"not available ({exc})"
    return f"jmaplib {version('jmaplib')} (httpx-ws {version('httpx-ws')})"


def timed(fn: Callable[[], Any]) -> float:
    """Seconds that ``fn()`` took."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
