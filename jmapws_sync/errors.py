"""The exceptions raised by jmapws_sync.

Every exception the library raises on purpose derives from :class:`JmapWsError`, except
timeouts, which are the builtin :class:`TimeoutError`, and programming errors such as a
request that cannot be encoded (:class:`ValueError` / :class:`TypeError`).

Exceptions from websocket-client, ``ssl`` and ``socket`` are translated at the boundary and
chained (``raise ... from exc``), so ``__cause__`` keeps the original for debugging.

::

    JmapWsError
     ├── TransportError            the connection is gone; raised once, SessionClosed after
     │    ├── ConnectionClosedError  the server closed with a code other than 1000/1001
     │    ├── MessageTooLarge        a message exceeded max_message_size (we closed with 1009)
     │    ├── WebSocketProtocolError bad RFC 6455 framing (1002) or bad UTF-8 (1007)
     │    ├── ConnectionLost         (reconnect.py) a call in flight when the connection broke
     │    └── KeepaliveTimeout       (reconnect.py) the peer showed no sign of life in time
     ├── ProtocolViolation          a binary message (RFC 8887 §4.3); the stream is still usable
     │    └── StarvationError       too many consecutive non-text messages; still usable
     ├── ParseError                 a text message that is not a JSON object; still usable
     ├── SessionClosed              the session is finished; ``cause`` says why
     ├── HandshakeError             the WebSocket upgrade was refused (``status``)
     ├── AuthenticationError        HTTP 401/403, or close code 1008 (credentials expired)
     ├── SessionError               the JMAP Session resource could not be fetched or read
     │    └── WebSocketUnavailable  the server does not offer JMAP over WebSocket
     ├── RequestFailed              the server answered a call() with a RequestError
     ├── MethodError                a method call in a Response failed (``["error", ...]``)
     └── PushUnavailable            the server says it does not support push over WebSocket

Messages never contain credentials, and never contain frame payloads, which may carry
private data; attributes such as ``RequestFailed.problem`` hold the details.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frames import RequestError

__all__ = [
    "AuthenticationError",
    "ConnectionClosedError",
    "HandshakeError",
    "JmapWsError",
    "MessageTooLarge",
    "MethodError",
    "ParseError",
    "ProtocolViolation",
    "PushUnavailable",
    "RequestFailed",
    "SessionClosed",
    "SessionError",
    "StarvationError",
    "TransportError",
    "WebSocketProtocolError",
    "WebSocketUnavailable",
]


class JmapWsError(Exception):
    """Root of every exception that jmapws_sync raises on purpose."""


class TransportError(JmapWsError):
    """The connection broke: a socket error, a reset, or an end of stream without a Close.

    The session is finished: the call that met the failure raises this, every later call
    raises :class:`SessionClosed`.
    """


class ConnectionClosedError(TransportError):
    """The server closed the WebSocket with a code other than 1000 or 1001."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = f"server closed the connection with code {code}"
        super().__init__(f"{text}: {reason}" if reason else text)


class MessageTooLarge(TransportError):
    """A message was larger than ``max_message_size``; the session closed with 1009.

    The payload is never buffered whole: the limit is checked against the length that
    each frame header announces, before the payload is read.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of at least {size} bytes exceeds the limit of {limit} bytes")


class WebSocketProtocolError(TransportError):
    """The server broke the WebSocket framing rules (RFC 6455); the session is finished."""


class ProtocolViolation(JmapWsError):
    """The server sent a binary message, which RFC 8887 §4.3 forbids.

    The message is consumed and discarded; the stream is still usable.
    """


class StarvationError(ProtocolViolation):
    """More than 64 consecutive messages carried no data (pings, pongs, empty fragments).

    Raised so that a server flooding control frames cannot keep a reader busy forever;
    the stream is still usable and the count starts again.
    """


class ParseError(JmapWsError):
    """A text message that is not a JSON object; the stream is still usable."""


class SessionClosed(JmapWsError):
    """The session is finished (closed locally, or after an error); ``cause`` says why."""

    def __init__(self, message: str = "session is closed", *, cause: BaseException | None = None):
        self.cause = cause
        super().__init__(f"{message}: {cause!r}" if cause is not None else message)


class HandshakeError(JmapWsError):
    """The server did not accept the WebSocket upgrade (``status`` is the HTTP status)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AuthenticationError(JmapWsError):
    """The server refused the credentials.

    ``status`` is the HTTP status (401/403) when it came from an HTTP exchange,
    ``close_code`` is 1008 when the server closed an open WebSocket because the
    credentials expired (RFC 8887 §4.2); ``scheme`` is the challenge scheme the server
    named (``"Basic"``, ``"Bearer"``), if any. A reconnect must not retry the same
    credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        close_code: int | None = None,
        scheme: str | None = None,
    ) -> None:
        self.status = status
        self.close_code = close_code
        self.scheme = scheme
        super().__init__(message)


class SessionError(JmapWsError):
    """The JMAP Session resource (RFC 8620 §2) could not be fetched or is not valid.

    ``status`` is the HTTP status when the server answered with an error, ``field`` the
    name of the offending member when the body was not a valid Session resource.
    """

    def __init__(
        self, message: str, *, status: int | None = None, field: str | None = None
    ) -> None:
        self.status = status
        self.field = field
        super().__init__(message)


class WebSocketUnavailable(SessionError):
    """The Session resource has no ``urn:ietf:params:jmap:websocket`` capability."""


class RequestFailed(JmapWsError):
    """The server rejected a whole request; ``problem`` is its :class:`RequestError`."""

    def __init__(self, problem: RequestError) -> None:
        self.problem = problem
        detail = f" ({problem.status})" if problem.status is not None else ""
        super().__init__(f"request failed: {problem.type}{detail}")


class MethodError(JmapWsError):
    """A method call failed: the server answered ``["error", {...}, call_id]``.

    ``type`` is the error type (RFC 8620 §3.6.2), ``description`` the optional text,
    ``arguments`` the whole error object.
    """

    def __init__(self, call_id: str, arguments: dict[str, Any]) -> None:
        self.call_id = call_id
        self.arguments = arguments
        self.type: str = str(arguments.get("type", "serverFail"))
        description = arguments.get("description")
        self.description: str | None = description if isinstance(description, str) else None
        super().__init__(f"method call {call_id!r} failed: {self.type}")


class PushUnavailable(JmapWsError):
    """The server's Session resource says ``supportsPush: false``."""
