"""JMAP calls over HTTP POST (RFC 8620 §3.1), for servers without a WebSocket (Fastmail).

:class:`HttpLink` is what a :class:`~jmapws_sync.ReconnectingSession` holds instead of a
WebSocket connection when the Session resource has no ``urn:ietf:params:jmap:websocket``
capability, or when ``transport="http"`` says so: each ``call()`` is a POST of the
Request to ``apiUrl`` over a small pool of keep-alive connections, at most
``maxConcurrentRequests`` at once (the others wait their turn), with the session's
credentials, TLS settings and proxy (:mod:`._http`). Answers are read as the WebSocket's
are: a Response, or a request-level error (RFC 7807 problem details) as
:class:`~jmapws_sync.RequestFailed`; refused credentials are
:class:`~jmapws_sync.AuthenticationError`; a connection that breaks is a
:class:`~jmapws_sync.TransportError`, after which the supervisor makes a new link (the
Session resource fetched again), as it would reconnect a WebSocket.

The link has no stream of its own: pushes come from the EventSource, and the answer to
a ``send_request()`` is put in the session's inbox, in order, as a WebSocket's would be.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ._http import HttpSettings, connect, problem_details
from ._inbox import Inbox
from ._net import Deadline, check_timeout, resolve_proxy, safe_url
from .blobs import Blobs
from .codec import decode_body, encode_body
from .errors import (
    AuthenticationError,
    JmapWsError,
    ParseError,
    RequestFailed,
    SessionClosed,
    TransportError,
    challenge_scheme,
    translate,
)
from .frames import Request, RequestError, Response
from .resource import SessionResource

__all__ = ["HttpLink"]

log = logging.getLogger(__name__)

#: The largest answer read (a Response over HTTP has no frame limit; this is its bound).
MAX_ANSWER: Final = 64 << 20


class _Progress:
    """What the supervisor's keepalive reads of a connection: bytes that moved."""

    sent = 0


