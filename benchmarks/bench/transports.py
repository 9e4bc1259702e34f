"""Push source and call transport (issue 24): EventSource against WebSocket push, and
``call()`` over HTTP against the WebSocket, all through :class:`jmapws_sync.ReconnectingSession`.

Two parts, on the reference server child of the run and, when a build is cached, on a
private Cyrus 3.6 (``tests/interop/cyrus.py``, ``jmap_pushpoll`` :data:`CYRUS_PUSHPOLL`).

*Push by source.* Sessions opened with ``push=True`` (the default compression, as an
application has them), each with a thread of its own reading ``rs.changes()`` and noting
``time.monotonic()`` as each StateChange is handed out: ``push_via="websocket"``,
``push_via="eventsource"`` (the Session resource's ``eventSourceUrl``) and, for context,
``push_via="websocket"`` with ``compression=None``. ``rs.push_source`` and
``rs.transport`` are checked to be what was asked. On the reference server each session
has a user of its own, so that a change reaches one session only:

* latency: ``transports_changes`` changes per source and repetition, made one at a time
  in this process by ``ServerProcess.call("change_note", user, note_id, title=...)``, the
  sources interleaved change by change in a rotated order; each is timed from just before
  the pipe call to the StateChange coming out of ``rs.changes()`` in the reading thread.
  The pipe call's own round trip is measured in the same loop by a no-op call
  (``session_state``), one per round: the change is committed somewhere inside it, so
  latency minus that round trip is a lower bound of the push's own latency, and the
  latency itself an upper bound;
* client CPU: bursts of ``transports_burst`` changes made back to back (the pipe calls
  one after another, not waiting for the pushes), read as they come by the session's
  reading thread (each is read as it arrives unless the reader falls behind, when unread
  ones merge: the share of StateChanges received is reported); the burst ends when a
  StateChange with the final Note state has been read. The CPU of this process is taken
  from ``time.process_time()``, less this (main) thread's (``time.thread_time()``) and
  the pipe's reading thread's (``time.pthread_getcpuclockid``): what remains is the
  library's threads (reader or EventSource thread, supervisor) and the reading thread. A
  baseline burst in the same repetition makes as many no-op pipe calls, no change, and
  is subtracted; so is the server's CPU over it (the server's figure is then the commit
  and the push). Phases in a rotated order.

On Cyrus, which looks for changes every ``jmap_pushpoll``, the latency is that polling's:
``transports_cyrus_changes`` changes per repetition (an IMAP APPEND each on one open
connection, timed from just before the command), each after a random pause of up to one
poll interval (so that the changes do not fall in step with the polls), read by both
sessions (WebSocket and EventSource, the same user) at once. No CPU figure there.

*Calls by transport.* Sessions opened already (``push`` off): ``transport="http"`` (each
call a POST to ``apiUrl`` over the library's keep-alive pool), ``transport="websocket"``
with the default compression, and for context ``transport="websocket"`` with
``compression=None`` and a plain ``http.client`` POST loop on one keep-alive connection.
Two calls: ``Core/echo`` (small) and a ``/get`` of every object: ``Note/get`` of the
user's :data:`NOTES` Notes (reference server) or ``Mailbox/get`` (Cyrus: the user's
INBOX). Per repetition ``transports_calls`` (Cyrus: ``transports_cyrus_calls``) calls
per client and method after ``rt_warmup`` unrecorded, interleaved in blocks of
:data:`BLOCK` in a rotated order; p50 and p99 (us), the server's CPU per call (the
reference server's child, every Cyrus process), and per repetition the ratios HTTP /
WebSocket.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jmapws_sync as jws

from .clients import SMALL_ARGS, WAIT, basic_header
from .config import Config
from .results import Results
from .stats import fmt, percentile
from .sync import load_cyrus, process_group_cpu

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

PASSWORD = "secret"
NOTES_CAP = "urn:x-jmapws-sync:notes"
MAIL = "urn:ietf:params:jmap:mail"
#: The push sources, by result key: (user on the reference server, push_via, compression).
SOURCES: dict[str, tuple[str, str, str | None]] = {
    "ws": ("push_ws", "websocket", "deflate"),
    "es": ("push_es", "eventsource", "deflate"),
    "ws_plain": ("push_wsplain", "websocket", None),
}
#: The call clients, by result key.
CALLERS = ("http", "ws", "ws_plain", "http_keep")
#: The reference server's user for the calls, and how many Notes its Note/get returns.
CALL_USER = "caller"
NOTES = 10
NOTE_BODY = "Body of note {i}: a line or two of text, as a short note has, to give it weight."
#: Calls per block of the interleaving.
BLOCK = 50
#: How often Cyrus looks for changes to push (its jmap_pushpoll; Cyrus's default is 60 s).
CYRUS_PUSHPOLL = "1s"
CYRUS_POLL_SECONDS = 1.0
#: The pipe's reading thread in this process (ServerProcess names it so).
PIPE_THREAD = "server-child-pipe"


def rotated(names: Sequence[str], k: int) -> list[str]:
    k %= len(names)
    return [*names[k:], *names[:k]]


def thread_cpu(thread: threading.Thread | None) -> float:
    """CPU seconds of another thread of this process (0 when there is none)."""
    if thread is None or thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def find_thread(name: str) -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == name), None)


# --------------------------------------------------------------------------- sessions


def open_session(
    url: str, user: str, password: str, *, push_via: str | None, transport: str, **options: Any
) -> jws.ReconnectingSession:
    """A ReconnectingSession, connected, checked to use what was asked (else an error)."""
    rs = jws.ReconnectingSession(
        url,
        auth=jws.BasicAuth(user, password),
        push=push_via is not None,
        push_via=push_via or "auto",
        transport=transport,
        proxy="",
        connect_timeout=WAIT,
        **options,
    )
    try:
        rs.wait_connected(WAIT)
        check_session(rs, push_via, "websocket" if transport == "auto" else transport)
    except BaseException:
        rs.close()
        raise
    return rs


def check_session(rs: jws.ReconnectingSession, push_via: str | None, transport: str) -> None:
    """RuntimeError unless ``rs`` uses the transport and push source asked for."""
    if rs.transport != transport or rs.push_source != push_via:
        raise RuntimeError(
            f"ReconnectingSession(push_via={push_via!r}, transport={transport!r}) uses"
            f" transport {rs.transport!r} and push source {rs.push_source!r}"
        )


class Listener:
    """A thread reading ``rs.changes()``, noting when each StateChange is handed out."""

    def __init__(self, rs: jws.ReconnectingSession, name: str) -> None:
        self.rs = rs
        self.arrivals: queue.SimpleQueue[tuple[float, jws.StateChange]] = queue.SimpleQueue()
        self.received = 0
        self.error: BaseException | None = None
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        clock = time.monotonic
        put = self.arrivals.put
        while not self._done.is_set():
            try:
                for change in self.rs.changes(timeout=1.0):
                    self.received += 1
                    put((clock(), change))
            except TimeoutError:
                continue
            except jws.SessionClosed:
                return
            except BaseException as exc:  # reported by next(), in the measuring thread
                self.error = exc
                return

    def next(self, timeout: float = WAIT) -> tuple[float, jws.StateChange]:
        """The next (arrival time, StateChange); TimeoutError (with the reader's error)."""
        try:
            return self.arrivals.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no StateChange within {timeout} s (push source {self.rs.push_source!r};"
                f" reader error: {self.error!r})"
            ) from None

    def drain(self) -> int:
        """Throw away what arrived unasked for; how many."""
        n = 0
        with contextlib.suppress(queue.Empty):
            while True:
                self.arrivals.get_nowait()
                n += 1
        return n

    def close(self) -> None:
        self._done.set()
        self.rs.close()
        self.thread.join(5)


def note_state(change: jws.StateChange, account: str) -> str | None:
    return change.changed.get(account, {}).get("Note")


# --------------------------------------------------------------------------- push, reference


@dataclass
class PushTarget:
    """One source's session on the reference server: its user, account, Note, reader."""

    key: str
    user: str
    account: str
    note: str
    listener: Listener


@contextlib.contextmanager
def push_targets(server: ServerProcess) -> Iterator[dict[str, PushTarget]]:
    url = server.facts["session_url"]
    targets: dict[str, PushTarget] = {}
    try:
        for key, (user, via, compression) in SOURCES.items():
            note = server.call("change_note", user, title="transports")
            rs = open_session(
                url, user, PASSWORD, push_via=via, transport="auto", compression=compression
            )
            listener = Listener(rs, f"bench-transports-{key}")
            targets[key] = PushTarget(key, user, server.call("account_id", user), note, listener)
        time.sleep(0.2)
        for target in targets.values():
            target.listener.drain()  # whatever the opening brought (the Note made above)
        yield targets
    finally:
        for target in targets.values():
            target.listener.close()


def push_latency(
    server: ServerProcess, cfg: Config, res: Results, targets: dict[str, PushTarget]
) -> None:
    """One change at a time per source, interleaved; pipe round trips beside them."""
    clock = time.monotonic
    keys = list(targets)
    extra = 0
    for rep in range(cfg.reps):
        latencies: dict[str, list[float]] = {k: [] for k in keys}
        last: dict[str, jws.StateChange] = {}
        pipe: list[float] = []
        for i in range(cfg.transports_changes):
            t0 = clock()
            server.call("session_state")
            pipe.append((clock() - t0) * 1e6)
            for key in rotated(keys, i + rep):
                target = targets[key]
                extra += target.listener.drain()
                t0 = clock()
                server.call("change_note", target.user, target.note, title=f"t {rep}.{i}")
                arrived, change = target.listener.next()
                if note_state(change, target.account) is None:
                    raise RuntimeError(f"{key}: a StateChange without the Note: {change!r}")
                latencies[key].append((arrived - t0) * 1e6)
                last[key] = change
        for key, target in targets.items():
            final = server.call("store.state", target.account)
            if note_state(last[key], target.account) != final:
                raise RuntimeError(f"{key}: last StateChange {last[key]!r}, the state {final}")
        pipe_p50 = percentile(pipe, 50)
        res.add("transports.push.pipe.p50", pipe_p50)
        res.add("transports.push.pipe.p99", percentile(pipe, 99))
        p50: dict[str, float] = {}
        p99: dict[str, float] = {}
        for key, values in latencies.items():
            p50[key], p99[key] = percentile(values, 50), percentile(values, 99)
            res.add(f"transports.push.{key}.p50", p50[key])
            res.add(f"transports.push.{key}.p99", p99[key])
            res.add(f"transports.push.{key}.net_p50", p50[key] - pipe_p50)
        res.add("ratio.transports.push.es/ws.p50", p50["es"] / p50["ws"])
        res.add("ratio.transports.push.es/ws.p99", p99["es"] / p99["ws"])
        res.add(
            "ratio.transports.push.es/ws.net_p50", (p50["es"] - pipe_p50) / (p50["ws"] - pipe_p50)
        )
        print(
            f"  transports push latency rep {rep + 1}/{cfg.reps}: p50/p99 "
            + ", ".join(f"{k} {fmt(p50[k])}/{fmt(p99[k])}" for k in keys)
            + f" us; pipe {fmt(pipe_p50)} us",
            flush=True,
        )
    res.extra.setdefault("transports", {})["unasked_pushes"] = extra
    if extra:
        res.notes.append(f"transports: {extra} StateChanges came that no change asked for")


def push_cpu(
    server: ServerProcess, cfg: Config, res: Results, targets: dict[str, PushTarget]
) -> None:
    """Bursts of changes per source and a baseline of no-op pipe calls (see above)."""
    n = cfg.transports_burst
    pipe_thread = find_thread(PIPE_THREAD)
    if pipe_thread is None:
        res.notes.append(f"transports: no {PIPE_THREAD} thread found; its CPU is counted")
    phases = [*targets, "base"]
    for rep in range(cfg.reps):
        figures: dict[str, dict[str, float]] = {}
        for phase in rotated(phases, rep):
            for target in targets.values():
                target.listener.drain()
            target_ = targets.get(phase)
            received0 = target_.listener.received if target_ is not None else 0
            server0 = server.cpu()
            cpu0, main0, pipe0 = time.process_time(), time.thread_time(), thread_cpu(pipe_thread)
            t0 = time.perf_counter()
            if target_ is None:
                for _ in range(n):
                    server.call("session_state")
            else:
                user, note = target_.user, target_.note
                for i in range(n):
                    server.call("change_note", user, note, title=f"burst {rep}.{i}")
                final = server.call("store.state", target_.account)
                while note_state(target_.listener.next()[1], target_.account) != final:
                    pass
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            main = time.thread_time() - main0
            pipe = thread_cpu(pipe_thread) - pipe0
            figures[phase] = {
                "process": cpu,
                "threads": cpu - main - pipe,
                "server": server.cpu() - server0,
                "seconds": seconds,
                "received": (target_.listener.received - received0) if target_ else 0,
            }
        base = figures["base"]
        per: dict[str, float] = {}
        on_server: dict[str, float] = {}
        for key in targets:
            f = figures[key]
            per[key] = (f["threads"] - base["threads"]) / n * 1e6
            on_server[key] = (f["server"] - base["server"]) / n * 1e6
            res.add(f"transports.cpu.{key}.us", per[key])
            res.add(f"transports.cpu.{key}.process_us", (f["process"] - base["process"]) / n * 1e6)
            res.add(f"transports.cpu.{key}.server_us", on_server[key])
            res.add(f"transports.cpu.{key}.received_pct", f["received"] / n * 100)
            res.add(f"transports.cpu.{key}.rate", n / f["seconds"])
        res.add("transports.cpu.base.us", base["threads"] / n * 1e6)
        res.add("transports.cpu.base.server_us", base["server"] / n * 1e6)
        res.add("ratio.transports.cpu.es/ws", per["es"] / per["ws"])
        res.add("ratio.transports.cpu.es/ws.server", on_server["es"] / on_server["ws"])
        print(
            f"  transports push CPU rep {rep + 1}/{cfg.reps}: client us per push "
            + ", ".join(
                f"{k} {fmt(per[k])} ({figures[k]['received']:.0f} of {n} read)" for k in targets
            )
            + f"; baseline threads {fmt(base['threads'] / n * 1e6)} us per pipe call",
            flush=True,
        )


# --------------------------------------------------------------------------- push, Cyrus


def cyrus_push_latency(cyrus: Any, cfg: Config, res: Results) -> None:
    """Both sources on one Cyrus user, an APPEND at a random moment of the poll (above)."""
    url = cyrus.http_url + "/jmap/"
    rng = random.Random(24)  # the pauses: reproducible
    listeners: dict[str, Listener] = {}
    extra = 0
    try:
        for key in ("ws", "es"):
            _, via, compression = SOURCES[key]
            rs = open_session(
                url,
                cyrus.user,
                cyrus.password,
                push_via=via,
                transport="auto",
                compression=compression,
            )
            listeners[key] = Listener(rs, f"bench-transports-cyrus-{key}")
        with cyrus.imap(timeout=WAIT) as conn:
            for rep in range(cfg.reps):
                latencies: dict[str, list[float]] = {k: [] for k in listeners}
                for i in range(cfg.transports_cyrus_changes):
                    time.sleep(rng.uniform(0, CYRUS_POLL_SECONDS))
                    for listener in listeners.values():
                        extra += listener.drain()
                    message = (
                        f"From: a@example.com\r\nSubject: transports {rep}.{i}\r\n\r\nhi\r\n"
                    ).encode()
                    t0 = time.monotonic()
                    typ, answer = conn.append("INBOX", None, None, message)
                    if typ != "OK":
                        raise RuntimeError(f"Cyrus APPEND: {typ} {answer!r}")
                    for key, listener in listeners.items():
                        arrived, _ = listener.next()
                        latencies[key].append((arrived - t0) * 1000)
                p50 = {k: percentile(v, 50) for k, v in latencies.items()}
                for key, values in latencies.items():
                    res.add(f"transports.cyrus_push.{key}.p50", p50[key])
                    res.add(f"transports.cyrus_push.{key}.max", max(values))
                res.add("ratio.transports.cyrus_push.es/ws.p50", p50["es"] / p50["ws"])
                print(
                    f"  transports Cyrus push rep {rep + 1}/{cfg.reps}: p50/max ms "
                    + ", ".join(f"{k} {fmt(p50[k])}/{fmt(max(v))}" for k, v in latencies.items()),
                    flush=True,
                )
    finally:
        for listener in listeners.values():
            listener.close()
    res.extra.setdefault("transports.cyrus", {})["unasked_pushes"] = extra
    if extra:
        res.notes.append(f"transports on Cyrus: {extra} StateChanges came unasked for")


# --------------------------------------------------------------------------- calls


class KeepAlivePost:
    """The context floor: ``http.client`` POSTs of the same JSON on one connection."""

    def __init__(self, api_url: str, auth: str) -> None:
        parts = urlsplit(api_url)
        self.path = parts.path or "/"
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT)
        self.headers = {
            "Authorization": auth,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def call(self, body: bytes) -> Any:
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        answer = self.conn.getresponse()
        reply = json.loads(answer.read())
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {reply}")
        name, arguments, _ = reply["methodResponses"][0]
        if name == "error":
            raise RuntimeError(f"method error: {arguments}")
        return arguments

    def close(self) -> None:
        self.conn.close()


@dataclass
class CallServer:
    """A server of the call comparison: where it is, who calls, its /get, its CPU."""

    key: str  # "ref" or "cyrus", in the result keys
    session_url: str
    user: str
    password: str
    get_method: str  # "Note/get" or "Mailbox/get"
    get_capability: str
    calls: int
    server_cpu: Callable[[], float]


def requests_for(server: CallServer, account: str) -> dict[str, tuple[jws.Request, bytes]]:
    """The two calls, as a Request and as the JSON body of RFC 8620 §3.3."""
    out: dict[str, tuple[jws.Request, bytes]] = {}
    for method, name, args, using in (
        ("echo", "Core/echo", SMALL_ARGS, [jws.CORE]),
        ("get", server.get_method, {"accountId": account}, [jws.CORE, server.get_capability]),
    ):
        request = jws.Request(using=using, method_calls=[jws.Invocation(name, args, "c0")])
        body = json.dumps({"using": using, "methodCalls": [[name, args, "c0"]]}).encode()
        out[method] = (request, body)
    return out


@contextlib.contextmanager
def call_clients(server: CallServer) -> Iterator[dict[str, dict[str, Callable[[], Any]]]]:
    """Per client key, per method, a function making that call once."""
    sessions: dict[str, jws.ReconnectingSession] = {}
    keep: KeepAlivePost | None = None
    try:
        for key, transport, compression in (
            ("http", "http", "deflate"),
            ("ws", "websocket", "deflate"),
            ("ws_plain", "websocket", None),
        ):
            sessions[key] = open_session(
                server.session_url,
                server.user,
                server.password,
                push_via=None,
                transport=transport,
                compression=compression,
            )
        resource = sessions["http"].session
        assert resource is not None
        account = resource.primary_accounts[server.get_capability]
        keep = KeepAlivePost(resource.api_url, basic_header(server.user, server.password))
        requests = requests_for(server, account)
        ways: dict[str, dict[str, Callable[[], Any]]] = {}
        for key, rs in sessions.items():
            ways[key] = {
                m: (lambda rs=rs, r=r: rs.call(r, timeout=WAIT).get("c0"))
                for m, (r, _) in requests.items()
            }
        ways["http_keep"] = {m: (lambda k=keep, b=b: k.call(b)) for m, (_, b) in requests.items()}
        yield ways
    finally:
        if keep is not None:
            keep.close()
        for rs in sessions.values():
            rs.close()


def calls_by_transport(server: CallServer, cfg: Config, res: Results) -> None:
    """Every client's calls of each method, in blocks, rotated (see above)."""
    clock = time.perf_counter_ns
    with call_clients(server) as ways:
        sizes = {m: len(json.dumps(ways["http_keep"][m]())) for m in ("echo", "get")}
        res.extra.setdefault("transports.calls", {})[server.key] = {"answer_bytes": sizes}
        for method in ("echo", "get"):
            for key in CALLERS:
                for _ in range(cfg.rt_warmup):
                    ways[key][method]()
            blocks = max(1, server.calls // BLOCK)
            for rep in range(cfg.reps):
                latencies: dict[str, list[float]] = {k: [] for k in CALLERS}
                cpu = dict.fromkeys(CALLERS, 0.0)
                for b in range(blocks):
                    for key in rotated(CALLERS, b + rep):
                        fn = ways[key][method]
                        append = latencies[key].append
                        cpu0 = server.server_cpu()
                        for _ in range(BLOCK):
                            t0 = clock()
                            fn()
                            append((clock() - t0) / 1000.0)
                        cpu[key] += server.server_cpu() - cpu0
                base = f"transports.calls.{server.key}.{method}"
                p50 = {k: percentile(v, 50) for k, v in latencies.items()}
                p99 = {k: percentile(v, 99) for k, v in latencies.items()}
                for key in CALLERS:
                    res.add(f"{base}.{key}.p50", p50[key])
                    res.add(f"{base}.{key}.p99", p99[key])
                    res.add(f"{base}.{key}.server_us", cpu[key] / len(latencies[key]) * 1e6)
                ratio = f"ratio.{base}"
                res.add(f"{ratio}.http/ws", p50["http"] / p50["ws"])
                res.add(f"{ratio}.http/ws.p99", p99["http"] / p99["ws"])
                res.add(f"{ratio}.http/http_keep", p50["http"] / p50["http_keep"])
                res.add(f"{ratio}.ws/ws_plain", p50["ws"] / p50["ws_plain"])
                print(
                    f"  transports calls {server.key} {method} rep {rep + 1}/{cfg.reps}: p50 "
                    + ", ".join(f"{k} {fmt(p50[k])}" for k in CALLERS)
                    + " us",
                    flush=True,
                )


# --------------------------------------------------------------------------- the workload


@contextlib.contextmanager
def cyrus_server(res: Results) -> Iterator[tuple[Any, Any] | None]:
    """A Cyrus (and the interop module), or None (with a note) without a build."""
    module = load_cyrus()
    prefix = module.find_prefix() if module is not None else None
    if module is None or prefix is None:
        res.notes.append(
            "transports on Cyrus: skipped, no Cyrus build is cached (scripts/cyrus/build.sh)"
        )
        yield None
        return
    with module.CyrusServer(prefix, pushpoll=CYRUS_PUSHPOLL) as cyrus:
        yield module, cyrus


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """Push by source and calls by transport, reference server then Cyrus (see above)."""
    facts = res.extra.setdefault("transports", {})
    facts["load_before"] = os.getloadavg()[0]
    facts["notes"] = NOTES
    with push_targets(server) as targets:
        push_latency(server, cfg, res, targets)
        push_cpu(server, cfg, res, targets)
    server.call("fill_notes", CALL_USER, NOTES, title="note {i}", body=NOTE_BODY)
    ref = CallServer(
        key="ref",
        session_url=server.facts["session_url"],
        user=CALL_USER,
        password=PASSWORD,
        get_method="Note/get",
        get_capability=NOTES_CAP,
        calls=cfg.transports_calls,
        server_cpu=server.cpu,
    )
    calls_by_transport(ref, cfg, res)
    with cyrus_server(res) as found:
        if found is not None:
            module, cyrus = found
            pgid = int((cyrus.basedir / "run" / "master.pid").read_text().split()[0])
            res.extra["transports.cyrus"] = {
                "version": module.CYRUS_VERSION,
                "pushpoll": CYRUS_PUSHPOLL,
            }
            on_cyrus = CallServer(
                key="cyrus",
                session_url=cyrus.http_url + "/jmap/",
                user=cyrus.user,
                password=cyrus.password,
                get_method="Mailbox/get",
                get_capability=MAIL,
                calls=cfg.transports_cyrus_calls,
                server_cpu=lambda: process_group_cpu(pgid),
            )
            calls_by_transport(on_cyrus, cfg, res)
            cyrus_push_latency(cyrus, cfg, res)
    facts["load_after"] = os.getloadavg()[0]
