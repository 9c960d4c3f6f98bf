"""Sessions end when the account changes, have an absolute lifetime, and changing your
own password or email takes the current one (in-process, real Redis)."""

from __future__ import annotations

import httpx
import jwt
import pytest

from tests.clients import Account
from tests.final_project.conftest import PASSWORD, Api, MakeClient

NEW_PASSWORD = "a brand new password"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_session_over(client: httpx.AsyncClient, session: Account, *paths: str) -> None:
    for path in paths:
        r = await client.get(path, headers=session.headers)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    r = await client.post("/auth/refresh", json={"refresh_token": session.refresh_token})
    assert r.status_code == 401, r.text


async def test_a_password_change_ends_the_thiefs_session_everywhere(
    client: httpx.AsyncClient, api: Api
) -> None:
    victim = await api.sign_up()
    thief = await api.log_in(victim.email)  # the stolen session
    reads = ("/users", f"/users/{victim.id}", "/users/me")
    for path in reads:  # every read cached, so the next ones are cache HITs
        assert (await client.get(path, headers=thief.headers)).status_code == 200

    body = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    r = await client.patch(f"/users/{victim.id}", headers=victim.headers, json=body)
    assert r.status_code == 200, r.text

    await assert_session_over(client, thief, *reads)
    # ...so the thief can't go on to take the email either.
    r = await client.patch(
        f"/users/{victim.id}", headers=thief.headers, json={"email": "thief@example.com"}
    )
    assert r.status_code == 401, r.text
    # The victim's own old session ended too; the new password starts a fresh one.
    await assert_session_over(client, victim, "/users/me")
    fresh = await api.log_in(victim.email, NEW_PASSWORD)
    assert (await client.get(f"/users/{victim.id}", headers=fresh.headers)).status_code == 200


async def test_an_admin_resetting_a_password_ends_the_users_sessions(
    client: httpx.AsyncClient, api: Api
) -> None:
    admin, user = await api.admin(), await api.sign_up()
    r = await client.patch(
        f"/users/{user.id}", headers=admin.headers, json={"password": NEW_PASSWORD}
    )
    assert r.status_code == 200, r.text  # an admin is not asked for the user's password
    await assert_session_over(client, user, "/users")
    assert (await client.get("/users", headers=admin.headers)).status_code == 200


async def test_a_name_or_email_change_keeps_the_session(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Renamed"})
    assert r.status_code == 200, r.text
    body = {"email": "renamed@example.com", "current_password": PASSWORD}
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json=body)
    assert r.status_code == 200, r.text
    assert (await client.get("/users/me", headers=me.headers)).json()["email"] == body["email"]


async def test_rotation_never_extends_a_session_past_session_max_days(
    make_client: MakeClient,
) -> None:
    # The attack: each refresh used to reset the refresh token's 14 days.
    async with make_client(session_max_days=1, refresh_token_days=14) as client:
        me = await Api(client).sign_up()
        token = me.refresh_token
        session_end = None
        for _ in range(3):
            r = await client.post("/auth/refresh", json={"refresh_token": token})
            assert r.status_code == 200, r.text
            token = r.json()["refresh_token"]
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["exp"] - claims["auth_time"] <= 86400
            session_end = session_end or claims["exp"]
            assert claims["exp"] == session_end


@pytest.mark.parametrize(
    "change",
    [{"password": NEW_PASSWORD}, {"email": "taken.over@example.com"}],
    ids=["password", "email"],
)
@pytest.mark.parametrize(
    "current", [None, "not my password"], ids=["without-current", "wrong-current"]
)
async def test_changing_your_own_password_or_email_needs_the_current_password(
    client: httpx.AsyncClient, api: Api, change: dict[str, str], current: str | None
) -> None:
    # The attack: a stolen 15-minute access token made a permanent takeover.
    me = await api.sign_up()
    body = change if current is None else {**change, "current_password": current}
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json=body)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    # Nothing changed: same email, same password, and the session goes on.
    r = await client.get("/users/me", headers=me.headers)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == me.email
    await api.log_in(me.email, PASSWORD)


async def test_put_with_a_new_email_needs_the_current_password(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    body = {"name": "Renamed", "email": "new@example.com"}
    r = await client.put(f"/users/{me.id}", headers=me.headers, json=body)
    assert r.status_code == 403, r.text
    # The same email (in any spelling) is no change, so no password is needed.
    r = await client.put(
        f"/users/{me.id}", headers=me.headers, json={"name": "Renamed", "email": me.email.upper()}
    )
    assert r.status_code == 200, r.text
    r = await client.put(
        f"/users/{me.id}", headers=me.headers, json={**body, "current_password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "new@example.com"


async def test_an_admin_changes_another_users_email_without_their_password(
    client: httpx.AsyncClient, api: Api
) -> None:
    admin, user = await api.admin(), await api.sign_up()
    r = await client.patch(
        f"/users/{user.id}", headers=admin.headers, json={"email": "moved@example.com"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "moved@example.com"
    # An admin changing their own password is asked like anyone else.
    r = await client.patch(
        f"/users/{admin.id}", headers=admin.headers, json={"password": NEW_PASSWORD}
    )
    assert r.status_code == 403, r.text
