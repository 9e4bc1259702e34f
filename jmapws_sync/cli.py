"""The ``jmapws-sync`` command (also ``python -m jmapws_sync``).

Subcommands: ``session``, ``call``, ``listen``, ``sync``, ``upload``, ``download``,
``serve`` and ``demo``; ``--help`` on each. ``upload`` and ``download`` draw a progress bar
on stderr when it is a terminal, and nothing otherwise.
Secrets never go on the command line for the client commands: the password or token comes
from an environment variable, a file, or a prompt.

Exit statuses: 0 success; 1 another jmapws_sync error; 2 usage or input error (checked
before anything is sent); 3 authentication refused; 4 connection failed (transport,
handshake, timeout); 5 the server rejected the request; 6 ``serve``'s port is in use;
130 interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM; 128 + 15, as a shell reports a
process that SIGTERM ended).

``listen``, ``sync`` and ``serve`` end the same way on SIGTERM as on Ctrl-C: ``listen``
and ``sync`` close their session with a close handshake (1000), ``serve`` closes every
connection (1001) and stops listening. ``sync`` prints a Delta, then saves its state in
``--state-file`` when it asks for the next one: one killed in between prints it again at
its next start. The SIGTERM handler is installed only while one of them runs in the main
thread (not when :func:`main` is called from another thread), then the previous one is
put back; a SIGTERM that was ignored when the command started stays ignored, as SIGINT
does in Python. A second SIGTERM during the close is ignored: the close is bounded by its
own timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import getpass
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from ._demo import run_demo
from ._net import make_ssl_context, parse_proxy
from ._version import __version__
from .auth import Auth, BasicAuth, BearerAuth
from .client import connect
from .codec import CLIENT_FRAMES, decode, encode
from .discovery import fetch_session
from .errors import (
    AuthenticationError,
    HandshakeError,
    JmapWsError,
    MethodError,
    RequestFailed,
    SessionClosed,
    SessionError,
    TransportError,
    WebSocketUnavailable,
)
from .feed import ChangeFeed
from .frames import Request
from .reconnect import ReconnectInfo, ReconnectingSession
from .states import FileStateStore

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_CONNECT, EXIT_REQUEST = 0, 1, 2, 3, 4, 5
EXIT_PORT_IN_USE = 6
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process Ctrl-C killed
EXIT_TERMINATED = 143  # 128 + SIGTERM, likewise

_EPILOG = """\
credentials: --user NAME takes the password from $JMAP_PASSWORD (or --password-env VAR,
--password-file FILE, or a prompt); --token-env VAR / --token-file FILE give a bearer token.

exit status: 0 ok, 1 other error, 2 usage or input error, 3 authentication refused,
4 connection failed, 5 request rejected by the server, 6 (serve) the port is in use,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM; listen and serve close cleanly first).
"""


class UsageError(Exception):
    """Bad command-line input; exits with status 2."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the command unwinds as it does on Ctrl-C (a
    KeyboardInterrupt, so every ``with`` closes what it opened), and exits 143."""


#: The commands that run until they are stopped, and so stop on SIGTERM as on Ctrl-C.
_UNTIL_STOPPED = frozenset({"listen", "serve", "sync"})


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM must not interrupt the close the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt(wanted: bool) -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`_Terminated` in the main thread; the
    previous handler is put back afterwards. Nothing is installed when not ``wanted``,
    outside the main thread (where signal handlers cannot be set), when SIGTERM is
    ignored (as a parent asked), or when its handler was not set from Python (it could not
    be put back)."""
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous == signal.SIG_IGN:
        yield
        return
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------- credentials


