"""docs/contract.md, "Every week": /health, /hello and the documentation pages."""

import httpx
import pytest


@pytest.mark.day("week5/day1")
async def test_health_says_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}


@pytest.mark.day("week5/day1")
async def test_hello_greets_by_name(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello", params={"name": "Maroof"})
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Hello, Maroof!"}


@pytest.mark.day("week5/day1")
async def test_hello_without_a_name_greets_the_world(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello")
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Hello, World!"}


@pytest.mark.day("week5/day1")
async def test_hello_accepts_a_name_of_100_characters(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello", params={"name": "a" * 100})
    assert r.status_code == 200, r.text


@pytest.mark.day("week5/day1")
@pytest.mark.parametrize("name", ["", "a" * 101])
async def test_hello_rejects_a_name_outside_1_to_100_characters(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.get("/hello", params={"name": name})
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


@pytest.mark.day("week5/day1")
@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_documentation_pages_are_served(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200, r.text


@pytest.mark.day("week5/day5")
async def test_openapi_documents_every_error_status_of_the_user_routes(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {
        ("/users", "post"): {"201", "409", "422"},
        ("/users", "get"): {"200", "422"},
        ("/users/{user_id}", "get"): {"200", "404", "422"},
        ("/users/{user_id}", "put"): {"200", "404", "409", "422"},
        ("/users/{user_id}", "patch"): {"200", "404", "409", "422"},
        ("/users/{user_id}", "delete"): {"204", "404", "422"},
    }
    for (path, method), statuses in expected.items():
        documented = set(paths[path][method]["responses"])
        assert statuses <= documented, (path, method, documented)


@pytest.mark.day("week5/day4")
async def test_every_user_route_lives_in_one_users_router(client: httpx.AsyncClient) -> None:
    # APIRouter(prefix="/users", tags=["users"]) shows in the schema as one shared tag.
    paths = (await client.get("/openapi.json")).json()["paths"]
    user_operations = [
        operation
        for path, operations in paths.items()
        if path == "/users" or path.startswith("/users/")
        for operation in operations.values()
    ]
    assert len(user_operations) >= 6
    assert all(operation.get("tags") == ["users"] for operation in user_operations), paths
