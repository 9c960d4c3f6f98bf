"""What a result depends on besides the code: the machine and the versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .wrk import wrk_version

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "redis",
    "hiredis",
    "fastapi-limiter",
    "pyrate-limiter",
    "fastapi-cache2",
    "slowapi",
    "limits",
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
        )
        if out.stdout.strip():
            return out.stdout.strip()
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


def os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return f"{line.split('=', 1)[1].strip().strip(chr(34))} ({platform.platform()})"
    return platform.platform()


def machine() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "Cores": str(os.cpu_count()),
        "RAM": f"{ram_gib():.1f} GiB",
        "OS": os_name(),
    }


def redis_server_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    # "Redis server v=7.0.15 sha=... malloc=jemalloc-5.3.0 bits=64 build=..."
    for word in out.stdout.split():
        if word.startswith("v="):
            return word[2:]
    return out.stdout.strip()


def versions() -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["redis-server"] = redis_server_version()
    found["wrk"] = wrk_version()
    return found


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)