def _timeout(text: str) -> float | None:
    """``--timeout``: seconds; ``inf`` for no limit; NaN or negative is a usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds (or inf), not {text!r}")
    return None if value == math.inf else value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {value}")
    return value


def _check_url(url: str, schemes: tuple[str, ...]) -> None:
    """The server URL, before anything is sent: scheme, host, port, no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise UsageError(f"the URL must start with {' or '.join(s + '://' for s in schemes)}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError("the URL's port is not a number in 1-65535") from None
    if port == 0:
        raise UsageError("the URL's port is not a number in 1-65535")
    if parts.username is not None or parts.password is not None:
        raise UsageError("credentials do not go in the URL: use --user or --token-file")


def _check_client(args: argparse.Namespace) -> None:
    """Everything the client commands can check before connecting."""
    schemes = ("http", "https", "ws", "wss") if args.command == "listen" else ("http", "https")
    _check_url(args.url, schemes)
    if args.user is not None and (":" in args.user or not args.user):
        raise UsageError("--user takes a user name without ':' (RFC 7617)")
    if args.cafile:
        try:
            make_ssl_context(cafile=args.cafile)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--cafile {args.cafile}: {exc}") from None
    if args.proxy:
        try:
            parse_proxy(args.proxy)
        except ValueError as exc:
            raise UsageError(f"--proxy: {exc}") from None


def _read_secret_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _auth(args: argparse.Namespace) -> Auth | None:
    """Build the auth from options that keep secrets out of argv."""
    if args.token_env or args.token_file:
        if args.token_file:
            token = _read_secret_file(args.token_file)
        else:
            token = os.environ.get(args.token_env, "")
            if not token:
                raise UsageError(f"environment variable {args.token_env} is not set")
        return BearerAuth(token)
    if not args.user:
        return None
    if args.password_file:
        password = _read_secret_file(args.password_file)
    elif os.environ.get(args.password_env):
        password = os.environ[args.password_env]
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
    else:
        raise UsageError(
            f"no password for {args.user}: set ${args.password_env}, or use --password-file"
        )
    return BasicAuth(args.user, password)


def _connect_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"timeout": args.timeout}
    if args.cafile:
        options["cafile"] = args.cafile
    if args.proxy is not None:
        options["proxy"] = args.proxy
    if getattr(args, "allow_missing_subprotocol", False):
        options["require_subprotocol"] = False
    if getattr(args, "no_compression", False):
        options["compression"] = None
    return options


# ---------------------------------------------------------------------- subcommands


def _cmd_session(args: argparse.Namespace, out: TextIO) -> int:
    options = _connect_options(args)
    resource = fetch_session(args.url, auth=_auth(args), **options)
    if args.json:
        json.dump(resource.raw, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    ws = resource.websocket
    print(f"session url:  {resource.url}", file=out)
    print(f"username:     {resource.username}", file=out)
    print(f"state:        {resource.state}", file=out)
    print(f"api url:      {resource.api_url}", file=out)
    if ws is None:
        print("websocket:    (not offered)", file=out)
    else:
        push = "push supported" if ws.supports_push else "no push"
        print(f"websocket:    {ws.url} ({push})", file=out)
    print("capabilities:", file=out)
    for urn in sorted(resource.capabilities):
        print(f"  {urn}", file=out)
    print("accounts:", file=out)
    primary: dict[str, list[str]] = {}
    for urn, account_id in resource.primary_accounts.items():
        primary.setdefault(account_id, []).append(urn)
    for account_id, account in sorted(resource.accounts.items()):
        marks = f" (primary for {len(primary[account_id])})" if account_id in primary else ""
        print(f"  {account_id}  {account.name}{marks}", file=out)
    return EXIT_OK


def _read_request(source: str) -> Request:
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise UsageError(f"the request is not JSON: {exc}") from None
    except RecursionError:
        raise UsageError("the request is nested too deeply") from None
    if not isinstance(obj, dict):
        raise UsageError("the request must be a JSON object with using and methodCalls")
    obj.setdefault("@type", "Request")
    frame = decode(json.dumps(obj), accept=CLIENT_FRAMES)
    if not isinstance(frame, Request):
        raise UsageError("the request must be a JMAP Request: using and methodCalls (RFC 8620)")
    return frame


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259)")


