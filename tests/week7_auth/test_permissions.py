"""Day 7, the secure API: who may do what. Signed in, you read anyone; you change only you."""

import httpx
import pytest

from tests.clients import Api

ATTACKS = [
    ("PUT", {"name": "Hacked", "email": "hacked@example.com"}),
    ("PATCH", {"name": "Hacked"}),
    ("PATCH", {"password": "the attacker knows this one"}),
    ("DELETE", None),
]


@pytest.mark.parametrize(("method", "body"), ATTACKS)
async def test_changing_another_user_is_forbidden_and_changes_nothing(
    client: httpx.AsyncClient, users: Api, method: str, body: dict[str, str] | None
) -> None:
    mallory, victim = await users.sign_up("Mallory"), await users.sign_up("Victim")
    r = await client.request(method, f"/users/{victim.id}", json=body, headers=mallory.headers)
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": "You may only change your own account"}

    r = await client.get("/users/me", headers=victim.headers)
    assert r.json() == {"id": victim.id, "name": "Victim", "email": victim.email}
    assert (await users.try_log_in(victim.email, victim.password)).status_code == 200
    wrong = await users.try_log_in(victim.email, "the attacker knows this one")
    assert wrong.status_code == 401


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_changing_a_user_who_does_not_exist_is_404_not_403(
    client: httpx.AsyncClient, users: Api, method: str
) -> None:
    account = await users.sign_up()
    body = {"name": "Ghost", "email": "ghost@example.com"} if method != "DELETE" else None
    r = await client.request(method, f"/users/{account.id + 1}", json=body, headers=account.headers)
    assert r.status_code == 404, r.text


async def test_a_signed_in_user_may_change_themselves(
    client: httpx.AsyncClient, users: Api
) -> None:
    account = await users.sign_up("Before")
    r = await client.patch(f"/users/{account.id}", json={"name": "After"}, headers=account.headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "After"


async def test_sign_up_needs_no_token_but_everything_else_does(client: httpx.AsyncClient) -> None:
    body = {"name": "A", "email": "a@example.com", "password": "p" * 8}
    assert (await client.post("/users", json=body)).status_code == 201
    for path in ("/users", "/users/1", "/users/me", "/audit"):
        r = await client.get(path)
        assert r.status_code == 401, (path, r.text)
        assert r.json() == {"detail": "Not authenticated"}


async def test_the_audit_log_is_for_signed_in_users(client: httpx.AsyncClient, users: Api) -> None:
    account = await users.sign_up()
    r = await client.get("/audit", headers=account.headers)
    assert r.status_code == 200, r.text
    newest = r.json()[0]
    assert (newest["action"], newest["user_id"]) == ("user.created", account.id)


async def test_openapi_lets_swagger_ui_log_in_and_says_which_routes_need_it(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    flows = schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/auth/token"
    paths = schema["paths"]
    assert "security" not in paths["/users"]["post"]
    assert "security" not in paths["/auth/token"]["post"]
    protected = [
        ("/users", "get"),
        ("/users/me", "get"),
        ("/users/{user_id}", "get"),
        ("/users/{user_id}", "put"),
        ("/users/{user_id}", "patch"),
        ("/users/{user_id}", "delete"),
        ("/audit", "get"),
    ]
    for path, method in protected:
        operation = paths[path][method]
        assert operation["security"] == [{"OAuth2PasswordBearer": []}], (path, method)
        assert "401" in operation["responses"], (path, method)
        if method in {"put", "patch", "delete"}:
            assert "403" in operation["responses"], (path, method)
    assert "401" in paths["/auth/token"]["post"]["responses"]