class HttpLink:
    """One "connection" of a ReconnectingSession over HTTP: the Session resource it was
    discovered with, and a pool of keep-alive connections to its ``apiUrl``.

    Safe from any thread. ``on_end(error, local)`` is told once when it closes.
    """

    def __init__(
        self,
        resource: SessionResource,
        *,
        settings: HttpSettings,
        inbox: Inbox,
        on_end: Callable[[BaseException | None, bool], object],
        max_concurrent_requests: int | None = None,
        max_message_size: int = MAX_ANSWER,
    ) -> None:
        self.session = resource
        self._settings = settings
        self._inbox = inbox
        self._on_end = on_end
        limit = max_concurrent_requests or resource.core.max_concurrent_requests
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._closed = False
        self._max = max_message_size
        self._activity = time.monotonic()
        self._conn = _Progress()  # the supervisor's keepalive looks at it
        self._blobs = Blobs(settings, lambda: self.session, self._blob_call)
        #: Always None: HTTP has no close code; kept for the supervisor.
        self.close_code: int | None = None
        #: Always None: no pushState arrives on this link (the EventSource's does).
        self.received_push_state: str | None = None

    # ------------------------------------------------------------------ what a link offers

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or a call found the link broken)."""
        return self._closed

    @property
    def last_activity(self) -> float:
        """``time.monotonic()`` of the last answer (or of the last keepalive check)."""
        return self._activity

    @property
    def http_settings(self) -> HttpSettings:
        """The credentials, TLS context and proxy the link uses."""
        return self._settings

    def ping(self, payload: bytes = b"", *, wait: bool = True) -> bool:
        """Nothing to keep alive between requests: a sign of life, at once."""
        self._activity = time.monotonic()
        return True

    def call(self, request: Request, *, timeout: float | None = None) -> Response:
        """POST ``request`` to ``apiUrl`` and return the Response.

        Raises :class:`~jmapws_sync.RequestFailed` (a problem details answer),
        :class:`~jmapws_sync.AuthenticationError`, :class:`~jmapws_sync.TransportError`
        (the link is then broken) or :class:`TimeoutError`.
        """
        deadline = Deadline(check_timeout(timeout))
        if self._closed:
            raise SessionClosed("the HTTP link is closed")
        body = encode_body(request)
        if not self._slots.acquire(timeout=_left(deadline)):
            raise TimeoutError(f"no request slot free within {timeout} s")
        try:
            return self._post(body, deadline)
        finally:
            self._slots.release()

    def send_request(self, request: Request, id: str | int | None = None) -> None:  # noqa: A002
        """Make the call now and put its answer in the inbox (with ``id`` as its
        ``requestId``), where a WebSocket's answer would arrive."""
        try:
            response = self.call(request)
        except RequestFailed as exc:
            problem = exc.problem
            self._inbox.put(
                RequestError(
                    problem.type,
                    status=problem.status,
                    title=problem.title,
                    detail=problem.detail,
                    limit=problem.limit,
                    request_id=id,
                    extra=problem.extra,
                )
            )
            return
        self._inbox.put(
            Response(
                response.method_responses,
                response.session_state,
                response.created_ids,
                request_id=id,
            )
        )

    def send_text(self, text: str) -> None:
        """Raw frames are a WebSocket thing: an error over HTTP."""
        raise JmapWsError("send_text() needs a WebSocket; this session calls over HTTP")

    def enable_push(self, *args: Any, **kwargs: Any) -> None:
        """Push over HTTP comes from the EventSource (``push_via`` in ReconnectingSession)."""
        from .errors import PushUnavailable  # noqa: PLC0415 - a rare path

        raise PushUnavailable("no WebSocket: push comes from the EventSource (push_via)")

    def disable_push(self) -> None:
        """Nothing to disable on the link itself."""

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> None:
        """Close the pooled connections; the link is done. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._on_end(None, True)

    # ------------------------------------------------------------------ blobs

    def upload(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`WsSession.upload <jmapws_sync.WsSession.upload>`."""
        return self._blobs.upload(*args, **kwargs)

    def download(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`WsSession.download <jmapws_sync.WsSession.download>`."""
        return self._blobs.download(*args, **kwargs)

    def open_blob(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`WsSession.open_blob <jmapws_sync.WsSession.open_blob>`."""
        return self._blobs.open(*args, **kwargs)

    def read_blob(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`WsSession.read_blob <jmapws_sync.WsSession.read_blob>`."""
        return self._blobs.read(*args, **kwargs)

    def _blob_call(self, request: Request, timeout: float | None) -> Response:
        return self.call(request, timeout=timeout)

    # ------------------------------------------------------------------ the POST

    def _post(self, body: bytes, deadline: Deadline) -> Response:
        url = self.session.api_url
        conn = self._take(url, deadline)
        keep = False
        try:
            headers = {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "jmapws-sync",
                **self._extra,
                **self._settings.credentials_for(url),
            }
            conn.timeout = _left(deadline)
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            conn.request("POST", self._target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(self._max + 1) if response.status == 200 else b""
            keep = not response.will_close and response.status == 200
            self._activity = time.monotonic()
            if response.status == 200:
                if len(data) > self._max:
                    raise TransportError(f"the answer from {safe_url(url)} is over {self._max}")
                return _response(data, url)
            raise self._refused(response, url)
        except (OSError, http.client.HTTPException) as exc:
            self._closed = True  # the supervisor replaces a broken link
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"POST {safe_url(url)} timed out") from exc
            raise translate(exc, safe_url(url), action="calling") from exc
        finally:
            if keep:
                with self._lock:
                    if not self._closed:
                        self._idle.append(conn)
                        conn = None  # type: ignore[assignment]
            if conn is not None:
                conn.close()

    def _take(self, url: str, deadline: Deadline) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn, target, extra = connect(
            url,
            proxy=resolve_proxy(url, self._settings.proxy),
            context=self._settings.ssl_context,
            timeout=_left(deadline),
        )
        self._target, self._extra = target, extra
        return conn

    _target = "/"
    _extra: dict[str, str] = {}  # noqa: RUF012 - replaced, never mutated

    def _refused(self, response: http.client.HTTPResponse, url: str) -> Exception:
        status = response.status
        if status in (401, 403):
            return AuthenticationError(
                f"{safe_url(url)} refused the credentials (HTTP {status})",
                status=status,
                scheme=challenge_scheme(response.getheader("WWW-Authenticate")),
            )
        problem = problem_details(response)
        if problem is not None and isinstance(problem.get("type"), str):
            return RequestFailed(_request_error(problem))
        return TransportError(
            f"POST {safe_url(url)} answered HTTP {status} {response.reason}".rstrip()
        )


def _left(deadline: Deadline) -> float | None:
    left = deadline.timeout("the call timed out")
    return None if left is None else max(left, 0.001)


def _response(data: bytes, url: str) -> Response:
    try:
        frame = decode_body(data, "Response")
    except ParseError as exc:
        raise TransportError(f"{safe_url(url)} answered with no JSON object") from exc
    if not isinstance(frame, Response):
        raise TransportError(f"{safe_url(url)} answered with no Response")
    return frame


def _request_error(problem: dict[str, Any]) -> RequestError:
    frame = decode_body(json.dumps(problem), "RequestError")
    if isinstance(frame, RequestError):
        return frame
    return RequestError(str(problem.get("type")))
