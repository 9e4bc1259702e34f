"""The ``jmapws-sync demo`` walk-through: discovery, a call, push, a dropped connection, a resume.

It starts a reference server in this process (the ``server`` extra) and prints each step
with its duration. Kept apart from :mod:`jmapws_sync.cli`, which only wires it up.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from ._version import __version__
from .auth import BasicAuth, basic_header
from .client import connect
from .errors import SessionError, TransportError
from .frames import CORE, RequestBuilder, StateChange
from .session import WsSession

__all__ = ["run_demo"]

EXIT_OK = 0


def _post_api(api_url: str, user: str, password: str, body: dict[str, Any]) -> dict[str, Any]:
    """A Note/set over plain HTTP, standing for 'another client somewhere else'."""
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL we built
        api_url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic_header(user, password)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        result: dict[str, Any] = json.load(reply)
    return result


def run_demo(out: TextIO) -> int:
    """Run the walk-through, printing to ``out``; return the exit status."""
    from .testing import NOTES, ReferenceServer  # noqa: PLC0415 - the server extra

    user, password = "alice", "demo-password"
    step_no = 0

    def step(title: str, action: Callable[[], Any]) -> Any:
        nonlocal step_no
        step_no += 1
        start = time.perf_counter()
        result = action()
        elapsed = (time.perf_counter() - start) * 1000
        print(f"{step_no:2d}. {title:<64} {elapsed:8.1f} ms", file=out)
        out.flush()
        return result

    def note(text: str) -> None:
        print(f"    {text}", file=out)

    with ReferenceServer(users={user: password}) as server:
        auth = BasicAuth(user, password)
        print(f"jmapws-sync {__version__} demo: a reference server on {server.base_url}", file=out)
        ws: WsSession = step(
            "discover the Session resource and open the WebSocket",
            lambda: connect(server.base_url, auth=auth, timeout=10),
        )
        resource = ws.session
        if resource is None or resource.websocket is None:  # connect() guarantees both
            raise SessionError("no Session resource after connect()")
        account = resource.primary_account(NOTES)
        note(f"GET {server.base_url}/.well-known/jmap -> {resource.url}")
        note(f"websocket {resource.websocket.url}, account {account}")

        builder = RequestBuilder(using=[CORE])
        echo = builder.call("Core/echo", {"hello": "world"})
        reply = step("call Core/echo and wait for the answer", lambda: ws.call(builder.build()))
        note(f"answer: {json.dumps(reply.get(echo.call_id))}")

        def enable() -> None:
            ws.enable_push()
            ws.call(builder.build())  # a round trip: the server has enabled push

        step("enable push (WebSocketPushEnable) and confirm with a round trip", enable)
        change_body = {
            "using": [CORE, NOTES],
            "methodCalls": [
                ["Note/set", {"accountId": account, "create": {"n": {"title": "hi"}}}, "0"]
            ],
        }

        def change_and_wait() -> StateChange:
            _post_api(server.api_url, user, password, change_body)
            return next(ws.changes(timeout=10))

        change = step(
            "another client creates a Note over HTTP; a StateChange arrives", change_and_wait
        )
        note(f"changed {json.dumps(change.changed)}, pushState {change.push_state}")
        resume_from = ws.push_state

        def drop() -> str:
            server.reset_all()
            try:
                ws.next_frame(timeout=10)
            except TransportError as exc:
                return type(exc).__name__
            return "no error"

        outcome = step("the connection drops (the server resets TCP)", drop)
        note(f"next_frame() raised {outcome}; the session is finished")
        ws.close()

        for title in ("written while we were away", "and another"):
            _post_api(
                server.api_url,
                user,
                password,
                {
                    "using": [CORE, NOTES],
                    "methodCalls": [
                        ["Note/set", {"accountId": account, "create": {"n": {"title": title}}}, "0"]
                    ],
                },
            )
        note("meanwhile two more Notes are created over HTTP")

        def resume() -> StateChange:
            again = connect(server.base_url, auth=auth, timeout=10)
            try:
                again.enable_push(push_state=resume_from)
                return next(again.changes(timeout=10))
            finally:
                again.close()

        replay = step(f"reconnect and resume push from pushState {resume_from}", resume)
        note(f"replayed {json.dumps(replay.changed)}, pushState {replay.push_state}")
    print("done: discovery, call, push, a dropped connection and a resume.", file=out)
    return EXIT_OK
