"""docs/contract.md, "Week 7 adds": passwords, login, protected routes, request ids."""

import base64
import json
import re

import httpx
import pytest

from tests.contract.conftest import PASSWORD, Api

PROTECTED = [
    ("GET", "/users"),
    ("GET", "/users/me"),
    ("GET", "/users/1"),
    ("PUT", "/users/1"),
    ("PATCH", "/users/1"),
    ("DELETE", "/users/1"),
    ("GET", "/audit"),
]


@pytest.mark.day("week7/day1")
@pytest.mark.parametrize("password", ["Sh0rt!", "x" * 129])
async def test_sign_up_password_must_be_8_to_128_characters(
    client: httpx.AsyncClient, api: Api, password: str
) -> None:
    body = {**api.sign_up_body(), "password": password}
    r = await client.post("/users", json=body)
    assert r.status_code == 422, r.text
    assert password not in r.text


@pytest.mark.day("week7/day1")
async def test_sign_up_without_a_password_is_422(client: httpx.AsyncClient, api: Api) -> None:
    body = api.sign_up_body()
    del body["password"]
    assert (await client.post("/users", json=body)).status_code == 422


@pytest.mark.day("week7/day7")
async def test_a_422_never_echoes_the_password(client: httpx.AsyncClient) -> None:
    secret = "hunter2-but-much-longer"
    r = await client.post(
        "/users", json={"name": "", "email": "not-an-email", "password": secret, "extra": 1}
    )
    assert r.status_code == 422, r.text
    assert secret not in r.text


@pytest.mark.day("week7/day3")
async def test_login_returns_a_bearer_token_for_15_minutes(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up()
    form = {"username": account.user["email"], "password": PASSWORD}
    r = await client.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["access_token"].count(".") == 2  # header.payload.signature


@pytest.mark.day("week7/day3")
async def test_unknown_email_and_wrong_password_get_the_same_answer(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up()
    wrong = await client.post(
        "/auth/token", data={"username": account.user["email"], "password": "not the password"}
    )
    unknown = await client.post(
        "/auth/token", data={"username": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401, (wrong.text, unknown.text)
    assert wrong.json()["detail"] == unknown.json()["detail"] == "Incorrect email or password"


@pytest.mark.day("week7/day3")
async def test_logging_in_works_with_any_casing_of_the_email(
    client: httpx.AsyncClient, api: Api
) -> None:
    await api.sign_up(email="casing@example.com")
    headers = (await api.log_in("CaSiNg@Example.COM")).headers
    r = await client.get("/users/me", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "casing@example.com"


@pytest.mark.day("week7/day4")
async def test_users_me_is_the_caller(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up("Me Myself")
    r = await client.get("/users/me", headers=account.headers)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == account.id
    assert r.json()["name"] == "Me Myself"


@pytest.mark.day("week7/day3")
@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer garbage", "Basic dXNlcjpwdw=="])
async def test_protected_routes_need_a_valid_bearer_token(
    client: httpx.AsyncClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"name": "X", "email": "x@example.com"} if method in {"PUT", "PATCH"} else None
    r = await client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "detail" in r.json()


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def b64url_json(part: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


@pytest.mark.day("week7/day2")
async def test_a_token_whose_payload_was_changed_or_unsigned_is_401(
    client: httpx.AsyncClient, api: Api
) -> None:
    alice, bob = await api.sign_up("Alice"), await api.sign_up("Bob")
    header, payload, signature = alice.headers["Authorization"].removeprefix("Bearer ").split(".")
    as_bob = {**b64url_json(payload), "sub": str(bob.id)}
    forgeries = {
        "payload changed, old signature": f"{header}.{b64url(as_bob)}.{signature}",
        "alg none, no signature": f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(as_bob)}.",
    }
    for kind, token in forgeries.items():
        r = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (kind, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer"), kind


@pytest.mark.day("week7/day4")
async def test_any_signed_in_user_may_read_any_user(client: httpx.AsyncClient, api: Api) -> None:
    alice, bob = await api.sign_up("Alice"), await api.sign_up("Bob")
    r = await client.get(f"/users/{bob.id}", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Bob"


@pytest.mark.day("week7/day4")
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_changing_someone_else_is_forbidden_and_changes_nothing(
    client: httpx.AsyncClient, api: Api, method: str
) -> None:
    alice, bob = await api.sign_up("Alice"), await api.sign_up("Bob")
    body = {"name": "Hacked", "email": "hacked@example.com"} if method != "DELETE" else None
    r = await client.request(method, f"/users/{bob.id}", json=body, headers=alice.headers)
    assert r.status_code == 403, r.text
    r = await client.get(f"/users/{bob.id}", headers=bob.headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Bob"
    assert r.json()["email"] == bob.user["email"]


@pytest.mark.day("week7/day7")
async def test_changing_the_password_retires_the_old_one(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up()
    email = account.user["email"]
    new = "a brand new passphrase"
    body = api.changing_credentials({"password": new})
    r = await client.patch(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 200, r.text
    assert "password" not in r.json()
    old = await client.post("/auth/token", data={"username": email, "password": PASSWORD})
    assert old.status_code == 401, old.text
    assert (await api.log_in(email, new)).headers["Authorization"].startswith("Bearer ")


@pytest.mark.day("week7/day6")
async def test_every_response_carries_a_request_id_and_process_time(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up()
    responses = [
        await client.get("/health"),
        await client.get(f"/users/{account.id}", headers=account.headers),
        await client.get("/users/1"),  # 401
        await client.get(f"/users/{account.id + 999}", headers=account.headers),  # 404
        await client.post("/users", json={}),  # 422
    ]
    ids = set()
    for r in responses:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", r.headers["x-request-id"]), r.headers
        assert re.fullmatch(r"\d+(\.\d+)?", r.headers["x-process-time"]), r.headers
        ids.add(r.headers["x-request-id"])
    assert len(ids) == len(responses)


@pytest.mark.day("week7/day6")
async def test_openapi_documents_the_request_id_and_process_time_of_every_response(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                documented = set(response.get("headers", {}))
                assert {"X-Request-ID", "X-Process-Time"} <= documented, (method, path, status)


@pytest.mark.day("week7/day6")
async def test_a_sane_incoming_request_id_is_kept(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "abc-123_X.y"})
    assert r.headers["x-request-id"] == "abc-123_X.y"


@pytest.mark.day("week7/day6")
@pytest.mark.parametrize("bad", ["a" * 65, "has space", "semi;colon", "tab\tinside", "ünï", ""])
async def test_an_odd_incoming_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    r = await client.get("/health", headers=[(b"X-Request-ID", bad.encode())])
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] != bad
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", r.headers["x-request-id"])
