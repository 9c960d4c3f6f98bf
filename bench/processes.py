"""The servers a benchmark run owns: one private redis-server and the apps under test.

Everything listens on 127.0.0.1 on a free port and is stopped when the run ends,
so the suite never touches a Redis or a server it did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

# The same server settings for every app, so only the application code differs.
UVICORN_FLAGS = (
    "--loop", "uvloop",
    "--http", "httptools",
    "--log-level", "warning",
    "--no-access-log",
)  # fmt: skip
# R8 runs the same app on Granian, with the same event loop and no access log either.
GRANIAN_FLAGS = (
    "--interface", "asgi",
    "--loop", "uvloop",
    "--log-level", "warning",
    "--no-access-log",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM first, so uvicorn runs the lifespan shutdown; SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class RedisServer:
    """A throw-away redis-server: no persistence, our own port and directory."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def command(self) -> str:
        return " ".join(arg if arg else '""' for arg in self.args)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5)
            self.process = None


class RedisClusterServer:
    """A throw-away 3-primary Redis Cluster on this machine (no replicas, no persistence).

    Each node listens on its port and on port + 10000 (the cluster bus), so both
    must be free; `redis-cli --cluster create` hands each node a third of the slots.
    """

    def __init__(self, binary: str, workdir: Path, primaries: int = 3) -> None:
        self.binary = binary
        self.dir = workdir / "cluster"
        self.dir.mkdir(exist_ok=True)
        self.ports: list[int] = []
        while len(self.ports) < primaries:
            port = free_port()
            if port < 55535 and port not in self.ports and _port_free(port + 10000):
                self.ports.append(port)
        self.processes: list[subprocess.Popen[bytes]] = []

    def node_args(self, port: int) -> list[str]:
        return [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def command(self) -> str:
        node = " ".join(arg if arg else '""' for arg in self.node_args(self.ports[0]))
        return f"{node} (×{len(self.ports)}, then redis-cli --cluster create)"

    def start(self, timeout: float = 30.0) -> None:
        for port in self.ports:
            self.processes.append(
                subprocess.Popen(
                    self.node_args(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            wait_for_port(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while not all(self._ok(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench cluster never reached cluster_state:ok")
            time.sleep(0.1)

    @staticmethod
    def _ok(port: int) -> bool:
        info = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True
        ).stdout
        return "cluster_state:ok" in info

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process, timeout=5)
        self.processes = []


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class UvicornApp:
    """One app under test: `python -m uvicorn MODULE:app` with the shared flags
    (or `python -m granian`, when `server` says so)."""

    name: str
    target: str
    env: Mapping[str, str] = field(default_factory=dict)
    workers: int = 1
    server: str = "uvicorn"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def args(self) -> list[str]:
        if self.server == "granian":
            return [
                sys.executable, "-m", "granian", *GRANIAN_FLAGS,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers), self.target,
            ]  # fmt: skip
        return [
            sys.executable, "-m", "uvicorn", self.target,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), *UVICORN_FLAGS,
        ]  # fmt: skip

    def start(self, logdir: Path) -> None:
        self.log_path = logdir / f"{self.name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def restart(self) -> None:
        """Kill and start again on the same port: a graceful stop would wait for
        every request still queued inside the server."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
        assert self.log_path is not None
        self.start(self.log_path.parent)
        self.wait_until_ready()


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-"))


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) used so far by a process and its children, e.g. the
    workers of `uvicorn --workers 2`. Linux only (/proc); None elsewhere."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        # after the ")" of the name: state ppid ... utime is the 12th, stime the 13th
        own, parent = int(stat.parent.name), int(fields[1])
        if own == pid or parent == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total
