"""Real servers for the tests: a private redis-server (or Redis Cluster, or Sentinel
group), a throw-away PostgreSQL database, and uvicorn processes.

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
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

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
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "save"], check=True, capture_output=True, timeout=10
        )

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


# Redis Cluster and Sentinel --------------------------------------------------

# A cluster node also listens on its port + 10000 (the cluster bus), which must
# stay a valid port too.
CLUSTER_BUS_OFFSET = 10000
CLUSTER_SLOTS = 16384


def redis_cli_binary() -> str | None:
    return shutil.which("redis-cli")


def _require(binary: str | None, name: str) -> str:
    if binary is None:
        # The same exception as a missing redis-server, so conftest turns it into missing().
        raise FileNotFoundError(f"{name} is not installed")
    return binary


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_free_port(taken: Collection[int] = ()) -> int:
    """A free port P below 55535 whose bus port P + 10000 is free as well.

    `taken` holds ports already promised to other nodes of the same cluster
    (their own and their bus ports), which are still free until those nodes start.
    """
    for _ in range(200):
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if bus < 65536 and port not in taken and bus not in taken and _port_is_free(bus):
            return port
    raise RuntimeError("found no free port P with P + 10000 free as well")


class _Node:
    """One redis-server process of a cluster or sentinel group, logging to a file."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.args = args
        with log.open("ab") as out:
            self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT
            )

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Until this very process answers on its port.

        Asking for its process id tells our server from another one that took the
        port first; ours then exits at once ("Address already in use").
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited:\n{self.output()}")
            with contextlib.suppress(redis.RedisError, OSError), self.client(0.5) as client:
                info = client.info("server")
                if info.get("process_id") == self.process.pid:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} not up after {timeout} s")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


def _role(host: str, port: int) -> str | None:
    """What a server says it is (master, slave, sentinel), or None when it does not answer."""
    with (
        contextlib.suppress(redis.RedisError, OSError),
        redis.Redis(host=host, port=port, socket_timeout=0.5, socket_connect_timeout=0.5) as c,
    ):
        role = c.execute_command("ROLE")
        name = role[0]
        return name.decode() if isinstance(name, bytes) else str(name)
    return None


