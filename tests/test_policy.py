"""The retry policy without sockets: classify(), Backoff and RetryState (jmapws_sync.policy)."""

from __future__ import annotations

import itertools
import random
import ssl
from typing import Any

import pytest

import jmapws_sync as jws
from jmapws_sync.policy import Action, Backoff, RetryState, Verdict, classify


def test_backoff_sequence_is_seeded_exponential_and_capped() -> None:
    """Delays: a random first one in range, then times factor with jitter, never over the cap."""
    backoff = Backoff(first=(1.0, 2.0), factor=2.0, ceiling=10.0, jitter=0.25)
    seq = list(itertools.islice(backoff.delays(random.Random(7)), 10))
    assert seq == list(itertools.islice(backoff.delays(random.Random(7)), 10))
    rng = random.Random(7)
    base = rng.uniform(1.0, 2.0)
    expected = [base]
    for _ in range(9):
        base = min(base * 2.0, 10.0)
        expected.append(base * (1.0 - 0.25 * rng.random()))
    assert seq == expected
    assert 1.0 <= seq[0] <= 2.0
    assert all(7.5 <= d <= 10.0 for d in seq[4:])
    exact = Backoff(first=(1.0, 1.0), factor=2.0, ceiling=10.0, jitter=0.0)
    assert list(itertools.islice(exact.delays(random.Random()), 6)) == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize(
    "options",
    [
        {"first": (2.0, 1.0)},
        {"first": (-1.0, 1.0)},
        {"first": (1.0, 100.0), "ceiling": 10.0},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"reset_after": -1.0},
    ],
)
def test_backoff_rejects_nonsense(options: dict[str, Any]) -> None:
    """Backoff settings that make no sense raise ValueError."""
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**options)


def _tls_failure() -> jws.TransportError:
    error = jws.TransportError("TLS certificate verification failed")
    error.__cause__ = ssl.SSLCertVerificationError("bad certificate")
    return error


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (None, Verdict.RETRY),
        (jws.ConnectionClosedError(1006), Verdict.RETRY),
        (jws.ConnectionClosedError(1011), Verdict.RETRY),
        (jws.ConnectionClosedError(1012), Verdict.RETRY),
        (jws.ConnectionClosedError(1013), Verdict.RETRY),
        (jws.ConnectionClosedError(4000), Verdict.RETRY),
        (jws.ConnectionClosedError(1002), Verdict.FATAL),
        (jws.ConnectionClosedError(1003), Verdict.FATAL),
        (jws.TransportError("reset"), Verdict.RETRY),
        (jws.KeepaliveTimeout("silent", silent_for=1.0), Verdict.RETRY),
        (_tls_failure(), Verdict.FATAL),
        (TimeoutError("slow"), Verdict.RETRY),
        (jws.HandshakeError("no", status=503), Verdict.RETRY),
        (jws.HandshakeError("no", status=429), Verdict.RETRY),
        (jws.HandshakeError("no", status=404), Verdict.FATAL),
        (jws.HandshakeError("no subprotocol"), Verdict.FATAL),
        (jws.SessionError("no", status=500), Verdict.RETRY),
        (jws.SessionError("bad body", field="state"), Verdict.FATAL),
        (jws.WebSocketUnavailable("none"), Verdict.FATAL),
        (jws.AuthenticationError("no", status=401), Verdict.REAUTH),
        (jws.AuthenticationError("expired", close_code=1008), Verdict.REAUTH),
        (jws.SessionClosed(cause=jws.ConnectionClosedError(1011)), Verdict.RETRY),
        (jws.SessionClosed(cause=jws.AuthenticationError("x")), Verdict.REAUTH),
        (jws.PushUnavailable("no push"), Verdict.FATAL),
        (ConnectionRefusedError(), Verdict.RETRY),
        (RuntimeError("bug"), Verdict.FATAL),
    ],
)
def test_classify_table(error: BaseException | None, verdict: Verdict) -> None:
    """classify() follows the documented retry table."""
    assert classify(error) is verdict


EXACT = Backoff(first=(1.0, 1.0), factor=2.0, ceiling=10.0, jitter=0.0, reset_after=30.0)


def test_retry_state_waits_longer_after_each_failure_and_counts_attempts() -> None:
    """Retryable failures: WAIT with the backoff sequence; attempts count up; values immutable."""
    state, rng = RetryState(EXACT), random.Random(1)
    delays = []
    for _ in range(6):
        state = state.attempted()
        decision, state = state.after(jws.TransportError("refused"), rng)
        assert decision.action is Action.WAIT
        delays.append(decision.delay)
    assert delays == [1, 2, 4, 8, 10, 10]
    assert state.attempts == 6
    first = RetryState(EXACT)
    first.after(TimeoutError(), rng)
    assert first == RetryState(EXACT)  # after() returned a new state, this one is unchanged


def test_retry_state_reauthenticates_once_then_gives_up() -> None:
    """401: REAUTH once; refused again before a connection was up: GIVE_UP."""
    state, rng = RetryState(EXACT), random.Random(1)
    refused = jws.AuthenticationError("no", status=401)
    decision, state = state.after(refused, rng)
    assert decision.action is Action.REAUTH
    decision, state = state.after(jws.TransportError("reset"), rng)
    assert decision.action is Action.WAIT  # the fresh credentials met a network failure
    decision, _ = state.after(refused, rng)
    assert decision.action is Action.GIVE_UP


def test_retry_state_starts_again_once_connected() -> None:
    """A connection up resets the attempts; only a long one the backoff and the
    re-authentication (issue 21, defect 2: a 1008 right after each handshake was a storm)."""
    state, rng = RetryState(EXACT), random.Random(1)
    for _ in range(3):
        state = state.attempted()
        _, state = state.after(jws.TransportError("refused"), rng)
    _, state = state.after(jws.AuthenticationError("expired", close_code=1008), rng)
    state = state.connected()
    assert (state.attempts, state.reauth_spent) == (0, True)
    short = state.ended(up_for=5.0)
    assert short.after(None, rng)[0].delay == 8  # the backoff goes on
    expired = jws.AuthenticationError("expired", close_code=1008)
    assert short.after(expired, rng)[0].action is Action.GIVE_UP  # fresh ones refused too
    long = state.ended(up_for=30.0)
    assert long.after(None, rng)[0].delay == 1  # a fresh first delay
    assert long.after(expired, rng)[0].action is Action.REAUTH  # they worked for a while


@pytest.mark.parametrize(
    "error",
    [jws.ConnectionClosedError(1002), jws.HandshakeError("no", status=404), RuntimeError("bug")],
)
def test_retry_state_gives_up_on_fatal_errors(error: BaseException) -> None:
    """A FATAL verdict is GIVE_UP at once."""
    decision, _ = RetryState(EXACT).after(error, random.Random(1))
    assert decision.action is Action.GIVE_UP
