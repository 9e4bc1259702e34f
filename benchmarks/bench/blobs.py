"""Blob transfers (issue 23): big uploads and downloads against curl, and small uploads.

Two parts, on one server per part and for every client the same file, in the same run.

*Throughput of a* ``blob_size`` *file* (256 MiB of random bytes, written once per run and
read from the page cache), on the reference server child of the run and, when a build is
cached, on a private Cyrus 3.6 (``tests/interop/cyrus.py``, its upload limit set from
``jmap_max_size_upload``, in KiB, and checked in its Session resource). Clients:

* ``lib``: ``ws.upload(path, via="http")`` and ``ws.download(blob_id, to=path)`` on a
  session opened before the clock (each transfer opens its own HTTP connection, which is
  timed); a download to a path goes to a temporary file, fsynced and renamed;
* ``lib_file`` (downloads only, for context): ``ws.download(blob_id, to=file)`` into a
  file opened for it, so no temporary name, no fsync, no rename, as the others write;
* ``curl``: ``curl -sS -u user:pass --data-binary @file -H 'Content-Type: ...' URL`` and
  ``curl -sS -u user:pass -o out URL``, the whole subprocess timed, from spawn to exit
  (``os.wait4`` gives its CPU; its peak RSS is its ``VmHWM``, sampled every 2 ms, since
  ``ru_maxrss`` counts this process, which it was forked from);
* ``http``: a plain ``http.client`` loop, one connection per transfer, streaming from or
  to the file in 64 KiB pieces (``send`` of each piece; ``read(65536)`` and ``write``).

Per repetition the uploads come first, then the downloads, each in an order rotated from
one repetition to the next, after one unrecorded round whose downloads are checked byte
for byte (SHA-256); later downloads are checked by size. Per transfer: MiB/s, this
process's CPU seconds (curl's own, for curl), the server's CPU seconds and, for the
clients in this process, the peak RSS above the RSS just before (``VmHWM`` after
``/proc/self/clear_refs``); for curl the peak RSS of its whole process. Ratios per
repetition: each client's MiB/s over curl's, in each direction.

*Small uploads*, ``blob_small_sizes`` (1 KiB to 1 MiB), on the reference server only (it
advertises RFC 9404; Cyrus 3.6 does not), each on a session or connection opened before
the clock, interleaved upload by upload in a rotated order, ``blob_small_n`` of each
(after a few unrecorded): ``ws.upload(data, via="jmap")`` (``Blob/upload`` over the
WebSocket) on a session with the default compression (as an application has it) and on
one without, ``ws.upload(data, via="http")`` and, for context, a plain ``http.client``
POST on one keep-alive connection. p50 latency of each, the ratios jmap / http per
repetition, and where that ratio crosses 1 (log-linear between the two sizes around it):
the size up to which ``Blob/upload`` is the faster way, which is what
``jmapws_sync.blobs.JMAP_UPLOAD_LIMIT`` should be.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import http.client
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

import jmapws_sync as jws
from jmapws_sync import blobs as jws_blobs

from .clients import WAIT
from .config import MIB, Config
from .results import Results
from .stats import fmt, percentile
from .sync import basic, load_cyrus, process_group_cpu, reset_peak, session_resource, status_kib

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

KIB = 1024
#: The reference server's user for this workload (see ``server.USERS``).
USER = "blobber"
PASSWORD = "secret"
MEDIA_TYPE = "application/octet-stream"
#: What the plain loop reads and writes at a time (the library's CHUNK too).
PIECE = 64 * KIB
BLOB_CAPABILITY = "urn:ietf:params:jmap:blob"
UPLOADERS = ("lib", "curl", "http")
DOWNLOADERS = ("lib", "lib_file", "curl", "http")
#: The small-upload ways, by result key.
SMALL_MODES = ("jmap", "jmap_plain", "http", "http_keep")
#: Unrecorded small uploads per way and size before the measured ones.
SMALL_WARMUP = 5
#: Every blob transfer's bound on one socket operation (Cyrus stores 256 MiB before it
#: answers).
TRANSFER_WAIT = 300.0


# --------------------------------------------------------------------------- plumbing


def expand(template: str, values: dict[str, str]) -> str:
    """RFC 6570 level 1: each ``{name}`` by its value, percent-encoded but unreserved."""
    out = template
    for name, value in values.items():
        out = out.replace("{" + name + "}", quote(value, safe=""))
    return out


def primary_account(resource: dict[str, Any]) -> str:
    """The account a client uses by default: a primary one, else the first."""
    primary = resource.get("primaryAccounts") or {}
    return str(next(iter(primary.values()), None) or next(iter(resource["accounts"])))


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes into ``path``; their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        left = size
        while left:
            piece = os.urandom(min(MIB, left))
            digest.update(piece)
            file.write(piece)
            left -= len(piece)
        file.flush()
        os.fsync(file.fileno())  # so that no writeback of it runs during the transfers
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while piece := file.read(MIB):
            digest.update(piece)
    return digest.hexdigest()


@dataclass
class Measured:
    """One transfer: seconds, client CPU, server CPU, client peak RSS (MiB; see above)."""

    seconds: float
    cpu: float
    server_cpu: float
    rss_mib: float
    blob_id: str = ""
    rss_before_mib: float = float("nan")


@dataclass
class BlobServer:
    """One server of the throughput part, and how each client reaches it."""

    key: str  # "ref" or "cyrus", in the result keys
    label: str  # shown in the report
    session_url: str
    user: str
    password: str
    server_cpu: Callable[[], float]
    resource: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resource = session_resource(self.session_url, self.user, self.password)
        self.account = primary_account(self.resource)
        self.auth = basic(self.user, self.password)
        self.upload_url = urljoin(
            self.session_url, expand(self.resource["uploadUrl"], {"accountId": self.account})
        )
        core = self.resource["capabilities"][jws.CORE]
        self.max_size_upload = int(core["maxSizeUpload"])

    def download_url(self, blob_id: str) -> str:
        values = {"accountId": self.account, "blobId": blob_id, "name": "blob.bin"}
        values["type"] = MEDIA_TYPE
        return urljoin(self.session_url, expand(self.resource["downloadUrl"], values))

    def connect(self) -> jws.WsSession:
        auth = jws.BasicAuth(self.user, self.password)
        return jws.connect(self.session_url, auth=auth, proxy="", timeout=WAIT)


# --------------------------------------------------------------------------- clients


def in_process(server: BlobServer, work: Callable[[], str]) -> Measured:
    """Time ``work()`` here: seconds, CPU, the server's CPU, peak RSS above the RSS now."""
    gc.collect()
    reset = reset_peak()
    idle = status_kib("VmRSS")
    server0, cpu0 = server.server_cpu(), time.process_time()
    t0 = time.perf_counter()
    blob_id = work()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    server_cpu = server.server_cpu() - server0
    rss = (status_kib("VmHWM") - idle) / 1024 if reset else float("nan")
    return Measured(seconds, cpu, server_cpu, rss, blob_id, idle / 1024)


