"""Token misuse, refresh rotation with reuse detection, and logout (in-process, real Redis)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jwt.utils import base64url_encode
from jwt.warnings import InsecureKeyLengthWarning

from final_project.app.store.sql import SqlStore
from tests.clients import Account
from tests.final_project.conftest import PASSWORD, SECRET, Api, MakeClient

ISSUER = "fastapi-course"


def forge(session: Account, *, key: str = SECRET, algorithm: str = "HS256", **changes: Any) -> str:
    """A token signed like the server signs, with `changes` applied (None removes a claim).

    `lifetime=N` sets `exp` N seconds after `iat`.
    """
    now = int(time.time())
    if "lifetime" in changes:
        changes["exp"] = now + changes.pop("lifetime")
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": str(session.id),
        "role": "user",
        "sid": uuid.uuid4().hex,
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "iat": now,
        "exp": now + 600,
        "auth_time": now,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    with warnings.catch_warnings():
        # HS512 wants a 64-byte key; the point here is only that HS512 is refused.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_forged_token_with_the_real_secret_is_accepted(
    client: httpx.AsyncClient, api: Api
) -> None:
    # The control for the tests below: what they change is what makes them fail.
    me = await api.sign_up()
    r = await client.get("/users/me", headers=bearer(forge(me)))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": int(time.time()) - 60}, id="expired"),
        pytest.param({"typ": "refresh"}, id="refresh-typ"),
        pytest.param({"typ": None}, id="no-typ"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"iat": None}, id="no-iat"),
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"iss": "someone-else"}, id="other-issuer"),
        pytest.param({"key": "another-secret-of-at-least-32-bytes!!"}, id="other-secret"),
        pytest.param({"algorithm": "HS512"}, id="hs512"),
        pytest.param({"sub": 1}, id="sub-not-a-string"),
        pytest.param({"auth_time": None}, id="no-auth-time"),
        # Correctly signed, but promising more than the server ever hands out.
        pytest.param({"exp": int(time.time()) + 365 * 86400}, id="year-long-exp"),
        pytest.param({"lifetime": 15 * 60 + 60}, id="longer-than-15-minutes"),
    ],
)
async def test_misused_or_malformed_access_tokens_are_refused(
    client: httpx.AsyncClient, api: Api, changes: dict[str, Any]
) -> None:
    me = await api.sign_up()
    r = await client.get("/users/me", headers=bearer(forge(me, **changes)))
    assert_unauthorized(r)


async def test_alg_none_token_is_refused(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    claims = jwt.decode(me.access_token, options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    assert_unauthorized(await client.get("/users/me", headers=bearer(unsigned)))


async def test_tampered_token_is_refused(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    header, _, signature = me.access_token.split(".")
    claims = jwt.decode(me.access_token, options={"verify_signature": False})
    admin_payload = base64url_encode(json.dumps({**claims, "role": "admin"}).encode()).decode()
    tampered = f"{header}.{admin_payload}.{signature}"
    assert_unauthorized(await client.get("/audit", headers=bearer(tampered)))


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Token x"]
)
async def test_missing_or_malformed_authorization_is_401(
    client: httpx.AsyncClient, authorization: str
) -> None:
    r = await client.get("/users", headers={"Authorization": authorization})
    assert_unauthorized(r)


async def test_refresh_token_is_not_an_access_token(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    assert_unauthorized(await client.get("/users/me", headers=bearer(me.refresh_token)))


async def test_access_token_is_not_a_refresh_token(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    r = await client.post("/auth/refresh", json={"refresh_token": me.access_token})
    assert_unauthorized(r)


async def test_refresh_rotates_the_pair(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    r = await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 15 * 60
    assert pair["refresh_token"] != me.refresh_token
    r = await client.get("/users/me", headers=bearer(pair["access_token"]))
    assert r.status_code == 200, r.text


async def test_reusing_a_spent_refresh_token_revokes_its_chain_only(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    other_session = await api.log_in(me.email)
    rotated = (await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})).json()

    r = await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
    assert_unauthorized(r)

    # The whole chain is dead: the thief's (or the victim's) newer tokens too.
    assert_unauthorized(await client.get("/users/me", headers=bearer(rotated["access_token"])))
    assert_unauthorized(await client.get("/users/me", headers=bearer(me.access_token)))
    r = await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert_unauthorized(r)
    # Another session of the same user stays signed in.
    assert (await client.get("/users/me", headers=other_session.headers)).status_code == 200
    r = await client.post("/auth/refresh", json={"refresh_token": other_session.refresh_token})
    assert r.status_code == 200, r.text


async def test_of_concurrent_refreshes_with_one_token_exactly_one_succeeds(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    responses = await asyncio.gather(
        *(client.post("/auth/refresh", json={"refresh_token": me.refresh_token}) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [200] + [401] * 9


async def test_logout_ends_access_and_refresh_tokens(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    r = await client.post(
        "/auth/logout", headers=me.headers, json={"refresh_token": me.refresh_token}
    )
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_unauthorized(await client.get("/users/me", headers=me.headers))
    r = await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
    assert_unauthorized(r)


async def test_logout_without_a_body_still_ends_the_session(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    other = await api.log_in(me.email)
    assert (await client.post("/auth/logout", headers=me.headers)).status_code == 204
    r = await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
    assert_unauthorized(r)
    assert (await client.get("/users/me", headers=other.headers)).status_code == 200


async def test_logout_needs_a_valid_access_token(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    assert_unauthorized(await client.post("/auth/logout"))
    assert_unauthorized(await client.post("/auth/logout", headers=bearer(me.refresh_token)))


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    wrong = await client.post("/auth/token", data={"username": me.email, "password": "nope-nope"})
    unknown = await client.post(
        "/auth/token", data={"username": "ghost@example.com", "password": PASSWORD}
    )
    for r in (wrong, unknown):
        assert_unauthorized(r)
        assert r.json()["detail"] == "Incorrect email or password"


async def test_log_in_with_any_casing_of_the_email(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up(email="mixed@example.com")
    session = await api.log_in("MiXeD@Example.COM")
    assert session.id == me.id


async def test_changed_password_replaces_the_old_one(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    body = {"password": "a brand new password", "current_password": PASSWORD}
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json=body)
    assert r.status_code == 200, r.text
    old = await client.post("/auth/token", data={"username": me.email, "password": PASSWORD})
    assert_unauthorized(old)
    await api.log_in(me.email, "a brand new password")


async def test_a_deleted_users_token_no_longer_acts_for_them(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    other = await api.sign_up()
    assert (await client.get("/users", headers=me.headers)).status_code == 200  # cached
    assert (await client.delete(f"/users/{me.id}", headers=me.headers)).status_code == 204
    assert_unauthorized(await client.get("/users/me", headers=me.headers))
    # Cached reads too, though they never ask the database about the user.
    assert_unauthorized(await client.get("/users", headers=me.headers))
    assert_unauthorized(await client.get(f"/users/{other.id}", headers=me.headers))
    r = await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
    assert_unauthorized(r)


async def test_a_token_whose_sub_names_nobody_is_refused_on_cached_reads_too(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    assert (await client.get("/users", headers=me.headers)).status_code == 200  # cached
    nobody = Account({"id": 424242}, "", "")
    for path in ("/users", f"/users/{me.id}", "/users/me"):
        assert_unauthorized(await client.get(path, headers=bearer(forge(nobody))))


async def test_a_client_credentials_grant_is_never_a_login(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    form = {"username": me.email, "password": PASSWORD}
    r = await client.post("/auth/token", data={**form, "grant_type": "client_credentials"})
    assert r.status_code == 422, r.text
    assert "access_token" not in r.text
    r = await client.post("/auth/token", data={**form, "grant_type": "password"})
    assert r.status_code == 200, r.text


async def test_token_responses_are_never_stored_by_a_cache(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    login = await client.post("/auth/token", data={"username": me.email, "password": PASSWORD})
    rotated = await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
    for r in (login, rotated):
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["pragma"] == "no-cache"


async def test_a_login_upgrades_a_hash_made_with_older_argon2_parameters(
    make_client: MakeClient, tmp_path: Path
) -> None:
    database = {"database_url": f"sqlite+aiosqlite:///{tmp_path}/users.db"}
    async with make_client(**database, argon2_time_cost=1) as client:
        await Api(client).sign_up(email="old@example.com")
    sqlite = SqlStore(database["database_url"])
    await sqlite.open()
    try:
        user = await sqlite.get_user_by_email("old@example.com")
        assert user is not None
        assert "t=1," in user.password_hash
        # The next release hashes with t=2: the first login with the right password
        # replaces the stored hash, and the same password still works afterwards.
        async with make_client(**database, argon2_time_cost=2) as client:
            await Api(client).log_in("old@example.com")
            upgraded = await sqlite.get_user(user.id)
            assert upgraded is not None
            assert "t=2," in upgraded.password_hash
            await Api(client).log_in("old@example.com")
    finally:
        await sqlite.close()
