"""Fetching the JMAP Session resource (RFC 8620 §2) over HTTP(S).

Users know their server's address and credentials, not its WebSocket URL.
:func:`fetch_session` turns ``https://host`` (which means ``https://host/.well-known/jmap``,
RFC 8620 §2.2) or a full session URL into a :class:`~jmapws_sync.SessionResource`;
:func:`jmapws_sync.connect` then opens the WebSocket it advertises.

Rules the fetch follows, and why:

* Redirects (301, 302, 303, 307, 308) are followed here, not by a library, so that each rule
  is enforced: at most ``max_redirects`` of them, no loop, never from https to http (that
  would expose the credentials and the resource to anyone on the path), and the credentials
  go only to the origin (scheme, host, port) of the first URL: a cross-origin redirect drops
  every header ``auth`` returned.
* ``timeout`` bounds the whole fetch, redirects included, not each socket operation: a
  watchdog shuts the socket down at the deadline, so a server that trickles bytes cannot
  hold the caller longer. Timeouts raise the builtin :class:`TimeoutError`.
* Proxies: ``proxy="http://[user:pass@]host:port"``, or (``proxy=None``) ``https_proxy`` /
  ``http_proxy`` from the environment; ``proxy=""`` means none. ``no_proxy`` from the
  environment applies, read once for discovery and the WebSocket alike, so that both
  always take the same path. https targets go through an HTTP CONNECT tunnel; http targets
  are requested in absolute form.
* TLS verification is on by default (:func:`ssl.create_default_context`); ``cafile``,
  ``certfile``/``keyfile`` (a client certificate) or a whole ``ssl_context`` change it.
"""

# Why the standard library (http.client) and no HTTP library: see jmapws_sync._http, the
# one home of the library's HTTP, which discovery shares with blob transfers. What
# http.client does not do (bounded redirects that drop credentials across origins, refuse
# https -> http, a deadline for the whole fetch) is done here.

from __future__ import annotations

import http.client
import logging
import ssl
from collections.abc import Mapping
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

import attrs

from ._http import REDIRECTS, redirect_target
from ._http import connect as http_connect
from ._net import (
    Cancel,
    Deadline,
    Proxy,
    Watchdog,
    check_headers,
    check_timeout,
    custom_context,
    make_ssl_context,
    origin,
    resolve_proxy,
    safe_url,
)
from .auth import Auth
from .errors import (
    AuthenticationError,
    InsecureWebSocketUrl,
    SessionClosed,
    SessionError,
    challenge_scheme,
    retry_after,
    translate,
)
from .resource import (
    PUSH_DATA_TYPES,
    Account,
    CoreCapability,
    SessionResource,
    WebSocketCapability,
    parse_session_json,
    websocket_url,
)

__all__ = [
    "MAX_SESSION_SIZE",
    "PUSH_DATA_TYPES",
    "WELL_KNOWN_PATH",
    "Account",
    "CoreCapability",
    "InsecureWebSocketUrl",
    "SessionResource",
    "WebSocketCapability",
    "fetch_session",
    "make_ssl_context",
    "session_url",
    "websocket_url",
]

log = logging.getLogger(__name__)

#: Where a server publishes its Session resource (RFC 8620 §2.2).
WELL_KNOWN_PATH: Final = "/.well-known/jmap"
#: The largest Session resource accepted: 16 MiB, far above any real one.
MAX_SESSION_SIZE: Final = 16 * 1024 * 1024