class PeakSampler:
    """Samples a process's ``VmHWM`` every few ms once it runs ``name`` (after exec).

    ``os.wait4`` gives a child's ``ru_maxrss``, but that counts the memory of this
    process, which the child was forked from, so curl's own peak is sampled instead.
    """

    def __init__(self, pid: int, name: str, period: float = 0.002) -> None:
        self.peak_kib = 0.0
        self._path = Path(f"/proc/{pid}/status")
        self._name, self._period = name, period
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-blobs-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                fields = dict(
                    line.split(":", 1)
                    for line in self._path.read_text().splitlines()
                    if ":" in line
                )
            except OSError:
                return  # gone
            if fields.get("Name", "").strip() == self._name and "VmHWM" in fields:
                self.peak_kib = max(self.peak_kib, float(fields["VmHWM"].split()[0]))
            self._done.wait(self._period)

    def stop(self) -> float:
        """Stop sampling (call before reaping the process); the peak in MiB (nan: none)."""
        self._done.set()
        self._thread.join()
        return self.peak_kib / 1024 if self.peak_kib else float("nan")


def run_curl(server: BlobServer, args: list[str], stdout: Path) -> Measured:
    """``curl`` with ``args``, timed from spawn to its end; its CPU from ``os.wait4``."""
    with open(stdout, "wb") as out, tempfile.TemporaryFile() as err:
        server0 = server.server_cpu()
        t0 = time.perf_counter()
        proc = subprocess.Popen(["curl", *args], stdout=out, stderr=err)
        sampler = PeakSampler(proc.pid, "curl")
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped yet
        seconds = time.perf_counter() - t0
        peak = sampler.stop()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        server_cpu = server.server_cpu() - server0
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise RuntimeError(f"curl {args[-1]} exited {proc.returncode}: {message[-300:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(seconds, cpu, server_cpu, peak)


def curl_upload(server: BlobServer, source: Path, scratch: Path) -> Measured:
    answer = scratch / "curl-answer.json"
    args = [
        "-sS",
        "-u",
        f"{server.user}:{server.password}",
        "--data-binary",
        f"@{source}",
        "-H",
        f"Content-Type: {MEDIA_TYPE}",
        server.upload_url,
    ]
    measured = run_curl(server, args, answer)
    reply = json.loads(answer.read_text())
    measured.blob_id = reply["blobId"]
    return measured


def curl_download(server: BlobServer, blob_id: str, target: Path) -> Measured:
    args = ["-sS", "-u", f"{server.user}:{server.password}", "-o", str(target)]
    args.append(server.download_url(blob_id))
    return run_curl(server, args, target.with_suffix(".stdout"))


def http_connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT), target


