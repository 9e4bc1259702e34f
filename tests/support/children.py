"""The ``jmapws-sync`` command in a child process that hears the tests' signals.

A process started with SIGINT ignored (``nohup``, a background job of a non-interactive
shell, ``trap "" INT``) hands SIG_IGN down to its children across ``exec``, and Python
installs its KeyboardInterrupt handler only when it finds SIGINT at its default: a child
started the plain way (``python -m jmapws_sync``) would never see the test's
``proc.send_signal(signal.SIGINT)``. :func:`cli_argv` starts the command through a short
``-c`` launcher that first puts SIGINT back on Python's handler and SIGTERM on its
default, and unblocks both (a blocked mask is inherited too), then runs
:func:`jmapws_sync.cli.main`. No ``preexec_fn``: it is unsafe with threads, which the
tests have.
"""

from __future__ import annotations

import sys

__all__ = ["cli_argv"]

_LAUNCHER = """\
import signal, sys
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from jmapws_sync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_argv(*args: str) -> list[str]:
    """The argv that runs ``jmapws-sync ARGS`` (as ``python -m jmapws_sync ARGS`` does) in
    this interpreter, with SIGINT and SIGTERM at their defaults however this process was
    started."""
    return [sys.executable, "-c", _LAUNCHER, *args]
