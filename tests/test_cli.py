"""The jmapws-sync command: every subcommand's success and failure exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import jmapws_sync as jws
from jmapws_sync.cli import main
from jmapws_sync.testing import ReferenceServer

from .conftest import USERS
from .support.children import cli_argv

ECHO = {"using": [jws.CORE], "methodCalls": [["Core/echo", {"x": 1}, "c0"]]}


@pytest.fixture
def alice_env(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Alice's password in $JMAP_PASSWORD; the options that name her."""
    monkeypatch.setenv("JMAP_PASSWORD", USERS["alice"])
    return ["--user", "alice", "--timeout", "5"]


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def test_demo_walks_through_every_step() -> None:
    """`demo` prints each step with its timing and exits 0."""
    status, text = run(["demo"])
    assert status == 0
    for phrase in ("discover", "Core/echo", "enable push", "StateChange", "drops", "resume"):
        assert phrase in text
    assert " ms" in text
    assert text.rstrip().endswith("a resume.")


def test_session_prints_the_resource(server: ReferenceServer, alice_env: list[str]) -> None:
    """`session` prints the WebSocket URL and accounts; --json the raw resource."""
    status, text = run(["session", server.base_url, *alice_env])
    assert status == 0
    assert server.ws_url in text
    assert "a-alice" in text
    status, text = run(["session", server.base_url, *alice_env, "--json"])
    assert status == 0
    assert json.loads(text)["username"] == "alice"


