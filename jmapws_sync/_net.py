"""Network plumbing shared by discovery and the WebSocket handshake.

One of each: the URL that may be shown (:func:`safe_url`), TLS contexts, the proxy to go
through (for ``http.client`` and websocket-client alike, so both always take the same
path), a :class:`Deadline` over several steps, and the :class:`Watchdog` that enforces a
deadline on a blocking socket.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import socket
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import SplitResult, unquote, urlsplit

import attrs

from .auth import basic_header

__all__ = [
    "DEFAULT_PORTS",
    "MAX_TIMEOUT",
    "Cancel",
    "Deadline",
    "Proxy",
    "Watchdog",
    "check_headers",
    "check_timeout",
    "custom_context",
    "finalize",
    "make_ssl_context",
    "origin",
    "parse_proxy",
    "resolve_proxy",
    "safe_url",
    "same_origin",
    "shared_default_context",
    "websocket_proxy_options",
]

log = logging.getLogger(__name__)

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Which proxy environment variable serves which scheme (ws rides on http, wss on https).
_PROXY_KEYS: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


# ---------------------------------------------------------------------------- URLs


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment, for logs, reprs and messages.

    Never raises: an unusable port is left out (the URL is refused elsewhere, before use).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def origin(parts: SplitResult) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) or ws(s) URL; :class:`ValueError` for a bad port."""
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS[scheme]


# A WebSocket URL has the origin of the HTTP URL it upgrades (RFC 6455 §3, §4.1).
_HTTP_SCHEME: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def same_origin(a: str, b: str) -> bool:
    """Whether two http(s) or ws(s) URLs share an origin (RFC 6454: scheme, host, port),
    ``ws`` counting as ``http`` and ``wss`` as ``https``.

    The one test of where credentials may go: only to the origin the user named. False
    for a URL that has no usable origin.
    """
    try:
        (sa, ha, pa), (sb, hb, pb) = origin(urlsplit(a)), origin(urlsplit(b))
    except (KeyError, ValueError):
        return False
    return (_HTTP_SCHEME[sa], ha, pa) == (_HTTP_SCHEME[sb], hb, pb) and bool(ha)


# ---------------------------------------------------------------------------- input

# RFC 9110 §5.1: a field name is a token; §5.5: a field value is visible characters, spaces
# and tabs (and obs-text, bytes 0x80-0xFF), with no whitespace around it.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VCHAR: Final = r"[\x21-\x7e\x80-\xff]"
_FIELD_VALUE: Final = re.compile(rf"(?:{_VCHAR}(?:[\t\x20-\x7e\x80-\xff]*{_VCHAR})?)?")


def check_headers(headers: Mapping[str, str]) -> None:
    """:class:`ValueError` for a header name or value that RFC 9110 does not allow.

    Checked before anything is sent, so that a token read with its trailing newline, or a
    value with CR/LF in it, cannot end the header early or add headers of its own. The
    message names the header, never its value (it may be a secret).
    """
    for name, value in headers.items():
        if type(name) is not str or not _TOKEN.fullmatch(name):
            raise ValueError("a header name is not an RFC 9110 token")
        if type(value) is not str or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                f"the value of the {name} header is not a valid field value (RFC 9110"
                " §5.5: no control characters such as CR or LF, no surrounding whitespace,"
                " Latin-1 only); it is not shown here"
            )