def _cmd_call(args: argparse.Namespace, out: TextIO) -> int:
    request = _read_request(args.file)
    auth = _auth(args)
    try:
        with connect(args.url, auth=auth, **_connect_options(args)) as ws:
            response = ws.call(request, timeout=args.timeout)
    except WebSocketUnavailable:  # no WebSocket (Fastmail): the same call over HTTP
        context = make_ssl_context(cafile=args.cafile) if args.cafile else None
        with ReconnectingSession(
            args.url,
            auth=auth,
            transport="http",
            connect_timeout=args.timeout,
            ssl_context=context,
            proxy=args.proxy,
        ) as rs:
            rs.wait_connected(timeout=args.timeout)
            response = rs.call(request, timeout=args.timeout)
    json.dump(json.loads(encode(response)), out, indent=2)
    out.write("\n")
    return EXIT_OK


class _ProgressBar:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._shown = sys.stderr.isatty()
        self._last = -1

    def __call__(self, done: int, total: int | None) -> None:
        if not self._shown:
            return
        if total:
            percent = done * 100 // total
            if percent == self._last:
                return
            self._last = percent
            filled = percent * 30 // 100
            bar = "#" * filled + "." * (30 - filled)
            text = f"\r{self._label} [{bar}] {percent:3d}% {done:,}/{total:,} bytes"
        else:
            text = f"\r{self._label} {done:,} bytes"
        sys.stderr.write(text)
        sys.stderr.flush()

    def finish(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _cmd_upload(args: argparse.Namespace, out: TextIO) -> int:
    if not os.path.isfile(args.file):
        raise UsageError(f"not a file: {args.file}")
    bar = _ProgressBar("uploading")
    with connect(args.url, auth=_auth(args), **_connect_options(args)) as ws:
        try:
            blob = ws.upload(
                args.file,
                type=args.type,
                account_id=args.account,
                timeout=args.timeout,
                progress=bar,
                via="http",
            )
        finally:
            bar.finish()
    out.write(
        json.dumps(
            {
                "accountId": blob.account_id,
                "blobId": blob.blob_id,
                "type": blob.type,
                "size": blob.size,
            }
        )
        + "\n"
    )
    return EXIT_OK


def _cmd_download(args: argparse.Namespace, out: TextIO) -> int:
    bar = _ProgressBar("downloading")
    with connect(args.url, auth=_auth(args), **_connect_options(args)) as ws:
        try:
            written = ws.download(
                args.blob_id,
                to=args.out,
                name=args.name,
                type=args.type,
                account_id=args.account,
                timeout=args.timeout,
                progress=bar,
            )
        finally:
            bar.finish()
    print(f"jmapws-sync: {written:,} bytes written to {args.out}", file=sys.stderr)
    return EXIT_OK


def _cmd_listen(args: argparse.Namespace, out: TextIO) -> int:
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None

    def reconnected(info: ReconnectInfo) -> None:
        how = f"resumed from pushState {info.push_state}" if info.push_resumed else "push on"
        print(
            f"jmapws-sync: reconnected after {info.downtime:.1f} s ({how})",
            file=sys.stderr,
            flush=True,
        )

    context = make_ssl_context(cafile=args.cafile) if args.cafile else None
    with ReconnectingSession(
        args.url,
        auth=_auth(args),
        push=True,
        data_types=types,
        on_reconnect=reconnected,
        connect_timeout=args.timeout,
        ssl_context=context,
        proxy=args.proxy,
        require_subprotocol=not args.allow_missing_subprotocol,
        compression=None if args.no_compression else "deflate",
    ) as rs:
        rs.wait_connected(timeout=args.timeout)
        for change in rs.changes():
            out.write(encode(change) + "\n")
            out.flush()
    return EXIT_OK


def _cmd_sync(args: argparse.Namespace, out: TextIO) -> int:
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    if not types:
        raise UsageError("--types names no data type")
    store = FileStateStore(args.state_file) if args.state_file else None
    context = make_ssl_context(cafile=args.cafile) if args.cafile else None
    with ReconnectingSession(
        args.url,
        auth=_auth(args),
        connect_timeout=args.timeout,
        ssl_context=context,
        proxy=args.proxy,
        require_subprotocol=not args.allow_missing_subprotocol,
        compression=None if args.no_compression else "deflate",
    ) as rs:
        rs.wait_connected(timeout=args.timeout)
        feed = ChangeFeed(
            rs,
            types,
            account_id=args.account,
            store=store,
            max_changes=args.max_changes,
            call_timeout=args.timeout,
        )
        deltas = feed.catch_up() if args.once else feed.follow()
        for delta in deltas:  # asking for the next one saves the state of this one
            out.write(json.dumps(delta.to_json(), separators=(",", ":")) + "\n")
            out.flush()
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _parse_users(values: Sequence[str]) -> dict[str, str]:
    users: dict[str, str] = {}
    for value in values:
        name, sep, secret = value.partition(":")
        if not sep or not name or not secret:
            raise UsageError(f"--user takes NAME:SECRET, got {name or value!r}:…")
        users[name] = secret
    return users


def _cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from .testing import ReferenceServer  # noqa: PLC0415 - the server extra, only here

    users = _parse_users(args.user) if args.user else {"alice": "secret"}
    server = ReferenceServer(host="127.0.0.1", port=args.port, users=users)
    try:
        server.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"jmapws-sync: error: port {args.port} is in use", file=sys.stderr)
        return EXIT_PORT_IN_USE
    try:
        print(f"reference JMAP server on {server.base_url}", file=out)
        print(f"  session: {server.session_url}", file=out)
        print(f"  users:   {', '.join(sorted(users))}", file=out)
        print("press Ctrl-C to stop", file=out)
        out.flush()
        threading.Event().wait()  # until Ctrl-C
    finally:
        server.stop()
    return EXIT_OK


