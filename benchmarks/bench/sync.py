"""First sync (issue 22): ChangeFeed's resync against a hand-written loop, and its memory.

Two parts.

*First sync of* ``sync_objects`` *objects*, on two servers: the reference server child
(Notes, every property they have: id, title, body) and, when a build is cached, a private
Cyrus 3.6 (``tests/interop/cyrus.py``; Emails with :data:`EMAIL_PROPERTIES`, appended
over IMAP once per run). Three clients, each on a connection opened before the clock
starts, in an order rotated from one repetition to the next (one unrecorded warm-up round
first):

* ``feed``: a fresh :class:`jmapws_sync.ChangeFeed` (so a resync) consuming
  ``catch_up()`` over a ``WsSession`` without compression, like the plain baseline;
* ``feed_deflate``: the same with the default compression (as an application has it),
  for context;
* ``http``: the straightforward hand-written loop (:class:`HttpLoop`): ``http.client`` on
  one keep-alive connection, POST to the Session's apiUrl with Basic auth, one request per
  page of the same size as the feed's: ``Foo/query`` (position, limit) and ``Foo/get`` of
  its ids through a back-reference, until a short page.

Per client and repetition: seconds, round trips (the feed's counted by a thin wrapper
around its session's ``call``, checked against the reference server's own count), objects
per second, this process's CPU seconds and the server's (the child's, or every Cyrus
process's); per repetition the ratios feed / loop of the seconds.

*Peak RSS of a* ``sync_rss_objects`` *-Note resync*, in a fresh process each time
(``run.py --sync-worker SPEC``, :func:`rss_worker`): it connects (the default
compression), makes the feed, resets its peak RSS (``/proc/self/clear_refs``), notes its
RSS (the idle process), consumes ``catch_up()`` dropping every Delta (or, for scale,
keeping every object in one dict) and reports its peak RSS (``VmHWM``) minus the idle RSS.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import jmapws_sync as jws

from .clients import WAIT
from .config import ROOT, RUN_PY, Config
from .results import Results
from .stats import fmt

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

#: The reference server's users for this workload (see ``server.USERS``).
USER = "syncer"
RSS_USER = "bigsync"
PASSWORD = "secret"
#: The Notes: about 100 bytes of body each, numbered.
NOTE_TITLE = "Note number {i}"
NOTE_BODY = (
    "Body of note {i}: a line or two of text, as a short note has, to give each object some weight."
)
NOTES = "urn:x-jmapws-sync:notes"
MAIL = "urn:ietf:params:jmap:mail"
#: What the feed asks of each Email on Cyrus (it adds "id"; the loop asks for "id" too).
EMAIL_PROPERTIES = ["subject", "keywords", "mailboxIds", "receivedAt", "size"]
#: The feed's page size (its default; the servers allow it) and the loop's.
PAGE = 256
#: Messages per IMAP MULTIAPPEND command (RFC 3502, with LITERAL+ literals).
APPEND_BATCH = 500
#: The clients of the first-sync comparison, by result key.
CLIENTS = ("feed", "feed_deflate", "http")
CYRUS_PY = ROOT / "tests" / "interop" / "cyrus.py"


# --------------------------------------------------------------------------- plumbing


def basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def session_resource(url: str, user: str, password: str) -> dict[str, Any]:
    """The Session resource at ``url`` (GET, Basic auth), as JSON."""
    request = urllib.request.Request(url, headers={"Authorization": basic(user, password)})
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        data: dict[str, Any] = json.load(answer)
    return data


def count_calls(ws: jws.WsSession) -> Callable[[], int]:
    """Count the requests made through ``ws.call`` from now on (a wrapper on the instance,
    which is what ChangeFeed calls); returns a function giving the count."""
    inner = ws.call
    made = [0]

    def call(request: jws.Request, *, timeout: float | None = None) -> jws.Response:
        made[0] += 1
        return inner(request, timeout=timeout)

    ws.call = call  # type: ignore[method-assign]
    return lambda: made[0]


def feed_sync(
    ws: jws.WsSession, data_type: str, properties: list[str] | None, keep: dict[str, Any] | None
) -> int:
    """A fresh ChangeFeed's first catch-up (a resync); the objects received."""
    feed = jws.ChangeFeed(ws, [data_type], properties=properties)
    n = 0
    for delta in feed.catch_up(timeout=WAIT):
        n += len(delta.created)
        if keep is not None:
            keep.update(delta.created)
    return n


