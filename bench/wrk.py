"""Run wrk once and read its results.

wrk does the HTTP load; `measure.lua` makes it print one JSON line at the end
(requests, latency percentiles, errors, and optionally a count of one response
header's values), so nothing here parses wrk's human-readable summary.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).with_name("measure.lua")
MARKER = "BENCH_JSON "

INSTALL_HINT = """\
wrk is not installed. Install it, then run `make bench` again:
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y wrk
  macOS:          brew install wrk"""


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Load:
    """What one wrk run sends: `path` may hold "{n}", a new number per request."""

    path: str
    connections: int = 64
    threads: int = 2
    seconds: int = 5
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    count_header: str | None = None
    timeout_seconds: int = 10

    def with_seconds(self, seconds: int) -> Load:
        return Load(
            path=self.path,
            connections=self.connections,
            threads=min(self.threads, self.connections),
            seconds=seconds,
            method=self.method,
            headers=self.headers,
            body=self.body,
            count_header=self.count_header,
            timeout_seconds=self.timeout_seconds,
        )


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: Mapping[str, int]
    header_counts: Mapping[str, int]
    command: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        """Failed requests: socket errors, timeouts and 4xx/5xx answers."""
        return sum(self.errors.values())


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    binary = wrk_binary()
    if binary is None:
        return "not installed"
    # `wrk -v` prints "wrk 4.2.0 [epoll] Copyright (C) ..." and exits with status 1
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    words = (out.stdout or out.stderr).split()
    return words[1] if len(words) > 1 else "unknown"


def wrk_command(
    base_url: str, load: Load, *, seq_start: int = 0
) -> tuple[list[str], dict[str, str]]:
    """The argument list and the extra environment for one wrk run."""
    args = [
        "wrk",
        "-t", str(min(load.threads, load.connections)),
        "-c", str(load.connections),
        "-d", f"{load.seconds}s",
        "--timeout", f"{load.timeout_seconds}s",
        "-s", str(SCRIPT),
    ]  # fmt: skip
    for name, value in load.headers.items():
        args += ["-H", f"{name}: {value}"]
    env: dict[str, str] = {}
    if load.method != "GET":
        env["BENCH_METHOD"] = load.method
    if load.body is not None:
        env["BENCH_BODY"] = load.body
    if load.count_header:
        env["BENCH_COUNT_HEADER"] = load.count_header.lower()
    if "{n}" in load.path:
        env["BENCH_PATH"] = load.path
        env["BENCH_SEQ_START"] = str(seq_start)
        args.append(base_url + load.path.replace("{n}", "0"))
    else:
        args.append(base_url + load.path)
    return args, env


def printable_command(args: list[str], env: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """The command as a shell line, with secrets (tokens, passwords) replaced by names."""
    root = str(SCRIPT.parent.parent) + os.sep
    words = [f"{name}={shlex.quote(value)}" for name, value in env.items()]
    words += [shlex.quote(arg.replace(root, "")) for arg in args]
    line = " ".join(words)
    for secret, placeholder in secrets.items():
        line = line.replace(secret, placeholder)
    return line


def run_wrk(
    base_url: str,
    load: Load,
    *,
    seq_start: int = 0,
    secrets: Mapping[str, str] | None = None,
) -> WrkResult:
    args, extra_env = wrk_command(base_url, load, seq_start=seq_start)
    binary = wrk_binary()
    if binary is None:
        raise WrkError(INSTALL_HINT)
    args[0] = binary
    done = subprocess.run(
        args,
        env={**os.environ, **extra_env},
        capture_output=True,
        text=True,
        timeout=load.seconds + load.timeout_seconds + 30,
        check=False,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise WrkError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line[len(MARKER) :])
    latency = data["latency_us"]
    args[0] = "wrk"
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        errors={k: int(v) for k, v in data["errors"].items() if v},
        header_counts={k: int(v) for k, v in data["header_counts"].items()},
        command=printable_command(args, extra_env, secrets or {}),
    )
