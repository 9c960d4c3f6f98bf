"""Week 5's steps: the smallest app (day 1), and the plain-list database (day 3) failing
where week 5's store does not."""

import asyncio
import importlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from tests.contract.test_basics import ABSOLUTE_URL, urls_named_by
from week5_crud.app.main import create_app
from week5_crud.steps import day1_hello, day3_fake_db


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
def fake_db(monkeypatch: pytest.MonkeyPatch) -> list[day3_fake_db.User]:
    """An empty `fake_db` for this test: the step keeps its users in a module global."""
    empty: list[day3_fake_db.User] = []
    monkeypatch.setattr(day3_fake_db, "fake_db", empty)
    return empty


# Day 1 ---------------------------------------------------------------------------------


async def test_day1_health_says_ok() -> None:
    async with serve(day1_hello.app) as client:
        r = await client.get("/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("params", "message"),
    [({"name": "Maroof"}, "Hello, Maroof!"), ({}, "Hello, World!")],
)
async def test_day1_hello_greets_by_name_or_the_world(params: dict[str, str], message: str) -> None:
    async with serve(day1_hello.app) as client:
        r = await client.get("/hello", params=params)
    assert r.status_code == 200, r.text
    assert r.json() == {"message": message}


# Day 3: the flaws, then week 5's store without them -----------------------------------


async def test_day3_crud_on_a_plain_list(fake_db: list[day3_fake_db.User]) -> None:
    async with serve(day3_fake_db.app) as client:
        r = await client.post("/users", json={"name": "Maroof", "email": "m@example.com"})
        assert r.status_code == 201, r.text
        assert r.json() == {"id": 1, "name": "Maroof", "email": "m@example.com"}
        r = await client.post("/users", json={"name": "Again", "email": "m@example.com"})
        assert r.status_code == 409, r.text
        r = await client.put("/users/1", json={"name": "Maroof K", "email": "m@example.com"})
        assert r.json()["name"] == "Maroof K"
        assert (await client.get("/users")).json() == [r.json()]
        assert (await client.delete("/users/1")).status_code == 204
        assert (await client.get("/users/1")).status_code == 404


async def sign_up_three_deleting_the_first(client: httpx.AsyncClient) -> list[int]:
    ids = []
    for n in range(3):
        r = await client.post("/users", json={"name": f"User {n}", "email": f"u{n}@example.com"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        if n == 1:
            assert (await client.delete(f"/users/{ids[0]}")).status_code == 204
    return ids


async def test_day3_fake_db_gives_a_deleted_users_id_to_the_next_one(
    fake_db: list[day3_fake_db.User],
) -> None:
    async with serve(day3_fake_db.app) as client:
        ids = await sign_up_three_deleting_the_first(client)
        assert ids == [1, 2, 2]  # the flaw: two users share id 2
        r = await client.get("/users/2")
    assert r.json()["name"] == "User 1"  # and the newest one can't be reached by its id


async def test_week5_never_reuses_an_id() -> None:
    async with serve(create_app()) as client:
        ids = await sign_up_three_deleting_the_first(client)
        assert ids == [1, 2, 3]
        r = await client.get("/users/3")
    assert r.json()["name"] == "User 2"


class BothCheckFirst(list[day3_fake_db.User]):
    """A fake_db where each scan reads the list, then waits until a second request has read
    it too: the unlucky timing every time, instead of once in a while."""

    def __init__(self) -> None:
        super().__init__()
        self.both_read = threading.Barrier(2, timeout=10)

    def __iter__(self) -> Iterator[day3_fake_db.User]:
        users_now = list(super().__iter__())
        self.both_read.wait()
        return iter(users_now)


async def test_day3_fake_db_lets_two_concurrent_sign_ups_take_one_email(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(day3_fake_db, "fake_db", BothCheckFirst())
    body = {"name": "Racer", "email": "race@example.com"}
    async with serve(day3_fake_db.app) as client:
        first, second = await asyncio.gather(
            client.post("/users", json=body), client.post("/users", json=body)
        )
    # The flaw: both passed "is the email free?", so two accounts have one email.
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    assert first.json()["email"] == second.json()["email"] == "race@example.com"


async def test_week5_lets_one_of_many_concurrent_sign_ups_take_an_email() -> None:
    body = {"name": "Racer", "email": "race@example.com"}
    async with serve(create_app()) as client:
        answers = await asyncio.gather(*(client.post("/users", json=body) for _ in range(20)))
        listed = (await client.get("/users")).json()
    assert sorted(r.status_code for r in answers) == [201] + [409] * 19
    assert [user["email"] for user in listed] == ["race@example.com"]


@pytest.mark.parametrize(
    "module",
    [
        "week5_crud.steps.day1_hello",
        "week5_crud.steps.day3_fake_db",
        "week6_async.steps.day5_background_task",
        "week7_auth.steps.day5_middleware_http",
    ],
)
async def test_every_step_that_serves_an_app_has_docs_that_work_offline(module: str) -> None:
    app = importlib.import_module(module).app
    async with serve(app) as client:
        for page in ("/docs", "/redoc"):
            html = (await client.get(page)).text
            urls = urls_named_by(html)
            assert urls, html
            assert not ABSOLUTE_URL.findall(html), (module, page, html)
            for url in urls:
                r = await client.get(url)
                assert r.status_code == 200, (module, url)
                assert r.content, (module, url)
