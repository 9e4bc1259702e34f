"""What a ReconnectingSession does after a failure: wait and retry, re-authenticate, give up.

Pure: no I/O, no threads. :func:`classify` is the one table of which errors are worth
retrying; :class:`Backoff` the delays between attempts; :class:`RetryState` the state of
the retries as one immutable value that the supervisor asks, after each failed attempt or
ended connection, what to do next (:meth:`RetryState.after`), and replaces by the new
state it returns (as urllib3's ``Retry`` does).

=========================================================  =======
outcome                                                    verdict
=========================================================  =======
server's clean close: 1000, 1001 (going away), 1005        RETRY
ConnectionClosedError 1006 1009 1011 1012 1013 1014,       RETRY
and 3000-4999 (application codes)
ConnectionClosedError 1002 1003 1007 1010 (the server      FATAL
says *we* broke the protocol: a new connection would too)
other TransportError: refused, reset, EOF without Close,   RETRY
bad framing, message over the limit, KeepaliveTimeout
TransportError caused by a failed TLS certificate check    FATAL
TimeoutError (discovery, handshake)                        RETRY
HandshakeError / SessionError with HTTP 408, 429, 5xx      RETRY
the same with another status or none (subprotocol          FATAL
refused, bad Session resource, no WebSocket, downgrade)
AuthenticationError: HTTP 401/403, close 1008              REAUTH
PushUnavailable (push asked for, the server has none)      FATAL
SessionClosed                                              as its ``cause`` (RETRY if none)
plain OSError                                              RETRY
anything else (a bug, an exception raised by ``auth``)     FATAL
=========================================================  =======

REAUTH means "never again with the same credentials": the supervisor asks ``auth`` once
for fresh ones and, if they differ, tries them at once; if they do not (``BasicAuth``, a
fixed token), or fresh ones are refused too, it gives up. Fresh credentials count as
refused when the connection they opened ends with an authentication error before it
has stayed up ``Backoff.reset_after`` seconds: a server that accepts every handshake and
then closes with 1008 gets one attempt with fresh credentials, not a reconnect storm.
Only a connection that stayed up that long earns a new allowance (credentials that
expire every hour are renewed every hour).

A server that answers 429 or 503 with ``Retry-After`` is not asked again sooner than it
said (``retry_after`` on the error), nor later than the backoff's ``ceiling``.
"""

from __future__ import annotations

import enum
import random
import ssl
from collections.abc import Iterator
from typing import Final

import attrs

from ._framing import CloseCode
from .errors import (
    AuthenticationError,
    ConnectionClosedError,
    HandshakeError,
    SessionClosed,
    SessionError,
    TransportError,
)

__all__ = ["FATAL_CLOSE_CODES", "Action", "Backoff", "RetryState", "Verdict", "classify"]

#: Close codes after which a new connection would fail the same way (RFC 6455 §7.4.1).
FATAL_CLOSE_CODES: Final = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.MANDATORY_EXTENSION,
    }
)
_RETRY_STATUSES: Final = frozenset({408, 429})


class Verdict(enum.Enum):
    """What an error means for the next connection attempt."""

    #: Connect again after the backoff delay.
    RETRY = "retry"
    #: Credentials refused: never again with the same ones.
    REAUTH = "reauth"
    #: Give up: the error goes to the application.
    FATAL = "fatal"


def classify(error: BaseException | None) -> Verdict:
    """Decide retry, re-authenticate or give up; ``None`` means a clean close by the server.

    The table is in the module docstring; this function is the only place it is decided.
    """
    if error is None:
        return Verdict.RETRY
    if isinstance(error, SessionClosed):
        return classify(error.cause) if error.cause is not None else Verdict.RETRY
    if isinstance(error, AuthenticationError):
        return Verdict.REAUTH
    if isinstance(error, ConnectionClosedError):
        return Verdict.FATAL if error.code in FATAL_CLOSE_CODES else Verdict.RETRY
    if isinstance(error, TransportError):
        if isinstance(error.__cause__, ssl.SSLCertVerificationError):
            return Verdict.FATAL  # the certificate will not become trusted by retrying
        return Verdict.RETRY
    if isinstance(error, TimeoutError):
        return Verdict.RETRY
    if isinstance(error, HandshakeError | SessionError):
        status = error.status
        if status is not None and (status in _RETRY_STATUSES or 500 <= status <= 599):
            return Verdict.RETRY
        return Verdict.FATAL
    if isinstance(error, OSError):
        return Verdict.RETRY
    return Verdict.FATAL


