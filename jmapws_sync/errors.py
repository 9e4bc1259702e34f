"""The exceptions raised by jmapws_sync, and the one place other libraries' errors become ours.

Every exception the library raises on purpose derives from :class:`JmapWsError`, except
timeouts, which are the builtin :class:`TimeoutError`, and programming errors such as a
request that cannot be encoded (:class:`ValueError` / :class:`TypeError`).

Exceptions from websocket-client, ``http.client``, ``ssl`` and ``socket`` are translated by
:func:`translate` and chained (``raise ... from exc``), so ``__cause__`` keeps the
original for debugging.

::

    JmapWsError
     ├── TransportError             the connection is gone; raised once, SessionClosed after
     │    ├── ConnectionClosedError  the server closed with a code other than 1000/1001
     │    ├── MessageTooLarge        a message exceeded max_message_size (we closed with 1009)
     │    ├── WebSocketProtocolError bad RFC 6455 framing (1002) or bad UTF-8 (1007)
     │    ├── ConnectionLost         a call or send in flight when the connection broke
     │    └── KeepaliveTimeout       the peer showed no sign of life in time
     ├── ProtocolViolation          a binary message (RFC 8887 §4.3); the stream is still usable
     │    └── StarvationError       a burst of messages without data; still usable
     ├── ParseError                 a text message that is not a JSON object; still usable
     ├── SessionClosed              the session is finished; ``cause`` says why
     ├── HandshakeError             the WebSocket upgrade was refused (``status``)
     ├── AuthenticationError        HTTP 401/403, or close code 1008 (credentials expired)
     ├── SessionError               the JMAP Session resource could not be fetched or read
     │    ├── WebSocketUnavailable  the server does not offer JMAP over WebSocket
     │    └── InsecureWebSocketUrl  an https Session resource names a ws:// URL
     ├── RequestFailed              the server answered a call() with a RequestError
     ├── MethodError                a method call in a Response failed (``["error", ...]``)
     ├── PushUnavailable            the server says it does not support push over WebSocket
     ├── BlobError                  a blob upload or download failed (``status``, ``problem``)
     │    ├── BlobNotFound          no such blob (404)
     │    └── BlobTooLarge          over maxSizeUpload, or 413
     └── SyncError                  a ChangeFeed cannot go on (unknown type or account, state file)

Messages never contain credentials, and never contain frame payloads, which may carry
private data; attributes such as ``RequestFailed.problem`` hold the details.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import websocket

if TYPE_CHECKING:
    from .frames import RequestError

__all__ = [
    "AuthenticationError",
    "BlobError",
    "BlobNotFound",
    "BlobTooLarge",
    "ConnectionClosedError",
    "ConnectionLost",
    "HandshakeError",
    "InsecureWebSocketUrl",
    "JmapWsError",
    "KeepaliveTimeout",
    "MessageTooLarge",
    "MethodError",
    "ParseError",
    "ProtocolViolation",
    "PushUnavailable",
    "RequestFailed",
    "SessionClosed",
    "SessionError",
    "StarvationError",
    "SyncError",
    "TransportError",
    "WebSocketProtocolError",
    "WebSocketUnavailable",
    "challenge_scheme",
    "retry_after",
    "translate",
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

    #: The close code the session sent (RFC 6455 §7.4.1: message too big).
    close_code = 1009

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of at least {size} bytes exceeds the limit of {limit} bytes")


class WebSocketProtocolError(TransportError):
    """The server broke the WebSocket rules (RFC 6455); the session is finished.

    ``close_code`` is the code the session closed with: 1002 (protocol error) or 1007
    (a text message or close reason that is not UTF-8).
    """

    def __init__(self, message: str, *, close_code: int = 1002) -> None:
        self.close_code = close_code
        super().__init__(message)


class ConnectionLost(TransportError):
    """The connection broke while this call or send was in flight; it was not re-sent.

    Raised by :class:`~jmapws_sync.ReconnectingSession`. The server may or may not have
    received (and run) the request: only the application knows whether running it twice
    is harmless. ``__cause__`` is the error that ended the connection; the next call uses
    the new connection.
    """


class KeepaliveTimeout(TransportError):
    """Nothing arrived within ``ping_timeout`` after a Ping: the peer is declared dead.

    ``silent_for`` is how long the connection had been silent when it was dropped.
    """

    def __init__(self, message: str, *, silent_for: float) -> None:
        self.silent_for = silent_for
        super().__init__(message)


class ProtocolViolation(JmapWsError):
    """The server sent a binary message, which RFC 8887 §4.3 forbids.

    The message is consumed and discarded; the stream is still usable.
    """


class StarvationError(ProtocolViolation):
    """More than 64 messages in a row carried no data (pings, pongs, empty fragments).

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
    """The server did not accept the WebSocket upgrade.

    ``status`` is the HTTP status; ``retry_after`` the seconds its ``Retry-After`` header
    asked the client to wait (429, 503), or None.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
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
    name of the offending member when the body was not a valid Session resource,
    ``retry_after`` the seconds the answer's ``Retry-After`` header asked the client to
    wait (429, 503), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.field = field
        self.retry_after = retry_after
        super().__init__(message)


class WebSocketUnavailable(SessionError):
    """The Session resource has no ``urn:ietf:params:jmap:websocket`` capability."""


class InsecureWebSocketUrl(SessionError):
    """The Session resource came over https but advertises a ``ws://`` (cleartext) URL.

    Following it would send the credentials, and every request, unencrypted: a downgrade
    an attacker on the path could not otherwise force. ``ws://`` is accepted only when the
    Session resource itself came over plain http (local development).
    """


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


class BlobError(JmapWsError):
    """A blob upload or download failed (RFC 8620 §6).

    ``status`` is the HTTP status when the server answered one, ``problem`` its RFC 7807
    problem details (a dict) when it sent them, ``retry_after`` the seconds its
    ``Retry-After`` asked to wait, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.problem = problem
        self.retry_after = retry_after
        super().__init__(message)