def http_upload(server: BlobServer, source: Path) -> str:
    """The plain loop's upload: headers, then the file in 64 KiB pieces; the blob id."""
    conn, target = http_connection(server.upload_url)
    try:
        conn.putrequest("POST", target, skip_accept_encoding=True)
        conn.putheader("Authorization", server.auth)
        conn.putheader("Content-Type", MEDIA_TYPE)
        conn.putheader("Content-Length", str(source.stat().st_size))
        conn.endheaders()
        with open(source, "rb", buffering=0) as file:
            while piece := file.read(PIECE):
                conn.send(piece)
        answer = conn.getresponse()
        body = answer.read()
        if answer.status not in (200, 201):
            raise RuntimeError(f"upload: HTTP {answer.status}: {body[:300]!r}")
        return str(json.loads(body)["blobId"])
    finally:
        conn.close()


def http_download(server: BlobServer, blob_id: str, target: Path) -> str:
    """The plain loop's download: ``read(65536)`` and ``write`` until the end."""
    conn, path = http_connection(server.download_url(blob_id))
    try:
        conn.request("GET", path, headers={"Authorization": server.auth})
        answer = conn.getresponse()
        if answer.status != 200:
            raise RuntimeError(f"download: HTTP {answer.status}: {answer.read(300)!r}")
        with open(target, "wb") as file:
            while piece := answer.read(PIECE):
                file.write(piece)
        return blob_id
    finally:
        conn.close()


def upload(
    server: BlobServer, ws: jws.WsSession, client: str, source: Path, scratch: Path
) -> Measured:
    if client == "curl":
        return curl_upload(server, source, scratch)
    if client == "lib":

        def work() -> str:
            return ws.upload(source, type=MEDIA_TYPE, via="http", timeout=TRANSFER_WAIT).blob_id

    else:

        def work() -> str:
            return http_upload(server, source)

    return in_process(server, work)


def download(
    server: BlobServer, ws: jws.WsSession, client: str, blob_id: str, target: Path
) -> Measured:
    if client == "curl":
        return curl_download(server, blob_id, target)
    if client == "lib":

        def work() -> str:
            ws.download(blob_id, to=target, timeout=TRANSFER_WAIT)
            return blob_id

    elif client == "lib_file":

        def work() -> str:
            with open(target, "wb") as file:
                ws.download(blob_id, to=file, timeout=TRANSFER_WAIT)
            return blob_id

    else:

        def work() -> str:
            return http_download(server, blob_id, target)

    return in_process(server, work)