def _retry_after(error: BaseException | None) -> float | None:
    """The ``Retry-After`` seconds an error (or the cause of a SessionClosed) carries."""
    while isinstance(error, SessionClosed):
        error = error.cause
    if isinstance(error, HandshakeError | SessionError):
        return error.retry_after
    return None


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter: when to try connecting again.

    The first delay is drawn uniformly from ``first`` (so that clients dropped together,
    by a server restart, come back spread out); each next one is the previous base times
    ``factor``, capped at ``ceiling``, then scaled down by up to ``jitter`` (a fraction),
    so a delay is never above the ceiling. The sequence starts again from a fresh first
    delay once a connection has stayed up ``reset_after`` seconds.

    Pure: the delays depend only on these numbers and the random source given.
    """

    first: tuple[float, float] = (0.5, 3.0)
    factor: float = 1.6
    ceiling: float = 60.0
    jitter: float = 0.25
    reset_after: float = 60.0

    def __attrs_post_init__(self) -> None:
        low, high = self.first
        if not 0 <= low <= high <= self.ceiling:
            raise ValueError("Backoff needs 0 <= first[0] <= first[1] <= ceiling")
        if self.factor < 1:
            raise ValueError("Backoff.factor must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("Backoff.jitter must be in [0, 1)")
        if self.reset_after < 0:
            raise ValueError("Backoff.reset_after must be >= 0")

    def step(self, base: float | None, rng: random.Random) -> tuple[float, float]:
        """The delay after ``base`` (None: the first), and the new base: ``(delay, base)``."""
        if base is None:
            first = rng.uniform(*self.first)
            return first, first
        base = min(base * self.factor, self.ceiling)
        return base * (1.0 - self.jitter * rng.random()), base

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The infinite sequence of delays, in seconds, drawn from ``rng``."""
        base: float | None = None
        while True:
            delay, base = self.step(base, rng)
            yield delay


class Action(enum.Enum):
    """What the supervisor does next (see :meth:`RetryState.after`)."""

    #: Wait :attr:`Decision.delay` seconds, then connect again.
    WAIT = "wait"
    #: Ask ``auth`` for fresh credentials and, if they differ, connect with them at once.
    REAUTH = "reauth"
    #: Stop: the error goes to the application.
    GIVE_UP = "give up"


@attrs.frozen
class Decision:
    """:meth:`RetryState.after`'s answer: an :class:`Action`, and for WAIT its delay."""

    action: Action
    delay: float = 0.0


@attrs.frozen
class RetryState:
    """The retries of one ReconnectingSession, as one immutable value.

    ``base`` is the last backoff base (None: the next delay is a fresh first one),
    ``attempts`` the attempts since the last connection was up, ``reauth_spent`` whether
    fresh credentials were already tried since the last connection that stayed up
    ``reset_after`` seconds.
    """

    backoff: Backoff = attrs.field(factory=Backoff)
    base: float | None = None
    attempts: int = 0
    reauth_spent: bool = False

    def after(self, error: BaseException | None, rng: random.Random) -> tuple[Decision, RetryState]:
        """What to do after ``error`` (None: a clean close), and the state to go on with."""
        verdict = classify(error)
        if verdict is Verdict.REAUTH and not self.reauth_spent:
            return Decision(Action.REAUTH), attrs.evolve(self, reauth_spent=True)
        if verdict is not Verdict.RETRY:
            return Decision(Action.GIVE_UP), self
        delay, base = self.backoff.step(self.base, rng)
        asked = _retry_after(error)
        if asked is not None:  # the server's word, within the ceiling
            delay = max(delay, min(asked, self.backoff.ceiling))
        return Decision(Action.WAIT, delay), attrs.evolve(self, base=base)

    def attempted(self) -> RetryState:
        """One more connection attempt is being made."""
        return attrs.evolve(self, attempts=self.attempts + 1)

    def connected(self) -> RetryState:
        """An attempt worked: the attempts count starts again (the re-authentication
        allowance does not: see :meth:`ended`)."""
        return attrs.evolve(self, attempts=0)

    def ended(self, up_for: float) -> RetryState:
        """A connection ended after ``up_for`` seconds: long enough (the backoff's
        ``reset_after``) resets the backoff and the re-authentication allowance."""
        if up_for >= self.backoff.reset_after:
            return attrs.evolve(self, base=None, reauth_spent=False)
        return self
