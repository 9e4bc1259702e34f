"""The library's one home for HTTP: discovery, blobs (and what comes after) go through here.

Built on ``http.client``, which does TLS with the ssl module's verification and HTTP
CONNECT tunnels; what it leaves to us is done once, here: the connection to a URL
through the proxy the rest of the library uses (:func:`connect`), request targets in
ASCII (:func:`request_target`), which URLs may get the user's credentials
(:class:`HttpSettings`), redirect targets checked (:func:`redirect_target`), and the
errors an answer means, RFC 7807 problem details read (:func:`status_error`).
Settings are the session's: the same TLS context, proxy and auth as its WebSocket.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import SplitResult, quote, urljoin, urlsplit, urlunsplit

import attrs

from ._net import Proxy, origin, safe_url, same_origin, shared_default_context
from .auth import Auth
from .errors import AuthenticationError, BlobError, BlobNotFound, BlobTooLarge, challenge_scheme
from .errors import retry_after as parse_retry_after

__all__ = [
    "REDIRECTS",
    "HttpSettings",
    "connect",
    "expand",
    "problem_details",
    "redirect_target",
    "request_target",
    "status_error",
]

log = logging.getLogger(__name__)

REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: Bytes of an error answer read for its problem details (RFC 7807); the rest is dropped.
MAX_PROBLEM_SIZE: Final = 64 * 1024
#: What http.client writes a body in: 64 KiB a send(), not its 8 KiB default.
BLOCK_SIZE: Final = 64 * 1024
# Characters left as they are when a request target is made ASCII: RFC 3986 reserved and
# unreserved characters, and "%" so that existing escapes stay escapes.
_URL_SAFE: Final = "/:?#[]@!$&'()*+,;=%~-._"


@attrs.frozen
class HttpSettings:
    """How a session reaches its server over HTTP: what its WebSocket was opened with.

    ``trusted`` is the URL the user named (its origin always gets the credentials);
    ``vouched`` says that the Session resource came from that origin itself, so the
    URLs it names (upload, download) may get them too, on any origin. A resource
    reached through a cross-origin redirect vouches for nothing.
    """

    auth: Auth | None = None
    ssl_context: ssl.SSLContext | None = None
    proxy: str | None = None
    trusted: str | None = None
    vouched: bool = False

    def credentials_for(self, url: str) -> Mapping[str, str]:
        """The ``auth`` headers for a request to ``url``, or none where they may not go."""
        if self.auth is None:
            return {}
        if self.vouched or (self.trusted is not None and same_origin(self.trusted, url)):
            return self.auth()
        log.debug("credentials not sent to %s: not the origin of the session", safe_url(url))
        return {}


def request_target(parts: SplitResult, *, absolute: bool) -> str:
    """Origin form (``/path?query``), or absolute form for a proxy; ASCII only."""
    path = parts.path or "/"
    target = f"{path}?{parts.query}" if parts.query else path
    if absolute:
        target = urlunsplit((parts.scheme, parts.netloc, target, "", ""))
    return quote(target, safe=_URL_SAFE)


def connect(
    url: str,
    *,
    proxy: Proxy | None,
    context: ssl.SSLContext | None,
    timeout: float | None,
) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """An (unopened) connection to ``url``'s server, directly or through ``proxy``.

    Returns the connection, the request target to use on it and the headers the proxy
    needs on each request (plain http through a proxy). ``proxy`` is resolved already
    (:func:`~jmapws_sync._net.resolve_proxy`; None: a direct connection), so that every
    request of a session takes the path its WebSocket took. ``timeout`` bounds each
    socket operation.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", origin(parts)[2]
    via = proxy
    extra: dict[str, str] = {}
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = context or shared_default_context()
        if via is None:
            conn = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=context, blocksize=BLOCK_SIZE
            )
        else:
            conn = http.client.HTTPSConnection(
                via.host, via.port, timeout=timeout, context=context, blocksize=BLOCK_SIZE
            )
            conn.set_tunnel(host, port, headers=via.headers)  # HTTP CONNECT
        return conn, request_target(parts, absolute=False), extra
    if via is None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout, blocksize=BLOCK_SIZE)
    else:
        conn = http.client.HTTPConnection(via.host, via.port, timeout=timeout, blocksize=BLOCK_SIZE)
        extra.update(via.headers)
    return conn, request_target(parts, absolute=via is not None), extra


def redirect_target(current: str, location: str | None) -> str | None:
    """The absolute URL a redirect's ``Location`` points to, or None if it is not a
    usable http(s) URL (none, credentials in it, a bad port)."""
    if not location or not location.strip():
        return None
    target = urlunsplit(urlsplit(urljoin(current, location.strip()))._replace(fragment=""))
    parts = urlsplit(target)
    try:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        if parts.username is not None:  # credentials in a URL: never
            return None
        origin(parts)  # raises ValueError for a port that is not a number
    except ValueError:
        return None
    return target


def problem_details(response: http.client.HTTPResponse) -> dict[str, Any] | None:
    """The RFC 7807 problem details of an error answer, if it has a JSON body."""
    kind = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
    if kind not in ("application/problem+json", "application/json"):
        return None
    try:
        body = response.read(MAX_PROBLEM_SIZE)
        document = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return document if isinstance(document, dict) else None


def status_error(
    response: http.client.HTTPResponse, url: str, *, action: str, blob_id: str | None = None
) -> Exception:
    """The exception an error status means for a blob transfer (``action`` says which)."""
    status = response.status
    safe = safe_url(url)
    if status in (401, 403):
        return AuthenticationError(
            f"{safe} refused the credentials (HTTP {status})",
            status=status,
            scheme=challenge_scheme(response.getheader("WWW-Authenticate")),
        )
    problem = problem_details(response)
    detail = problem.get("detail") if problem else None
    suffix = f": {detail}" if isinstance(detail, str) and detail else ""
    retry = parse_retry_after(response.getheader("Retry-After"))
    if status == 404 and blob_id is not None:
        return BlobNotFound(
            f"no blob {blob_id!r} at {safe} (HTTP 404){suffix}", status=status, problem=problem
        )
    if status == 413:
        return BlobTooLarge(
            f"{action}: {safe} refused it as too large (HTTP 413){suffix}",
            status=status,
            problem=problem,
        )
    reason = response.reason or ""
    return BlobError(
        f"{action}: {safe} answered HTTP {status} {reason}".rstrip() + suffix,
        status=status,
        problem=problem,
        retry_after=retry,
    )


def expand(template: str, values: Mapping[str, str]) -> str:
    """RFC 6570 level 1: each ``{name}`` becomes its value, percent-encoded (only the
    unreserved characters stay as they are); an unknown name expands to nothing."""
    out = []
    i = 0
    while True:
        start = template.find("{", i)
        if start < 0:
            out.append(template[i:])
            return "".join(out)
        end = template.find("}", start)
        if end < 0:
            raise ValueError("a URL template has a '{' without its '}'")
        out.append(template[i:start])
        out.append(quote(values.get(template[start + 1 : end], ""), safe="-._~"))
        i = end + 1