# --------------------------------------------------------------------------- throughput


def rotated(names: tuple[str, ...], rep: int) -> tuple[str, ...]:
    k = rep % len(names)
    return names[k:] + names[:k]


def throughput(
    server: BlobServer, cfg: Config, res: Results, *, source: Path, digest: str, curl: bool
) -> None:
    """Every client's upload and download of ``source``, ``cfg.reps`` times (see above)."""
    size = source.stat().st_size
    if server.max_size_upload < size:
        res.notes.append(
            f"blobs on {server.label}: maxSizeUpload is {server.max_size_upload:,}, under"
            f" {size:,}: skipped"
        )
        return
    scratch = source.parent
    uploaders = tuple(c for c in UPLOADERS if curl or c != "curl")
    downloaders = tuple(c for c in DOWNLOADERS if curl or c != "curl")
    mib = size / MIB
    with server.connect() as ws:
        blob_id = ""
        for rep in range(-1, cfg.reps):  # -1: the unrecorded round, checked byte for byte
            ups = {c: upload(server, ws, c, source, scratch) for c in rotated(uploaders, rep)}
            ids = {m.blob_id for m in ups.values()}
            if len(ids) != 1:
                raise RuntimeError(f"blobs: the uploads of one file got several ids: {ids}")
            blob_id = ids.pop()
            downs: dict[str, Measured] = {}
            for client in rotated(downloaders, rep):
                target = scratch / f"down-{client}.bin"
                downs[client] = download(server, ws, client, blob_id, target)
                got = target.stat().st_size
                if got != size:
                    raise RuntimeError(f"blobs: {client} downloaded {got} bytes of {size}")
                if rep < 0 and file_sha256(target) != digest:
                    raise RuntimeError(f"blobs: {client} downloaded other bytes than it sent")
                target.unlink()
            if rep < 0:
                continue
            for direction, figures in (("up", ups), ("down", downs)):
                for client, m in figures.items():
                    base = f"blobs.{server.key}.{direction}.{client}"
                    res.add(f"{base}.mibs", mib / m.seconds)
                    res.add(f"{base}.cpu", m.cpu)
                    res.add(f"{base}.server_cpu", m.server_cpu)
                    if not math.isnan(m.rss_mib):
                        res.add(f"{base}.rss_mib", m.rss_mib)
                    if not math.isnan(m.rss_before_mib):
                        res.add(f"{base}.rss_before_mib", m.rss_before_mib)
                if "curl" in figures:
                    for client in figures:
                        if client != "curl":
                            res.add(
                                f"ratio.blobs.{server.key}.{direction}.{client}/curl",
                                figures["curl"].seconds / figures[client].seconds,
                            )
            print(
                f"  blobs {server.key} rep {rep + 1}/{cfg.reps}: up "
                + ", ".join(f"{c} {fmt(mib / ups[c].seconds)}" for c in uploaders)
                + "; down "
                + ", ".join(f"{c} {fmt(mib / downs[c].seconds)}" for c in downloaders)
                + " MiB/s",
                flush=True,
            )
    res.extra[f"blobs.{server.key}.blob_id"] = blob_id


# --------------------------------------------------------------------------- small uploads


class KeepAliveUpload:
    """The context floor of an HTTP upload: ``http.client`` POSTs on one connection."""

    def __init__(self, url: str, auth: str) -> None:
        self.conn, self.target = http_connection(url)
        self.headers = {"Authorization": auth, "Content-Type": MEDIA_TYPE}
        self.conn.connect()

    def upload(self, data: bytes) -> str:
        self.conn.request("POST", self.target, data, self.headers)
        answer = self.conn.getresponse()
        body = answer.read()
        if answer.status not in (200, 201):
            raise RuntimeError(f"upload: HTTP {answer.status}: {body[:300]!r}")
        return str(json.loads(body)["blobId"])

    def close(self) -> None:
        self.conn.close()


