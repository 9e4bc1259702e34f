"""Security: no credential in any log record, repr or exception; payloads redacted; TLS verified.

The credential test captures every log record at DEBUG (root, ``websocket``, ``jmapws_sync``,
the reference server's) through whole sessions with Basic and Bearer auth, push, a close
1008, a reset, refused credentials at discovery and at the handshake, and then searches each
formatted record (tracebacks included), each exception in every chain (str and repr), and the
reprs of the auth objects, sessions and Session resources for the secrets, raw and encoded.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

import jmapws_sync as jws
from jmapws_sync.testing import ReferenceServer

from .support.faultservers import TlsRawServer, barrier, scripted_session
from .support.rawws import BINARY, TEXT, RawServer, echo_requests, idle

PASSWORD = "pw-7f3c9b1e-SECRET"
TOKEN = "tok-51d2a8e4-SECRET"
WRONG = "wrong-0c8e77aa-SECRET"
PAYLOAD = "payload-93ab10cd-PRIVATE"
USER = "alice"


def _basic(password: str) -> str:
    return base64.b64encode(f"{USER}:{password}".encode()).decode()


SECRETS = [PASSWORD, TOKEN, WRONG, _basic(PASSWORD), _basic(WRONG)]
ECHO = jws.Request(using=[jws.CORE], method_calls=[jws.Invocation("Core/echo", {"x": 1}, "c0")])


class Capture(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        """Each record formatted (traceback included) plus every attribute it carries."""
        return [f"{self.format(record)}\n{record.__dict__!r}" for record in self.records]


@pytest.fixture
def all_logs() -> Iterator[Capture]:
    """Every log record of the process at DEBUG, while the test runs."""
    capture = Capture()
    names = ["", "websocket", "jmapws_sync", "jmapws_sync.testing", "aiohttp"]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(capture)
    try:
        yield capture
    finally:
        logging.getLogger().removeHandler(capture)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception, its causes, contexts and SessionClosed causes, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, getattr(item, "cause", None)]


def find_leaks(texts: list[str], secrets: list[str]) -> list[tuple[str, str]]:
    return [(secret, text[:300]) for text in texts for secret in secrets if secret in text]


class Evidence:
    """Everything a test saw that must not carry a secret."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def exception(self, exc: BaseException) -> None:
        for item in chain(exc):
            self.texts += [str(item), repr(item)]

    def expect(self, error: type[BaseException], func: Any, *args: Any, **kw: Any) -> None:
        with pytest.raises(error) as info:
            func(*args, **kw)
        self.exception(info.value)

    def reprs(self, *objects: object) -> None:
        self.texts += [repr(o) for o in objects] + [str(o) for o in objects]


def _drain_until_error(ws: jws.WsSession, evidence: Evidence) -> BaseException:
    """Read frames until the stream ends with an exception; record it."""
    for _ in range(1000):
        try:
            frame = ws.next_frame(timeout=5)
        except (jws.ProtocolViolation, jws.ParseError) as exc:
            evidence.exception(exc)
            continue
        except (jws.TransportError, jws.AuthenticationError) as exc:
            evidence.exception(exc)
            return exc
        evidence.reprs(frame)
    pytest.fail("the stream never ended")


# -- credentials -----------------------------------------------------------------------------


