"""connect(): from a server's address to an open session, by discovery (RFC 8620 §2)."""

from __future__ import annotations

import ssl
from typing import Any

from ._deflate import check_compression
from ._net import Cancel, Deadline, custom_context, safe_url
from .auth import Auth
from .discovery import fetch_session
from .resource import websocket_url
from .session import WsSession

__all__ = ["connect"]


def connect(
    url: str,
    *,
    auth: Auth | None = None,
    timeout: float | None = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    proxy: str | None = None,
    require_subprotocol: bool = True,
    max_redirects: int = 5,
    cancel: Cancel | None = None,
    **session_options: Any,
) -> WsSession:
    """Discover the server's WebSocket from ``url`` and open a session to it.

    Fetches the Session resource (:func:`~jmapws_sync.fetch_session`), picks its
    WebSocket URL (:func:`~jmapws_sync.discovery.websocket_url`: no downgrade from https
    to ws) and opens a :class:`~jmapws_sync.WsSession` whose ``session`` attribute holds
    the resource. The same TLS context and proxy serve both steps; ``auth`` is called for
    each. ``timeout`` bounds discovery and handshake together; ``cancel`` aborts either
    from another thread. ``session_options`` go to
    :meth:`WsSession.open <jmapws_sync.WsSession.open>` (``max_message_size``,
    ``max_queue``, ``headers``...).

    Raises what :func:`~jmapws_sync.fetch_session` and ``WsSession.open`` raise, plus
    :class:`~jmapws_sync.WebSocketUnavailable` and
    :class:`~jmapws_sync.InsecureWebSocketUrl`.
    """
    check_compression(session_options.get("compression"))  # before discovery's I/O
    context = custom_context(
        ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile
    )
    deadline = Deadline(timeout)
    resource = fetch_session(
        url,
        auth=auth,
        timeout=timeout,
        ssl_context=context,
        proxy=proxy,
        max_redirects=max_redirects,
        cancel=cancel,
    )
    ws_url = websocket_url(resource)
    return WsSession.open(
        ws_url,
        auth=auth,
        timeout=deadline.timeout(f"connecting to {safe_url(url)} timed out after discovery"),
        ssl_context=context,
        proxy=proxy,
        require_subprotocol=require_subprotocol,
        session=resource,
        cancel=cancel,
        **session_options,
    )
