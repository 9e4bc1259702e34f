"""Run a private Cyrus IMAP 3.6 server (IMAP, HTTP, JMAP, JMAP over WebSocket) for interop tests.

The server is the one ``scripts/cyrus/build.sh`` builds and caches; :func:`find_prefix` finds it.
:class:`CyrusServer` runs it on 127.0.0.1 on free ports, as an unprivileged user, with all its
configuration, data, sockets, locks and logs in one temporary directory::

    prefix = find_prefix()
    with CyrusServer(prefix) as cyrus:
        cyrus.append_message("test", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        ...  # JMAP at cyrus.http_url + "/jmap/", user "test", password "test"

Cyrus logs only through syslog(3) and a test machine runs no syslog daemon, so the build installs
Cyrus's own test-suite shim (``lib/jmapws-syslog.so``) which, preloaded, appends every syslog
line to :attr:`CyrusServer.syslog_path`; master's own stdout and stderr go to
:attr:`CyrusServer.master_log_path`. :meth:`CyrusServer.log_tail` returns the end of both.

Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

__all__ = [
    "CYRUS_VERSION",
    "STAMP_NAME",
    "SYSTEM_USER",
    "CyrusError",
    "CyrusServer",
    "default_prefix",
    "find_prefix",
]

CYRUS_VERSION = "3.6.1"
#: The file ``scripts/cyrus/build.sh`` writes last, in the prefix, once the install is complete.
STAMP_NAME = ".jmapws-cyrus-stamp"
#: The system user Cyrus runs as when the tests run as root (Cyrus will not run as root).
SYSTEM_USER = "jmapws-cyrus"
#: The SASL realm the users are created in; it is also Cyrus's ``servername``.
REALM = "localhost"

_SYSLOG_SHIM = "lib/jmapws-syslog.so"
_RUNTIME_DIRS = ("bin", "lib", "libexec", "sbin")


class CyrusError(RuntimeError):
    """Cyrus could not be started, or stopped, or set up."""


class _PortTaken(CyrusError):
    """master could not bind a chosen port."""


def default_prefix() -> Path:
    """The install prefix ``scripts/cyrus/build.sh`` uses, from the same environment variables.

    ``$JMAPWS_CYRUS_PREFIX`` if set, else
    ``${XDG_CACHE_HOME:-$HOME/.cache}/jmapws-sync/cyrus-3.6.1``.
    """
    explicit = os.environ.get("JMAPWS_CYRUS_PREFIX")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "jmapws-sync" / f"cyrus-{CYRUS_VERSION}"


def find_prefix() -> Path | None:
    """The cached install prefix if ``build.sh`` finished there (its stamp exists), else None."""
    prefix = default_prefix()
    if (prefix / STAMP_NAME).is_file() and (prefix / "libexec" / "master").is_file():
        return prefix
    return None


def _free_port(host: str) -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def message(subject: str) -> bytes:
    """A small RFC 5322 message with a unique Message-ID, for appending over IMAP."""
    return (
        f"From: Alice <alice@example.com>\r\nTo: test@localhost\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@example.com>\r\nDate: Wed, 02 Dec 2026 08:00:00 +0000\r\n"
        f"\r\nHello from {subject}.\r\n"
    ).encode()


class CyrusServer:
    """A Cyrus IMAP server on 127.0.0.1, on free ports, with its state in a temporary directory.

    The ports and the temporary directory are chosen at the first :meth:`start` and kept by
    :meth:`stop` and :meth:`restart`, so a restarted server has the same URL and the same
    mailboxes. :meth:`close` (or leaving the ``with`` block) stops it and removes the directory.

    Users are created in a private sasldb, each with an INBOX (Cyrus 3.6 answers 500 on
    ``/jmap`` for a user without one). The admin user may log in over IMAP but has no mailbox.

    Attributes (valid after :meth:`start`): :attr:`http_url` (``http://127.0.0.1:PORT``),
    :attr:`http_port`, :attr:`imap_port`; always: :attr:`users` (name to password),
    :attr:`user` and :attr:`password` (the first user), :attr:`admin` and
    :attr:`admin_password`.
    """

    def __init__(
        self,
        prefix: str | os.PathLike[str],
        *,
        users: Mapping[str, str] | None = None,
        admin: str = "admin",
        admin_password: str = "admin",
        host: str = "127.0.0.1",
        pushpoll: str = "1s",
        config: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        keep_dir: bool = False,
    ) -> None:
        """Prepare (not start) a server.

        ``prefix`` is the install prefix (see :func:`find_prefix`); ``users`` maps user names
        to passwords (default ``{"test": "test"}``); ``pushpoll`` is Cyrus's ``jmap_pushpoll``
        (how often it looks for changes to push; Cyrus's default is 60 s); ``config`` adds or
        overrides imapd.conf options; ``keep_dir`` keeps the temporary directory on close.
        """
        self.prefix = Path(prefix)
        if not (self.prefix / "libexec" / "master").is_file():
            raise CyrusError(f"no Cyrus install in {self.prefix} (run scripts/cyrus/build.sh)")
        self.users: dict[str, str] = dict(users) if users is not None else {"test": "test"}
        if not self.users:
            raise ValueError("at least one user is needed")
        if admin in self.users:
            raise ValueError(f"the admin {admin!r} cannot also be a user")
        self.user, self.password = next(iter(self.users.items()))
        self.admin = admin
        self.admin_password = admin_password
        self.host = host
        self.realm = REALM
        self.pushpoll = pushpoll
        self.extra_config: dict[str, str] = dict(config or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.keep_dir = keep_dir

        self.basedir: Path | None = None
        self.imap_port = 0
        self.http_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_prefix = self.prefix
        self._run_as: pwd.struct_passwd | None = None
        self._provisioned = False
        self._syslog_offset = 0

    # --- public API ----------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """The base HTTP URL, e.g. ``http://127.0.0.1:PORT`` (no trailing slash)."""
        self._need_setup()
        return f"http://{self.host}:{self.http_port}"

    @property
    def syslog_path(self) -> Path:
        """The file Cyrus's syslog lines are appended to."""
        return self._need_setup() / "syslog"

    @property
    def master_log_path(self) -> Path:
        """The file master's stdout and stderr go to."""
        return self._need_setup() / "master.log"

    @property
    def running(self) -> bool:
        """Whether master is running."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start Cyrus and wait until both IMAP and HTTP answer.

        Raises :class:`CyrusError`, with the end of Cyrus's logs, if it is not ready within
        ``start_timeout`` seconds or master exits.
        """
        if self.running:
            return
        if self.basedir is not None:
            self._start()
            return
        self._setup()
        # Another process may take a chosen port before master binds it: choose again.
        for attempt in range(3):
            try:
                self._start()
            except _PortTaken:
                if attempt == 2:
                    raise
                self._choose_ports()
                self._write_cyrus_conf()
            else:
                return

    def _start(self) -> None:
        assert self.basedir is not None
        try:
            self._syslog_offset = self.syslog_path.stat().st_size
        except FileNotFoundError:
            self._syslog_offset = 0
        (self.basedir / "run" / "master.pid").unlink(missing_ok=True)
        env = self._env()
        argv = [
            str(self._run_prefix / "libexec" / "master"),
            "-D",  # keep stdout/stderr: they go to master.log
            "-C",
            str(self._imapd_conf),
            "-M",
            str(self._cyrus_conf),
            "-p",
            str(self.basedir / "run" / "master.pid"),
        ]
        with open(self.master_log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.basedir,
                start_new_session=True,  # master signals its own process group on shutdown
                user=self._uid,
                group=self._gid,
                extra_groups=self._extra_groups,
            )
        try:
            self._wait_ready()
            if not self._provisioned:
                self._provision()
                self._provisioned = True
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop master and every Cyrus process; kill them if they do not end in time."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: master leads its own process group
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)
        # Children that outlived master (they share its process group) go too.
        deadline = time.monotonic() + self.stop_timeout
        while True:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                break
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop and start again, on the same ports and with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the temporary directory unless ``keep_dir``."""
        self.stop()
        if self.basedir is not None and not self.keep_dir:
            shutil.rmtree(self.basedir, ignore_errors=True)
            self.basedir = None
            self._provisioned = False

    def __enter__(self) -> CyrusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the syslog file and of master's output, for error messages."""
        if self.basedir is None:
            return ""
        parts = []
        for path in (self.syslog_path, self.master_log_path):
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def imap(self, user: str | None = None, *, timeout: float = 10.0) -> Iterator[imaplib.IMAP4]:
        """An IMAP connection logged in (LOGIN) as ``user`` (default :attr:`user`; or the admin)."""
        name = user or self.user
        password = self.admin_password if name == self.admin else self.users[name]
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=timeout)
        try:
            conn.login(name, password)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def append_message(
        self,
        user: str,
        raw: bytes,
        mailbox: str = "INBOX",
        *,
        flags: str | None = None,
        index: bool = False,
        timeout: float = 10.0,
    ) -> int | None:
        """APPEND ``raw`` (an RFC 5322 message) to ``user``'s ``mailbox`` over IMAP, as that user.

        Bare LF line ends are sent as CRLF. Returns the new message's UID (from APPENDUID) or
        None if the server did not say. ``flags`` is an IMAP flag list, e.g. ``"(\\Seen)"``.
        ``index=True`` then runs :meth:`index` for the user, so that ``Email/query`` text
        filters (subject, from, text...) find the message.
        """
        data = re.sub(rb"\r?\n", b"\r\n", raw)
        with self.imap(user, timeout=timeout) as conn:
            typ, resp = conn.append(mailbox, flags, None, data)
            if typ != "OK":
                raise CyrusError(f"APPEND to {user}'s {mailbox} failed: {typ} {resp!r}")
        text = b" ".join(r for r in resp if isinstance(r, bytes)).decode(errors="replace")
        match = re.search(r"APPENDUID \d+ (\d+)", text)
        if index:
            self.index(user, timeout=timeout)
        return int(match.group(1)) if match else None

    def index(self, user: str | None = None, *, timeout: float = 30.0) -> None:
        """Run ``squatter`` (incremental) on ``user``'s mailboxes (default: every mailbox).

        Cyrus 3.6 answers ``Email/query`` text filters (subject, from, text...) from its
        Xapian index only, and nothing indexes new mail here unless asked: a filter on an
        unindexed message finds nothing. Filterless queries and ``Email/get`` need no index.
        """
        argv = [str(self._run_prefix / "sbin" / "squatter"), "-C", str(self._imapd_conf), "-i"]
        if user is not None:
            argv += ["-u", user]
        result = subprocess.run(
            argv,
            capture_output=True,
            env=self._env(),
            cwd=self._need_setup(),
            check=False,
            timeout=timeout,
            user=self._uid,
            group=self._gid,
            extra_groups=self._extra_groups,
        )
        if result.returncode != 0:
            raise CyrusError(
                f"squatter failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}\n{self.log_tail()}"
            )

    def create_mailbox(self, user: str, name: str, *, timeout: float = 10.0) -> None:
        """Create mailbox ``name`` (IMAP name, '.'-separated) for ``user``, as that user."""
        with self.imap(user, timeout=timeout) as conn:
            typ, resp = conn.create(name)
            if typ != "OK":
                raise CyrusError(f"CREATE {name} for {user} failed: {typ} {resp!r}")

    # --- setup -------------------------------------------------------------------------------

    def _need_setup(self) -> Path:
        if self.basedir is None:
            raise CyrusError("the server has not been started")
        return self.basedir

    @property
    def _imapd_conf(self) -> Path:
        return self._need_setup() / "conf" / "imapd.conf"

    @property
    def _cyrus_conf(self) -> Path:
        return self._need_setup() / "conf" / "cyrus.conf"

    def _env(self) -> dict[str, str]:
        """The environment of every Cyrus process: syslog shim, libraries, a private HOME."""
        base = self._need_setup()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),
            "LANG": "C.UTF-8",
            "CASSANDANE_SYSLOG_FNAME": str(base / "syslog"),
        }
        shim = self._run_prefix / _SYSLOG_SHIM
        if shim.is_file():
            env["LD_PRELOAD"] = str(shim)
        # The binaries' RUNPATH names the build's prefix, which a private copy is not.
        env["LD_LIBRARY_PATH"] = str(self._run_prefix / "lib")
        return env

    # Popen's user, group and extra_groups: drop root for the Cyrus user (None: keep as is).
    @property
    def _uid(self) -> int | None:
        return None if self._run_as is None else self._run_as.pw_uid

    @property
    def _gid(self) -> int | None:
        return None if self._run_as is None else self._run_as.pw_gid

    @property
    def _extra_groups(self) -> list[int] | None:
        return None if self._run_as is None else []

    def _setup(self) -> None:
        """Choose the user, the ports and the directory; write the configuration and sasldb."""
        if os.geteuid() == 0:
            self._run_as = self._ensure_system_user()
            run_user = self._run_as.pw_name
        else:
            try:
                run_user = pwd.getpwuid(os.getuid()).pw_name
            except KeyError as exc:
                raise CyrusError(f"uid {os.getuid()} has no passwd entry: Cyrus needs one") from exc

        basedir = Path(tempfile.mkdtemp(prefix="jmapws-cyrus-"))
        self.basedir = basedir
        try:
            if self._run_as is not None:
                os.chown(basedir, self._run_as.pw_uid, self._run_as.pw_gid)
            self._check_paths()
            for sub in (
                "conf/db",
                "conf/sieve",
                "conf/socket",
                "conf/proc",
                "conf/log",
                "data",
                "search",
                "lock",
                "proc",
                "run",
                "socket",
                "tmp",
            ):
                (basedir / sub).mkdir(parents=True, exist_ok=True)
            self._run_prefix = self._reachable_prefix()
            self._choose_ports()
            self._write_imapd_conf(run_user)
            self._write_cyrus_conf()
            self._write_sasldb()
            if self._run_as is not None:
                self._chown_tree(basedir)
        except BaseException:
            shutil.rmtree(basedir, ignore_errors=True)
            self.basedir = None
            raise

    def _choose_ports(self) -> None:
        self.imap_port = _free_port(self.host)
        self.http_port = _free_port(self.host)
        while self.http_port == self.imap_port:
            self.http_port = _free_port(self.host)

    def _check_paths(self) -> None:
        for path in (self.prefix, self._need_setup()):
            if re.search(r'[\s"]', str(path)):
                raise CyrusError(f"cyrus.conf cannot quote the path {str(path)!r}")

    @staticmethod
    def _ensure_system_user() -> pwd.struct_passwd:
        """The :data:`SYSTEM_USER` account, created (useradd --system) if missing."""
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            capture_output=True,
            check=False,
            timeout=30,
        )
        # A concurrent run may have created it meanwhile (exit code 9: "already exists").
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError as exc:
            raise CyrusError(
                f"useradd {SYSTEM_USER} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            ) from exc

    def _reachable_prefix(self) -> Path:
        """The prefix, or a private copy of it if the Cyrus user cannot reach it.

        A build cached under root's home (mode 0700) cannot be executed by the unprivileged
        Cyrus user: then bin, lib, libexec and sbin (some 20 MB) are copied into the directory.
        """
        if self._run_as is None or self._can_run(self.prefix):
            return self.prefix
        copy = self._need_setup() / "cyrus"
        for sub in _RUNTIME_DIRS:
            if (self.prefix / sub).is_dir():
                shutil.copytree(self.prefix / sub, copy / sub, symlinks=True)
        copy.chmod(0o755)
        if not self._can_run(copy, ld_library_path=copy / "lib"):
            raise CyrusError(f"the Cyrus user cannot run {copy}/libexec/master")
        return copy

    def _can_run(self, prefix: Path, ld_library_path: Path | None = None) -> bool:
        env = {"PATH": "/usr/bin:/bin"}
        if ld_library_path is not None:
            env["LD_LIBRARY_PATH"] = str(ld_library_path)
        try:
            result = subprocess.run(
                [str(prefix / "libexec" / "master"), "-V"],
                capture_output=True,
                env=env,
                cwd="/",
                check=False,
                timeout=30,
                user=self._uid,
                group=self._gid,
                extra_groups=self._extra_groups,
            )
        except OSError:
            return False
        return result.returncode == 0

    def _chown_tree(self, root: Path) -> None:
        assert self._run_as is not None
        uid, gid = self._run_as.pw_uid, self._run_as.pw_gid
        os.chown(root, uid, gid)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, gid)

    def _config(self, run_user: str) -> dict[str, str]:
        base = self._need_setup()
        config = {
            "configdirectory": f"{base}/conf",
            "defaultpartition": "default",
            "partition-default": f"{base}/data",
            "sievedir": f"{base}/conf/sieve",
            "temp_path": f"{base}/tmp",
            "mboxname_lockpath": f"{base}/lock",
            "proc_path": f"{base}/proc",
            "lmtpsocket": f"{base}/socket/lmtp",
            "idlesocket": f"{base}/socket/idle",
            "notifysocket": f"{base}/socket/notify",
            "master_bind_errors_fatal": "yes",  # a port taken meanwhile: fail, choose again
            "servername": self.realm,
            "cyrus_user": run_user,
            "syslog_prefix": "jmapws-cyrus",
            "admins": self.admin,
            "virtdomains": "no",
            "unixhierarchysep": "no",
            "altnamespace": "no",
            "allowplaintext": "yes",
            "sasl_pwcheck_method": "auxprop",
            "sasl_auxprop_plugin": "sasldb",
            "sasl_sasldb_path": f"{base}/sasldb2",
            "sasl_mech_list": "PLAIN LOGIN",
            "httpmodules": "jmap",
            "jmap_pushpoll": self.pushpoll,
            "conversations": "yes",
            "conversations_db": "twoskip",
            "search_engine": "xapian",
            "search_index_headers": "no",
            "defaultsearchtier": "t1",
            "t1searchpartition-default": f"{base}/search",
            "delete_mode": "immediate",
            "expunge_mode": "immediate",
        }
        config.update(self.extra_config)
        return config

    def _write_imapd_conf(self, run_user: str) -> None:
        lines = [f"{key}: {value}" for key, value in self._config(run_user).items()]
        self._imapd_conf.write_text("\n".join(lines) + "\n")

    def _write_cyrus_conf(self) -> None:
        libexec = self._run_prefix / "libexec"
        sbin = self._run_prefix / "sbin"
        conf = self._imapd_conf
        self._cyrus_conf.write_text(
            "START {\n"
            f'  recover cmd="{sbin}/ctl_cyrusdb -C {conf} -r"\n'
            "}\n"
            "SERVICES {\n"
            f'  imap cmd="{libexec}/imapd -C {conf}" listen="{self.host}:{self.imap_port}"'
            " prefork=0\n"
            f'  http cmd="{libexec}/httpd -C {conf}" listen="{self.host}:{self.http_port}"'
            " prefork=0\n"
            "}\n"
            "EVENTS {\n"
            "}\n"
        )

    def _write_sasldb(self) -> None:
        saslpasswd2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
        if not os.path.exists(saslpasswd2):
            raise CyrusError("saslpasswd2 not found (Debian package sasl2-bin)")
        sasldb = self._need_setup() / "sasldb2"
        for name, password in [(self.admin, self.admin_password), *self.users.items()]:
            result = subprocess.run(
                [saslpasswd2, "-p", "-c", "-f", str(sasldb), "-u", self.realm, name],
                input=password.encode(),
                capture_output=True,
                check=False,
                timeout=30,
            )
            if result.returncode != 0:
                raise CyrusError(
                    f"saslpasswd2 for {name} failed ({result.returncode}): "
                    f"{result.stderr.decode(errors='replace').strip()}"
                )
        sasldb.chmod(0o600)

    # --- running -----------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        """Poll until imapd greets and httpd answers HTTP, or fail with the logs' tail."""
        deadline = time.monotonic() + self.start_timeout
        imap_ok = http_ok = False
        last_error = "not tried"
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                if b"unable to bind" in self._new_syslog():
                    raise _PortTaken(f"Cyrus could not bind its ports\n{self.log_tail()}")
                raise CyrusError(f"Cyrus master exited ({code}) during start\n{self.log_tail()}")
            try:
                if not imap_ok:
                    imap_ok = self._imap_answers()
                if imap_ok and not http_ok:
                    http_ok = self._http_answers()
            except OSError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if imap_ok and http_ok:
                return
            if time.monotonic() > deadline:
                raise CyrusError(
                    f"Cyrus not ready within {self.start_timeout} s "
                    f"(imap {imap_ok}, http {http_ok}; last: {last_error})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _new_syslog(self) -> bytes:
        """What Cyrus logged since the last start."""
        try:
            with open(self.syslog_path, "rb") as log:
                log.seek(self._syslog_offset)
                return log.read()
        except FileNotFoundError:
            return b""

    def _imap_answers(self) -> bool:
        with socket.create_connection((self.host, self.imap_port), timeout=2) as sock:
            greeting = sock.recv(512)
        return greeting.startswith(b"* OK")

    def _http_answers(self) -> bool:
        # Any HTTP status line from httpd will do: this path needs authentication.
        request = urllib.request.Request(f"{self.http_url}/jmap/", method="GET")
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return bool(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code in (401, 403, 404)

    def _provision(self) -> None:
        """Create every user's INBOX (as the admin, over IMAP)."""
        with self.imap(self.admin) as conn:
            for name in self.users:
                typ, resp = conn.create(f"user.{name}")
                if typ != "OK" and b"exists" not in b" ".join(
                    r for r in resp if isinstance(r, bytes)
                ):
                    raise CyrusError(f"CREATE user.{name} failed: {typ} {resp!r}")
