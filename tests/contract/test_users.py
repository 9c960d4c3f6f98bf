"""docs/contract.md, "Every week": the users CRUD, its validation, and its concurrency and id rules.

From week 7 on, the `api` fixture signs up with a password and acts with a token,
so the same assertions hold for every app.
"""

import asyncio
import json

import httpx
import pytest

from tests.contract.conftest import Api

BIGGEST_ID = 2**63 - 1


def public(user: dict[str, object]) -> dict[str, object]:
    return {key: user[key] for key in ("id", "name", "email")}


# Create ------------------------------------------------------------------------


@pytest.mark.day("week5/day2")
async def test_create_user_returns_201_the_user_and_its_location(
    client: httpx.AsyncClient, api: Api
) -> None:
    r = await client.post("/users", json=api.sign_up_body("Maroof", "maroof@example.com"))
    assert r.status_code == 201, r.text
    user = r.json()
    assert public(user) == {"id": user["id"], "name": "Maroof", "email": "maroof@example.com"}
    assert isinstance(user["id"], int)
    assert r.headers["location"] == f"/users/{user['id']}"


@pytest.mark.day("week5/day2")
async def test_created_user_never_shows_a_password_or_hash(
    client: httpx.AsyncClient, api: Api
) -> None:
    r = await client.post("/users", json=api.sign_up_body())
    assert r.status_code == 201, r.text
    assert not {"password", "password_hash", "hashed_password"} & set(r.json())
    assert "argon2" not in r.text


@pytest.mark.day("week5/day2")
async def test_name_is_stored_trimmed(client: httpx.AsyncClient, api: Api) -> None:
    r = await client.post("/users", json=api.sign_up_body("  Maroof  "))
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Maroof"


@pytest.mark.day("week5/day2")
async def test_name_of_100_characters_after_trimming_is_accepted(
    client: httpx.AsyncClient, api: Api
) -> None:
    r = await client.post("/users", json=api.sign_up_body(" " + "a" * 100 + " "))
    assert r.status_code == 201, r.text


@pytest.mark.day("week5/day2")
@pytest.mark.parametrize("name", ["", "   ", "\t\n", "a" * 101])
async def test_blank_or_long_name_is_rejected(
    client: httpx.AsyncClient, api: Api, name: str
) -> None:
    r = await client.post("/users", json=api.sign_up_body(name))
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


@pytest.mark.day("week5/day2")
@pytest.mark.parametrize("name", ["nul\x00byte", "line\nbreak", "escape\x1b[31m", "del\x7f"])
async def test_control_characters_in_a_name_are_rejected(
    client: httpx.AsyncClient, api: Api, name: str
) -> None:
    r = await client.post("/users", json=api.sign_up_body(name))
    assert r.status_code == 422, r.text


@pytest.mark.day("week5/day2")
async def test_text_that_cannot_be_encoded_is_a_422_not_a_500(
    client: httpx.AsyncClient, api: Api
) -> None:
    body = json.dumps({**api.sign_up_body(), "name": "SURROGATE"})
    # A lone UTF-16 surrogate: a valid JSON escape, but no character UTF-8 can encode.
    raw = body.replace("SURROGATE", "\\ud800").encode()
    r = await client.post("/users", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text


@pytest.mark.day("week5/day2")
@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "", "a b@example.com"])
async def test_invalid_email_is_rejected(client: httpx.AsyncClient, api: Api, email: str) -> None:
    body = api.sign_up_body()
    body["email"] = email
    r = await client.post("/users", json=body)
    assert r.status_code == 422, r.text


