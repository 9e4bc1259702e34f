"""Discovery of the JMAP Session resource against real loopback HTTP(S) servers and proxies."""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import jmapws_sync as jws
from jmapws_sync import (
    CoreCapability,
    InsecureWebSocketUrl,
    SessionResource,
    WebSocketCapability,
    connect,
    fetch_session,
)
from jmapws_sync.discovery import make_ssl_context, websocket_url

from .support.httpfixtures import (
    ConnectProxy,
    HttpServer,
    Reply,
    SilentServer,
    TrickleServer,
    json_reply,
    redirect,
    session_body,
)
from .support.rawws import RawServer, idle

SECRET = "s3cret-t0ken"
CORE_URN = "urn:ietf:params:jmap:core"
WS_URN = "urn:ietf:params:jmap:websocket"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy settings leak in from the machine running the tests."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    """The CA certificate as a PEM file."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for ``names``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


@pytest.fixture
def https(ca: trustme.CA) -> Iterator[HttpServer]:
    """An HTTPS server with a certificate for 127.0.0.1, serving a session at /jmap/session."""
    with HttpServer({"/jmap/session": json_reply(session_body())}, tls=server_context(ca)) as s:
        yield s


@pytest.fixture
def http() -> Iterator[HttpServer]:
    """A plain HTTP server serving a session at /jmap/session."""
    with HttpServer({"/jmap/session": json_reply(session_body())}) as s:
        yield s


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


# -- locating the resource ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
def test_base_url_goes_to_well_known_and_follows_redirect(http: HttpServer, suffix: str) -> None:
    """A bare host URL fetches /.well-known/jmap, follows its redirect, sends Accept: json."""
    http.routes["/.well-known/jmap"] = redirect("/jmap/session", 307)
    resource = fetch_session(http.origin + suffix, timeout=5)
    assert [r.target for r in http.requests] == ["/.well-known/jmap", "/jmap/session"]
    assert all(r.headers["accept"] == "application/json" for r in http.requests)
    assert resource.url == http.url("/jmap/session")
    assert resource.username == "john@example.com"


def test_full_session_url_is_fetched_as_given(http: HttpServer) -> None:
    """A URL with a path is the resource itself, query included."""
    http.routes["/custom/session"] = json_reply(session_body())
    resource = fetch_session(http.url("/custom/session?v=1"), timeout=5)
    assert [r.target for r in http.requests] == ["/custom/session?v=1"]
    assert resource.url == http.url("/custom/session?v=1")


def test_relative_urls_resolve_against_final_url_keeping_templates(http: HttpServer) -> None:
    """Relative URLs resolve per RFC 3986 against where the resource was finally fetched."""
    http.routes["/.well-known/jmap"] = redirect("/jmap/session", 301)
    http.routes["/jmap/session"] = json_reply(session_body(apiUrl="api/"))
    resource = fetch_session(http.origin, timeout=5)
    base = http.origin
    assert resource.api_url == f"{base}/jmap/api/"
    assert (
        resource.download_url
        == f"{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}"
    )
    assert resource.upload_url == f"{base}/jmap/upload/{{accountId}}/"
    assert resource.event_source_url == (
        f"{base}/jmap/eventsource/?types={{types}}&closeafter={{closeafter}}"
    )
    assert resource.websocket == WebSocketCapability(f"ws://127.0.0.1:{http.port}/jmap/ws", True)


def test_absolute_urls_are_kept() -> None:
    """Absolute URLs, wss:// included, are left as the server wrote them."""
    body = session_body(apiUrl="https://api.example.com/jmap/")
    body["capabilities"][WS_URN] = {"url": "wss://ws.example.com/jmap/ws", "supportsPush": False}
    resource = SessionResource.from_json(body, url="https://example.com/.well-known/jmap")
    assert resource.api_url == "https://api.example.com/jmap/"
    assert resource.websocket == WebSocketCapability("wss://ws.example.com/jmap/ws", False)