def test_call_from_file_and_stdin(
    server: ReferenceServer, alice_env: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`call` reads a request from a file or stdin and prints the Response."""
    request = tmp_path / "req.json"
    request.write_text(json.dumps(ECHO))
    status, text = run(["call", server.base_url, str(request), *alice_env])
    assert status == 0
    assert json.loads(text)["methodResponses"] == [["Core/echo", {"x": 1}, "c0"]]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(ECHO)))
    status, text = run(["call", server.base_url, "-", *alice_env])
    assert status == 0
    assert json.loads(text)["@type"] == "Response"


def test_token_from_file(server: ReferenceServer, tmp_path: Path) -> None:
    """A bearer token is read from --token-file."""
    server.set_token("tok-123", "alice")
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    status, _ = run(["session", server.base_url, "--token-file", str(token)])
    assert status == 0


def test_wrong_password_exits_3_with_one_line(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused credentials: status 3, one error line, no traceback, no secret."""
    monkeypatch.setenv("JMAP_PASSWORD", "wrong-secret-xyz")
    status, _ = run(["session", server.base_url, "--user", "alice", "--timeout", "5"])
    err = capsys.readouterr().err
    assert status == 3
    assert err.count("\n") == 1
    assert err.startswith("jmapws-sync: error:")
    assert "wrong-secret-xyz" not in err


def test_unreachable_server_exits_4(alice_env: list[str]) -> None:
    """Nothing listening: status 4."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    status, _ = run(["session", f"http://127.0.0.1:{port}", *alice_env])
    assert status == 4


def test_bad_request_json_exits_2(
    server: ReferenceServer, alice_env: list[str], tmp_path: Path
) -> None:
    """A request file that is not JSON, or not a Request: status 2, before connecting."""
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert run(["call", server.base_url, str(bad), *alice_env])[0] == 2
    bad.write_text("[1]")
    assert run(["call", server.base_url, str(bad), *alice_env])[0] == 2
    assert run(["call", server.base_url, str(tmp_path / "missing"), *alice_env])[0] == 2
    assert server.requests_seen() == 0


def test_rejected_request_exits_5(
    server: ReferenceServer, alice_env: list[str], tmp_path: Path
) -> None:
    """A RequestError from the server: status 5."""
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"using": ["urn:nope"], "methodCalls": [["X/y", {}, "c"]]}))
    assert run(["call", server.base_url, str(request), *alice_env])[0] == 5


def test_missing_password_without_a_terminal_exits_2(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--user with no password source and no terminal: status 2, not a prompt."""
    monkeypatch.delenv("JMAP_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run(["session", server.base_url, "--user", "alice"])[0] == 2


def test_listen_prints_changes_and_survives_a_server_restart() -> None:
    """`listen` prints StateChange lines, reconnects after a restart, resumes, exits 130 on ^C."""
    first = ReferenceServer(users=USERS).start()
    proc = subprocess.Popen(
        cli_argv("listen", first.base_url, "--user", "alice"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "JMAP_PASSWORD": USERS["alice"]},
    )
    second: ReferenceServer | None = None
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert first.wait_for_connections(1, timeout=10)
        # Push is enabled right after the handshake; repeat a change until a line shows it.
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
        reader.start()
        line = None
        for n in range(50):
            first.change_note("alice", title=f"before {n}")
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.2)
                break
        assert line is not None
        assert json.loads(line)["@type"] == "StateChange"
        port, store = first.port, first.store
        first.stop()
        first.store.create_note(first.account_id("alice"), title="while down", body="")
        second = ReferenceServer(users=USERS, port=port, store=store).start()
        expected = second.store.state(second.account_id("alice"))
        while True:  # the replay after the resume carries the state made while down
            change = json.loads(lines.get(timeout=30))
            if change["changed"]["a-alice"]["Note"] == expected:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130  # interrupted, as README says
        assert "reconnected" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for srv in (first, second):
            if srv is not None:
                srv.stop()


@pytest.mark.parametrize(
    "command", ["session", "call", "listen", "sync", "upload", "download", "serve", "demo"]
)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--help works on every subcommand (exit 0)."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: jmapws-sync" in capsys.readouterr().out


def test_usage_error_exits_2() -> None:
    """An unknown subcommand is a usage error (status 2)."""
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_serve_runs_in_the_foreground_until_interrupted() -> None:
    """`python -m jmapws_sync serve` serves users from --user and stops on Ctrl-C (status 130)."""
    proc = subprocess.Popen(
        cli_argv("serve", "--port", "0", "--user", "bob:pw-bob"),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        base_url = first.rsplit(" ", 1)[-1].strip()
        assert base_url.startswith("http://127.0.0.1:")
        resource = jws.fetch_session(base_url, auth=jws.BasicAuth("bob", "pw-bob"), timeout=5)
        assert resource.username == "bob"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130  # interrupted, as README says
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


class _CloseCodes(logging.Handler):
    """The close code of each WebSocket connection the reference server ends, as its hub
    logs it at DEBUG ("WebSocket connection for USER closed (CODE)"), in a queue."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.codes: queue.Queue[object] = queue.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("WebSocket connection for") and isinstance(record.args, tuple):
            self.codes.put(record.args[-1])


@contextlib.contextmanager
def _close_codes() -> Iterator[queue.Queue[object]]:
    hub = logging.getLogger("jmapws_sync.testing.hub")
    handler, level = _CloseCodes(), hub.level
    hub.addHandler(handler)
    hub.setLevel(logging.DEBUG)
    try:
        yield handler.codes
    finally:
        hub.removeHandler(handler)
        hub.setLevel(level)


def _lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """A thread reading ``stream`` into a queue of lines, ``None`` at EOF."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="test-cli-stdout", daemon=True).start()
    return lines


def _rest(lines: queue.Queue[str | None], timeout: float = 10.0) -> list[str]:
    """The lines up to EOF."""
    rest = []
    while (line := lines.get(timeout=timeout)) is not None:
        rest.append(line)
    return rest


def test_listen_stops_on_sigterm_with_a_close_handshake() -> None:
    """SIGTERM ends `listen` as Ctrl-C does: a clean close (1000), status 143, whole lines."""
    with ReferenceServer(users=USERS) as server, _close_codes() as codes:
        proc = subprocess.Popen(
            cli_argv("listen", server.base_url, "--user", "alice", "--types", "Note"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "JMAP_PASSWORD": USERS["alice"]},
        )
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            lines = _lines_of(proc.stdout)
            assert server.wait_for_connections(1, timeout=10)
            first = None
            for n in range(50):  # push is on once the listener's barrier call is answered
                server.change_note("alice", title=f"change {n}")
                with contextlib.suppress(queue.Empty):
                    first = lines.get(timeout=0.2)
                    break
            assert first is not None
            server.change_note("alice", title="the last change")
            account = server.account_id("alice")
            final = server.store.state(account)
            printed = [first]
            while json.loads(printed[-1])["changed"][account]["Note"] != final:
                printed.append(str(lines.get(timeout=10)))  # pushed in order: the last one
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 143  # 128 + SIGTERM, as README says
            assert _rest(lines) == []  # nothing more, nothing cut off
            assert proc.stderr.read() == ""  # no traceback, no error line
            assert codes.get(timeout=10) == 1000  # the listener sent its Close first
            assert server.wait_for_connections(0, timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
    # Every line is whole: a StateChange ending in a newline.
    assert all(line.endswith("\n") for line in printed)
    assert {json.loads(line)["@type"] for line in printed} == {"StateChange"}


def test_serve_stops_on_sigterm_and_closes_its_connections() -> None:
    """SIGTERM ends `serve` as Ctrl-C does: connections closed with 1001, status 143."""
    proc = subprocess.Popen(
        cli_argv("serve", "--port", "0", "--user", "bob:pw-bob"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines = _lines_of(proc.stdout)
        banner = [lines.get(timeout=15)]
        while banner[-1] is not None and not banner[-1].startswith("press Ctrl-C"):
            banner.append(lines.get(timeout=15))
        base_url = str(banner[0]).rsplit(" ", 1)[-1].strip()
        assert base_url.startswith("http://127.0.0.1:")
        with jws.connect(base_url, auth=jws.BasicAuth("bob", "pw-bob"), timeout=5) as ws:
            ws.call(jws.Request(using=[jws.CORE], method_calls=[]), timeout=5)
            proc.send_signal(signal.SIGTERM)
            assert ws.next_frame(timeout=15) is None  # a clean end of the stream...
            assert ws.close_code == 1001  # ...the server's "going away"
        assert proc.wait(timeout=15) == 143  # 128 + SIGTERM, as README says
        assert _rest(lines) == []
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert banner[0] == f"reference JMAP server on {base_url}\n"  # the whole banner
    assert str(banner[1]).startswith(f"  session: {base_url}/")
    assert banner[2:] == ["  users:   bob\n", "press Ctrl-C to stop\n"]
    with pytest.raises(OSError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", int(base_url.rsplit(":", 1)[1])), timeout=5)


class _Banner(io.StringIO):
    """Output that tells when `serve` has printed its whole banner."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = threading.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        if text.startswith("press Ctrl-C"):
            self.shown.set()
        return n


@pytest.mark.timeout(180)
def test_sigterm_in_process_ends_serve_and_the_handler_is_put_back() -> None:
    """main() in the main thread: SIGTERM ends `serve` (143), then the old handler is back."""
    heard: list[int] = []

    def replaced(signum: int, frame: object) -> None:  # ends the command too, but with 130
        heard.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, replaced)
    fallback = signal.getsignal(signal.SIGTERM)
    out = _Banner()

    def terminate() -> None:
        # Sent even if the banner is late (a loaded machine: seen past 15 s), so that the
        # test fails on the assertion below instead of waiting for ever in serve.
        out.shown.wait(90)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    sender = threading.Thread(target=terminate, daemon=True)
    try:
        sender.start()
        assert main(["serve", "--port", "0"], out=out) == 143
        assert out.shown.is_set()
        assert signal.getsignal(signal.SIGTERM) is fallback
        assert heard == []  # the command's handler took it, not the one it replaced
    finally:
        sender.join(20)
        signal.signal(signal.SIGTERM, old)


def test_main_in_another_thread_sets_no_signal_handler(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main() outside the main thread runs `listen` as usual (here: refused, status 3)."""
    monkeypatch.setenv("JMAP_PASSWORD", "not-the-password")
    before = signal.getsignal(signal.SIGTERM)
    results: list[tuple[int, str]] = []
    argv = ["listen", server.base_url, "--user", "alice", "--timeout", "5"]
    worker = threading.Thread(target=lambda: results.append(run(argv)))
    worker.start()
    worker.join(30)
    assert results == [(3, "")]
    assert signal.getsignal(signal.SIGTERM) is before


def test_serve_rejects_a_malformed_user() -> None:
    """--user without a secret is a usage error (status 2)."""
    assert run(["serve", "--port", "0", "--user", "nosecret"])[0] == 2


@pytest.mark.parametrize("command", ["session", "call", "listen"])
def test_client_commands_fail_with_status_3_on_refused_credentials(
    command: str, server: ReferenceServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each client subcommand maps refused credentials to status 3."""
    monkeypatch.setenv("JMAP_PASSWORD", "not-the-password")
    request = tmp_path / "req.json"
    request.write_text(json.dumps(ECHO))
    extra = [str(request)] if command == "call" else []
    assert run([command, server.base_url, *extra, "--user", "alice", "--timeout", "5"])[0] == 3


def test_output_into_a_closed_pipe_is_quiet(server: ReferenceServer, tmp_path: Path) -> None:
    """`call ... | head -1`: a reader that goes away ends the command quietly, status 0."""
    request = tmp_path / "req.json"
    request.write_text(json.dumps(ECHO))
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write gets EPIPE
    done = subprocess.run(
        [
            *(sys.executable, "-m", "jmapws_sync", "call", server.base_url, str(request)),
            *("--user", "alice", "--timeout", "5"),
        ],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "JMAP_PASSWORD": USERS["alice"]},
    )
    os.close(write_end)
    assert done.returncode == 0
    assert "Traceback" not in done.stderr


# -- usage errors: one line, status 2, nothing sent (issue 14) ------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["session", "127.0.0.1:8080"],
        ["session", "ftp://127.0.0.1/"],
        ["session", "http://127.0.0.1:99999"],
        ["session", "http://user:pw@127.0.0.1:8080"],
        ["call", "ws://127.0.0.1:8080/jmap/ws"],
        ["session", "http://127.0.0.1:8080", "--user", "al:ice"],
        ["session", "http://127.0.0.1:8080", "--cafile", "/no/such/ca.pem"],
        ["session", "http://127.0.0.1:8080", "--proxy", "socks5://127.0.0.1:1080"],
        ["session", "http://127.0.0.1:8080", "--timeout", "nan"],
        ["session", "http://127.0.0.1:8080", "--timeout", "-1"],
        ["session", "http://127.0.0.1:8080", "--timeout", "soon"],
        ["serve", "--port", "70000"],
    ],
    ids=lambda argv: " ".join(argv[1:]) or argv[0],
)
def test_usage_errors_are_one_line_and_status_2(argv: list[str]) -> None:
    """Bad URLs and options: status 2 and one line on stderr, no traceback, no connection."""
    proc = subprocess.run(
        [sys.executable, "-m", "jmapws_sync", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "JMAP_PASSWORD": "pw"},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert len([line for line in lines if "error" in line]) == 1, lines


@pytest.mark.parametrize(
    "body",
    ['{"using": [], "methodCalls": [["Core/echo", {"x": NaN}, "c0"]]}', "[" * 100_000],
    ids=["nan", "too-deep"],
)
def test_bad_request_json_is_refused_before_connecting(
    body: str, server: ReferenceServer, tmp_path: Path, alice_env: list[str]
) -> None:
    """NaN or nesting too deep in the request file: status 2, and the server saw nothing."""
    request = tmp_path / "request.json"
    request.write_text(body)
    status, _ = run(["call", server.base_url, str(request), *alice_env])
    assert status == 2
    assert server.requests_seen() == 0
    assert server.connection_count() == 0


def test_options_may_come_before_the_request_file(
    server: ReferenceServer, tmp_path: Path, alice_env: list[str]
) -> None:
    """`call URL --user alice FILE` works like `call URL FILE --user alice`."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps(ECHO))
    status, out = run(["call", server.base_url, *alice_env, str(request)])
    assert status == 0
    assert json.loads(out)["methodResponses"] == [["Core/echo", {"x": 1}, "c0"]]


def test_serve_on_a_port_in_use_exits_6() -> None:
    """`serve` on a busy port: one line and status 6 (documented), not a traceback."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "jmapws_sync", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 6
    assert proc.stderr.strip() == f"jmapws-sync: error: port {port} is in use"


def test_no_compression_is_not_offered(
    server: ReferenceServer, tmp_path: Path, alice_env: list[str]
) -> None:
    """`call --no-compression` sends no Sec-WebSocket-Extensions; by default it does."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps(ECHO))
    for extra, offered in (([], True), (["--no-compression"], False)):
        assert run(["call", server.base_url, str(request), *alice_env, *extra])[0] == 0
        handshake = server.last_handshake()
        assert handshake is not None
        assert (handshake.offered_extensions is not None) is offered


def test_session_refuses_the_options_of_the_websocket_handshake(server: ReferenceServer) -> None:
    """`session` opens no WebSocket: its handshake options are usage errors, not ignored."""
    for option in ("--no-compression", "--allow-missing-subprotocol"):
        proc = subprocess.run(
            [sys.executable, "-m", "jmapws_sync", "session", server.base_url, option],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "JMAP_PASSWORD": "pw"},
            check=False,
        )
        assert proc.returncode == 2
        assert option in proc.stderr


# -- sync: Deltas as JSON lines, resumed from a state file ----------------------------------


def test_sync_once_resumes_from_its_state_file(
    server: ReferenceServer, alice_env: list[str], tmp_path: Path
) -> None:
    """`sync --once` prints the Deltas since the states in the file, then saves them."""
    states = str(tmp_path / "states.json")
    argv = ["sync", server.base_url, *alice_env, "--types", "Note", "--state-file", states]
    server.change_note("alice", title="before the first run")
    status, text = run([*argv, "--once"])
    assert status == 0
    (first,) = [json.loads(line) for line in text.splitlines()]
    assert (first["dataType"], first["resync"], len(first["created"])) == ("Note", True, 1)
    note = server.change_note("alice", title="between the runs")
    status, text = run([*argv, "--once"])
    assert status == 0
    (second,) = [json.loads(line) for line in text.splitlines()]
    assert (second["resync"], list(second["created"])) == (False, [note])
    assert second["oldState"] == first["newState"]
    assert run([*argv, "--once"]) == (0, "")  # nothing new since


def test_sync_of_an_unknown_type_is_one_error_line(
    server: ReferenceServer, alice_env: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = run(["sync", server.base_url, *alice_env, "--types", "Nonsense", "--once"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Nonsense" in err


def test_sync_follows_until_sigterm_and_saves_what_it_printed(tmp_path: Path) -> None:
    """`sync` prints each change as it comes; SIGTERM ends it (143) with the states of what
    it printed saved (the last line at least once: it may come again), so the next run
    starts after them."""
    states = str(tmp_path / "states.json")
    with ReferenceServer(users=USERS) as server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "JMAP_PASSWORD": USERS["alice"]}
        argv = ["sync", server.base_url, "--user", "alice", "--types", "Note"]
        proc = subprocess.Popen(
            cli_argv(*argv, "--state-file", states),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            lines = _lines_of(proc.stdout)
            resync = json.loads(str(lines.get(timeout=30)))
            assert resync["resync"] is True
            note = server.change_note("alice", title="followed")
            change = json.loads(str(lines.get(timeout=30)))
            assert list(change["created"]) == [note]
            # The state of a Delta is saved when the next one is asked for: once the
            # second is printed, the first is saved for sure; the second may not be yet.
            last = server.change_note("alice", title="followed too")
            assert list(json.loads(str(lines.get(timeout=30)))["created"]) == [last]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 143
            assert _rest(lines) == []
            assert proc.stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        again = subprocess.run(
            cli_argv(*argv, "--state-file", states, "--once"),
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
    assert again.returncode == 0
    printed = [json.loads(line) for line in again.stdout.splitlines()]
    assert [list(d["created"]) for d in printed] in ([], [[last]])  # never the first again


# -- upload and download -----------------------------------------------------------------------


def test_upload_prints_the_blob_and_download_writes_the_same_bytes(
    server: ReferenceServer,
    alice_env: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(os.urandom(300_000))
    status, text = run(["upload", server.base_url, *alice_env, str(source), "--type", "x/y"])
    assert status == 0
    blob = json.loads(text)
    assert (blob["size"], blob["type"], blob["accountId"]) == (300_000, "x/y", "a-alice")
    out = tmp_path / "copy.pdf"
    status, text = run(["download", server.base_url, *alice_env, blob["blobId"], str(out)])
    assert (status, text) == (0, "")
    assert out.read_bytes() == source.read_bytes()
    err = capsys.readouterr().err
    assert "\r" not in err  # not a terminal: no progress bar
    assert "300,000 bytes written" in err


def test_an_unknown_blob_is_one_error_line(
    server: ReferenceServer,
    alice_env: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "never"
    status, _ = run(["download", server.base_url, *alice_env, "Gnothere", str(out)])
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Gnothere" in err
    assert not out.exists()


def test_a_progress_bar_is_drawn_on_a_terminal(server: ReferenceServer, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2_000_000))
    primary, secondary = os.openpty()  # stderr is a terminal, stdout a pipe
    try:
        proc = subprocess.run(
            cli_argv("upload", server.base_url, "--user", "alice", str(source)),
            stdout=subprocess.PIPE,
            stderr=secondary,
            env={**os.environ, "JMAP_PASSWORD": USERS["alice"]},
            timeout=60,
            check=False,
        )
        os.close(secondary)
        secondary = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["size"] == 2_000_000
    assert b"100%" in drawn
    assert b"\r" in drawn


def test_call_and_sync_work_without_a_websocket(tmp_path: Path, alice_env: list[str]) -> None:
    """A Fastmail-like server (no WebSocket): call over HTTP, sync with the EventSource."""
    with ReferenceServer(users=USERS, websocket=False) as server:
        request = tmp_path / "echo.json"
        request.write_text(json.dumps(ECHO))
        status, text = run(["call", server.base_url, *alice_env, str(request)])
        assert status == 0
        assert json.loads(text)["methodResponses"][0][1] == {"x": 1}
        server.change_note("alice", title="over http")
        states = str(tmp_path / "s.json")
        argv = ["sync", server.base_url, *alice_env, "--types", "Note", "--once"]
        status, text = run([*argv, "--state-file", states])
        assert status == 0
        assert json.loads(text.splitlines()[0])["resync"] is True
