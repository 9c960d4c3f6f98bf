"""Hostile input: oversized or deeply nested bodies, huge ids, control characters,
echoed secrets, CORS, and the problem+json shape of every error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from final_project.app.main import create_app
from tests.final_project.conftest import Api, MakeClient, serve_in_process, settings_for_tests

MIB = 1024 * 1024


def assert_problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = r.json()
    assert {"type", "title", "status", "detail", "request_id"} <= body.keys()
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["request_id"] == r.headers["x-request-id"]
    return body


# Body size -------------------------------------------------------------------


async def test_a_body_over_the_limit_with_content_length_is_413(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/users", content=b"x" * (MIB + 1), headers={"Content-Type": "application/json"}
    )
    body = assert_problem(r, 413)
    assert body["detail"] == "Request body too large"


async def test_a_streamed_body_over_the_limit_without_content_length_is_413(
    make_client: MakeClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 200

    async with make_client(max_body_bytes=1000) as client:
        r = await client.post(
            "/users", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert "content-length" not in r.request.headers
    assert_problem(r, 413)


async def test_a_body_just_under_the_limit_is_read(make_client: MakeClient) -> None:
    async with make_client(max_body_bytes=100) as client:
        body = b'{"name": "A", "email": "a@example.com", "password": "12345678"}'
        r = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


# Parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"name": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b"{" * 20_000,
        b'{"name": "\xff\xfe", "email": "a@example.com", "password": "12345678"}',
        b"",
        b"null",
        b'"just a string"',
    ],
    ids=["open-brackets", "deep-valid-json", "open-braces", "not-utf8", "empty", "null", "string"],
)
async def test_malformed_or_deeply_nested_json_is_422_not_500(
    client: httpx.AsyncClient, body: bytes
) -> None:
    r = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 422)


async def test_deeply_nested_json_on_an_authenticated_route_is_422(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    r = await client.patch(
        f"/users/{me.id}",
        content=b"[" * 100_000 + b"]" * 100_000,
        headers={**me.headers, "Content-Type": "application/json"},
    )
    assert_problem(r, 422)


@pytest.mark.parametrize(
    "user_id", ["9223372036854775808", "1" + "0" * 40, "0", "-1", "1.5", "abc", "1e3"]
)
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_ids_outside_1_to_2_63_minus_1_are_422(
    client: httpx.AsyncClient, api: Api, method: str, user_id: str
) -> None:
    me = await api.sign_up()
    body = {"name": "X"} if method == "PATCH" else None
    if method == "PUT":
        body = {"name": "X", "email": "x@example.com"}
    r = await client.request(method, f"/users/{user_id}", headers=me.headers, json=body)
    assert_problem(r, 422)


async def test_the_biggest_id_is_a_plain_404(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    r = await client.get(f"/users/{2**63 - 1}", headers=me.headers)
    assert_problem(r, 404)


async def test_a_huge_offset_is_an_empty_page(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    r = await client.get(f"/users?offset={2**63 - 1}&limit=100", headers=me.headers)
    assert r.status_code == 200, r.text
    assert r.json() == []


@pytest.mark.parametrize(
    "name", ["\x00", "a\x07b", "Mal\x1b[31mory", "tab\there", "a\x7f", "a\x85b", "a\x9bb", "\nA"]
)
async def test_names_with_control_characters_are_rejected(
    client: httpx.AsyncClient, api: Api, name: str
) -> None:
    r = await client.post(
        "/users", json={"name": name, "email": api.new_email(), "password": "12345678"}
    )
    assert_problem(r, 422)
    me = await api.sign_up()
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": name})
    assert_problem(r, 422)


async def test_names_in_any_script_are_accepted(client: httpx.AsyncClient, api: Api) -> None:
    for name in ("Zoë", "معروف", "まるふ", "O'Brien-Smith"):
        me = await api.sign_up(name)
        assert me.user["name"] == name


async def test_a_422_never_echoes_what_was_sent(client: httpx.AsyncClient) -> None:
    secret = "hunter2-" + "s" * 130  # too long, so rejected
    r = await client.post(
        "/users",
        json={
            "name": "A",
            "email": "not-an-email-SECRETMAIL",
            "password": secret,
            "extra-SECRETKEY": "SECRETVALUE",
        },
    )
    body = assert_problem(r, 422)
    for leaked in ("hunter2", "SECRETMAIL", "SECRETVALUE"):
        assert leaked not in r.text
    fields = {".".join(str(p) for p in e["loc"]) for e in body["errors"]}  # type: ignore[attr-defined]
    assert {"body.email", "body.password"} <= fields


async def test_a_form_login_422_never_echoes_the_password(client: httpx.AsyncClient) -> None:
    r = await client.post("/auth/token", data={"username": "a@example.com", "password": "p" * 500})
    assert_problem(r, 422)
    assert "ppppp" not in r.text


# Errors are problem+json ---------------------------------------------------------


async def test_every_kind_of_error_is_problem_json(make_client: MakeClient) -> None:
    async with make_client(rate_limit="30/minute") as client:
        api = Api(client)
        me, other = await api.sign_up(), await api.sign_up()
        assert_problem(await client.get("/no/such/route"), 404)
        assert_problem(await client.get("/users/424242", headers=me.headers), 404)
        assert_problem(await client.delete("/users"), 405)
        assert_problem(await client.get("/users"), 401)
        assert_problem(await client.delete(f"/users/{other.id}", headers=me.headers), 403)
        dup = {"name": "A", "email": me.email, "password": "12345678"}
        assert assert_problem(await client.post("/users", json=dup), 409)["detail"] == (
            "Email already registered"
        )
        assert "errors" in assert_problem(await client.post("/users", json={}), 422)
        while (r := await client.get("/hello")).status_code != 429:
            pass
        assert assert_problem(r, 429)["detail"] == "Rate limit exceeded"


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    r = await client.delete("/users")
    assert r.status_code == 405, r.text
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}


async def test_405_never_lists_a_method_that_itself_gets_405(client: httpx.AsyncClient) -> None:
    r = await client.head("/health")
    assert r.status_code == 405, r.text
    for method in r.headers["allow"].split(", "):
        assert (await client.request(method, "/health")).status_code != 405, method


async def test_an_incoming_request_id_is_echoed_in_the_problem(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/users/1", headers={"X-Request-ID": "trace-me.42"})
    assert assert_problem(r, 401)["request_id"] == "trace-me.42"


async def test_a_crash_is_a_500_problem_without_internals(
    redis_url: str, redis_prefix: str
) -> None:
    app: FastAPI = create_app(settings_for_tests(redis_url, redis_prefix))

    async def crash() -> None:
        raise RuntimeError("connection string postgres://admin:pw@db")

    app.add_api_route("/crash", crash)
    async with serve_in_process(app) as client:
        r = await client.get("/crash")
    assert_problem(r, 500)
    assert "postgres" not in r.text
    assert "Traceback" not in r.text


# CORS -------------------------------------------------------------------------

PREFLIGHT = {"Access-Control-Request-Method": "PATCH"}


async def test_no_cors_headers_by_default(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://app.example"}
    r = await client.options("/users", headers={**origin, **PREFLIGHT})
    assert "access-control-allow-origin" not in r.headers
    r = await client.get("/hello", headers=origin)
    assert "access-control-allow-origin" not in r.headers


async def test_a_configured_origin_is_allowed_and_others_are_not(
    make_client: MakeClient,
) -> None:
    async with make_client(cors_origins=["https://app.example"]) as client:
        good = {"Origin": "https://app.example"}
        r = await client.options("/users/1", headers={**good, **PREFLIGHT})
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "PATCH" in r.headers["access-control-allow-methods"]
        r = await client.get("/hello", headers=good)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "X-Request-ID" in r.headers["access-control-expose-headers"]

        evil = {"Origin": "https://evil.example"}
        r = await client.options("/users/1", headers={**evil, **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers
        r = await client.get("/hello", headers=evil)
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ],
)
async def test_a_broken_login_form_is_422(client: httpx.AsyncClient, content_type: str) -> None:
    r = await client.post(
        "/auth/token", content=b"--xyz\r\nbroken\xff", headers={"Content-Type": content_type}
    )
    assert_problem(r, 422)