def test_resource_fields_are_typed_and_unknown_capabilities_kept_raw() -> None:
    """Core limits, accounts and primary accounts are typed; other capabilities stay raw."""
    body = session_body()
    resource = SessionResource.from_json(body, url="https://example.com/.well-known/jmap")
    assert resource.core == CoreCapability(
        50000000, 8, 10000000, 8, 32, 256, 128, ("i;ascii-numeric", "i;ascii-casemap")
    )
    assert resource.capabilities["https://example.com/apis/foobar"] == {"maxFoosFinangled": 42}
    john = resource.accounts["A13824"]
    assert (john.name, john.is_personal, john.is_read_only) == ("john@example.com", True, False)
    assert john.account_capabilities == {"urn:ietf:params:jmap:mail": {"maxMailboxDepth": 10}}
    assert resource.accounts["A97813"].is_read_only
    assert resource.state == "75128aab4b1b"
    assert resource.raw is body
    assert resource.has(jws.MAIL)
    assert not resource.has(jws.CONTACTS)
    assert "maxFoosFinangled" not in repr(resource)


def test_primary_account_helper() -> None:
    """primary_account() prefers mail, then any primary, then the only account."""
    url = "https://example.com/s"
    resource = SessionResource.from_json(session_body(), url=url)
    assert resource.primary_account() == "A13824"
    assert resource.primary_account(jws.MAIL) == "A13824"
    with pytest.raises(LookupError, match="contacts"):
        resource.primary_account(jws.CONTACTS)
    other = session_body(primaryAccounts={"urn:example:x": "A97813"})
    assert SessionResource.from_json(other, url=url).primary_account() == "A97813"
    only = session_body(primaryAccounts={})
    only["accounts"].pop("A97813")
    assert SessionResource.from_json(only, url=url).primary_account() == "A13824"
    only["accounts"]["A2"] = only["accounts"]["A13824"]
    with pytest.raises(LookupError):
        SessionResource.from_json(only, url=url).primary_account()


# -- redirects and credentials -------------------------------------------------------------


def test_redirect_limit_is_session_error(http: HttpServer) -> None:
    """More redirects than max_redirects raise SessionError; exactly that many succeed."""
    for i in range(5):
        http.routes[f"/r{i}"] = redirect(f"/r{i + 1}")
    http.routes["/r5"] = json_reply(session_body())
    with pytest.raises(jws.SessionError, match="more than 3 redirects") as info:
        fetch_session(http.url("/r0"), timeout=5, max_redirects=3)
    assert info.value.status == 302
    assert len(http.requests) == 4
    assert fetch_session(http.url("/r0"), timeout=5, max_redirects=5).url == http.url("/r5")


def test_redirect_loop_is_session_error(http: HttpServer) -> None:
    """A redirect back to a URL already visited is a loop, reported at once."""
    http.routes["/a"] = redirect("/b", 308)
    http.routes["/b"] = redirect("/a", 308)
    with pytest.raises(jws.SessionError, match="loop"):
        fetch_session(http.url("/a"), timeout=5, max_redirects=50)
    assert len(http.requests) == 2


def test_redirect_without_location_is_session_error(http: HttpServer) -> None:
    """A 3xx without Location cannot be followed."""
    http.routes["/a"] = Reply(302)
    with pytest.raises(jws.SessionError, match="without a Location"):
        fetch_session(http.url("/a"), timeout=5)


@pytest.mark.parametrize(
    "location",
    ["ftp://127.0.0.1/s", f"http://john:{SECRET}@127.0.0.1:1/s", "http://127.0.0.1:port/s"],
)
def test_redirect_to_unusable_url_is_session_error(http: HttpServer, location: str) -> None:
    """A redirect to another scheme, to a URL with credentials or a bad port is refused."""
    http.routes["/a"] = redirect(location)
    with pytest.raises(jws.SessionError, match="invalid URL") as info:
        fetch_session(http.url("/a"), timeout=5)
    assert SECRET not in str(info.value)
    assert len(http.requests) == 1


def test_https_to_http_redirect_is_refused(
    https: HttpServer, http: HttpServer, cafile: str
) -> None:
    """A redirect from https to http is refused before anything is sent over http."""
    https.routes["/.well-known/jmap"] = redirect(http.url("/jmap/session"))
    with pytest.raises(jws.SessionError, match="https to http"):
        fetch_session(https.origin, auth=jws.BearerAuth(SECRET), timeout=5, cafile=cafile)
    assert http.requests == []


