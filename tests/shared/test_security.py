"""shared.security, shared.identity and the development secret: what every response of
a public API must get right, and one spelling per account."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import load_or_create_secret
from shared.identity import hidden_characters, normalize_email
from shared.security import SecurityHeadersMiddleware, TrustedHostMiddleware, host_name
from tests.servers import ROOT


def build_app(allowed_hosts: list[str]) -> Starlette:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hi")

    async def tagged(request: Request) -> Response:
        return PlainTextResponse("v1", headers={"ETag": '"v1"'})

    async def token(request: Request) -> Response:
        return PlainTextResponse("t", headers={"Cache-Control": "no-store"})

    async def moved(request: Request) -> Response:
        return RedirectResponse(str(request.url_for("hello")))  # absolute, from Host

    app = Starlette(
        routes=[
            Route("/hello", hello, name="hello"),
            Route("/tagged", tagged),
            Route("/token", token),
            Route("/moved", moved),
        ]
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(["localhost", "*.example.com"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8000", "localhost"),
        ("[::1]:8000", "::1"),
        ("::1", "::1"),
        ("A.Example", "a.example"),
    ],
)
def test_host_name_drops_the_port_and_case(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize("host", ["evil.example", "example.com.evil", "localhostx", ""])
async def test_an_untrusted_host_is_refused_and_never_reflected(
    client: httpx.AsyncClient, host: str
) -> None:
    r = await client.get("/moved", headers={"Host": host})
    assert r.status_code == 400, r.text
    assert "location" not in r.headers
    assert r.json() == {"detail": "Invalid host header"}
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:9000", "api.example.com", "a.b.example.com"]
)
async def test_a_trusted_host_is_served(client: httpx.AsyncClient, host: str) -> None:
    r = await client.get("/moved", headers={"Host": host}, follow_redirects=False)
    assert r.status_code == 307, r.text
    assert r.headers["location"] == f"http://{host}/hello"


async def test_a_star_turns_the_host_check_off() -> None:
    transport = httpx.ASGITransport(app=build_app(["*"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://anything.example") as c:
        assert (await c.get("/hello")).status_code == 200


async def test_signed_in_responses_are_private_and_others_untouched(
    client: httpx.AsyncClient,
) -> None:
    auth = {"Authorization": "Bearer x"}
    assert (await client.get("/hello", headers=auth)).headers["cache-control"] == "private"
    r = await client.get("/tagged", headers=auth)
    assert r.headers["cache-control"] == "private, no-cache"
    r = await client.get("/token", headers=auth)
    assert r.headers["cache-control"] == "no-store"  # a response's own choice stays
    r = await client.get("/hello")
    assert "cache-control" not in r.headers
    assert r.headers["x-content-type-options"] == "nosniff"


# Identity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spellings", "key"),
    [
        (["A@Example.COM", " a@example.com "], "a@example.com"),
        (["user@XN--BCHER-KVA.example", "User@bücher.example", "user@bu\u0308cher.example"],
         "user@bücher.example"),
        (["Zoe\u0308@example.com", "zoë@EXAMPLE.com"], "zoë@example.com"),
    ],
)  # fmt: skip
def test_every_spelling_of_an_address_has_one_key(spellings: list[str], key: str) -> None:
    assert {normalize_email(s) for s in spellings} == {key}


def test_a_string_that_is_no_address_still_normalises() -> None:
    assert normalize_email("  Not An Address ") == "not an address"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Maroof", []),
        ("معروف まるふ Zoë", []),
        ("evil\u202egnp.exe", ["U+202E"]),
        ("a\u200bb\x07", ["U+200B", "U+0007"]),
        ("a\ud800", ["U+D800"]),
    ],
)
def test_hidden_characters_are_found(text: str, found: list[str]) -> None:
    assert hidden_characters(text) == found


# The development secret ----------------------------------------------------------


def test_a_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "jwt_secret"
    first = load_or_create_secret(path)
    assert load_or_create_secret(path) == first
    assert len(first.get_secret_value()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["jwt_secret"]  # no draft left


def test_workers_starting_together_share_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    code = (
        "import sys; from pathlib import Path; from shared.auth import load_or_create_secret; "
        "print(load_or_create_secret(Path(sys.argv[1])).get_secret_value())"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    secrets = {worker.communicate(timeout=60)[0].strip() for worker in workers}
    assert secrets == {path.read_text().strip()}


def test_a_file_without_a_usable_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="delete it"):
        load_or_create_secret(path)


# The middlewares at the ASGI level: what reaches the app, what goes out -----------


class Inner:
    """An ASGI app that reads the request body and echoes it, noting each scope it got."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        message = await receive()
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200})  # no headers at all
            await send({"type": "http.response.body", "body": message["body"]})
        else:
            await send({"type": "echo", "got": message})