class HttpLoop:
    """The hand-written first sync: one POST per page, ``Foo/query`` + ``Foo/get``."""

    def __init__(
        self,
        api_url: str,
        auth: str,
        *,
        using: list[str],
        data_type: str,
        account: str,
        properties: list[str] | None,
        page: int,
    ) -> None:
        parts = urlsplit(api_url)
        self.path = parts.path or "/"
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT)
        self.headers = {"Authorization": auth, "Content-Type": "application/json"}
        self.using, self.data_type, self.account = using, data_type, account
        self.properties, self.page = properties, page
        self.requests = 0

    def connect(self) -> None:
        self.conn.connect()

    def sync(self) -> int:
        """Every object, a page per request until a short page; the objects received."""
        query_name, get_name = f"{self.data_type}/query", f"{self.data_type}/get"
        get_args: dict[str, Any] = {
            "accountId": self.account,
            "#ids": {"resultOf": "q", "name": query_name, "path": "/ids"},
        }
        if self.properties is not None:
            get_args["properties"] = self.properties
        position = n = 0
        while True:
            body = {
                "using": self.using,
                "methodCalls": [
                    [
                        query_name,
                        {"accountId": self.account, "position": position, "limit": self.page},
                        "q",
                    ],
                    [get_name, get_args, "g"],
                ],
            }
            self.conn.request("POST", self.path, json.dumps(body).encode(), self.headers)
            answer = self.conn.getresponse()
            reply = json.loads(answer.read())
            self.requests += 1
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {reply}")
            (q_name, query, _), (g_name, got, _) = reply["methodResponses"]
            if q_name != query_name or g_name != get_name:
                raise RuntimeError(f"method error: {reply['methodResponses']}")
            n += len(got["list"])
            ids = query["ids"]
            position += len(ids)
            if len(ids) < min(self.page, query.get("limit") or self.page):
                return n

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- servers


@dataclass
class Backend:
    """One server of the first-sync comparison and how each client reaches it."""

    key: str  # "ref" or "cyrus", in the result keys
    session_url: str  # what connect() discovers from
    user: str
    password: str
    data_type: str
    properties: list[str] | None  # the feed's (None: every property)
    using: list[str]
    objects: int
    server_cpu: Callable[[], float]
    server_requests: Callable[[], int] | None = None
    resource: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resource = session_resource(self.session_url, self.user, self.password)
        capability = self.using[-1]
        self.account = self.resource["primaryAccounts"][capability]
        self.api_url = urljoin(self.session_url, self.resource["apiUrl"])

    def connect(self, **options: Any) -> jws.WsSession:
        auth = jws.BasicAuth(self.user, self.password)
        return jws.connect(self.session_url, auth=auth, proxy="", timeout=WAIT, **options)

    def loop(self) -> HttpLoop:
        props = None if self.properties is None else ["id", *self.properties]
        return HttpLoop(
            self.api_url,
            basic(self.user, self.password),
            using=self.using,
            data_type=self.data_type,
            account=self.account,
            properties=props,
            page=PAGE,
        )