def test_credentials_are_not_sent_to_another_origin(http: HttpServer) -> None:
    """A cross-origin redirect drops Authorization: the second server never sees it."""
    with HttpServer({"/jmap/session": json_reply(session_body())}) as other:
        http.routes["/.well-known/jmap"] = redirect(other.url("/jmap/session"))
        resource = fetch_session(http.origin, auth=jws.BearerAuth(SECRET), timeout=5)
    assert http.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert "authorization" not in other.requests[0].headers
    assert resource.url == other.url("/jmap/session")


def test_credentials_follow_a_same_origin_redirect(http: HttpServer) -> None:
    """A redirect within the origin keeps the credentials."""
    http.routes["/.well-known/jmap"] = redirect(http.url("/jmap/session"), 303)
    fetch_session(http.origin, auth=jws.BasicAuth("john", SECRET), timeout=5)
    assert [r.headers.get("authorization", "")[:6] for r in http.requests] == ["Basic "] * 2


def test_credentials_in_url_are_refused() -> None:
    """user:pass@ in the URL is refused (it belongs in auth=) without echoing the secret."""
    with pytest.raises(ValueError, match="auth=") as info:
        fetch_session(f"https://john:{SECRET}@example.com", timeout=5)
    assert SECRET not in str(info.value)


# -- HTTP errors and bad bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "challenge", "scheme"),
    [(401, 'Bearer realm="jmap", error="invalid_token"', "Bearer"), (403, "", None)],
)
def test_401_403_are_authentication_errors_without_secret(
    http: HttpServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
    challenge: str,
    scheme: str | None,
) -> None:
    """401/403 raise AuthenticationError with the status and the challenge scheme, no secret."""
    headers = {"WWW-Authenticate": challenge} if challenge else {}
    http.routes["/jmap/session"] = Reply(status, headers)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(jws.AuthenticationError) as info:
        fetch_session(http.url("/jmap/session"), auth=jws.BearerAuth(SECRET), timeout=5)
    assert (info.value.status, info.value.scheme) == (status, scheme)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert SECRET not in caplog.text


def test_500_is_session_error_with_status(http: HttpServer) -> None:
    """Another error status raises SessionError carrying it."""
    http.routes["/jmap/session"] = Reply(500)
    with pytest.raises(jws.SessionError) as info:
        fetch_session(http.url("/jmap/session"), timeout=5)
    assert info.value.status == 500
    assert not isinstance(info.value, jws.WebSocketUnavailable)


def test_body_that_is_not_json_is_session_error(http: HttpServer) -> None:
    """A 200 whose body is not JSON raises SessionError."""
    http.routes["/jmap/session"] = Reply(200, {"Content-Type": "text/html"}, b"<html></html>")
    with pytest.raises(jws.SessionError, match="not valid JSON") as info:
        fetch_session(http.url("/jmap/session"), timeout=5)
    assert info.value.field is None


def test_wrong_type_from_server_names_the_field(http: HttpServer) -> None:
    """A member of the wrong type raises SessionError whose field names it."""
    http.routes["/jmap/session"] = json_reply(session_body(apiUrl=42))
    with pytest.raises(jws.SessionError, match="apiUrl") as info:
        fetch_session(http.url("/jmap/session"), timeout=5)
    assert info.value.field == "apiUrl"


def _without(key: str) -> dict[str, Any]:
    body = session_body()
    del body[key]
    return body


def _with_core(**changes: Any) -> dict[str, Any]:
    body = session_body()
    body["capabilities"][CORE_URN].update(changes)
    return body


def _with_account(**changes: Any) -> dict[str, Any]:
    body = session_body()
    body["accounts"]["A13824"].update(changes)
    return body


def _with_ws(value: Any) -> dict[str, Any]:
    body = session_body()
    body["capabilities"][WS_URN] = value
    return body