#: The longest wait the platform's locks and sockets take (292 years on 64-bit Linux): a
#: timeout above it means no limit, since a longer one raises OverflowError there.
MAX_TIMEOUT: Final = threading.TIMEOUT_MAX


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """``timeout`` as the library uses it: None for no limit, and for ``math.inf`` and
    anything above :data:`MAX_TIMEOUT`, so that every finite number works.

    :class:`ValueError` for NaN or a negative value; :class:`TypeError` for a non-number.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds or None")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds or None, not {timeout}")
    return None if timeout > MAX_TIMEOUT else float(timeout)


# ---------------------------------------------------------------------------- time


class Deadline:
    """The time left of a ``timeout`` that covers several steps.

    ``timeout=None`` means no limit; so does ``math.inf``. NaN or a negative value is a
    :class:`ValueError` (:func:`check_timeout`).
    """

    __slots__ = ("at",)

    def __init__(self, timeout: float | None) -> None:
        timeout = check_timeout(timeout)
        #: ``time.monotonic()`` when the time is up, or None for no limit.
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        """Seconds left (0 or less once passed), or None for no limit."""
        return None if self.at is None else self.at - time.monotonic()

    def timeout(self, message: str = "timed out") -> float | None:
        """Seconds left, or None for no limit; :class:`TimeoutError` once passed."""
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(message)
        return left


class Watchdog:
    """Shuts a socket down when a deadline passes, so that a blocked read or write returns.

    A socket timeout bounds each operation only: a peer that sends a byte now and then
    would hold the caller for ever. ``sock`` is called at the deadline for the socket to
    shut (None while there is none yet: connecting is bounded by the socket timeout).
    The raw socket is shut, never the TLS layer, which is not thread-safe. ``fired``
    says why the operation then failed; ``cancelled`` that ``cancel`` fired it.
    """

    def __init__(
        self,
        delay: float | None,
        sock: Callable[[], socket.socket | None],
        cancel: Cancel | None = None,
    ) -> None:
        self.fired = False
        self.cancelled = False
        self._sock = sock
        self._cancel = cancel
        self._timer: threading.Timer | None = None
        if delay is not None:
            self._timer = threading.Timer(max(delay, 0.0), self._fire)
            self._timer.name = "jmapws-deadline"
            self._timer.daemon = True
            self._timer.start()
        if cancel is not None and not cancel.watch(self):
            self.fire_cancelled()

    def fire_cancelled(self) -> None:
        """What :meth:`Cancel.cancel` does to every watchdog it watches."""
        self.cancelled = True
        self._fire()

    def _fire(self) -> None:
        self.fired = True
        sock = self._sock()
        if sock is None:
            return
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError as exc:
            log.debug("deadline: the socket was already closed (%s)", exc)

    def cancel(self) -> None:
        """Disarm the watchdog (it may have fired already: see :attr:`fired`)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._cancel is not None:
            self._cancel.unwatch(self)

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class Cancel:
    """Aborts, from any thread, the connection attempts (discovery, handshake) given it.

    :meth:`cancel` shuts the socket of every attempt under way and makes later ones fail
    at once; they raise :class:`~jmapws_sync.SessionClosed`. A ReconnectingSession's
    ``close()`` uses one to stop an attempt stuck on a server that does not answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watching: set[Watchdog] = set()
        #: True once :meth:`cancel` was called.
        self.cancelled = False

    def cancel(self) -> None:
        """Abort every attempt under way and every later one."""
        with self._lock:
            self.cancelled = True
            watching, self._watching = self._watching, set()
        for watchdog in watching:
            watchdog.fire_cancelled()

    def watch(self, watchdog: Watchdog) -> bool:
        """Register ``watchdog``; False when already cancelled."""
        with self._lock:
            if self.cancelled:
                return False
            self._watching.add(watchdog)
            return True

    def unwatch(self, watchdog: Watchdog) -> None:
        with self._lock:
            self._watching.discard(watchdog)


def finalize(
    close: Callable[..., object],
    *args: object,
    _finalizing: Callable[[], bool] = sys.is_finalizing,  # bound now: globals go at exit
) -> None:
    """Run ``close(*args)`` in a thread of its own, for ``__del__``.

    The collector may run a finalizer in any thread, including one that holds the very
    lock ``close`` needs (a reader in the middle of a write): closing right there could
    hang for ever. Once the interpreter is finalizing, nothing is done: the process is
    ending (the system closes its sockets), and no thread can start then. Python 3.12
    raises RuntimeError for that; 3.11 starts the thread and waits for ever for it to
    run, which hung every process that exited with a session open.
    """
    if _finalizing():
        return
    try:
        threading.Thread(target=close, args=args, name="jmapws-finalizer", daemon=True).start()
    except RuntimeError:
        log.debug("interpreter shutting down: not closing a collected session")


# ---------------------------------------------------------------------------- TLS


@functools.cache
def shared_default_context() -> ssl.SSLContext:
    """One verifying context trusting the system CAs, made once per process.

    Reading the system CA store takes tens of milliseconds; a reconnecting client would
    pay it at every connect. A context is safe to share between threads and connections.
    Treat it as read-only: pass your own ``ssl_context`` to change anything.
    """
    return ssl.create_default_context()


def make_ssl_context(
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> ssl.SSLContext:
    """The TLS context for discovery and the WebSocket alike; verification always on.

    ``ssl_context`` is returned as it is (it may carry its own CA and client
    certificate); with no option, :func:`shared_default_context`; otherwise a new context
    trusting the system CAs, or only ``cafile``, with the client certificate ``certfile``
    (and its ``keyfile``, if separate) loaded. Raises :class:`ValueError` when both a
    context and files are given, or a file cannot be loaded.
    """
    return (
        custom_context(ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile)
        or shared_default_context()
    )


def custom_context(
    *,
    ssl_context: ssl.SSLContext | None,
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
) -> ssl.SSLContext | None:
    """The context the options ask for, or None for the shared default (made when needed)."""
    if ssl_context is not None:
        if cafile or certfile or keyfile:
            raise ValueError("pass either ssl_context or cafile/certfile/keyfile, not both")
        return ssl_context
    if keyfile and not certfile:
        raise ValueError("keyfile needs certfile")
    if not (cafile or certfile):
        return None
    try:
        context = ssl.create_default_context(cafile=cafile)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot load the TLS files: {reason}") from exc
    return context


# ---------------------------------------------------------------------------- proxies


@attrs.frozen
class Proxy:
    """An HTTP proxy; its ``credentials`` are never shown."""

    host: str
    port: int
    credentials: tuple[str, str] | None = attrs.field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``http://host:port``, for logs (no credentials)."""
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """``Proxy-Authorization`` when the proxy URL carried credentials, else nothing."""
        if self.credentials is None:
            return {}
        return {"Proxy-Authorization": basic_header(*self.credentials)}