def load_cyrus() -> ModuleType | None:
    """``tests/interop/cyrus.py`` (standard library only), loaded by path; None if absent."""
    if not CYRUS_PY.is_file():
        return None
    spec = importlib.util.spec_from_file_location("bench_interop_cyrus", CYRUS_PY)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def process_group_cpu(pgid: int) -> float:
    """CPU seconds of every process in process group ``pgid``, reaped children included."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state: pgrp is the 5th field
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def message(k: int) -> bytes:
    """A small RFC 5322 message, as in tests/interop/test_cyrus_feed.py."""
    return (
        f"From: Alice <alice@example.com>\r\nTo: test@localhost\r\n"
        f"Subject: benchmark message {k}\r\nMessage-ID: <{uuid.uuid4()}@example.com>\r\n"
        f"Date: Wed, 02 Dec 2026 08:00:00 +0000\r\n\r\nHello from message {k}.\r\n"
    ).encode()


def append_messages(cyrus: Any, n: int) -> str:
    """``n`` messages into INBOX over one IMAP connection; how (the method used).

    MULTIAPPEND (RFC 3502) with LITERAL+ (RFC 7888) literals, ``APPEND_BATCH`` messages a
    command, when the server has both (Cyrus does): one APPEND each takes ~30-70 ms on
    this machine, 10,000 of them ten minutes. Otherwise imaplib's APPEND, one by one.
    """
    with cyrus.imap(timeout=WAIT) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not {"MULTIAPPEND", "LITERAL+"} <= set(conn.capabilities):
            for k in range(n):
                typ, resp = conn.append("INBOX", None, None, message(k))
                if typ != "OK":
                    raise RuntimeError(f"APPEND failed: {typ} {resp!r}")
            return "one APPEND per message"
        for batch, start in enumerate(range(0, n, APPEND_BATCH)):
            tag = b"B%04d" % batch
            parts = [tag + b" APPEND INBOX"]
            for k in range(start, min(start + APPEND_BATCH, n)):
                data = message(k)
                parts.append(b" {%d+}\r\n" % len(data) + data)
            conn.send(b"".join(parts) + b"\r\n")
            while True:
                line = conn.readline()
                if not line:
                    raise RuntimeError("Cyrus closed the IMAP connection during APPEND")
                if line.startswith(tag + b" "):
                    break
            if not line.startswith(tag + b" OK"):
                raise RuntimeError(f"MULTIAPPEND failed: {line!r}")
        return f"MULTIAPPEND with LITERAL+, {APPEND_BATCH} messages a command"


@contextlib.contextmanager
def cyrus_backend(cfg: Config, res: Results) -> Iterator[Backend | None]:
    """A Cyrus with ``sync_cyrus_objects`` Emails, or None (with a note) without a build."""
    module = load_cyrus()
    prefix = module.find_prefix() if module is not None else None
    if module is None or prefix is None:
        res.notes.append(
            "first sync on Cyrus: skipped, no Cyrus build is cached (scripts/cyrus/build.sh)"
        )
        yield None
        return
    with module.CyrusServer(prefix) as cyrus:
        n = cfg.sync_cyrus_objects
        t0 = time.perf_counter()
        how = append_messages(cyrus, n)
        append_s = time.perf_counter() - t0
        pgid = int((cyrus.basedir / "run" / "master.pid").read_text().split()[0])
        res.extra["sync.cyrus"] = {
            "version": module.CYRUS_VERSION,
            "messages": n,
            "append_s": append_s,
            "append_how": how,
        }
        print(f"  sync: {n:,} messages appended to Cyrus in {fmt(append_s)} s ({how})", flush=True)
        yield Backend(
            key="cyrus",
            session_url=cyrus.http_url + "/jmap/",
            user=cyrus.user,
            password=cyrus.password,
            data_type="Email",
            properties=EMAIL_PROPERTIES,
            using=[jws.CORE, MAIL],
            objects=n,
            server_cpu=lambda: process_group_cpu(pgid),
        )


# --------------------------------------------------------------------------- first sync


def run_client(backend: Backend, client: str) -> dict[str, float]:
    """One first sync by ``client``: seconds, requests, objects, CPU here and there."""
    loop: HttpLoop | None = None
    ws: jws.WsSession | None = None
    if client == "http":
        loop = backend.loop()
        loop.connect()
    else:
        ws = backend.connect(compression=None if client == "feed" else "deflate")
        requests = count_calls(ws)
    try:
        seen0 = backend.server_requests() if backend.server_requests else 0
        server0, cpu0 = backend.server_cpu(), time.process_time()
        t0 = time.perf_counter()
        if loop is not None:
            n = loop.sync()
        else:
            assert ws is not None
            n = feed_sync(ws, backend.data_type, backend.properties, None)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server_cpu = backend.server_cpu() - server0
        made = loop.requests if loop is not None else requests()
        if backend.server_requests is not None and backend.server_requests() - seen0 != made:
            raise RuntimeError(
                f"{client}: counted {made} requests, the server saw"
                f" {backend.server_requests() - seen0}"
            )
    finally:
        if loop is not None:
            loop.close()
        if ws is not None:
            ws.close()
    if n != backend.objects:
        raise RuntimeError(f"{client}: {n} objects received, {backend.objects} expected")
    return {"s": seconds, "rt": made, "ops": n / seconds, "cpu": cpu, "server_cpu": server_cpu}


def compare(backend: Backend, cfg: Config, res: Results) -> None:
    """The three clients, ``cfg.reps`` times, order rotated; one warm-up round first."""
    for client in CLIENTS:
        run_client(backend, client)
    for rep in range(cfg.reps):
        order = CLIENTS[rep % len(CLIENTS) :] + CLIENTS[: rep % len(CLIENTS)]
        figures = {client: run_client(backend, client) for client in order}
        for client, values in figures.items():
            for stat, value in values.items():
                res.add(f"sync.{backend.key}.{client}.{stat}", value)
        for client in ("feed", "feed_deflate"):
            res.add(
                f"ratio.sync.{backend.key}.{client}/http",
                figures[client]["s"] / figures["http"]["s"],
            )
        print(
            f"  sync {backend.key} rep {rep + 1}/{cfg.reps}: "
            + ", ".join(
                f"{c} {fmt(figures[c]['s'])} s / {figures[c]['rt']:.0f} requests" for c in CLIENTS
            ),
            flush=True,
        )


# --------------------------------------------------------------------------- memory


def status_kib(name: str) -> float:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return float(line.split()[1])
    raise KeyError(name)


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its RSS now (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kib("VmHWM") <= status_kib("VmRSS") + 64


def rss_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: connect, make the feed, then its resync's peak RSS above idle."""
    import resource

    keep: dict[str, Any] | None = {} if spec["keep"] else None
    auth = jws.BasicAuth(spec["user"], PASSWORD)
    with jws.connect(spec["session_url"], auth=auth, proxy="", timeout=WAIT) as ws:
        requests = count_calls(ws)
        feed = jws.ChangeFeed(ws, ["Note"])
        gc.collect()
        reset = reset_peak()
        idle = status_kib("VmRSS")
        t0 = time.perf_counter()
        n = 0
        for delta in feed.catch_up(timeout=WAIT):
            n += len(delta.created)
            if keep is not None:
                keep.update(delta.created)
        seconds = time.perf_counter() - t0
        peak = status_kib("VmHWM")
        end = status_kib("VmRSS")
    return {
        "n": n,
        "kept": len(keep) if keep is not None else 0,
        "seconds": seconds,
        "requests": requests(),
        "idle_kib": idle,
        "peak_kib": peak,
        "end_kib": end,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "peak_reset": reset,
    }