def test_credentials_absent_from_logs_reprs_and_errors_with_reference_server(
    all_logs: Capture,
) -> None:
    """Whole sessions (Basic, Bearer, token callable): calls, push, 1008, reset, 401s: no secret."""
    evidence = Evidence()
    auths: list[Any] = [
        jws.BasicAuth(USER, PASSWORD),
        jws.BearerAuth(TOKEN),
        jws.BearerAuth(lambda: TOKEN),
        lambda: {"Authorization": f"Bearer {TOKEN}"},
    ]
    with ReferenceServer(users={USER: PASSWORD}, tokens={TOKEN: USER}) as server:
        for auth in auths:
            with jws.connect(server.base_url, auth=auth, timeout=5) as ws:
                reply = ws.call(ECHO, timeout=5)
                ws.enable_push()
                evidence.reprs(auth, ws, ws.session, reply)
                server.close_all(1008)
                error = _drain_until_error(ws, evidence)
                assert isinstance(error, jws.AuthenticationError)
                evidence.expect(jws.SessionClosed, ws.next_frame, timeout=5)
                evidence.expect(jws.SessionClosed, ws.call, ECHO, timeout=5)
            with jws.connect(server.base_url, auth=auth, timeout=5) as ws:
                ws.call(ECHO, timeout=5)
                server.reset_all()
                assert isinstance(_drain_until_error(ws, evidence), jws.TransportError)
                evidence.reprs(ws)
        wrong_basic = jws.BasicAuth(USER, WRONG)
        wrong_bearer = jws.BearerAuth(WRONG)
        for wrong in (wrong_basic, wrong_bearer):
            evidence.expect(jws.AuthenticationError, jws.connect, server.base_url, auth=wrong)
            evidence.expect(
                jws.AuthenticationError, jws.WsSession.open, server.ws_url, auth=wrong, timeout=5
            )
            evidence.reprs(wrong)
    texts = all_logs.texts()
    assert any(r.name.startswith("jmapws_sync.") for r in all_logs.records)  # capture works
    assert find_leaks(texts + evidence.texts, SECRETS) == []


def test_credentials_absent_with_byte_level_faults(all_logs: Capture) -> None:
    """401 at the upgrade, close 1008, reset, bad UTF-8, refused, timeout: no secret anywhere."""
    evidence = Evidence()
    auth = jws.BasicAuth(USER, PASSWORD)
    challenge = 'WWW-Authenticate: Basic realm="jmap"\r\n'
    with RawServer(idle, status=401, extra_headers=challenge) as server:
        evidence.expect(jws.AuthenticationError, jws.WsSession.open, server.url, auth=auth)
    faults = [
        lambda peer: peer.send_close(1008, "expired"),
        lambda peer: peer.reset(),
        lambda peer: peer.send_frame(TEXT, b"\xff\xfe"),
        lambda peer: peer.send_frame(TEXT, b"{}", length=2**40),
    ]
    for fault in faults:
        for scheme in (jws.BasicAuth(USER, PASSWORD), jws.BearerAuth(TOKEN)):
            with scripted_session(auth=scheme) as (_, ws, peer):
                assert peer.headers["authorization"] in (
                    f"Basic {_basic(PASSWORD)}",
                    f"Bearer {TOKEN}",
                )
                fault(peer)
                _drain_until_error(ws, evidence)
                evidence.expect(jws.SessionClosed, ws.send_request, ECHO)
                evidence.reprs(ws, scheme)
    # Secrets in the URL itself (user info, query) stay out of messages too.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        url = f"ws://{USER}:{PASSWORD}@127.0.0.1:{port}/jmap/ws?access_token={TOKEN}"
        evidence.expect(TimeoutError, jws.WsSession.open, url, auth=auth, timeout=0.3)
    evidence.expect(jws.TransportError, jws.WsSession.open, url, auth=auth, timeout=5)
    assert find_leaks(all_logs.texts() + evidence.texts, SECRETS) == []


# -- payload redaction -----------------------------------------------------------------------