def websocket_proxy_options(proxy: Proxy | None) -> dict[str, Any]:
    """websocket-client options for ``proxy``; None is a direct connection.

    Always explicit, so that websocket-client never reads the environment on its own:
    :func:`resolve_proxy` has read it already, for discovery and the WebSocket alike.
    """
    if proxy is None:
        return {"http_no_proxy": ["*"]}
    return {
        "http_proxy_host": proxy.host,
        "http_proxy_port": proxy.port,
        "http_proxy_auth": proxy.credentials,
        "proxy_type": "http",
    }


def parse_proxy(proxy: str) -> Proxy:
    """Read ``http://[user:pass@]host:port``; the message never repeats the URL."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("the proxy URL has an invalid port") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("only http://[user:pass@]host:port proxies are supported")
    credentials = None
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
    return Proxy(parts.hostname, port, credentials)


def resolve_proxy(url: str, proxy: str | None) -> Proxy | None:
    """The proxy to reach ``url`` through, or None for a direct connection.

    ``proxy`` (``None``: the environment's ``https_proxy`` / ``http_proxy``; ``""``: none),
    unless the environment's ``no_proxy`` lists the host, as websocket-client reads it.
    """
    parts = urlsplit(url)
    if proxy is None:
        proxy = urllib.request.getproxies().get(_PROXY_KEYS.get(parts.scheme, parts.scheme), "")
    if not proxy:
        return None
    host = (parts.hostname or "").lower()
    key = f"{host}:{parts.port}" if parts.port and ":" not in host else host
    if urllib.request.proxy_bypass(key):
        log.debug("no_proxy: connecting to %s directly", host)
        return None
    return parse_proxy(proxy)
