"""jmapws_sync: a synchronous, threaded client for JMAP over WebSocket (RFC 8887).

::

    import jmapws_sync as jws

    with jws.connect("https://jmap.example.com", auth=jws.BearerAuth(token)) as ws:
        b = jws.RequestBuilder(using=[jws.CORE])
        echo = b.call("Core/echo", {"hello": True})
        print(ws.call(b.build(), timeout=30).get(echo.call_id))
"""

from __future__ import annotations

from ._framing import CloseCode
from ._version import __version__
from .auth import Auth, BasicAuth, BearerAuth
from .blobs import Blob, BlobReader
from .client import connect
from .codec import decode, encode
from .discovery import fetch_session
from .errors import (
    AuthenticationError,
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    ConnectionClosedError,
    ConnectionLost,
    HandshakeError,
    InsecureWebSocketUrl,
    JmapWsError,
    KeepaliveTimeout,
    MessageTooLarge,
    MethodError,
    ParseError,
    ProtocolViolation,
    PushUnavailable,
    RequestFailed,
    SessionClosed,
    SessionError,
    StarvationError,
    SyncError,
    TransportError,
    WebSocketProtocolError,
    WebSocketUnavailable,
)
from .feed import ChangeFeed, Delta
from .frames import (
    ALL_TYPES,
    CALENDARS,
    CONTACTS,
    CORE,
    MAIL,
    SUBMISSION,
    VACATION_RESPONSE,
    WEBSOCKET,
    AllTypes,
    Frame,
    Invocation,
    Request,
    RequestBuilder,
    RequestError,
    Response,
    ResultReference,
    StateChange,
    UnknownFrame,
    WebSocketPushDisable,
    WebSocketPushEnable,
)
from .policy import Backoff
from .reconnect import ReconnectInfo, ReconnectingSession
from .resource import Account, CoreCapability, SessionResource, WebSocketCapability
from .session import WsSession
from .states import FileStateStore, MemoryStateStore, StateStore

__all__ = [
    "ALL_TYPES",
    "CALENDARS",
    "CONTACTS",
    "CORE",
    "MAIL",
    "SUBMISSION",
    "VACATION_RESPONSE",
    "WEBSOCKET",
    "Account",
    "AllTypes",
    "Auth",
    "AuthenticationError",
    "Backoff",
    "BasicAuth",
    "BearerAuth",
    "Blob",
    "BlobError",
    "BlobNotFound",
    "BlobReader",
    "BlobTooLarge",
    "ChangeFeed",
    "CloseCode",
    "ConnectionClosedError",
    "ConnectionLost",
    "CoreCapability",
    "Delta",
    "FileStateStore",
    "Frame",
    "HandshakeError",
    "InsecureWebSocketUrl",
    "Invocation",
    "JmapWsError",
    "KeepaliveTimeout",
    "MemoryStateStore",
    "MessageTooLarge",
    "MethodError",
    "ParseError",
    "ProtocolViolation",
    "PushUnavailable",
    "ReconnectInfo",
    "ReconnectingSession",
    "Request",
    "RequestBuilder",
    "RequestError",
    "RequestFailed",
    "Response",
    "ResultReference",
    "SessionClosed",
    "SessionError",
    "SessionResource",
    "StarvationError",
    "StateChange",
    "StateStore",
    "SyncError",
    "TransportError",
    "UnknownFrame",
    "WebSocketCapability",
    "WebSocketProtocolError",
    "WebSocketPushDisable",
    "WebSocketPushEnable",
    "WebSocketUnavailable",
    "WsSession",
    "__version__",
    "connect",
    "decode",
    "encode",
    "fetch_session",
]