def _without_core() -> dict[str, Any]:
    body = session_body()
    del body["capabilities"][CORE_URN]
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without("apiUrl"), "apiUrl"),
        (_without("state"), "state"),
        (session_body(username=None), "username"),
        (session_body(accounts=[]), "accounts"),
        (session_body(capabilities={CORE_URN: []}), f"capabilities.{CORE_URN}"),
        (_without_core(), f"capabilities.{CORE_URN}"),
        (_with_core(maxSizeUpload=-1), f"capabilities.{CORE_URN}.maxSizeUpload"),
        (_with_core(maxObjectsInGet=True), f"capabilities.{CORE_URN}.maxObjectsInGet"),
        (_with_core(collationAlgorithms="i;ascii"), f"capabilities.{CORE_URN}.collationAlgorithms"),
        (_with_account(isPersonal="yes"), "accounts.A13824.isPersonal"),
        (_with_account(accountCapabilities=None), "accounts.A13824.accountCapabilities"),
        (session_body(primaryAccounts={jws.MAIL: 7}), f"primaryAccounts.{jws.MAIL}"),
        (_with_ws({"url": 5}), f"capabilities.{WS_URN}.url"),
        (_with_ws({"url": "ftp://example.com/ws"}), f"capabilities.{WS_URN}.url"),
        (_with_ws({"url": "/ws", "supportsPush": "yes"}), f"capabilities.{WS_URN}.supportsPush"),
        ([1, 2], None),
    ],
)
def test_invalid_resource_names_the_field(body: Any, field: str | None) -> None:
    """Each missing or mistyped member raises SessionError naming exactly that member."""
    with pytest.raises(jws.SessionError) as info:
        SessionResource.from_json(body, url="https://example.com/s")
    assert info.value.field == field
    if field is not None:
        assert field in str(info.value)


def test_missing_supports_push_reads_as_false() -> None:
    """A websocket capability without supportsPush is accepted as no push."""
    resource = SessionResource.from_json(_with_ws({"url": "/ws"}), url="https://example.com/s")
    assert resource.websocket == WebSocketCapability("wss://example.com/ws", False)


# -- the WebSocket URL -------------------------------------------------------------------------


def test_no_websocket_capability_is_fine_until_required(http: HttpServer) -> None:
    """fetch_session works without WS; require_websocket/websocket_url raise the dedicated error."""
    body = session_body()
    del body["capabilities"][WS_URN]
    http.routes["/jmap/session"] = json_reply(body)
    resource = fetch_session(http.url("/jmap/session"), timeout=5)
    assert resource.websocket is None
    with pytest.raises(jws.WebSocketUnavailable):
        resource.require_websocket()
    with pytest.raises(jws.WebSocketUnavailable):
        websocket_url(resource)


def test_ws_url_from_https_resource_is_refused() -> None:
    """An https resource advertising ws:// is a downgrade: InsecureWebSocketUrl."""
    body = _with_ws({"url": "ws://example.com/jmap/ws", "supportsPush": True})
    resource = SessionResource.from_json(body, url="https://example.com/.well-known/jmap")
    with pytest.raises(InsecureWebSocketUrl, match="downgrade") as info:
        websocket_url(resource)
    assert isinstance(info.value, jws.SessionError)
    assert info.value.field == f"capabilities.{WS_URN}.url"


def test_ws_url_allowed_only_from_http_resource_and_wss_always() -> None:
    """ws:// is accepted when the resource came over http; wss:// from either."""
    plain = _with_ws({"url": "ws://localhost/jmap/ws", "supportsPush": True})
    resource = SessionResource.from_json(plain, url="http://localhost/.well-known/jmap")
    assert websocket_url(resource) == "ws://localhost/jmap/ws"
    secure = _with_ws({"url": "wss://example.com/jmap/ws", "supportsPush": True})
    for base in ("http://example.com/s", "https://example.com/s"):
        assert websocket_url(SessionResource.from_json(secure, url=base)).startswith("wss://")
    relative = SessionResource.from_json(session_body(), url="https://example.com/s")
    assert websocket_url(relative) == "wss://example.com/jmap/ws"


