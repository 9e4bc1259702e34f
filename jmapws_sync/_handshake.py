"""The opening handshake (RFC 6455 §4, RFC 8887 §4.2), done by websocket-client.

websocket-client writes the upgrade request and checks the answer (TLS, proxies, the
``Sec-WebSocket-Accept`` key). What it does not do is done here: a deadline for the whole
handshake (its ``timeout`` bounds each socket operation only, so a server trickling its
answer a byte at a time would hold the caller for ever), the ``jmap`` subprotocol check,
no redirects (a redirect must not move credentials or downgrade), and the translation of
its exceptions into ours. After the handshake the socket belongs to the session.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

import websocket

from ._deflate import Params, accept, offer
from ._net import (
    Cancel,
    Proxy,
    Watchdog,
    check_headers,
    safe_url,
    shared_default_context,
    websocket_proxy_options,
)
from .errors import HandshakeError, SessionClosed, translate

__all__ = ["SUBPROTOCOL", "open_websocket"]

log = logging.getLogger(__name__)

#: The subprotocol of JMAP over WebSocket (RFC 8887 §4.2).
SUBPROTOCOL = "jmap"


def open_websocket(
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: float | None,
    ssl_context: ssl.SSLContext | None,
    proxy: Proxy | None,
    require_subprotocol: bool,
    compression: bool = True,
    cancel: Cancel | None = None,
) -> tuple[Any, Params | None]:
    """Connect to ``url`` and complete the handshake; return websocket-client's object,
    and what permessage-deflate the server agreed to (None: no compression).

    With ``compression`` the handshake offers permessage-deflate (RFC 7692); an answer the
    offer did not allow, or any extension when none was offered, is a HandshakeError.

    Raises :class:`~jmapws_sync.AuthenticationError` (401/403),
    :class:`~jmapws_sync.HandshakeError` (another status, a wrong or, with
    ``require_subprotocol``, missing subprotocol), :class:`~jmapws_sync.TransportError`
    or :class:`TimeoutError` (``timeout`` covers connect and handshake together).
    """
    safe = safe_url(url)
    check_headers(headers)
    if ssl_context is None and url.startswith("wss:"):
        ssl_context = shared_default_context()
    ws: Any = websocket.WebSocket(
        sslopt={"context": ssl_context} if ssl_context is not None else None,
        enable_multithread=True,
        skip_utf8_validation=True,  # the framing layer decodes strictly itself, in C
    )
    header = [f"Sec-WebSocket-Protocol: {SUBPROTOCOL}"]
    if compression:
        header.append(f"Sec-WebSocket-Extensions: {offer()}")
    header.extend(f"{name}: {value}" for name, value in headers.items())
    options: dict[str, Any] = {
        "header": header,
        "timeout": timeout,
        "redirect_limit": 0,
        "suppress_origin": True,
        **websocket_proxy_options(proxy),
    }
    with Watchdog(timeout, lambda: ws.sock, cancel) as watchdog:
        try:
            ws.connect(url, **options)
        except (OSError, websocket.WebSocketException) as exc:
            if watchdog.cancelled:
                raise SessionClosed("the connection attempt was cancelled") from exc
            raise translate(exc, safe, action="connecting to", timed_out=watchdog.fired) from exc
    if watchdog.cancelled:
        ws.shutdown()
        raise SessionClosed("the connection attempt was cancelled")
    if watchdog.fired:  # it fired just as the handshake finished: the socket is gone
        ws.shutdown()
        raise TimeoutError(f"the handshake with {safe} took longer than {timeout} s")
    answered = ws.getheaders() or {}
    chosen = answered.get("sec-websocket-protocol")
    if chosen is not None and chosen.strip().lower() != SUBPROTOCOL:
        ws.shutdown()
        raise HandshakeError(f"{safe} chose subprotocol {chosen!r}, not {SUBPROTOCOL!r}")
    if chosen is None and require_subprotocol:
        ws.shutdown()
        raise HandshakeError(
            f"{safe} did not accept the {SUBPROTOCOL!r} subprotocol (RFC 8887 §4.2);"
            " pass require_subprotocol=False to tolerate that"
        )
    extensions = answered.get("sec-websocket-extensions")
    params = None
    if extensions and not compression:
        ws.shutdown()
        raise HandshakeError(f"{safe} answered with extensions that were not offered")
    if extensions:
        try:
            params = accept(extensions, safe)
        except HandshakeError:
            ws.shutdown()
            raise
    log.debug("connected to %s%s", safe, " (permessage-deflate)" if params else "")
    return ws, params