@pytest.mark.day("week5/day3")
async def test_an_email_is_stored_lower_cased(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up(email="Maroof@Example.COM")
    assert account.user["email"] == "maroof@example.com"
    body = api.changing_credentials({"name": "Maroof", "email": "New@Example.com"})
    r = await client.put(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "new@example.com"


@pytest.mark.day("week5/day3")
async def test_email_is_unique_case_insensitively(client: httpx.AsyncClient, api: Api) -> None:
    await api.sign_up(email="a@example.com")
    r = await client.post("/users", json=api.sign_up_body(email="A@Example.com"))
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "Email already registered"


@pytest.mark.day("week5/day2")
@pytest.mark.parametrize("extra", [{"id": 99}, {"role": "admin"}, {"emial": "x@example.com"}])
async def test_unknown_or_server_owned_fields_are_rejected(
    client: httpx.AsyncClient, api: Api, extra: dict[str, object]
) -> None:
    r = await client.post("/users", json={**api.sign_up_body(), **extra})
    assert r.status_code == 422, r.text


@pytest.mark.day("week5/day2")
async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/users", content=b'{"name": "Maroof", ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


@pytest.mark.day("week5/day2")
async def test_missing_fields_are_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/users", json={})
    assert r.status_code == 422, r.text


@pytest.mark.day("week5/day3")
async def test_twenty_concurrent_sign_ups_with_one_email_create_one_user(
    client: httpx.AsyncClient, api: Api
) -> None:
    bodies = [api.sign_up_body(f"Racer {n}", "race@example.com") for n in range(20)]
    responses = await asyncio.gather(*(client.post("/users", json=body) for body in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, statuses


# Read --------------------------------------------------------------------------


@pytest.mark.day("week5/day2")
async def test_read_user_returns_it(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up("Ayesha")
    r = await client.get(f"/users/{account.id}", headers=account.headers)
    assert r.status_code == 200, r.text
    assert public(r.json()) == public(account.user)


@pytest.mark.day("week5/day5")
async def test_read_unknown_user_is_404_with_a_clear_detail(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up()
    for user_id in (account.id + 1000, BIGGEST_ID):
        r = await client.get(f"/users/{user_id}", headers=account.headers)
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == "User not found"


@pytest.mark.day("week5/day2")
@pytest.mark.parametrize("user_id", ["0", "-1", str(2**63), "abc", "1.5", "9" * 40])
async def test_ids_outside_1_to_2_pow_63_minus_1_are_422(
    client: httpx.AsyncClient, api: Api, user_id: str
) -> None:
    account = await api.sign_up()
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = {"name": "X", "email": "x@example.com"} if method in {"PUT", "PATCH"} else None
        r = await client.request(method, f"/users/{user_id}", json=body, headers=account.headers)
        assert r.status_code == 422, (method, r.text)


@pytest.mark.day("week5/day2")
async def test_list_is_ordered_by_id_and_paged(client: httpx.AsyncClient, api: Api) -> None:
    accounts = [await api.sign_up(f"User {n}") for n in range(5)]
    headers = accounts[0].headers
    everyone = (await client.get("/users", headers=headers)).json()
    ids = [user["id"] for user in everyone]
    assert ids == sorted(ids)
    assert {a.id for a in accounts} <= set(ids)

    r = await client.get("/users", params={"offset": 1, "limit": 2}, headers=headers)
    assert r.status_code == 200, r.text
    assert [user["id"] for user in r.json()] == ids[1:3]


@pytest.mark.day("week5/day2")
async def test_list_returns_20_users_by_default(client: httpx.AsyncClient, api: Api) -> None:
    accounts = [await api.sign_up(f"User {n}") for n in range(21)]
    r = await client.get("/users", headers=accounts[0].headers)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 20


@pytest.mark.day("week5/day2")
@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}]
)
async def test_list_rejects_a_bad_page(
    client: httpx.AsyncClient, api: Api, params: dict[str, int | str]
) -> None:
    account = await api.sign_up()
    r = await client.get("/users", params=params, headers=account.headers)
    assert r.status_code == 422, r.text


@pytest.mark.day("week5/day2")
async def test_list_accepts_the_extremes_of_a_page(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    for params in ({"limit": 1}, {"limit": 100}, {"offset": 10**6}):
        r = await client.get("/users", params=params, headers=account.headers)
        assert r.status_code == 200, r.text


# Update ------------------------------------------------------------------------


@pytest.mark.day("week5/day2")
async def test_put_replaces_the_user(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up("Old Name")
    body = api.changing_credentials({"name": " New Name ", "email": "new@example.com"})
    r = await client.put(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 200, r.text
    assert public(r.json()) == {"id": account.id, "name": "New Name", "email": "new@example.com"}
    r = await client.get(f"/users/{account.id}", headers=account.headers)
    assert public(r.json())["name"] == "New Name"


@pytest.mark.day("week5/day2")
async def test_put_needs_the_whole_user(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    r = await client.put(f"/users/{account.id}", json={"name": "X"}, headers=account.headers)
    assert r.status_code == 422, r.text


@pytest.mark.day("week5/day3")
async def test_put_to_a_taken_email_is_409_and_changes_nothing(
    client: httpx.AsyncClient, api: Api
) -> None:
    other = await api.sign_up(email="taken@example.com")
    account = await api.sign_up("Me")
    body = api.changing_credentials({"name": "Me Again", "email": "TAKEN@example.com"})
    r = await client.put(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "Email already registered"
    r = await client.get(f"/users/{account.id}", headers=account.headers)
    assert public(r.json()) == public(account.user)
    assert other.id != account.id


@pytest.mark.day("week5/day2")
async def test_put_keeping_ones_own_email_is_fine(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    body = {"name": "Renamed", "email": account.user["email"].upper()}
    r = await client.put(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 200, r.text


@pytest.mark.day("week5/day2")
async def test_patch_changes_only_the_fields_sent(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up("Before")
    r = await client.patch(f"/users/{account.id}", json={"name": "After"}, headers=account.headers)
    assert r.status_code == 200, r.text
    assert public(r.json()) == {**public(account.user), "name": "After"}


@pytest.mark.day("week5/day3")
async def test_patch_to_a_taken_email_is_409(client: httpx.AsyncClient, api: Api) -> None:
    await api.sign_up(email="first@example.com")
    account = await api.sign_up()
    body = api.changing_credentials({"email": "First@Example.com"})
    r = await client.patch(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 409, r.text


@pytest.mark.day("week5/day2")
@pytest.mark.parametrize(
    "body", [{"name": None}, {"email": None}, {"name": "  "}, {"id": 7}, {"email": "nope"}]
)
async def test_patch_rejects_invalid_fields(
    client: httpx.AsyncClient, api: Api, body: dict[str, object]
) -> None:
    account = await api.sign_up()
    r = await client.patch(f"/users/{account.id}", json=body, headers=account.headers)
    assert r.status_code == 422, r.text
    r = await client.get(f"/users/{account.id}", headers=account.headers)
    assert public(r.json()) == public(account.user)


@pytest.mark.day("week5/day5")
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_updating_an_unknown_user_is_404(
    client: httpx.AsyncClient, api: Api, method: str
) -> None:
    account = await api.sign_up()
    body = {"name": "Ghost", "email": "ghost@example.com"}
    r = await client.request(
        method, f"/users/{account.id + 1000}", json=body, headers=account.headers
    )
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == "User not found"


# Delete ------------------------------------------------------------------------


@pytest.mark.day("week5/day2")
async def test_delete_answers_204_with_an_empty_body(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    r = await client.delete(f"/users/{account.id}", headers=account.headers)
    assert r.status_code == 204, r.text
    assert r.content == b""


@pytest.mark.day("week5/day5")
async def test_a_deleted_user_is_gone(client: httpx.AsyncClient, api: Api) -> None:
    reader = await api.sign_up("Reader")
    account = await api.sign_up()
    await client.delete(f"/users/{account.id}", headers=account.headers)
    r = await client.get(f"/users/{account.id}", headers=reader.headers)
    assert r.status_code == 404, r.text
    listed = (await client.get("/users", headers=reader.headers)).json()
    assert account.id not in [user["id"] for user in listed]


@pytest.mark.day("week5/day5")
async def test_deleting_an_unknown_user_is_404(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    r = await client.delete(f"/users/{account.id + 1000}", headers=account.headers)
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == "User not found"


@pytest.mark.day("week5/day3")
async def test_ids_are_never_reused_after_a_delete(client: httpx.AsyncClient, api: Api) -> None:
    first = await api.sign_up()
    newest = await api.sign_up()
    await client.delete(f"/users/{newest.id}", headers=newest.headers)
    # The newest id is the one a naive `len(users) + 1` or `max(ids) + 1` would hand out again.
    again = await api.sign_up()
    assert again.id > newest.id > first.id


@pytest.mark.day("week5/day3")
async def test_a_deleted_users_email_can_sign_up_again(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up(email="comeback@example.com")
    await client.delete(f"/users/{account.id}", headers=account.headers)
    again = await api.sign_up(email="comeback@example.com")
    assert again.id != account.id