@pytest.mark.parametrize(
    ("advertised", "base", "expected"),
    [
        # Cyrus 3.6: a scheme with no host, and wss even over plain http.
        ("wss:/jmap/ws/", "http://127.0.0.1:8080/jmap", "ws://127.0.0.1:8080/jmap/ws/"),
        ("wss:/jmap/ws/", "https://mail.example.com/jmap", "wss://mail.example.com/jmap/ws/"),
        # The host and the security come from the resource: never ws from an https one.
        ("ws:/jmap/ws", "https://mail.example.com/jmap", "wss://mail.example.com/jmap/ws"),
        ("ws:/jmap/ws?x=1", "http://h:81/s", "ws://h:81/jmap/ws?x=1"),
        ("wss:ws", "http://h/jmap/session", "ws://h/jmap/ws"),
        ("/jmap/ws/", "https://[::1]:8443/jmap", "wss://[::1]:8443/jmap/ws/"),
        ("https:/jmap/ws", "http://h/s", "ws://h/jmap/ws"),
    ],
)
def test_host_less_websocket_url_takes_host_and_security_of_the_resource(
    advertised: str, base: str, expected: str
) -> None:
    """A ws(s) URL without a host (Cyrus: "wss:/jmap/ws/") resolves like a relative one."""
    resource = SessionResource.from_json(_with_ws({"url": advertised}), url=base)
    assert resource.websocket is not None
    assert resource.websocket.url == expected
    assert websocket_url(resource) == expected


@pytest.mark.parametrize("advertised", ["ftp:/jmap/ws", "ws://", "wss://h:99999/ws", "mailto:x"])
def test_unusable_websocket_url_names_the_field(advertised: str) -> None:
    """Other schemes, no host at all, or a port out of range: SessionError naming the field."""
    with pytest.raises(jws.SessionError) as info:
        SessionResource.from_json(_with_ws({"url": advertised}), url="http://h/jmap")
    assert info.value.field == f"capabilities.{WS_URN}.url"


def test_push_data_types_come_from_the_advertised_capabilities() -> None:
    """Each known capability of the resource, its accounts and primary accounts: its types."""
    body = session_body()
    body["capabilities"]["urn:ietf:params:jmap:submission"] = {}
    body["accounts"]["A97813"]["accountCapabilities"] = {jws.CONTACTS: {}}
    resource = SessionResource.from_json(body, url="https://example.com/jmap")
    assert resource.push_data_types() == (
        "Mailbox",
        "Thread",
        "Email",
        "EmailDelivery",
        "Identity",
        "EmailSubmission",
        "AddressBook",
        "ContactCard",
    )
    body["capabilities"] = {k: v for k, v in body["capabilities"].items() if "mail" not in k}
    body["accounts"] = {}
    body["primaryAccounts"] = {}
    bare = SessionResource.from_json(body, url="https://example.com/jmap")
    assert bare.push_data_types() == ("Identity", "EmailSubmission")
    # Cyrus names its calendars only under primaryAccounts.
    body["primaryAccounts"] = {"https://cyrusimap.org/ns/jmap/calendars": "A13824"}
    cyrus = SessionResource.from_json(body, url="https://example.com/jmap")
    assert "CalendarEvent" in cyrus.push_data_types()


# -- TLS -----------------------------------------------------------------------------------------


def test_https_without_the_ca_is_rejected(https: HttpServer) -> None:
    """Verification is on by default: an unknown CA raises TransportError about the certificate."""
    with pytest.raises(jws.TransportError, match="certificate") as info:
        fetch_session(https.url("/jmap/session"), timeout=5)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert https.requests == []


def test_https_with_cafile_is_accepted(https: HttpServer, cafile: str) -> None:
    """cafile= trusts the test CA."""
    resource = fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile)
    assert resource.url == https.url("/jmap/session")
    assert resource.websocket is not None
    assert resource.websocket.url == f"wss://127.0.0.1:{https.port}/jmap/ws"


