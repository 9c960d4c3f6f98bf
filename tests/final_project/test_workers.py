"""A real uvicorn with two workers, real Redis and one SQLite file: the API behaves as
one service whichever worker answers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.final_project.conftest import APP, ServerApi, final_env
from tests.servers import Uvicorn, forget_keys
from tests.waiting import wait_until_sync

pytestmark = pytest.mark.slow

ROUNDS = 8


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uvicorn]:
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    database = tmp_path_factory.mktemp("workers") / "final.db"
    env = final_env(
        redis_url=redis_url,
        redis_prefix=prefix,
        database_url=f"sqlite+aiosqlite:///{database}",
        LOG_LEVEL="INFO",
    )
    with Uvicorn(APP, env=env, workers=2) as server:
        yield server
    forget_keys(redis_url, prefix)


@pytest.fixture
def api(server: Uvicorn) -> Iterator[ServerApi]:
    api = ServerApi(server.url)
    yield api
    api.close()


def test_a_write_is_never_followed_by_old_data_on_any_worker(api: ServerApi) -> None:
    me = api.sign_up("Version 0")
    for version in range(1, 4):
        for _ in range(ROUNDS):  # fill the cache on both workers
            assert api.client.get(f"/users/{me.id}", headers=me.headers).status_code == 200
        r = api.client.patch(
            f"/users/{me.id}", headers=me.headers, json={"name": f"Version {version}"}
        )
        assert r.status_code == 200, r.text
        names = {
            api.client.get(f"/users/{me.id}", headers=me.headers).json()["name"]
            for _ in range(ROUNDS)
        }
        assert names == {f"Version {version}"}


def test_the_cache_is_shared_by_the_workers(api: ServerApi) -> None:
    me = api.sign_up()
    first = api.client.get(f"/users/{me.id}", headers=me.headers)
    assert first.headers["x-cache"] == "MISS"
    later = [api.client.get(f"/users/{me.id}", headers=me.headers) for _ in range(ROUNDS)]
    assert {r.headers["x-cache"] for r in later} == {"HIT"}
    assert {r.headers["etag"] for r in later} == {first.headers["etag"]}


def test_of_concurrent_refreshes_on_both_workers_exactly_one_succeeds(
    api: ServerApi, server: Uvicorn
) -> None:
    me = api.sign_up()

    def refresh(_: int) -> int:
        with httpx.Client(base_url=server.url, headers={"Connection": "close"}) as client:
            r = client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
            return r.status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(refresh, range(10)))
    assert statuses == [200] + [401] * 9


def test_a_logout_holds_on_every_worker(api: ServerApi) -> None:
    me = api.sign_up()
    other = api.log_in(me.email)
    r = api.client.post(
        "/auth/logout", headers=me.headers, json={"refresh_token": me.refresh_token}
    )
    assert r.status_code == 204, r.text
    for _ in range(ROUNDS):
        assert api.client.get("/users/me", headers=me.headers).status_code == 401
        assert api.client.get("/users/me", headers=other.headers).status_code == 200


def test_bodies_over_the_limit_are_413_with_or_without_content_length(
    server: Uvicorn,
) -> None:
    too_big = b"x" * (1024 * 1024 + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]

    with httpx.Client(base_url=server.url, timeout=15) as client:
        declared = client.post("/users", content=too_big)
        streamed = client.post("/users", content=chunks())
    assert "content-length" in declared.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    for r in (declared, streamed):
        assert r.status_code == 413, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["request_id"] == r.headers["x-request-id"]


def test_writes_are_audited_after_the_response(api: ServerApi) -> None:
    admin = api.log_in("root@example.com", "admin password of the tests")
    me = api.sign_up()
    r = api.client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Audited"})
    assert r.status_code == 200, r.text

    def audited() -> list[str]:
        r = api.client.get("/audit?limit=100", headers=admin.headers)
        assert r.status_code == 200, r.text
        return [e["action"] for e in r.json() if e["user_id"] == me.id]

    # The task runs after the response has gone out, perhaps while the next request is
    # already being answered (by the other worker): poll for its event.
    wait_until_sync(lambda: len(audited()) == 2, "both events audited")
    assert audited() == ["user.updated", "user.created"]


def test_each_request_is_logged_once_as_json_and_health_not_at_all(
    server: Uvicorn,
) -> None:
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url) as client:
        r = client.get("/hello", headers={"X-Request-ID": probe})
        assert r.headers["x-request-id"] == probe
        assert float(r.headers["x-process-time"]) >= 0
        client.get("/health", headers={"X-Request-ID": f"{probe}-health"})
        client.get("/health/ready", headers={"X-Request-ID": f"{probe}-ready"})
    lines = [line for line in server.output().splitlines() if probe in line]
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/hello", 200)
    assert entry["request_id"] == probe
    assert isinstance(entry["duration_ms"], float | int)


def test_a_password_change_ends_a_stolen_session_on_every_worker_at_once(
    api: ServerApi,
) -> None:
    victim = api.sign_up()
    thief = api.log_in(victim.email)
    for _ in range(ROUNDS):  # both workers trust Redis and have the read cached
        r = api.client.get(f"/users/{victim.id}", headers=thief.headers)
        assert r.status_code == 200, r.text
    body = {"password": "a brand new password", "current_password": victim.password}
    r = api.client.patch(f"/users/{victim.id}", headers=victim.headers, json=body)
    assert r.status_code == 200, r.text
    for _ in range(ROUNDS):
        r = api.client.get(f"/users/{victim.id}", headers=thief.headers)
        assert r.status_code == 401, r.text
    r = api.client.post("/auth/refresh", json={"refresh_token": thief.refresh_token})
    assert r.status_code == 401, r.text


def test_a_rate_limit_is_exact_across_the_workers(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Forty requests at once over both workers: exactly the budget of 20 gets through.

    20/hour refills one request every three minutes, so no test run is long enough
    for a refill to blur the count.
    """
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    env = final_env(
        redis_url=redis_url,
        redis_prefix=prefix,
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('limits') / 'final.db'}",
        RATE_LIMIT="20/hour",
    )
    try:
        with Uvicorn(APP, env=env, workers=2) as server:

            def hello(_: int) -> int:
                # A connection each: the kernel hands them to either worker.
                with httpx.Client(base_url=server.url, headers={"Connection": "close"}) as c:
                    return c.get("/hello").status_code

            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(hello, range(40)))
    finally:
        forget_keys(redis_url, prefix)
    assert sorted(statuses) == [200] * 20 + [429] * 20
