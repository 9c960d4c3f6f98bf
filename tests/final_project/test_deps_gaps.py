"""The final project's dependencies and the users list: revoked admins, odd token
subjects, and the list's paging (bounds, and one cache entry per page and view).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from final_project.app.deps import SettingsDep
from final_project.app.main import create_app
from final_project.app.routers import health
from tests.clients import serve
from tests.conftest import empty_postgres_database
from tests.final_project.conftest import PASSWORD, SECRET, Api, settings_for_tests
from tests.waiting import wait_until

MAX_ID = 2**63 - 1


def forge(sub: str, role: str = "user") -> str:
    """An access token signed with the app's secret, as the app signs its own."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "fastapi-course",
        "sub": sub,
        "role": role,
        "sid": uuid.uuid4().hex,
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "iat": now,
        "exp": now + 600,
        "auth_time": now,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(r: httpx.Response, status: int) -> str:
    """A problem+json answer with this status; its detail."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert detail
    return detail


# Admin-only routes and logged-out admins ---------------------------------------


async def test_a_logged_out_admins_token_is_refused_on_an_admin_route(
    client: httpx.AsyncClient, api: Api
) -> None:
    admin = await api.admin()
    other_session = await api.admin()
    assert (await client.get("/audit", headers=admin.headers)).status_code == 200
    r = await client.post("/auth/logout", headers=admin.headers)
    assert r.status_code == 204, r.text

    r = await client.get("/audit", headers=admin.headers)
    assert_problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    # The admin's other session still works.
    assert (await client.get("/audit", headers=other_session.headers)).status_code == 200


async def test_an_admin_whose_sessions_ended_is_refused_on_an_admin_route(
    client: httpx.AsyncClient, api: Api
) -> None:
    admin = await api.admin()
    assert (await client.get("/audit", headers=admin.headers)).status_code == 200
    body = {"password": "a brand new password", "current_password": admin.password}
    r = await client.patch(f"/users/{admin.id}", headers=admin.headers, json=body)
    assert r.status_code == 200, r.text
    assert_problem(await client.get("/audit", headers=admin.headers), 401)


# Token subjects that are no user id -------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """DATABASE_URL of a SQL store, whose ids are 64-bit integers, for an app of this
    test's own: a whole PostgreSQL database, since the app keeps its tables in the
    default schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'final.db'}"
    else:
        with empty_postgres_database() as url:
            yield url