def crossover(sizes: list[int], ratios: list[float]) -> float:
    """The size (bytes) where ``ratios`` (jmap / http, by growing size) first reaches 1,
    log-linear between its neighbours; 0 if already at the first, inf if never."""
    if ratios[0] >= 1:
        return 0.0
    for i in range(1, len(sizes)):
        (s0, r0), (s1, r1) = (sizes[i - 1], ratios[i - 1]), (sizes[i], ratios[i])
        if r1 >= 1:
            frac = (0 - math.log(r0)) / (math.log(r1) - math.log(r0))
            return float(s0 * (s1 / s0) ** frac)
    return math.inf


@contextlib.contextmanager
def small_clients(server: ServerProcess) -> Iterator[dict[str, Callable[[bytes], str]]]:
    """Each small-upload way, on a session or connection opened already."""
    auth = jws.BasicAuth(USER, PASSWORD)
    url = server.facts["session_url"]
    with (
        jws.connect(url, auth=auth, proxy="", timeout=WAIT) as deflated,
        jws.connect(url, auth=auth, proxy="", timeout=WAIT, compression=None) as plain,
    ):
        resource = session_resource(url, USER, PASSWORD)
        account = primary_account(resource)
        upload_url = urljoin(url, expand(resource["uploadUrl"], {"accountId": account}))
        keep = KeepAliveUpload(upload_url, basic(USER, PASSWORD))
        try:
            yield {
                "jmap": lambda data: deflated.upload(data, type=MEDIA_TYPE, via="jmap").blob_id,
                "jmap_plain": lambda data: plain.upload(data, type=MEDIA_TYPE, via="jmap").blob_id,
                "http": lambda data: plain.upload(data, type=MEDIA_TYPE, via="http").blob_id,
                "http_keep": keep.upload,
            }
        finally:
            keep.close()