# ---------------------------------------------------------------------- wiring


def _client_options(parser: argparse.ArgumentParser, *, websocket: bool = True) -> None:
    """The options of the commands that talk to a server; ``websocket`` adds those of the
    WebSocket handshake (``session`` only fetches the Session resource over HTTP)."""
    parser.add_argument("url", help="server base URL (https://host) or Session resource URL")
    parser.add_argument("--user", help="user name for HTTP Basic auth")
    parser.add_argument(
        "--password-env",
        default="JMAP_PASSWORD",
        metavar="VAR",
        help="environment variable holding the password (default: JMAP_PASSWORD)",
    )
    parser.add_argument("--password-file", metavar="FILE", help="file holding the password")
    parser.add_argument("--token-env", metavar="VAR", help="environment variable with a token")
    parser.add_argument("--token-file", metavar="FILE", help="file holding a bearer token")
    parser.add_argument(
        "--timeout", type=_timeout, default=30.0, help="seconds, or inf (default: 30)"
    )
    parser.add_argument("--cafile", help="CA bundle to verify the server's certificate")
    parser.add_argument("--proxy", help="HTTP proxy URL ('' for none; default: environment)")
    if not websocket:
        return
    parser.add_argument(
        "--allow-missing-subprotocol",
        action="store_true",
        help="accept servers that do not echo the 'jmap' subprotocol",
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="do not offer permessage-deflate (RFC 7692) in the handshake",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for documentation tools and tests."""
    parser = argparse.ArgumentParser(
        prog="jmapws-sync",
        description="JMAP over WebSocket (RFC 8887) from the command line.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add("session", "print the server's JMAP Session resource")
    _client_options(p, websocket=False)
    p.add_argument("--json", action="store_true", help="print the raw resource as JSON")
    p.set_defaults(func=_cmd_session)

    p = add("call", "send one JMAP request (JSON from FILE or stdin) and print the response")
    _client_options(p)
    p.add_argument("file", nargs="?", default="-", help="request JSON file, or - for stdin")
    p.set_defaults(func=_cmd_call)

    p = add(
        "listen",
        "print StateChange pushes as JSON lines until interrupted; reconnects by itself",
    )
    _client_options(p)
    p.add_argument("--types", help="comma-separated data types (default: all)")
    p.set_defaults(func=_cmd_listen)

    p = add("upload", "upload FILE as a blob (RFC 8620 §6.1) and print the Blob as JSON")
    _client_options(p)
    p.add_argument("file", help="the file to upload")
    p.add_argument("--type", default="application/octet-stream", help="its media type")
    p.add_argument("--account", help="account id (default: the primary account)")
    p.set_defaults(func=_cmd_upload)

    p = add("download", "download blob BLOB_ID into OUT (written whole, then renamed)")
    _client_options(p)
    p.add_argument("blob_id", metavar="BLOB_ID", help="the blob's id")
    p.add_argument("out", metavar="OUT", help="the file to write")
    p.add_argument("--name", help="the name in the download URL (default: the blob id)")
    p.add_argument("--type", help="the media type asked for (default: octet-stream)")
    p.add_argument("--account", help="account id (default: the primary account)")
    p.set_defaults(func=_cmd_download)

    p = add(
        "sync",
        "print the changes of data types as JSON lines (Deltas), from the states in"
        " --state-file, until interrupted; reconnects and catches up by itself",
    )
    _client_options(p)
    p.add_argument("--types", required=True, help="comma-separated data types, in order")
    p.add_argument("--state-file", metavar="FILE", help="where the states are kept between runs")
    p.add_argument("--account", help="account id (default: the types' primary account)")
    p.add_argument("--max-changes", type=_positive, metavar="N", help="ids per /changes")
    p.add_argument("--once", action="store_true", help="catch up, then exit (no push)")
    p.set_defaults(func=_cmd_sync)

    p = add("serve", "run the reference JMAP server in the foreground (for local testing)")
    p.add_argument("--port", type=_port, default=8080, help="port on 127.0.0.1 (default: 8080)")
    p.add_argument(
        "--user",
        action="append",
        metavar="NAME:SECRET",
        help="a user and password (repeatable; default alice:secret); test servers only",
    )
    p.set_defaults(func=_cmd_serve)

    p = add("demo", "start a reference server in-process and walk through the library")
    p.set_defaults(func=lambda args, out: run_demo(out))
    return parser


def _exit_status(exc: BaseException) -> int:
    if isinstance(exc, SessionClosed) and exc.cause is not None:
        return _exit_status(exc.cause)  # the session ended earlier: report why
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, TransportError | HandshakeError | TimeoutError | SessionError):
        return EXIT_CONNECT
    if isinstance(exc, RequestFailed | MethodError):
        return EXIT_REQUEST
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command; return its exit status (``sys.exit(main())`` in the script)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "call" and args.file == "-" and len(extra) == 1:
        args.file = extra[0]  # `call URL --user alice FILE`, as `call URL FILE --user alice`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    stream = out if out is not None else sys.stdout
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command in ("session", "call", "listen", "sync", "upload", "download"):
            _check_client(args)
        with _sigterm_as_interrupt(args.command in _UNTIL_STOPPED):
            status: int = args.func(args, stream)
        stream.flush()  # here, not at exit: a reader gone away is a BrokenPipeError below
    except _Terminated:
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`... | head`): stop quietly, and keep the
        # interpreter from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (UsageError, ValueError) as exc:  # the library's ValueErrors: bad input, not a bug
        if args.debug and not isinstance(exc, UsageError):
            raise
        print(f"jmapws-sync: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (JmapWsError, TimeoutError) as exc:
        if args.debug:
            raise
        print(f"jmapws-sync: error: {exc}", file=sys.stderr)
        return _exit_status(exc)
    return status