def test_https_with_ssl_context_is_accepted(https: HttpServer, ca: trustme.CA) -> None:
    """A caller's SSLContext is used as it is."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert fetch_session(https.url("/jmap/session"), timeout=5, ssl_context=context).state


def test_certificate_for_another_name_is_rejected(ca: trustme.CA, cafile: str) -> None:
    """A trusted certificate for another host name is rejected (hostname mismatch)."""
    tls = server_context(ca, "other.example")
    with (
        HttpServer({"/s": json_reply(session_body())}, tls=tls) as server,
        pytest.raises(jws.TransportError, match="mismatch") as info,
    ):
        fetch_session(server.url("/s"), timeout=5, cafile=cafile)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_client_certificate_from_certfile(ca: trustme.CA, cafile: str, tmp_path: Path) -> None:
    """certfile= presents a client certificate; without it the server refuses the handshake."""
    tls = server_context(ca)
    tls.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(tls)
    client = tmp_path / "client.pem"
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(str(client))
    with HttpServer({"/s": json_reply(session_body())}, tls=tls) as server:
        assert fetch_session(server.url("/s"), timeout=5, cafile=cafile, certfile=str(client))
        with pytest.raises(jws.TransportError):
            fetch_session(server.url("/s"), timeout=5, cafile=cafile)
    assert len(server.requests) == 1


def test_ssl_context_and_files_together_are_refused(cafile: str) -> None:
    """ssl_context and cafile together are ambiguous: ValueError."""
    with pytest.raises(ValueError, match="not both"):
        make_ssl_context(ssl_context=ssl.create_default_context(), cafile=cafile)


# -- proxies ------------------------------------------------------------------------------------


def test_explicit_proxy_tunnels_https(https: HttpServer, cafile: str) -> None:
    """proxy= sends the https fetch through an HTTP CONNECT tunnel to the target."""
    with ConnectProxy() as proxy:
        fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile, proxy=proxy.url)
    assert proxy.tunnels == [f"127.0.0.1:{https.port}"]
    assert len(https.requests) == 1


def test_https_proxy_from_environment(
    https: HttpServer, cafile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY from the environment is used when proxy= is not given."""
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile)
    assert proxy.tunnels == [f"127.0.0.1:{https.port}"]


def test_no_proxy_bypasses_the_proxy(
    https: HttpServer, cafile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY listing the host goes direct, for environment and explicit proxies alike."""
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "example.org, 127.0.0.1")
        fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile)
        fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile, proxy=proxy.url)
    assert proxy.tunnels == []
    assert proxy.proxy_authorization == []
    assert len(https.requests) == 2


def test_empty_proxy_disables_the_environment(
    https: HttpServer, cafile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """proxy="" means a direct connection whatever HTTPS_PROXY says."""
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile, proxy="")
    assert proxy.tunnels == []


def test_http_target_goes_through_proxy_in_absolute_form(
    http: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http target is requested from HTTP_PROXY with its absolute URL."""
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        fetch_session(http.url("/jmap/session"), timeout=5)
    assert proxy.forwarded == [http.url("/jmap/session")]
    assert [r.target for r in http.requests] == ["/jmap/session"]


def test_proxy_credentials_become_proxy_authorization_and_stay_secret(
    https: HttpServer, cafile: str, caplog: pytest.LogCaptureFixture
) -> None:
    """user:pass@ in the proxy URL is sent as Proxy-Authorization, never to the target or logs."""
    expected = "Basic " + base64.b64encode(b"proxy user:p@ss" + SECRET.encode()).decode()
    password = "p%40ss" + SECRET
    caplog.set_level(logging.DEBUG)
    with ConnectProxy(required_authorization=expected) as proxy:
        url = f"http://proxy%20user:{password}@127.0.0.1:{proxy.port}"
        fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile, proxy=url)
        bad = f"http://proxy%20user:wrong{SECRET}@127.0.0.1:{proxy.port}"
        with pytest.raises(jws.TransportError, match="407") as info:
            fetch_session(https.url("/jmap/session"), timeout=5, cafile=cafile, proxy=bad)
    assert proxy.tunnels == [f"127.0.0.1:{https.port}"]
    assert "proxy-authorization" not in https.requests[0].headers
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


# -- transport failures and timeouts ---------------------------------------------------------


def test_refused_connection_is_transport_error() -> None:
    """Nobody listening: TransportError chained to the socket error."""
    with pytest.raises(jws.TransportError) as info:
        fetch_session(f"http://127.0.0.1:{free_port()}/s", timeout=5)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_server_that_never_answers_times_out_in_time(scheme: str) -> None:
    """A server that accepts and never answers: TimeoutError within the timeout."""
    with SilentServer() as server:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            fetch_session(f"{scheme}://127.0.0.1:{server.port}/s", timeout=0.5)
        elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 2.0