def small_uploads(server: ServerProcess, cfg: Config, res: Results) -> None:
    """Blob/upload over the WebSocket against HTTP upload, by size (see above)."""
    url = server.facts["session_url"]
    resource = session_resource(url, USER, PASSWORD)
    account = primary_account(resource)
    blob_caps = resource["accounts"][account]["accountCapabilities"].get(BLOB_CAPABILITY)
    if blob_caps is None:
        res.notes.append("blobs: the reference server does not advertise RFC 9404: skipped")
        return
    limit = blob_caps.get("maxSizeBlobSet")
    max_request = resource["capabilities"][jws.CORE]["maxSizeRequest"]
    sizes = [s for s in cfg.blob_small_sizes if limit is None or s <= limit]
    res.extra["blobs.small"] = {
        "max_size_blob_set": limit,
        "max_size_request": max_request,
        "limit_now": jws_blobs.JMAP_UPLOAD_LIMIT,
        "sizes": sizes,
    }
    if len(sizes) < len(cfg.blob_small_sizes):
        res.notes.append(f"blobs: sizes over maxSizeBlobSet ({limit}) skipped")
    datas = {size: os.urandom(size) for size in sizes}
    with small_clients(server) as ways:
        for data in datas.values():  # the same bytes each time: the store keeps one
            for way in SMALL_MODES:
                for _ in range(SMALL_WARMUP):
                    ways[way](data)
        for rep in range(cfg.reps):
            p50: dict[int, dict[str, float]] = {}
            for size, data in datas.items():
                latencies: dict[str, list[float]] = {way: [] for way in SMALL_MODES}
                order = rotated(SMALL_MODES, rep)
                for i in range(cfg.blob_small_n):
                    for way in order[i % 2 :] + order[: i % 2]:
                        fn = ways[way]
                        t0 = time.perf_counter_ns()
                        fn(data)
                        latencies[way].append((time.perf_counter_ns() - t0) / 1000.0)
                p50[size] = {way: percentile(values, 50) for way, values in latencies.items()}
                for way, value in p50[size].items():
                    res.add(f"blobs.small.{size}.{way}.p50", value)
                for way in ("jmap", "jmap_plain", "http_keep"):
                    res.add(
                        f"ratio.blobs.small.{size}.{way}/http", p50[size][way] / p50[size]["http"]
                    )
            for way in ("jmap", "jmap_plain"):
                ratios = [p50[s][way] / p50[s]["http"] for s in sizes]
                res.add(f"blobs.small.crossover.{way}_kib", crossover(sizes, ratios) / KIB)
            print(
                f"  blobs small rep {rep + 1}/{cfg.reps}: p50 us jmap/jmap_plain/http "
                + ", ".join(
                    f"{s // KIB} KiB {fmt(p50[s]['jmap'])}/{fmt(p50[s]['jmap_plain'])}"
                    f"/{fmt(p50[s]['http'])}"
                    for s in sizes
                ),
                flush=True,
            )


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def cyrus_server(cfg: Config, res: Results) -> Iterator[BlobServer | None]:
    """A Cyrus whose upload limit takes the file, or None (with a note) without a build."""
    module = load_cyrus()
    prefix = module.find_prefix() if module is not None else None
    if module is None or prefix is None:
        res.notes.append(
            "blobs on Cyrus: skipped, no Cyrus build is cached (scripts/cyrus/build.sh)"
        )
        yield None
        return
    # jmap_max_size_upload is in KiB (imapd.conf(5); 1 GiB by default): twice the file.
    limit_kib = max(1024 * 1024, 2 * cfg.blob_size // KIB)
    config = {"jmap_max_size_upload": str(limit_kib)}
    with module.CyrusServer(prefix, config=config) as cyrus:
        pgid = int((cyrus.basedir / "run" / "master.pid").read_text().split()[0])
        server = BlobServer(
            key="cyrus",
            label=f"Cyrus {module.CYRUS_VERSION}",
            session_url=cyrus.http_url + "/jmap/",
            user=cyrus.user,
            password=cyrus.password,
            server_cpu=lambda: process_group_cpu(pgid),
        )
        res.extra["blobs.cyrus"] = {
            "version": module.CYRUS_VERSION,
            "jmap_max_size_upload_kib": limit_kib,
            "max_size_upload": server.max_size_upload,
        }
        yield server


# --------------------------------------------------------------------------- the workload


def measure(server: ServerProcess, cfg: Config, res: Results, with_jmaplib: bool) -> None:
    """Throughput on the reference server and on Cyrus; then small uploads (see above)."""
    curl = shutil.which("curl") is not None
    if not curl:
        res.notes.append("blobs: curl is not installed (apt-get install curl): no curl rows")
    res.extra["blobs"] = {"size": cfg.blob_size, "load_before": os.getloadavg()[0]}
    if curl:
        version = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False)
        res.extra["blobs"]["curl"] = " ".join(version.stdout.split()[:2])
    with tempfile.TemporaryDirectory(prefix="jmapws-bench-blobs-") as folder:
        source = Path(folder) / "source.bin"
        digest = make_file(source, cfg.blob_size)
        ref = BlobServer(
            key="ref",
            label="reference server",
            session_url=server.facts["session_url"],
            user=USER,
            password=PASSWORD,
            server_cpu=server.cpu,
        )
        res.extra["blobs"]["ref_max_size_upload"] = ref.max_size_upload
        throughput(ref, cfg, res, source=source, digest=digest, curl=curl)
        blob_id = res.extra.get("blobs.ref.blob_id")
        if blob_id:  # the server child keeps its blobs in memory: let this one go
            server.call("blobs.delete", ref.account, blob_id)
        small_uploads(server, cfg, res)
        with cyrus_server(cfg, res) as cyrus:
            if cyrus is not None:
                throughput(cyrus, cfg, res, source=source, digest=digest, curl=curl)
    res.extra["blobs"]["load_after"] = os.getloadavg()[0]
