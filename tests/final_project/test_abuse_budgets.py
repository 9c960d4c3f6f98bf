"""Abuse budgets: sign-up per address, login per account, a bounded hashing queue, and
revoked tokens that spend their sender's budget (in-process, real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from final_project.app.main import create_app
from tests.clients import client_for, running
from tests.final_project.conftest import PASSWORD, Api, MakeClient, settings_for_tests

ClientAt = Callable[[str], httpx.AsyncClient]


@asynccontextmanager
async def clients_by_address(
    redis_url: str, redis_prefix: str, **settings: Any
) -> AsyncIterator[ClientAt]:
    """One app; `client_at("10.0.0.7")` is a client whose requests come from that address."""
    app = create_app(settings_for_tests(redis_url, redis_prefix, **settings))
    clients: list[httpx.AsyncClient] = []
    async with running(app) as started:

        def client_at(address: str) -> httpx.AsyncClient:
            clients.append(client_for(started, client=(address, 50000)))
            return clients[-1]

        try:
            yield client_at
        finally:
            for client in clients:
                await client.aclose()


async def test_sign_up_has_its_own_budget_per_address(make_client: MakeClient) -> None:
    async with make_client(signup_rate_limit="3/minute") as client:
        api = Api(client)
        bodies = [{"name": "Bot", "email": api.new_email(), "password": PASSWORD} for _ in range(4)]
        statuses = [(await client.post("/users", json=body)).status_code for body in bodies]
        assert statuses == [201, 201, 201, 429]
        r = await client.post("/users", json=bodies[3])
        assert '"signup";q=3;w=60' in r.headers["ratelimit-policy"]
        assert int(r.headers["retry-after"]) >= 1
        assert (await client.get("/hello")).status_code == 200  # other routes go on


async def test_rotating_addresses_buys_no_extra_guesses_at_one_account(
    redis_url: str, redis_prefix: str
) -> None:
    async with clients_by_address(
        redis_url, redis_prefix, login_account_rate_limit="3/minute", login_rate_limit="5/minute"
    ) as client_at:
        victim = await Api(client_at("10.0.0.1")).sign_up()  # its login spends 1 of 3
        # Each guess from an address of its own (as a rotated X-Forwarded-For would be).
        for n in range(2):
            guess = {"username": victim.email, "password": f"guess number {n}"}
            r = await client_at(f"10.0.1.{n}").post("/auth/token", data=guess)
            assert r.status_code == 401, r.text
        right = {"username": victim.email.upper(), "password": PASSWORD}
        r = await client_at("10.0.2.1").post("/auth/token", data=right)
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        # Another account is not held back.
        other = await Api(client_at("10.0.3.1")).sign_up(email="other@example.com")
        assert other.id != victim.id


async def test_past_the_hashing_queue_the_answer_is_a_fast_503(
    redis_url: str, redis_prefix: str
) -> None:
    # The attack: 60 concurrent sign-ups made a legitimate login wait 11 s.
    costly = {
        "argon2_time_cost": 2,
        "argon2_memory_cost": 16384,
        "max_concurrent_hashes": 2,
        "max_waiting_hashes": 1,
    }
    async with clients_by_address(redis_url, redis_prefix, **costly) as client_at:
        api = Api(client_at("10.0.0.1"))
        me = await api.sign_up()

        async def sign_up(n: int) -> httpx.Response:
            body = {"name": "Bot", "email": f"bot{n}@example.com", "password": PASSWORD}
            return await client_at(f"10.1.0.{n}").post("/users", json=body)

        async def log_in() -> httpx.Response:
            form = {"username": me.email, "password": PASSWORD}
            return await client_at("10.0.0.1").post("/auth/token", data=form)

        responses = await asyncio.gather(*(sign_up(n) for n in range(30)), log_in())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 503, 200}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert refused, statuses  # the queue filled, and the rest were turned away at once
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/problem+json"
    # Whoever was let in was served: at most two hashing and one waiting at any time.
    assert statuses.count(201) + statuses.count(200) >= 3


async def test_a_replayed_logged_out_token_spends_the_senders_budget_not_the_users(
    redis_url: str, redis_prefix: str
) -> None:
    async with clients_by_address(redis_url, redis_prefix, rate_limit="5/minute") as client_at:
        user_client = client_at("10.0.0.1")
        api = Api(user_client)
        me = await api.sign_up()  # spends 1 of the user's 5 (GET /users/me)
        stolen = me.headers
        assert (await user_client.post("/auth/logout", headers=stolen)).status_code == 204  # 2

        attacker = client_at("10.6.6.6")
        statuses = [(await attacker.get("/users", headers=stolen)).status_code for _ in range(12)]
        assert set(statuses) == {401, 429}, statuses  # the attacker's own address runs out

        again = await api.log_in(me.email)  # 3
        for _ in range(2):  # 4, 5: the user's budget is untouched by the replays
            r = await user_client.get("/users/me", headers=again.headers)
            assert r.status_code == 200, r.text