def test_trickling_server_cannot_stretch_the_timeout() -> None:
    """A byte every 50 ms keeps each read alive, yet the whole fetch still ends on time."""
    with TrickleServer() as server:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            fetch_session(f"http://127.0.0.1:{server.port}/s", timeout=0.5)
        elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 2.0


def test_timeout_covers_the_redirects_too(http: HttpServer) -> None:
    """The deadline is for the whole fetch: a redirect to a silent server still ends on time."""
    with SilentServer() as silent:
        http.routes["/a"] = redirect(f"http://127.0.0.1:{silent.port}/s")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            fetch_session(http.url("/a"), timeout=0.5)
        elapsed = time.monotonic() - start
    assert elapsed < 2.0


# -- connect() ----------------------------------------------------------------------------------


def _ws_session(url: str) -> dict[str, Any]:
    return _with_ws({"url": url, "supportsPush": True})


def test_connect_discovers_and_opens_the_websocket(http: HttpServer) -> None:
    """connect() fetches the resource, opens its WebSocket with auth, and keeps the resource."""
    with RawServer(idle) as raw:
        http.routes["/.well-known/jmap"] = json_reply(_ws_session(raw.url))
        with connect(http.origin, auth=jws.BearerAuth(SECRET), timeout=5) as ws:
            peer = raw.next_peer()
            assert ws.session is not None
            assert ws.session.url == http.url("/.well-known/jmap")
            assert ws.session.websocket == WebSocketCapability(raw.url, True)
    assert peer.headers["authorization"] == f"Bearer {SECRET}"
    assert peer.headers["sec-websocket-protocol"] == "jmap"


def test_connect_refuses_a_downgrade_before_connecting(https: HttpServer, cafile: str) -> None:
    """An https resource pointing at ws:// raises InsecureWebSocketUrl; no WebSocket is opened."""
    with RawServer(idle) as raw:
        https.routes["/.well-known/jmap"] = json_reply(_ws_session(raw.url))
        with pytest.raises(InsecureWebSocketUrl):
            connect(https.origin, auth=jws.BearerAuth(SECRET), timeout=5, cafile=cafile)
        assert raw.peers.empty()


def test_connect_without_websocket_capability(http: HttpServer) -> None:
    """A server without the WebSocket capability: WebSocketUnavailable from connect()."""
    body = session_body()
    del body["capabilities"][WS_URN]
    http.routes["/.well-known/jmap"] = json_reply(body)
    with pytest.raises(jws.WebSocketUnavailable):
        connect(http.origin, timeout=5)


def test_connect_uses_the_proxy_for_discovery_and_websocket(http: HttpServer) -> None:
    """One proxy= carries both the discovery GET and the WebSocket (CONNECT) tunnel."""
    with RawServer(idle) as raw, ConnectProxy() as proxy:
        http.routes["/.well-known/jmap"] = json_reply(_ws_session(raw.url))
        with connect(http.origin, timeout=5, proxy=proxy.url):
            raw.next_peer()
    assert proxy.forwarded == [http.url("/.well-known/jmap")]
    assert proxy.tunnels == [f"127.0.0.1:{raw.port}"]


def test_connect_over_https_and_wss_end_to_end(ca: trustme.CA, cafile: str) -> None:
    """https discovery, then wss to the reference server, verified with a test CA: a call works."""
    from jmapws_sync.testing import ReferenceServer

    context = server_context(ca, "127.0.0.1")
    with ReferenceServer(users={"alice": SECRET}, ssl_context=context) as srv:
        assert srv.base_url.startswith("https://")
        auth = jws.BasicAuth("alice", SECRET)
        with connect(srv.base_url, auth=auth, cafile=cafile, timeout=5) as ws:
            assert ws.session is not None
            assert ws.session.websocket is not None
            assert ws.session.websocket.url.startswith("wss://")
            b = jws.RequestBuilder()
            echo = b.call("Core/echo", {"tls": True})
            assert ws.call(b.build(), timeout=5).get(echo.call_id) == {"tls": True}
        with pytest.raises(jws.TransportError):  # and without the CA: refused
            connect(srv.base_url, auth=auth, timeout=5)
