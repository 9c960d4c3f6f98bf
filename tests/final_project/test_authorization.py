"""Who may do what: owners and admins (BOLA), roles (mass assignment), the audit log."""

from __future__ import annotations

import logging

import httpx
import pytest

from final_project.app.main import create_app
from tests.clients import serve
from tests.final_project.conftest import Api, settings_for_tests


async def test_a_user_sees_only_id_and_name_of_others(client: httpx.AsyncClient, api: Api) -> None:
    alice, bob = await api.sign_up("Alice"), await api.sign_up("Bob")
    for _ in range(2):  # the cache MISS, then the HIT
        r = await client.get(f"/users/{alice.id}", headers=bob.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"id": alice.id, "name": "Alice"}
        r = await client.get("/users", headers=bob.headers)
        assert r.status_code == 200, r.text
        assert {"id": alice.id, "name": "Alice"} in r.json()
        assert all(set(user) == {"id", "name"} for user in r.json())
        # Herself, and to an admin, every field.
        r = await client.get(f"/users/{alice.id}", headers=alice.headers)
        assert r.json() == alice.user
    admin = await api.admin()
    assert (await client.get(f"/users/{alice.id}", headers=admin.headers)).json() == alice.user
    r = await client.get("/users", headers=admin.headers)
    assert alice.user in r.json()


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PUT", {"name": "Mallory", "email": "mallory@example.com"}),
        ("PATCH", {"name": "Mallory"}),
        ("PATCH", {"password": "taken over password"}),
        ("DELETE", None),
    ],
)
async def test_changing_someone_else_is_forbidden_and_changes_nothing(
    client: httpx.AsyncClient, api: Api, method: str, body: dict[str, str] | None
) -> None:
    alice, mallory = await api.sign_up("Alice"), await api.sign_up("Mallory")
    before = (await client.get(f"/users/{alice.id}", headers=alice.headers)).json()

    r = await client.request(method, f"/users/{alice.id}", headers=mallory.headers, json=body)
    assert r.status_code == 403, r.text

    after = await client.get(f"/users/{alice.id}", headers=alice.headers)
    assert after.status_code == 200, after.text
    assert after.json() == before
    await api.log_in(alice.email)  # her password still works


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_changing_a_missing_user_is_404_before_any_403(
    client: httpx.AsyncClient, api: Api, method: str
) -> None:
    me = await api.sign_up()
    body = {"name": "X", "email": "x@example.com"} if method != "DELETE" else None
    r = await client.request(method, "/users/999999", headers=me.headers, json=body)
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == "User not found"


async def test_an_admin_may_change_and_delete_anyone(client: httpx.AsyncClient, api: Api) -> None:
    admin, alice = await api.admin(), await api.sign_up("Alice")
    r = await client.put(
        f"/users/{alice.id}",
        headers=admin.headers,
        json={"name": "Alice B", "email": "alice.b@example.com"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "alice.b@example.com"
    assert (await client.delete(f"/users/{alice.id}", headers=admin.headers)).status_code == 204
    r = await client.get(f"/users/{alice.id}", headers=admin.headers)
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    "extra", [{"role": "admin"}, {"id": 1}, {"role": "user"}, {"password_hash": "x"}]
)
async def test_sign_up_never_takes_server_owned_fields(
    client: httpx.AsyncClient, api: Api, extra: dict[str, object]
) -> None:
    body = {"name": "Eve", "email": "eve@example.com", "password": "eve's password", **extra}
    r = await client.post("/users", json=body)
    assert r.status_code == 422, r.text
    # Nothing was created: the email is still free.
    r = await client.post("/users", json={k: body[k] for k in ("name", "email", "password")})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "user"


async def test_put_does_not_take_a_role(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    body = {"name": "Me", "email": me.email, "role": "admin"}
    r = await client.put(f"/users/{me.id}", headers=me.headers, json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("role", ["admin", "user"])
async def test_a_user_sending_a_role_is_forbidden(
    client: httpx.AsyncClient, api: Api, role: str
) -> None:
    me = await api.sign_up()
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"role": role})
    assert r.status_code == 403, r.text
    r = await client.patch(
        f"/users/{me.id}", headers=me.headers, json={"name": "Sneaky", "role": role}
    )
    assert r.status_code == 403, r.text
    r = await client.get(f"/users/{me.id}", headers=me.headers)
    assert (r.json()["role"], r.json()["name"]) == ("user", "Maroof")


async def test_an_admin_may_grant_a_role_which_the_next_login_carries(
    client: httpx.AsyncClient, api: Api
) -> None:
    admin, bob = await api.admin(), await api.sign_up("Bob")
    assert (await client.get("/audit", headers=bob.headers)).status_code == 403

    r = await client.patch(f"/users/{bob.id}", headers=admin.headers, json={"role": "admin"})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin"

    # A role change ends the sessions that carry the old role.
    r = await client.post("/auth/refresh", json={"refresh_token": bob.refresh_token})
    assert r.status_code == 401, r.text
    bob = await api.log_in(bob.email)
    assert (await client.get("/audit", headers=bob.headers)).status_code == 200


async def test_a_demoted_admin_loses_audit_and_writes_at_once(
    client: httpx.AsyncClient, api: Api
) -> None:
    admin, bob, carol = await api.admin(), await api.sign_up("Bob"), await api.sign_up("Carol")
    await client.patch(f"/users/{bob.id}", headers=admin.headers, json={"role": "admin"})
    bob = await api.log_in(bob.email)
    assert (await client.get("/audit", headers=bob.headers)).status_code == 200
    await client.patch(f"/users/{bob.id}", headers=admin.headers, json={"role": "user"})
    # Bob's token still says admin, but its session ended with the role change.
    for method, path in [("GET", "/audit"), ("GET", f"/users/{carol.id}"), ("GET", "/users")]:
        r = await client.request(method, path, headers=bob.headers)
        assert r.status_code == 401, (path, r.text)
    r = await client.patch(f"/users/{carol.id}", headers=bob.headers, json={"name": "Hacked"})
    assert r.status_code == 401, r.text


async def test_audit_is_for_admins_only(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    assert (await client.get("/audit")).status_code == 401
    r = await client.get("/audit", headers=me.headers)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_every_write_is_audited_newest_first_with_its_actor(
    client: httpx.AsyncClient, api: Api
) -> None:
    admin, me = await api.admin(), await api.sign_up()
    await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Renamed"})
    await client.patch(f"/users/{me.id}", headers=admin.headers, json={"name": "By admin"})
    await client.delete(f"/users/{me.id}", headers=admin.headers)
    r = await client.get("/audit?limit=4", headers=admin.headers)
    assert r.status_code == 200, r.text
    events = [(e["action"], e["user_id"], e["actor_id"]) for e in r.json()]
    assert events == [
        ("user.deleted", me.id, admin.id),
        ("user.updated", me.id, admin.id),
        ("user.updated", me.id, me.id),
        ("user.created", me.id, me.id),
    ]
    assert r.json()[0]["at"].endswith("Z")


async def test_a_failing_audit_write_is_logged_and_never_breaks_the_response(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings_for_tests(redis_url, redis_prefix))

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("audit table is gone")

    async with serve(app) as client:
        app.state.services.store.add_audit = broken
        with caplog.at_level(logging.ERROR):
            r = await client.post(
                "/users", json={"name": "A", "email": "a@example.com", "password": "password!"}
            )
    assert r.status_code == 201, r.text
    record = next(rec for rec in caplog.records if "was not recorded" in rec.getMessage())
    assert record.exc_info is not None
    assert "audit table is gone" in str(record.exc_info[1])
