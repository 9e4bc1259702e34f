"""connect(): from a server's address to an open session, by discovery (RFC 8620 §2)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from ._deflate import check_compression
from ._http import HttpSettings
from ._net import Cancel, Deadline, custom_context, safe_url, same_origin
from .auth import Auth
from .discovery import fetch_session
from .errors import AuthenticationError
from .resource import SessionResource, websocket_url
from .session import WsSession

__all__ = ["connect"]

log = logging.getLogger(__name__)


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
    resource: SessionResource | None = None,
    **session_options: Any,
) -> WsSession:
    """Discover the server's WebSocket from ``url`` and open a session to it.

    Fetches the Session resource (:func:`~jmapws_sync.fetch_session`), picks its
    WebSocket URL (:func:`~jmapws_sync.discovery.websocket_url`: no downgrade from https
    to ws) and opens a :class:`~jmapws_sync.WsSession` whose ``session`` attribute holds
    the resource. The same TLS context and proxy serve both steps; ``auth`` is called for
    each, and its credentials go only where the origin of ``url`` sends them: to that origin,
    and to the WebSocket named by a Session resource that origin served itself. When a
    redirect led discovery to another origin (which got no credentials), the resource it
    served is not vouched for: its WebSocket gets them only if it is on the origin of
    ``url``, else the handshake is made without them (a server there that wants them
    answers 401: :class:`~jmapws_sync.AuthenticationError`). ``timeout`` bounds discovery and
    handshake together; ``cancel`` aborts either from another thread. ``session_options`` go to
    :meth:`WsSession.open <jmapws_sync.WsSession.open>` (``max_message_size``,
    ``max_queue``, ``headers``...). ``resource``, a Session resource fetched from ``url``
    already, skips the fetch.

    Raises what :func:`~jmapws_sync.fetch_session` and ``WsSession.open`` raise, plus
    :class:`~jmapws_sync.WebSocketUnavailable` and
    :class:`~jmapws_sync.InsecureWebSocketUrl`.
    """
    check_compression(session_options.get("compression"))  # before discovery's I/O
    context = custom_context(
        ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile
    )
    deadline = Deadline(timeout)
    if resource is None:
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
    # The origin the user named got the credentials, so the WebSocket its own Session
    # resource names is its word; a resource from elsewhere (after a redirect) is not.
    vouched = same_origin(url, resource.url)
    trusted = auth is None or vouched or same_origin(url, ws_url)
    if not trusted:
        log.debug(
            "credentials not sent to %s: not the origin of %s", safe_url(ws_url), safe_url(url)
        )
    try:
        return WsSession.open(
            ws_url,
            auth=auth if trusted else None,
            timeout=deadline.timeout(f"connecting to {safe_url(url)} timed out after discovery"),
            ssl_context=context,
            proxy=proxy,
            require_subprotocol=require_subprotocol,
            session=resource,
            cancel=cancel,
            http=HttpSettings(
                auth=auth, ssl_context=context, proxy=proxy, trusted=url, vouched=vouched
            ),
            **session_options,
        )
    except AuthenticationError as exc:
        if trusted:
            raise
        raise AuthenticationError(
            f"{exc}; it is on another origin than {safe_url(url)}, so the credentials were"
            " not sent there (connect to a URL of that origin to trust it)",
            status=exc.status,
            close_code=exc.close_code,
            scheme=exc.scheme,
        ) from exc