def rss(server: ServerProcess, cfg: Config, res: Results) -> None:
    """The resync's peak RSS above the idle process, dropping and keeping the objects."""
    n = cfg.sync_rss_objects
    server.call("fill_notes", RSS_USER, n, title=NOTE_TITLE, body=NOTE_BODY)
    for rep in range(cfg.sync_rss_reps):
        for mode in ("drop", "keep"):
            spec = {"session_url": server.facts["session_url"], "user": RSS_USER}
            spec["keep"] = mode == "keep"
            proc = subprocess.run(
                [sys.executable, str(RUN_PY), "--sync-worker", json.dumps(spec)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if proc.returncode != 0:
                res.notes.append(f"sync RSS worker failed: {proc.stderr.strip()[-400:]}")
                return
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            if out["n"] != n:
                raise RuntimeError(f"the RSS worker received {out['n']} Notes, not {n}")
            if not out["peak_reset"]:
                res.notes.append("sync RSS: the peak could not be reset; VmHWM is the process's")
            res.add(f"sync.rss.{mode}_mib", (out["peak_kib"] - out["idle_kib"]) / 1024)
            res.add(f"sync.rss.{mode}.idle_mib", out["idle_kib"] / 1024)
            res.add(f"sync.rss.{mode}.end_mib", (out["end_kib"] - out["idle_kib"]) / 1024)
            res.add(f"sync.rss.{mode}.s", out["seconds"])
            res.add(f"sync.rss.{mode}.rt", out["requests"])
            print(
                f"  sync rss rep {rep + 1}/{cfg.sync_rss_reps} ({mode}): peak"
                f" {fmt((out['peak_kib'] - out['idle_kib']) / 1024)} MiB above"
                f" {fmt(out['idle_kib'] / 1024)} MiB idle, {fmt(out['seconds'])} s,"
                f" {out['requests']} requests",
                flush=True,
            )


# --------------------------------------------------------------------------- the workload


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """First sync on the reference server and on Cyrus; then the resync's peak RSS."""
    n = cfg.sync_objects
    server.call("fill_notes", USER, n, title=NOTE_TITLE, body=NOTE_BODY)
    ref = Backend(
        key="ref",
        session_url=server.facts["session_url"],
        user=USER,
        password=PASSWORD,
        data_type="Note",
        properties=None,
        using=[jws.CORE, NOTES],
        objects=n,
        server_cpu=server.cpu,
        server_requests=lambda: int(server.call("requests_seen")),
    )
    compare(ref, cfg, res)
    with cyrus_backend(cfg, res) as cyrus:
        if cyrus is not None:
            compare(cyrus, cfg, res)
    rss(server, cfg, res)
