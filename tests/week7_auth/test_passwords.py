"""Day 3 and 7: passwords go in, hashes are kept, and neither ever comes back out."""

import asyncio
import re
import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pwdlib import PasswordHash

from tests.clients import Api
from tests.waiting import wait_until
from tests.week7_auth.conftest import PASSWORD
from week7_auth.app.db import UserStore

ARGON2_PARAMETERS = re.compile(r"^\$argon2id\$v=19\$(m=\d+,t=\d+,p=\d+)\$")
HOLD_SECONDS = 10


async def test_a_password_is_stored_only_as_an_argon2_hash(app: FastAPI, users: Api) -> None:
    account = await users.sign_up()
    store: UserStore = app.state.store
    record = await store.get(account.id)
    assert record is not None
    assert record.password_hash.startswith("$argon2id$")
    assert PASSWORD not in record.password_hash
    assert record.password_hash not in repr(record)  # nor in a log line or a traceback


@pytest.mark.parametrize("length", [8, 128])
async def test_a_password_of_8_to_128_characters_is_accepted(
    client: httpx.AsyncClient, users: Api, length: int
) -> None:
    account = await users.sign_up(password="p" * length)
    assert account.access_token


@pytest.mark.parametrize("length", [0, 7, 129])
async def test_a_password_outside_8_to_128_characters_is_422(
    client: httpx.AsyncClient, length: int
) -> None:
    body = {"name": "A", "email": "a@example.com", "password": "q" * length}
    r = await client.post("/users", json=body)
    assert r.status_code == 422, r.text


async def test_unknown_email_and_wrong_password_get_the_same_answer(
    client: httpx.AsyncClient, users: Api
) -> None:
    account = await users.sign_up()
    answers = [
        await users.try_log_in(account.email, "not the password"),
        await users.try_log_in("nobody@example.com", PASSWORD),
        await users.try_log_in("not even an email", PASSWORD),
    ]

    def comparable(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
        headers = {
            k: v for k, v in r.headers.items() if k not in {"x-request-id", "x-process-time"}
        }
        return r.status_code, r.json(), headers

    assert comparable(answers[0]) == comparable(answers[1]) == comparable(answers[2])
    assert answers[0].status_code == 401
    assert answers[0].json() == {"detail": "Incorrect email or password"}


async def test_an_unknown_email_costs_the_same_argon2_work_as_a_wrong_password(
    client: httpx.AsyncClient, users: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not timed (that would flake): the work itself is compared. Each login verifies
    # exactly one hash, and the parameters in it (memory, passes, lanes) set its cost.
    verified: list[str] = []
    verify = PasswordHash.verify

    def spy(self: PasswordHash, password: str | bytes, hash: str | bytes) -> bool:
        verified.append(str(hash))
        return verify(self, password, hash)

    account = await users.sign_up()
    monkeypatch.setattr(PasswordHash, "verify", spy)
    await users.try_log_in(account.email, "not the password")
    await users.try_log_in("nobody@example.com", "not the password")

    assert len(verified) == 2
    real, dummy = (ARGON2_PARAMETERS.match(hashed) for hashed in verified)
    assert real is not None
    assert dummy is not None
    assert real.group(1) == dummy.group(1)


async def test_changing_the_password_retires_the_old_one(
    client: httpx.AsyncClient, users: Api
) -> None:
    account = await users.sign_up()
    new = "a brand new passphrase"
    r = await client.patch(
        f"/users/{account.id}", json={"password": new, "name": "Renamed"}, headers=account.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed"
    assert (await users.try_log_in(account.email, account.password)).status_code == 401
    assert (await users.try_log_in(account.email, new)).status_code == 200


@pytest.mark.parametrize("password", ["short77", None, "w" * 129])
async def test_an_invalid_new_password_is_422_and_keeps_the_old_one(
    client: httpx.AsyncClient, users: Api, password: str | None
) -> None:
    account = await users.sign_up()
    r = await client.patch(
        f"/users/{account.id}", json={"password": password}, headers=account.headers
    )
    assert r.status_code == 422, r.text
    assert (await users.try_log_in(account.email, account.password)).status_code == 200


async def test_put_does_not_take_a_password(client: httpx.AsyncClient, users: Api) -> None:
    # PUT replaces the profile (name, email); a password change is a PATCH of its own.
    account = await users.sign_up()
    body = {"name": "A", "email": account.email, "password": "a new passphrase"}
    r = await client.put(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 422, r.text
    assert (await users.try_log_in(account.email, account.password)).status_code == 200


async def test_no_response_ever_shows_a_password_or_a_hash(
    client: httpx.AsyncClient, users: Api
) -> None:
    pw, new = "Tr0ub4dor&3-horse", "Tr0ub4dor&3-horse-2"
    account = await users.sign_up(password=pw)
    me, mine = account.headers, f"/users/{account.id}"
    valid = {"name": "A", "email": "a@example.com"}
    odd_grant = {"username": account.email, "password": new, "grant_type": pw}
    answered = [
        await client.get("/users/me", headers=me),
        await client.get("/users", headers=me),
        await client.get(mine, headers=me),
        await client.patch(mine, json={"password": new}, headers=me),
        await client.put(mine, json={"name": "B", "email": account.email}, headers=me),
        await users.try_log_in(account.email, new),
    ]
    # Pydantic puts the rejected input in its errors, and for a missing field that
    # input is the whole body, password included.
    rejected = [
        await client.post("/users", json={"name": "A", "password": pw}),
        await client.post("/users", json={**valid, "name": " ", "password": pw}),
        await client.post("/users", json={**valid, "email": "nope", "password": pw}),
        await client.post("/users", json={**valid, "password": pw * 9}),
        await client.post("/users", json={**valid, "password": pw, "role": pw}),
        await client.put(mine, json={"name": "A", "password": pw}, headers=me),
        await client.patch(mine, json={"password": pw[:5]}, headers=me),
        await client.patch(mine, json=[pw], headers=me),
        await client.post("/auth/token", data={"password": pw}),
        await client.post("/auth/token", data=odd_grant),
    ]
    assert [r.status_code for r in answered] == [200] * len(answered)
    assert [r.status_code for r in rejected] == [422] * len(rejected)
    for r in answered + rejected:
        for leak in (pw, pw[:5], "argon2", "password_hash"):
            assert leak not in r.text, (r.request.method, r.request.url, r.text)


async def test_logins_do_not_stall_other_requests(
    client: httpx.AsyncClient, users: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not timed (a busy machine would make that flake): each of eight logins is held in
    # the middle of its Argon2 check until /health has answered. In the threadpool the
    # held checks hold only their threads; had hashing run on the event loop, the first
    # held check would hold the loop too, and /health could not answer before it let go.
    account = await users.sign_up()
    checking = threading.Semaphore(0)
    health_answered = threading.Event()
    held_until_answered: list[bool] = []
    verify = PasswordHash.verify

    def held(self: PasswordHash, password: str | bytes, hash: str | bytes) -> bool:
        checking.release()
        # Bounded, so a check on the event loop fails the test instead of hanging it.
        held_until_answered.append(health_answered.wait(HOLD_SECONDS))
        return verify(self, password, hash)

    monkeypatch.setattr(PasswordHash, "verify", held)
    logins = asyncio.gather(*(users.log_in(account.email) for _ in range(8)))
    for _ in range(8):
        await wait_until(lambda: checking.acquire(blocking=False), "a login is checking")
    for _ in range(3):
        assert (await client.get("/health")).status_code == 200
    health_answered.set()
    await logins

    assert held_until_answered == [True] * 8