def session_url(url: str) -> str:
    """``url`` itself, or its ``/.well-known/jmap`` when it names just a host.

    :class:`ValueError` for anything but an http(s) URL with a host and a valid port, and
    for credentials in the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {safe_url(url)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("put credentials in auth=, not in the URL")
    origin(parts)  # raises ValueError for a port that is not a number
    if parts.path in ("", "/"):
        parts = parts._replace(path=WELL_KNOWN_PATH)
    return urlunsplit(parts._replace(fragment=""))


@attrs.frozen
class _Reply:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


def _get(
    parts: SplitResult,
    headers: Mapping[str, str],
    *,
    proxy: Proxy | None,
    context: ssl.SSLContext | None,
    deadline: Deadline,
    cancel: Cancel | None,
) -> _Reply:
    """One GET, bounded by ``deadline``; the body is read only for a 2xx answer."""
    safe = safe_url(urlunsplit(parts))
    message = f"fetching the JMAP Session resource from {safe} timed out"
    left = deadline.timeout(message)
    conn, target, extra = http_connect(
        urlunsplit(parts), proxy=proxy, context=context, timeout=left
    )
    send = {**headers, **extra}
    log.debug("GET %s%s", safe, f" via proxy {proxy.label}" if proxy else "")
    watchdog = Watchdog(left, lambda: conn.sock, cancel)
    try:
        conn.request("GET", target, headers=send)
        if watchdog.fired:  # it fired while connecting, before there was a socket to shut
            raise TimeoutError
        response = conn.getresponse()
        body = b""
        if 200 <= response.status < 300:
            body = response.read(MAX_SESSION_SIZE + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # A plain ValueError: a TLS socket whose raw socket the watchdog shut down mid-read
        # (ssl.SSLCertVerificationError is a ValueError too, but also an OSError).
        if not isinstance(exc, OSError | http.client.HTTPException) and not watchdog.fired:
            raise
        if watchdog.cancelled:
            raise SessionClosed("the connection attempt was cancelled") from exc
        if watchdog.fired or isinstance(exc, TimeoutError):
            raise TimeoutError(message) from exc
        raise translate(exc, safe, action="fetching the JMAP Session resource from") from exc
    finally:
        watchdog.cancel()
        conn.close()
    if watchdog.cancelled:
        raise SessionClosed("the connection attempt was cancelled")
    if watchdog.fired:  # the shutdown can look like a clean end of stream: trust no answer
        raise TimeoutError(message)
    return _Reply(response.status, response.reason, response.headers, body)


def _redirect_target(current: str, reply: _Reply) -> str:
    """The absolute URL a redirect points to; :class:`SessionError` if there is none."""
    location = reply.headers.get("Location")
    if not location or not location.strip():
        raise SessionError(
            f"{safe_url(current)} redirected (HTTP {reply.status}) without a Location",
            status=reply.status,
        )
    target = redirect_target(current, location)
    if target is None:
        raise SessionError(f"{safe_url(current)} redirected to an invalid URL", status=reply.status)
    return target


def fetch_session(
    url: str,
    *,
    auth: Auth | None = None,
    timeout: float | None = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    proxy: str | None = None,
    max_redirects: int = 5,
    cancel: Cancel | None = None,
) -> SessionResource:
    """Fetch and read the JMAP Session resource (RFC 8620 §2).

    ``url`` is a base URL (``https://host`` or ``https://host/``: the resource is then at
    ``/.well-known/jmap``) or the full URL of the resource. ``auth`` is called once; its
    headers go only to the first URL's origin. ``timeout`` bounds the whole fetch
    (``None``: no bound). TLS and proxy options are described in the module docstring.

    The result does not require WebSocket support: see
    :meth:`SessionResource.require_websocket` and :func:`websocket_url`.

    Raises :class:`AuthenticationError` (HTTP 401/403; ``scheme`` from the server's
    challenge), :class:`SessionError` (another status, too many redirects, an https to http
    redirect, a body that is not a valid Session resource: ``field`` names the member),
    :class:`TransportError` (refused, unreachable, TLS verification failed, proxy refused)
    or :class:`TimeoutError`; :class:`ValueError` for a URL or option that makes no sense.
    ``cancel`` (a :class:`~jmapws_sync._net.Cancel`) aborts the fetch from another thread
    (:class:`SessionClosed`).
    """
    current = session_url(url)
    context = custom_context(
        ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile
    )
    deadline = Deadline(check_timeout(timeout))
    credentials = dict(auth()) if auth is not None else {}
    check_headers(credentials)
    first_origin = origin(urlsplit(current))
    seen = {current}
    while True:
        parts = urlsplit(current)
        headers = {"Accept": "application/json", "User-Agent": "jmapws-sync"}
        if credentials and origin(parts) == first_origin:
            headers.update(credentials)
        reply = _get(
            parts,
            headers,
            proxy=resolve_proxy(current, proxy),
            context=context,
            deadline=deadline,
            cancel=cancel,
        )
        if reply.status not in REDIRECTS:
            break
        target = _redirect_target(current, reply)
        safe_from, safe_to = safe_url(current), safe_url(target)
        if parts.scheme == "https" and urlsplit(target).scheme != "https":
            raise SessionError(
                f"{safe_from} redirected to {safe_to}: refusing a redirect from https to http",
                status=reply.status,
            )
        if target in seen:
            raise SessionError(f"redirect loop at {safe_to}", status=reply.status)
        if len(seen) > max_redirects:
            raise SessionError(
                f"more than {max_redirects} redirects fetching {safe_url(url)}",
                status=reply.status,
            )
        if credentials and origin(urlsplit(target)) != first_origin:
            log.debug("redirect to another origin (%s): credentials not sent there", safe_to)
        log.debug("HTTP %s: %s -> %s", reply.status, safe_from, safe_to)
        seen.add(target)
        current = target
    return _read_reply(current, reply)


def _read_reply(url: str, reply: _Reply) -> SessionResource:
    """Turn the final answer into a :class:`SessionResource` or the matching error."""
    safe = safe_url(url)
    status = reply.status
    if status in (401, 403):
        raise AuthenticationError(
            f"{safe} refused the credentials (HTTP {status})",
            status=status,
            scheme=challenge_scheme(reply.headers.get("WWW-Authenticate")),
        )
    if not 200 <= status < 300:
        raise SessionError(
            f"{safe} answered HTTP {status} {reply.reason}".rstrip(),
            status=status,
            retry_after=retry_after(reply.headers.get("Retry-After")),
        )
    if len(reply.body) > MAX_SESSION_SIZE:
        raise SessionError(f"the Session resource at {safe} is larger than {MAX_SESSION_SIZE}")
    return parse_session_json(reply.body, url)
