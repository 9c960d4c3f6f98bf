"""Day 5: each successful write records an audit event in a background task."""

import logging

import httpx
import pytest
from fastapi import FastAPI

from week6_async.app.audit import Action


async def actions(client: httpx.AsyncClient) -> list[tuple[str, int]]:
    r = await client.get("/audit")
    assert r.status_code == 200, r.text
    return [(event["action"], event["user_id"]) for event in r.json()]


async def test_every_kind_of_write_is_audited_newest_first(client: httpx.AsyncClient) -> None:
    r = await client.post("/users", json={"name": "A", "email": "a@example.com"})
    user_id = r.json()["id"]
    await client.put(f"/users/{user_id}", json={"name": "B", "email": "b@example.com"})
    await client.patch(f"/users/{user_id}", json={"name": "C"})
    await client.delete(f"/users/{user_id}")
    assert await actions(client) == [
        ("user.deleted", user_id),
        ("user.updated", user_id),
        ("user.updated", user_id),
        ("user.created", user_id),
    ]


async def test_audit_events_carry_a_utc_timestamp(client: httpx.AsyncClient) -> None:
    await client.post("/users", json={"name": "A", "email": "a@example.com"})
    event = (await client.get("/audit")).json()[0]
    assert event["at"].endswith("Z") or event["at"].endswith("+00:00"), event


async def test_failed_writes_are_not_audited(client: httpx.AsyncClient) -> None:
    await client.post("/users", json={"name": "A", "email": "a@example.com"})
    await client.post("/users", json={"name": "A", "email": "a@example.com"})  # 409
    await client.delete("/users/999")  # 404
    await client.patch("/users/1", json={"name": ""})  # 422
    assert await actions(client) == [("user.created", 1)]


async def test_audit_limit_is_honoured_and_validated(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await client.post("/users", json={"name": "A", "email": f"a{n}@example.com"})
    r = await client.get("/audit", params={"limit": 2})
    assert [event["user_id"] for event in r.json()] == [3, 2]
    for bad in (0, 101, "x"):
        assert (await client.get("/audit", params={"limit": bad})).status_code == 422


async def test_a_failing_task_is_logged_and_the_response_still_succeeds(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenAuditLog:
        def record(self, action: Action, user_id: int) -> None:
            raise ConnectionError("audit database unreachable")

    app.state.audit = BrokenAuditLog()
    with caplog.at_level(logging.ERROR):
        r = await client.post("/users", json={"name": "A", "email": "a@example.com"})
    assert r.status_code == 201, r.text
    record = next(rec for rec in caplog.records if "not recorded" in rec.getMessage())
    assert record.exc_info is not None
    assert "audit database unreachable" in caplog.text
