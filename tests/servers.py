"""Real servers for the tests: a private redis-server, a throw-away PostgreSQL
database, and uvicorn processes.

Nothing here touches data it did not create: a private Redis is ours alone, and
a PostgreSQL database is created with a random name and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


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


class RedisServer:
    """A redis-server of our own on a free port, which a test may kill, pause or restart.

    It keeps nothing on disk unless `snapshot()` is called, so a restart comes back
    empty, or with the data of the last snapshot (what a real Redis restored from
    an RDB file does).
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--dbfilename", "dump.rdb",
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def snapshot(self) -> None:
        """Write an RDB file now, so a restart brings today's data back."""
        subprocess.run(["redis-cli", "-p", str(self.port), "save"], check=True, capture_output=True)

    def kill(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers, like a hung server."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_step(module: str, env: Mapping[str, str] | None = None) -> str:
    """Run a day step as a learner does, `python -m module`; its output, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    binary = redis_binary()
    if binary is None:
        raise FileNotFoundError("redis-server is not installed")
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.close()


# PostgreSQL ------------------------------------------------------------------

ADMIN_DSN = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _psql(dsn: str, sql: str) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # A thread of its own, so this works even when the caller is inside a running event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@contextlib.contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """Create a database with a random name on the local server, and drop it afterwards.

    Yields a SQLAlchemy URL (`postgresql+asyncpg://...`).
    """
    name = f"course_test_{uuid.uuid4().hex[:12]}"
    _psql(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        _psql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# uvicorn ---------------------------------------------------------------------


class Uvicorn:
    """`python -m uvicorn APP` as its own process(es), the way a user runs it."""

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.port = free_port()
        self.workers = workers
        self.env = {**os.environ, **(env or {})}
        self.extra_args = extra_args
        self.log = tempfile.NamedTemporaryFile(prefix="uvicorn-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        args = [
            sys.executable, "-m", "uvicorn", self.app,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.wait_until_ready(timeout)

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited early:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"uvicorn not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def __enter__(self) -> Uvicorn:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)
