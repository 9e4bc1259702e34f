"""The machine and the packages a run was made on, for the report's "Machine and run"."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: The packages whose versions the report lists.
PACKAGES = (
    "jmapws-sync",
    "websocket-client",
    "websockets",
    "aiohttp",
    "cattrs",
    "attrs",
    "orjson",
    "jmaplib",
    "httpx-ws",
    "matplotlib",
)


def machine_facts() -> dict[str, str]:
    """Python, OS, CPU model, usable cores and memory."""
    facts = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "nproc": str(len(os.sched_getaffinity(0))),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ]
        facts["cpu"] = models[0] if models else "unknown"
    except OSError:
        facts["cpu"] = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        facts["memory"] = "unknown"
    return facts


def package_versions() -> dict[str, str]:
    """The installed version of each of :data:`PACKAGES` (or "not installed")."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
