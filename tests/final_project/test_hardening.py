"""Hostile input: oversized or deeply nested bodies, huge ids, control characters,
echoed secrets, CORS, and the problem+json shape of every error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from final_project.app.main import create_app
from tests.clients import serve
from tests.final_project.conftest import Api, MakeClient, settings_for_tests
from tests.waiting import wait_until

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
    make_client: MakeClient, body: bytes
) -> None:
    # With MAX_JSON_BODY_BYTES raised, so that the parser itself meets the body.
    async with make_client(max_json_body_bytes=MIB) as client:
        r = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 422)


async def test_deeply_nested_json_on_an_authenticated_route_is_422(
    make_client: MakeClient,
) -> None:
    async with make_client(max_json_body_bytes=MIB) as client:
        me = await Api(client).sign_up()
        r = await client.patch(
            f"/users/{me.id}",
            content=b"[" * 100_000 + b"]" * 100_000,
            headers={**me.headers, "Content-Type": "application/json"},
        )
    assert_problem(r, 422)


def unknown_keys(count: int) -> bytes:
    keys = ",".join(f'"k{i}":0' for i in range(count))
    return (
        b'{"name": "A", "email": "a@example.com", "password": "12345678", ' + keys.encode() + b"}"
    )


@pytest.mark.parametrize("path", ["/users", "/auth/refresh", "/users/1"])
async def test_a_json_body_over_max_json_body_bytes_is_413_before_it_is_parsed(
    client: httpx.AsyncClient, api: Api, path: str
) -> None:
    # The attack: 956 KiB of 90,000 unknown keys cost 2 s of event loop and a 6.8 MiB 422.
    me = await api.sign_up()
    body = unknown_keys(90_000)
    assert 16 * 1024 < len(body) < MIB
    method = "PATCH" if path == "/users/1" else "POST"
    headers = {**me.headers, "Content-Type": "application/json"}
    r = await client.request(method, path, content=body, headers=headers)
    assert_problem(r, 413)


async def test_a_422_lists_at_most_20_field_errors(client: httpx.AsyncClient) -> None:
    body = unknown_keys(600)
    assert len(body) < 16 * 1024  # under the limit: this one is parsed
    r = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 422)
    assert isinstance(problem["errors"], list)
    assert len(problem["errors"]) == 20
    assert len(r.content) < 4 * 1024


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
    "name",
    [
        *("\x00", "a\x07b", "Mal\x1b[31mory", "tab\there", "a\x7f", "a\x85b", "a\x9bb", "\nA"),
        # Cf: right-to-left override ("evil\u202egnp.exe" reads as "evilexe.png"),
        # zero-width space and joiner, soft hyphen, byte-order mark.
        *("evil\u202egnp.exe", "Ad\u200bmin", "a\u200db", "a\u00adb", "\ufeffA"),
    ],
)
async def test_names_with_invisible_or_control_characters_are_rejected(
    client: httpx.AsyncClient, api: Api, name: str
) -> None:
    r = await client.post(
        "/users", json={"name": name, "email": api.new_email(), "password": "12345678"}
    )
    assert_problem(r, 422)
    me = await api.sign_up()
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": name})
    assert_problem(r, 422)


async def test_a_name_with_a_lone_surrogate_is_rejected(client: httpx.AsyncClient) -> None:
    body = b'{"name": "a\\ud800b", "email": "s@example.com", "password": "12345678"}'
    r = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
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
        # A limit that never trips would otherwise keep this loop asking forever.
        answers: list[httpx.Response] = []

        async def limited() -> bool:
            answers.append(await client.get("/hello"))
            return answers[-1].status_code == 429

        await wait_until(limited, "a 429 from /hello", interval=0)
        r = answers[-1]
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
    async with serve(app) as client:
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


# Production surface --------------------------------------------------------------


async def test_the_demo_routes_are_not_served_in_production(make_client: MakeClient) -> None:
    # The attack: /demo/blocking-sleep needs no login and stalls every request of a worker.
    production = {"app_env": "production", "jwt_secret": "p" * 48}
    async with make_client(**production) as client:
        for path in ("/demo/blocking-sleep", "/demo/sync-sleep", "/demo/async-sleep"):
            assert_problem(await client.get(f"{path}?seconds=0"), 404)
        assert "/demo/blocking-sleep" not in (await client.get("/openapi.json")).json()["paths"]
    async with make_client() as client:  # the control: development keeps the lesson
        assert (await client.get("/demo/blocking-sleep?seconds=0")).status_code == 200


async def test_every_response_says_nosniff(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    responses = [
        await client.get("/health"),
        await client.get("/users"),  # 401
        await client.get("/nowhere"),  # 404
        await client.get(f"/users/{me.id}", headers=me.headers),
        await client.post("/auth/token", data={"username": me.email, "password": "x"}),
    ]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff", r.request.url


async def test_authenticated_reads_are_private_to_the_browser(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    for _ in range(2):  # the MISS and the HIT
        r = await client.get(f"/users/{me.id}", headers=me.headers)
        assert "etag" in r.headers
        assert r.headers["cache-control"] == "private, no-cache"
    r = await client.get("/users/me", headers=me.headers)
    assert r.headers["cache-control"] == "private"
    assert "cache-control" not in (await client.get("/hello")).headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example"])
async def test_no_response_reflects_an_untrusted_host(make_client: MakeClient, host: str) -> None:
    async with make_client(allowed_hosts=["localhost", "api.example.com"]) as client:
        # The attack: a trailing-slash redirect to http://evil.example/users.
        r = await client.get("/users/", headers={"Host": host})
        assert_problem(r, 400)
        assert "evil" not in r.text + str(r.headers)
        # The names it does answer to still work, with any port.
        for good in ("localhost:8000", "API.example.com"):
            r = await client.get("/users/", headers={"Host": good})
            assert r.status_code == 307, r.text
            assert r.headers["location"].startswith(f"http://{good}/users")


# Email normalisation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("signed_up_as", "logs_in_as"),
    [
        ("User@XN--BCHER-KVA.example", "User@XN--BCHER-KVA.example"),
        ("user@bücher.example", "USER@xn--bcher-kva.example"),
        ("zoe@bu\u0308cher.example", "ZOE@b\u00fccher.example"),  # NFD signs up, NFC logs in
    ],
    ids=["idna-same-string", "unicode-then-idna", "nfd-then-nfc"],
)
async def test_whatever_signed_up_also_logs_in(
    client: httpx.AsyncClient, api: Api, signed_up_as: str, logs_in_as: str
) -> None:
    me = await api.sign_up(email=signed_up_as)
    again = await api.log_in(logs_in_as)
    assert again.id == me.id
    # ...and is the same account to a second sign-up.
    body = {"name": "Twin", "email": logs_in_as, "password": "12345678"}
    assert (await client.post("/users", json=body)).status_code == 409
