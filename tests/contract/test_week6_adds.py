"""docs/contract.md, "Week 6 adds": audit events from background tasks, and the three sleeps."""

import httpx
import pytest

from tests.contract.conftest import Api


async def read_audit(client: httpx.AsyncClient, api: Api, **params: int) -> list[dict[str, object]]:
    r = await client.get("/audit", params=params, headers=await api.audit_reader())
    assert r.status_code == 200, r.text
    events: list[dict[str, object]] = r.json()
    return events


@pytest.mark.day("week6/day5")
async def test_each_kind_of_write_records_an_audit_event_newest_first(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up()
    uid = account.id
    body = api.changing_credentials({"name": "Renamed", "email": api.new_email()})
    assert (await client.put(f"/users/{uid}", json=body, headers=account.headers)).is_success
    await client.patch(f"/users/{uid}", json={"name": "Again"}, headers=account.headers)
    await client.delete(f"/users/{uid}", headers=account.headers)

    mine = [(e["action"], e["user_id"]) for e in await read_audit(client, api, limit=100)]
    mine = [event for event in mine if event[1] == uid]
    assert mine == [
        ("user.deleted", uid),
        ("user.updated", uid),
        ("user.updated", uid),
        ("user.created", uid),
    ]


@pytest.mark.day("week6/day5")
async def test_an_audit_event_says_what_who_and_when(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    events = await read_audit(client, api)
    event = next(e for e in events if e["user_id"] == account.id)
    assert event["action"] == "user.created"
    assert isinstance(event["at"], str)
    assert event["at"].endswith(("Z", "+00:00"))


@pytest.mark.day("week6/day5")
@pytest.mark.parametrize("limit", [0, 101, -1])
async def test_audit_limit_outside_1_to_100_is_422(
    client: httpx.AsyncClient, api: Api, limit: int
) -> None:
    r = await client.get("/audit", params={"limit": limit}, headers=await api.audit_reader())
    assert r.status_code == 422, r.text


@pytest.mark.day("week6/day5")
async def test_audit_limit_is_honoured(client: httpx.AsyncClient, api: Api) -> None:
    for _ in range(3):
        await api.sign_up()
    assert len(await read_audit(client, api, limit=2)) == 2


@pytest.mark.day("week6/day3")
@pytest.mark.parametrize("endpoint", ["async-sleep", "sync-sleep", "blocking-sleep"])
async def test_each_sleep_answers_the_seconds_asked_for(
    client: httpx.AsyncClient, endpoint: str
) -> None:
    r = await client.get(f"/demo/{endpoint}", params={"seconds": 0.05})
    assert r.status_code == 200, r.text
    assert r.json() == {"slept": 0.05}


@pytest.mark.day("week6/day3")
@pytest.mark.parametrize("seconds", ["-0.1", "5.5", "nan", "abc"])
async def test_sleep_seconds_outside_0_to_5_are_422(
    client: httpx.AsyncClient, seconds: str
) -> None:
    r = await client.get("/demo/async-sleep", params={"seconds": seconds})
    assert r.status_code == 422, r.text