def _wait(check: Callable[[], bool], what: str, timeout: float, interval: float = 0.05) -> None:
    """Poll `check` until it is true; a check that raises counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(interval)


class RedisClusterServers:
    """A Redis Cluster of our own: `primaries` nodes, no replicas, all slots assigned.

    Built with `redis-cli --cluster create`, the way an operator creates one.
    """

    def __init__(self, binary: str, cli: str, primaries: int = 3) -> None:
        self.binary = binary
        self.cli = cli
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-test-"))
        self.nodes: list[_Node] = []
        self.count = primaries

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def _node_args(self, port: int) -> list[str]:
        return [
            self.binary,
            "--port", str(port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
            "--cluster-node-timeout", "2000",
            "--save", "",
            "--appendonly", "no",
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
        ]  # fmt: skip

    def _launch(self, taken: set[int]) -> _Node:
        port = cluster_free_port(taken)
        taken.update({port, port + CLUSTER_BUS_OFFSET})
        return _Node(self._node_args(port), port, self.dir / f"node-{port}.log")

    def start(self, timeout: float = 30.0) -> None:
        taken: set[int] = set()
        # Launch all, then wait for all: the nodes start in parallel.
        self.nodes = [self._launch(taken) for _ in range(self.count)]
        for i, node in enumerate(self.nodes):
            for attempt in range(3):
                try:
                    node.wait_until_ready()
                    break
                except RuntimeError:
                    # Most likely another process took a port between our check and the
                    # server's bind: try another one, a few times.
                    node.kill()
                    if attempt == 2:
                        raise
                    node = self.nodes[i] = self._launch(taken)
        create = [
            self.cli, "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(
            create,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        _wait(self._is_ok, f"cluster on ports {self.ports} ok with all slots", timeout)

    def _is_ok(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                info = client.cluster("INFO")
            if not (
                info.get("cluster_state") == "ok"
                and int(info.get("cluster_slots_assigned", 0)) == CLUSTER_SLOTS
                and int(info.get("cluster_known_nodes", 0)) == len(self.nodes)
            ):
                return False
        return True

    def restart_node(self, port: int, timeout: float = 30.0) -> None:
        """Kill one node and start it again: it keeps its slots (nodes.conf) but no data,
        like a primary restarted without persistence."""
        i = self.ports.index(port)
        self.nodes[i].kill()
        node = self.nodes[i] = _Node(self.nodes[i].args, port, self.nodes[i].log)
        node.wait_until_ready()
        _wait(self._is_ok, f"cluster on ports {self.ports} ok again", timeout)

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisSentinelGroup:
    """A primary, one replica and one sentinel watching them, all our own.

    The sentinel fails over one second after the primary stops answering, so a
    test can kill the primary and see a replica take over within seconds.
    """

    def __init__(self, binary: str, service: str = "primary") -> None:
        self.binary = binary
        self.service = service
        self.dir = Path(tempfile.mkdtemp(prefix="redis-sentinel-test-"))
        self.servers: list[_Node] = []  # the primary and the replica, in start order
        self.sentinel: _Node | None = None

    @property
    def sentinel_port(self) -> int:
        assert self.sentinel is not None, "the sentinel group is not started"
        return self.sentinel.port

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}"

    def _server_args(self, port: int, *extra: str) -> list[str]:
        return [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--dbfilename", f"dump-{port}.rdb",
            "--save", "",
            "--appendonly", "no",
            # Redis 7 waits 5 s for more replicas before a diskless full sync; we
            # have only one, so start it at once.
            "--repl-diskless-sync-delay", "0",
            *extra,
        ]  # fmt: skip

    def _start_server(self, *extra: str) -> _Node:
        port = free_port()
        node = _Node(self._server_args(port, *extra), port, self.dir / f"redis-{port}.log")
        self.servers.append(node)
        node.wait_until_ready()
        return node

    def start(self, timeout: float = 30.0) -> None:
        primary = self._start_server()
        self._start_server("--replicaof", "127.0.0.1", str(primary.port))

        def replica_online() -> bool:
            with primary.client() as client:
                info = client.info("replication")
            return any(
                isinstance(v, dict) and v.get("state") == "online"
                for k, v in info.items()
                if k.startswith("slave")
            )

        _wait(replica_online, f"replica of 127.0.0.1:{primary.port} in sync", timeout)

        # The sentinel starts after the replica is in sync: it learns about replicas
        # from the primary's INFO, which it asks for at once and then only every 10 s.
        port = free_port()
        conf = self.dir / "sentinel.conf"  # the sentinel rewrites it, so it is ours to keep
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f'dir "{self.dir}"\n'
            f"sentinel monitor {self.service} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        self.sentinel = _Node(
            [self.binary, str(conf), "--sentinel"], port, self.dir / "sentinel.log"
        )
        self.sentinel.wait_until_ready()
        _wait(self._knows_replica, f"sentinel on port {port} knows the replica", timeout)

    def _knows_replica(self) -> bool:
        assert self.sentinel is not None
        with self.sentinel.client() as client:
            replicas = client.sentinel_slaves(self.service)
        # Only a replica the sentinel is connected to can be promoted.
        return any("disconnected" not in replica.get("flags", "") for replica in replicas)

    def primary_address(self) -> tuple[str, int]:
        """The primary as the sentinel names it now."""
        assert self.sentinel is not None, "the sentinel group is not started"
        with self.sentinel.client() as client:
            host, port = client.sentinel_get_master_addr_by_name(self.service)
        return host.decode() if isinstance(host, bytes) else str(host), int(port)

    def kill_primary(self) -> tuple[str, int]:
        """SIGKILL the server that is primary now; its address, for `wait_for_failover`."""
        address = self.primary_address()
        for node in self.servers:
            if node.port == address[1] and node.process is not None:
                node.kill()
                return address
        raise RuntimeError(f"the primary {address} is none of our running servers")

    def wait_for_failover(self, old_address: tuple[str, int], timeout: float = 30.0) -> None:
        """Until the sentinel names a primary other than `old_address`, and it acts as one.

        `get-master-addr-by-name` names the promoted replica while the failover is
        still in progress, but `SENTINEL MASTER` (which redis-py's `Sentinel` asks)
        shows the old, down primary until the failover ends: redis-py finds no
        primary in between. So wait for both to agree on a healthy one.
        """
        assert self.sentinel is not None, "the sentinel group is not started"
        sentinel = self.sentinel

        def promoted() -> bool:
            address = self.primary_address()
            if address == old_address:
                return False
            with sentinel.client() as client:
                state = client.sentinel_master(self.service)
            return (
                (str(state["ip"]), int(state["port"])) == address
                and bool(state["is_master"])
                and not (state["is_sdown"] or state["is_odown"])
                and "failover_in_progress" not in state["flags"]
                and _role(*address) == "master"
            )

        _wait(promoted, f"failover away from {old_address[0]}:{old_address[1]}", timeout)

    def close(self) -> None:
        if self.sentinel is not None:
            self.sentinel.kill()
        for node in self.servers:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_redis_cluster(primaries: int = 3) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(
        _require(redis_binary(), "redis-server"),
        _require(redis_cli_binary(), "redis-cli"),
        primaries,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def private_redis_sentinel(service: str = "primary") -> Iterator[RedisSentinelGroup]:
    group = RedisSentinelGroup(_require(redis_binary(), "redis-server"), service)
    try:
        group.start()
        yield group
    finally:
        group.close()


# A test-only sync client for the three REDIS_URL forms -----------------------

SyncRedis = redis.Redis | RedisCluster


class _SentinelRedis(redis.Redis):
    """A client of the sentinel's primary that closes its sentinel connections too.

    `Sentinel.master_for` hands back a client whose `close()` leaves the manager's
    own connections to the sentinels open.
    """

    def close(self) -> None:
        super().close()
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            sentinel.close()


def _hosts(netloc: str) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        hosts.append((host or "127.0.0.1", int(port)))
    return hosts


def sync_redis_client(url: str, timeout: float = 2.0) -> SyncRedis:
    """A redis-py client for `redis://`, `redis+cluster://` or `redis+sentinel://` URLs.

    For test setup and cleanup only; no credentials or TLS in the cluster and
    sentinel forms. A cluster client connects (and may raise) at once.
    """
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a Redis URL: {url!r}")
    if scheme not in {"redis+cluster", "redis+sentinel"}:
        return redis.Redis.from_url(url, **options)
    netloc, _, path = rest.partition("/")
    if scheme == "redis+cluster":
        # redis-py leaves ClusterNode, Sentinel and master_for unannotated.
        nodes = [ClusterNode(host, port) for host, port in _hosts(netloc)]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **options)
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError(f"a sentinel URL names its service: {url!r}")
    sentinel = Sentinel(_hosts(netloc), sentinel_kwargs=options, **options)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(service, redis_class=_SentinelRedis, db=int(db or 0))  # type: ignore[no-untyped-call]
    return cast(_SentinelRedis, client)


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


def forget_keys(url: str, prefix: str) -> None:
    """Delete the keys under `prefix`, and only those, in any of the three modes.

    Never raises for a server that is gone: a fault test may have left it down,
    and its data died with it. (In a cluster, scan_iter visits every primary.)
    """
    try:
        # A cluster client connects as it is built, so that is inside the try too.
        client = sync_redis_client(url)
        try:
            for key in client.scan_iter(match=f"{prefix}*", count=500):
                client.delete(key)
        finally:
            client.close()
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError):
        pass