async def call(app: ASGIApp, kind: str, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope: Scope = {"type": kind, "headers": headers, "path": "/"}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"ping", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def start(sent: list[Message]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return sent[0]["status"], sent[0].get("headers", []), sent[1]["body"]


async def test_an_untrusted_host_gets_a_rendered_400_and_a_websocket_is_closed() -> None:
    rendered: list[tuple[int, str, str]] = []

    def render(status: int, detail: str, scope: Scope) -> tuple[bytes, bytes]:
        rendered.append((status, detail, scope["path"]))
        return b"text/plain", b"bad host"

    inner = Inner()
    app = TrustedHostMiddleware(
        inner, allowed_hosts=["api.example.com", "*.example.org", "  "], render_error=render
    )
    refused = [b"evil.com", b"example.org", b"evilexample.org"]
    for host in refused:
        assert start(await call(app, "http", [(b"host", host)])) == (
            400,
            [(b"content-type", b"text/plain"), (b"content-length", b"8")],
            b"bad host",
        ), host
    assert start(await call(app, "http", [])) == (  # no Host at all
        400,
        [(b"content-type", b"text/plain"), (b"content-length", b"8")],
        b"bad host",
    )
    assert rendered == [(400, "Invalid host header", "/")] * (len(refused) + 1)
    assert await call(app, "websocket", [(b"host", b"evil.com")]) == [
        {"type": "websocket.close", "code": 1008}
    ]
    assert inner.scopes == []
    # Trusted hosts, and what is no request at all, reach the app with its receive.
    for host in [b"API.example.com:8443", b"a.example.org", b"a.example.org"]:
        assert start(await call(app, "http", [(b"host", host)]))[::2] == (200, b"ping")
    ok = {"type": "echo", "got": {"type": "http.request", "body": b"ping", "more_body": False}}
    assert await call(app, "websocket", [(b"host", b"api.example.com")]) == [ok]
    assert await call(app, "lifespan", []) == [ok]
    assert [s["type"] for s in inner.scopes] == ["http"] * 3 + ["websocket", "lifespan"]


async def test_the_security_headers_are_added_in_asgi_form_and_other_scopes_pass() -> None:
    inner = Inner()
    app = SecurityHeadersMiddleware(inner)
    signed_in = [(b"authorization", b"Bearer t")]
    assert start(await call(app, "http", signed_in)) == (
        200,
        [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"private")],
        b"ping",
    )
    assert start(await call(app, "http", [])) == (
        200,
        [(b"x-content-type-options", b"nosniff")],
        b"ping",
    )
    ok = {"type": "echo", "got": {"type": "http.request", "body": b"ping", "more_body": False}}
    for kind in ["websocket", "lifespan"]:
        assert await call(app, kind, signed_in) == [ok]  # untouched
    assert [s["type"] for s in inner.scopes] == ["http", "http", "websocket", "lifespan"]
    assert inner.scopes[-1]["headers"] == signed_in


def test_a_secret_is_48_random_bytes_on_one_line_and_its_folders_are_made(
    tmp_path: Path,
) -> None:
    # The folder may not exist yet, nor its parent (a fresh checkout's data/ folder).
    path = tmp_path / "var" / "data" / "jwt_secret"
    secret = load_or_create_secret(path).get_secret_value()
    # The documented size (384 bits): what an operator copying it to JWT_SECRET gets.
    assert len(base64.urlsafe_b64decode(secret + "==")) == 48
    # One line, so `cat` or an editor shows the secret itself and nothing else.
    assert path.read_text() == secret + "\n"


def test_a_worker_that_loses_the_race_uses_the_winners_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker creates the file between this one's check and its link: this one
    then reads the winner's secret (not its own draft) and leaves no draft behind."""
    path = tmp_path / "jwt_secret"
    winner = "w" * 40
    link = os.link

    def another_worker_first(source: str | Path, target: str | Path) -> None:
        Path(target).write_text(winner + "\n")
        link(source, target)  # FileExistsError, as for the slower of two processes

    monkeypatch.setattr(os, "link", another_worker_first)
    assert load_or_create_secret(path).get_secret_value() == winner
    assert [p.name for p in tmp_path.iterdir()] == ["jwt_secret"]


def test_a_secret_of_exactly_32_bytes_is_enough_and_a_shorter_one_is_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text("x" * 32 + "\n")  # HS256's 256 bits: the floor, accepted
    assert load_or_create_secret(path).get_secret_value() == "x" * 32
    path.write_text("x" * 31 + "\n")
    # The operator is told which file to delete.
    message = f"{path} holds no usable secret (under 32 bytes): delete it"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        load_or_create_secret(path)
