"""nginx in front of a real uvicorn, with deploy/nginx/final.conf as compose.yaml uses
it: oversized headers and bodies are refused, stalled requests are closed, a
client's own X-Forwarded-For never changes whose rate limit it spends, and normal
traffic (the docs included) passes.

nginx is the real binary (Debian's package), a child process in the foreground
with a generated main config, free ports, and its pid and temp files in tmp_path.
Only the upstream address, the port and the two client timeouts differ from the
file compose mounts, and the test fails if any of those lines is not found.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import missing
from tests.deploy.conftest import Process
from tests.servers import ROOT, Uvicorn, free_port
from tests.waiting import wait_until_sync

SITE = ROOT / "deploy" / "nginx" / "final.conf"
# Short, so a stalled request is closed quickly here; production keeps 10 s.
CLIENT_TIMEOUT_SECONDS = 1
SECRET = "nginx-tests-secret-0123456789abcdef-0123456"


def site_config(upstream_port: int, listen_port: int) -> str:
    text = SITE.read_text()
    replacements = {
        "server app:8000;": f"server 127.0.0.1:{upstream_port};",
        "listen 8080;": f"listen 127.0.0.1:{listen_port};",
        "client_header_timeout 10s;": f"client_header_timeout {CLIENT_TIMEOUT_SECONDS}s;",
        "client_body_timeout 10s;": f"client_body_timeout {CLIENT_TIMEOUT_SECONDS}s;",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{SITE} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def main_config(prefix: Path, site: Path) -> str:
    # As root, nginx's workers switch to `nobody`, who can't reach tmp_path: keep our user.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
{user}
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    include {site};
}}
"""


class Nginx(Process):
    def __init__(self, prefix: Path, upstream_port: int) -> None:
        binary = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
        )
        if binary is None:
            missing("nginx")
        self.port = free_port()
        site = prefix / "final.conf"
        site.write_text(site_config(upstream_port, self.port))
        conf = prefix / "nginx.conf"
        conf.write_text(main_config(prefix, site))
        # -e: the log nginx opens before it reads the config, else /var/log/nginx (root's).
        command = [str(binary), "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
        super().__init__(command, env=os.environ)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.alive(), f"nginx exited: {self}"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            return False

        wait_until_sync(ready, "nginx answers /health", timeout=30)


@contextlib.contextmanager
def stack(tmp_path: Path, redis_url: str, **settings: str) -> Iterator[Nginx]:
    """The final app in uvicorn, trusting X-Forwarded-For from 127.0.0.1 only, behind nginx."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    env = {
        "DATABASE_URL": "memory://",
        "DB_LATENCY_MS": "0",
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "JWT_SECRET": SECRET,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "ARGON2_PARALLELISM": "1",
        "LOG_LEVEL": "WARNING",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        **settings,
    }
    with Uvicorn("final_project.app.main:app", env=env) as app:
        nginx = Nginx(tmp_path, app.port)
        try:
            nginx.wait_ready()
            yield nginx
        finally:
            nginx.stop()
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
            client.close()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Nginx]:
    # Metrics on and public in the app itself: only nginx keeps them inside.
    public_metrics = {"METRICS_ENABLED": "true", "METRICS_PUBLIC": "true"}
    with stack(
        tmp_path_factory.mktemp("nginx"), redis_url, RATE_LIMIT="100000/minute", **public_metrics
    ) as proxy:
        yield proxy


def closed_by_server(sock: socket.socket, bound: float) -> bytes:
    """Read until the server closes; fail if it hasn't within `bound` seconds."""
    received = b""
    deadline = time.monotonic() + bound
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    pytest.fail(f"still open after {bound} s (received {received[:80]!r})")


def test_normal_traffic_and_the_docs_pass_and_metrics_stay_inside(nginx: Nginx) -> None:
    with httpx.Client(base_url=nginx.url, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        docs = client.get("/docs")
        assert docs.status_code == 200
        # The page's own files too: the largest responses the app sends.
        scripts = re.findall(r'src="(/docs/[^"]+\.js)"', docs.text)
        assert scripts
        for asset in scripts:
            script = client.get(asset)
            assert script.status_code == 200
            assert len(script.content) > 100_000
        assert client.get("/openapi.json").json()["info"]["title"]
        # Metrics are for the scraper inside, never served to the outside.
        assert client.get("/metrics").status_code == 404
        created = client.post(
            "/users",
            json={"name": "Ada", "email": "ada@example.com", "password": "correct horse battery"},
        )
        assert created.status_code == 201, created.text


def test_an_8_mb_header_is_refused(nginx: Nginx) -> None:
    response = httpx.get(f"{nginx.url}/health", headers={"X-Big": "a" * 8 * 1024 * 1024})
    assert response.status_code == 400, response.text


def test_a_body_over_the_limit_is_refused(nginx: Nginx) -> None:
    response = httpx.post(f"{nginx.url}/users", content=b"x" * (2 * 1024 * 1024))
    assert response.status_code == 413


@pytest.mark.parametrize(
    "stalled",
    [
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
        b"POST /users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"name": ',
    ],
    ids=["mid-header", "mid-body"],
)
def test_a_stalled_request_is_closed_within_the_configured_timeout(
    nginx: Nginx, stalled: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", nginx.port)) as sock:
        sock.sendall(stalled)
        # "Within the configured timeout": closed before a generous multiple of it
        # (10x, for a loaded machine), found by polling reads, not by a sleep.
        received = closed_by_server(sock, bound=10 * CLIENT_TIMEOUT_SECONDS)
    assert b"200 OK" not in received


def test_a_client_sent_x_forwarded_for_does_not_change_the_rate_limit_identity(
    tmp_path: Path, redis_url: str
) -> None:
    with stack(tmp_path, redis_url, RATE_LIMIT="3/minute") as proxy:
        statuses = [
            httpx.get(f"{proxy.url}/hello", headers={"X-Forwarded-For": f"203.0.113.{n}"})
            for n in range(4)
        ]
    # Each request claims another address; the limit still counts them as one client.
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
