"""call(): correlation across threads, errors, timeouts and limits, on the reference server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import jmapws_sync as jws
from jmapws_sync.testing import NOTES, ReferenceServer

from .conftest import ALICE


def echo(value: object) -> jws.Request:
    return jws.Request(
        using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"v": value}, "e")]
    )


def run_threads(n: int, target: Callable[[int], None], timeout: float = 60) -> list[BaseException]:
    """Run target(i) in n threads released together; return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        try:
            barrier.wait(10)
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a caller hung"
    return errors


def test_call_returns_the_response(ws: jws.WsSession) -> None:
    """A single call gets its Response with the echoed arguments."""
    reply = ws.call(echo("hi"), timeout=5)
    assert reply.get("e") == {"v": "hi"}
    assert reply.request_id is not None


def test_sixteen_threads_two_hundred_calls_each_shuffled(server: ReferenceServer) -> None:
    """16 threads x 200 calls answered in shuffled order: every caller gets its own answer."""
    server.reorder(4)  # the session allows 4 in flight (maxConcurrentRequests)
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:

        def caller(i: int) -> None:
            for j in range(200):
                assert ws.call(echo([i, j]), timeout=20).get("e") == {"v": [i, j]}

        assert run_threads(16, caller) == []
        assert ws.late_answers == 0


def test_request_error_goes_to_its_caller_only(ws: jws.WsSession) -> None:
    """A RequestError for one call raises RequestFailed there; a parallel call succeeds."""
    bad = jws.Request(using=["urn:example:nope"], method_calls=[jws.Invocation("X/y", {}, "c")])
    with pytest.raises(jws.RequestFailed) as info:
        ws.call(bad, timeout=5)
    assert info.value.problem.type == "urn:ietf:params:jmap:error:unknownCapability"
    assert ws.call(echo(1), timeout=5).get("e") == {"v": 1}
    with pytest.raises(TimeoutError):
        ws.next_frame(timeout=0.1)  # nothing leaked to the queue


def test_call_answers_never_reach_next_frame_but_send_request_answers_do(
    ws: jws.WsSession,
) -> None:
    """Answers to call() are private; answers to send_request(id=...) are queued."""
    ws.send_request(echo("mine"), id="user-1")
    assert ws.call(echo("call"), timeout=5).get("e") == {"v": "call"}
    frame = ws.next_frame(timeout=5)
    assert isinstance(frame, jws.Response)
    assert frame.request_id == "user-1"
    with pytest.raises(TimeoutError):
        ws.next_frame(timeout=0.1)


def test_connection_drop_wakes_fifty_waiting_callers_within_a_second(
    server: ReferenceServer,
) -> None:
    """50 callers waiting on a server that stopped answering all wake within 1 s of a reset."""
    server.drop_requests(True)
    with jws.WsSession.open(server.ws_url, auth=ALICE, timeout=5) as ws:
        errors: list[BaseException] = []
        woke: list[float] = []
        sent = threading.Semaphore(0)

        def caller(i: int) -> None:
            try:
                sent.release()
                ws.call(echo(i), timeout=30)
            except BaseException as exc:
                errors.append(exc)
            woke.append(time.monotonic())

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for _ in range(50):
            assert sent.acquire(timeout=10)
        assert server.wait_for_requests(50, timeout=10)  # every request has reached the server
        reset_at = time.monotonic()
        server.reset_all()
        for t in threads:
            t.join(5)
        assert len(errors) == 50
        assert all(isinstance(e, jws.TransportError) for e in errors)
        assert max(woke) - reset_at < 1.0


def test_late_answer_after_timeout_is_dropped_and_counted(
    ws: jws.WsSession, server: ReferenceServer
) -> None:
    """A call that timed out: its late answer is dropped (counted), never queued."""
    server.delay(0.3)
    with pytest.raises(TimeoutError):
        ws.call(echo("slow"), timeout=0.05)
    ws.send_request(echo("marker"), id="marker")  # answered after the late one
    frame = ws.next_frame(timeout=5)
    assert isinstance(frame, jws.Response)
    assert frame.request_id == "marker"
    assert ws.late_answers == 1
    with pytest.raises(TimeoutError):
        ws.next_frame(timeout=0.1)


def test_max_concurrent_requests_is_respected(server: ReferenceServer) -> None:
    """With the Session resource known, 12 threads never trip maxConcurrentRequests (4)."""
    server.delay(0.02)
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as ws:
        assert ws.session is not None
        assert ws.session.core.max_concurrent_requests == 4

        def caller(i: int) -> None:
            for j in range(5):
                ws.call(echo([i, j]), timeout=20)

        assert run_threads(12, caller) == []


def test_without_the_limit_the_server_refuses(server: ReferenceServer) -> None:
    """Control: with no known limit, the same load gets limit errors from the server."""
    server.delay(0.05)
    with jws.WsSession.open(server.ws_url, auth=ALICE, timeout=5) as ws:

        def caller(i: int) -> None:
            ws.call(echo(i), timeout=20)

        errors = run_threads(12, caller)
    assert errors
    assert all(isinstance(e, jws.RequestFailed) for e in errors)
    assert {e.problem.limit for e in errors} == {"maxConcurrentRequests"}  # type: ignore[attr-defined]


def test_slot_wait_counts_against_the_timeout(server: ReferenceServer) -> None:
    """A caller waiting for a free slot times out within its own timeout."""
    server.drop_requests(True)
    with jws.WsSession.open(
        server.ws_url, auth=ALICE, timeout=5, max_concurrent_requests=1, close_timeout=0.2
    ) as ws:
        outcome: list[BaseException] = []

        def hold_the_slot() -> None:
            try:
                ws.call(echo(0), timeout=5)
            except jws.JmapWsError as exc:
                outcome.append(exc)

        blocker = threading.Thread(target=hold_the_slot)
        blocker.start()
        assert server.wait_for_requests(1, timeout=5)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="slot"):
            ws.call(echo(1), timeout=0.2)
        assert time.monotonic() - start < 1.0
        ws.close(timeout=0)
        blocker.join(5)
        assert isinstance(outcome[0], jws.SessionClosed)  # woken by close(), not its timeout


def test_back_references_resolved_by_the_server(ws: jws.WsSession, server: ReferenceServer) -> None:
    """A builder's back-reference (#ids from /list/*/id) is evaluated by the server."""
    account = server.account_id("alice")
    for title in ("one", "two"):
        server.change_note("alice", title=title)
    b = jws.RequestBuilder(using=[jws.CORE, NOTES])
    listed = b.call("Note/get", {"accountId": account, "ids": None, "properties": ["id"]})
    again = b.call("Note/get", {"accountId": account, "ids": listed.ref("/list/*/id")})
    reply = ws.call(b.build(), timeout=5)
    titles = sorted(n["title"] for n in reply.get(again.call_id)["list"])
    assert titles == ["one", "two"]


def test_method_error_stays_in_the_response(ws: jws.WsSession) -> None:
    """An unknown method is a MethodError from Response.get, not a RequestFailed."""
    b = jws.RequestBuilder(using=[jws.CORE])
    bad = b.call("Core/nope", {})
    reply = ws.call(b.build(), timeout=5)
    with pytest.raises(jws.MethodError) as info:
        reply.get(bad.call_id)
    assert info.value.type == "unknownMethod"


def test_call_after_close_is_session_closed(ws: jws.WsSession) -> None:
    """call() on a closed session raises SessionClosed at once."""
    ws.close()
    with pytest.raises(jws.SessionClosed):
        ws.call(echo(1), timeout=5)