def test_frame_payloads_stay_out_of_reprs_errors_and_logs(all_logs: Capture) -> None:
    """Unknown, misfit, non-JSON, binary and late frames: their payload is in no repr or log."""
    evidence = Evidence()
    with scripted_session() as (_, ws, peer):
        secret = {"secret": PAYLOAD, "nested": [{"deeper": PAYLOAD}]}
        with pytest.raises(TimeoutError):
            ws.call(jws.RequestBuilder().build(), timeout=0.1)
        late = {
            "@type": "Response",
            "methodResponses": [["Core/echo", secret, "c0"]],
            "sessionState": "s",
            "requestId": json.loads(peer.recv_frame()[2])["id"],  # the call that timed out
        }
        for body in (
            {"@type": "X-Extension", **secret},
            secret,  # no @type
            {"@type": "Response", "methodResponses": PAYLOAD},  # known type, misfit body
            {"@type": "StateChange", "changed": {PAYLOAD: PAYLOAD}, "pushState": 5},
            late,
        ):
            peer.send_json(body)
        peer.send_text(f"not json {PAYLOAD}")
        peer.send_text(json.dumps([PAYLOAD]))
        peer.send_frame(BINARY, PAYLOAD.encode())
        barrier(peer)
        unknown = [ws.next_frame(timeout=5) for _ in range(4)]
        assert all(type(f) is jws.UnknownFrame for f in unknown)
        evidence.reprs(*unknown)
        evidence.texts += [repr([f]) for f in unknown]  # inside containers too
        for error in (jws.ParseError, jws.ParseError, jws.ProtocolViolation):
            evidence.expect(error, ws.next_frame, timeout=5)
        assert ws.late_answers == 1
        peer.send_frame(TEXT, f'{{"a": "{PAYLOAD}\xff"}}'.encode("latin-1"))
        evidence.expect(jws.WebSocketProtocolError, ws.next_frame, timeout=5)
        evidence.reprs(ws)
    assert find_leaks(all_logs.texts() + evidence.texts, [PAYLOAD]) == []


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority, trusted by nothing by default."""
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for ``names``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context (verification on) that trusts the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_wss_with_trusted_certificate_works(ca: trustme.CA) -> None:
    """Sanity: a wss server with a certificate from a trusted CA, for the right name, works."""
    with TlsRawServer(echo_requests, server_context(ca, "127.0.0.1")) as server:
        ws = jws.WsSession.open(server.url, timeout=5, ssl_context=trusting(ca))
        with ws:
            assert ws.call(ECHO, timeout=5).get("c0") == {"x": 1}


def test_wss_untrusted_certificate_is_rejected_by_default(ca: trustme.CA) -> None:
    """Verification is on by default: an unknown CA gives TransportError, no upgrade is sent."""
    with TlsRawServer(idle, server_context(ca, "127.0.0.1")) as server:
        with pytest.raises(jws.TransportError, match="TLS") as info:
            jws.WsSession.open(server.url, auth=jws.BearerAuth(TOKEN), timeout=5)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        assert server.peers.empty()  # the upgrade request (and the token) never went out
    assert TOKEN not in str(info.value)


def test_wss_certificate_for_another_host_is_rejected(ca: trustme.CA) -> None:
    """A trusted certificate for another name is rejected (hostname check on by default)."""
    with TlsRawServer(idle, server_context(ca, "other.example")) as server:
        with pytest.raises(jws.TransportError) as info:
            jws.WsSession.open(server.url, timeout=5, ssl_context=trusting(ca))
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        assert "mismatch" in str(info.value.__cause__)
        assert server.peers.empty()


def test_wss_hostname_checked_for_localhost_too(ca: trustme.CA) -> None:
    """A certificate for 127.0.0.1 does not cover ``localhost``: rejected."""
    with TlsRawServer(idle, server_context(ca, "127.0.0.1")) as server:
        url = server.url.replace("127.0.0.1", "localhost")
        with pytest.raises(jws.TransportError):
            jws.WsSession.open(url, timeout=5, ssl_context=trusting(ca))
        assert server.peers.empty()


def test_wss_upgrade_redirect_to_ws_is_not_followed(ca: trustme.CA) -> None:
    """A wss upgrade answered with a redirect to ws:// fails; no cleartext connection is made."""
    with RawServer(idle) as plain:
        location = f"Location: {plain.url}\r\n"
        with (
            TlsRawServer(
                idle, server_context(ca, "127.0.0.1"), status=301, extra_headers=location
            ) as server,
            pytest.raises(jws.HandshakeError),
        ):
            jws.WsSession.open(
                server.url, auth=jws.BearerAuth(TOKEN), timeout=5, ssl_context=trusting(ca)
            )
        assert plain._socks == []  # nothing ever connected to the cleartext server