@pytest.fixture
async def store_client(
    database_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on that store; an unhandled error comes back as the 500 a server sends."""
    settings = settings_for_tests(redis_url, redis_prefix, database_url=database_url)
    async with serve(create_app(settings), raise_app_exceptions=False) as client:
        yield client


SUBJECTS = [
    str(10**30),  # far beyond a SQL BIGINT
    str(MAX_ID + 1),  # one past it
    "9" * 19,  # as many digits as the largest id, and bigger
    "0" * 40 + "1",  # 1, the admin, in a spelling the app never signs
]


@pytest.mark.parametrize("sub", SUBJECTS)
@pytest.mark.parametrize("path", ["/users/me", "/users", "/users/1", "/audit"])
async def test_a_token_whose_sub_is_no_possible_id_is_401_never_500(
    store_client: httpx.AsyncClient, sub: str, path: str
) -> None:
    r = await store_client.get(path, headers=bearer(forge(sub, role="admin")))
    assert_problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("sub", SUBJECTS)
async def test_a_write_with_a_token_whose_sub_is_no_possible_id_is_401(
    store_client: httpx.AsyncClient, sub: str
) -> None:
    api = Api(store_client)
    me = await api.sign_up()
    r = await store_client.patch(
        f"/users/{me.id}", headers=bearer(forge(sub, role="admin")), json={"name": "Taken"}
    )
    assert_problem(r, 401)
    assert (await store_client.get("/users/me", headers=me.headers)).json()["name"] == "Maroof"


# Paging -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "offset=-1",
        f"offset={MAX_ID + 1}",
    ],
)
async def test_paging_out_of_bounds_is_422_with_a_detail(
    client: httpx.AsyncClient, api: Api, query: str
) -> None:
    me = await api.sign_up()
    r = await client.get(f"/users?{query}", headers=me.headers)
    assert_problem(r, 422)


@pytest.mark.parametrize("query", ["limit=1", "limit=100", "offset=0", f"offset={MAX_ID}"])
async def test_paging_at_its_bounds_is_served(
    client: httpx.AsyncClient, api: Api, query: str
) -> None:
    me = await api.sign_up()
    r = await client.get(f"/users?{query}", headers=me.headers)
    assert r.status_code == 200, r.text


async def ids_of(client: httpx.AsyncClient, headers: dict[str, str], query: str) -> list[int]:
    r = await client.get(f"/users?{query}", headers=headers)
    assert r.status_code == 200, r.text
    return [user["id"] for user in r.json()]


async def test_each_page_is_cached_on_its_own(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up("A")
    for name in ("B", "C", "D"):
        await api.sign_up(name)
    everyone = await ids_of(client, me.headers, "limit=100")
    assert len(everyone) >= 4
    for _ in range(2):  # the second round comes from the cache
        assert await ids_of(client, me.headers, "offset=0&limit=1") == everyone[0:1]
        assert await ids_of(client, me.headers, "offset=1&limit=1") == everyone[1:2]
        assert await ids_of(client, me.headers, "offset=1&limit=2") == everyone[1:3]
        assert await ids_of(client, me.headers, "offset=2&limit=2") == everyone[2:4]
        assert await ids_of(client, me.headers, "offset=1&limit=12") == everyone[1:13]
        assert await ids_of(client, me.headers, "offset=11&limit=2") == everyone[11:13]
    r = await client.get("/users?offset=1&limit=1", headers=me.headers)
    assert r.headers["x-cache"] == "HIT"


async def test_an_admins_page_and_a_users_page_are_cached_apart(
    client: httpx.AsyncClient, api: Api
) -> None:
    me, admin = await api.sign_up(), await api.admin()
    for first, second in ((me, admin), (admin, me)):
        for reader in (first, second):
            r = await client.get("/users?limit=100", headers=reader.headers)
            assert r.status_code == 200, r.text
            shown = {key for user in r.json() for key in user}
            if reader is admin:
                assert "email" in shown
            else:
                assert shown == {"id", "name"}
        # A write empties both views, so the next round is cached the other way round.
        r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Next"})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("change", ["rename", "delete"])
async def test_a_cached_later_page_is_invalidated_by_a_write(
    client: httpx.AsyncClient, api: Api, change: str
) -> None:
    reader = await api.sign_up("Reader")
    for name in ("B", "C"):
        await api.sign_up(name)
    everyone = await ids_of(client, reader.headers, "limit=100")
    target_id = everyone[2]
    admin = await api.admin()
    for _ in range(2):
        await client.get("/users?offset=2&limit=1", headers=reader.headers)
    r = await client.get("/users?offset=2&limit=1", headers=reader.headers)
    assert (r.headers["x-cache"], r.json()[0]["id"]) == ("HIT", target_id)

    if change == "rename":
        r = await client.patch(
            f"/users/{target_id}", headers=admin.headers, json={"name": "Renamed"}
        )
        assert r.status_code == 200, r.text
        r = await client.get("/users?offset=2&limit=1", headers=reader.headers)
        assert r.json() == [{"id": target_id, "name": "Renamed"}]
    else:
        r = await client.delete(f"/users/{target_id}", headers=admin.headers)
        assert r.status_code == 204, r.text
        r = await client.get("/users?offset=2&limit=1", headers=reader.headers)
        assert [user["id"] for user in r.json()] == everyone[3:4]


# What a refusal says ------------------------------------------------------------------


@pytest.fixture
async def app_client(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app of this test's own, started, and a client to it: the test may reach its store."""
    app = create_app(settings_for_tests(redis_url, redis_prefix))
    async with serve(app) as client:
        yield app, client


async def test_a_user_deleted_behind_the_apis_back_is_refused_with_a_bearer_challenge(
    app_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_client
    me = await Api(client).sign_up()
    assert await app.state.services.store.delete_user(me.id)  # say, by an operator's script
    for r in (
        await client.get("/users/me", headers=me.headers),
        await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Ghost"}),
    ):
        assert assert_problem(r, 401) == "Could not validate credentials"
        assert r.headers["www-authenticate"] == "Bearer"


async def test_each_refused_change_says_why(client: httpx.AsyncClient, api: Api) -> None:
    me, other, admin = await api.sign_up("Me"), await api.sign_up("Other"), await api.admin()
    mine = f"/users/{me.id}"

    r = await client.patch(f"/users/{other.id}", headers=me.headers, json={"name": "Mine"})
    assert assert_problem(r, 403) == "Not allowed to change another user"
    r = await client.patch(mine, headers=me.headers, json={"password": "a new password!"})
    assert assert_problem(r, 403) == "Changing your password or email needs your current password"
    body = {"password": "a new password!", "current_password": "not my password"}
    r = await client.patch(mine, headers=me.headers, json=body)
    assert assert_problem(r, 403) == "Incorrect current password"
    r = await client.patch(f"/users/{other.id}", headers=admin.headers, json={"email": me.email})
    assert assert_problem(r, 409) == "Email already registered"
    r = await client.patch(f"/users/{MAX_ID}", headers=admin.headers, json={"name": "Nobody"})
    assert assert_problem(r, 404) == "User not found"
    # None of it changed anyone.
    r = await client.get(f"/users/{other.id}", headers=admin.headers)
    assert (r.json()["name"], r.json()["email"]) == ("Other", other.email)


async def test_wrong_current_passwords_run_out_the_accounts_budget(
    make_client: Any,
) -> None:
    async with make_client(login_account_rate_limit="2/minute") as client:
        me = await Api(client).sign_up()  # its login spends 1 of 2
        body = {"name": "New", "password": "a new password!", "current_password": "a guess"}
        r = await client.patch(f"/users/{me.id}", headers=me.headers, json=body)
        assert assert_problem(r, 403) == "Incorrect current password"
        body["current_password"] = PASSWORD  # right, but too late
        r = await client.patch(f"/users/{me.id}", headers=me.headers, json=body)
        assert assert_problem(r, 429) == "Too many password attempts for this account"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (await client.get("/users/me", headers=me.headers)).json()["name"] != "New"


async def test_a_user_deleted_during_their_own_update_is_404(
    app_client: tuple[Any, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = app_client
    me = await Api(client).sign_up()
    store = app.state.services.store
    update_user = store.update_user

    async def deleted_meanwhile(user_id: int, **changes: Any) -> Any:
        await store.delete_user(user_id)  # a concurrent DELETE won the race
        return await update_user(user_id, **changes)

    monkeypatch.setattr(store, "update_user", deleted_meanwhile)
    r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Late"})
    assert assert_problem(r, 404) == "User not found"


async def test_an_audit_event_that_cannot_be_written_is_logged_with_its_user(
    app_client: tuple[Any, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, client = app_client
    me = await Api(client).sign_up()

    async def audit_down(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(app.state.services.store, "add_audit", audit_down)
    with caplog.at_level(logging.ERROR, logger="final_project.app.routers.audit"):
        r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Still"})
        assert r.status_code == 200, r.text  # the change itself stands
        await wait_until(
            lambda: any(rec.name.endswith("audit") for rec in caplog.records),
            "the failed audit event is logged",
        )
    [record] = [rec for rec in caplog.records if rec.name.endswith("audit")]
    assert record.getMessage() == f"audit event user.updated for user {me.id} was not recorded"
    assert record.exc_info
    assert record.exc_info[0] is RuntimeError


# Readiness ----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["raises", "too slow"])
async def test_readiness_fails_while_the_database_cannot_answer(
    app_client: tuple[Any, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    app, client = app_client
    assert (await client.get("/health/ready")).status_code == 200

    async def ping() -> bool:
        if failure == "raises":
            raise ConnectionError("database down")
        await asyncio.sleep(5)  # answers, but 100 times too late
        return True

    monkeypatch.setattr(health, "CHECK_SECONDS", 0.05)
    monkeypatch.setattr(app.state.services.store, "ping", ping)
    with caplog.at_level(logging.WARNING, logger=health.__name__):
        r = await client.get("/health/ready")
    assert r.status_code == 503, r.text
    assert r.json() == {
        "status": "unavailable",
        "checks": {"redis": "ok", "database": "unavailable"},
    }
    [record] = [rec for rec in caplog.records if rec.name == health.__name__]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "database readiness check failed"
    # With the traceback that says why.
    assert record.exc_info
    assert record.exc_info[0] is (ConnectionError if failure == "raises" else TimeoutError)


async def test_a_handler_gets_the_apps_own_settings(redis_url: str, redis_prefix: str) -> None:
    settings = settings_for_tests(redis_url, redis_prefix, cache_ttl_seconds=17)
    app = create_app(settings)

    @app.get("/cache-ttl")
    async def cache_ttl(current: SettingsDep) -> int:
        return current.cache_ttl_seconds

    async with serve(app) as client:
        r = await client.get("/cache-ttl")
    assert (r.status_code, r.json()) == (200, 17)
