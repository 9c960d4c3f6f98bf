"""API.md, "Every week": /health, /hello and the documentation pages."""

import httpx
import pytest


async def test_health_says_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}


async def test_hello_greets_by_name(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello", params={"name": "Maroof"})
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Hello, Maroof!"}


async def test_hello_without_a_name_greets_the_world(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello")
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Hello, World!"}


async def test_hello_accepts_a_name_of_100_characters(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello", params={"name": "a" * 100})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("name", ["", "a" * 101])
async def test_hello_rejects_a_name_outside_1_to_100_characters(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.get("/hello", params={"name": name})
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_documentation_pages_are_served(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200, r.text


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
