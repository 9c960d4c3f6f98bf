"""Days 2-4: the JWT, attacked. Every token that is not exactly what we issued is a 401."""

import base64
import json
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from tests.clients import Account, Api, serve
from tests.week7_auth.conftest import SECRET, fast_settings
from week7_auth.app.main import create_app


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_for(user_id: int, **changes: Any) -> dict[str, Any]:
    """Claims like ours, valid for a minute; a change of None leaves that claim out."""
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def sign(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # PyJWT warns that HS512 wants a 64-byte key: a forger doesn't mind.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def with_payload_of(token: str, other: str) -> str:
    """The header and signature of `token` around the payload of `other`."""
    header, _, signature = token.split(".")
    return f"{header}.{other.split('.')[1]}.{signature}"


NOW = int(time.time())

# Each makes a token from `own`, the forger's real account and token, that tries to pass
# for `victim`, or for `own` after its time.
FORGED: dict[str, Callable[[Account, Account], str]] = {
    "expired": lambda own, _: sign(claims_for(own.id, iat=NOW - 1000, exp=NOW - 10)),
    "issued in the future": lambda _, victim: sign(
        claims_for(victim.id, iat=NOW + 3600, exp=NOW + 7200)
    ),
    "signed with another secret": lambda _, victim: sign(
        claims_for(victim.id), key="an-attackers-guess-at-the-secret-0123456789"
    ),
    "payload swapped, signature kept": lambda own, victim: with_payload_of(
        own.access_token, sign(claims_for(victim.id), key="x" * 32)
    ),
    "alg none": lambda _, victim: f"{b64url({'alg': 'none'})}.{b64url(claims_for(victim.id))}.",
    "HS512 with our secret": lambda _, victim: sign(claims_for(victim.id), algorithm="HS512"),
    "no sub": lambda _, victim: sign(claims_for(victim.id, sub=None)),
    "no exp": lambda _, victim: sign(claims_for(victim.id, exp=None)),
    "no iat": lambda _, victim: sign(claims_for(victim.id, iat=None)),
    "no jti": lambda _, victim: sign(claims_for(victim.id, jti=None)),
    "sub not a user id": lambda _, victim: sign(claims_for(victim.id, sub="admin")),
    "truncated": lambda own, _: own.access_token[:-4],
}


@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
async def test_a_token_that_is_not_exactly_ours_is_401(
    client: httpx.AsyncClient, users: Api, forge: Callable[[Account, Account], str]
) -> None:
    own, victim = await users.sign_up("Mallory"), await users.sign_up("Victim")
    r = await client.get("/users/me", headers={"Authorization": f"Bearer {forge(own, victim)}"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "Could not validate credentials"}


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Bearer not.a.token", "Bearer " + "A" * 4000, "Basic dXNlcjpwdw=="],
)
async def test_a_missing_or_malformed_bearer_value_is_401(
    client: httpx.AsyncClient, authorization: str
) -> None:
    r = await client.get("/users/me", headers={"Authorization": authorization})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert "detail" in r.json()


async def test_the_forgery_helpers_make_tokens_we_accept_when_untampered(
    client: httpx.AsyncClient, users: Api
) -> None:
    # Guards the test above: its tokens fail for the reason named, not for some other.
    account = await users.sign_up()
    r = await client.get(
        "/users/me", headers={"Authorization": "Bearer " + sign(claims_for(account.id))}
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == account.id


async def test_token_names_the_user_and_lives_15_minutes(users: Api) -> None:
    account = await users.sign_up()
    header = jwt.get_unverified_header(account.access_token)
    claims = jwt.decode(account.access_token, SECRET, algorithms=["HS256"])
    assert header["alg"] == "HS256"
    assert claims["sub"] == str(account.id)
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert abs(claims["iat"] - time.time()) < 60
    assert set(claims) == {"sub", "exp", "iat", "jti"}  # nothing else: a payload is public


async def test_every_token_has_its_own_jti(users: Api) -> None:
    account = await users.sign_up()
    again = await users.log_in(account.email)
    first, second = (
        jwt.decode(a.access_token, SECRET, algorithms=["HS256"]) for a in (account, again)
    )
    assert first["jti"] != second["jti"]


async def test_token_response_is_not_cached(client: httpx.AsyncClient, users: Api) -> None:
    account = await users.sign_up()
    r = await users.try_log_in(account.email, account.password)
    assert r.headers["cache-control"] == "no-store"


async def test_the_scheme_name_is_case_insensitive(client: httpx.AsyncClient, users: Api) -> None:
    account = await users.sign_up()
    r = await client.get("/users/me", headers={"Authorization": f"bearer {account.access_token}"})
    assert r.status_code == 200, r.text


async def test_a_deleted_users_token_stops_working(client: httpx.AsyncClient, users: Api) -> None:
    account = await users.sign_up()
    r = await client.delete(f"/users/{account.id}", headers=account.headers)
    assert r.status_code == 204, r.text
    r = await client.get("/users/me", headers=account.headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


async def test_token_lifetime_comes_from_the_settings() -> None:
    app = create_app(fast_settings(access_token_minutes=5))
    async with serve(app) as client:
        await client.post(
            "/users", json={"name": "A", "email": "a@example.com", "password": "p" * 8}
        )
        r = await client.post(
            "/auth/token", data={"username": "a@example.com", "password": "p" * 8}
        )
    assert r.json()["expires_in"] == 300
    claims = jwt.decode(r.json()["access_token"], SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 300


async def test_tokens_from_one_process_work_in_another_with_the_same_secret() -> None:
    # What several workers, or a restart, look like: separate apps that share only settings.
    # The users live in each process's memory, so each app gets the same sign-up.
    body = {"name": "A", "email": "a@example.com", "password": "p" * 8}
    tokens: list[str] = []
    apps: list[FastAPI] = [create_app(fast_settings()), create_app(fast_settings())]
    for app in apps:
        async with serve(app) as client:
            assert (await client.post("/users", json=body)).status_code == 201
            r = await client.post(
                "/auth/token", data={"username": body["email"], "password": "p" * 8}
            )
            tokens.append(r.json()["access_token"])
    async with serve(apps[1]) as client:
        r = await client.get("/users/me", headers={"Authorization": f"Bearer {tokens[0]}"})
    assert r.status_code == 200, r.text

    other_secret = create_app(fast_settings(jwt_secret="a-different-secret-0123456789abcdef"))
    async with serve(other_secret) as client:
        assert (await client.post("/users", json=body)).status_code == 201
        r = await client.get("/users/me", headers={"Authorization": f"Bearer {tokens[0]}"})
    assert r.status_code == 401, r.text