class BlobNotFound(BlobError):
    """The server has no blob with that id in that account (HTTP 404)."""


class BlobTooLarge(BlobError):
    """Over the server's limit: ``maxSizeUpload`` (checked before a byte is sent, when the
    size is known) or an HTTP 413."""


class SyncError(JmapWsError):
    """A :class:`~jmapws_sync.ChangeFeed` cannot go on: a data type or account the server
    does not know, or a state store that cannot be read or written. ``__cause__`` keeps
    the :class:`MethodError` or ``OSError`` behind it."""


# ---------------------------------------------------------------------------- translation


def challenge_scheme(header: str | None) -> str | None:
    """The auth scheme a ``WWW-Authenticate`` value names first (``"Basic"``), or None."""
    if not header or not header.strip():
        return None
    return header.split(None, 1)[0].rstrip(",") or None


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` header value asks to wait (RFC 9110 §10.2.3): a
    number of seconds, or an HTTP-date (counted from ``now``, the epoch seconds, by default
    the clock; a date in the past is 0). None for no value or one that is neither."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's unknown zone; HTTP dates are UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def translate(exc: BaseException, url: str, *, action: str, timed_out: bool = False) -> Exception:
    """The exception of our tree for what ``socket``, ``ssl``, ``http.client`` or
    websocket-client raised while ``action`` (e.g. "connecting to") the safe ``url``.

    ``timed_out``: a deadline watchdog had fired, so whatever broke was the deadline.
    Refused and unreachable hosts, resets, TLS failures and malformed HTTP become
    :class:`TransportError` (``__cause__`` an :class:`ssl.SSLCertVerificationError`
    when the certificate was not trusted); timeouts the builtin :class:`TimeoutError`; an
    HTTP status answering the upgrade :class:`AuthenticationError` (401/403) or
    :class:`HandshakeError`; any other websocket-client error :class:`HandshakeError`.
    The caller chains the result (``raise translate(exc, ...) from exc``).
    """
    if isinstance(exc, websocket.WebSocketBadStatusException):
        status = exc.status_code
        headers: Mapping[str, str] = exc.resp_headers or {}
        if status in (401, 403):
            return AuthenticationError(
                f"{url} refused the credentials (HTTP {status})",
                status=status,
                scheme=challenge_scheme(headers.get("www-authenticate")),
            )
        return HandshakeError(
            f"{url} refused the WebSocket upgrade (HTTP {status})",
            status=status,
            retry_after=retry_after(headers.get("retry-after")),
        )
    if timed_out or isinstance(exc, TimeoutError | websocket.WebSocketTimeoutException):
        return TimeoutError(f"{action} {url} timed out")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError(
            f"TLS certificate verification failed for {url} (certificate or host name not"
            f" trusted): {exc.verify_message}"
        )
    if isinstance(exc, ssl.SSLError):
        return TransportError(f"TLS failure {action} {url}: {exc.reason or exc}")
    if isinstance(exc, http.client.HTTPException):
        return TransportError(f"invalid HTTP response from {url}: {type(exc).__name__}")
    if isinstance(
        exc, OSError | websocket.WebSocketAddressException | websocket.WebSocketProxyException
    ):
        return TransportError(f"{action} {url} failed: {exc}")
    return HandshakeError(f"invalid WebSocket handshake from {url}: {exc}")
